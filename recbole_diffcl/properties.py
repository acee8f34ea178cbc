"""Checks of property values, so that a bad value stops the run with a clear message before any work.

Each model lists the properties it reads together with a check; ``validate_properties`` runs the
checks of the model class and of everything it inherits, plus a few general RecBole properties.
"""
from __future__ import annotations

from typing import Any, Callable

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
    return (lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def boolean() -> Check:
    return (lambda v: isinstance(v, bool), "True or False")


#: RecBole properties every run reads; checked for every model.
GENERAL_CHECKS: dict[str, Check] = {
    "epochs": positive_int(),
    "train_batch_size": positive_int(),
    "eval_batch_size": positive_int(),
    "learning_rate": positive(),
    "MAX_ITEM_LIST_LENGTH": positive_int(),
    "stopping_step": positive_int(),
    "eval_step": non_negative_int(),
    "whole_sequence_training": boolean(),
    "whole_sequence_overlap": probability(upper_open=True),
    "length_bucketing": boolean(),
    "length_bucket_chunk": positive_int(),
    "exclude_history": boolean(),
    "max_train_seconds": (lambda v: v is None or (_is_number(v) and v > 0), "a number of seconds > 0, or ~ for none"),
    "user_rankings_file": (lambda v: v is None or isinstance(v, str), "a file path, or ~ for none"),
    "train_keep_ratio": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
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
