"""Side-by-side benchmark: every model x seed through the runner, then a table, tests and a plot.

    python -m recbole_diffcl.benchmark --dataset=amazon-beauty --models=SASRec,CL4SRec,DuoRec,DiffCLRec \
        --seeds=2020,2021,2022 [--config_files="a.yaml b.yaml"] [--length_groups=short=-5,mid=6-8,long=9-] \
        [--key=value ...] --out=DIR

``--models`` entries are model names or labelled configurations ``LABEL=MODEL[:a.yaml+b.yaml]``, e.g.
``--models=SASRecPlus,DiffCLRec,DiffCLRec-paper=DiffCLRec:props/model/DiffCLRec-paper.yaml``: the label
names the rows of every table and the paired tests; the files are layered after ``--config_files`` for
that configuration only.

Each run is one process of the plugin's runner (``python -m recbole_diffcl``, the same code path as
``run_recbole_diffcl.py``) with ``--seed``, ``--result_file=DIR/runs/<model>-<seed>.json`` and
``--user_rankings_file=DIR/runs/<model>-<seed>.users.csv``; its output goes to
``DIR/runs/<model>-<seed>.log``. A run counts as finished when its result file is complete, so the
same command again skips finished runs and redoes failed or interrupted ones.

Writes ``DIR/results.csv`` (one row per run), ``DIR/summary.md`` (mean +- std per model, best in bold,
paired t-tests of the reference model against each baseline, metrics by sequence-length group) and
``DIR/summary.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

from recbole_diffcl.cli import parse_property_overrides
from recbole_diffcl.errors import UserError, exit_code_of
from recbole_diffcl.evaluation import (
    DEFAULT_LENGTH_GROUPS,
    LengthGroup,
    group_metrics,
    parse_length_groups,
    read_rankings,
    topk_from_result_keys,
)

#: Properties the benchmark sets for each run itself.
RESERVED = {"model", "dataset", "seed", "result_file", "user_rankings_file", "config_files"}
PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_diffcl.benchmark",
        allow_abbrev=False,  # --seed=3 is a property, not an abbreviation of --seeds
        description="Run every model x seed with the plugin's runner (one process each) and summarise: "
        "results.csv, summary.md (mean +- std, paired t-tests, metrics by sequence length), summary.png. "
        "Extra --key=value pairs are properties passed to every run.",
    )
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument(
        "--models",
        default="SASRec,CL4SRec,DuoRec,DiffCLRec",
        help="comma-separated model names or labelled configurations LABEL=MODEL[:a.yaml+b.yaml] "
        "(e.g. DiffCLRec-paper=DiffCLRec:props/model/DiffCLRec-paper.yaml)",
    )
    parser.add_argument("--seeds", default="2020,2021,2022", help="comma-separated integer seeds")
    parser.add_argument("--config_files", default=None, help="space-separated YAML property files for every run")
    parser.add_argument("--out", required=True, help="output folder (runs/, results.csv, summary.md, summary.png)")
    parser.add_argument(
        "--length_groups",
        default=DEFAULT_LENGTH_GROUPS,
        help="user groups by whole-sequence length: [name=]range, comma separated; '5' exactly, '6-8', '9-' "
        f"9 or more, '-5' up to 5 (default: {DEFAULT_LENGTH_GROUPS})",
    )
    parser.add_argument("--reference", default="DiffCLRec",
                        help="model tested against every other (default: DiffCLRec)")
    parser.add_argument("--verbose", action="store_true", help="also print each run's output (always in its log)")
    args, rest = parser.parse_known_args(list(argv))
    fix = " (use --models, --seeds, --dataset and --config_files instead)"
    return args, parse_property_overrides(parser, rest, RESERVED, fix)


LIST_EXAMPLES = {"models": "SASRec,CL4SRec,DuoRec,DiffCLRec", "seeds": "2020,2021,2022"}


def _split_list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        example = LIST_EXAMPLES.get(what, "a,b")
        raise UserError(f"--{what} is empty. Fix: give a comma-separated list, e.g. --{what}={example}.")
    if len(set(items)) != len(items):
        raise UserError(f"--{what}={text} repeats an entry. Fix: list each one once.")
    return items


@dataclass(frozen=True)
class ModelEntry:
    """One configuration of the benchmark: a label (the row name), a model class name, its own YAML files."""

    label: str
    model: str
    config_files: tuple[str, ...] = ()


def parse_model_entries(text: str) -> list[ModelEntry]:
    """``--models``: ``Model`` or ``Label=Model[:a.yaml+b.yaml]`` entries, comma separated."""
    entries = []
    for item in _split_list(text, "models"):
        label, _, spec = item.partition("=")
        if not spec:
            label, spec = item, item
        model, _, files = spec.partition(":")
        paths = tuple(os.path.abspath(f) for f in files.split("+") if f) if files else ()
        if not label.strip() or not model.strip() or (files and not paths):
            raise UserError(
                f"--models entry '{item}' is malformed. Fix: write a model name (DiffCLRec) or a labelled "
                f"configuration LABEL=MODEL[:a.yaml+b.yaml], e.g. DiffCLRec-paper=DiffCLRec:props/model/DiffCLRec-paper.yaml."
            )
        for path in paths:
            if not os.path.isfile(path):
                raise UserError(
                    f"Config file '{path}' of --models entry '{label}' does not exist. Fix: check the path after "
                    f"'{model}:' (several files are joined with '+')."
                )
        entries.append(ModelEntry(label.strip(), model.strip(), paths))
    if len({e.label for e in entries}) != len(entries):
        raise UserError(f"--models={text} uses a label twice. Fix: give each configuration its own label.")
    return entries


def _parse_seeds(text: str) -> list[int]:
    seeds = _split_list(text, "seeds")
    try:
        return [int(s) for s in seeds]
    except ValueError:
        raise UserError(f"--seeds={text} must be integers. Fix: e.g. --seeds=2020,2021,2022.") from None


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    model: str  # the configuration's label (the model name unless labelled)
    seed: int
    runs_dir: Path
    model_class: str = ""  # the model the runner trains (default: ``model``)
    config_files: tuple[str, ...] = ()  # the configuration's own property files

    def __post_init__(self):
        self.model_class = self.model_class or self.model

    @property
    def name(self) -> str:
        return f"{self.model}-{self.seed}"

    @property
    def result_file(self) -> Path:
        return self.runs_dir / f"{self.name}.json"

    @property
    def rankings_file(self) -> Path:
        return self.runs_dir / f"{self.name}.users.csv"

    @property
    def log_file(self) -> Path:
        return self.runs_dir / f"{self.name}.log"


def load_finished(spec: RunSpec, dataset: str) -> Optional[dict[str, Any]]:
    """The run's result if it finished (complete result file and rankings), else None."""
    try:
        result = json.loads(spec.result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    complete = (
        isinstance(result, dict)
        and result.get("model") == spec.model_class
        and result.get("seed") == spec.seed
        and result.get("dataset") == dataset
        and bool(result.get("test_result"))
        and spec.rankings_file.is_file()
    )
    return result if complete else None


def run_command(spec: RunSpec, dataset: str, config_files: list[str], overrides: dict[str, str]) -> list[str]:
    """The runner's command line for one run (the same code path as run_recbole_diffcl.py)."""
    cmd = [sys.executable, "-m", "recbole_diffcl", f"--model={spec.model_class}", f"--dataset={dataset}"]
    files = [*config_files, *spec.config_files]
    if files:
        cmd.append("--config_files=" + " ".join(files))
    cmd += [f"--{k}={v}" for k, v in overrides.items()]
    cmd += [f"--seed={spec.seed}", f"--result_file={spec.result_file}", f"--user_rankings_file={spec.rankings_file}"]
    return cmd


def child_env() -> dict[str, str]:
    """The environment of a run: this one, with the plugin importable from any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    return env


def execute(cmd: list[str], log_file: Path, verbose: bool, cwd: Optional[str] = None) -> int:
    """Run ``cmd``, its output into ``log_file`` (and the console when verbose); return the exit code."""
    with open(log_file, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=cwd
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if verbose:
                    sys.stdout.write(line)
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


def user_error_message(log_file: Path) -> str:
    for line in reversed(tail(log_file, 40).splitlines()):
        if line.startswith("error: "):
            return line[len("error: "):]
    return f"the run stopped on a user error; see {log_file}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def check_settings(
    out: Path, dataset: str, config_files: list[str], overrides: dict[str, str], entries: Sequence[ModelEntry] = ()
) -> None:
    """Refuse to mix runs made with other settings into one folder (models and seeds may change, but a
    label keeps its model and files)."""
    settings = {
        "dataset": dataset,
        "config_files": [{"path": f, "sha256": _file_digest(f)} for f in config_files],
        "overrides": overrides,
    }
    configurations = {
        e.label: {"model": e.model, "config_files": [{"path": f, "sha256": _file_digest(f)} for f in e.config_files]}
        for e in entries
    }
    path = out / "benchmark.json"
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            before = None
        earlier = (before or {}).pop("configurations", {}) if isinstance(before, dict) else {}
        changed = [label for label in configurations if label in earlier and earlier[label] != configurations[label]]
        if changed:
            raise UserError(
                f"{out} holds runs of {', '.join(changed)} made with another model or other property files "
                f"(before: {json.dumps({k: earlier[k] for k in changed})}). Fix: use another --out, or a new label "
                f"for the changed configuration."
            )
        configurations = {**earlier, **configurations}
        if before is not None and before != settings:
            raise UserError(
                f"{out} holds runs made with other settings (before: {json.dumps(before)}; now: "
                f"{json.dumps(settings)}). Fix: use another --out for the new settings, or repeat the earlier "
                f"dataset, --config_files (unchanged) and --key=value properties to continue that benchmark."
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**settings, "configurations": configurations}, indent=2), encoding="utf-8")


def run_all(
    specs: list[RunSpec], dataset: str, config_files: list[str], overrides: dict[str, str], verbose: bool
) -> tuple[dict[str, dict], list[RunSpec]]:
    """Run what is not finished yet, with progress and ETA; return finished results and failed runs."""
    results: dict[str, dict] = {}
    failed: list[RunSpec] = []
    to_run = [s for s in specs if load_finished(s, dataset) is None]
    executed_seconds: list[float] = []
    n = len(specs)
    print(f"{n} runs: {n - len(to_run)} finished earlier, {len(to_run)} to run", flush=True)
    for i, spec in enumerate(specs, 1):
        done = load_finished(spec, dataset)
        if done is not None:
            results[spec.name] = done
            print(f"[{i}/{n}] {spec.model} seed {spec.seed}: finished earlier, skipped", flush=True)
            continue
        left = len(to_run) - len(executed_seconds)
        eta = "ETA after the first run"
        if executed_seconds:  # the mean of this invocation's runs, times the runs left
            eta = f"ETA {duration(sum(executed_seconds) / len(executed_seconds) * left)}"
        print(f"[{i}/{n}] {spec.model} seed {spec.seed}: running ({left} left, {eta}); log {spec.log_file}",
              flush=True)
        for stale in (spec.result_file, spec.rankings_file):
            stale.unlink(missing_ok=True)  # a failed or interrupted run's leftovers
        start = time.time()
        code = execute(run_command(spec, dataset, config_files, overrides), spec.log_file, verbose)
        executed_seconds.append(time.time() - start)
        result = load_finished(spec, dataset)
        if code == 0 and result is not None:
            results[spec.name] = result
            key = "ndcg@10" if "ndcg@10" in result["test_result"] else next(iter(result["test_result"]))
            print(
                f"[{i}/{n}] {spec.model} seed {spec.seed}: done in {duration(executed_seconds[-1])} "
                f"(test {key} {result['test_result'][key]:.4f}, {result.get('epochs_run')} epochs)",
                flush=True,
            )
            continue
        if code == 0 and spec.result_file.is_file() and not spec.rankings_file.is_file():
            raise UserError(
                f"{spec.model} seed {spec.seed} finished but wrote no per-user rankings, which the benchmark's "
                f"metrics by sequence length need: the test evaluation must be a full ranking. Fix: keep eval_args "
                f"mode 'full' (props/overall.yaml) for benchmarks."
            )
        if code == UserError.exit_code:  # the same mistake would stop every other run too
            raise UserError(f"{spec.model} seed {spec.seed}: {user_error_message(spec.log_file)}")
        failed.append(spec)
        print(f"[{i}/{n}] {spec.model} seed {spec.seed}: FAILED (exit code {code}); last lines of {spec.log_file}:",
              flush=True)
        print(tail(spec.log_file), flush=True)
    return results, failed


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
        per_group = group_metrics(read_rankings(str(spec.rankings_file)), groups, names, topk)
        group_names += [g for g in per_group if g not in group_names]
        epoch_seconds = result.get("seconds_per_epoch") or []
        row: dict[str, Any] = {"model": spec.model, "model_class": spec.model_class, "seed": spec.seed, **test}
        for g, values in per_group.items():
            row[f"{g}_users"] = values["users"]
            row.update({f"{g}_{k}": v for k, v in values.items() if k != "users"})
        row.update({f"valid_{k}": v for k, v in (result.get("best_valid_result") or {}).items()})
        row.update(
            {
                "epochs": result.get("epochs_run"),
                "seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 3) if epoch_seconds else None,
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
        f"{len(models) * len(seeds)}" + (f"; **failed**: {', '.join(s.name for s in failed)}" if failed else ""),
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
        "## Cost",
        "",
        *_cost_table(table, models),
        "",
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
            "the same metrics, computed with RecBole's metric classes on each run's per-user test rankings "
            "(`runs/<model>-<seed>.users.csv`).",
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


def write_plot(table: Table, models: list[str], path: Path, title: str) -> bool:
    """Bar charts with error bars (standard deviation over seeds): NDCG@10, Hit@10, seconds per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    present = [m for m in models if any(r["model"] == m for r in table.rows)]
    panels = [(c, metric_label(c)) for c in (_plot_metric(table, "ndcg"), _plot_metric(table, "hit")) if c]
    panels.append(("seconds_per_epoch", "seconds per training epoch"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (column, label) in zip(axes, panels):
        means, stds = [], []
        for model in present:
            values = list(_values(table, model, column).values())
            mean, std = mean_std(values) if values else (0.0, None)
            means.append(mean)
            stds.append(std or 0.0)
        ax.bar(range(len(present)), means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(present))])
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels(present, rotation=30, ha="right")
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def benchmark(argv: Sequence[str]) -> int:
    """Run the benchmark described by the command line ``argv``; return the exit code (0, or 1 if runs failed)."""
    args, overrides = parse_args(argv)
    entries = parse_model_entries(args.models)
    models = [e.label for e in entries]
    seeds = _parse_seeds(args.seeds)
    groups = parse_length_groups(args.length_groups)
    config_files = [os.path.abspath(f) for f in (args.config_files.split() if args.config_files else [])]

    # Check every model's properties here, before hours of runs, with the runner's own checks.
    from recbole_diffcl.quick_start import load_config
    from recbole_diffcl.utils import get_model

    for entry in entries:
        get_model(entry.model, option="--models")  # an unknown name is reported against --models
        load_config(entry.model, args.dataset, [*config_files, *entry.config_files], dict(overrides))

    out = Path(args.out).resolve()
    check_settings(out, args.dataset, config_files, overrides, entries)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    specs = [RunSpec(e.label, seed, runs_dir, e.model, e.config_files) for seed in seeds for e in entries]
    try:
        results, failed = run_all(specs, args.dataset, config_files, overrides, args.verbose)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to continue", file=sys.stderr)
        return 130

    table = build_rows(specs, results, groups)
    command = "python -m recbole_diffcl.benchmark " + shlex.join(list(argv))
    if table.rows:
        write_csv(table, out / "results.csv")
        write_plot(table, models, out / "summary.png", f"{args.dataset}: mean ± std over seeds")
        write_summary(
            table, out / "summary.md", dataset=args.dataset, models=models, seeds=seeds, reference=args.reference,
            failed=failed, command=command, png_name="summary.png",
            configurations={e.label: (e.model, e.config_files) for e in entries},
        )
        print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}\nplot:    {out / 'summary.png'}")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(s.name for s in failed)}; their logs are in {runs_dir}. "
              f"Run the same command again to redo them.", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return exit_code_of(lambda: benchmark(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
