"""Issue 16: per-epoch view statistics, each checked on a constructed batch, and their way to log/tensorboard."""
from __future__ import annotations

import glob

import pytest
import torch
import torch.nn as nn

from recbole_diffcl.model.cl4srec import CL4SRec
from recbole_diffcl.model.contrastive import info_nce
from recbole_diffcl.model.diffclrec import DiffCLRec
from tests.conftest import make_batch, make_model, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS = 60
# sync_free_steps: the denoiser sees the whole batch (the oracles below answer for the batch's rows by position)
SMALL = dict(hidden_size=64, inner_size=32, denoiser_inner_size=32, diffusion_steps=100, length_sorted_passes=1,
             pack_sequences=False, sync_free_steps=True)  # the test denoisers below take the batch's own rows


class OracleDenoiser(nn.Module):
    """Predicts x0 exactly: the clean embeddings of the batch's items (whatever the noise)."""

    def __init__(self, model: DiffCLRec, item_seq: torch.Tensor):
        super().__init__()
        self.model, self.item_seq = [model], item_seq  # a list: not registered as a submodule

    def forward(self, x_t, t, real, at=None):
        prediction = self.model[0].item_embedding(self.item_seq[:, : x_t.size(1)])
        return prediction if at is None else prediction[at]


class ConstantDenoiser(nn.Module):
    def __init__(self, prediction: torch.Tensor):
        super().__init__()
        self.prediction = prediction

    def forward(self, x_t, t, real, at=None):
        prediction = torch.zeros_like(x_t) + self.prediction
        return prediction if at is None else prediction[at]


def oracle_model(**props) -> tuple[DiffCLRec, dict]:
    torch.manual_seed(0)
    model = make_model(DiffCLRec, n_items=N_ITEMS, mask_ratio=0.5, cl_weight=0.1, **SMALL, **props).eval()
    with torch.no_grad():  # one-hot item embeddings: an item's own embedding scores it highest, alone
        model.item_embedding.weight.copy_(torch.eye(N_ITEMS, 64))
        model.item_embedding.weight[0] = 0
    batch = make_batch(batch=16, n_items=N_ITEMS)
    model.denoiser = OracleDenoiser(model, batch["item_id_list"])
    return model, batch


def test_a_denoiser_that_returns_the_originals_reconstructs_everything_and_topk_1_gives_identical_views():
    model, batch = oracle_model(aug_topk=1)
    counts = torch.arange(N_ITEMS, dtype=torch.float32)
    model.set_item_counts(counts)
    model.pop_statistics()
    model.calculate_loss(batch)
    stats = model.pop_statistics()
    assert stats["recon_top1"] == 1.0 and stats["recon_topk"] == 1.0
    assert stats["repl_is_original"] == 1.0  # top-1 is the original item itself
    assert stats["chosen_views_differ"] == 0.0 and stats["views_differ"] == 0.0
    assert stats["pop_pct_replacement"] == pytest.approx(stats["pop_pct_original"])
    assert stats["cl_acc"] == 1.0  # identical views (dropout off): each view's twin is its best match
    assert model.pop_statistics() == {}  # read once, then a fresh start


def test_topk_views_differ_and_replace_where_the_candidates_allow():
    model, batch = oracle_model(aug_topk=5)
    model.calculate_loss(batch)
    stats = model.pop_statistics()
    assert stats["recon_top1"] == 1.0 and stats["recon_topk"] == 1.0
    # each view draws uniformly from 5 candidates, one of which is the original: ~1/5 originals, ~4/5 differ
    assert 0.05 < stats["repl_is_original"] < 0.4
    assert 0.6 < stats["chosen_views_differ"] < 0.95
    real = (batch["item_id_list"] != 0).sum().item()
    assert stats["views_differ"] < stats["chosen_views_differ"]  # only chosen positions can differ
    assert 0 < stats["views_differ"] * real <= real


