"""CL4SRec: the three augmentations (vectorised, never in place), the two views, the model, a real epoch."""
from __future__ import annotations

import math

import pytest
import torch

from recbole_diffcl import augment
from recbole_diffcl.model.cl4srec import CL4SRec
from tests.conftest import make_batch, make_model
from tests.conftest import tiny_config

SMALL = dict(hidden_size=16, inner_size=32)
MASK = 10**7  # larger than every item id of the test batches


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch_of_distinct_items(lengths: list[int], width: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned rows whose real items are all distinct (so positions can be traced), zero-padded."""
    length = torch.tensor(lengths)
    seq = torch.arange(1, len(lengths) * width + 1).reshape(len(lengths), width)
    seq[torch.arange(width)[None, :] >= length[:, None]] = 0
    return seq, length


ALL_LENGTHS = list(range(1, 21)) * 5  # every length 1..20, several draws each


# -- crop --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.3, 0.6, 1.0])
def test_crop_keeps_a_contiguous_left_aligned_run_of_floor_eta_len(eta):
    seq, length = batch_of_distinct_items(ALL_LENGTHS)
    before = seq.clone()
    out, new_len = augment.crop(seq, length, eta, torch.Generator().manual_seed(1))
    assert torch.equal(seq, before), "crop wrote into its input"
    for row in range(len(length)):
        n, k = int(length[row]), int(new_len[row])
        assert k == max(1, math.floor(eta * n))
        kept = out[row, :k].tolist()
        real = seq[row, :n].tolist()
        start = real.index(kept[0])
        assert kept == real[start : start + k], "not a contiguous run of the original"
        assert (out[row, k:] == 0).all(), "not re-padded after the new length"


def test_crop_start_is_random_over_all_valid_offsets():
    seq, length = batch_of_distinct_items([5] * 400)
    out, new_len = augment.crop(seq, length, 0.6, torch.Generator().manual_seed(0))
    assert (new_len == 3).all()
    starts = set((out[:, 0] - seq[:, 0]).tolist())
    assert starts == {0, 1, 2}


def test_crop_floor_is_robust_to_float_rounding():
    # 0.29 * 100 is 28.999999999999996 in floating point; the share is meant as 29 items
    seq, length = batch_of_distinct_items([100], width=100)
    assert int(augment.crop(seq, length, 0.29)[1]) == 29


# -- mask --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 1.0])
def test_mask_replaces_floor_gamma_len_real_items_with_the_token(gamma):
    seq, length = batch_of_distinct_items(ALL_LENGTHS)
    before = seq.clone()
    out = augment.mask(seq, length, MASK, gamma, torch.Generator().manual_seed(2))
    assert torch.equal(seq, before), "mask wrote into its input"
    real = torch.arange(seq.size(1))[None, :] < length[:, None]
    masked = out == MASK
    assert not (masked & ~real).any(), "padding was masked"
    assert torch.equal(masked.sum(1), torch.floor(length * gamma + 1e-9).long())
    assert torch.equal(out[~masked], seq[~masked]), "an unmasked position changed"


def test_mask_positions_are_spread_over_the_sequence():
    seq, length = batch_of_distinct_items([10] * 500, width=10)
    out = augment.mask(seq, length, MASK, 0.3, torch.Generator().manual_seed(3))
    hits = (out == MASK).sum(0)
    assert (hits > 0).all() and hits.sum() == 1500  # every position gets masked sometimes


# -- reorder -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.6, 1.0])
def test_reorder_permutes_one_window_and_nothing_else(beta):
    seq, length = batch_of_distinct_items(ALL_LENGTHS)
    before = seq.clone()
    out = augment.reorder(seq, length, beta, torch.Generator().manual_seed(4))
    assert torch.equal(seq, before), "reorder wrote into its input"
    changed_rows = 0
    for row in range(len(length)):
        n, w = int(length[row]), math.floor(beta * int(length[row]) + 1e-9)
        orig, new = seq[row].tolist(), out[row].tolist()
        assert new[n:] == orig[n:], "padding moved"
        # some window [s, s + w) holds a permutation of the same items, everything else is unchanged
        assert any(
            new[:s] == orig[:s]
            and new[s + w :] == orig[s + w :]
            and sorted(new[s : s + w]) == sorted(orig[s : s + w])
            for s in range(0, n - w + 1)
        ), f"row {row}: not a permutation of one window of {w}"
        changed_rows += new != orig
    if beta >= 0.6:
        assert changed_rows > len(length) // 2, "reorder hardly ever changes anything"


def test_reorder_window_permutations_are_all_reachable():
    seq, length = batch_of_distinct_items([3] * 600, width=3)
    out = augment.reorder(seq, length, 1.0, torch.Generator().manual_seed(5))
    perms = {tuple((row - row.min()).tolist()) for row in out}
    assert len(perms) == 6


def test_same_generator_seed_gives_the_same_views():
    seq, length = batch_of_distinct_items(ALL_LENGTHS)
    runs = [
        augment.augment_views(seq, length, mask_token=MASK, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    for a, b in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1]):
        assert torch.equal(a, b)


# -- two views ---------------------------------------------------------------------------------------
def test_views_use_two_distinct_operations_per_sequence():
    seq, length = batch_of_distinct_items([20] * 300)
    before = (seq.clone(), length.clone())
    (v1, v2), (l1, l2), pairs = augment.augment_views(
        seq, length, mask_token=MASK, generator=torch.Generator().manual_seed(8)
    )
    assert torch.equal(seq, before[0]) and torch.equal(length, before[1])
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert {tuple(p) for p in pairs.tolist()} == {(a, b) for a in range(3) for b in range(3) if a != b}
    for view, view_len, op in ((v1, l1, pairs[:, 0]), (v2, l2, pairs[:, 1])):
        crop, mask, reorder = op == 0, op == 1, op == 2
        assert (view_len[crop] == 12).all() and (view_len[~crop] == 20).all()
        assert ((view[mask] == MASK).sum(1) == 6).all()
        assert not (view[~mask] == MASK).any()
        assert torch.equal(view[reorder].sort(1).values, seq[reorder].sort(1).values)


def test_a_single_operation_gives_two_independent_draws():
    seq, length = batch_of_distinct_items([20] * 50)
    (v1, v2), _, pairs = augment.augment_views(
        seq, length, ["mask"], mask_token=MASK, generator=torch.Generator().manual_seed(9)
    )
    assert (pairs == 0).all()
    assert ((v1 == MASK).sum(1) == 6).all() and ((v2 == MASK).sum(1) == 6).all()
    assert not torch.equal(v1, v2)


# -- model ----------------------------------------------------------------------------------------------
def test_mask_token_is_an_extra_row_never_scored():
    torch.manual_seed(0)
    model = make_model(CL4SRec, n_items=60, **SMALL)
    assert model.mask_token == 60 and model.item_embedding.num_embeddings == 61
    batch = make_batch(n_items=60)
    model.eval()
    assert model.full_sort_predict(batch).shape == (8, 60)
    model.train()
    parts = model.calculate_loss(batch)
    assert len(parts) == len(model.loss_names) == 2
    assert all(torch.isfinite(p) for p in parts) and parts[1] > 0
    sum(parts).backward()
    assert model.item_embedding.weight.grad[60].abs().sum() > 0, "the mask token's row is learned"


def test_calculate_loss_leaves_the_batch_untouched():
    torch.manual_seed(0)
    model = make_model(CL4SRec, **SMALL)
    batch = make_batch()
    before = {k: v.clone() for k, v in batch.items()}
    model.calculate_loss(batch)
    assert all(torch.equal(batch[k], before[k]) for k in batch)


def test_warmup_turns_cl_off():
    model = make_model(CL4SRec, cl_warmup_epochs=1, **SMALL)
    assert model.calculate_loss(make_batch())[1] == 0
    model.current_epoch = 1
    assert model.calculate_loss(make_batch())[1] > 0


def test_invalid_operation_list_is_a_user_error():
    from recbole_diffcl.errors import UserError
    from recbole_diffcl.quick_start import load_config

    with pytest.raises(UserError, match="aug_operations"):
        load_config("CL4SRec", "ml-100k", config_dict={"aug_operations": ["crop", "rotate"]})
    with pytest.raises(UserError, match="crop_eta"):
        load_config("CL4SRec", "ml-100k", config_dict={"crop_eta": 1.5})


# -- on real data ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["CL4SRec", "DuoRec"])
def test_stored_training_data_unchanged_after_an_epoch(tmp_path, model_name):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.quick_start import load_config
    from recbole_diffcl.trainer import get_trainer

    model_class, config = load_config(model_name, "ml-100k", config_dict=tiny_config(tmp_path))
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    stored = train_data._dataset.inter_feat
    before = {field: stored[field].clone() for field in stored.columns}
    model = model_class(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"], model_class)(config, model)
    loss = trainer._train_epoch(train_data, 0, show_progress=False)
    assert all(torch.isfinite(torch.as_tensor(part)) for part in loss)
    assert loss[1] > 0 or (len(loss) > 2 and loss[2] > 0), "the contrastive loss did not run"
    stored = train_data._dataset.inter_feat
    for field, values in before.items():
        assert torch.equal(stored[field], values), f"training changed the stored {field}"


def test_cl4srec_end_to_end(tmp_path):
    from recbole_diffcl.quick_start import run

    result = run("CL4SRec", "ml-100k", config_dict=tiny_config(tmp_path), result_file=str(tmp_path / "r.json"))
    assert result["epochs_run"] == 1 and result["properties"]["crop_eta"] == 0.6
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
    # test was evaluated on the best checkpoint, reloaded with torch's safe loader
    assert torch.load(result["checkpoint"], weights_only=True)["config"]["model"] == "CL4SRec"
