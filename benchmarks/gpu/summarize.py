"""Table, CSV and validation curves of a folder of runs (each a sub-folder with result.json and args).

    python benchmarks/gpu/summarize.py docs/results/amazon-beauty/gpu-session1

Writes summary.csv, summary.md and curves.png into that folder. Runs are grouped by their name without
the trailing seed (``b-diffclrec-2021`` -> ``b-diffclrec``), with the mean over seeds.
"""
from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path


def load(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("runs/*/result.json")):
        r = json.loads(path.read_text())
        name = path.parent.name
        test = {k.lower(): v for k, v in r["test_result"].items()}
        curve = r.get("valid_curve") or []
        rows.append({
            "run": name,
            "config": re.sub(r"-\d+$", "", name),
            "model": r["model"],
            "seed": r["seed"],
            "args": (path.parent / "args").read_text().strip() if (path.parent / "args").exists() else "",
            "epochs": r["epochs_run"],
            "stopped_by": r.get("stopped_by"),
            "best_epoch": curve.index(max(curve)) if curve else None,
            "valid_ndcg@10": round(r["best_valid_score"], 4),
            "valid@10ep": curve[9] if len(curve) > 9 else None,
            "test_hit@10": test.get("hit@10"),
            "test_ndcg@10": test.get("ndcg@10"),
            "test_ndcg@20": test.get("ndcg@20"),
            "s_per_epoch": round(statistics.mean(r["seconds_per_epoch"]), 2) if r["seconds_per_epoch"] else None,
            "curve": curve,
        })
    return rows


def main(folder: str) -> int:
    out = Path(folder)
    rows = load(out)
    fields = [k for k in rows[0] if k != "curve"]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["config"], []).append(r)
    lines = [
        "| configuration | seeds | epochs (stopped by) | best epoch | valid NDCG@10 | valid @ epoch 10 | test NDCG@10 | test Hit@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    def mean(key: str, rs: list[dict]) -> float:
        values = [r[key] for r in rs if r[key] is not None]
        return statistics.mean(values) if values else float("nan")

    for config, rs in sorted(groups.items(), key=lambda kv: -mean("valid_ndcg@10", kv[1])):
        stops = ", ".join(sorted({f"{r['epochs']} ({r['stopped_by']})" for r in rs}))
        tests = ", ".join(f"{r['test_ndcg@10']:.4f}" for r in rs)
        lines.append(
            f"| {config} | {len(rs)} | {stops} | {', '.join(str(r['best_epoch']) for r in rs)} | "
            f"{mean('valid_ndcg@10', rs):.4f} | {mean('valid@10ep', rs):.4f} | {mean('test_ndcg@10', rs):.4f}"
            f"{f' ({tests})' if len(rs) > 1 else ''} | {mean('test_hit@10', rs):.4f} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for config, rs in sorted(groups.items()):
        curve = rs[0]["curve"]
        style = "-" if "sasrecplus" in config else ("--" if "diffclrec" in config else ":")
        ax.plot(range(1, len(curve) + 1), curve, style, label=f"{config} (seed {rs[0]['seed']})", linewidth=1.3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10 (history excluded)")
    ax.set_title(out.name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
