"""DiffCLRec as a model, without a RecBole dataset: losses, gradients, detaching, trimming."""
import pytest
import torch

from recbole_diffcl.model.diffclrec import DiffCLRec
from tests.conftest import make_batch, make_model

SMALL = dict(hidden_size=16, inner_size=32, denoiser_inner_size=32, diffusion_steps=100)


def test_all_loss_parts_finite_and_named():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, mse_weight=0.5, mask_ratio=0.3, aug_rec_weight=0.5, **SMALL)
    parts = model.calculate_loss(make_batch())
    assert len(parts) == len(model.loss_names) == 5
    for name, part in zip(model.loss_names, parts):
        assert part.dim() == 0 and torch.isfinite(part), name
        assert part.item() > 0, f"{name} should be active with these weights"


def test_gradients_reach_encoder_and_denoiser():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, mask_ratio=0.3, **SMALL)
    sum(model.calculate_loss(make_batch())).backward()
    for prefix in ("trm_encoder.", "denoiser.encoder.", "denoiser.time_mlp.", "item_embedding."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads), prefix
        assert any(g.abs().sum() > 0 for g in grads), prefix


@pytest.mark.parametrize("detach", [True, False])
def test_cl_loss_moves_item_table_only_when_not_detached(detach):
    torch.manual_seed(0)
    # two views: with our default view_and_original the original's side always reaches the table
    model = make_model(DiffCLRec, mask_ratio=0.5, cl_detach_view_embeddings=detach, cl_pair="two_views", **SMALL)
    cl = model.calculate_loss(make_batch())[model.loss_names.index("cl")]
    assert cl.item() > 0
    cl.backward()
    grad = model.item_embedding.weight.grad
    table_moved = grad is not None and grad.abs().sum().item() > 0
    assert table_moved is (not detach)
    # the encoder is trained by the contrastive loss either way
    assert model.trm_encoder.layer[0].feed_forward.dense_1.weight.grad.abs().sum() > 0


def test_warmup_turns_cl_off():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, cl_warmup_epochs=2, mask_ratio=0.5, **SMALL)
    model.current_epoch = 1
    assert model.calculate_loss(make_batch())[1].item() == 0
    model.current_epoch = 2
    assert model.calculate_loss(make_batch())[1].item() > 0


def _loss_and_scores(trim: bool, **props):
    torch.manual_seed(0)
    model = make_model(DiffCLRec, trim_batches=trim, mask_ratio=0.4, mse_weight=0.3, **SMALL, **props).eval()
    batch = make_batch(batch=16, max_len=50, longest=20)
    torch.manual_seed(123)
    parts = model.calculate_loss(batch)
    return torch.stack(list(parts)), model.full_sort_predict(batch), model.predict({**batch, "item_id": batch["item_id"]})


@pytest.mark.parametrize("sampler", ["one_step", "reverse"])
def test_trimmed_and_untrimmed_batches_give_the_same_outputs(sampler):
    # eval() switches dropout off; every other random draw is per real/chosen position, so the
    # padded (50 columns) and trimmed (20 columns) computations must agree to float precision.
    loss_t, full_t, pred_t = _loss_and_scores(True, aug_sampler=sampler)
    loss_u, full_u, pred_u = _loss_and_scores(False, aug_sampler=sampler)
    torch.testing.assert_close(loss_t, loss_u, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full_t, full_u, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred_t, pred_u, atol=1e-5, rtol=1e-5)


def test_inference_is_sasrec_scoring_without_the_denoiser():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, **SMALL).eval()
    batch = make_batch()
    before = model.full_sort_predict(batch)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(1.0)
    assert torch.equal(model.full_sort_predict(batch), before)
    assert before.shape == (8, model.n_items)


def test_bpr_loss_type_uses_negatives():
    torch.manual_seed(0)
    model = make_model(DiffCLRec, loss_type="BPR", whole_sequence_training=False, **SMALL)
    batch = make_batch()
    batch["neg_item_id"] = torch.randint(1, 60, (8,))
    assert torch.isfinite(sum(model.calculate_loss(batch)))
