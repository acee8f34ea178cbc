"""Trainers: RecBole's, with checkpoints that reload on torch >= 2.6, and a contrastive trainer.

RecBole 1.2.1 pickles its whole ``Config`` into every checkpoint, and torch >= 2.6 loads with
``weights_only=True`` by default, so RecBole's own ``evaluate(load_best_model=True)`` fails. Our
checkpoints hold only plain state (state dicts and plain-typed metadata) and load with
``weights_only=True``; safe loading is never switched off.
"""
from __future__ import annotations

import json
import os
import secrets
import warnings
from time import time
from typing import Any, Optional

import torch
from recbole.trainer import Trainer
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import set_color

from recbole_diffcl.utils import atomic_write

# RecBole 1.2.1 builds torch.cuda.amp.GradScaler every epoch, which torch deprecates with a
# FutureWarning each time; silence exactly that message (mixed precision itself still works).
warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler.*deprecated", category=FutureWarning)


def plain(value: Any) -> Any:
    """A JSON-plain copy of ``value`` (enums, devices, numpy scalars become strings or numbers)."""
    return json.loads(json.dumps(value, default=str))


def fused_optimizer_wanted(config) -> bool:
    """Whether Adam and AdamW run as torch's fused implementation: ``fused_optimizer`` (auto: on a CPU) and a
    torch with the fused CPU kernels (2.4 and later)."""
    wanted = config["fused_optimizer"] if "fused_optimizer" in config.final_config_dict else "auto"
    if wanted == "auto":
        wanted = torch.device(config["device"] or "cpu").type == "cpu"
    return bool(wanted) and tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)


class TrainingBudgetSpent(Exception):
    """Raised at the start of an epoch once ``max_train_seconds`` of training have passed."""


class LossNotFinite(Exception):
    """Raised by a training step whose loss is NaN or infinite (RecBole's check raises a bare ValueError)."""

    def __init__(self, epoch: int, part: str, value: float):
        super().__init__(f"epoch {epoch}: loss part {part} is {value}")
        self.epoch, self.part, self.value = epoch, part, value


