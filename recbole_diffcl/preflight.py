"""Pre-flight: every mistake in a run's input is found before training, download or any file is written.

``quick_start.run`` calls these in order:

1. :func:`check_property_files` and :func:`check_dataset_name` (before RecBole's ``Config``): YAML
   syntax errors name the file and line, a file must hold ``name: value`` pairs, a dataset is a name.
2. :func:`check_properties` (after ``Config``): property names are known (an unknown name on the
   command line is an error with a suggestion, in a YAML file a warning, since RecBole accepts extra
   keys), values are consistent (``hidden_size`` divisible by ``n_heads``), and values of other models'
   properties set by the user are still valid (``--mask_ratio=7`` is wrong for any model).
3. :func:`check_output_paths`: the log, tensorboard and checkpoint folders and the result file can be
   written (tested by creating and removing a file, so nothing is left behind).
4. :func:`check_inter_rows` and :func:`time_column_in_load_col`: every row of the atomic file has one
   value per column and numbers in float columns; a time-ordered split loads the time column even
   where ``load_col`` (RecBole's default) omits it.
5. :func:`load_checked_data`: RecBole loads and splits the dataset (before the log file exists), and
   the split must leave training, validation and test rows; properties bounded by the data
   (``aug_topk`` below the number of items) are checked against it.

Known property names are derived at run time from the property files of this package and of RecBole
and from the models' ``property_checks``, so properties added later are known without a list here.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from recbole_diffcl.config import check_writable_dir, read_property_file
from recbole_diffcl.errors import UserError

#: Properties RecBole sets or reads that no RecBole property file lists (its quick start's distributed
#: settings and the values its Config derives itself).
RECBOLE_RUNTIME_PROPERTIES = frozenset(
    {"nproc", "world_size", "ip", "port", "offset", "local_rank", "single_spec", "device", "config_file_list",
     "model", "dataset", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_metric_bigger", "verbose"}
)

_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def warn(message: str) -> None:
    """A warning for people, on stderr, before the log exists."""
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# 1. Property files and the dataset name
# --------------------------------------------------------------------------------------------------
def check_property_files(files: Iterable[str]) -> dict[str, dict]:
    """Parse every property file (the user's and ours) the way RecBole will; {path: properties}."""
    return {path: read_property_file(path) for path in files}


def check_dataset_name(name: str) -> None:
    if not _DATASET_NAME.fullmatch(name):
        raise UserError(
            f"Invalid dataset name {name!r}: a dataset is a name (letters, digits, '.', '_' or '-'), not a path. "
            f"Fix: pass the folder that holds <name>/<name>.inter as --data_path=FOLDER and the name as "
            f"--dataset=NAME."
        )


# --------------------------------------------------------------------------------------------------
# 2. Property names and consistent values
# --------------------------------------------------------------------------------------------------
def _yaml_keys(path: Path) -> set[str]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return set()
    return {str(k) for k in content} if isinstance(content, dict) else set()


@lru_cache(maxsize=1)
def _file_properties() -> tuple[frozenset, dict[str, frozenset]]:
    """(every property named in a property file of this package or RecBole, {plugin model: its file's keys})."""
    import importlib.util

    from recbole_diffcl.utils import props_dir

    known: set[str] = set()
    ours = props_dir()
    for path in ours.rglob("*.yaml"):
        known |= _yaml_keys(path)
    per_model = {p.stem: frozenset(_yaml_keys(p)) for p in (ours / "model").glob("*.yaml")}
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.origin is not None:
        for path in (Path(spec.origin).parent / "properties").rglob("*.yaml"):
            if path.name not in ("url.yaml", "kg_url.yaml"):  # their keys are dataset names
                known |= _yaml_keys(path)
    return frozenset(known), per_model


def _recbole_model_keys(model_name: str) -> set[str]:
    import importlib.util

    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        return set()
    return _yaml_keys(Path(spec.origin).parent / "properties" / "model" / f"{model_name}.yaml")


def _checks_of(klass: type) -> dict:
    checks: dict = {}
    for k in reversed(klass.__mro__):
        checks.update(vars(k).get("property_checks", {}))
    return checks


def _all_plugin_checks() -> dict[str, tuple[str, Any]]:
    """{property: (plugin model that checks it, check)} over every plugin model."""
    from recbole_diffcl.model import plugin_models

    out: dict[str, tuple[str, Any]] = {}
    for name, klass in sorted(plugin_models().items()):
        for prop, check in _checks_of(klass).items():
            out.setdefault(prop, (name, check))
    return out


def known_properties(model_class: type) -> set[str]:
    from recbole_diffcl.properties import GENERAL_CHECKS

    known = set(_file_properties()[0]) | set(RECBOLE_RUNTIME_PROPERTIES) | set(GENERAL_CHECKS)
    known |= set(_all_plugin_checks()) | set(_checks_of(model_class))
    return known


def _suggestion(name: str, known: Iterable[str]) -> str:
    known = list(known)
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.75)
    return f" Did you mean '{by_lower[close[0]]}'?" if close else ""


