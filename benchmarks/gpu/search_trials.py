"""A random search as many independent runs (for a GPU that trains many at once), in tune's formats.

    # 1. sample the trials of a search space (props/search/<Model>.yaml) into property files + a run list
    python benchmarks/gpu/search_trials.py make --model=DiffCLRec --space=props/search/DiffCLRec.yaml \
        --trials=20 --dataset=amazon-beauty --budget=300 --search_seed=2020 --out=benchmarks/gpu/search-beauty
    # 2. run the list (on the GPU machine): bash benchmarks/gpu/parallel-runs.sh benchmarks/gpu/search-beauty/DiffCLRec.txt 400
    # 3. collect the result files into trials.csv and best.yaml, as `python -m recbole_diffcl.tune` writes them
    python benchmarks/gpu/search_trials.py collect --model=DiffCLRec --space=props/search/DiffCLRec.yaml \
        --dataset=amazon-beauty --runs=RUNS_DIR --out=docs/results/amazon-beauty/search/DiffCLRec

``python -m recbole_diffcl.tune --algo=random`` runs the same kind of search one trial after another; this
script splits it so that every trial is one line of a parallel run list, each with the same wall-clock
budget (``max_train_seconds``) and the same seed. Trials are sampled with numpy from ``--search_seed``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recbole_diffcl.runs import mean_epoch_seconds  # noqa: E402
from recbole_diffcl.tune import Param, Study, best_row, load_space, write_best_yaml, write_trials_csv  # noqa: E402


def sample(param: Param, rng: np.random.Generator):
    if param.kind == "choice":
        return param.plain(param.values[rng.integers(len(param.values))])
    low, high = param.values[0], param.values[1]
    if param.kind == "uniform":
        return param.plain(rng.uniform(low, high))
    if param.kind == "loguniform":
        return param.plain(math.exp(rng.uniform(math.log(low), math.log(high))))
    step = param.values[2]
    return param.plain(low + step * round((rng.uniform(low, high) - low) / step))


def make(args) -> int:
    params = load_space(args.space)
    rng = np.random.default_rng(args.search_seed)
    out = Path(args.out)
    trials_dir = out / args.model
    trials_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Random search for {args.model} on {args.dataset}: {args.trials} trials of {args.space}, search seed "
        f"{args.search_seed}, seed {args.seed}, {args.budget} s training budget each (made by {Path(__file__).name})"
    ]
    for i in range(1, args.trials + 1):
        values = {p.name: sample(p, rng) for p in params}
        path = trials_dir / f"trial-{i:03d}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        rel = path.resolve().relative_to(ROOT)
        lines.append(
            f"{args.prefix or args.model}-trial-{i:03d} --model={args.model} --dataset={args.dataset} --seed={args.seed} "
            f"--max_train_seconds={args.budget} --config_files={{root}}/{rel}"
        )
    runs = out / f"{args.model}.txt"
    runs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{args.trials} trials in {trials_dir}; run list {runs}")
    return 0


def collect(args) -> int:
    params = load_space(args.space)
    rows = []
    for result_file in sorted(Path(args.runs).glob(f"*{args.model}-trial-*/result.json")):
        name = result_file.parent.name
        trial = name.split("-trial-")[-1]
        trial_file = ROOT / Path(args.trials_dir or f"benchmarks/gpu/search-{args.dataset.split('-')[-1]}") / args.model / f"trial-{trial}.yaml"
        values = yaml.safe_load(trial_file.read_text()) if trial_file.is_file() else {}
        result = json.loads(result_file.read_text())
        row = {"trial": f"trial-{trial}", "status": "ok", **values, "score": result["best_valid_score"]}
        row.update({f"valid_{k}": v for k, v in (result.get("best_valid_result") or {}).items()})
        row.update({f"test_{k}": v for k, v in (result.get("test_result") or {}).items()})
        row.update(epochs=result.get("epochs_run"), stopped_by=result.get("stopped_by"),
                   seconds_per_epoch=mean_epoch_seconds(result))
        rows.append(row)
    if not rows:
        raise SystemExit(f"no result files of {args.model} trials under {args.runs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = Study(args.model, args.dataset, [], {}, out, params, "NDCG@10", True, str(ROOT))
    write_trials_csv(rows, out / "trials.csv", study)
    best = best_row(rows, bigger=True)
    command = f"benchmarks/gpu/search_trials.py (random search, {len(rows)} trials, one GPU run each)"
    write_best_yaml(best, out / "best.yaml", study, len(rows), command)
    print(f"{len(rows)} trials; best {best['trial']} valid {best['score']:.4f}; {out / 'trials.csv'}, {out / 'best.yaml'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--model", required=True)
    m.add_argument("--space", required=True)
    m.add_argument("--trials", type=int, default=20)
    m.add_argument("--dataset", default="amazon-beauty")
    m.add_argument("--seed", type=int, default=2020, help="training seed of every trial")
    m.add_argument("--search_seed", type=int, default=2020)
    m.add_argument("--budget", type=float, default=300, help="max_train_seconds of every trial")
    m.add_argument("--prefix", default="")
    m.add_argument("--out", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--model", required=True)
    c.add_argument("--space", required=True)
    c.add_argument("--dataset", default="amazon-beauty")
    c.add_argument("--runs", required=True, help="folder of run folders (each with result.json)")
    c.add_argument("--trials_dir", default=None, help="the --out of `make` (default benchmarks/gpu/search-<name>)")
    c.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return make(args) if args.command == "make" else collect(args)


if __name__ == "__main__":
    sys.exit(main())