class SafeCheckpointMixin:
    """Plain-state checkpoints written atomically, safe reloading, per-epoch training times, and an
    optional wall-clock budget for training (``max_train_seconds``).

    Mixed into any RecBole trainer class (see :func:`get_trainer`).
    """

    epoch_seconds: list
    #: why fit() ended: "early_stopping", "epochs" (the last epoch ran), "time_budget" or "diverged"
    stopped_by: str = "epochs"
    #: with ``stopped_by == "diverged"``: the one-paragraph message (epoch, loss part, likely fix)
    divergence: Optional[str] = None
    _last_losses: Any = None
    _epoch_idx: int = 0

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's fit; with ``max_train_seconds`` it stops before the first epoch that would start after
        the budget, keeping the best validated checkpoint as early stopping does (so that searches and
        benchmarks can give every configuration the same wall-clock budget)."""
        self._fit_start = time()
        try:
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        except TrainingBudgetSpent:
            self.stopped_by = "time_budget"
            if verbose:
                self.logger.info(
                    f"max_train_seconds={self.config['max_train_seconds']} reached after {len(self.epoch_seconds)} "
                    f"epochs: training stopped, the best validated checkpoint is kept"
                )
            self._add_hparam_to_tensorboard(self.best_valid_score)
            return self.best_valid_score, self.best_valid_result
        except LossNotFinite as exc:
            self.stopped_by = "diverged"
            self.divergence = self._divergence_message(exc)
            self.logger.error(self.divergence)
            if not self.config["single_spec"]:  # the other processes would wait for this one's gradients
                from recbole_diffcl.errors import TrainingDiverged

                raise TrainingDiverged(self.divergence) from None
            return self.best_valid_score, self.best_valid_result
        ran_all = len(getattr(self, "epoch_seconds", [])) + self.start_epoch >= self.epochs
        self.stopped_by = "epochs" if ran_all else "early_stopping"
        return result

    def __init__(self, config, model):
        # RecBole wraps the model with DistributedDataParallel(device_ids=[rank]), valid for GPU modules
        # only; on CPUs (gloo) the wrapper takes no device_ids.
        cpu_processes = not config["single_spec"] and config["device"].type == "cpu"
        if cpu_processes:
            config["single_spec"] = True
        try:
            super().__init__(config, model)
        finally:
            if cpu_processes:
                config["single_spec"] = False
        if cpu_processes:
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(self.model)
        # RecBole names checkpoints <Model>-<time to the second>.pth: runs started in the same second in one
        # folder (benchmark --parallel, a user's parallel jobs) would overwrite and reload each other's file.
        base, ext = os.path.splitext(self.saved_model_file)
        self.saved_model_file = f"{base}-{secrets.token_hex(3)}{ext}"
        if not config["single_spec"]:
            # every process reloads the best checkpoint, which only rank 0 writes: use rank 0's file name
            names = [self.saved_model_file]
            torch.distributed.broadcast_object_list(names, src=0)
            self.saved_model_file = names[0]

    def _build_optimizer(self, **kwargs):
        """RecBole's optimiser; Adam and AdamW as torch's fused implementation with ``fused_optimizer`` (auto:
        on a CPU, where it steps ~7x faster than RecBole's default; the same update)."""
        optimizer = super()._build_optimizer(**kwargs)
        if fused_optimizer_wanted(self.config) and type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
            defaults = {k: v for k, v in optimizer.defaults.items() if k not in ("foreach", "fused")}
            groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
            optimizer = type(optimizer)(groups, **defaults, fused=True)
        return optimizer

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": plain(self.config.final_config_dict),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            **self._checkpoint_extras(),
        }
        # All at once or not at all: an interrupted save never leaves a broken checkpoint.
        with atomic_write(saved_model_file, "wb") as f:
            torch.save(state, f)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        if not hasattr(self, "valid_curve"):
            self.valid_curve = []
        self.valid_curve.append(round(float(valid_score), 6))  # the validation metric after each evaluation
        return valid_score, valid_result

    def _checkpoint_extras(self) -> dict:
        """More plain state for every checkpoint (see :mod:`recbole_diffcl.resume`); none by default."""
        return {}

    def load_checkpoint(self, checkpoint_file: str) -> dict:
        """Load a checkpoint with ``weights_only=True`` and restore the model's parameters from it."""
        checkpoint = torch.load(checkpoint_file, map_location=self.device, weights_only=True)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = self.load_checkpoint(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning("The checkpoint was saved by another model; loading its state may fail.")
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")
        return checkpoint

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self.load_checkpoint(checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if not hasattr(self, "epoch_seconds"):
            self.epoch_seconds = []
        budget = self.config["max_train_seconds"]
        if budget and self.epoch_seconds and time() - getattr(self, "_fit_start", time()) > budget:
            raise TrainingBudgetSpent()
        self._epoch_idx = epoch_idx
        compute_loss = loss_func or self.model.calculate_loss

        def recorded(interaction):  # keeps the step's loss parts, which _check_nan names when one diverges
            self._last_losses = compute_loss(interaction)
            return self._last_losses

        start = time()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=recorded, show_progress=show_progress)
        self.epoch_seconds.append(time() - start)
        return loss

    def _check_nan(self, loss):
        """RecBole raises a bare ``ValueError("Training loss is nan")``; this stops the run cleanly instead
        (:meth:`fit` keeps the best checkpoint so far), on NaN and on infinite losses, naming the part."""
        if torch.isfinite(loss):
            return
        parts = self._loss_parts(self._last_losses if self._last_losses is not None else loss)
        part, value = next(((n, v) for n, v in parts.items() if not torch.isfinite(torch.as_tensor(v))),
                           ("loss", loss))
        raise LossNotFinite(self._epoch_idx, part, float(torch.as_tensor(value).detach()))

    def _loss_parts(self, losses) -> dict:
        """The loss parts by name (the model's ``loss_names``; ``loss`` for a model with one loss)."""
        names = getattr(self.model, "loss_names", ())
        if not isinstance(losses, tuple):
            return {names[0] if len(names) == 1 else "loss": losses}  # SASRecPlus: its one part, "rec"
        if len(names) != len(losses):
            names = [f"loss{i + 1}" for i in range(len(losses))]
        return dict(zip(names, losses))

    def _divergence_message(self, exc: LossNotFinite) -> str:
        lr = self.config["learning_rate"]
        if self.best_valid_result is not None and os.path.isfile(self.saved_model_file):
            kept = (f"The best checkpoint so far ({self.saved_model_file}, valid {self.config['valid_metric']} "
                    f"{self.best_valid_score:.4f}) was kept and is tested")
        else:
            kept = "No epoch had been validated yet, so there is no checkpoint to test"
        weight = {"cl": "cl_weight", "nll": "nll_weight", "mse": "mse_weight", "view_rec": "aug_rec_weight",
                  "cl_un": "lmd", "cl_su": "lmd_sem"}.get(exc.part)
        return (
            f"Training diverged in epoch {exc.epoch}: the loss part '{exc.part}' became {exc.value} and training "
            f"stopped at once. {kept}; the result file says stopped_by: diverged. Fix: lower the learning rate "
            f"(now {lr:g}; e.g. --learning_rate={lr / 10:g})"
            + (f", or the weight of that part (--{weight})" if weight else "")
            + ", or clip the gradients (--clip_grad_norm=\"{'max_norm': 5}\")."
        )


class ContrastiveTrainer(SafeCheckpointMixin, Trainer):
    """Trainer of the plugin's contrastive models (DiffCLRec, CL4SRec, DuoRec).

    RecBole's loop, early stopping, checkpointing and progress bars, plus: the model learns the
    current epoch (for ``cl_warmup_epochs``), and every loss part is logged by name (``rec``, ``cl``,
    ``nll``, ``mse`` ... as the model's ``loss_names``) to the log and to tensorboard. Logged parts
    are weighted (they add up to the training loss) and summed over the epoch's batches, as RecBole does.
    The view statistics the model recorded during the epoch (``pop_statistics``: InfoNCE accuracy,
    DiffCLRec's reconstruction accuracy, ...) are read once per epoch, logged on a line ``epoch N views
    [...]`` after the loss line, written to tensorboard as ``Views/<name>`` and kept in ``view_statistics``
    (one dict per epoch, also in the run's result file).
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.current_epoch = epoch_idx
        if epoch_idx == getattr(self.model, "cl_warmup_epochs", 0) and epoch_idx > 0:
            self.logger.info(f"epoch {epoch_idx}: warm-up over, contrastive loss switched on")
        pop_statistics = getattr(self.model, "pop_statistics", dict)
        pop_statistics()  # nothing recorded outside training (e.g. a sanity pass) counts for the epoch
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        statistics = pop_statistics()  # the one host read of the epoch's statistics
        if statistics:
            if not hasattr(self, "view_statistics"):
                self.view_statistics = []
            self.view_statistics.append({"epoch": epoch_idx, **{k: round(v, 6) for k, v in statistics.items()}})
        return loss

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        des = self.config["loss_decimal_place"] or 4
        parts = self._loss_parts(losses)
        total = sum(parts.values())
        text = ", ".join(f"{set_color(name, 'blue')}: {value:.{des}f}" for name, value in parts.items())
        return (
            f"{set_color(f'epoch {epoch_idx} training', 'green')} [{set_color('time', 'blue')}: "
            f"{e_time - s_time:.2f}s, {set_color('train loss', 'blue')}: {total:.{des}f} ({text})]"
        )

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        parts = self._loss_parts(losses)
        self.tensorboard.add_scalar(tag, sum(parts.values()), epoch_idx)
        if len(parts) > 1:
            for name, value in parts.items():
                self.tensorboard.add_scalar(f"Loss/{name}", value, epoch_idx)
        # RecBole calls this right after logging the epoch's loss line: the view statistics follow it.
        latest = getattr(self, "view_statistics", [None])[-1]
        if latest and latest["epoch"] == epoch_idx:
            stats = {k: v for k, v in latest.items() if k != "epoch"}
            text = ", ".join(f"{set_color(name, 'blue')}: {value:.4f}" for name, value in stats.items())
            self.logger.info(f"{set_color(f'epoch {epoch_idx} views', 'green')} [{text}]")
            for name, value in stats.items():
                self.tensorboard.add_scalar(f"Views/{name}", value, epoch_idx)


def get_trainer(model_type, model_name: str, model_class: Optional[type] = None) -> type:
    """Trainer class for a model: ours for plugin models, RecBole's (with safe checkpoints) otherwise."""
    from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender

    if model_class is not None and issubclass(model_class, ContrastiveSequentialRecommender):
        return ContrastiveTrainer
    base = recbole_get_trainer(model_type, model_name)
    if issubclass(base, SafeCheckpointMixin):
        return base
    return type(f"Safe{base.__name__}", (SafeCheckpointMixin, base), {})
