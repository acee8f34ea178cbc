"""Plugin models: one file per model, named after the class (as in RecBole), and the model lookup that
falls back to RecBole's (as RecBole-GNN's ``get_model``)."""
import torch

from recbole_diffcl.errors import UserError
from recbole_diffcl.model.cl4srec import CL4SRec
from recbole_diffcl.model.diffclrec import DiffCLRec
from recbole_diffcl.model.duorec import DuoRec
from recbole_diffcl.model.sasrecplus import SASRecPlus

__all__ = ["CL4SRec", "DiffCLRec", "DuoRec", "SASRecPlus"]


def plugin_models() -> dict[str, type]:
    """Plugin model classes by name."""
    return {name: globals()[name] for name in __all__}


def get_model(model_name: str, option: str = "--model") -> type:
    """Model class by name: the plugin's models first, then every RecBole model (as RecBole-GNN does)."""
    plugin = plugin_models()
    if model_name in plugin:
        return plugin[model_name]
    from recbole.utils import get_model as recbole_get_model

    anomaly_mode = torch.is_anomaly_enabled()
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):  # ImportError: RecBole probes exlib (xgboost, lightgbm)
        pass
    finally:
        # Importing RecBole's sequential models runs sine.py's module-level set_detect_anomaly(True): autograd's
        # debugging mode, on for the whole process (every op records its stack, every backward output is
        # checked for NaN), which made RecBole's SASRec steps ~1.4x slower here (docs/speed.md). Same math without it.
        torch.autograd.set_detect_anomaly(anomaly_mode)
    known = sorted(plugin)
    by_lower = {name.lower(): name for name in known}
    hint = f" Did you mean '{by_lower[model_name.lower()]}'?" if model_name.lower() in by_lower else ""
    raise UserError(
        f"Unknown model '{model_name}'.{hint} Fix: pass {option} with one of the plugin's models "
        f"({', '.join(known)}) or a RecBole model name, spelled as its class (e.g. SASRec, BERT4Rec, "
        f"GRU4Rec, FEARec)."
    )
