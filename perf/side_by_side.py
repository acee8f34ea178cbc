"""Training epochs of two checkouts, side by side in one run: the speed ratio new / old on this machine.

    python perf/side_by_side.py --old=../baseline-checkout [--new=.] --dataset=amazon-beauty \
        --models=SASRecPlus,DiffCLRec --rounds=4 [--out=docs/results/side_by_side.md] [--key=value ...]

Without ``--old`` only ``--new`` runs: each model's epoch over the first model's, in one run.
``--models`` entries are model names or, as the benchmark's, labelled configurations
``LABEL=MODEL[:a.yaml+b.yaml]`` (e.g. ``DiffCLRec-pair=DiffCLRec:benchmarks/campaign/cl-pair-view-and-original.yaml``),
whose files are read by every checkout (one that does not know a property ignores it: compare such
entries without ``--old``).

For every (checkout, model) a worker process builds the data, the model and its trainer once, as the
runner does, with that checkout's code. The parent then asks the workers for one training epoch at a
time (RecBole's ``_train_epoch`` of the run's trainer: collation, steps, loss logging), never two at once,
alternating old and new within each round (old-new, then new-old in the next), so that whatever else
the machine does falls on both alike. Round 1 is warm-up; the table gives the median seconds of the other
rounds, the ratio new / old per model, and each model's epoch over the first model's in each checkout.
Threads: torch's default (all cores) unless ``OMP_NUM_THREADS`` says otherwise. Extra ``--key=value``
pairs are properties for every worker (e.g. ``--fused_cross_entropy=False``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(checkout: str, model: str, dataset: str, overrides: dict, config_files: list[str]) -> None:
    """Build the run once; for each line ``epoch K`` on stdin train epoch K and print its seconds."""
    sys.path.insert(0, checkout)
    import torch
    from recbole.utils import init_seed

    import recbole_diffcl
    from recbole_diffcl.quick_start import build_data, load_config
    from recbole_diffcl.trainer import get_trainer

    # every epoch of this worker must run its checkout's code (2026-12-07 to 12-08 the workers imported this
    # script's own checkout first, so --old measured the new code: the check keeps that from coming back)
    if Path(recbole_diffcl.__file__).resolve().parents[1] != Path(checkout).resolve():
        raise SystemExit(f"the worker for {checkout} imported {recbole_diffcl.__file__}")

    props = {"show_progress": False, "state": "ERROR", "log_wandb": False, **overrides}
    model_class, config = load_config(model, dataset, config_files or None, props)
    try:  # as the runner does (checkouts before keep_freed_memory have neither)
        from recbole_diffcl.utils import keep_freed_memory

        keep_freed_memory(config["keep_freed_memory"], config["device"])
    except ImportError:
        pass
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, _, _ = build_data(config)
    init_seed(config["seed"], config["reproducibility"])
    net = model_class(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"], model_class)(config, net)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "steps": len(train_data)}), flush=True)
    for line in sys.stdin:
        epoch = int(line.split()[1])
        start, faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        trainer._train_epoch(train_data, epoch, show_progress=False)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        print(json.dumps({"seconds": time.perf_counter() - start, "page_faults": faults}), flush=True)


class Worker:
    def __init__(self, checkout: Path, entry, dataset: str, overrides: dict, workdir: Path):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"--checkout={checkout}",
               f"--model={entry.model}", f"--dataset={dataset}", f"--overrides={json.dumps(overrides)}",
               f"--config_files={json.dumps(list(entry.config_files))}"]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a worker stopped (exit {self.proc.wait()}); run it alone to see why")
        return json.loads(line)

    def epoch(self, k: int) -> dict:
        """Train epoch ``k``: its seconds and the worker's minor page faults in it."""
        self.proc.stdin.write(f"epoch {k}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def git_commit(checkout: Path) -> str:
    """The checkout's commit, with "+ uncommitted changes" when its tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True, check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "recbole_diffcl", "props")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> str:
    sys.path.insert(0, str(ROOT))
    from recbole_diffcl.utils import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", help="the baseline checkout (a folder with recbole_diffcl/); without it, --new alone")
    parser.add_argument("--new", default=str(ROOT), help="the checkout to compare (default: this one)")
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--models", default="SASRecPlus,DiffCLRec",
                        help="model names or labelled configurations LABEL=MODEL[:a.yaml+b.yaml], comma separated")
    parser.add_argument("--rounds", type=int, default=4, help="epochs per (checkout, model); the first is warm-up")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkout", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--config_files", default="[]", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args.worker:
        worker(args.checkout, args.model, args.dataset, json.loads(args.overrides), json.loads(args.config_files))
        return 0
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (one warm-up round)")
    if args.old is not None and not args.old.strip():
        parser.error("--old is empty (an unset variable?): give a checkout's folder, or leave --old out")
    overrides = dict(item[2:].split("=", 1) for item in extra if item.startswith("--") and "=" in item)
    overrides.setdefault("data_path", str(ROOT / "dataset"))
    checkouts = {"new": Path(args.new).resolve()}
    if args.old is not None:
        checkouts = {"old": Path(args.old).resolve(), **checkouts}
    sys.path.insert(0, str(ROOT))
    from recbole_diffcl.benchmark import parse_model_entries
    from recbole_diffcl.errors import UserError
    from recbole_diffcl.quick_start import check_dataset, load_config

    entries = {e.label: e for e in parse_model_entries(args.models)}
    models = list(entries)

    for v, path in checkouts.items():
        if not (path / "recbole_diffcl").is_dir():
            raise UserError(f"--{v}={path} is not a checkout of this project (no recbole_diffcl/ in it). Fix: make one "
                            f"with `git worktree add ../base-COMMIT COMMIT` and pass its folder.")
    for m in models:  # a wrong model name or missing dataset files: one paragraph here, not a worker's traceback
        e = entries[m]
        check_dataset(load_config(e.model, args.dataset, list(e.config_files) or None,
                                  {"show_progress": False, **overrides})[1])
    times: dict[tuple[str, str], list[float]] = {(v, m): [] for v in checkouts for m in models}
    faults: dict[tuple[str, str], list[int]] = {(v, m): [] for v in checkouts for m in models}
    with tempfile.TemporaryDirectory() as tmp:
        workers = {}
        for v, path in checkouts.items():
            for m in models:
                folder = Path(tmp) / f"{v}-{m}"
                folder.mkdir()
                workers[v, m] = Worker(path, entries[m], args.dataset,
                                       {**overrides, "checkpoint_dir": str(folder / "saved")}, folder)
        threads = workers[next(iter(workers))].info["threads"]
        for r in range(args.rounds):
            order = list(checkouts) if r % 2 == 0 else list(checkouts)[::-1]
            # with one checkout the models alternate instead, so that drift falls on none of them alone
            for m in (models if r % 2 == 0 or len(checkouts) > 1 else models[::-1]):
                for v in order:
                    epoch = workers[v, m].epoch(r)
                    times[v, m].append(epoch["seconds"])
                    faults[v, m].append(epoch["page_faults"])  # (every worker runs this script's worker())
                    print(f"round {r + 1}/{args.rounds} {m} {v}: {epoch['seconds']:.1f} s", flush=True)
        for w in workers.values():
            w.close()

    median = {key: statistics.median(values[1:]) for key, values in times.items()}
    if "old" not in checkouts:
        return report_one_checkout(args, argv, checkouts["new"], models, times, faults, median, threads)
    lines = [
        *header(args, argv, threads, "old and new alternating",
                f"old = {checkouts['old']} ({git_commit(checkouts['old'])}), new = {checkouts['new']} "
                f"({git_commit(checkouts['new'])})"),
        f"| model | old s / epoch | new s / epoch | new / old | old / {models[0]} | new / {models[0]} | "
        "page faults / epoch, old; new | epochs (s), old; new |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in models:
        lines.append(
            f"| {m} | {median['old', m]:.1f} | {median['new', m]:.1f} | {median['new', m] / median['old', m]:.2f} | "
            f"{median['old', m] / median['old', models[0]]:.2f} | {median['new', m] / median['new', models[0]]:.2f} | "
            f"{statistics.median(faults['old', m][1:]):,.0f}; {statistics.median(faults['new', m][1:]):,.0f} | "
            + ", ".join(f"{s:.1f}" for s in times['old', m]) + "; " + ", ".join(f"{s:.1f}" for s in times['new', m])
            + " |"
        )
    return write_table(lines, args.out)


def report_one_checkout(args, argv, checkout: Path, models: list[str], times, faults, median, threads) -> int:
    """The table without ``--old``: each model's median epoch and its ratio to the first model's (the models
    in turn, in reverse order every other round)."""
    lines = [
        *header(args, argv, threads, "the models in turn", f"checkout = {checkout} ({git_commit(checkout)})"),
        f"| model | s / epoch | x {models[0]} | page faults / epoch | epochs (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for m in models:
        lines.append(
            f"| {m} | {median['new', m]:.1f} | {median['new', m] / median['new', models[0]]:.2f} | "
            f"{statistics.median(faults['new', m][1:]):,.0f} | " + ", ".join(f"{s:.1f}" for s in times['new', m]) + " |"
        )
    return write_table(lines, args.out)


def header(args, argv, threads: int, order: str, checkouts: str) -> list[str]:
    """The table's first lines: when, where, how the epochs were ordered, which code, the command."""
    return [
        f"Side by side, {datetime.now().strftime('%Y-%m-%d %H:%M')}, {machine()}, {threads} torch threads; "
        f"{args.dataset}, {args.rounds - 1} measured rounds after one warm-up, {order}.",
        f"{checkouts}; command: `python perf/side_by_side.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
        "",
    ]


def write_table(lines: list[str], out) -> int:
    table = "\n".join(lines)
    print(table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:  # a worker imports only its own checkout's package (worker())
        sys.exit(main())
    sys.path.insert(0, str(ROOT))
    from recbole_diffcl.errors import exit_code_of

    sys.exit(exit_code_of(main))
