"""The benchmark's report: metrics by sequence-length group, statistics over seeds, and the files
``results.csv``, ``summary.md`` and ``summary.png``.

:func:`group_metrics` recomputes RecBole's top-k metrics (its own metric classes) for users grouped by
whole-sequence length (:func:`parse_length_groups`) from a run's result file (its
``test_positions_by_length``) or ``user_rankings_file`` (:func:`run_rankings`; the trainer writes both,
:mod:`recbole_diffcl.evaluation`). :func:`build_rows`
makes one row per finished run; :func:`write_summary` writes mean ± std per model, the paired t-tests
of the reference model against each baseline and the tables by group; :func:`write_plot` the bar charts
(matplotlib, the ``plot`` extra).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from recbole_diffcl.errors import UserError
from recbole_diffcl.evaluation import RANKING_COLUMNS, rankings_from_positions
from recbole_diffcl.runs import RunSpec, mean_epoch_seconds
from recbole_diffcl.utils import atomic_write, require_extra


# --------------------------------------------------------------------------------------------------
# Groups by sequence length and RecBole's metrics per group
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LengthGroup:
    """Users whose whole-sequence length lies in [low, high] (``high`` None: no upper bound)."""

    name: str
    low: int
    high: Optional[int]

    def contains(self, lengths: np.ndarray) -> np.ndarray:
        upper = np.inf if self.high is None else self.high
        return (lengths >= self.low) & (lengths <= upper)

    def describe(self) -> str:
        if self.high is None:
            return f">= {self.low}"
        if self.low <= 1:
            return f"<= {self.high}"
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


#: short <= 5 (= 5 on 5-core data), mid 6-8, long >= 9 interactions over the whole sequence.
DEFAULT_LENGTH_GROUPS = "short=-5,mid=6-8,long=9-"

_GROUP_SPEC = re.compile(r"^(?:(?P<name>[A-Za-z_][\w]*)=)?(?P<low>\d*)(?P<dash>-?)(?P<high>\d*)$")


def parse_length_groups(spec: str) -> list[LengthGroup]:
    """Parse ``[name=]range`` items separated by commas: ``5`` (exactly), ``6-8``, ``9-`` (and more), ``-5`` (up to).

    Unnamed groups are called ``len<range>``, e.g. ``len6-8``. Groups must not overlap.
    """
    groups: list[LengthGroup] = []
    for item in (part.strip() for part in spec.split(",")):
        match = _GROUP_SPEC.match(item)
        if not item or not match or not (match["low"] or match["high"]):
            raise UserError(
                f"Invalid length group '{item}' in --length_groups={spec}. Fix: give comma-separated ranges of "
                f"interactions per user, optionally named, e.g. --length_groups={DEFAULT_LENGTH_GROUPS} "
                f"('5' exactly 5, '6-8', '9-' 9 or more, '-5' up to 5)."
            )
        low = int(match["low"]) if match["low"] else 1
        high = int(match["high"]) if match["high"] else (None if match["dash"] else low)
        if high is not None and high < low:
            raise UserError(f"Length group '{item}' is empty ({low} > {high}). Fix: write the range as low-high.")
        name = match["name"] or "len" + (item if match["high"] or not match["dash"] else item.rstrip("-") + "+")
        groups.append(LengthGroup(name, low, high))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise UserError(f"Length group names repeat in --length_groups={spec}. Fix: give each group its own name.")
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            a_high = np.inf if a.high is None else a.high
            b_high = np.inf if b.high is None else b.high
            if a.low <= b_high and b.low <= a_high:
                raise UserError(
                    f"Length groups '{a.name}' and '{b.name}' overlap in --length_groups={spec}. Fix: make the "
                    f"ranges disjoint, e.g. {DEFAULT_LENGTH_GROUPS}."
                )
    return groups


def read_rankings(path: str) -> dict[str, np.ndarray]:
    """Columns of a ``user_rankings_file`` as arrays (``user_id`` and ``target_item`` as strings)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"user_id": str, "target_item": str})
    missing = set(RANKING_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}")
    return {c: frame[c].to_numpy() for c in RANKING_COLUMNS}


def run_rankings(spec: RunSpec, result: dict[str, Any]) -> dict[str, np.ndarray]:
    """A finished run's test users as ``seq_len`` and ``topk_position`` arrays: from its result file's
    ``test_positions_by_length`` (complete on its own), else from its ``user_rankings_file``."""
    counts = result.get("test_positions_by_length")
    return rankings_from_positions(counts) if counts else read_rankings(str(spec.rankings_file))