def _properties_of_model(model_class: type) -> set[str]:
    """Properties a model reads beyond the shared ones: its own checks, its property file(s)."""
    per_model = _file_properties()[1]
    names = set(_checks_of(model_class)) | _recbole_model_keys(model_class.__name__)
    for klass in model_class.__mro__:
        names |= set(per_model.get(klass.__name__, ()))
    return names


def check_properties(
    model_class: type, config, cli_properties: Iterable[str] = (), user_files: Optional[dict[str, dict]] = None
) -> None:
    """Unknown names (error on the command line, warning in a file), other models' properties, consistency."""
    known = known_properties(model_class)
    for name in cli_properties:
        if name not in known:
            raise UserError(
                f"Unknown property --{name}.{_suggestion(name, known)} Fix: correct the name (properties are "
                f"listed in props/ and in RecBole's documentation), or drop it."
            )
    for path, content in (user_files or {}).items():
        for name in content:
            if str(name) not in known:
                warn(f"{path}: unknown property '{name}' is ignored.{_suggestion(str(name), known)}")

    # Values of properties set by the user are checked even where this model does not read them
    # (a benchmark passes the same properties to every model), unless the model has its own meaning.
    own = _properties_of_model(model_class)
    foreign = _all_plugin_checks()
    explicit = set(cli_properties) | {str(k) for c in (user_files or {}).values() for k in c}
    from recbole_diffcl.properties import GENERAL_CHECKS

    for name in sorted(explicit):
        if name in own or name in GENERAL_CHECKS or name not in foreign:
            continue
        owner, (is_valid, expected) = foreign[name]
        value = config[name]
        if not is_valid(value):
            raise UserError(
                f"Invalid property value {name}={value!r}: {name} (a property of {owner}) must be {expected}. "
                f"Fix: pass a valid value (--{name}=...) or drop it; {config['model']} does not read it."
            )
        if name in cli_properties and not _shared_by_contrastive(name):
            warn(f"--{name} is a property of {owner}; {config['model']} does not read it.")
    check_consistency(config)


def _shared_by_contrastive(name: str) -> bool:
    from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender

    return name in _checks_of(ContrastiveSequentialRecommender)


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


#: (size property, heads property) pairs that multi-head attention splits evenly.
HEAD_SPLITS = (("hidden_size", "n_heads"), ("hidden_size", "denoiser_n_heads"))


def check_consistency(config) -> None:
    """Values that are valid one by one but not together."""
    for size_name, heads_name in HEAD_SPLITS:
        if size_name not in config.final_config_dict or heads_name not in config.final_config_dict:
            continue
        size, heads = _int_or_none(config[size_name]), _int_or_none(config[heads_name])
        if size and heads and size % heads:
            lower = size - size % heads
            raise UserError(
                f"{size_name}={size} is not divisible by {heads_name}={heads}: multi-head attention splits the "
                f"hidden vector into {heads} equal parts. Fix: use a multiple of {heads} (e.g. "
                f"--{size_name}={lower or heads} or --{size_name}={lower + heads}) or another --{heads_name}."
            )


