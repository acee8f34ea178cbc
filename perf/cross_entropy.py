"""The next-item CE over all items, torch's way against the fused, chunked one: forward + backward time.

    python perf/cross_entropy.py [--positions=1500] [--items=12101] [--dim=64] [--repeats=5]

The default shape is one amazon-beauty batch under whole-sequence training (about 1,500 next-item
targets of 256 users, 12,101 items, embedding size 64). Both ways run alternately, so other load falls
on both alike; prints the mean milliseconds of each and the ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import torch

    from recbole_diffcl.model.losses import linear_cross_entropy
    from recbole_diffcl.utils import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=1500)
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    keep_freed_memory("auto", "cpu")  # as the runner does: torch's way otherwise pays page faults for its scores
    torch.manual_seed(0)
    h0 = torch.randn(args.positions, args.dim) * 0.5
    w0 = torch.randn(args.items, args.dim) * 0.1
    targets = torch.randint(1, args.items, (args.positions,))

    def step(fused: bool) -> float:
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        start = time.perf_counter()
        linear_cross_entropy(h, w, targets, fused).backward()
        return time.perf_counter() - start

    step(False), step(True)  # warm-up
    total = {False: 0.0, True: 0.0}
    for _ in range(args.repeats):
        for fused in (False, True):
            total[fused] += step(fused)
    plain, fused = (1000 * total[k] / args.repeats for k in (False, True))
    print(f"{args.positions} positions x {args.items} items x {args.dim}, {torch.get_num_threads()} threads: "
          f"torch {plain:.1f} ms, fused {fused:.1f} ms per forward+backward ({fused / plain:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
