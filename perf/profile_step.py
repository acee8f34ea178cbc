"""Where a training step's time goes: per-step seconds, per-phase and per-operator profile.

    python perf/profile_step.py --dataset=amazon-sports --model=DiffCLRec --steps=30 \
        [--length_bucketing=True] [--flops] [--shapes] [--key=value ...]

Builds the dataset, training batches and model exactly as the runner does (same property layering),
then runs ``--warmup`` + ``--steps`` optimiser steps on real training batches (Adam, as the trainer) and
prints the mean seconds per step (``--flops``: and the matrix products' GFLOP per step, forward and
backward), then profiles ``--profile_steps`` more steps with torch.profiler and
prints (1) the time inside named phases of the step (model methods wrapped in record_function ranges,
forward only; their backward shows up under the autograd operators) and (2) the operators with the
most self CPU time (``--shapes``: and the matrix products by input shapes); ``--profile_steps=0`` times
only. Nothing is trained to the end; nothing is written.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole.data import data_preparation  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_diffcl import diffusion  # noqa: E402
from recbole_diffcl.cli import parse_property_overrides  # noqa: E402
from recbole_diffcl.data import create_dataset  # noqa: E402
from recbole_diffcl.data.dataloader import training_loader  # noqa: E402
from recbole_diffcl.errors import exit_code_of  # noqa: E402
from recbole_diffcl.quick_start import check_dataset, load_config  # noqa: E402
from recbole_diffcl.trainer import fused_optimizer_wanted  # noqa: E402
from recbole_diffcl.utils import keep_freed_memory  # noqa: E402

PRODUCTS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")

# (owner, attribute) pairs wrapped in a record_function range named after them, when they exist.
PHASES = [
    ("model", "forward"),
    ("model", "rec_loss"),
    ("model", "every_position_loss"),
    ("model", "run_denoiser"),
    ("model", "view_replacements"),
    ("model", "encode_views"),
    ("model", "contrastive_loss"),
    ("denoiser", "forward"),
    ("diffusion", "sample_topk"),
    ("diffusion", "make_views"),
    ("diffusion", "choose_positions"),
    ("diffusion", "add_context_noise"),
    ("diffusion", "q_sample"),
]


def _wrap(owner, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:
        return

    def wrapped(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)

    setattr(owner, name, wrapped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="DiffCLRec")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile_steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=25, help="operators listed")
    parser.add_argument("--flops", action="store_true",
                        help="also count the matrix products' floating-point operations of one step (forward and "
                             "backward, torch's FlopCounterMode) and the rate the timed steps reached")
    parser.add_argument("--shapes", action="store_true",
                        help="also list the matrix products (mm, addmm, addmm_, bmm) by input shapes: which products cost")
    args, extra = parser.parse_known_args(argv)
    overrides: dict = parse_property_overrides(parser, extra)
    overrides.setdefault("show_progress", False)

    model_class, config = load_config(args.model, args.dataset, None, overrides)
    keep_freed_memory(config["keep_freed_memory"], config["device"])  # as the runner does
    init_seed(config["seed"], config["reproducibility"])
    check_dataset(config)  # missing files: a one-paragraph error, not a download attempt
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    train_data = training_loader(config, train_data)
    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train_data._dataset).to(config["device"])
    model.train()
    # the trainer's optimiser: Adam, fused where the trainer fuses it (fused_optimizer)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"], fused=fused_optimizer_wanted(config) or None)
    wants = args.warmup + args.steps + args.profile_steps
    batches = [b.to(config["device"]) for b in itertools.islice(iter(train_data), wants)]
    if len(batches) < wants:
        raise SystemExit(f"only {len(batches)} training batches; lower --steps")

    def step(batch) -> None:
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        loss.backward()
        optimizer.step()

    for batch in batches[: args.warmup]:
        step(batch)
    timed = batches[args.warmup : args.warmup + args.steps]
    start = time.perf_counter()
    for batch in timed:
        step(batch)
    per_step = (time.perf_counter() - start) / len(timed)
    mean_len = sum(float(b[config["ITEM_LIST_LENGTH_FIELD"]].max()) for b in timed) / len(timed)
    print(
        f"{args.model} on {args.dataset}: {per_step:.4f} s/step over {len(timed)} steps "
        f"(batch {config['train_batch_size']}, mean longest row {mean_len:.1f}, {len(train_data)} steps/epoch "
        f"-> {per_step * len(train_data):.0f} s/epoch of pure training steps), {torch.get_num_threads()} threads"
    )

    if args.flops:
        from torch.utils import flop_counter

        def addmm_in_place(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs):
            return flop_counter.mm_flop(a_shape, b_shape)  # the fused CE's item-table gradient (not in torch's registry)

        counts = []
        for batch in timed:
            with flop_counter.FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_in_place}) as counter:
                step(batch)
            counts.append(counter.get_total_flops())
        flops = sum(counts) / len(counts)
        print(f"matrix products: {flops / 1e9:.2f} GFLOP per step (mean of the same {len(timed)} batches), "
              f"{flops / per_step / 1e9:.1f} GFLOP/s at the timed step")
    if args.profile_steps <= 0:
        return 0
    owners = {"model": model, "denoiser": getattr(model, "denoiser", None), "diffusion": diffusion}
    for owner_name, attr in PHASES:
        if owners.get(owner_name) is not None:
            _wrap(owners[owner_name], attr, f"phase:{owner_name}.{attr}")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        for batch in batches[-args.profile_steps :]:
            with record_function("phase:step.loss_forward"):
                optimizer.zero_grad()
                loss = model.calculate_loss(batch)
                loss = sum(loss) if isinstance(loss, tuple) else loss
            with record_function("phase:step.backward"):
                loss.backward()
            with record_function("phase:step.optimizer"):
                optimizer.step()
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages)
    print("\nPhases (CPU time including children, share of all profiled time):")
    for e in sorted((e for e in averages if e.key.startswith("phase:")), key=lambda e: -e.cpu_time_total):
        print(f"  {e.key[6:]:<32} {e.cpu_time_total / 1e3 / args.profile_steps:8.1f} ms/step  "
              f"{100 * e.cpu_time_total / total:5.1f}%  (calls/step {e.count / args.profile_steps:.0f})")
    ops = [e for e in averages if e.key.startswith("aten::")]
    small = [e for e in ops if e.self_cpu_time_total < 20 * e.count]  # under 20 us of own time per call
    per_step = lambda v: v / args.profile_steps  # noqa: E731
    print(f"\nOperator calls (aten): {per_step(sum(e.count for e in ops)):.0f} per step; those under 20 us each: "
          f"{per_step(sum(e.count for e in small)):.0f} per step, {per_step(sum(e.self_cpu_time_total for e in small)) / 1e3:.1f} ms "
          f"of own time per step (where the number of operations, not their size, costs)")
    print(f"\nOperators by self CPU time ({args.profile_steps} steps):")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if args.shapes:
        products = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in PRODUCTS]
        print(f"\nMatrix products by input shapes, the {args.rows} with the most own time (ms per step, calls per step):")
        for e in sorted(products, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
            print(f"  {per_step(e.self_cpu_time_total) / 1e3:7.2f} ms  {per_step(e.count):5.1f}x  {e.key[6:]:<6} {e.input_shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
