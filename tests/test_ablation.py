"""Issue 17: DiffCLRec's ablation properties and the sparsity property, each changes what it says."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from recbole_diffcl import diffusion
from recbole_diffcl.data.dataset import keep_recent_training
from recbole_diffcl.model.diffclrec import DiffCLRec, popularity_percentiles
from tests.conftest import ROOT, make_batch, make_model, tiny_config

SMALL = dict(hidden_size=16, inner_size=32, denoiser_inner_size=32, diffusion_steps=100)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- aug_source --------------------------------------------------------------------------------------
def test_aug_source_diffusion_draws_from_the_candidates_only():
    model = make_model(DiffCLRec, **SMALL)
    candidates = torch.tensor([[3, 4]] * 500)
    sampled = model.sample_replacements(500, candidates)
    assert sampled.shape == (500, 2)
    assert set(sampled.unique().tolist()) == {3, 4}


def test_aug_source_random_draws_uniformly_from_all_real_items():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, n_items=30, aug_source="random", **SMALL)
    sampled = model.sample_replacements(3000, None)
    assert sampled.min() >= 1 and sampled.max() <= 29  # never padding
    counts = torch.bincount(sampled.flatten(), minlength=30)[1:].float()
    assert (counts > 0).all() and counts.max() / counts.min() < 2  # ~200 draws each


def test_aug_source_popularity_follows_the_training_counts():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, n_items=30, aug_source="popularity", **SMALL)
    counts = torch.zeros(30)
    counts[5], counts[7] = 1.0, 3.0
    model.set_item_counts(counts)
    sampled = model.sample_replacements(2000, None).flatten()
    assert set(sampled.unique().tolist()) == {5, 7}
    assert 0.7 < (sampled == 7).float().mean() < 0.8


@pytest.mark.parametrize("source", ["random", "popularity"])
def test_non_diffusion_sources_still_train_and_skip_the_denoiser_without_nll(source):
    torch.manual_seed(0)
    model = make_model(DiffCLRec, aug_source=source, mask_ratio=0.5, **SMALL)
    rec, cl, nll, mse, _ = model.calculate_loss(make_batch())
    assert cl.item() > 0 and nll.item() > 0  # the denoiser's NLL is still a loss
    model = make_model(DiffCLRec, aug_source=source, mask_ratio=0.5, nll_weight=0.0, **SMALL)
    assert not model.runs_denoiser
    parts = model.calculate_loss(make_batch())
    assert parts[1].item() > 0 and parts[2].item() == 0
    sum(parts).backward()
    assert all(p.grad is None for p in model.denoiser.parameters())


def test_popularity_percentiles_rank_items_by_count():
    pct = popularity_percentiles(torch.tensor([0.0, 5.0, 1.0, 1.0, 9.0]))
    assert pct[0] == 0
    assert pct[4] > pct[1] > pct[2] == pct[3]
    assert abs(pct[1:].mean().item() - 0.5) < 1e-6  # mid-ranks average to one half


# -- denoiser_context ----------------------------------------------------------------------------------
def _denoiser_outputs(context: str, position: str, change_at: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    denoiser = diffusion.Denoiser(16, 10, inner_size=32, position=position, context=context).eval()
    if position == "relative":
        torch.nn.init.normal_(denoiser.relative_bias.weight)
    x = torch.randn(2, 10, 16)
    real = torch.ones(2, 10, dtype=torch.bool)
    t = torch.tensor([3, 40])
    changed = x.clone()
    changed[:, change_at] = torch.randn(2, 16)  # (a constant shift would vanish in the LayerNorm)
    return denoiser(x, t, real), denoiser(changed, t, real)


@pytest.mark.parametrize("position", ["relative", "disentangled", "absolute", "none"])
def test_denoiser_context_decides_which_positions_an_output_depends_on(position):
    # Change the input at position 5: which outputs move?
    moved = {}
    for context in ("both", "left", "none"):
        before, after = _denoiser_outputs(context, position, change_at=5)
        moved[context] = ((before - after).abs().amax(-1) > 1e-5).any(0).tolist()
    assert all(moved["both"])  # bidirectional: every position sees position 5
    assert moved["left"] == [i >= 5 for i in range(10)]  # causal: only positions 5.. see it
    assert moved["none"] == [i == 5 for i in range(10)]  # no context: only position 5 itself


def test_denoiser_context_is_a_checked_property():
    from recbole_diffcl.properties import validate_properties

    class Config(dict):
        final_config_dict = property(lambda self: self)

    with pytest.raises(Exception, match="denoiser_context"):
        validate_properties(DiffCLRec, Config(model="DiffCLRec", denoiser_context="right"))
    with pytest.raises(Exception, match="aug_source"):
        validate_properties(DiffCLRec, Config(model="DiffCLRec", aug_source="uniform"))


# -- share_item_embedding and train_diffusion -------------------------------------------------------------
@pytest.mark.parametrize("share", [True, False])
def test_share_item_embedding_decides_which_table_the_nll_trains(share):
    torch.manual_seed(0)
    model = make_model(DiffCLRec, share_item_embedding=share, mask_ratio=0.5, **SMALL)
    assert hasattr(model, "denoiser_item_embedding") is (not share)
    nll = model.calculate_loss(make_batch())[model.loss_names.index("nll")]
    nll.backward()
    shared_grad = model.item_embedding.weight.grad
    assert bool(shared_grad is not None and shared_grad.abs().sum() > 0) is share
    if not share:
        assert model.denoiser_item_embedding.weight.grad.abs().sum() > 0
    # either way the recommender's table learns from the recommendation loss
    model.zero_grad()
    model.calculate_loss(make_batch())[0].backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("share", [True, False])
def test_train_diffusion_false_freezes_the_denoiser_but_still_makes_views(share):
    torch.manual_seed(0)
    model = make_model(DiffCLRec, train_diffusion=False, share_item_embedding=share, mask_ratio=0.5, **SMALL)
    frozen = list(model.denoiser.parameters()) + ([] if share else [model.denoiser_item_embedding.weight])
    assert not any(p.requires_grad for p in frozen)
    rec, cl, nll, mse, _ = model.calculate_loss(make_batch())
    assert nll.item() == 0 and mse.item() == 0 and cl.item() > 0
    (rec + cl).backward()
    assert all(p.grad is None for p in frozen)
    assert model.trm_encoder.layer[0].feed_forward.dense_1.weight.grad.abs().sum() > 0


def test_the_default_is_the_method():
    model = make_model(DiffCLRec, **SMALL)
    assert (model.aug_source, model.denoiser.context, model.share_item_embedding, model.train_diffusion) == (
        "diffusion", "both", True, True,
    )
    assert not hasattr(model, "denoiser_item_embedding") and model.runs_denoiser


# -- props/ablation/ -------------------------------------------------------------------------------------
def test_every_ablation_file_sets_valid_diffclrec_properties():
    checks = DiffCLRec.property_checks
    defaults = yaml.safe_load((ROOT / "props" / "model" / "DiffCLRec.yaml").read_text())
    files = sorted((ROOT / "props" / "ablation").glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        props = yaml.safe_load(path.read_text())
        assert props, path.name
        for name, value in props.items():
            assert name in defaults, (path.name, name)
            assert value != defaults[name], (path.name, name)  # an ablation changes the default
            if name in checks:
                is_valid, expected = checks[name]
                assert is_valid(value), (path.name, name, expected)
        # file names say what they set: <property>-<value>.yaml
        prop, _, value = path.stem.partition("-")
        assert prop in props and props[prop] == yaml.safe_load(value), path.name


# -- train_keep_ratio ----------------------------------------------------------------------------------
def _interactions(lengths: dict[int, int]) -> pd.DataFrame:
    rows = [(u, 100 * u + i, float(i)) for u, n in lengths.items() for i in range(n)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # any row order


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.99, 1.0])
def test_keep_recent_training_drops_only_the_oldest_training_interactions(ratio):
    import math

    lengths = {1: 3, 2: 5, 3: 12, 4: 2, 5: 50}
    kept = keep_recent_training(_interactions(lengths), "user_id", "timestamp", ratio, held_out=2)
    for user, n in lengths.items():
        items = sorted(kept.loc[kept.user_id == user, "timestamp"].astype(int).tolist())
        n_train = n - 2
        expected_train = n_train if n_train <= 0 else max(1, math.ceil(round(ratio * n_train, 9)))
        assert len(items) == max(0, expected_train) + min(n, 2), (user, items)
        assert items == list(range(n - len(items), n)), "the most recent ones are kept"


def test_train_keep_ratio_on_a_real_dataset_keeps_users_items_and_evaluation_targets(tmp_path):
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.quick_start import load_config

    def build(ratio):
        _, config = load_config(
            "SASRecPlus", "ml-100k", config_dict=tiny_config(tmp_path, train_keep_ratio=ratio)
        )
        dataset = create_dataset(config)
        return dataset, data_preparation(config, dataset)

    full, (train_f, valid_f, test_f) = build(1.0)
    sparse, (train_s, valid_s, test_s) = build(0.3)
    assert (sparse.user_num, sparse.item_num) == (full.user_num, full.item_num)
    assert sparse.inter_num < 0.5 * full.inter_num
    assert len(train_s._dataset) < 0.5 * len(train_f._dataset)
    targets = lambda part: sorted(zip(part._dataset.inter_feat["user_id"].tolist(), part._dataset.inter_feat["item_id"].tolist()))  # noqa: E731
    for part_f, part_s in ((valid_f, valid_s), (test_f, test_s)):
        assert targets(part_f) == targets(part_s)  # same users, same targets (rows may come in another order)
        # the dropped interactions are gone from the evaluation inputs too
        assert part_s._dataset.inter_feat["item_length"].sum() < part_f._dataset.inter_feat["item_length"].sum()
    with pytest.raises(Exception, match="train_keep_ratio"):
        load_config("SASRecPlus", "ml-100k", config_dict=tiny_config(tmp_path, train_keep_ratio=0.0))


@pytest.mark.parametrize("whole_sequence", [False, True])
def test_popularity_counts_every_training_interaction_once(tmp_path, whole_sequence):
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.data.dataloader import whole_sequence_train_data
    from recbole_diffcl.quick_start import load_config

    _, config = load_config(
        "DiffCLRec", "ml-100k",
        config_dict=tiny_config(tmp_path, aug_source="popularity", whole_sequence_training=whole_sequence),
    )
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    train = whole_sequence_train_data(config, train)
    model = DiffCLRec(config, train._dataset)
    # every interaction except each user's validation and test targets (no user here exceeds 50 items);
    # the built dataset holds one prefix row per interaction but each user's first
    users = dataset.user_num - 1  # minus the padding user
    assert model.item_counts.sum().item() == (dataset.inter_num + users) - 2 * users
    assert model.item_counts[0] == 0 and model.has_item_counts