def topk_from_result_keys(keys: Sequence[str]) -> tuple[list[str], list[int]]:
    """Metric names and cut-offs of a RecBole result (keys like ``ndcg@10``), in their order."""
    metrics: list[str] = []
    topk: list[int] = []
    for key in keys:
        name, _, k = key.partition("@")
        if k.isdigit():
            metrics += [name] if name not in metrics else []
            topk += [int(k)] if int(k) not in topk else []
    return metrics, sorted(topk)


def ranking_metrics(
    topk_position: np.ndarray, metrics: Sequence[str], topk: Sequence[int], decimal_place: int = 4
) -> dict[str, float]:
    """RecBole's top-k metrics (its own classes) for users with one target each, from the target's top-k position.

    ``topk_position`` is 1-based (0: not in the top ``max(topk)``). Metrics that are not top-k metrics
    (e.g. AUC, item coverage) are skipped: they need more than the target's position.
    """
    from recbole.config import Config
    from recbole.evaluator.base_metric import TopkMetric
    from recbole.evaluator.collector import DataStruct
    from recbole.evaluator.register import metrics_dict

    # RecBole's metric classes use numpy aliases (np.float) that numpy >= 1.24 removed; RecBole's Config
    # restores them when it is built. Analysis builds no Config, so apply RecBole's own settings here.
    Config.__new__(Config).compatibility_settings()

    max_k = max(topk)
    n = len(topk_position)
    pos_index = np.zeros((n, max_k + 1), dtype=np.int64)  # RecBole's 'rec.topk': top-k hits, then pos_len
    hit_rows = np.nonzero((topk_position >= 1) & (topk_position <= max_k))[0]
    pos_index[hit_rows, topk_position[hit_rows] - 1] = 1
    pos_index[:, max_k] = 1  # one target per user (sequential next-item evaluation)
    struct = DataStruct()
    struct.set("rec.topk", torch.from_numpy(pos_index))
    metric_config = {"topk": list(topk), "metric_decimal_place": decimal_place}
    result: dict[str, float] = {}
    for name in metrics:
        metric_class = metrics_dict.get(name.lower())
        if metric_class is None or not issubclass(metric_class, TopkMetric) or n == 0:
            continue
        result.update(metric_class(metric_config).calculate_metric(struct))
    return {k: float(v) for k, v in result.items()}


def group_metrics(
    rankings: dict[str, np.ndarray],
    groups: Sequence[LengthGroup],
    metrics: Sequence[str],
    topk: Sequence[int],
    decimal_place: int = 4,
) -> dict[str, dict[str, Any]]:
    """Per group: ``users`` (count) and RecBole's top-k metrics over the group's users.

    Users outside every group are reported as group ``other`` (only when there are some), so the
    counts always add up to the number of test users.
    """
    lengths, positions = rankings["seq_len"], rankings["topk_position"]
    masks = {group.name: group.contains(lengths) for group in groups}
    assigned = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(len(lengths), dtype=bool)
    if not assigned.all():
        masks["other"] = ~assigned
    return {
        name: {"users": int(mask.sum()), **ranking_metrics(positions[mask], metrics, topk, decimal_place)}
        for name, mask in masks.items()
    }


# --------------------------------------------------------------------------------------------------
# Tables, tests and plot
# --------------------------------------------------------------------------------------------------
@dataclass
class Table:
    """Results of all finished runs, the metric names and the per-group columns."""

    rows: list[dict[str, Any]]
    metrics: list[str]  # test metric keys, e.g. ['hit@5', ..., 'mrr@20']
    groups: list[str] = field(default_factory=list)
    group_labels: dict[str, str] = field(default_factory=dict)
    valid_metric: str = "NDCG@10"


