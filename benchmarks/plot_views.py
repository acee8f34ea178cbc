"""Plot the per-epoch view statistics of several runs (their --result_file JSONs) into one figure + CSV.

usage: python benchmarks/plot_views.py LABEL=result.json [LABEL=result.json ...] --out DIR
Writes DIR/view_statistics.csv (label, epoch, valid NDCG@10, every statistic) and DIR/view_statistics.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import os

PANELS = [
    ("InfoNCE accuracy (twin ranked first)", ["cl_acc"]),
    ("positions where the two views differ", ["views_differ"]),
    ("denoiser reconstruction (chosen positions)", ["recon_top1", "recon_topk"]),
    ("replacement = replaced item", ["repl_is_original"]),
    ("popularity percentile (0 rare, 1 popular)", ["pop_pct_replacement", "pop_pct_original"]),
    ("validation NDCG@10", ["valid_ndcg@10"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=path/to/result.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = []
    for item in args.runs:
        label, _, path = item.partition("=")
        result = json.load(open(path))
        curve = result.get("valid_curve", [])
        for i, stats in enumerate(result.get("view_statistics", [])):
            rows.append({"label": label, **stats, "valid_ndcg@10": curve[i] if i < len(curve) else None})
    os.makedirs(args.out, exist_ok=True)
    columns = ["label", "epoch", "valid_ndcg@10"] + sorted({k for r in rows for k in r} - {"label", "epoch", "valid_ndcg@10"})
    with open(os.path.join(args.out, "view_statistics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    colors = {label: f"C{i}" for i, label in enumerate(labels)}  # one colour per run, one line style per statistic
    for ax, (title, names) in zip(axes.flat, PANELS):
        for label in labels:
            mine = [r for r in rows if r["label"] == label]
            for name in names:
                points = [(r["epoch"], r[name]) for r in mine if r.get(name) is not None]
                if points:
                    style = "--" if name in ("recon_top1", "pop_pct_original") else "-"
                    ax.plot(*zip(*points), style, marker="o", color=colors[label],
                            label=f"{label} {name}" if len(names) > 1 else label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "view_statistics.png"), dpi=110)
    print(f"wrote {args.out}/view_statistics.csv and view_statistics.png ({len(rows)} epochs)")


if __name__ == "__main__":
    main()
