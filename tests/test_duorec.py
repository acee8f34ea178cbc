"""DuoRec: the same-target index and sampling, DuoRecDataset, the contrast modes, false negatives, a real run."""
from __future__ import annotations

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_diffcl.augment import SameTargetIndex, sample_same_target
from recbole_diffcl.data import DuoRecDataset
from recbole_diffcl.errors import UserError
from recbole_diffcl.model.contrastive import info_nce
from recbole_diffcl.model.duorec import DuoRec
from tests.conftest import FakeDataset, model_config
from tests.conftest import tiny_config

SMALL = dict(hidden_size=16, inner_size=32)
ROW_ID = DuoRecDataset.ROW_ID_FIELD


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the index ------------------------------------------------------------------------------------------
def test_csr_groups_rows_by_target():
    targets = torch.tensor([3, 1, 3, 2, 3, 1, 5])
    index = SameTargetIndex(targets, n_items=7)
    for t in range(7):
        group = index.rows[index.indptr[t] : index.indptr[t + 1]]
        assert sorted(group.tolist()) == [r for r, x in enumerate(targets.tolist()) if x == t]
    assert torch.equal(index.rows[index.position], torch.arange(7))


def test_sampled_row_shares_the_target_and_is_not_the_anchor():
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(1, 40, (2000,), generator=g)
    targets[:5] = torch.tensor([41, 42, 43, 44, 45])  # five rows whose target no other row has
    index = SameTargetIndex(targets, n_items=50)
    anchors = torch.randint(0, 2000, (20000,), generator=g)
    anchors[:5] = torch.arange(5)
    sampled = index.sample(anchors, g)
    assert torch.equal(targets[sampled], targets[anchors])
    alone = torch.bincount(targets, minlength=50)[targets[anchors]] == 1
    assert alone[:5].all() and alone.sum() == (anchors < 5).sum()
    assert torch.equal(sampled[alone], anchors[alone]), "an anchor without partner must fall back to itself"
    assert (sampled[~alone] != anchors[~alone]).all(), "the anchor was sampled although others share its target"


def test_every_other_same_target_row_is_drawn_uniformly():
    targets = torch.tensor([7, 7, 7, 7, 2])
    index = SameTargetIndex(targets, n_items=8)
    sampled = index.sample(torch.full((30000,), 2), torch.Generator().manual_seed(1))
    counts = torch.bincount(sampled, minlength=5)
    assert counts[2] == 0 and counts[4] == 0
    assert ((counts[[0, 1, 3]] - 10000).abs() < 500).all()


def test_sampling_is_tensor_ops_fast_on_a_large_index():
    import time

    g = torch.Generator().manual_seed(2)
    targets = torch.randint(1, 20000, (300_000,), generator=g)
    start = time.perf_counter()
    index = SameTargetIndex(targets, n_items=20000)
    built = time.perf_counter() - start
    anchors = torch.randint(0, 300_000, (256,), generator=g)
    start = time.perf_counter()
    for _ in range(100):
        index.sample(anchors, g)
    per_batch = (time.perf_counter() - start) / 100
    assert built < 2.0 and per_batch < 0.01, (built, per_batch)  # generous bounds for a shared CPU


# -- DuoRecDataset on ml-100k --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def duorec_data(tmp_path_factory):
    from recbole.data import data_preparation
    from recbole.data.dataset import SequentialDataset
    from recbole.utils import init_seed

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.quick_start import load_config

    model_class, config = load_config("DuoRec", "ml-100k", config_dict=tiny_config(tmp_path_factory.mktemp("d")))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    assert type(dataset) is DuoRecDataset
    loaders = data_preparation(config, dataset)
    plain_parts = SequentialDataset(config).build()  # what RecBole builds for any sequential model
    return model_class, config, loaders, plain_parts


