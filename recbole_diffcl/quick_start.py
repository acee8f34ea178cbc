"""Train and evaluate one model on one dataset, RecBole-style, with the plugin's property layering.

This module never imports ``recbole.quick_start`` (it imports ray at import time).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from logging import getLogger
from time import time
from typing import Any, Optional

import torch
import yaml
from recbole.config import Config
from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_diffcl.data import create_dataset
from recbole_diffcl.dataloader import bucketed_train_data, whole_sequence_train_data
from recbole_diffcl.errors import UserError
from recbole_diffcl.evaluation import with_evaluation_options
from recbole_diffcl.properties import validate_properties
from recbole_diffcl.trainer import get_trainer, plain
from recbole_diffcl.utils import get_model, props_dir


# RecBole 1.2.1 fills missing values with pandas' chained inplace fillna, which pandas 2.2 flags with
# a FutureWarning on every load (it works up to pandas 2.x, which setup.cfg pins); users cannot act on it.
warnings.filterwarnings(
    "ignore", message="A value is trying to be set on a copy", category=FutureWarning, module="recbole"
)


class PluginConfig(Config):
    """RecBole's Config without its own parsing of ``sys.argv``.

    The runner parses the command line itself and passes the overrides as ``config_dict`` (converted
    exactly as RecBole converts command-line values), so calling :func:`run` from Python, from tests or
    from the benchmark never picks up unrelated arguments of the calling process.
    """

    def _load_cmd_line(self):
        return {}


def property_files(model: str, dataset: str, config_file_list: Optional[list[str]] = None) -> list[str]:
    """Property files in increasing priority: overall < dataset < model < the user's files."""
    root = props_dir()
    files = [root / "overall.yaml", root / "dataset" / f"{dataset}.yaml", root / "model" / f"{model}.yaml"]
    layered = [str(f) for f in files if f.is_file()]
    for user_file in config_file_list or []:
        if not os.path.isfile(user_file):
            raise UserError(
                f"Config file '{user_file}' does not exist. Fix: check the path given to --config_files "
                f"(several files are separated by spaces)."
            )
        layered.append(user_file)
    return layered


def load_config(
    model: str = "DiffCLRec",
    dataset: str = "ml-100k",
    config_file_list: Optional[list[str]] = None,
    config_dict: Optional[dict[str, Any]] = None,
) -> tuple[type, Config]:
    """Resolve the model class and build its Config with the plugin's layering; validate the values."""
    model_class = get_model(model)
    files = property_files(model_class.__name__, dataset, config_file_list)
    try:
        config = PluginConfig(
            model=model_class, dataset=dataset, config_file_list=files, config_dict=dict(config_dict or {})
        )
    except yaml.YAMLError as exc:
        raise UserError(f"A property file is not valid YAML: {exc}. Fix: correct the file's syntax.") from None
    except (ValueError, NotImplementedError, KeyError, TypeError) as exc:
        raise UserError(
            f"RecBole rejected the properties of this run: {exc}. Fix: correct that property on the command "
            f"line or in your --config_files YAML."
        ) from None
    validate_properties(model_class, config)
    negatives = config["train_neg_sample_args"] or {}
    if config["loss_type"] == "BPR" and negatives.get("distribution", "none") == "none":
        raise UserError(
            "loss_type=BPR needs one sampled negative item per training row, but train_neg_sample_args is "
            "empty. Fix: also pass --train_neg_sample_args=\"{'distribution': 'uniform', 'sample_num': 1}\" "
            "(or keep the default loss_type=CE)."
        )
    if config["whole_sequence_training"] and not getattr(model_class, "supports_whole_sequence", False):
        raise UserError(
            f"whole_sequence_training=True is not available for {model_class.__name__}: it needs a model that "
            f"puts the next-item loss at every position (SASRecPlus, DiffCLRec, CL4SRec, DuoRec). Fix: drop "
            f"--whole_sequence_training or set it to False."
        )
    if config["loss_type"] == "BCE" and not hasattr(model_class, "supports_whole_sequence"):
        raise UserError(
            f"loss_type=BCE (one sampled negative per position, the DiffCLRec authors' loss) is a loss of the "
            f"plugin's models (SASRecPlus, DiffCLRec, CL4SRec, DuoRec); RecBole's {model_class.__name__} knows CE "
            f"and BPR only. Fix: use --loss_type=CE, or --model=SASRecPlus for SASRec with the BCE loss."
        )
    if config["whole_sequence_training"] and config["loss_type"] == "BPR":
        raise UserError(
            "whole_sequence_training=True works with loss_type CE or BCE, not BPR (RecBole samples one negative "
            "per row, not per position; BCE samples its own negative at every position). Fix: use "
            "--loss_type=CE (or BCE, the DiffCLRec authors' loss), or set whole_sequence_training to False."
        )
    return model_class, config


