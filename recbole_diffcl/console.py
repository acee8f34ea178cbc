"""Output for people: a short header before training, metrics as plain text, a final table with paths.

RecBole logs everything (its ~130-line configuration included) to the console and the log file; the
runner keeps the configuration, dataset and model in the log file only (``--verbose`` shows them),
prints a header naming what is trained where, and ends with the valid / test metrics and the paths
of the log, checkpoint and result file on stdout.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterable, Iterator, Optional

from recbole_diffcl.errors import UserError


class RunOutputError(UserError):
    """The run finished, but an output could not be written where asked (the result was kept elsewhere)."""

    exit_code = 1


@contextlib.contextmanager
def console_quiet(enabled: bool = True) -> Iterator[None]:
    """Within the block, log records reach the log file but not the console handlers."""
    if not enabled:
        yield
        return
    root = logging.getLogger()
    saved = []
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            saved.append((handler, handler.level))
            handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in saved:
            handler.setLevel(level)


def log_file(handlers: Iterable[logging.Handler]) -> Optional[str]:
    """The file of the first file handler among ``handlers`` (RecBole's log of this run)."""
    for handler in handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def metrics_line(result: Optional[dict]) -> str:
    """``hit@5 0.0376  ndcg@5 0.0241 ...`` (RecBole prints an OrderedDict)."""
    if not result:
        return "none"
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())


def _regime(config) -> str:
    rows = "one row per user, loss at every position" if config["whole_sequence_training"] else "one row per prefix"
    extras = []
    if config["length_bucketing"]:
        extras.append("length-bucketed batches")
    loss = config["loss_type"] or "?"
    text = f"{rows}, {loss} loss, batch {config['train_batch_size']}, up to {config['epochs']} epochs"
    text += f", best epoch by valid {config['valid_metric']} (stops after {config['stopping_step']} without gain)"
    return text + "".join(f", {e}" for e in extras)


def _split(config) -> str:
    eval_args = config["eval_args"] or {}
    split = eval_args.get("split") or {}
    order = {"TO": "by time", "RO": "random order"}.get(eval_args.get("order"), str(eval_args.get("order")))
    how = "leave-one-out" if "LS" in split else f"ratios {split.get('RS')}"
    mode = eval_args.get("mode")
    mode = mode.get("test", mode) if isinstance(mode, dict) else mode
    ranking = "full ranking over all items" if mode == "full" else f"ranking mode {mode}"
    history = "history excluded" if config["exclude_history"] else "history kept"
    return f"{how} {order}, {ranking} ({history})"


def header(config, dataset=None) -> str:
    """A few lines: model, dataset (and its size), the device actually used, the training regime."""
    size = ""
    if dataset is not None:
        interactions = getattr(dataset, "loaded_counts", (len(dataset.inter_feat),))[0]
        size = f" ({dataset.user_num - 1:,} users, {dataset.item_num - 1:,} items, {interactions:,} interactions)"
    device = config["device"]
    nproc = config["nproc"] or 1
    processes = f", {nproc} processes" if nproc > 1 else ""
    return "\n".join([
        f"recbole_diffcl: {config['model']} on {config['dataset']}{size}",
        f"  device:   {device}{processes}",
        f"  training: {_regime(config)}",
        f"  split:    {_split(config)}",
        "  (full configuration in the log file; --verbose prints it here too)",
    ])


def final_table(summary: dict[str, Any], result_file: Optional[str]) -> str:
    valid = summary.get("best_valid_result") or {}
    test = summary.get("test_result") or {}
    keys = list(dict.fromkeys([*valid, *test]))
    lines = [f"{'metric':<10} {'valid':>8} {'test':>8}"]
    for key in keys:
        cells = [f"{d[key]:>8.4f}" if isinstance(d.get(key), (int, float)) else f"{'-':>8}" for d in (valid, test)]
        lines.append(f"{key:<10} {cells[0]} {cells[1]}")
    epochs = summary.get("epochs_run")
    lines.insert(0, f"done: {summary.get('model')} on {summary.get('dataset')}, {epochs} epoch(s) in "
                    f"{summary.get('wall_seconds', 0):.0f} s; valid = best epoch, test = at that checkpoint")
    paths = [("log", summary.get("log_file")), ("checkpoint", summary.get("checkpoint")), ("result", result_file)]
    for name, path in paths:
        if path:
            lines.append(f"{name + ':':<11} {path}")
    return "\n".join(lines)
