"""Plugin models: one file per model, named after the class (as in RecBole)."""
from recbole_diffcl.model.diffclrec import DiffCLRec

__all__ = ["DiffCLRec"]
