"""Hyper-parameter search over property files, on top of RecBole's ``HyperTuning`` (hyperopt).

    python -m recbole_diffcl.tune --model=DiffCLRec --dataset=amazon-beauty --params_file=space.yaml \
        --algo=tpe --max_evals=30 [--config_files="a.yaml"] [--key=value ...] --out=DIR

The search space is a YAML file, one property per key::

    learning_rate: {loguniform: [0.0001, 0.01]}   # bounds are values (not their logs)
    mask_ratio: {uniform: [0.05, 0.5]}
    hidden_size: {choice: [32, 64]}
    cl_weight: [0.05, 0.1, 0.2]                     # a plain list is a choice
    MAX_ITEM_LIST_LENGTH: {quniform: [20, 50, 10]}  # low, high, step (integers stay integers)

``--algo``: ``grid`` (every combination of choices, in random order; only choices), ``random`` or
``tpe`` (hyperopt's Tree-structured Parzen Estimator), mapped to HyperTuning's ``exhaustive``,
``random`` and ``bayes``. Each trial writes its properties to ``DIR/trials/trial-NNN.yaml`` and runs
the plugin's runner on them in its own process (``python -m recbole_diffcl ... --config_files="<yours>
trial-NNN.yaml"``, the same code path as ``run_recbole_diffcl.py``): a crash or memory growth in one
trial cannot touch the next. The score is the run's best validation ``valid_metric``; test metrics are
recorded but never used to choose.

Writes ``DIR/trials.csv`` (every trial, after each one) and ``DIR/best.yaml`` (the best trial's
properties, ready for ``--config_files``). ``--engine=ray`` runs trials in parallel with Ray Tune
(needs ``pip install "ray[tune]==2.6.3" "pyarrow<20"``; see docs/benchmark.md).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import yaml

from recbole_diffcl.cli import config_file_list, parse_property_overrides
from recbole_diffcl.errors import UserError, exit_code_of
from recbole_diffcl.runs import (
    duration, execute, interruptible, mean_epoch_seconds, python_path, read_result, runner_command, user_error_message,
)
from recbole_diffcl.utils import atomic_write, is_number, require_extra

ALGOS = {"grid": "exhaustive", "random": "random", "tpe": "bayes"}  # ours -> RecBole HyperTuning's names
KINDS = ("choice", "uniform", "loguniform", "quniform")
RESERVED = {"model", "dataset", "config_files", "result_file", "user_rankings_file"}


# --------------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searched property: ``kind`` in KINDS, ``values`` the choices or (low, high[, step])."""

    name: str
    kind: str
    values: tuple

    def hyperopt(self):
        from hyperopt import hp

        if self.kind == "choice":
            return hp.choice(self.name, list(self.values))
        if self.kind == "uniform":
            return hp.uniform(self.name, *self.values)
        if self.kind == "loguniform":  # hyperopt takes the logs of the bounds
            return hp.loguniform(self.name, math.log(self.values[0]), math.log(self.values[1]))
        return hp.quniform(self.name, *self.values)

    def ray(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        low, high, step = self.values
        return tune.qrandint(int(low), int(high), int(step)) if self.integer else tune.quniform(low, high, step)

    @property
    def integer(self) -> bool:
        return self.kind == "quniform" and all(isinstance(v, int) for v in self.values)

    def edge_values(self) -> list:
        """Values worth checking before the search: every choice, or both bounds."""
        return list(self.values) if self.kind == "choice" else [self.values[0], self.values[1]]

    def plain(self, value: Any) -> Any:
        """A sampled value as a plain YAML-able Python value (hyperopt yields numpy scalars and tuples)."""
        value = _plain(value)
        if self.integer:
            return int(round(value))
        if self.kind in ("uniform", "loguniform", "quniform") and isinstance(value, float):
            return float(f"{value:.6g}")  # readable property files; far finer than any tuning resolution
        return value


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_space(path: str) -> list[Param]:
    """Read and check a search-space YAML file (see the module docstring for its format)."""
    if not os.path.isfile(path):
        raise UserError(f"Search-space file '{path}' does not exist. Fix: check --params_file.")
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"Search-space file {path} is not valid YAML: {exc}. Fix: correct its syntax.") from None
    return load_space_from_dict(raw, path)


