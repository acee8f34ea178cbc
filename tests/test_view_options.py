"""DiffCLRec's view options (issue #25): candidate scores, the diffusion's input scale, the views' timestep
range, sampling, exclusions and the views' own next-item loss. Each changes what it says it changes."""
import math

import pytest
import torch

from recbole_diffcl import diffusion
from recbole_diffcl.model.diffclrec import DiffCLRec
from tests.conftest import make_batch, make_model

SMALL = dict(hidden_size=16, inner_size=32, denoiser_inner_size=32, diffusion_steps=100, mask_ratio=0.5)


def views_of(model, batch):
    """(item_seq, chosen, replacements N x 2, candidate ids N x k) of one training step's view-making."""
    item_seq_len = batch["item_length"]
    item_seq = model.trim(batch["item_id_list"], item_seq_len)
    real = item_seq != 0
    chosen = diffusion.choose_positions(item_seq, model.mask_ratio)
    x0, x0_pred, logits, top = model.run_denoiser(item_seq, item_seq_len, real, chosen)
    sampled, candidates = model.view_replacements(item_seq, item_seq_len, chosen, real, x0, x0_pred, logits, top)
    return item_seq, chosen, sampled, candidates[1]


def test_defaults_are_the_papers_views():
    model = make_model(DiffCLRec, cl_pair="two_views", **SMALL)  # (our default pairs one view with the original)
    assert (model.aug_candidate_scores, model.diffusion_input_scale, model.aug_sampling, model.aug_exclude) == (
        "dot", "none", "topk_uniform", "none")
    assert model.aug_timesteps == (0, 100) and model.views_use_training_pass and model.aug_rec_weight == 0
    assert torch.equal(model.diffusion_table(), model.item_embedding.weight)
    # the views draw from the training pass's own top-k: exactly the draws of the paper's sampler
    batch = make_batch(seed=1)
    torch.manual_seed(3)
    item_seq, chosen, sampled, candidates = views_of(model, batch)
    torch.manual_seed(3)
    item_seq_len = batch["item_length"]
    real = item_seq != 0
    chosen2 = diffusion.choose_positions(item_seq, model.mask_ratio)
    _, _, logits = model.denoise(item_seq, item_seq_len, real, chosen2)
    expected = diffusion.sample_topk(logits, model.aug_topk)
    assert torch.equal(chosen, chosen2) and torch.equal(sampled, expected)


@pytest.mark.parametrize("scale", ["unit", "std"])
def test_input_scale_gives_x0_the_noise_scale(scale):
    model = make_model(DiffCLRec, diffusion_input_scale=scale, **SMALL)
    table = model.diffusion_table()[1 : model.n_items]
    raw_spread = model.item_embedding.weight[1:].std().item()
    assert raw_spread < 0.05  # initialised at std 0.02: far below the noise of any timestep
    if scale == "unit":
        assert torch.allclose(table.norm(dim=-1), torch.full((table.size(0),), math.sqrt(16)), atol=1e-4)
    assert 0.8 < table.std().item() < 1.2
    # the gradient of the diffusion losses still reaches the shared table
    parts = model.calculate_loss(make_batch())
    parts[model.loss_names.index("nll")].backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_debiased_scores_push_candidates_to_rare_items():
    counts = torch.arange(60, dtype=torch.float32) ** 3  # item i's count grows with i
    plain = make_model(DiffCLRec, aug_candidate_scores="dot", **SMALL)
    debiased = make_model(DiffCLRec, aug_candidate_scores="debiased", aug_popularity_penalty=100.0, **SMALL)
    debiased.load_state_dict(plain.state_dict())
    for model in (plain, debiased):
        model.set_item_counts(counts)
        model.eval()
    torch.manual_seed(0)
    _, _, _, top_plain = views_of(plain, make_batch())
    torch.manual_seed(0)
    _, _, _, top_debiased = views_of(debiased, make_batch())
    assert top_debiased.float().mean() < 8 < top_plain.float().mean()  # ids 1..10 are the rarest


def test_cos_scores_ignore_item_norms():
    model = make_model(DiffCLRec, aug_candidate_scores="cos", **SMALL)
    x0_pred = torch.randn(5, 16)
    before = model.candidate_scores(x0_pred)
    with torch.no_grad():
        model.item_embedding.weight[7] *= 50  # a huge norm makes item 7 win every dot product
    assert torch.allclose(model.candidate_scores(x0_pred), before, atol=1e-5)
    assert (model.candidate_scores(x0_pred) <= 1 + 1e-5).all()


@pytest.mark.parametrize("exclude", ["original", "history"])
def test_exclusions(exclude):
    model = make_model(DiffCLRec, aug_exclude=exclude, aug_topk=3, n_items=20, **SMALL)
    batch = make_batch(n_items=20, seed=4)
    for _ in range(5):
        item_seq, chosen, sampled, candidates = views_of(model, batch)
        rows = chosen.nonzero(as_tuple=True)[0]
        original = item_seq[chosen]
        assert not (sampled == original[:, None]).any() and not (candidates == original[:, None]).any()
        if exclude == "history":
            in_row = (candidates[:, :, None] == item_seq[rows][:, None, :]).any(-1)
            assert not in_row.any()


