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
from recbole.utils import init_logger, init_seed, set_color

from recbole_diffcl import console
from recbole_diffcl.data.dataloader import training_loader
from recbole_diffcl.errors import UserError
from recbole_diffcl.evaluation import with_evaluation_options
from recbole_diffcl.preflight import (
    check_dataset_name,
    check_output_paths,
    check_properties,
    check_property_files,
    check_rows_of_dataset,
    finite,
    load_checked_data,
    read_property_file,
    time_column_in_load_col,
)
from recbole_diffcl.properties import validate_properties
from recbole_diffcl.resume import resumable, resumed_config
from recbole_diffcl.trainer import get_trainer, plain
from recbole_diffcl.utils import atomic_write, code_version, get_model, machine_description, props_dir


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

    def _init_device(self):
        """RecBole's device set-up, plus multi-process training on CPUs (gloo): RecBole's own path needs
        one CUDA device per process (nccl)."""
        d = self.final_config_dict
        if "local_rank" not in d or (torch.cuda.is_available() and str(d["gpu_id"]) != "" and d.get("use_gpu", True)):
            return super()._init_device()
        d["gpu_id"] = ""
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend="gloo", rank=d["local_rank"] + d["offset"], world_size=d["world_size"],
                init_method=f"tcp://{d['ip']}:{d['port']}",
            )
        d["device"] = torch.device("cpu")
        d["single_spec"] = False
        if d["local_rank"] != 0:
            d["state"], d["show_progress"], d["verbose"] = "error", False, False


def property_files(model: str, dataset: str, config_file_list: Optional[list[str]] = None) -> list[str]:
    """Property files in increasing priority: overall < dataset < model < the user's files."""
    root = props_dir()
    files = [root / "overall.yaml", root / "dataset" / f"{dataset}.yaml", root / "model" / f"{model}.yaml"]
    layered = [str(f) for f in files if f.is_file()]
    for user_file in config_file_list or []:
        read_property_file(user_file)  # a UserError when missing, a folder, not YAML or not a mapping
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
    check_dataset_name(dataset)
    files = property_files(model_class.__name__, dataset, config_file_list)
    parsed = check_property_files(files)
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
    user_files = {f: parsed[f] for f in config_file_list or []}
    check_properties(model_class, config, list(config_dict or {}), user_files)
    time_column_in_load_col(config)
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


def check_dataset(config: Config) -> None:
    """Fail fast (before logging or downloading) when the dataset's files are missing or malformed."""
    try:
        from recbole_diffcl.data.checks import check_dataset_files
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
    """Standard JSON (no Infinity / NaN), written all at once (:func:`atomic_write`); no temporary file is
    left behind when writing fails (the OSError is raised)."""
    with atomic_write(path) as f:
        json.dump(finite(payload), f, indent=2, allow_nan=False)


def _save_result(result_file: str, summary: dict, log_file: Optional[str]) -> str:
    """Write the result file; if that fails at the end of a run, keep the result beside the log instead
    (the run is not lost) and raise a RunOutputError naming both paths."""
    try:
        _write_json_atomically(result_file, summary)
        return result_file
    except OSError as exc:
        fallback = (os.path.splitext(log_file)[0] if log_file else os.path.abspath("recbole_diffcl-result")) + ".json"
        _write_json_atomically(fallback, summary)
        raise console.RunOutputError(
            f"The run finished but --result_file={result_file} could not be written ({exc.strerror or exc}). "
            f"The result was saved to {fallback} instead. Fix: free space or choose a writable path next time; "
            f"copy {fallback} where you need it."
        ) from None


def build_data(config: Config, prepared: Optional[tuple] = None):
    """``(dataset, train_data, valid_data, test_data)`` of a run, the training loader shaped by its options
    (whole-sequence rows, length bucketing). ``prepared``: what :func:`load_checked_data` returned."""
    data, train_data, valid_data, test_data = prepared if prepared is not None else load_checked_data(config)
    train_data = training_loader(config, train_data)
    return data, train_data, valid_data, test_data


