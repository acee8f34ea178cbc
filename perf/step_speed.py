"""Seconds per training step of several configurations on one device, from one dataset load.

    python perf/step_speed.py --dataset=amazon-beauty [--steps=40] [--warmup=10] [--compile]

For each configuration (model + property overrides, listed in CONFIGS) it builds the model exactly as
the runner does, runs ``--warmup`` + ``--steps`` optimiser steps on real training batches of the regime
the configuration trains in (one row per user, or RecBole's prefix rows), and prints: seconds per step
(device-synchronised), the implied seconds of pure training steps per epoch, and the host-device
synchronisations per step (counted with torch.cuda.set_sync_debug_mode on CUDA). ``amp=fp16`` runs
the step under torch.autocast with a GradScaler as RecBole's ``enable_amp``/``enable_scaler`` do;
``amp=bf16`` under bf16 autocast. ``--compile`` adds torch.compile'd variants. Nothing is written.
Run it alone on the device: timings of concurrent processes are meaningless.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole.data import data_preparation  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_diffcl.data import create_dataset  # noqa: E402
from recbole_diffcl.data.dataloader import training_loader  # noqa: E402
from recbole_diffcl.errors import UserError, exit_code_of  # noqa: E402
from recbole_diffcl.quick_start import check_dataset, load_config  # noqa: E402

# (label, model, property overrides, amp)
CONFIGS = [
    ("DiffCLRec whole, passes 8", "DiffCLRec", {"length_sorted_passes": 8}, None),
    ("DiffCLRec whole, passes 1", "DiffCLRec", {"length_sorted_passes": 1}, None),
    ("DiffCLRec whole, auto", "DiffCLRec", {}, None),
    ("DiffCLRec whole, fp16 amp", "DiffCLRec", {}, "fp16"),
    ("DiffCLRec whole, bf16 amp", "DiffCLRec", {}, "bf16"),
    ("DiffCLRec paper file", "DiffCLRec", {"config_files": ["props/model/DiffCLRec-paper.yaml"]}, None),
    ("SASRecPlus whole, auto", "SASRecPlus", {}, None),
    # no host read in the step (issue #21): next-item losses and DiffCLRec's diffusion part over every position
    ("DiffCLRec whole, sync-free", "DiffCLRec", {"sync_free_steps": True}, None),
    ("SASRecPlus whole, sync-free", "SASRecPlus", {"sync_free_steps": True}, None),
    ("SASRecPlus whole, bf16 amp", "SASRecPlus", {}, "bf16"),
    ("CL4SRec whole, auto", "CL4SRec", {}, None),
    ("DiffCLRec prefix rows, auto", "DiffCLRec", {"whole_sequence_training": False}, None),
    ("SASRec (RecBole) prefix rows", "SASRec", {}, None),
    # autograd's debugging mode, which importing RecBole's sine.py turned on for the whole process until
    # recbole_diffcl.model.get_model undid it: what RecBole's SASRec rows cost before that fix
    ("SASRec (RecBole) prefix rows, anomaly mode", "SASRec", {"detect_anomaly": True}, None),
]


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(label, model_name, overrides, amp, dataset_name, cache, args, compiled=False) -> None:
    overrides = dict(overrides)
    files = overrides.pop("config_files", None)
    anomaly = overrides.pop("detect_anomaly", False)
    files = [str(Path(__file__).resolve().parents[1] / f) for f in files] if files else None
    model_class, config = load_config(model_name, dataset_name, files, {"show_progress": False, **overrides})
    if "data" not in cache:
        check_dataset(config)  # missing files: a one-paragraph error, not a download attempt
        cache["data"] = data_preparation(config, create_dataset(config))[0]
    train_data = training_loader(config, cache["data"])
    init_seed(config["seed"], config["reproducibility"])
    device = config["device"]
    model = model_class(config, train_data._dataset).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    wants = args.warmup + args.steps
    batches = [b.to(device) for b in itertools.islice(iter(train_data), wants)]
    loss_fn = torch.compile(model.calculate_loss, dynamic=True) if compiled else model.calculate_loss
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16" and torch.device(device).type == "cuda")

    def step(batch) -> None:
        with torch.autograd.set_detect_anomaly(anomaly):
            optimizer.zero_grad()
            with torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(batch)
                loss = sum(loss) if isinstance(loss, tuple) else loss
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    for batch in batches[: args.warmup]:
        step(batch)
    synchronize(device)
    start = time.perf_counter()
    for batch in batches[args.warmup:]:
        step(batch)
    synchronize(device)
    per_step = (time.perf_counter() - start) / args.steps
    syncs = "n/a (CPU)"
    if torch.device(device).type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in batches[-5:]:
                step(batch)
        torch.cuda.set_sync_debug_mode("default")
        synchronize(device)
        found = [w for w in caught if "synchroniz" in str(w.message)]
        where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in found})
        syncs = f"{len(found) / 5:.1f} ({', '.join(where[:8])})"
    print(
        f"{label + (' compiled' if compiled else ''):<36} {per_step * 1e3:8.1f} ms/step  "
        f"{per_step * len(train_data):7.2f} s/epoch ({len(train_data)} steps)  syncs/step {syncs}",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd variants")
    parser.add_argument("--only", default="", help="substrings of the labels to run, separated by ';' (labels contain commas), e.g. "
                        "'SASRecPlus whole, auto;DiffCLRec whole, sync-free'")
    args = parser.parse_args(argv)
    cache: dict = {}
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, torch {torch.__version__}")
    configs = [c for c in CONFIGS if not args.only or any(s in c[0] for s in args.only.split(";"))]
    for label, model, overrides, amp in configs:
        try:
            measure(label, model, overrides, amp, args.dataset, cache, args)
        except UserError:  # the input (dataset, properties) is wrong for every row: one message, then stop
            raise
        except Exception as exc:  # a benchmark row that fails is reported, the others still run
            print(f"{label:<36} failed: {type(exc).__name__}: {exc}", flush=True)
    if args.compile:
        for label, model, overrides, amp in [CONFIGS[2], CONFIGS[6]]:
            try:
                measure(label, model, overrides, amp, args.dataset, cache, args, compiled=True)
            except Exception as exc:
                print(f"{label} compiled failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