def build_rows(specs: list[RunSpec], results: dict[str, dict], groups: list[LengthGroup]) -> Table:
    """One row per finished run: model, seed, test metrics, metrics per length group, valid metrics, cost."""
    rows: list[dict[str, Any]] = []
    metrics: list[str] = []
    group_names: list[str] = []
    valid_metric = "NDCG@10"
    for spec in specs:
        result = results.get(spec.name)
        if result is None:
            continue
        test = result["test_result"]
        valid_metric = (result.get("properties") or {}).get("valid_metric") or valid_metric
        metrics += [k for k in test if k not in metrics]
        names, topk = topk_from_result_keys(list(test))
        per_group = group_metrics(run_rankings(spec, result), groups, names, topk)
        group_names += [g for g in per_group if g not in group_names]
        row: dict[str, Any] = {"model": spec.model, "model_class": spec.model_class, "seed": spec.seed, **test}
        for g, values in per_group.items():
            row[f"{g}_users"] = values["users"]
            row.update({f"{g}_{k}": v for k, v in values.items() if k != "users"})
        row.update({f"valid_{k}": v for k, v in (result.get("best_valid_result") or {}).items()})
        # contrastive models: what their views were like in the last training epoch (docs/views.md)
        last_views = (result.get("view_statistics") or [{}])[-1]
        row.update({f"view_{k}": v for k, v in last_views.items() if k != "epoch"})
        row.update(
            {
                "epochs": result.get("epochs_run"),
                "stopped_by": result.get("stopped_by"),
                "seconds_per_epoch": mean_epoch_seconds(result),
                "test_eval_seconds": result.get("test_eval_seconds"),
                "wall_seconds": result.get("wall_seconds"),
                "peak_rss_mb": result.get("peak_rss_mb"),
                "exclude_history": bool((result.get("properties") or {}).get("exclude_history", False)),
            }
        )
        rows.append(row)
    labels = {g.name: g.describe() for g in groups}
    labels["other"] = "in no group"
    return Table(rows, metrics, group_names, labels, str(valid_metric))