def _train_and_evaluate(
    model_class: type,
    config: Config,
    saved: bool,
    prepared: Optional[tuple] = None,
    verbose: bool = True,
    resume_file: Optional[str] = None,
) -> dict[str, Any]:
    """``prepared``: (dataset, train, valid, test) as :func:`recbole_diffcl.preflight.load_checked_data`
    returns them (loaded before the log exists); ``verbose``: also print the configuration, dataset and
    model on the console (they always go to the log file)."""
    logger = getLogger()
    data, train_data, valid_data, test_data = build_data(config, prepared)
    with console.console_quiet(not verbose):
        logger.info(sys.argv)
        logger.info(config)
        logger.info(data)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = model_class(config, train_data._dataset).to(config["device"])
    with console.console_quiet(not verbose):
        logger.info(net)

    trainer_class = with_evaluation_options(get_trainer(config["MODEL_TYPE"], config["model"], model_class))
    trainer = resumable(trainer_class)(config, net)
    if resume_file:
        trainer.resume_checkpoint(resume_file)
    trainer.prepare_evaluation(train_data, valid_data, test_data)  # exclude_history, user_rankings_file
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_start = time()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    test_eval_seconds = time() - test_start
    logger.info(set_color("best valid ", "yellow") + f": {console.metrics_line(best_valid_result)}")
    logger.info(set_color("test result", "yellow") + f": {console.metrics_line(test_result)}")
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "properties": plain({k: config[k] for k in sorted(config.external_config_dict)}),
        "best_valid_score": finite(float(best_valid_score)),
        "best_valid_result": plain(dict(best_valid_result or {})),
        "test_result": plain(dict(test_result or {})),
        "epochs_run": len(getattr(trainer, "epoch_seconds", [])),
        "stopped_by": getattr(trainer, "stopped_by", None),
        "ranking": "history excluded" if config["exclude_history"] else "full (history kept)",
        "regime": "whole sequence" if config["whole_sequence_training"] else "one row per prefix",
        "seconds_per_epoch": [round(s, 3) for s in getattr(trainer, "epoch_seconds", [])],
        "valid_curve": getattr(trainer, "valid_curve", []),
        "view_statistics": getattr(trainer, "view_statistics", []),
        "test_positions_by_length": getattr(trainer, "test_positions_by_length", None),
        "test_eval_seconds": round(test_eval_seconds, 3),
        "wall_seconds": None,  # filled in by run()
        "checkpoint": os.path.abspath(trainer.saved_model_file) if saved else None,
        "last_checkpoint": os.path.abspath(trainer.last_model_file) if saved else None,
    }


