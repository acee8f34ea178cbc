"""Dataset construction: a model may bring its own dataset class, as in RecBole-GNN.

``create_dataset`` looks for ``<Model>Dataset`` in this module first and falls back to RecBole's
``create_dataset`` (which picks ``SequentialDataset`` for sequential models).
"""
from __future__ import annotations

import sys

import torch
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import SequentialDataset

from recbole_diffcl.augment import SameTargetIndex


def create_dataset(config):
    """Build the dataset of a run: the plugin's ``<Model>Dataset`` if defined here, else RecBole's choice."""
    dataset_class = getattr(sys.modules[__name__], config["model"] + "Dataset", None)
    if dataset_class is None:
        return recbole_create_dataset(config)
    return dataset_class(config)


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
