"""Exact resume: a "last" checkpoint after every epoch, and training continued from it.

Every run writes, beside its best checkpoint ``saved/<Model>-<time>.pth``, the latest epoch's state
to ``saved/<Model>-<time>-last.pth`` (atomically, after the epoch's validation). Both hold, besides
the model and the optimiser: the epoch, the early-stopping state (steps without gain, best score,
best validation result), the seconds of each epoch, the path of the best checkpoint, a fingerprint of
the dataset and the RNG states (python, numpy, torch, CUDA and the training loader's shuffling
generator) as plain lists and tensors, so that ``torch.load(..., weights_only=True)`` reads them.

``python run_recbole_diffcl.py --resume=PATH`` (or ``--resume``: the newest resumable checkpoint of
the same model and dataset in ``checkpoint_dir``) rebuilds the run from the checkpoint's properties,
restores all of that and continues with the next epoch: with the same seed the result is what the
uninterrupted run gives (on the same machine and torch build).
"""
from __future__ import annotations

import os
import random
from typing import Any, Optional

import numpy as np
import torch

from recbole_diffcl.checkpoint import LAST_SUFFIX, dataset_fingerprint, last_checkpoint_path
from recbole_diffcl.errors import UserError

#: ``--resume`` without a path: the newest checkpoint of the same model and dataset.
LATEST = "latest"


# --------------------------------------------------------------------------------------------------
# RNG states as plain values
# --------------------------------------------------------------------------------------------------
def rng_state(loader_generator: Optional[torch.Generator] = None) -> dict[str, Any]:
    """Python, numpy, torch, CUDA and loader RNG states as lists, numbers and tensors (weights-only safe)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], loader_generator: Optional[torch.Generator] = None) -> None:
    """Restore what :func:`rng_state` recorded."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if state.get("loader") is not None and loader_generator is not None:
        loader_generator.set_state(state["loader"].cpu())


# --------------------------------------------------------------------------------------------------
# Trainer side
# --------------------------------------------------------------------------------------------------
class ResumableMixin:
    """Training state in every checkpoint, a "last" checkpoint after every epoch, exact resuming.

    Mixed in front of a :class:`recbole_diffcl.trainer.SafeCheckpointMixin` trainer by :func:`resumable`.
    """

    _loader_generator: Optional[torch.Generator] = None
    _fingerprint: Optional[dict] = None
    _pending_rng: Optional[dict] = None  # restored when fit starts
    _stopped_early = False
    _saving = False  # fit(saved=...)
    _saving_last = False
    _last_saved_epoch = -1
    _trained_epoch = -1
    _latest_valid_result: Optional[dict] = None

    @property
    def last_model_file(self) -> str:
        return last_checkpoint_path(self.saved_model_file)

    def _checkpoint_extras(self) -> dict:
        from recbole_diffcl.trainer import plain

        extras = super()._checkpoint_extras()
        # RecBole sets best_valid_result only after saving the best checkpoint: that one gets the
        # validation result that just became the best.
        best_result = self.best_valid_result if self._saving_last else self._latest_valid_result
        extras.update(
            {
                "best_valid_result": plain(dict(best_result)) if best_result is not None else None,
                "best_file": os.path.abspath(self.saved_model_file),
                "epoch_seconds": [float(s) for s in getattr(self, "epoch_seconds", [])],
                "valid_curve": [float(v) for v in getattr(self, "valid_curve", [])],
                "stopped_early": bool(self.cur_step > self.stopping_step) if self._saving_last else False,
                "dataset_fingerprint": self._fingerprint,
                "rng_state": rng_state(self._loader_generator),
            }
        )
        return extras

    def _save_last(self, epoch: int) -> None:
        if epoch <= self._last_saved_epoch:
            return
        self._saving_last = True
        try:
            self._save_checkpoint(epoch, verbose=False, saved_model_file=self.last_model_file)
        finally:
            self._saving_last = False
        self._last_saved_epoch = epoch

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._latest_valid_result = valid_result
        return valid_score, valid_result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self._saving and epoch_idx > self.start_epoch:
            self._save_last(epoch_idx - 1)  # an epoch without validation (eval_step > 1) ended just now
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self._trained_epoch = epoch_idx
        return loss

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._saving = saved
        self._loader_generator = getattr(train_data, "generator", None)
        self._fingerprint = dataset_fingerprint(train_data._dataset)
        self._trained_epoch = self.start_epoch - 1
        self._last_saved_epoch = self.start_epoch - 1
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng, self._loader_generator)
            self._pending_rng = None
        if self._stopped_early or self.start_epoch >= self.epochs:
            why = "early stopping had ended it" if self._stopped_early else f"all {self.epochs} epochs were run"
            self.logger.info(f"Nothing left to train ({why}); best valid score {self.best_valid_score}.")
            self.stopped_by = "early_stopping" if self._stopped_early else "epochs"
            return self.best_valid_score, self.best_valid_result

        def after_validation(epoch_idx, valid_score):
            if saved:
                self._save_last(epoch_idx)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        result = super().fit(
            train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
            callback_fn=after_validation,
        )
        if getattr(self, "stopped_by", None) in ("epochs", "early_stopping"):  # counted over this process's epochs only
            self.stopped_by = "epochs" if self._trained_epoch >= self.epochs - 1 else "early_stopping"
        if saved:
            self._save_last(self._trained_epoch)
        return result

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = super().resume_checkpoint(resume_file)
        self.saved_model_file = _best_file_of(checkpoint, resume_file)
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.epoch_seconds = list(checkpoint.get("epoch_seconds", []))
        self.valid_curve = list(checkpoint.get("valid_curve", []))
        self._stopped_early = bool(checkpoint.get("stopped_early", False))
        self._pending_rng = checkpoint.get("rng_state")
        if self._pending_rng is None:
            self.logger.warning(
                f"{resume_file} holds no RNG states (written before resuming existed): training continues from "
                f"epoch {self.start_epoch}, but not exactly as the interrupted run would have."
            )
        return checkpoint


def _best_file_of(checkpoint: dict, resume_file: str) -> str:
    """The best checkpoint of the resumed run (where it was written, or beside ``resume_file``)."""
    best = checkpoint.get("best_file")
    if not best or not resume_file.endswith(LAST_SUFFIX):
        return os.path.abspath(resume_file)  # resuming from a best checkpoint: it stays the best one
    for candidate in (best, os.path.join(os.path.dirname(os.path.abspath(resume_file)), os.path.basename(best))):
        if os.path.isfile(candidate):
            return candidate
    raise UserError(
        f"{resume_file} is the last checkpoint of a run whose best checkpoint {best} is missing (it is needed for "
        f"the final test evaluation). Fix: put {os.path.basename(best)} back beside {os.path.basename(resume_file)}, "
        f"or resume from the best checkpoint itself (--resume={best})."
    )


def resumable(trainer_class: type) -> type:
    """``trainer_class`` with :class:`ResumableMixin` in front (same name, so logs are unchanged)."""
    if issubclass(trainer_class, ResumableMixin):
        return trainer_class
    return type(trainer_class.__name__, (ResumableMixin, trainer_class), {})


# --------------------------------------------------------------------------------------------------
# Runner side
# --------------------------------------------------------------------------------------------------