def run(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[list[str]] = None,
    config_dict: Optional[dict[str, Any]] = None,
    saved: bool = True,
    result_file: Optional[str] = None,
    verbose: bool = False,
    resume: Optional[str] = None,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset``, select the best epoch on validation, evaluate test.

    Every check of the input runs first (:mod:`recbole_diffcl.preflight`): a mistake raises
    ``UserError`` before the dataset is downloaded, a log is opened or a file is written. The console
    gets a short header, the per-epoch lines and a table of the metrics with the paths of the log,
    checkpoint and result; RecBole's full configuration, the dataset and the model go to the log file
    (and to the console too with ``verbose``).

    Returns the run's summary (also written to ``result_file`` as JSON when given): model, dataset,
    seed, the properties set by property files and command line, best valid result, test result,
    epochs run, seconds per training epoch, seconds of the test evaluation, total wall seconds, peak RSS
    (and peak GPU memory on a GPU) and the checkpoint path.

    ``model`` defaults to DiffCLRec and ``dataset`` to ml-100k. ``resume`` (a checkpoint path, or
    ``"latest"``: the newest of this model and dataset in ``checkpoint_dir``) continues an interrupted
    run exactly, with the checkpoint's properties (``config_file_list`` and ``config_dict`` win), see
    :mod:`recbole_diffcl.resume`.
    """
    start = time()
    resume_file = None
    if resume:
        model_class, config, resume_file = resumed_config(resume, model, dataset, config_file_list, config_dict)
    else:
        model_class, config = load_config(model or "DiffCLRec", dataset or "ml-100k", config_file_list, config_dict)
    check_output_paths(config, result_file)
    check_dataset(config)
    check_rows_of_dataset(config)

    init_seed(config["seed"], config["reproducibility"])
    prepared = load_checked_data(config)  # before the log file: a dataset too short to split writes nothing
    lead = config["local_rank"] + (config["offset"] or 0) == 0  # the process that reports (all, when single)
    if lead:
        print(console.header(config, prepared[0]), flush=True)
    handlers_before = list(logging.getLogger().handlers)
    init_logger(config)
    log_file = console.log_file(set(logging.getLogger().handlers) - set(handlers_before))
    try:
        summary = _train_and_evaluate(model_class, config, saved, prepared, verbose, resume_file)
    finally:
        if not config["single_spec"] and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        # init_logger adds handlers to the root logger; remove them so that another run in the same
        # process (tests, tuning) gets its own log file instead of writing into this one.
        for handler in set(logging.getLogger().handlers) - set(handlers_before):
            handler.close()
            logging.getLogger().removeHandler(handler)
    summary["wall_seconds"] = round(time() - start, 3)
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if torch.cuda.is_available():
        summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    summary["log_file"] = log_file
    summary["machine"] = machine_description(config["device"])
    summary["code_version"] = code_version()
    summary["processes"] = config["world_size"] if not config["single_spec"] else 1
    if not lead:
        return summary
    if result_file:
        _save_result(result_file, summary, log_file)
    print(console.final_table(summary, result_file), flush=True)
    return summary


def _process(rank: int, kwargs: dict, distributed: dict) -> None:
    """One process of a multi-process run (``torch.multiprocessing.spawn`` calls it with its rank)."""
    kwargs = dict(kwargs)
    kwargs["config_dict"] = {**kwargs["config_dict"], **distributed, "local_rank": rank}
    if rank + distributed["offset"] != 0:
        kwargs["result_file"] = None
    if not torch.cuda.is_available():
        # CPU processes share the cores: threads spinning against each other made steps ~30x slower
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // distributed["nproc"]))
    try:
        run(**kwargs)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def run_multiprocess(
    nproc: int = 1, world_size: int = -1, ip: str = "localhost", port: str = "5678", offset: int = 0, **run_kwargs
) -> Optional[dict[str, Any]]:
    """:func:`run` (``run_kwargs`` are its arguments) in ``nproc`` processes on this machine (of
    ``world_size`` over all machines), through RecBole's distributed machinery (``torch.distributed``;
    nccl with one GPU per process, gloo on CPUs).

    Every pre-flight check runs here first, once. Returns the summary of the reporting process (rank 0)
    when it runs on this machine, else None.
    """
    result_file = run_kwargs.get("result_file")
    config_dict = run_kwargs["config_dict"] = dict(run_kwargs.get("config_dict") or {})

    if world_size == -1:
        world_size = nproc
    if nproc < 1 or world_size < nproc or offset < 0 or offset + nproc > world_size:
        raise UserError(
            f"--nproc={nproc}, --world_size={world_size}, --offset={offset} do not fit together: this machine runs "
            f"ranks offset .. offset + nproc - 1 of world_size processes. Fix: e.g. --nproc=2 alone on one machine, "
            f"or --nproc=2 --world_size=4 --offset=0 / --offset=2 on two machines."
        )
    if run_kwargs.get("resume"):
        raise UserError("--resume is not available with --nproc > 1 yet. Fix: resume with one process (drop --nproc).")
    _, config = load_config(run_kwargs.get("model") or "DiffCLRec", run_kwargs.get("dataset") or "ml-100k",
                            run_kwargs.get("config_file_list"), config_dict)
    if config["user_rankings_file"]:
        raise UserError(
            "user_rankings_file is written by one process only; it is not available with --nproc > 1. Fix: drop "
            "--nproc (or the user_rankings_file property)."
        )
    if torch.cuda.is_available() and config["use_gpu"] and torch.cuda.device_count() < nproc:
        raise UserError(
            f"--nproc={nproc} needs one GPU per process, but {torch.cuda.device_count()} are visible. Fix: pass "
            f"--nproc={torch.cuda.device_count()}, or --gpu_id='' to train on CPUs (gloo)."
        )
    check_output_paths(config, result_file)
    check_dataset(config)
    check_rows_of_dataset(config)
    import torch.multiprocessing as mp

    # RecBole's trainer creates checkpoint_dir with a check-then-create that races between processes
    os.makedirs(config["checkpoint_dir"], exist_ok=True)
    distributed = {"world_size": world_size, "ip": ip, "port": str(port), "nproc": nproc, "offset": offset}
    try:
        mp.spawn(_process, args=(run_kwargs, distributed), nprocs=nproc, join=True)
    except mp.ProcessExitedException as exc:
        raise UserError(
            f"process {exc.error_index} of the multi-process run stopped with exit code {exc.exit_code} (its message "
            f"is above). Fix: correct that, or run with --nproc=1 to see the problem in one process."
        ) from None
    if result_file and offset == 0 and os.path.isfile(result_file):
        with open(result_file, encoding="utf-8") as f:
            return json.load(f)
    return None


def load_data_and_model(checkpoint_file: str, config_dict: Optional[dict[str, Any]] = None):
    """RecBole's ``load_data_and_model`` for this plugin's checkpoints (plugin and RecBole models alike).

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``; see
    :func:`recbole_diffcl.checkpoint.load_data_and_model`.
    """
    from recbole_diffcl.checkpoint import load_data_and_model as load

    return load(checkpoint_file, config_dict)
