"""Plugin models: one file per model, named after the class (as in RecBole)."""
from recbole_diffcl.model.cl4srec import CL4SRec
from recbole_diffcl.model.diffclrec import DiffCLRec
from recbole_diffcl.model.duorec import DuoRec
from recbole_diffcl.model.sasrecplus import SASRecPlus

__all__ = ["CL4SRec", "DiffCLRec", "DuoRec", "SASRecPlus"]
