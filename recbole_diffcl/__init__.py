"""recbole_diffcl: DiffCLRec and contrastive baselines (CL4SRec, DuoRec) as a RecBole plugin."""

__version__ = "0.1.0"
