"""Training steps in float32 against bfloat16 autocast on a CPU, alternating on the same batches.

    python perf/bf16_autocast.py --dataset=amazon-beauty --models=SASRecPlus,DiffCLRec --steps=30 \
        [--scope=encoder|all] [--key=value ...]

Issue #21 asks for bf16 where the CPU has native bf16 instructions (an Intel Xeon with AVX512-BF16 and
AMX, for one). ``--scope=all`` runs the whole loss under ``torch.autocast("cpu", torch.bfloat16)``, as
RecBole's ``enable_amp`` does (the fused next-item CE then gives way to torch's, as it does under any
autocast); ``--scope=encoder`` keeps the next-item loss (the fused CE) in float32 and casts the rest
(encoder, views, denoiser, its item scores). Each model is built once, as the runner builds it; its steps
alternate float32 and bf16 (order swapped every step) on the same real training batches, so load falls on
both alike. Prints ms per step of each and their ratio; nothing is written.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole.utils import init_seed  # noqa: E402

from recbole_diffcl.cli import parse_property_overrides  # noqa: E402
from recbole_diffcl.errors import exit_code_of  # noqa: E402
from recbole_diffcl.quick_start import build_data, check_dataset, load_config  # noqa: E402
from recbole_diffcl.utils import keep_freed_memory  # noqa: E402

WARMUP = 5  # steps each way before timing


def step_times(model_name: str, dataset: str, scope: str, steps: int, overrides: dict) -> tuple[float, float]:
    """(float32, bf16) seconds per training step of ``model_name``."""
    model_class, config = load_config(model_name, dataset, None, {"show_progress": False, **overrides})
    keep_freed_memory(config["keep_freed_memory"], config["device"])  # as the runner does
    init_seed(config["seed"], config["reproducibility"])
    check_dataset(config)  # missing files: a one-paragraph error, not a download attempt
    _, train_data, _, _ = build_data(config)
    model = model_class(config, train_data._dataset).to(config["device"])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    batches = [b.to(config["device"]) for b in itertools.islice(iter(train_data), WARMUP + steps)]
    if scope == "encoder":  # the next-item loss (the fused CE) leaves autocast, in float32
        every_position_loss = model.every_position_loss

        def float32_loss(outputs, *args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                return every_position_loss(outputs.float(), *args, **kwargs)

        model.every_position_loss = float32_loss

    def step(batch, bf16: bool) -> None:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.calculate_loss(batch)
            loss = sum(loss) if isinstance(loss, tuple) else loss
        loss.backward()
        optimizer.step()

    for batch in batches[:WARMUP]:  # both ways
        step(batch, False)
        step(batch, True)
    seconds = {False: 0.0, True: 0.0}
    timed = batches[WARMUP:]
    for i, batch in enumerate(timed):
        for bf16 in (False, True) if i % 2 == 0 else (True, False):
            start = time.perf_counter()
            step(batch, bf16)
            seconds[bf16] += time.perf_counter() - start
    return seconds[False] / len(timed), seconds[True] / len(timed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--models", default="SASRecPlus,DiffCLRec")
    parser.add_argument("--scope", choices=["encoder", "all"], default="encoder")
    parser.add_argument("--steps", type=int, default=30)
    args, extra = parser.parse_known_args(argv)
    overrides = parse_property_overrides(parser, extra)
    try:  # oneDNN's own check for native bf16 (AVX512-BF16 or AMX); a private helper, so guarded
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = "unknown"
    print(f"bf16 autocast ({args.scope}) on {args.dataset}, {torch.get_num_threads()} threads, native bf16: {native}")
    models, first = args.models.split(","), None
    for name in models:
        fp32, bf16 = step_times(name, args.dataset, args.scope, args.steps, overrides)
        first = first or (fp32, bf16)
        print(f"{name}: float32 {fp32 * 1e3:.1f} ms/step, bf16 {bf16 * 1e3:.1f} ms/step, bf16 / float32 "
              f"{bf16 / fp32:.2f}; over {models[0]}: float32 {fp32 / first[0]:.2f}, "
              f"bf16 {bf16 / first[1]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
