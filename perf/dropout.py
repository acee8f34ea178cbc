"""Dropout forward + backward: torch's (``bernoulli_`` mask on a CPU) against ``FastDropout`` (a uniform draw).

    python perf/dropout.py [--rows=12800] [--width=64] [--p=0.2] [--repeats=100]

Alternates the two, so that other load falls on both, and prints the median milliseconds of each, with the
mask alone (``bernoulli_`` and ``torch.rand`` of the same size). Nothing is written.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_diffcl.model.dropout import FastDropout  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256 * 50, help="a Beauty batch's positions")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--p", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args(argv)
    x = torch.randn(args.rows, args.width, requires_grad=True)
    torch_dropout, fast = torch.nn.Dropout(args.p), FastDropout(args.p)
    cases = {
        "torch dropout, forward + backward": lambda: torch_dropout(x).sum().backward(),
        "FastDropout, forward + backward": lambda: fast(x).sum().backward(),
        "mask only: bernoulli_": lambda: torch.empty(x.shape).bernoulli_(1 - args.p),
        "mask only: torch.rand": lambda: torch.rand(x.shape),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    print(f"{args.rows} x {args.width}, p = {args.p}, {torch.get_num_threads()} threads, median of {args.repeats}:")
    for name, values in times.items():
        print(f"  {name:<36} {1e3 * statistics.median(values[1:]):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