def _check_dataset(config: Config) -> None:
    """Fail fast (before logging or downloading) when the dataset's files are missing or malformed."""
    try:
        from recbole_diffcl.datasets import check_dataset_files
    except ImportError:  # pragma: no cover - the data module ships with the package
        inter = os.path.join(config["data_path"], f"{config['dataset']}.inter")
        if not os.path.isfile(inter):
            raise UserError(f"Dataset files not found: {inter}. Fix: create the atomic files.") from None
        return
    check_dataset_files(config)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_json_atomically(path: str, payload: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def _train_and_evaluate(model_class: type, config: Config, saved: bool) -> dict[str, Any]:
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    try:
        data = create_dataset(config)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UserError(
            f"RecBole could not load dataset '{config['dataset']}' from {config['data_path']}: {exc}. Fix: check "
            f"that the atomic files follow RecBole's format (tab separated, header 'name:type') and that "
            f"load_col names columns that exist."
        ) from None
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)
    train_data = bucketed_train_data(config, whole_sequence_train_data(config, train_data))

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = model_class(config, train_data._dataset).to(config["device"])
    logger.info(net)

    trainer_class = with_evaluation_options(get_trainer(config["MODEL_TYPE"], config["model"], model_class))
    trainer = trainer_class(config, net)
    trainer.prepare_evaluation(train_data, valid_data, test_data)  # exclude_history, user_rankings_file
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_start = time()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    test_eval_seconds = time() - test_start
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "properties": plain({k: config[k] for k in sorted(config.external_config_dict)}),
        "best_valid_score": float(best_valid_score),
        "best_valid_result": plain(dict(best_valid_result or {})),
        "test_result": plain(dict(test_result or {})),
        "epochs_run": len(getattr(trainer, "epoch_seconds", [])),
        "stopped_by": getattr(trainer, "stopped_by", None),
        "ranking": "history excluded" if config["exclude_history"] else "full (history kept)",
        "regime": "whole sequence" if config["whole_sequence_training"] else "one row per prefix",
        "seconds_per_epoch": [round(s, 3) for s in getattr(trainer, "epoch_seconds", [])],
        "valid_curve": getattr(trainer, "valid_curve", []),
        "view_statistics": getattr(trainer, "view_statistics", []),
        "test_eval_seconds": round(test_eval_seconds, 3),
        "wall_seconds": None,  # filled in by run()
        "checkpoint": os.path.abspath(trainer.saved_model_file) if saved else None,
    }


def run(
    model: str = "DiffCLRec",
    dataset: str = "ml-100k",
    config_file_list: Optional[list[str]] = None,
    config_dict: Optional[dict[str, Any]] = None,
    saved: bool = True,
    result_file: Optional[str] = None,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset``, select the best epoch on validation, evaluate test.

    Returns the run's summary (also written to ``result_file`` as JSON when given): model, dataset,
    seed, the properties set by property files and command line, best valid result, test result,
    epochs run, seconds per training epoch, seconds of the test evaluation, total wall seconds, peak RSS
    (and peak GPU memory on a GPU) and the checkpoint path.
    """
    start = time()
    model_class, config = load_config(model, dataset, config_file_list, config_dict)
    _check_dataset(config)

    init_seed(config["seed"], config["reproducibility"])
    handlers_before = list(logging.getLogger().handlers)
    init_logger(config)
    try:
        summary = _train_and_evaluate(model_class, config, saved)
    finally:
        # init_logger adds handlers to the root logger; remove them so that another run in the same
        # process (tests, tuning) gets its own log file instead of writing into this one.
        for handler in set(logging.getLogger().handlers) - set(handlers_before):
            handler.close()
            logging.getLogger().removeHandler(handler)
    summary["wall_seconds"] = round(time() - start, 3)
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if torch.cuda.is_available():
        summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if result_file:
        _write_json_atomically(result_file, summary)
        print(f"result file: {result_file}")
    return summary