def test_a_denoiser_that_knows_nothing_reconstructs_nothing():
    model, batch = oracle_model(aug_topk=3)
    model.denoiser = ConstantDenoiser(model.item_embedding.weight[N_ITEMS - 1].detach())  # always "item 59"
    model.calculate_loss(batch)
    stats = model.pop_statistics()
    assert stats["recon_top1"] <= 0.1 and stats["recon_topk"] <= 0.2  # right only where the original is 59


def test_random_replacements_are_about_half_as_popular_as_the_items_they_replace():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, n_items=N_ITEMS, aug_source="random", nll_weight=0.0, mask_ratio=0.5, **SMALL)
    batch = make_batch(batch=64, n_items=20)  # items 1..19 of the 59
    counts = torch.zeros(N_ITEMS)
    counts[1:] = 1.0
    counts[batch["item_id_list"].unique()[1:]] = 100.0  # the batch's items are the popular ones
    model.set_item_counts(counts)
    model.calculate_loss(batch)
    stats = model.pop_statistics()
    assert "recon_top1" not in stats  # the denoiser never ran
    assert stats["pop_pct_original"] > 0.6 and abs(stats["pop_pct_replacement"] - 0.5) < 0.15


def test_info_nce_hits_are_the_twin_ranked_first():
    z = torch.eye(6, 8)
    _, hits = info_nce(z, z.clone(), similarity="cos", return_hits=True)
    assert hits.tolist() == [True] * 12
    _, hits = info_nce(z, z.roll(1, dims=0), similarity="cos", return_hits=True)
    assert hits.tolist() == [False] * 12
    assert torch.equal(info_nce(z, z.clone()), info_nce(z, z.clone(), return_hits=True)[0])


def test_statistics_are_weighted_by_their_counts_over_the_epoch():
    model = make_model(DiffCLRec, **SMALL)
    model.record_statistic("x", torch.tensor([1.0, 0.0]))
    model.record_statistic("x", torch.tensor([1.0, 1.0, 1.0]))
    model.record_statistic("y", torch.tensor([True, True]), torch.tensor(8))
    model.record_statistic("never", torch.tensor([]), 0)
    assert model.pop_statistics() == pytest.approx({"x": 0.8, "y": 0.25})


def test_cl4srec_views_differ_counts_positions_real_in_either_view():
    model = make_model(CL4SRec, hidden_size=16, inner_size=32)
    v1 = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    v2 = torch.tensor([[1, 9, 3, 7], [4, 5, 0, 0]])
    model.record_view_difference(v1, v2)
    assert model.pop_statistics() == pytest.approx({"views_differ": 2 / 6})
    model.calculate_loss(make_batch())
    stats = model.pop_statistics()
    assert set(stats) == {"views_differ", "cl_acc"} and 0 < stats["views_differ"] <= 1


def test_statistics_reach_the_log_tensorboard_and_the_result(tmp_path, tiny_run_dict, monkeypatch, caplog):
    import logging

    from recbole_diffcl.quick_start import run

    caplog.set_level(logging.INFO)  # (in-process, RecBole's file log stays empty under pytest's capture)

    monkeypatch.chdir(tmp_path)  # RecBole writes log/ and log_tensorboard/ into the working directory
    result = run("DiffCLRec", "ml-100k", config_dict=tiny_run_dict)
    stats = result["view_statistics"]
    assert [s["epoch"] for s in stats] == [0, 1]
    for name in ("cl_acc", "recon_top1", "recon_topk", "repl_is_original", "views_differ", "pop_pct_original"):
        assert 0.0 <= stats[-1][name] <= 1.0, name
    views = [r.getMessage() for r in caplog.records if "epoch 1 views" in r.getMessage()]
    assert len(views) == 1 and "recon_top1" in views[0]
    events = glob.glob("log_tensorboard/**/events.*", recursive=True)
    assert any(b"Views/recon_top1" in open(f, "rb").read() for f in events)