def load_space_from_dict(raw: Any, path: str = "the search space") -> list[Param]:
    """Check a search space already read from YAML; ``path`` names it in error messages."""
    example = "learning_rate: {loguniform: [0.0001, 0.01]}, hidden_size: {choice: [32, 64]}"
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"Search-space file {path} must map property names to ranges, e.g. {example}.")
    params: list[Param] = []
    for name, spec in raw.items():
        if isinstance(spec, list):
            spec = {"choice": spec}
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
            raise UserError(
                f"Search-space entry '{name}: {spec}' in {path} is not understood. Fix: give exactly one of "
                f"{', '.join(KINDS)} per property, e.g. {example}."
            )
        kind, values = next(iter(spec.items()))
        bad = None
        if kind == "choice":
            if not isinstance(values, list) or not values:
                bad = "a non-empty list of values"
        elif kind in ("uniform", "loguniform"):
            if not (isinstance(values, list) and len(values) == 2 and all(map(is_number, values))
                    and values[0] < values[1]):
                bad = "[low, high] with low < high"
            elif kind == "loguniform" and values[0] <= 0:
                bad = "[low, high] with 0 < low < high"
        elif not (isinstance(values, list) and len(values) == 3 and all(map(is_number, values))
                  and values[0] < values[1] and values[2] > 0):
            bad = "[low, high, step] with low < high and step > 0"
        if bad:
            raise UserError(
                f"Search-space entry '{name}' in {path}: {kind} needs {bad}, got {values!r}. Fix: correct it."
            )
        params.append(Param(str(name), kind, tuple(values)))
    return params


# --------------------------------------------------------------------------------------------------
# Trials
# --------------------------------------------------------------------------------------------------
@dataclass
class Study:
    """What every trial shares: model, dataset, the user's files and fixed properties, where to write."""

    model: str
    dataset: str
    config_files: list[str]
    overrides: dict[str, str]
    out: Path
    params: list[Param]
    valid_metric: str
    bigger: bool
    cwd: str
    verbose: bool = False

    @property
    def trials_dir(self) -> Path:
        return self.out / "trials"


