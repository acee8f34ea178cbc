"""Data: dataset classes and training loaders, the named benchmark datasets and checks of atomic files,
readers of source files and the ``prepare`` command (as RecBole-GNN keeps them in ``data/``).

- :mod:`~recbole_diffcl.data.dataset`: ``create_dataset`` and the plugin's ``<Model>Dataset`` classes
- :mod:`~recbole_diffcl.data.dataloader`: whole-sequence rows and length-bucketed batches
- :mod:`~recbole_diffcl.data.registry`: the named benchmarks (where their files lie, RecBole's URLs)
- :mod:`~recbole_diffcl.data.checks`: a fast pre-flight check of the atomic files a run will read
- :mod:`~recbole_diffcl.data.readers`: sequence files and ratings files, k-core filtering
- :mod:`~recbole_diffcl.data.prepare`: ``python -m recbole_diffcl.prepare``, atomic files from a source
"""
from recbole_diffcl.data.dataset import DuoRecDataset, create_dataset

__all__ = ["create_dataset", "DuoRecDataset"]