# --------------------------------------------------------------------------------------------------
# 3. Output paths
# --------------------------------------------------------------------------------------------------
def check_result_file(path: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise UserError(
            f"--result_file={path} is an existing folder. Fix: name a file, e.g. --result_file={target / 'result.json'}."
        )
    if target.exists() and not target.is_file():
        raise UserError(f"--result_file={path} exists and is not a regular file. Fix: name a JSON file.")
    check_writable_dir(target.parent, "folder of --result_file", "choose another --result_file path")
    if target.exists() and not os.access(target, os.W_OK):
        raise UserError(f"--result_file={path} exists and is not writable. Fix: choose another path.")


def check_output_paths(config, result_file: Optional[str]) -> None:
    """Everything a run writes: log/ and log_tensorboard/ (in the working folder), checkpoints, result."""
    cwd_fix = "run from a folder you can write to (RecBole writes log/ and log_tensorboard/ there)"
    check_writable_dir("log", "log folder", cwd_fix)
    check_writable_dir("log_tensorboard", "tensorboard folder", cwd_fix)
    check_writable_dir(config["checkpoint_dir"], "checkpoint folder (checkpoint_dir)",
                       "pass a writable --checkpoint_dir=FOLDER")
    if result_file:
        check_result_file(result_file)


# --------------------------------------------------------------------------------------------------
# 4. Atomic file rows and the time column
# --------------------------------------------------------------------------------------------------
def check_inter_rows(path: str | os.PathLike, field_separator: str = "\t", encoding: str = "utf-8",
                     columns: Optional[Iterable[str]] = None) -> None:
    """Every data row has one value per header column, no empty id, and numbers in the float columns."""
    path = Path(path)
    with open(path, encoding=encoding, errors="replace") as f:
        header = f.readline().rstrip("\n").split(field_separator)
        names = [h.partition(":")[0] for h in header]
        types = [h.partition(":")[2] for h in header]
        wanted = set(columns) if columns is not None else set(names)
        floats = [i for i, (n, t) in enumerate(zip(names, types)) if t == "float" and n in wanted]
        ids = [i for i, n in enumerate(names) if n in ("user_id", "item_id") or n.endswith("_id")]
        for lineno, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            values = line.split(field_separator)
            if len(values) != len(names):
                raise UserError(
                    f"{path}, line {lineno}: {len(values)} value(s) but the header has {len(names)} columns "
                    f"({', '.join(names)}). Fix: give every line one value per column, separated by "
                    f"{field_separator!r}."
                )
            for i in ids:
                if not values[i].strip():
                    raise UserError(f"{path}, line {lineno}: column {names[i]} is empty. Fix: give every line its "
                                    f"{names[i]}, or remove the line.")
            for i in floats:
                v = values[i].strip()
                if v == "":
                    continue  # RecBole fills missing floats
                try:
                    float(v)
                except ValueError:
                    raise UserError(
                        f"{path}, line {lineno}: column {names[i]} is declared float but holds {v!r}. Fix: write "
                        f"numbers there (e.g. Unix seconds for a timestamp), or declare the column "
                        f"{names[i]}:token in the header and leave it out of load_col."
                    ) from None


def time_column_in_load_col(config) -> Optional[str]:
    """A time-ordered split needs the time column loaded; add it where ``load_col`` omits it.

    RecBole's default ``load_col`` is ``{inter: [user_id, item_id]}``, while the plugin orders by time
    (``eval_args.order: TO``), so a dataset without its own property file failed deep inside RecBole.
    Returns the column added, if any (called after the header check, which requires the column).
    """
    eval_args = config["eval_args"] or {}
    load_col = config["load_col"]
    time_field = config["TIME_FIELD"]
    if eval_args.get("order") != "TO" or not time_field or not isinstance(load_col, dict):
        return None
    inter = load_col.get("inter")
    if not isinstance(inter, list) or time_field in inter:
        return None
    header = _inter_header(config)
    if header is None or time_field not in header:
        return None
    config["load_col"] = {**load_col, "inter": [*inter, time_field]}
    return time_field


def _inter_header(config) -> Optional[list[str]]:
    path = Path(config["data_path"]) / f"{config['dataset']}.inter"
    try:
        with open(path, encoding=config["encoding"] or "utf-8", errors="replace") as f:
            first = f.readline().rstrip("\r\n")
    except OSError:
        return None
    return [c.partition(":")[0] for c in first.split(config["field_separator"] or "\t")]


def check_rows_of_dataset(config) -> None:
    path = Path(config["data_path"]) / f"{config['dataset']}.inter"
    if not path.is_file() or config["benchmark_filename"]:
        return
    load_col = config["load_col"]
    columns = load_col.get("inter") if isinstance(load_col, dict) else None
    check_inter_rows(path, config["field_separator"] or "\t", config["encoding"] or "utf-8", columns)


# --------------------------------------------------------------------------------------------------
# 5. The dataset, loaded and split
# --------------------------------------------------------------------------------------------------
def load_checked_data(config):
    """RecBole's dataset and its train / valid / test loaders, or a UserError when they are unusable."""
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset

    try:
        data = create_dataset(config)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UserError(
            f"RecBole could not load dataset '{config['dataset']}' from {config['data_path']}: {exc}. Fix: check "
            f"that the atomic files follow RecBole's format (tab separated, header 'name:type') and that "
            f"load_col names columns that exist."
        ) from None
    import numpy as np

    # counted before the split rewrites the rows (one per prefix)
    _, lengths = np.unique(np.asarray(data.inter_feat[config["USER_ID_FIELD"]]), return_counts=True)
    size = (len(data.inter_feat), len(lengths), int(lengths.max()) if len(lengths) else 0)
    try:
        train_data, valid_data, test_data = data_preparation(config, data)
    except (ValueError, IndexError, RuntimeError, KeyError) as exc:
        if size[2] < 3:  # no user can give a training, a validation and a test interaction
            raise UserError(_too_short(config, size, f" (RecBole: {exc})")) from None
        raise UserError(
            f"RecBole could not split dataset '{config['dataset']}' ({size[0]} interactions of {size[1]} users, the "
            f"longest with {size[2]}): {type(exc).__name__}: {str(exc).splitlines()[0]}. Fix: check that load_col "
            f"loads the columns the split needs (user, item and, for eval_args order TO, the time column "
            f"{config['TIME_FIELD']}) and that eval_args fits the data."
        ) from None
    sizes = {name: len(part.dataset) if part is not None else 0
             for name, part in (("training", train_data), ("validation", valid_data), ("test", test_data))}
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        raise UserError(_too_short(config, size, f": the split leaves no {' and no '.join(empty)} rows"))
    check_data_bounds(config, data)
    data.loaded_counts = size  # (interactions, users, longest sequence) as loaded, for the run's header
    return data, train_data, valid_data, test_data


def _too_short(config, size: tuple[int, int, int], detail: str) -> str:
    interactions, users, longest = size
    return (
        f"Dataset '{config['dataset']}' is too short to split{detail}. Leave-one-out needs users with at least 3 "
        f"interactions (one for training, one for validation, one for test); after filtering it has "
        f"{interactions} interactions of {users} users, the longest with {longest}. "
        f"Fix: add interactions (e.g. prepare it with --kcore=5), or relax user_inter_num_interval / "
        f"item_inter_num_interval."
    )


def check_data_bounds(config, data) -> None:
    """Properties whose valid range depends on the data."""
    items = data.item_num - 1  # real items (id 0 is padding)
    topk = config["aug_topk"] if "aug_topk" in config.final_config_dict else None
    if isinstance(topk, int) and not isinstance(topk, bool) and topk > items:
        raise UserError(
            f"aug_topk={topk} exceeds the {items} items of dataset '{config['dataset']}': replacements are drawn "
            f"from the top-k candidate items. Fix: pass --aug_topk with a value up to {items} (default 10)."
        )


# --------------------------------------------------------------------------------------------------
# Standard JSON
# --------------------------------------------------------------------------------------------------
def finite(value: Any) -> Any:
    """``value`` with every non-finite float (inf, nan) replaced by None, so that JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