def test_training_rows_get_row_ids_and_valid_test_are_untouched(duorec_data):
    _, _, (train_data, valid_data, test_data), plain_parts = duorec_data
    train = train_data._dataset
    assert torch.equal(train.inter_feat[ROW_ID], torch.arange(len(train)))
    index = train.same_target_index
    assert torch.equal(index.targets, train.inter_feat[train.iid_field])
    for ours, recbole_part in zip((train, valid_data._dataset, test_data._dataset), plain_parts):
        fields = [f for f in recbole_part.inter_feat.columns]
        assert sorted(set(ours.inter_feat.columns) - {ROW_ID}) == sorted(fields)
        for field in fields:
            assert torch.equal(ours.inter_feat[field], recbole_part.inter_feat[field]), field
    for part in (valid_data._dataset, test_data._dataset):
        assert ROW_ID not in part.inter_feat


def test_batches_carry_the_row_ids_of_their_stored_rows(duorec_data):
    _, _, (train_data, _, _), _ = duorec_data
    stored = train_data._dataset.inter_feat
    seen = []
    for batch in train_data:
        rows = batch[ROW_ID]
        assert torch.equal(batch["item_id_list"], stored["item_id_list"][rows])
        assert torch.equal(batch["item_id"], stored["item_id"][rows])
        seen.append(rows)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(len(stored)))


def test_model_samples_same_target_sequences_from_the_training_rows(duorec_data):
    model_class, config, (train_data, _, _), _ = duorec_data
    torch.manual_seed(0)
    model = model_class(config, train_data._dataset)
    stored = train_data._dataset.inter_feat
    batch = next(iter(train_data))
    sem_seq, sem_len = model.sample_same_target(batch[ROW_ID])
    # each sampled sequence is a stored training row whose target is the anchor's
    counts = torch.bincount(stored["item_id"])
    for seq, length, target, row in zip(sem_seq, sem_len, batch["item_id"], batch[ROW_ID]):
        match = ((stored["item_id_list"] == seq).all(1) & (stored["item_length"] == length)).nonzero()[:, 0]
        assert (stored["item_id"][match] == target).any()
        if counts[target] > 1:
            assert (match != row).any(), "the anchor itself was sampled although others share its target"
    parts = model.calculate_loss(batch)
    assert len(parts) == 3 and parts[1] == 0 and parts[2] > 0  # us_x is logged as the supervised part


def test_model_needs_duorec_dataset():
    with pytest.raises(UserError, match="DuoRecDataset"):
        DuoRec(model_config("DuoRec", **SMALL), FakeDataset(60))


# -- modes and false negatives, on a small in-memory dataset ------------------------------------------------
class FakeDuoRecData(FakeDataset):
    """The training part as DuoRec reads it: stored rows with row ids and the same-target index."""

    def __init__(self, n_items: int = 30, rows: int = 64, seed: int = 0):
        super().__init__(n_items)
        g = torch.Generator().manual_seed(seed)
        length = torch.randint(2, 10, (rows,), generator=g)
        seq = torch.randint(1, n_items, (rows, 50), generator=g)
        seq[torch.arange(50)[None, :] >= length[:, None]] = 0
        target = torch.randint(1, 8, (rows,), generator=g)  # few targets: many same-target rows
        self.inter_feat = Interaction(
            {"item_id_list": seq, "item_length": length, "item_id": target, ROW_ID: torch.arange(rows)}
        )
        self.same_target_index = SameTargetIndex(target, n_items)

    def batch(self, rows: torch.Tensor) -> dict:
        return {k: self.inter_feat[k][rows] for k in self.inter_feat.columns}


def make_duorec(data: FakeDuoRecData, **overrides) -> DuoRec:
    return DuoRec(model_config("DuoRec", **{**SMALL, **overrides}), data)


def losses(model: DuoRec, batch: dict, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)  # same dropout masks and same sampled partners for every call
    return [float(p) for p in model.calculate_loss(batch)]


@pytest.mark.parametrize(
    "mode, un_on, su_on", [("un", True, False), ("su", False, True), ("us", True, True), ("us_x", False, True)]
)
def test_contrast_modes_switch_the_right_terms(mode, un_on, su_on):
    data = FakeDuoRecData()
    torch.manual_seed(0)
    model = make_duorec(data, contrast=mode)
    rec, un, su = losses(model, data.batch(torch.arange(32)))
    assert rec > 0 and (un > 0) == un_on and (su > 0) == su_on


