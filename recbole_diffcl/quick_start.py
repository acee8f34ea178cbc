"""Train and evaluate one model on one dataset, RecBole-style, with the plugin's property layering.

:func:`load_config` (the configuration of a run, checked), :func:`run` and :func:`run_multiprocess` (train,
select on validation, test), and a run rebuilt from a checkpoint: :func:`load_data_and_model` (RecBole's
function of that name for this plugin's checkpoints; RecBole's own expects a pickled ``Config`` and knows
no plugin model: it rebuilds the configuration from the values stored in the checkpoint, not from today's
property files, so a model loads with the architecture it was trained with) and :func:`resumed_config`
(``--resume``).

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
from recbole_diffcl.config import PluginConfig, property_files, user_properties
from recbole_diffcl.checkpoint import DERIVED_KEYS, check_fingerprint, find_latest_checkpoint, read_checkpoint
from recbole_diffcl.data.dataloader import training_loader
from recbole_diffcl.data.prepare import prepare_for_run
from recbole_diffcl.errors import TrainingDiverged, UserError
from recbole_diffcl.evaluation import with_evaluation_options
from recbole_diffcl.preflight import (
    check_dataset_name,
    check_output_paths,
    check_properties,
    check_property_files,
    check_rows_of_dataset,
    finite,
    load_checked_data,
    time_column_in_load_col,
)
from recbole_diffcl.properties import validate_properties
from recbole_diffcl.resume import LATEST, resumable
from recbole_diffcl.trainer import get_trainer, plain
from recbole_diffcl.model import get_model
from recbole_diffcl.utils import atomic_write, code_version, keep_freed_memory, machine_description


# RecBole 1.2.1 fills missing values with pandas' chained inplace fillna, which pandas 2.2 flags with
# a FutureWarning on every load (it works up to pandas 2.x, which setup.cfg pins); users cannot act on it.
warnings.filterwarnings(
    "ignore", message="A value is trying to be set on a copy", category=FutureWarning, module="recbole"
)


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
    except (ValueError, NotImplementedError, KeyError, TypeError, RuntimeError) as exc:
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
    if config["loss_type"] == "SSM" and not hasattr(model_class, "supports_whole_sequence"):
        raise UserError(
            f"loss_type=SSM (sampled softmax) is a loss of the plugin's models (SASRecPlus, DiffCLRec, CL4SRec, "
            f"DuoRec); RecBole's {model_class.__name__} knows CE and BPR only. Fix: use --model=SASRecPlus for "
            f"SASRec with sampled softmax, or --loss_type=CE."
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
    diverged = getattr(trainer, "stopped_by", None) == "diverged"
    if diverged and (trainer.best_valid_result is None or not os.path.isfile(trainer.saved_model_file)):
        test_result = {}  # it diverged before any checkpoint: nothing to test
    else:
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
        "divergence": getattr(trainer, "divergence", None),
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
    if prepare_for_run(config):  # a named benchmark's atomic file, made where it was missing
        time_column_in_load_col(config)  # its header exists only now
    check_dataset(config)
    check_rows_of_dataset(config)

    keep_freed_memory(config["keep_freed_memory"], config["device"])
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
    if summary["divergence"]:
        raise TrainingDiverged(summary["divergence"])
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
    if prepare_for_run(config):
        time_column_in_load_col(config)
    check_dataset(config)
    check_rows_of_dataset(config)
    import torch.multiprocessing as mp

    # RecBole's trainer (checkpoint_dir) and logger (./log/<model>) create their folders with a check-then-create
    # that races between the processes: made here, once, before they start
    for folder in (config["checkpoint_dir"], os.path.join("log", config["model"])):
        os.makedirs(folder, exist_ok=True)
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


#END


# --------------------------------------------------------------------------------------------------
# A run rebuilt from a checkpoint: resuming it, loading a trained model
# --------------------------------------------------------------------------------------------------
def config_from_checkpoint(checkpoint: dict, overrides: Optional[dict[str, Any]] = None):
    """``(model_class, config)`` of the run that wrote ``checkpoint``; ``overrides`` win over its values.

    Every stored value except :data:`DERIVED_KEYS` is passed to RecBole's ``Config`` (so the values it
    derives follow them) and then set again exactly as stored (RecBole would convert strings such as
    ``[0,30]``). ``data_path`` is the stored one's parent folder unless overridden.
    """
    stored = checkpoint["config"]
    overrides = dict(overrides or {})
    kept = {k: v for k, v in stored.items() if k not in DERIVED_KEYS}
    properties = dict(kept)
    negatives = kept.get("train_neg_sample_args")
    if isinstance(negatives, dict) and negatives.get("distribution", "none") == "none":
        properties["train_neg_sample_args"] = None  # RecBole's input form of "no negative sampling"
    if stored.get("data_path"):
        properties["data_path"] = os.path.dirname(os.path.normpath(str(stored["data_path"])))
    properties.update(overrides)
    model_class, config = load_config(str(stored["model"]), str(stored["dataset"]), None, properties)
    for key, value in kept.items():
        if key not in overrides and key != "train_neg_sample_args":
            config.final_config_dict[key] = value
    return model_class, config


def require_dataset_files(config, path: str) -> None:
    """A :class:`UserError` naming the checkpoint when its dataset's files are not where the config says."""
    data_dir = str(config["data_path"])
    name = config["dataset"]
    inter = os.path.join(data_dir, f"{name}.inter")
    if not config["benchmark_filename"] and not os.path.isfile(inter):
        raise UserError(
            f"Checkpoint '{path}' was trained on dataset '{name}', whose atomic files are missing: {inter} does "
            f"not exist. Fix: pass the folder that holds {name}/ as data_path (load_data_and_model(path, "
            f"{{'data_path': DIR}}) or --data_path=DIR), or prepare the dataset again "
            f"(python -m recbole_diffcl.prepare {name} --source FILE)."
        )
    check_dataset(config)