def run_trial(study: Study, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Run one trial through the runner in its own process; return its row for trials.csv.

    Raises UserError when the runner reports a user error (the same would stop every trial).
    """
    study.trials_dir.mkdir(parents=True, exist_ok=True)
    props_file = study.trials_dir / f"{name}.yaml"
    result_file = study.trials_dir / f"{name}.json"
    log_file = study.trials_dir / f"{name}.log"
    props_file.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    result_file.unlink(missing_ok=True)
    cmd = runner_command(study.model, study.dataset, [*study.config_files, str(props_file)], study.overrides,
                         f"--result_file={result_file}")
    start = time.time()
    code = execute(cmd, log_file, study.verbose, cwd=study.cwd)
    row: dict[str, Any] = {"trial": name, "status": "ok", **values}
    if code == UserError.exit_code:
        raise UserError(f"trial {name} ({values}): {user_error_message(log_file)}")
    result = read_result(result_file) if code == 0 else None
    if result is None:
        row.update(status=f"failed (exit code {code})", score=None, seconds=round(time.time() - start, 1),
                   log_file=str(log_file))
        return row
    row["score"] = result["best_valid_score"]
    row.update({f"valid_{k}": v for k, v in (result.get("best_valid_result") or {}).items()})
    row.update({f"test_{k}": v for k, v in (result.get("test_result") or {}).items()})
    row.update(
        epochs=result.get("epochs_run"),
        seconds_per_epoch=mean_epoch_seconds(result),
        seconds=round(time.time() - start, 1),
        log_file=str(log_file),
    )
    return row


def best_row(rows: list[dict[str, Any]], bigger: bool) -> Optional[dict[str, Any]]:
    """The finished trial with the best validation score (the earliest one on ties)."""
    finished = [r for r in rows if r.get("score") is not None and not math.isnan(r["score"])]
    if not finished:
        return None
    best = finished[0]
    for r in finished[1:]:
        if (r["score"] > best["score"]) if bigger else (r["score"] < best["score"]):
            best = r
    return best


def write_trials_csv(rows: list[dict[str, Any]], path: Path, study: Study) -> None:
    first = ["trial", "status", *[p.name for p in study.params], "score"]
    seen = list(dict.fromkeys(k for r in rows for k in r if k not in first))  # RecBole's metric order kept
    columns = first + sorted(
        seen, key=lambda k: (not k.startswith("valid_"), not k.startswith("test_"), k == "log_file")
    )
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            # list-valued properties (e.g. a choice of [64, 64]) as YAML flow text, as in a property file
            writer.writerow({
                k: yaml.safe_dump(v, default_flow_style=True).strip() if isinstance(v, (list, dict)) else v
                for k, v in r.items()
            })


def write_best_yaml(best: dict[str, Any], path: Path, study: Study, n_trials: int, command: str) -> None:
    """The best trial's searched properties as a property file, with how it was found as comments."""
    values = {p.name: best[p.name] for p in study.params}
    test_key = f"test_{study.valid_metric.lower()}"
    lines = [
        f"# Best of {n_trials} trials ({best['trial']}) for {study.model} on {study.dataset}:",
        f"#   valid {study.valid_metric} = {best['score']}"
        + (f", test {study.valid_metric} = {best[test_key]}" if test_key in best else ""),
        f"# Found by: {command}",
    ]
    if study.config_files:
        lines.append(f"# Trials also read: {' '.join(study.config_files)}")
    if study.overrides:
        fixed = " ".join(f"--{k}={v}" for k, v in study.overrides.items())
        lines.append(f"# Trials also had (not included below): {fixed}")
    lines.append(f"# Use: python run_recbole_diffcl.py --model={study.model} --dataset={study.dataset} "
                 f"--config_files=\"{' '.join([*study.config_files, str(path)])}\"")
    text = "\n".join(lines) + "\n" + yaml.safe_dump(values, sort_keys=False)
    with atomic_write(path) as f:
        f.write(text)


# --------------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------------
def _recbole_hyper_tuning():
    # hyperopt 0.2.5 imports pkg_resources (deprecated by setuptools); nothing a user can act on.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    require_extra("hyperopt", "tune", "Tuning (RecBole's HyperTuning)")  # HyperTuning imports it lazily
    from recbole.trainer.hyper_tuning import HyperTuning

    return HyperTuning


def run_hyperopt(study: Study, algo: str, max_evals: Optional[int], early_stop: Optional[int], seed: int,
                 on_trial: Callable[[dict], None]) -> int:
    """Sequential search with RecBole's HyperTuning (its space handling, algorithms and early stop)."""
    HyperTuning = _recbole_hyper_tuning()
    import hyperopt

    counter = {"n": 0}

    class PluginHyperTuning(HyperTuning):
        """HyperTuning whose trial runs the runner in a process and tolerates a failed trial.

        RecBole's own ``trial`` cannot report a failure to hyperopt and keeps the first best score only
        if it is non-zero (``if not self.best_score``); the best trial is chosen from trials.csv instead.
        """

        def trial(self, params):
            counter["n"] += 1
            values = {p.name: p.plain(params[p.name]) for p in study.params}
            row = run_trial(study, f"trial-{counter['n']:03d}", values)
            on_trial(row)
            if row["score"] is None:
                return {"status": hyperopt.STATUS_FAIL}
            score = float(row["score"])
            return {"loss": -score if study.bigger else score, "status": hyperopt.STATUS_OK}

        def run(self):
            # As HyperTuning.run, plus a seeded random state (reproducible searches) and no tqdm bar.
            hyperopt_version = tuple(int(x) for x in hyperopt.__version__.split(".")[:3] if x.isdigit())
            rstate = np.random.default_rng(seed) if hyperopt_version >= (0, 2, 7) else np.random.RandomState(seed)
            try:
                hyperopt.fmin(self.trial, self.space, algo=self.algo, max_evals=self.max_evals,
                              early_stop_fn=self.tolerant_early_stop if early_stop else None, rstate=rstate,
                              show_progressbar=False)
            except hyperopt.exceptions.AllTrialsFailed:
                pass  # trials.csv says so; tune() reports it

        def tolerant_early_stop(self, trials, best_loss=None, iteration_no_progress=0):
            # HyperTuning's no_progress_loss reads the last trial's loss, which a failed trial lacks.
            if trials.trials[-1]["result"].get("status") != hyperopt.STATUS_OK:
                return iteration_no_progress + 1 >= early_stop, [best_loss, iteration_no_progress + 1]
            return self.early_stop_fn(trials, best_loss, iteration_no_progress)

    space = {p.name: p.hyperopt() for p in study.params}
    tuner = PluginHyperTuning(
        objective_function=None, space=space, fixed_config_file_list=study.config_files, algo=ALGOS[algo],
        max_evals=max_evals or 0, early_stop=early_stop or 10 ** 9,
    )
    if algo == "grid" and max_evals:  # HyperTuning runs the whole grid; --max_evals caps it
        tuner.max_evals = min(int(tuner.max_evals), max_evals)
    total = int(tuner.max_evals)
    print(f"{algo} search: {total} trials (hyperopt {hyperopt.__version__} through RecBole's HyperTuning)",
          flush=True)
    tuner.run()
    return total


def run_ray(study: Study, algo: str, max_evals: Optional[int], seed: int, cpus_per_trial: float,
            gpus_per_trial: float, on_trial: Callable[[dict], None]) -> int:
    """Parallel trials with Ray Tune (as RecBole's run_hyper.py offers); each trial still runs the runner."""
    try:
        import pyarrow  # noqa: F401  (Ray Tune's result handling imports it)
        import ray
        from ray import tune
        from ray.air import session
    except ImportError as exc:
        raise UserError(
            f"--engine=ray needs Ray Tune's extras ({exc}). Fix: pip install \"ray[tune]==2.6.3\" \"pyarrow<20\" "
            f"(pyarrow >= 20 needs numpy 2, which RecBole 1.2.1 does not support), or use --engine=hyperopt."
        ) from None

    def trainable(config):
        values = {p.name: p.plain(config[p.name]) for p in study.params}
        name = f"trial-{session.get_trial_id()}"
        try:
            row = run_trial(study, name, values)
        except UserError as err:  # in a worker: report it as this trial's status
            row = {"trial": name, "status": f"error: {err}", **values, "score": None}
        session.report({"score": float(row["score"]) if row["score"] is not None else float("nan"), "row": row})

    class TrialRows(tune.Callback):
        """Runs in the driver: hands each finished trial's row to ``on_trial`` as it arrives."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            on_trial(result["row"])

    if algo == "grid":
        param_space = {p.name: tune.grid_search(list(p.values)) for p in study.params}
        num_samples, search_alg = 1, None
    elif algo == "random":
        param_space = {p.name: p.ray() for p in study.params}
        num_samples, search_alg = max_evals, None
    else:
        from ray.tune.search.hyperopt import HyperOptSearch

        param_space = None
        num_samples = max_evals
        search_alg = HyperOptSearch({p.name: p.hyperopt() for p in study.params}, metric="score",
                                    mode="max" if study.bigger else "min", random_state_seed=seed)
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": python_path()}})
    try:
        analysis = tune.run(
            trainable, config=param_space, num_samples=num_samples, search_alg=search_alg,
            resources_per_trial={"cpu": cpus_per_trial, "gpu": gpus_per_trial}, storage_path=str(study.out / "ray"),
            verbose=0, raise_on_failed_trial=False, callbacks=[TrialRows()],
        )
    finally:
        ray.shutdown()
    return len(analysis.trials)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_diffcl.tune",
        allow_abbrev=False,  # property names must never be taken for abbreviations of our options
        description="Search property values (YAML search space) with RecBole's HyperTuning; every trial runs the "
        "plugin's runner in its own process. Writes trials.csv and best.yaml. Extra --key=value pairs are fixed "
        "properties of every trial.",
    )
    parser.add_argument("--model", "-m", default="DiffCLRec", help="model name (default: DiffCLRec)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--params_file", required=True,
                        help="search space YAML (choice / uniform / loguniform / quniform)")
    parser.add_argument("--algo", choices=sorted(ALGOS), default="tpe", help="grid, random or tpe (default: tpe)")
    parser.add_argument("--max_evals", type=int, default=None,
                        help="number of trials (grid: at most this many, default the whole grid; --engine=ray "
                        "runs the whole grid)")
    parser.add_argument("--early_stop", type=int, default=None,
                        help="stop after this many trials without improvement (default: never)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML property files for every trial")
    parser.add_argument("--out", required=True, help="output folder (trials/, trials.csv, best.yaml)")
    parser.add_argument("--search_seed", type=int, default=2020, help="seed of the search algorithm (default: 2020)")
    parser.add_argument("--engine", choices=["hyperopt", "ray"], default="hyperopt",
                        help="hyperopt: sequential, RecBole's HyperTuning (default); ray: parallel trials with "
                        "Ray Tune")
    parser.add_argument("--cpus_per_trial", type=float, default=1.0, help="--engine=ray: CPUs reserved per trial")
    parser.add_argument("--gpus_per_trial", type=float, default=0.0,
                        help="--engine=ray: GPUs reserved per trial, e.g. 0.5 for two trials per GPU (default 0: Ray "
                        "hides the GPUs from trials that reserve none, so they train on the CPU)")
    parser.add_argument("--verbose", action="store_true", help="also print each trial's output (always in its log)")
    args, rest = parser.parse_known_args(list(argv))
    return args, parse_property_overrides(parser, rest, RESERVED)


def _check_study(args: argparse.Namespace, overrides: dict[str, str], params: list[Param],
                 config_files: list[str]) -> tuple[str, bool]:
    """Fail before any trial on what would fail in every trial; return (valid_metric, bigger is better)."""
    from recbole_diffcl.quick_start import load_config

    if args.max_evals is not None and args.max_evals < 1:
        raise UserError(f"--max_evals={args.max_evals} must be at least 1. Fix: e.g. --max_evals=20.")
    if args.algo != "grid" and args.max_evals is None:
        raise UserError(f"--algo={args.algo} needs --max_evals (the number of trials). Fix: e.g. --max_evals=20.")
    if args.algo == "grid":
        ranged = [p.name for p in params if p.kind != "choice"]
        if ranged:
            raise UserError(
                f"--algo=grid searches choices only, but {', '.join(ranged)} are ranges. Fix: list values with "
                f"{{choice: [...]}} or use --algo=random / --algo=tpe."
            )
    clash = sorted({p.name for p in params} & set(overrides))
    if clash:
        raise UserError(
            f"{', '.join(clash)} is both searched (--params_file) and fixed (--{clash[0]}=...). Fix: drop one of them."
        )
    _, config = load_config(args.model, args.dataset, config_files, dict(overrides))
    unknown = [p.name for p in params if p.name not in config.final_config_dict]
    if unknown:
        print(f"warning: {', '.join(unknown)} is not set by RecBole's defaults or the property files of "
              f"{args.model}; check the spelling (RecBole ignores unknown properties).", file=sys.stderr)
    for p in params:  # every choice and both bounds pass the runner's property checks
        for value in p.edge_values():
            load_config(args.model, args.dataset, config_files, {**overrides, p.name: p.plain(value)})
    return str(config["valid_metric"]), bool(config["valid_metric_bigger"])


def tune(argv: Sequence[str]) -> int:
    """Run the search described by the command line ``argv``; return the exit code."""
    args, overrides = parse_args(argv)
    if args.engine == "hyperopt" or args.algo == "tpe":  # ray's tpe is hyperopt's too
        require_extra("hyperopt", "tune", "Tuning with --engine=hyperopt or --algo=tpe")
    params = load_space(args.params_file)
    config_files = config_file_list(args.config_files, absolute=True)
    valid_metric, bigger = _check_study(args, overrides, params, config_files)
    out = Path(args.out).resolve()
    if (out / "trials.csv").exists():
        raise UserError(f"{out} already holds a search (trials.csv). Fix: choose another --out, or delete that folder.")
    out.mkdir(parents=True, exist_ok=True)
    study = Study(args.model, args.dataset, config_files, overrides, out, params, valid_metric, bigger,
                  cwd=os.getcwd(), verbose=args.verbose)
    command = "python -m recbole_diffcl.tune " + shlex.join(list(argv))
    rows: list[dict[str, Any]] = []
    start = time.time()
    state = {"total": args.max_evals}

    def on_trial(row: dict[str, Any]) -> None:
        rows.append(row)
        write_trials_csv(rows, out / "trials.csv", study)
        best = best_row(rows, bigger)
        if best is not None:
            write_best_yaml(best, out / "best.yaml", study, len(rows), command)
        total = state["total"]
        left = (total - len(rows)) if total else 0
        eta = f", ETA {duration((time.time() - start) / len(rows) * left)}" if left > 0 else ""
        values = ", ".join(f"{p.name}={row[p.name]}" for p in params)
        score = f"valid {valid_metric} {row['score']:.4f}" if row["score"] is not None else row["status"]
        best_text = f"best {best['score']:.4f} ({best['trial']})" if best else "no finished trial yet"
        print(f"[{len(rows)}/{total or '?'}] {values}: {score}; {best_text}{eta}", flush=True)

    try:
        if args.algo == "grid":
            size = int(np.prod([len(p.values) for p in params]))
            state["total"] = size if args.engine == "ray" or not args.max_evals else min(size, args.max_evals)
        # SIGTERM stops the search and its trial as Ctrl-C does (Ray installs its own SIGTERM handler and
        # runs the trials in its workers: left to Ray)
        with interruptible() if args.engine != "ray" else nullcontext():
            if args.engine == "ray":
                total = run_ray(study, args.algo, args.max_evals, args.search_seed, args.cpus_per_trial,
                                args.gpus_per_trial, on_trial)
            else:
                total = run_hyperopt(study, args.algo, args.max_evals, args.early_stop, args.search_seed, on_trial)
    except KeyboardInterrupt:
        print(f"interrupted after {len(rows)} trials; trials.csv and best.yaml hold them", file=sys.stderr)
        return 130
    best = best_row(rows, bigger)
    print(f"trials: {out / 'trials.csv'} ({len(rows)} of {total})")
    if best is None:
        print("no trial finished; see the logs in " + str(study.trials_dir), file=sys.stderr)
        return 1
    print(f"best:   {out / 'best.yaml'} ({best['trial']}, valid {valid_metric} {best['score']:.4f})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return exit_code_of(lambda: tune(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