def write_csv(table: Table, path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(table.rows)
    frame.to_csv(path, index=False)


def _values(table: Table, model: str, column: str) -> dict[int, float]:
    return {
        r["seed"]: float(r[column])
        for r in table.rows
        if r["model"] == model and r.get(column) is not None and not _isnan(r.get(column))
    }


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """Mean and sample standard deviation (ddof = 1; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_test(reference: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """Two-sided paired t-test (scipy.stats.ttest_rel) over the seeds both models finished.

    p is 1 when the models tie on every seed; None with fewer than two seeds or when the difference is
    the same non-zero value on every seed (the t statistic is then undefined).
    """
    from scipy import stats

    seeds = sorted(set(reference) & set(baseline))
    diffs = [round(reference[s] - baseline[s], 10) for s in seeds]  # metrics are rounded: drop float noise
    out: dict[str, Any] = {"n": len(seeds), "diff": (sum(diffs) / len(diffs)) if diffs else None, "p": None}
    if len(seeds) < 2:
        out["note"] = "needs 2 or more seeds"
    elif all(d == 0 for d in diffs):
        out["p"] = 1.0
    elif len(set(diffs)) == 1:
        out["note"] = "same difference on every seed"
    else:
        out["p"] = float(stats.ttest_rel([reference[s] for s in seeds], [baseline[s] for s in seeds]).pvalue)
    return out


_METRIC_NAMES = {"hit": "Hit", "ndcg": "NDCG", "mrr": "MRR", "recall": "Recall", "precision": "Precision", "map": "MAP"}


def metric_label(key: str) -> str:
    """``ndcg@10`` -> ``NDCG@10`` (RecBole's result keys are lower case)."""
    name, sep, k = key.partition("@")
    return _METRIC_NAMES.get(name, name) + sep + k


def _fmt(mean: float, std: Optional[float]) -> str:
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def _metric_table(table: Table, models: list[str], columns: list[tuple[str, str]], bold_best: bool = True) -> list[str]:
    """Markdown rows: one per model, cells mean ± std over seeds; the highest mean per column in bold."""
    stats: dict[tuple[str, str], tuple[float, Optional[float]]] = {}
    for model in models:
        for column, _ in columns:
            values = list(_values(table, model, column).values())
            if values:
                stats[model, column] = mean_std(values)
    best = {}
    for column, _ in columns:
        means = [stats[m, column][0] for m in models if (m, column) in stats]
        best[column] = max(means) if means else None
    lines = ["| model | seeds | " + " | ".join(label for _, label in columns) + " |"]
    lines.append("|---|---:|" + "---:|" * len(columns))
    for model in models:
        seeds = len({r["seed"] for r in table.rows if r["model"] == model})
        if not seeds:
            continue
        cells = []
        for column, _ in columns:
            if (model, column) not in stats:
                cells.append("–")
                continue
            mean, std = stats[model, column]
            text = _fmt(mean, std)
            cells.append(f"**{text}**" if bold_best and best[column] is not None and mean == best[column] else text)
        lines.append(f"| {model} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def _cost_table(table: Table, models: list[str]) -> list[str]:
    columns = [("epochs", "epochs"), ("seconds_per_epoch", "s / epoch"), ("peak_rss_mb", "peak RSS (MiB)")]
    lines = ["| model | " + " | ".join(label for _, label in columns) + " |", "|---|" + "---:|" * len(columns)]
    for model in models:
        cells = []
        for column, _ in columns:
            values = list(_values(table, model, column).values())
            if not values:
                cells.append("–")
                continue
            mean, std = mean_std(values)
            cells.append(f"{mean:.1f} ± {std:.1f}" if std is not None else f"{mean:.1f}")
        if any(c != "–" for c in cells):
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _validation_section(table: Table, models: list[str], label: dict[str, str]) -> list[str]:
    """The validation metrics at each run's selected epoch (what model selection saw), where recorded."""
    columns = [(f"valid_{m}", label[m]) for m in table.metrics if any(f"valid_{m}" in r for r in table.rows)]
    if not columns:
        return []
    return ["## Validation metrics (the selected epoch)", "", *_metric_table(table, models, columns), ""]


def _views_section(table: Table, models: list[str]) -> list[str]:
    """Contrastive models' view statistics of their last training epoch (docs/views.md explains each)."""
    names = list(dict.fromkeys(k for r in table.rows for k in r if k.startswith("view_")))
    if not names:
        return []
    return [
        "## Views (last training epoch)",
        "",
        "Each run's view statistics in its last training epoch, means over its batches (docs/views.md): "
        "`pop_pct_*` popularity percentile of the replacements and of the items they replace, `views_differ` "
        "share of positions where the two views differ, `recon_*` how often the denoiser ranks the replaced "
        "item first / in its top k, `cl_acc` InfoNCE accuracy.",
        "",
        *_metric_table(table, models, [(n, n[len("view_"):]) for n in names], bold_best=False),
        "",
    ]


def paired_tests(table: Table, models: list[str], reference: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{baseline: {metric: paired_test(...)}}`` for the reference model against every other model."""
    tests: dict[str, dict[str, dict[str, Any]]] = {}
    if reference not in models:
        return tests
    for baseline in models:
        if baseline == reference:
            continue
        tests[baseline] = {
            m: paired_test(_values(table, reference, m), _values(table, baseline, m)) for m in table.metrics
        }
    return tests


def write_summary(
    table: Table,
    path: Path,
    *,
    dataset: str,
    models: list[str],
    seeds: list[int],
    reference: str,
    failed: list[RunSpec],
    command: str,
    png_name: Optional[str],
    configurations: Optional[dict[str, tuple[str, tuple[str, ...]]]] = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Write summary.md; return the paired tests (also in the file)."""
    flags = {r["exclude_history"] for r in table.rows}
    diverged = [f"{r['model']}-{r['seed']}" for r in table.rows if r.get("stopped_by") == "diverged"]
    if flags == {True}:
        protocol = ("**excluded**: every item of the user's history is dropped from the ranking (never the target), "
                    "as S3-Rec-family code and RecTools do (`exclude_history: True`)")
    elif flags == {False}:
        protocol = ("**kept**: items the user already interacted with stay among the candidates, RecBole's sequential "
                    "full ranking (`exclude_history: False`)")
    else:
        protocol = "**mixed**: some runs used `exclude_history: True`, others `False`; do not compare them"
    label = {m: metric_label(m) for m in table.metrics}
    lines = [
        f"# Benchmark on {dataset}",
        "",
        f"- Date: {datetime.now().strftime('%Y-%m-%d %H:%M')}; command: `{command}`",
        f"- Models: {', '.join(models)}; seeds: {', '.join(map(str, seeds))}; finished runs: {len(table.rows)} of "
        f"{len(models) * len(seeds)}" + (f"; **failed**: {', '.join(s.name for s in failed)}" if failed else "")
        + (f"; **diverged** (tested at their best checkpoint before the divergence): {', '.join(diverged)}"
           if diverged else ""),
        *[f"- `{label_}` = {model} with {', '.join(f'`{os.path.relpath(f)}`' for f in files)}"
          for label_, (model, files) in (configurations or {}).items() if files or label_ != model],
        "- Protocol: leave-one-out by time, full ranking over all items, model selection on validation "
        f"{table.valid_metric}, test at the selected epoch (each run's properties: `runs/<model>-<seed>.json`).",
        f"- History items in the ranking: {protocol}.",
        "- Cells: mean ± sample standard deviation (ddof = 1) over seeds; the best mean per column in bold.",
        "",
        "## Test metrics",
        "",
        *_metric_table(table, models, [(m, label[m]) for m in table.metrics]),
        "",
        *_validation_section(table, models, label),
        "## Cost",
        "",
        *_cost_table(table, models),
        "",
        *_views_section(table, models),
    ]
    tests = paired_tests(table, models, reference)
    if tests:
        lines += [
            f"## {reference} against each baseline",
            "",
            f"Two-sided paired t-test over seeds (`scipy.stats.ttest_rel`) of the per-seed test values; "
            f"Δ = mean of ({reference} − baseline). p = 1 where the two models tie on every seed; n/a with fewer "
            f"than two common seeds or the same difference on every seed.",
            "",
            "| baseline | " + " | ".join(label[m] for m in table.metrics) + " |",
            "|---|" + "---|" * len(table.metrics),
        ]
        for baseline, per_metric in tests.items():
            cells = []
            for m in table.metrics:
                t = per_metric[m]
                if t["diff"] is None:
                    cells.append("–")
                    continue
                p = f"p = {t['p']:.3g}" if t["p"] is not None else "p n/a"
                cells.append(f"Δ {t['diff']:+.4f}, {p}")
            lines.append(f"| {baseline} | " + " | ".join(cells) + " |")
        lines.append("")
    elif reference not in models:
        lines += [f"(No paired tests: the reference model {reference} is not among --models.)", ""]
    if table.groups:
        lines += [
            "## By sequence length",
            "",
            "Users grouped by the number of their interactions over the whole sequence (train + valid + test); "
            "the same metrics, computed with RecBole's metric classes from each run's test rankings "
            "(`test_positions_by_length` in `runs/<model>-<seed>.json`).",
            "",
        ]
        first = table.rows[0]
        for g in table.groups:
            users = first.get(f"{g}_users", 0)
            lines += [f"### {g} ({table.group_labels.get(g, '')} interactions): {users} test users", ""]
            if not users:
                lines += ["(no users in this group)", ""]
                continue
            lines += [*_metric_table(table, models, [(f"{g}_{m}", label[m]) for m in table.metrics]), ""]
    if png_name:
        lines += [f"![NDCG@10, Hit@10 and seconds per epoch]({png_name})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return tests


def _plot_metric(table: Table, prefix: str) -> Optional[str]:
    preferred = f"{prefix}@10"
    if preferred in table.metrics:
        return preferred
    return next((m for m in table.metrics if m.startswith(prefix + "@")), None)


def summary_figure(table: Table, models: list[str], title: str, reference: Optional[str] = None):
    """The summary's figure: NDCG@10 and Hit@10 per model as each seed's value (small dots) and the mean ± std
    over seeds (a marker with error bars), on an axis fitted to the values rather than from 0 (models a few
    percent apart look alike on bars from 0), with the reference model's mean as a dashed line; then the
    seconds per training epoch as bars (from 0)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    present = [m for m in models if any(r["model"] == m for r in table.rows)]
    panels = [(c, metric_label(c)) for c in (_plot_metric(table, "ndcg"), _plot_metric(table, "hit")) if c]
    panels.append(("seconds_per_epoch", "seconds per training epoch"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (column, label) in zip(axes, panels):
        per_model = [list(_values(table, model, column).values()) for model in present]
        stats = [mean_std(values) if values else (float("nan"), None) for values in per_model]
        if column == "seconds_per_epoch":
            ax.bar(range(len(present)), [mean for mean, _ in stats], yerr=[std or 0.0 for _, std in stats],
                   capsize=4, color=[f"C{i}" for i in range(len(present))])
            ax.set_title(f"{label}\n(as each run went: machines and load may differ)", fontsize="medium")
        else:
            for i, (values, (mean, std)) in enumerate(zip(per_model, stats)):
                if values:
                    offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
                    ax.plot([i + o for o in offsets], values, ".", color=f"C{i}", alpha=0.45, markersize=5)
                    ax.errorbar([i], [mean], yerr=[std or 0.0], fmt="o", color=f"C{i}", capsize=4, markersize=6)
            if reference in present and not _isnan(stats[present.index(reference)][0]):
                ax.axhline(stats[present.index(reference)][0], color="0.4", linestyle="--", linewidth=1)
            ax.set_title(f"{label} (axis not from 0)")
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels(present, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_plot(table: Table, models: list[str], path: Path, title: str, reference: Optional[str] = None) -> bool:
    """:func:`summary_figure` written to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = summary_figure(table, models, title, reference)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------------
# A curve over benchmark folders: test metrics against train_keep_ratio (docs/ablation.md, sparsity)
# --------------------------------------------------------------------------------------------------
CURVE_METRICS = ("ndcg@10", "hit@10")


def read_curve(
    points: dict[float, Path], models: Optional[Sequence[str]] = None
) -> dict[str, dict[float, dict[str, list[float]]]]:
    """model -> ratio -> metric -> values over seeds, from each point's ``results.csv`` (a benchmark folder);
    only ``models`` when given."""
    import pandas as pd

    curve: dict[str, dict[float, dict[str, list[float]]]] = {}
    for ratio, folder in sorted(points.items()):
        path = Path(folder) / "results.csv"
        if not path.is_file():
            raise UserError(f"No results.csv in {folder}. Fix: run the benchmark into that folder first.")
        for row in pd.read_csv(path).to_dict("records"):
            if models and row["model"] not in models:
                continue
            per_metric = curve.setdefault(row["model"], {}).setdefault(ratio, {m: [] for m in CURVE_METRICS})
            for metric in CURVE_METRICS:
                per_metric[metric].append(float(row[metric]))
    return curve


def write_curve(points: dict[float, Path], out: Path, title: str, models: Optional[Sequence[str]] = None) -> Path:
    """``summary.md`` (test NDCG@10 and Hit@10 per model and ratio, mean ± std over seeds) and
    ``summary.png`` (test NDCG@10 against the ratio, one line per model) in ``out``."""
    curve = read_curve(points, models)
    ratios = sorted(points)
    folders = ", ".join(f"{r:g}: `{points[r]}`" for r in ratios)
    lines = [f"# {title}", "", f"Test metrics against `train_keep_ratio`, each cell mean ± std over seeds (n seeds). "
             f"Benchmark folders: {folders}.", ""]
    for metric in CURVE_METRICS:
        lines += [f"## {metric_label(metric)} (test)", "", "| model | " + " | ".join(f"{r:g}" for r in ratios) + " |",
                  "|---|" + "---:|" * len(ratios)]
        for model, by_ratio in curve.items():
            cells = []
            for r in ratios:
                values = by_ratio.get(r, {}).get(metric, [])
                cells.append(f"{_fmt(*mean_std(values))} ({len(values)})" if values else "")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![test NDCG@10 against train_keep_ratio](summary.png)", ""]
    with atomic_write(out / "summary.md") as f:
        f.write("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for model, by_ratio in curve.items():
        xs = [r for r in ratios if by_ratio.get(r, {}).get("ndcg@10")]
        stats = [mean_std(by_ratio[r]["ndcg@10"]) for r in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s or 0.0 for _, s in stats], marker="o", capsize=3, label=model)
    ax.set_xlabel("train_keep_ratio (share of training interactions kept)")
    ax.set_ylabel("test NDCG@10")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(out / "summary.png", "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return out / "summary.md"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m recbole_diffcl.report --curve OUT RATIO=FOLDER ...``: the sparsity curve of benchmark folders."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--curve", required=True, type=Path, help="folder for summary.md and summary.png")
    parser.add_argument("--title", default="Sparsity: test metrics against train_keep_ratio")
    parser.add_argument("--models", default="", help="comma-separated model labels to plot (default: all)")
    parser.add_argument("points", nargs="+", help="RATIO=BENCHMARK_FOLDER, e.g. 0.25=docs/results/x/keep-0.25")
    args = parser.parse_args(argv)
    points = {}
    try:
        for point in args.points:
            ratio, sep, folder = point.partition("=")
            if not sep:
                raise ValueError(point)
            points[float(ratio)] = Path(folder)
        require_extra("matplotlib", "plot", "The curve's plot (summary.png)")
        print(write_curve(points, args.curve, args.title, [m for m in args.models.split(",") if m]))
    except ValueError as exc:
        print(f"error: a point must be RATIO=FOLDER with a number for RATIO, got {exc}. Fix: e.g. "
              f"0.25=docs/results/amazon-beauty/sparsity/keep-0.25.")
        return 2
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
