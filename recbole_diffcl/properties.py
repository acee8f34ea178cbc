"""Checks of property values, so that a bad value stops the run with a clear message before any work.

Each model lists the properties it reads together with a check; ``validate_properties`` runs the
checks of the model class and of everything it inherits, plus a few general RecBole properties.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

from recbole_diffcl.errors import UserError
from recbole_diffcl.utils import is_number as _is_number  # the checks below read it by this short name

Check = tuple[Callable[[Any], bool], str]  # (predicate on the value, what a valid value is)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int() -> Check:
    return (lambda v: _is_int(v) and v > 0, "a positive integer")


def positive_int_or(*words: str) -> Check:
    return (
        lambda v: (_is_int(v) and v > 0) or v in words,
        "a positive integer or " + " or ".join(repr(w) for w in words),
    )


def non_negative_int() -> Check:
    return (lambda v: _is_int(v) and v >= 0, "an integer >= 0")


def non_negative() -> Check:
    return (lambda v: _is_number(v) and v >= 0, "a number >= 0")


def positive() -> Check:
    return (lambda v: _is_number(v) and v > 0, "a number > 0")


def probability(upper_open: bool = False) -> Check:
    if upper_open:
        return (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
    return (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")


def one_of(*choices: Any) -> Check:
    # compared with their types too: 0 and 1 are not False and True
    return (lambda v: any(v == c and type(v) is type(c) for c in choices), "one of " + ", ".join(repr(c) for c in choices))


def boolean() -> Check:
    return (lambda v: isinstance(v, bool), "True or False")


#: The plugin's own properties every run reads; checked for every model (RecBole's own properties are
#: checked by :func:`check_recbole_properties`, from RecBole's own files).
GENERAL_CHECKS: dict[str, Check] = {
    "whole_sequence_training": boolean(),
    "whole_sequence_overlap": probability(upper_open=True),
    "length_bucketing": boolean(),
    "length_bucket_chunk": positive_int(),
    "exclude_history": boolean(),
    "max_train_seconds": (lambda v: v is None or (_is_number(v) and v > 0), "a number of seconds > 0, or ~ for none"),
    "user_rankings_file": (lambda v: v is None or isinstance(v, str), "a file path, or ~ for none"),
    "train_keep_ratio": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "fused_optimizer": one_of(True, False, "auto"),
    "keep_freed_memory": one_of(True, False, "auto"),
}


def validate_properties(model_class: type, config) -> None:
    """Raise ``UserError`` naming the first property whose value is invalid, and what a valid value is."""
    checks = dict(GENERAL_CHECKS)
    for klass in reversed(model_class.__mro__):
        checks.update(vars(klass).get("property_checks", {}))
    for name, (is_valid, expected) in checks.items():
        if name not in config.final_config_dict:
            continue  # RecBole-only properties a given model does not use
        value = config[name]
        if not is_valid(value):
            raise UserError(
                f"Invalid property value {name}={value!r} for model {config['model']}: {name} must be {expected}. "
                f"Fix: pass a valid value on the command line (--{name}=...) or in your --config_files YAML; "
                f"the documented defaults are in props/ (props/model/{config['model']}.yaml for model properties)."
            )


# --------------------------------------------------------------------------------------------------
# RecBole's own properties
# --------------------------------------------------------------------------------------------------
#: The files where RecBole 1.2.1 lists the properties it reads, each with its type in a comment
#: (``epochs: 300   # (int) The number of training epochs.``): the general and the dataset properties.
RECBOLE_PROPERTY_FILES = ("overall.yaml", "dataset/sample.yaml")

_DECLARED = re.compile(r"^([A-Za-z_]\w*):\s*(.*?)\s*#\s*\(([^)]*)\)")

_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_number,
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "none": lambda v: v is None,
    "tuple": lambda v: isinstance(v, tuple),
}
#: Types RecBole converts itself besides the declared one (a single suffix becomes a list).
ALSO_ACCEPTED = {"additional_feat_suffix": ("str",)}
_INTERVAL_PROPERTIES = ("user_inter_num_interval", "item_inter_num_interval", "entity_kg_num_interval",
                        "relation_kg_num_interval")
for _name in _INTERVAL_PROPERTIES:  # --user_inter_num_interval=[0,25] reaches RecBole as the list [0, 25]
    ALSO_ACCEPTED[_name] = ("list", "tuple")  # and a stored "(4,100)" as a tuple when a checkpoint is reloaded
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string",
               "dict": "a mapping {key: value}", "list": "a list [a, b]", "none": "~ (none)"}


@lru_cache(maxsize=1)
def recbole_property_types() -> dict[str, tuple[tuple[str, ...], bool]]:
    """{property: (its declared types, whether ~ is allowed)} from RecBole's own property files.

    A property whose default there is ``~`` may be ~; the dataset properties may be too (RecBole reads
    them as None where a dataset's file does not set them).
    """
    import recbole

    root = Path(recbole.__file__).parent / "properties"
    declared: dict[str, tuple[tuple[str, ...], bool]] = {}
    for name in RECBOLE_PROPERTY_FILES:
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            match = _DECLARED.match(line)
            if match:
                key, default, types = match.groups()
                kinds = tuple(t.strip().lower() for t in types.split(" or "))
                declared[key] = (kinds, default in ("~", "") or name.startswith("dataset/"))
    return declared


#: Ranges and choices of RecBole properties (their types come from RecBole's files, above); the text says
#: what a valid value is. Case-insensitive choices are compared in lower case, as RecBole does.
RECBOLE_VALUES: dict[str, Check] = {
    "epochs": positive_int(),
    "train_batch_size": positive_int(),
    "eval_batch_size": positive_int(),
    "stopping_step": non_negative_int(),  # 0: stop after the first epoch without a gain
    "eval_step": non_negative_int(),
    "worker": non_negative_int(),
    "loss_decimal_place": non_negative_int(),
    "metric_decimal_place": non_negative_int(),
    "MAX_ITEM_LIST_LENGTH": positive_int(),
    "learning_rate": (lambda v: _is_number(v) and math.isfinite(v) and v > 0, "a finite number > 0"),
    "weight_decay": (lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "state": (lambda v: str(v).lower() in ("info", "debug", "warning", "error", "critical"),
              "one of INFO, DEBUG, WARNING, ERROR, CRITICAL"),
    "learner": (lambda v: str(v).lower() in ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam"),
                "one of adam, adamw, sgd, adagrad, rmsprop, sparse_adam (RecBole would silently train with adam)"),
    "rm_dup_inter": (lambda v: v is None or v in ("first", "last"), "~, 'first' or 'last'"),
    "field_separator": (lambda v: isinstance(v, str) and v != "", "a non-empty string, e.g. \"\\t\""),
    "seq_separator": (lambda v: isinstance(v, str) and v != "", "a non-empty string, e.g. \" \""),
    # --gpu_id=0,1 reaches RecBole as the tuple (0, 1), which it joins back into "0,1"
    "gpu_id": (lambda v: isinstance(v, (str, int, tuple)) and not isinstance(v, bool), "a GPU id or ids, e.g. '0' or '0,1'"),
}
_INTERVAL = re.compile(r"^\s*[\[(]\s*(-?[\d.]+(?:e-?\d+)?|-?inf)\s*,\s*(-?[\d.]+(?:e-?\d+)?|-?inf)\s*[\])]\s*$")


def interval_parts(value: Any) -> Optional[list[re.Match]]:
    """The intervals of a filter such as ``"[5,inf)"`` or ``"(0,1];[3,4)"`` (RecBole's syntax; a list [a, b]
    is the closed interval, as RecBole reads it), or None when one of them is malformed or empty."""
    if isinstance(value, (list, tuple)) and len(value) == 2:  # RecBole reads str(value): [a, b] or (a, b)
        text = f"[{value[0]},{value[1]}]" if isinstance(value, list) else f"({value[0]},{value[1]})"
    else:
        text = value
    if not isinstance(text, str):
        return None
    parts = [_INTERVAL.match(part) for part in text.split(";")]
    if not all(parts) or any(float(m[1]) > float(m[2]) for m in parts):
        return None
    return parts


for _name in _INTERVAL_PROPERTIES:
    RECBOLE_VALUES[_name] = (
        lambda v: v is None or interval_parts(v) is not None,
        "an interval such as \"[0,inf)\", \"[5,100]\" or \"(0,10]\" (several joined by ';'); RecBole would "
        "ignore a malformed one and filter nothing",
    )


def _invalid(name: str, value: Any, expected: str, why: str = "") -> UserError:
    return UserError(
        f"Invalid value of RecBole's property {name}={value!r}: {name} must be {expected}{why}. Fix: pass a valid "
        f"value on the command line (--{name}=...) or in your --config_files YAML."
    )


def check_recbole_properties(values: dict[str, Any], sequential: bool = True, model_input_type: bool = False) -> None:
    """RecBole's own properties of a run (``values``: the merged properties before RecBole's ``Config``
    derives anything), checked for type (as RecBole's files declare it), range and consistency with the
    other properties (the metrics the run computes, the split it makes, the users it keeps). ``model_input_type``:
    the model declares its own input type (RecBole then ignores ``loss_type`` for its negatives). Raises a
    ``UserError`` naming the first mistake and its fix."""
    for name, (kinds, nullable) in recbole_property_types().items():
        if name not in values:
            continue
        value = values[name]
        allowed = (*kinds, "none") if nullable else kinds
        allowed = (*allowed, *ALSO_ACCEPTED.get(name, ()))
        if name == "gpu_id" or any(_TYPE_CHECKS.get(kind, lambda v: True)(value) for kind in allowed):
            continue
        raise _invalid(name, value, " or ".join(_TYPE_WORDS.get(k, k) for k in allowed))
    for name, (is_valid, expected) in RECBOLE_VALUES.items():
        if name in values and not (values[name] is None and recbole_property_types().get(name, ((), False))[1]):
            if not is_valid(values[name]):
                raise _invalid(name, values[name], expected)
    _check_metrics(values)
    _check_eval_args(values, sequential)
    _check_negative_sampling(values, sequential and not model_input_type)
    _check_clip_grad_norm(values.get("clip_grad_norm"))
    _check_kept_users(values)
    if sequential and values.get("repeatable") is False:
        raise _invalid("repeatable", False, "True for sequential models",
                       " (RecBole evaluates a sequential model on every user's next item)")


def _check_metrics(values: dict[str, Any]) -> None:
    from recbole.evaluator.register import metric_types, metrics_dict
    from recbole.utils import EvaluatorType

    metrics = values.get("metrics")
    names = [metrics] if isinstance(metrics, str) else list(metrics or [])
    unknown = [m for m in names if not isinstance(m, str) or m.lower() not in metrics_dict]
    if unknown or not names:
        known = ", ".join(sorted({cls.__name__ for cls in metrics_dict.values()}))
        raise _invalid("metrics", metrics, f"a list of RecBole's metric names ({known})",
                       f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
    kinds = {metric_types[m.lower()] for m in names}
    if len(kinds) > 1:
        raise _invalid("metrics", metrics, "ranking metrics only (Hit, NDCG, MRR, Recall, ...) or value metrics "
                       "only (AUC, LogLoss, ...)", ": RecBole cannot compute both in one run")
    topk = values.get("topk")
    ks = [topk] if _is_int(topk) else topk
    if not isinstance(ks, list) or not ks or not all(_is_int(k) and k > 0 for k in ks):
        raise _invalid("topk", topk, "a positive integer or a list of them, e.g. [5, 10, 20]")
    mode = (values.get("eval_args") or {}).get("mode", "full") if isinstance(values.get("eval_args"), dict) else "full"
    modes = set(mode.values()) if isinstance(mode, dict) else {mode}
    if EvaluatorType.VALUE in kinds and "full" in modes:
        raise _invalid("metrics", metrics, "ranking metrics (Hit, NDCG, MRR, ...) with eval_args mode full",
                       ": value metrics such as AUC need sampled candidates (mode uni100, say)")
    valid = values.get("valid_metric")
    name, _, k = str(valid).partition("@")
    lower = [m.lower() for m in names]
    topk_metric = metric_types.get(name.lower()) == EvaluatorType.RANKING
    if not isinstance(valid, str) or name.lower() not in lower or (topk_metric and (not k.isdigit() or int(k) not in ks)):
        choices = [f"{m}@{k}" for m in names for k in ks] if EvaluatorType.RANKING in kinds else names
        raise _invalid("valid_metric", valid, f"one of the metrics this run computes ({', '.join(choices[:9])}"
                       + (", ..." if len(choices) > 9 else "") + ")",
                       ": RecBole would fail after the first training epoch, when it looks the value up")


def _check_eval_args(values: dict[str, Any], sequential: bool) -> None:
    eval_args = values.get("eval_args")
    if not isinstance(eval_args, dict):
        raise _invalid("eval_args", eval_args, "a mapping with split, order, group_by and mode, e.g. "
                       "{split: {LS: valid_and_test}, order: TO, mode: full}")
    extra = set(eval_args) - {"split", "order", "group_by", "mode"}
    if extra:
        raise _invalid("eval_args", eval_args, "a mapping of split, order, group_by and mode",
                       f"; unknown key(s): {', '.join(map(str, sorted(extra, key=str)))}")
    split = eval_args.get("split", {"RS": [0.8, 0.1, 0.1]})
    key = next(iter(split)) if isinstance(split, dict) and len(split) == 1 else None
    ratios = split.get("RS") if key == "RS" else None
    if key == "LS":
        if split["LS"] not in ("valid_and_test", "valid_only", "test_only"):
            raise _invalid("eval_args", eval_args, "a split {LS: valid_and_test} (or valid_only, test_only)")
        if split["LS"] != "valid_and_test":
            raise _invalid("eval_args", eval_args, "a split with both a validation and a test part, "
                           "{LS: valid_and_test}", f": {split['LS']} leaves one of them empty, and every run selects "
                           "its epoch on validation and reports test")
    elif key in ("RS", "TS"):  # TS: by time, RecBole's time_based_split
        ratios = split[key]
        if not (isinstance(ratios, list) and len(ratios) == 3 and all(_is_number(r) and r >= 0 for r in ratios)
                and all(r > 0 for r in ratios)):
            raise _invalid("eval_args", eval_args, f"a split {{{key}: [train, valid, test]}} of three ratios > 0, "
                           "e.g. [0.8, 0.1, 0.1]", " (every run needs a validation and a test part)")
    else:
        raise _invalid("eval_args", eval_args, "a split {LS: valid_and_test} (leave-one-out), {RS: [0.8, 0.1, 0.1]} "
                       "(random ratios) or {TS: [0.8, 0.1, 0.1]} (ratios by time)")
    order = eval_args.get("order", "RO")
    if order not in ("RO", "TO"):
        raise _invalid("eval_args", eval_args, "an order of RO (random) or TO (by time)")
    if sequential and order != "TO":
        raise _invalid("eval_args", eval_args, "order TO for a sequential model",
                       " (its training rows are each user's items in time order)")
    if str(eval_args.get("group_by", "user")).lower() not in ("user", "none"):
        raise _invalid("eval_args", eval_args, "a group_by of user or none")
    mode = eval_args.get("mode", "full")
    modes = list(mode.values()) if isinstance(mode, dict) else [mode]
    if isinstance(mode, dict) and set(mode) - {"valid", "test"}:
        raise _invalid("eval_args", eval_args, "a mode per phase {valid: ..., test: ...}")
    for m in modes:
        if not (m in ("full", "labeled") or (isinstance(m, str) and re.fullmatch(r"(uni|pop)[1-9]\d*", m))):
            raise _invalid("eval_args", eval_args, "a mode of full (rank all items), uniN / popN (N sampled "
                           "candidates, e.g. uni100) or labeled")


def _check_negative_sampling(values: dict[str, Any], sequential: bool) -> None:
    args = values.get("train_neg_sample_args")
    if args is None or args == "None":
        return
    if not isinstance(args, dict):
        raise _invalid("train_neg_sample_args", args, "~ (none) or a mapping such as {distribution: uniform, "
                       "sample_num: 1}")
    distribution = args.get("distribution", "uniform")
    if distribution not in ("uniform", "popularity", "none", None, "None"):
        raise _invalid("train_neg_sample_args", args, "a mapping whose distribution is uniform, popularity or none")
    if distribution in ("uniform", "popularity"):
        if not (_is_int(args.get("sample_num", 1)) and args.get("sample_num", 1) >= 1):
            raise _invalid("train_neg_sample_args", args, "a mapping whose sample_num is a positive integer")
        loss = values.get("loss_type")
        if sequential and loss in ("CE", "SSM", "BCE"):
            raise _invalid("train_neg_sample_args", args, f"~ (none) with loss_type {loss}",
                           ": CE scores every item and SSM and BCE draw their own negatives, so RecBole samples "
                           "none (BPR needs them)")
    for key, (is_valid, text) in {"alpha": (_is_number, "a number"), "dynamic": (lambda v: isinstance(v, bool), "True or False"),
                                  "candidate_num": (lambda v: _is_int(v) and v >= 0, "an integer >= 0")}.items():
        if key in args and not is_valid(args[key]):
            raise _invalid("train_neg_sample_args", args, f"a mapping whose {key} is {text}")


def _check_clip_grad_norm(value: Any) -> None:
    if value is None:
        return
    ok = isinstance(value, dict) and _is_number(value.get("max_norm")) and value["max_norm"] > 0 and set(value) <= {
        "max_norm", "norm_type", "error_if_nonfinite", "foreach"}
    if not ok:
        raise _invalid("clip_grad_norm", value, "~ (none) or the arguments of torch's clip_grad_norm_, e.g. "
                       "{max_norm: 5, norm_type: 2}")


def _check_kept_users(values: dict[str, Any]) -> None:
    """A user filter that keeps no user who can be split (leave-one-out needs 3 interactions per user)."""
    parts = interval_parts(values.get("user_inter_num_interval"))
    split = (values.get("eval_args") or {}).get("split") if isinstance(values.get("eval_args"), dict) else None
    if parts is None or not isinstance(split, dict) or "LS" not in split:
        return
    interval = values["user_inter_num_interval"]
    highest = max(float(m[2]) - (1 if m.group(0).rstrip().endswith(")") else 0) for m in parts)
    if highest < 3:
        raise _invalid("user_inter_num_interval", interval, "an interval that keeps users with 3 or more "
                       "interactions, e.g. \"[5,inf)\"", ": leave-one-out takes one interaction for training, one "
                       "for validation and one for test, so this filter would keep no user to split")