def test_us_x_is_the_dropout_view_against_the_same_target_view():
    data = FakeDuoRecData()
    batch = data.batch(torch.arange(32))
    torch.manual_seed(0)
    model = make_duorec(data, contrast="us_x", hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    state = model.state_dict()
    us_x = losses(model, batch)
    # lmd does not enter us_x
    other = make_duorec(data, contrast="us_x", lmd=0.7, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    other.load_state_dict(state)
    assert losses(other, batch) == pytest.approx(us_x)
    # without dropout the extra pass equals the rec pass, so us_x equals su (which contrasts h with h_sem)
    su = make_duorec(data, contrast="su", hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    su.load_state_dict(state)
    assert losses(su, batch) == pytest.approx(us_x, rel=1e-5)
    # with dropout the two passes differ, and so do the two losses
    torch.manual_seed(0)
    noisy = make_duorec(data, contrast="us_x")
    noisy_su = make_duorec(data, contrast="su")
    noisy_su.load_state_dict(noisy.state_dict())
    assert losses(noisy, batch)[2] != pytest.approx(losses(noisy_su, batch)[2])


def test_false_negative_removal_changes_only_batches_with_shared_targets():
    data = FakeDuoRecData()
    torch.manual_seed(0)
    keep = make_duorec(data, contrast="us", remove_false_negatives=False)
    drop = make_duorec(data, contrast="us", remove_false_negatives=True)
    drop.load_state_dict(keep.state_dict())
    targets = data.inter_feat["item_id"]
    shared = torch.arange(32)
    assert len(set(targets[shared].tolist())) < 32
    l_keep, l_drop = losses(keep, data.batch(shared)), losses(drop, data.batch(shared))
    assert l_keep[0] == pytest.approx(l_drop[0])
    assert l_keep[1] > l_drop[1] and l_keep[2] > l_drop[2]  # fewer negatives: lower InfoNCE
    # one row per target: nothing to remove, identical losses
    distinct = torch.stack([(targets == t).nonzero()[0, 0] for t in targets.unique()])
    assert losses(keep, data.batch(distinct)) == pytest.approx(losses(drop, data.batch(distinct)))


def test_info_nce_with_targets_masks_exactly_the_same_target_views():
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    targets = torch.tensor([5, 6, 5, 7])
    z = torch.cat([z1, z2])
    sim = z @ z.T
    both = torch.cat([targets, targets])
    expected = 0.0
    for i in range(8):
        positive = (i + 4) % 8
        keep = [j for j in range(8) if j != i and (j == positive or both[j] != both[i])]
        expected += -(sim[i, positive] - torch.logsumexp(sim[i, keep], 0))
    assert info_nce(z1, z2, 1.0, "dot", targets) == pytest.approx(float(expected / 8), rel=1e-5)


def test_stored_rows_and_batch_are_never_written():
    data = FakeDuoRecData()
    before = {k: data.inter_feat[k].clone() for k in data.inter_feat.columns}
    batch = data.batch(torch.arange(32))
    batch_before = {k: v.clone() for k, v in batch.items()}
    model = make_duorec(data)
    sum(model.calculate_loss(batch)).backward()
    assert all(torch.equal(data.inter_feat[k], v) for k, v in before.items())
    assert all(torch.equal(batch[k], v) for k, v in batch_before.items())


def test_index_buffers_follow_the_model_but_are_not_saved():
    model = make_duorec(FakeDuoRecData())
    assert not any(k.startswith(("same_target_", "train_item_seq")) for k in model.state_dict())
    assert {"same_target_rows", "same_target_indptr", "train_item_seq"} <= {n for n, _ in model.named_buffers()}


# -- end to end ------------------------------------------------------------------------------------------
def test_duorec_end_to_end(tmp_path):
    from recbole_diffcl.quick_start import run

    result = run("DuoRec", "ml-100k", config_dict=tiny_config(tmp_path))
    assert result["epochs_run"] == 1 and result["properties"]["contrast"] == "us_x"
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
