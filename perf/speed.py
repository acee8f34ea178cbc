"""Training and evaluation speed of several models on one dataset, one process per model.

    python perf/speed.py --dataset=amazon-sports --models=SASRec,DiffCLRec,CL4SRec,DuoRec \
        --epochs=4 --out=scratch/speed-sports.md [--regimes=whole,prefix] [--devices=cpu,cuda] [--key=value ...]

``--regimes``: the training regimes to time for every plugin model (``whole``: one row per user, loss at
every position, their default; ``prefix``: RecBole's row per prefix); RecBole's own models always train
per prefix. ``--devices``: ``cpu`` and/or ``cuda`` (the latter only where a GPU is visible; ``cpu`` on a
GPU machine runs with ``use_gpu=False``). Default: the plugin models' regime on this machine's device.

For each model it runs the plugin's runner (``python -m recbole_diffcl``) for ``--epochs`` epochs
without validation and reports: the median seconds per training epoch over the epochs after the
first (warm-up) one, the seconds of the full-sort evaluation of all test users, the peak RSS, and the
peak GPU memory on a GPU. Extra ``--key=value`` pairs are passed to every run (e.g.
``--length_bucketing=True``). Writes a markdown table with the date, machine and command.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, also when another copy is installed


def machine() -> str:
    from recbole_diffcl.utils import cpu_model

    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def run_model(model: str, dataset: str, epochs: int, overrides: list[str], workdir: Path, tag: str = "") -> dict:
    result_file = workdir / f"{model}{tag}.json"
    from recbole_diffcl.runs import child_env, runner_command

    cmd = runner_command(
        model, dataset, [], {}, f"--epochs={epochs}", "--eval_step=0", "--show_progress=False",
        f"--checkpoint_dir={workdir / 'saved'}", f"--result_file={result_file}", *overrides,
    )
    env = child_env()
    start = time.time()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    result["process_seconds"] = time.time() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", default="SASRec,DiffCLRec")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per model; the first is warm-up")
    parser.add_argument("--out", default=None, help="write the markdown table here (also printed)")
    parser.add_argument("--regimes", default="default", help="whole,prefix (plugin models); default: their own")
    parser.add_argument("--devices", default="default", help="cpu,cuda; default: the runner's choice")
    args, overrides = parser.parse_known_args(argv)
    if not any(o.startswith("--data_path=") for o in overrides):
        # runs happen in a temporary folder: read the data from this checkout's dataset/ (as the runner would)
        overrides.append(f"--data_path={ROOT / 'dataset'}")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (one warm-up epoch, then the measured ones)")

    from recbole_diffcl.model import plugin_models

    import torch

    plugins = plugin_models()
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        for model, regime, device in (
            (m, r, d) for d in devices for m in args.models.split(",") for r in args.regimes.split(",")
            if r == "default" or m in plugins or r == "prefix"
        ):
            extra = {"whole": ["--whole_sequence_training=True"], "prefix": ["--whole_sequence_training=False"]}
            extra = extra.get(regime, []) if model in plugins else []
            extra += ["--use_gpu=False"] if device == "cpu" else []
            print(f"[speed] {model} ({regime}, {device}) on {args.dataset}: {args.epochs} epochs ...",
                  file=sys.stderr, flush=True)
            r = run_model(model, args.dataset, args.epochs, [*overrides, *extra], Path(tmp), f"-{regime}-{device}")
            measured = r["seconds_per_epoch"][1:]
            rows.append(
                {
                    "model": model,
                    "regime": r.get("regime", regime),
                    "device": "GPU" if "peak_gpu_mb" in r and device != "cpu" else "CPU",
                    "epoch_s": statistics.median(measured),
                    "epochs": ", ".join(f"{s:.1f}" for s in r["seconds_per_epoch"]),
                    "eval_s": r["test_eval_seconds"],
                    "rss_gb": r["peak_rss_mb"] / 1024,
                    "gpu_gb": r.get("peak_gpu_mb", 0) / 1024 if "peak_gpu_mb" in r else None,
                    "batch": r["properties"].get("train_batch_size"),
                    "ndcg": r["test_result"].get("ndcg@10"),
                }
            )
            print(f"[speed] {model}: median epoch {rows[-1]['epoch_s']:.1f} s", file=sys.stderr, flush=True)
            write_table(rows, argv, args.out)  # after every model: a long benchmark cut short keeps its rows
    return 0


def write_table(rows: list[dict], argv: list[str] | None, out: str | None) -> None:
    command = "python perf/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine()}",
        f"Command: `{command}`",
        "",
        "| model | regime | device | s / training epoch (median after warm-up) | all epochs (s) | test full-sort eval (s) | peak RSS (GB) | peak GPU (GB) | batch | test NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gpu = f"{r['gpu_gb']:.2f}" if r["gpu_gb"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['regime']} | {r['device']} | {r['epoch_s']:.1f} | {r['epochs']} | {r['eval_s']:.2f} | {r['rss_gb']:.2f} | {gpu} | {r['batch']} | {r['ndcg']:.4f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out + ".tmp").write_text(table)
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    sys.exit(main())
