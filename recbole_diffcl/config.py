"""The configuration layer: RecBole's ``Config`` as the plugin builds it, and reading property files.

Everything here sits below the data, the models and the trainer (``config`` < ``data`` < ``model`` <
``trainer`` < ``quick_start`` < commands, as in RecBole), so any layer may use it:

- :class:`PluginConfig`: RecBole's ``Config`` without its own ``sys.argv`` parsing, with multi-process
  training on CPUs;
- :func:`property_files`: the plugin's property layering (overall < dataset < model < the user's files);
- :func:`read_property_file` and :func:`user_properties`: property files and command-line values read as
  RecBole reads them, with a one-paragraph error for a broken file;
- :func:`check_writable_dir`: a folder a run or command will write to exists or can be created.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from recbole.config import Config

from recbole_diffcl.errors import UserError
from recbole_diffcl.properties import check_recbole_properties
from recbole_diffcl.utils import props_dir


class PluginConfig(Config):
    """RecBole's Config without its own parsing of ``sys.argv``.

    The runner parses the command line itself and passes the overrides as ``config_dict`` (converted
    exactly as RecBole converts command-line values), so calling :func:`run` from Python, from tests or
    from the benchmark never picks up unrelated arguments of the calling process.
    """

    def _set_default_parameters(self):
        """RecBole's own properties are checked first (type, range, consistency: a one-paragraph UserError
        naming the property), before RecBole's checks raise bare exceptions or accept a value that fails an
        epoch later (:func:`recbole_diffcl.properties.check_recbole_properties`)."""
        from recbole.utils import ModelType

        d = self.final_config_dict
        check_recbole_properties(d, sequential=d.get("MODEL_TYPE") == ModelType.SEQUENTIAL,
                                 model_input_type=hasattr(self.model_class, "input_type"))
        super()._set_default_parameters()

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


def _recbole_yaml_loader():
    from recbole.config import Config

    return Config._build_yaml_loader(None)  # RecBole's loader (FullLoader + its float resolver)


def read_property_file(path: str) -> dict:
    """A property file as RecBole reads it; a UserError naming the file, line and fix otherwise."""
    if os.path.isdir(path):
        raise UserError(
            f"Config file '{path}' is a folder, not a YAML file. Fix: pass the YAML file(s) inside it to "
            f"--config_files (several files are separated by spaces)."
        )
    if not os.path.isfile(path):
        raise UserError(
            f"Config file '{path}' does not exist. Fix: check the path given to --config_files "
            f"(several files are separated by spaces)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.load(f.read(), Loader=_recbole_yaml_loader())
    except UnicodeDecodeError:
        raise UserError(f"Config file '{path}' is not UTF-8 text. Fix: save it as UTF-8.") from None
    except OSError as exc:
        raise UserError(f"Config file '{path}' cannot be read ({exc.strerror}). Fix: check its permissions.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(
            f"Config file '{path}' is not valid YAML{where}: {problem}. Fix: correct the syntax there "
            f"(one 'name: value' per line; quote values holding ':' or '#')."
        ) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserError(
            f"Config file '{path}' holds a YAML {type(content).__name__}, but a property file must be a "
            f"mapping of 'name: value' lines (e.g. 'mask_ratio: 0.2'). Fix: write one property per line as "
            f"name: value, not a list ('- ...')."
        )
    return content


def user_properties(config_file_list, config_dict) -> dict[str, Any]:
    """The properties the user set (``--config_files`` and ``--key=value``), converted as RecBole converts them.

    Only RecBole's reading and conversion steps of ``Config`` are run: the whole ``Config`` would need
    the model's and dataset's properties too.
    """
    property_files("", "", config_file_list)  # a UserError for a missing file
    reader = PluginConfig.__new__(PluginConfig)
    reader.compatibility_settings()
    reader._init_parameters_category()
    reader.yaml_loader = reader._build_yaml_loader()
    try:
        files = reader._load_config_files(list(config_file_list or []))
    except yaml.YAMLError as exc:
        raise UserError(f"A property file is not valid YAML: {exc}. Fix: correct the file's syntax.") from None
    return {**files, **reader._load_variable_config_dict(dict(config_dict or {}))}


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(folder: str | os.PathLike, what: str, fix: str) -> None:
    """``folder`` exists as a writable folder or can be created; proven by a file made and removed there."""
    folder = Path(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise UserError(f"The {what} {folder} cannot be created: {base} is a file, not a folder. Fix: {fix}.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".recbole_diffcl-write-test-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = "a read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        where = "" if base == folder.absolute() else f" (its nearest existing folder {base})"
        raise UserError(f"The {what} {folder}{where} is not writable: {reason}. Fix: {fix}.") from None
