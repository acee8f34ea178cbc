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
``DIR/runs/<model>-<seed>.log``; its checkpoints go to ``DIR/checkpoints/<model>-<seed>/``. A run counts as
finished when its result file is complete, so the same command again skips finished runs; an interrupted
run (Ctrl-C, kill, a session that ended) continues from the last epoch checkpoint it wrote, with the
runner's exact ``--resume``, and a failed run without one starts again.

Writes ``DIR/results.csv`` (one row per run), ``DIR/summary.md`` (mean +- std per model, best in bold,
paired t-tests of the reference model against each baseline, metrics by sequence-length group) and
``DIR/summary.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from recbole_diffcl.cli import config_file_list, parse_property_overrides
from recbole_diffcl.errors import UserError, exit_code_of
from recbole_diffcl.report import (
    DEFAULT_LENGTH_GROUPS,
    build_rows,
    parse_length_groups,
    write_csv,
    write_plot,
    write_summary,
)
from recbole_diffcl.runs import (
    RunSpec,
    duration,
    execute,
    interruptible,
    load_finished,
    resumable_checkpoint,
    run_command,
    stop_live_runs,
    tail,
    user_error_message,
)
from recbole_diffcl.model import get_model
from recbole_diffcl.utils import atomic_write, require_extra

#: Properties the benchmark sets for each run itself.
RESERVED = {"model", "dataset", "seed", "result_file", "user_rankings_file", "config_files", "checkpoint_dir"}


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
    parser.add_argument("--summary_only", action="store_true",
                        help="start no run: summarise the runs of --models x --seeds already finished in --out "
                        "(a campaign's table so far)")
    parser.add_argument("--runs_from", default=None,
                        help="comma-separated benchmark folders made with the same dataset, --config_files and "
                        "properties: a run finished there (same label and seed) counts here and is not run again "
                        "(e.g. an ablation folder taking the main table's reference runs)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs at a time (default 1; e.g. 8 on a GPU, which trains several small models at once)")
    args, rest = parser.parse_known_args(list(argv))
    fix = " (use --models, --seeds, --dataset and --config_files instead)"
    return args, parse_property_overrides(parser, rest, RESERVED, fix)


LIST_EXAMPLES = {"models": "SASRec,CL4SRec,DuoRec,DiffCLRec", "seeds": "2020,2021,2022",
                 "runs_from": "docs/results/amazon-beauty"}


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
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _digests(files: Sequence[str]) -> list[dict[str, str]]:
    return [{"path": f, "sha256": _file_digest(f)} for f in files]


def _contents(recorded: dict) -> dict:
    """A recorded setting without its files' paths: a moved checkout, or another clone, with the same
    files (by their digests) continues the same benchmark."""
    return {
        key: [f.get("sha256") if isinstance(f, dict) else f for f in value] if key == "config_files" else value
        for key, value in recorded.items()
    }


def _settings(dataset: str, config_files: list[str], overrides: dict[str, str]) -> dict:
    return {"dataset": dataset, "config_files": _digests(config_files), "overrides": overrides}


def _configurations(entries: Sequence[ModelEntry]) -> dict:
    return {e.label: {"model": e.model, "config_files": _digests(e.config_files)} for e in entries}


def _recorded(folder: Path) -> Optional[dict]:
    """A benchmark folder's recorded settings (``benchmark.json``): None for no (or an unreadable) file, {} for
    a file that is not a benchmark's."""
    path = folder / "benchmark.json"
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return recorded if isinstance(recorded, dict) else {}


def _changed_configurations(earlier: dict, configurations: dict) -> list[str]:
    return [label for label in configurations
            if label in earlier and _contents(earlier[label]) != _contents(configurations[label])]


