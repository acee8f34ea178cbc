"""Seconds per training step and peak memory of the next-item losses on a synthetic catalog of any size.

    python perf/large_catalog.py --items=1000000 [--batch=256] [--steps=3] [--losses=ce,ce_fused,ssm] \
        [--memory_limit_gb=12] [--out=docs/results/large_catalog.md]

Builds SASRecPlus (the plugin's property files, whole-sequence rows) on a catalog of ``--items`` items
without any dataset: random training batches of ``--batch`` rows whose lengths are drawn between 5 and
20 (about 12.5 next-item targets per row, as the Amazon sets), then times Adam steps. Each loss runs in
its own process, capped at ``--memory_limit_gb`` of address space, so a loss that does not fit fails
cleanly ("out of memory") instead of taking the machine with it. Nothing is written but ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOSSES = {
    "ce": {"loss_type": "CE", "fused_cross_entropy": False},
    "ce_fused": {"loss_type": "CE", "fused_cross_entropy": True},
    "ssm": {"loss_type": "SSM", "ssm_negatives": 256},
}


def failure(stderr: str, limit_gb: float) -> str:
    """A loss process's failure in a few words: out of memory (with the allocation it tried), or its last line."""
    text = stderr.lower()
    if any(sign in text for sign in ("out of memory", "memoryerror", "bad_alloc", "can't allocate memory")):
        tried = re.search(r"allocate (\d+) bytes", stderr)
        size = f": tried to allocate {int(tried.group(1)) / 2**30:.1f} GiB" if tried else ""
        return f"out of memory under the {limit_gb:g} GB cap{size}"
    lines = stderr.strip().splitlines()
    return lines[-1][:120] if lines else "failed without a message"


def one(loss: str, items: int, batch: int, steps: int) -> dict:
    """Time ``steps`` Adam steps of SASRecPlus with ``loss`` (in this process); peak RSS in MiB."""
    sys.path.insert(0, str(ROOT))
    import torch
    import yaml

    from recbole_diffcl.model.sasrecplus import SASRecPlus

    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
              "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "device": torch.device("cpu")}
    for path in (ROOT / "props" / "overall.yaml", ROOT / "props" / "model" / "SASRecPlus.yaml"):
        config.update(yaml.safe_load(path.read_text()))
    config["layer_norm_eps"] = float(config["layer_norm_eps"])
    config.update(LOSSES[loss])

    class Catalog:  # what the model asks of a dataset: the number of item ids (padding included)
        def num(self, field):
            return items

    torch.manual_seed(0)
    model = SASRecPlus(config, Catalog())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    max_len = config["MAX_ITEM_LIST_LENGTH"]

    def make_batch():
        lengths = torch.randint(5, 21, (batch,))
        seq = torch.randint(1, items, (batch, max_len))
        seq[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0
        return {"item_id_list": seq, "item_length": lengths, "item_id": torch.randint(1, items, (batch,))}

    batches = [make_batch() for _ in range(steps + 1)]
    seconds = []
    for i, b in enumerate(batches):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.calculate_loss(b).backward()
        optimizer.step()
        if i:  # the first step is warm-up
            seconds.append(time.perf_counter() - start)
    positions = float(sum(int(b["item_length"].sum()) for b in batches[1:])) / steps
    return {"loss": loss, "seconds_per_step": sum(seconds) / len(seconds), "positions_per_step": positions,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--losses", default="ce,ce_fused,ssm")
    parser.add_argument("--memory_limit_gb", type=float, default=12.0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.items, args.batch, args.steps)))
        return 0

    rows = []
    for loss in [x.strip() for x in args.losses.split(",") if x.strip()]:
        limit = int(args.memory_limit_gb * 2**30)

        def cap():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        cmd = [sys.executable, __file__, f"--one={loss}", f"--items={args.items}", f"--batch={args.batch}",
               f"--steps={args.steps}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap, env=dict(os.environ))
        if proc.returncode == 0:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            rows.append({"loss": loss, "failed": failure(proc.stderr, args.memory_limit_gb)})
        print(rows[-1], flush=True)

    sys.path.insert(0, str(ROOT))
    from recbole_diffcl.utils import cpu_model

    cpu = cpu_model()
    lines = [
        f"{datetime.now().strftime('%Y-%m-%d %H:%M')}, {cpu}, {os.cpu_count()} cores; SASRecPlus, {args.items:,} items, "
        f"batch {args.batch}, {args.steps} timed steps after one warm-up, {args.memory_limit_gb:g} GB address-space cap "
        f"per loss; command: `python perf/large_catalog.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
        "",
        "| loss | s / step | peak RSS (MiB) | targets / step | threads |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {"ce": "CE (torch)", "ce_fused": "CE (fused, chunked)", "ssm": "SSM, 256 negatives"}
    for r in rows:
        if "failed" in r:
            lines.append(f"| {names.get(r['loss'], r['loss'])} | {r['failed']} | | | |")
        else:
            lines.append(f"| {names.get(r['loss'], r['loss'])} | {r['seconds_per_step']:.2f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['positions_per_step']:.0f} | {r['threads']} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
