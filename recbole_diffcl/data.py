"""Dataset construction: a model may bring its own dataset class, as in RecBole-GNN.

``create_dataset`` looks for ``<Model>Dataset`` in this module first and falls back to RecBole's
``create_dataset`` (which picks ``SequentialDataset`` for sequential models).
"""
from __future__ import annotations

import sys

from recbole.data import create_dataset as recbole_create_dataset


def create_dataset(config):
    """Build the dataset of a run: the plugin's ``<Model>Dataset`` if defined here, else RecBole's choice."""
    dataset_class = getattr(sys.modules[__name__], config["model"] + "Dataset", None)
    if dataset_class is None:
        return recbole_create_dataset(config)
    return dataset_class(config)