def check_settings(
    out: Path, dataset: str, config_files: list[str], overrides: dict[str, str], entries: Sequence[ModelEntry] = ()
) -> None:
    """Refuse to mix runs made with other settings into one folder (models and seeds may change, but a
    label keeps its model and files)."""
    settings = _settings(dataset, config_files, overrides)
    configurations = _configurations(entries)
    before = _recorded(out)
    if before is not None:
        earlier = before.pop("configurations", {})
        changed = _changed_configurations(earlier, configurations)
        if changed:
            raise UserError(
                f"{out} holds runs of {', '.join(changed)} made with another model or other property files "
                f"(before: {json.dumps({k: earlier[k] for k in changed})}). Fix: use another --out, or a new label "
                f"for the changed configuration."
            )
        configurations = {**earlier, **configurations}
        if _contents(before) != _contents(settings):
            raise UserError(
                f"{out} holds runs made with other settings (before: {json.dumps(before)}; now: "
                f"{json.dumps(settings)}). Fix: use another --out for the new settings, or repeat the earlier "
                f"dataset, --config_files (unchanged) and --key=value properties to continue that benchmark."
            )
    with atomic_write(out / "benchmark.json") as f:  # a cut-off file would later read as "no settings" and accept any
        json.dump({**settings, "configurations": configurations}, f, indent=2)


def check_runs_from(
    folders: Sequence[Path], dataset: str, config_files: list[str], overrides: dict[str, str],
    entries: Sequence[ModelEntry],
) -> None:
    """Refuse a ``--runs_from`` folder whose runs were made with other settings than this benchmark's."""
    settings = _settings(dataset, config_files, overrides)
    for folder in folders:
        recorded = _recorded(folder)
        if recorded is None:
            raise UserError(f"--runs_from: {folder} is not a benchmark folder (no readable benchmark.json). Fix: "
                            f"name a folder that an earlier `python -m recbole_diffcl.benchmark --out=...` wrote.")
        changed = _changed_configurations(recorded.pop("configurations", {}), _configurations(entries))
        if changed or _contents(recorded) != _contents(settings):
            what = f"runs of {', '.join(changed)} with another model or other files" if changed else "other settings"
            raise UserError(
                f"--runs_from: {folder} holds {what} (its settings: {json.dumps(recorded)}; here: "
                f"{json.dumps(settings)}), so its runs cannot stand for this benchmark's. Fix: drop it from "
                f"--runs_from, or repeat its dataset, --config_files and --key=value properties.")


def locate_finished(
    specs: list[RunSpec], dataset: str, folders: Sequence[Path] = ()
) -> tuple[list[RunSpec], dict[str, Optional[dict]]]:
    """Each run as found, with its result (None: still to run): here when it finished here, else in the first
    of ``folders`` where the same label and seed finished. Each result file is read once."""
    located, finished = [], {}
    for spec in specs:
        result = load_finished(spec, dataset)
        for folder in folders if result is None else ():
            other = replace(spec, runs_dir=folder / "runs")
            if (result := load_finished(other, dataset)) is not None:
                spec = other
                break
        located.append(spec)
        finished[spec.name] = result
    return located, finished


