"""whole_sequence_training: one row per user, the next-item loss at every position."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_diffcl.data.dataloader import last_row_per_user
from recbole_diffcl.model.cl4srec import CL4SRec
from recbole_diffcl.model.diffclrec import DiffCLRec
from tests.conftest import make_batch, make_model, tiny_config

SMALL = dict(hidden_size=16, inner_size=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_last_row_per_user_picks_the_longest_row_of_each_user():
    users = torch.tensor([3, 1, 3, 1, 2, 3, 1])
    lengths = torch.tensor([1, 1, 2, 2, 1, 3, 3])
    keep = last_row_per_user(users, lengths)
    assert keep.tolist() == [6, 4, 5]  # users 1, 2, 3, each at its longest row


@pytest.mark.parametrize("model_class", [DiffCLRec, CL4SRec])
def test_whole_row_loss_equals_the_mean_over_its_prefix_rows(model_class):
    # The causal encoder's output at position i of a whole row is the output of the prefix row that
    # ends at i, so the CE at every position is the CE over RecBole's prefix rows (eval: no dropout).
    torch.manual_seed(0)
    model = make_model(model_class, whole_sequence_training=True, **SMALL).eval()
    whole = make_batch(batch=6, max_len=50, shortest=1, longest=12, seed=5)
    prefix_seqs, prefix_lens, prefix_targets = [], [], []
    for seq, n, target in zip(whole["item_id_list"], whole["item_length"].tolist(), whole["item_id"]):
        for k in range(1, n + 1):
            row = torch.zeros(50, dtype=torch.long)
            row[:k] = seq[:k]
            prefix_seqs.append(row)
            prefix_lens.append(k)
            prefix_targets.append(seq[k] if k < n else target)
    prefix = {"item_id": torch.stack(prefix_targets)}
    prefix_loss = model.rec_loss(model.forward(torch.stack(prefix_seqs), torch.tensor(prefix_lens)), prefix)
    whole_loss = model.whole_sequence_rec_loss(whole["item_id_list"], whole["item_length"], whole)
    torch.testing.assert_close(whole_loss, prefix_loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_class", [DiffCLRec, CL4SRec])
def test_training_losses_use_every_position(model_class):
    torch.manual_seed(0)
    batch = make_batch(batch=16, shortest=3, longest=20)
    model = make_model(model_class, whole_sequence_training=True, mask_ratio=0.4, **SMALL)
    parts = model.calculate_loss(batch)
    assert len(parts) == len(model.loss_names) and all(torch.isfinite(p) for p in parts)
    assert parts[1] > 0, "the contrastive loss is still on"
    sum(parts).backward()
    assert model.item_embedding.weight.grad is not None


def test_training_data_is_one_row_per_user_covering_every_prefix_target(tmp_path):
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.data.dataloader import whole_sequence_train_data
    from recbole_diffcl.quick_start import load_config

    _, config = load_config("DiffCLRec", "ml-100k", config_dict={**tiny_config(tmp_path), "whole_sequence_training": True})
    prefix_data, _, _ = data_preparation(config, create_dataset(config))
    whole_data = whole_sequence_train_data(config, prefix_data)
    prefix, whole = prefix_data._dataset.inter_feat, whole_data._dataset.inter_feat
    assert len(whole) == len(torch.unique(prefix["user_id"])) == len(torch.unique(whole["user_id"]))
    assert int(prefix["item_length"].max()) < 50, "the slice is short enough for no truncation"
    # every prefix row's (user, length, target) is one position of its user's whole row
    from_prefix = sorted(zip(prefix["user_id"].tolist(), prefix["item_length"].tolist(), prefix["item_id"].tolist()))
    from_whole = []
    for user, seq, n, target in zip(whole["user_id"].tolist(), whole["item_id_list"].tolist(), whole["item_length"].tolist(), whole["item_id"].tolist()):
        full = seq[:n] + [target]
        from_whole.extend((user, k, full[k]) for k in range(1, n + 1))
    assert sorted(from_whole) == from_prefix


@pytest.mark.parametrize("model", ["DiffCLRec", "CL4SRec"])
def test_whole_sequence_run_end_to_end(tmp_path, model):
    from recbole_diffcl.quick_start import run

    result = run(model, "ml-100k", config_dict={**tiny_config(tmp_path), "whole_sequence_training": True})
    assert result["epochs_run"] == 1 and result["properties"]["whole_sequence_training"] is True
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


@pytest.mark.parametrize("overlap", [0, 3, 9])
def test_windows_train_every_target_once_with_enough_context(overlap):
    from recbole_diffcl.data.dataloader import sequence_windows

    max_len = 10
    n_targets = np.arange(1, 60)
    user, end, loss_start = sequence_windows(n_targets, max_len, overlap)
    for u, n in enumerate(n_targets):
        mine = user == u
        trained = []
        for e, start in zip(end[mine], loss_start[mine]):
            length = min(max_len, e)  # the prefix row of target e has e items of history
            for p in range(length):  # position p (0-based) predicts target e - length + 1 + p with p + 1 items of context
                if p >= start:
                    trained.append(e - length + 1 + p)
                    assert p + 1 >= overlap + 1 or e <= max_len  # enough context, or the user's whole history
        assert sorted(trained) == list(range(1, n + 1)), (n, trained)
        if n <= max_len:
            assert mine.sum() == 1 and loss_start[mine][0] == 0  # short users: one row, as before


def test_full_ml100k_long_users_train_every_target_once(tmp_path):
    """The whole ml-100k (943 users, no length cap): every training target is one loss term of one row, with
    the items before it in its window as context, and no validation or test item in any training row."""
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.data.dataloader import LOSS_START_FIELD, whole_sequence_train_data
    from recbole_diffcl.quick_start import load_config

    props = {**tiny_config(tmp_path), "user_inter_num_interval": "[0,inf)", "whole_sequence_training": True}
    _, config = load_config("SASRecPlus", "ml-100k", config_dict=props)
    prefix_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    whole = whole_sequence_train_data(config, prefix_data)._dataset.inter_feat
    prefix = prefix_data._dataset.inter_feat
    assert len(torch.unique(prefix["user_id"])) == 943 and len(prefix) == 100_000 - 2 * 943 - 943  # targets

    # (user, target item, context) of every prefix row, and of every loss position of the whole rows
    expected = {}
    for u, seq, n, target in zip(prefix["user_id"].tolist(), prefix["item_id_list"].tolist(),
                                 prefix["item_length"].tolist(), prefix["item_id"].tolist()):
        expected.setdefault(u, []).append((target, tuple(seq[:n])))
    trained = {}
    for u, seq, n, target, start in zip(whole["user_id"].tolist(), whole["item_id_list"].tolist(),
                                        whole["item_length"].tolist(), whole["item_id"].tolist(),
                                        whole[LOSS_START_FIELD].tolist()):
        full = seq[:n] + [target]
        for p in range(start, n):
            trained.setdefault(u, []).append((full[p + 1], tuple(full[: p + 1])))
    assert len(whole) == 3_564 and sum(len(v) for v in trained.values()) == len(prefix) == 97_171
    for u, rows in expected.items():  # each user's targets, each once
        assert sorted(t for t, _ in trained[u]) == sorted(t for t, _ in rows)
    for u, rows in trained.items():
        by_target = {}
        for target, context in expected[u]:
            by_target.setdefault(target, []).append(context)
        for target, context in rows:
            # the context is the latest items before the target: a suffix of its prefix row's input, of at
            # least 25 items (the default overlap, half of MAX_ITEM_LIST_LENGTH) or the whole history
            assert any(c[len(c) - len(context):] == context and (len(context) >= 25 or len(context) == len(c))
                       for c in by_target[target])
    # no validation or test target is in any training row
    for loader in (valid_data, test_data):
        held_out = set(zip(loader._dataset.inter_feat["user_id"].tolist(), loader._dataset.inter_feat["item_id"].tolist()))
        in_rows = {(u, i) for u, seq in zip(whole["user_id"].tolist(), whole["item_id_list"].tolist()) for i in seq if i}
        in_rows |= set(zip(whole["user_id"].tolist(), whole["item_id"].tolist()))
        assert not held_out & in_rows