def test_narrow_timestep_range_makes_views_from_a_pass_of_their_own():
    model = make_model(DiffCLRec, aug_timestep_range=[0.0, 0.05], **SMALL)
    assert model.aug_timesteps == (0, 5) and not model.views_use_training_pass
    seen = []
    denoiser_forward = model.denoiser.forward
    model.denoiser.forward = lambda x_t, t, real, **kw: seen.append(t.clone()) or denoiser_forward(x_t, t, real, **kw)
    views_of(model, make_batch(seed=2))
    assert len(seen) == 2  # the training pass (t over all steps), then the views' pass
    assert seen[1].max() < 5 and seen[0].max() >= 5


def test_softmax_sampling_follows_the_temperature():
    model = make_model(DiffCLRec, aug_sampling="softmax", aug_temperature=1e-4, aug_candidate_scores="cos",
                       cl_pair="two_views", **SMALL)
    item_seq, chosen, sampled, candidates = views_of(model, make_batch(seed=5))
    assert torch.equal(sampled[:, 0], candidates[:, 0]) and torch.equal(sampled[:, 1], candidates[:, 0])
    model.aug_temperature = 1e4  # nearly uniform over the top-k
    torch.manual_seed(0)
    _, _, sampled, candidates = views_of(model, make_batch(seed=5))
    assert (sampled[:, 0] != candidates[:, 0]).float().mean() > 0.5


def test_view_rec_loss_trains_on_the_views_with_the_original_targets():
    model = make_model(DiffCLRec, cl_weight=0.0, aug_rec_weight=1.0, **SMALL)
    batch = make_batch()
    torch.manual_seed(0)
    parts = dict(zip(model.loss_names, model.calculate_loss(batch)))
    assert parts["cl"] == 0 and parts["view_rec"] > 0  # views are made for their next-item loss alone
    parts["view_rec"].backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0 and model.trm_encoder.layer[0].feed_forward.dense_1.weight.grad is not None
    # a view identical to the original gives the original's loss: the targets are the original's
    item_seq_len = batch["item_length"]
    item_seq = model.trim(batch["item_id_list"], item_seq_len)
    model.eval()
    same = model.view_rec_loss([item_seq, item_seq], item_seq, item_seq_len, batch)
    assert torch.allclose(same, model.next_item_loss(item_seq, item_seq_len, batch))
    model.train()
    model.current_epoch, model.cl_warmup_epochs = 0, 1  # warm-up: no views at all
    assert dict(zip(model.loss_names, model.calculate_loss(batch)))["view_rec"] == 0


def test_view_and_original_contrasts_one_view_with_the_recommenders_own_output(monkeypatch):
    """``cl_pair: view_and_original``: one view per row is made and encoded, and the InfoNCE is that of the
    original sequence's last-position output (from the recommender's pass) against the view's."""
    no_dropout = dict(hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    model = make_model(DiffCLRec, cl_pair="view_and_original", cl_weight=1.0, **no_dropout, **SMALL)
    model.train()
    made, encoded = [], []
    make_views, encode_views = diffusion.make_views, model.encode_views
    monkeypatch.setattr(diffusion, "make_views", lambda *a: made.append(make_views(*a)) or made[-1])
    monkeypatch.setattr(model, "encode_views", lambda views, *a: encoded.append(len(views)) or encode_views(views, *a))
    batch = make_batch(seed=4)
    cl_loss = model.calculate_loss(batch)[model.loss_names.index("cl")]
    assert len(made) == 1 and len(made[0]) == 1 and encoded == [1]  # one view, one encoder pass of B rows
    (view,) = made[0]
    item_seq_len = batch["item_length"]
    item_seq = model.trim(batch["item_id_list"], item_seq_len)
    assert (view != item_seq).any() and ((view != item_seq) <= (item_seq != 0)).all()  # a real view
    with torch.no_grad():
        expected = model.contrastive_loss(model.forward(item_seq, item_seq_len), model.forward(view, item_seq_len))
    assert torch.allclose(cl_loss, expected, atol=1e-5)
    # the pair's gradient reaches the recommender's pass through the original's output (not only the view's)
    cl_loss.backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0  # the views use a detached table (the default)


def test_view_and_original_statistics_compare_the_view_with_the_original():
    model = make_model(DiffCLRec, cl_pair="view_and_original", **SMALL)
    model.pop_statistics()
    model.calculate_loss(make_batch(seed=5))
    stats = model.pop_statistics()
    # the pair differs exactly where the replacement is not the replaced item
    assert 0 < stats["chosen_views_differ"] <= 1
    assert math.isclose(stats["chosen_views_differ"], 1 - stats["repl_is_original"], abs_tol=1e-6)


def test_view_and_original_refuses_every_position():
    from recbole_diffcl.errors import UserError

    with pytest.raises(UserError, match="cl_positions: last"):
        make_model(DiffCLRec, cl_pair="view_and_original", cl_positions="every", **SMALL)


def test_view_diagnostics_follow_the_pair():
    """``recbole_diffcl.views`` makes one step's views as training does: one view and cl_acc from its pair."""
    from recbole_diffcl.views import sample_views

    model = make_model(DiffCLRec, cl_pair="view_and_original", **SMALL)
    model.eval()
    batch = make_batch(seed=6)
    model.pop_statistics()
    out = sample_views(model, batch["item_id_list"], batch["item_length"])
    stats = model.pop_statistics()
    assert len(out["views"]) == 1 and out["sampled"].size(-1) == 1 and 0 <= stats["cl_acc"] <= 1
