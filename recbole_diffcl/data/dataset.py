"""Dataset construction: a model may bring its own dataset class, as in RecBole-GNN.

``create_dataset`` looks for ``<Model>Dataset`` in this module first and falls back to RecBole's
``create_dataset`` (which picks ``SequentialDataset`` for sequential models). With
``train_keep_ratio`` < 1 the chosen class is built with :class:`KeepRecentTraining` mixed in: a
sparser copy of the data with the same users, items and evaluation targets.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pandas as pd
import torch
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import SequentialDataset
from recbole.utils import ModelType

from recbole_diffcl.augment import SameTargetIndex
from recbole_diffcl.errors import UserError


def create_dataset(config):
    """Build the dataset of a run: the plugin's ``<Model>Dataset`` if defined here, else RecBole's choice."""
    dataset_class = getattr(sys.modules[__name__], config["model"] + "Dataset", None)
    ratio = config["train_keep_ratio"]
    if ratio is not None and ratio < 1:
        base = dataset_class or recbole_dataset_class(config)
        return type(f"KeepRecent{base.__name__}", (KeepRecentTraining, base), {})(config)
    if dataset_class is None:
        return recbole_create_dataset(config)
    return dataset_class(config)


def recbole_dataset_class(config) -> type:
    """The dataset class RecBole's ``create_dataset`` would build for this configuration."""
    module = importlib.import_module("recbole.data.dataset")
    own = getattr(module, config["model"] + "Dataset", None)
    if own is not None:
        return own
    by_type = {ModelType.SEQUENTIAL: "SequentialDataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset"}
    return getattr(module, by_type.get(config["MODEL_TYPE"], "Dataset"))


def held_out_per_user(config) -> int:
    """How many of each user's last interactions the leave-one-out split keeps out of training."""
    split = (config["eval_args"] or {}).get("split") or {}
    if "LS" not in split:
        raise UserError(
            f"train_keep_ratio needs the leave-one-out split (eval_args split LS), but this run splits with "
            f"{split}. Fix: drop --train_keep_ratio (or set it to 1.0), or use eval_args: {{split: {{LS: "
            f"valid_and_test}}, order: TO}} as props/overall.yaml does."
        )
    return 2 if split["LS"] == "valid_and_test" else 1


def keep_recent_training(
    inter: pd.DataFrame, uid_field: str, time_field: str, ratio: float, held_out: int
) -> pd.DataFrame:
    """``inter`` without the oldest training interactions of each user.

    A user's last ``held_out`` interactions (the validation and test targets) are never touched; of the
    n earlier ones (training) the most recent ceil(ratio * n) are kept, at least one. Row order is kept.
    """
    users = inter[uid_field].to_numpy()
    order = np.lexsort((inter[time_field].to_numpy(), users))  # by user, then time (stable)
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1] if len(order) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    n_train = np.repeat(sizes, sizes) - held_out
    keep_n = np.maximum(1, np.ceil(np.round(ratio * n_train, 9)))
    drop = (n_train > 0) & (position < n_train - keep_n)
    return inter.iloc[np.sort(order[~drop])].reset_index(drop=True)


class KeepRecentTraining:
    """Mixin of a RecBole dataset class: after RecBole's filtering and id remapping, keep only the most
    recent ``train_keep_ratio`` share of each user's training interactions (``keep_recent_training``).

    Users, the item vocabulary (so the ranked candidates) and every validation and test target stay
    as in the full data; validation and test inputs lose the dropped interactions too (they are gone
    from the data), so a model sees the same sparser history in training and evaluation.
    """

    def _data_processing(self):
        super()._data_processing()
        if self.benchmark_filename_list is not None:
            raise UserError(
                "train_keep_ratio does not apply to pre-split benchmark files (benchmark_filename). Fix: drop "
                "--train_keep_ratio, or give the data as one atomic .inter file."
            )
        ratio = self.config["train_keep_ratio"]
        before = len(self.inter_feat)
        self.inter_feat = keep_recent_training(
            self.inter_feat, self.uid_field, self.time_field, ratio, held_out_per_user(self.config)
        )
        self.logger.info(
            f"train_keep_ratio={ratio}: kept {len(self.inter_feat)} of {before} interactions (the most recent "
            f"{ratio:.0%} of each user's training interactions; validation and test targets untouched)"
        )


class DuoRecDataset(SequentialDataset):
    """RecBole's sequential dataset plus what DuoRec's supervised positives need (Qiu et al., WSDM 2022).

    After RecBole's build (data augmentation into prefix -> next-item rows, ordering, leave-one-out
    split), the *training* part gets a row-id field (its row's index in the stored training data, which
    the train dataloader indexes without reordering) and ``same_target_index``, a CSR index of the training
    rows by next item (:class:`recbole_diffcl.augment.SameTargetIndex`), built once, vectorised.
    Validation and test parts are left exactly as RecBole builds them.
    """

    ROW_ID_FIELD = "train_row_id"

    def build(self) -> list:
        datasets = super().build()
        train = datasets[0]
        # The split parts hold separate Interaction objects, so the field goes to the training rows only.
        train.inter_feat[self.ROW_ID_FIELD] = torch.arange(len(train.inter_feat))
        train.same_target_index = SameTargetIndex(train.inter_feat[self.iid_field], self.item_num)
        for part in datasets[1:]:
            part.same_target_index = None
        return datasets
