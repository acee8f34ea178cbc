"""Length bucketing: the same rows every epoch, in batches of similar length."""
import numpy as np
import torch

from recbole_diffcl.data.dataloader import LengthBucketBatchSampler


def test_bucketing_covers_every_row_once_per_epoch():
    lengths = np.random.default_rng(0).integers(1, 51, size=1003)
    sampler = LengthBucketBatchSampler(lengths, batch_size=64, chunk_batches=4, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        batches = list(sampler)
        assert len(batches) == len(sampler) == 16
        rows = sorted(i for b in batches for i in b)
        assert rows == list(range(1003))
        assert sum(len(b) < 64 for b in batches) == 1


def test_bucketing_groups_similar_lengths_and_varies_between_epochs():
    lengths = np.random.default_rng(1).integers(1, 51, size=4096)
    sampler = LengthBucketBatchSampler(lengths, batch_size=128, chunk_batches=8, generator=torch.Generator().manual_seed(0))
    first = list(sampler)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in first])
    random_spread = np.mean([lengths[b].max() - lengths[b].min() for b in np.array_split(np.arange(4096), 32)])
    assert spread < random_spread / 3
    assert np.mean([lengths[b].max() for b in first]) < 0.9 * 50
    assert first != list(sampler), "a new order every epoch"


def test_bucketed_run_trains_on_the_same_rows(tmp_path, tiny_run_dict):
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.data.dataloader import BucketedTrainDataLoader, bucketed_train_data
    from recbole_diffcl.quick_start import load_config

    _, config = load_config("DiffCLRec", "ml-100k", config_dict={**tiny_run_dict, "length_bucketing": True})
    train, _, _ = data_preparation(config, create_dataset(config))
    bucketed = bucketed_train_data(config, train)
    assert isinstance(bucketed, BucketedTrainDataLoader)

    def rows(loader):
        seen = []
        for batch in loader:
            seen.extend(zip(batch["user_id"].tolist(), batch["item_id"].tolist(), batch["item_length"].tolist()))
        return sorted(seen)

    assert rows(bucketed) == rows(train)
    assert len(bucketed) == len(train)
