"""Model lookup (plugin first, then RecBole) and the location of the property files."""
from __future__ import annotations

import importlib
from pathlib import Path

from recbole_diffcl.errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent


def props_dir() -> Path:
    """The ``props/`` folder: inside the installed package, or beside it in a source checkout."""
    for candidate in (_PACKAGE_DIR / "props", _PACKAGE_DIR.parent / "props"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError("recbole_diffcl's props/ folder is missing: reinstall the package (pip install .)")


def plugin_models() -> dict[str, type]:
    """Plugin model classes by name."""
    module = importlib.import_module("recbole_diffcl.model")
    return {name: getattr(module, name) for name in module.__all__}


def get_model(model_name: str, option: str = "--model") -> type:
    """Model class by name: the plugin's models first, then every RecBole model (as RecBole-GNN does)."""
    plugin = plugin_models()
    if model_name in plugin:
        return plugin[model_name]
    from recbole.utils import get_model as recbole_get_model

    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):  # ImportError: RecBole probes exlib (xgboost, lightgbm)
        pass
    known = sorted(plugin)
    by_lower = {name.lower(): name for name in known}
    hint = f" Did you mean '{by_lower[model_name.lower()]}'?" if model_name.lower() in by_lower else ""
    raise UserError(
        f"Unknown model '{model_name}'.{hint} Fix: pass {option} with one of the plugin's models "
        f"({', '.join(known)}) or a RecBole model name, spelled as its class (e.g. SASRec, BERT4Rec, "
        f"GRU4Rec, FEARec)."
    )