def run_all(
    specs: list[RunSpec],
    finished: dict[str, Optional[dict]],
    dataset: str,
    config_files: list[str],
    overrides: dict[str, str],
    verbose: bool,
    parallel: int = 1,
) -> tuple[dict[str, dict], list[RunSpec]]:
    """Run what is not finished yet (``finished``: each run's result or None, from :func:`locate_finished`),
    ``parallel`` runs at a time, with progress and ETA; return finished results and failed runs."""
    results: dict[str, dict] = {}
    failed: list[RunSpec] = []
    pending = [(i, spec) for i, spec in enumerate(specs, 1) if finished[spec.name] is None]
    executed_seconds: list[float] = []
    n = len(specs)
    print(f"{n} runs: {n - len(pending)} finished earlier, {len(pending)} to run"
          + (f", {parallel} at a time" if parallel > 1 else ""), flush=True)
    for i, spec in enumerate(specs, 1):
        if finished[spec.name] is not None:
            results[spec.name] = finished[spec.name]
            print(f"[{i}/{n}] {spec.model} seed {spec.seed}: finished earlier, skipped", flush=True)

    def start(i: int, spec: RunSpec) -> tuple[float, list[str], bool]:
        """Print the run's line; return its start time, its command and whether it resumes."""
        left = len(pending) - len(executed_seconds)
        eta = "ETA after the first run"
        if executed_seconds:  # the mean of this invocation's runs, times the runs left (over the parallel ones)
            eta = f"ETA {duration(sum(executed_seconds) / len(executed_seconds) * left / parallel)}"
        resume = resumable_checkpoint(spec, dataset)
        how = f"resuming from {resume}" if resume else "running"
        print(f"[{i}/{n}] {spec.model} seed {spec.seed}: {how} ({left} left, {eta}); log {spec.log_file}",
              flush=True)
        for stale in (spec.result_file, spec.rankings_file):
            stale.unlink(missing_ok=True)  # a failed or interrupted run's leftovers
        if resume:
            with open(spec.log_file, "a", encoding="utf-8") as log:
                log.write(f"\n--- interrupted; the benchmark resumes this run from {resume} ---\n")
        return time.time(), run_command(spec, dataset, config_files, overrides, resume), resume is not None

    def finish(i: int, spec: RunSpec, code: int, started: float) -> None:
        executed_seconds.append(time.time() - started)
        result = load_finished(spec, dataset)
        diverged = result is not None and result.get("stopped_by") == "diverged"
        if diverged:  # a result too: its best checkpoint before the divergence was tested (the runner exits 1)
            results[spec.name] = result
            print(f"[{i}/{n}] {spec.model} seed {spec.seed}: DIVERGED, its best checkpoint tested "
                  f"({result.get('divergence')})", flush=True)
            return
        if code == 0 and result is not None:
            results[spec.name] = result
            key = "ndcg@10" if "ndcg@10" in result["test_result"] else next(iter(result["test_result"]))
            print(
                f"[{i}/{n}] {spec.model} seed {spec.seed}: done in {duration(executed_seconds[-1])} "
                f"(test {key} {result['test_result'][key]:.4f}, {result.get('epochs_run')} epochs)",
                flush=True,
            )
            return
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

    if parallel <= 1:
        for i, spec in pending:
            started, cmd, resuming = start(i, spec)
            finish(i, spec, execute(cmd, spec.log_file, verbose, append=resuming), started)
        return results, failed

    # Runs are processes: threads only wait for them. A user error in one stops the others from starting.
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    queue = list(pending)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        running = {}
        try:
            while queue or running:
                while queue and len(running) < parallel:
                    i, spec = queue.pop(0)
                    started, cmd, resuming = start(i, spec)
                    running[pool.submit(execute, cmd, spec.log_file, False, append=resuming)] = (i, spec, started)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i, spec, started = running.pop(future)
                    finish(i, spec, future.result(), started)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the running ones too (they resume on a rerun)
            queue.clear()
            stop_live_runs()
            raise
        except BaseException:
            queue.clear()  # let the running ones end (their logs stay), start nothing more
            raise
    return results, failed


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
    config_files = config_file_list(args.config_files, absolute=True)

    require_extra("matplotlib", "plot", "The benchmark's plot (summary.png)")  # before hours of runs
    # Check every model's properties here, before hours of runs, with the runner's own checks.
    from recbole_diffcl.quick_start import load_config

    for entry in entries:
        get_model(entry.model, option="--models")  # an unknown name is reported against --models
        load_config(entry.model, args.dataset, [*config_files, *entry.config_files], dict(overrides))

    out = Path(args.out).resolve()
    folders = [Path(f).resolve() for f in _split_list(args.runs_from, "runs_from")] if args.runs_from else []
    check_runs_from(folders, args.dataset, config_files, overrides, entries)
    check_settings(out, args.dataset, config_files, overrides, entries)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    specs = [RunSpec(e.label, seed, runs_dir, e.model, e.config_files) for seed in seeds for e in entries]
    specs, finished = locate_finished(specs, args.dataset, folders)
    if folders:
        taken = [f"{spec.name} ({spec.runs_dir.parent})" for spec in specs if spec.runs_dir != runs_dir]
        if taken:
            print(f"--runs_from: {len(taken)} finished run(s) taken from other folders: {', '.join(taken)}")
    try:
        if args.summary_only:
            results = {name: r for name, r in finished.items() if r is not None}
            failed = []
            print(f"{len(specs)} runs: {len(results)} finished, summarised; the others not started (--summary_only)")
        else:
            with interruptible():
                results, failed = run_all(specs, finished, args.dataset, config_files, overrides, args.verbose,
                                          max(1, args.parallel))
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to continue (an interrupted run "
              "resumes from its last epoch checkpoint)", file=sys.stderr)
        return 130

    table = build_rows(specs, results, groups)
    command = "python -m recbole_diffcl.benchmark " + shlex.join(list(argv))
    if table.rows:
        write_csv(table, out / "results.csv")
        write_plot(table, models, out / "summary.png", f"{args.dataset}: each seed (dots), mean ± std over seeds",
                   reference=args.reference)
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