def load_data_and_model(checkpoint_file: str, config_dict: Optional[dict[str, Any]] = None):
    """Rebuild the run that wrote ``checkpoint_file``: ``(config, model, dataset, train_data, valid_data, test_data)``.

    As RecBole's ``recbole.quick_start.load_data_and_model``, for plugin and RecBole models alike: the
    configuration comes from the checkpoint (``config_dict`` overrides it, e.g. ``data_path`` or
    ``use_gpu``; the device is chosen for this machine), the dataset and its split loaders are built
    as in training, and the model is built and its weights loaded (in eval mode, on ``config['device']``).
    Raises :class:`UserError` for a file that is not a checkpoint, a dataset that is missing, or a
    dataset other than the one the model was trained on.
    """
    path = str(checkpoint_file)
    checkpoint = read_checkpoint(path)
    model_class, config = config_from_checkpoint(checkpoint, config_dict)
    require_dataset_files(config, path)
    init_seed(config["seed"], config["reproducibility"])
    dataset, train_data, valid_data, test_data = build_data(config)
    check_fingerprint(checkpoint, dataset, path)

    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train_data._dataset).to(config["device"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UserError(
            f"The weights in '{path}' do not fit {config['model']} built on dataset '{config['dataset']}' "
            f"({reason}): the checkpoint was trained on other data or with other properties. Fix: load it with "
            f"the dataset files it was trained on (data_path) and without property overrides that change the "
            f"model's shape."
        ) from None
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data


def resumed_config(
    resume: str,
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[list[str]] = None,
    config_dict: Optional[dict[str, Any]] = None,
):
    """``(model_class, config, checkpoint_path)`` of the run to resume.

    ``resume`` is a checkpoint path, or :data:`LATEST` for the newest resumable checkpoint of ``model`` on
    ``dataset`` (defaults DiffCLRec, ml-100k) in the run's ``checkpoint_dir``. The properties are the
    checkpoint's; those given in ``config_file_list`` and ``config_dict`` win (e.g. ``epochs`` to train longer).
    """
    if resume == LATEST:
        _, layered = load_config(model or "DiffCLRec", dataset or "ml-100k", config_file_list, config_dict)
        path = find_latest_checkpoint(layered["checkpoint_dir"], layered["model"], layered["dataset"])
        if path is None:
            raise UserError(
                f"--resume found no checkpoint of {layered['model']} on {layered['dataset']} to resume in "
                f"{os.path.abspath(layered['checkpoint_dir'])}. Fix: pass the checkpoint's path (--resume=PATH), "
                f"or the checkpoint_dir and --model/--dataset of the run to resume."
            )
    else:
        path = resume
    checkpoint = read_checkpoint(path, metadata_only=True)
    stored = checkpoint["config"]
    for name, given in (("model", model), ("dataset", dataset)):
        if given and given != stored[name]:
            raise UserError(
                f"--resume={path} is a checkpoint of {stored['model']} on {stored['dataset']}, but --{name}={given} "
                f"was given. Fix: drop --{name} (a resumed run keeps its model and dataset) or resume another "
                f"checkpoint."
            )
    overrides = user_properties(config_file_list, config_dict)
    model_class, config = config_from_checkpoint(checkpoint, overrides)
    return model_class, config, os.path.abspath(path)
