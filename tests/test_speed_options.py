"""Speed options leave what the models compute unchanged: length-sorted passes (bucketing: test_dataloader)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from recbole_diffcl.model.cl4srec import CL4SRec
from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender
from recbole_diffcl.model.diffclrec import DiffCLRec
from tests.conftest import ROOT, make_batch, make_model

SMALL = dict(hidden_size=16, inner_size=32, n_layers=2, n_heads=2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_passes(model_class, passes: int, **props):
    torch.manual_seed(0)  # same initial weights for every value of ``passes``
    return make_model(model_class, length_sorted_passes=passes, pack_sequences=False, **SMALL, **props)


def _count_encoder_calls(model: ContrastiveSequentialRecommender) -> list[int]:
    """The widths of the encoder's passes (all positions, or the last position only)."""
    widths: list[int] = []
    all_positions, last_position = model.encode_positions, model.encode_last_position

    def counting_all(item_seq, item_weight=None):
        widths.append(item_seq.size(1))
        return all_positions(item_seq, item_weight)

    def counting_last(item_seq, item_seq_len, item_weight=None):
        widths.append(item_seq.size(1))
        return last_position(item_seq, item_seq_len, item_weight)

    model.encode_positions, model.encode_last_position = counting_all, counting_last
    return widths


@pytest.mark.parametrize("model_class", [DiffCLRec, CL4SRec])
def test_length_sorted_passes_give_the_same_representations_and_gradients(model_class):
    batch = make_batch(batch=32, max_len=50, shortest=1, longest=50, seed=3)
    outputs, grads = [], []
    for passes in (1, 4):
        model = _with_passes(model_class, passes).eval()  # eval: no dropout, so both runs are deterministic
        widths = _count_encoder_calls(model)
        h = model.forward(batch["item_id_list"], batch["item_length"])
        (h.square().sum() + model.full_sort_predict(batch)[:, 1].sum()).backward()
        outputs.append(h.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        # one pass over the whole batch, or four passes each as wide as its own longest row
        assert len(widths) == (2 if passes == 1 else 8)
        assert (max(widths) == int(batch["item_length"].max())) and (passes == 1 or min(widths) < max(widths))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_class", [DiffCLRec, CL4SRec])
def test_length_sorted_passes_give_the_same_training_losses(model_class):
    batch = make_batch(batch=24, max_len=50, shortest=1, longest=50, seed=4)
    losses = []
    for passes in (1, 3):
        model = _with_passes(model_class, passes, **({"mask_ratio": 0.4} if model_class is DiffCLRec else {})).eval()
        torch.manual_seed(7)  # the same augmentation draws in both runs
        losses.append(torch.stack(list(model.calculate_loss(batch))))
    assert losses[0][1] > 0, "the contrastive loss must be part of the comparison"
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


def test_one_pass_when_rows_have_similar_lengths():
    # a length-bucketed batch: splitting would save nothing, so the batch is encoded once
    batch = make_batch(batch=32, max_len=50, shortest=9, longest=10)
    model = _with_passes(DiffCLRec, 4).eval()
    widths = _count_encoder_calls(model)
    model.forward(batch["item_id_list"], batch["item_length"])
    assert widths == [10]


def test_no_split_without_trimming():
    batch = make_batch(batch=32, max_len=50, shortest=1, longest=30)
    model = _with_passes(DiffCLRec, 4, trim_batches=False).eval()
    widths = _count_encoder_calls(model)
    model.forward(batch["item_id_list"], batch["item_length"])
    assert widths == [50]


@pytest.mark.parametrize("loss_type", ["CE", "BCE"])
@pytest.mark.parametrize("model_name", ["SASRecPlus", "DiffCLRec"])
def test_sync_free_losses_equal_the_compacted_ones(model_name, loss_type, monkeypatch):
    from recbole_diffcl.model import DiffCLRec, SASRecPlus, contrastive

    # BCE: the two paths draw their negatives in different shapes; a negative that is a function of the
    # target makes them comparable (the sampler itself is tested in test_strong_regime.py)
    monkeypatch.setattr(contrastive, "sample_negatives", lambda targets, n, row_items=None: targets % (n - 1) + 1)

    model_class = {"SASRecPlus": SASRecPlus, "DiffCLRec": DiffCLRec}[model_name]
    batch = make_batch(batch=10, shortest=2, longest=14, seed=4)
    torch.manual_seed(0)
    model = make_model(model_class, loss_type=loss_type, **SMALL).eval()
    outputs = model.encode_all_positions(batch["item_id_list"], batch["item_length"])
    losses = []
    for sync_free in (False, True):
        model.sync_free = sync_free
        torch.manual_seed(3)  # the same BCE negatives, drawn in the same order
        losses.append(model.every_position_loss(outputs, batch["item_id_list"], batch["item_length"], batch))
    torch.testing.assert_close(losses[1], losses[0])


def test_trim_and_sync_free_resolve_per_device():
    from recbole_diffcl.model import SASRecPlus

    cpu = make_model(SASRecPlus, trim_batches="auto", sync_free_steps="auto", **SMALL)
    assert cpu.trim_batches is True and cpu.sync_free is False
    gpu = make_model(SASRecPlus, trim_batches="auto", sync_free_steps="auto", device=torch.device("cuda"), **SMALL)
    assert gpu.trim_batches is False and gpu.sync_free is True
    assert make_model(SASRecPlus, **SMALL).sync_free is False  # the default: off until measured on a GPU


@pytest.mark.parametrize("passes,packed", [(1, False), (3, False), (1, True)])
def test_last_position_encoding_equals_the_full_encoder_at_the_last_position(passes, packed):
    from recbole_diffcl.model import SASRecPlus

    torch.manual_seed(0)
    model = make_model(SASRecPlus, length_sorted_passes=passes, pack_sequences=packed, **SMALL).eval()
    batch = make_batch(batch=12, shortest=1, longest=30, seed=2)
    full = model.encode_all_positions(batch["item_id_list"], batch["item_length"])
    expected = model.gather_indexes(full, batch["item_length"] - 1)
    torch.testing.assert_close(model.forward(batch["item_id_list"], batch["item_length"]), expected)


@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_fused_cross_entropy_equals_torchs(ignore_index):
    from recbole_diffcl.model.losses import CHUNK_ROWS, linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(2 * CHUNK_ROWS + 37, 16, requires_grad=True)  # three chunks, the last one short
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (h.size(0),))  # target 0 is ignored in the second case
    plain = linear_cross_entropy(h, weight, targets, fused=False, ignore_index=ignore_index)
    fused = linear_cross_entropy(h, weight, targets, fused=True, ignore_index=ignore_index)
    torch.testing.assert_close(fused, plain)
    for a, b in zip(torch.autograd.grad(fused, (h, weight)), torch.autograd.grad(plain, (h, weight))):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # evaluation-style calls take torch's path
        torch.testing.assert_close(linear_cross_entropy(h, weight, targets, fused=True, ignore_index=ignore_index), plain)


@pytest.mark.parametrize("sync_free", [False, True])
def test_models_train_the_same_with_fused_cross_entropy(sync_free):
    from recbole_diffcl.model.sasrecplus import SASRecPlus

    grads = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = make_model(SASRecPlus, fused_cross_entropy=fused, sync_free_steps=sync_free, **SMALL)
        assert model.fused_cross_entropy is fused
        model.eval()  # no dropout: the same numbers in both
        loss = model.calculate_loss(make_batch(batch=16, seed=3))
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)
    assert make_model(SASRecPlus, **SMALL).fused_cross_entropy is True  # auto: on for a CPU


def test_sampled_softmax_estimates_the_full_softmax():
    from recbole_diffcl.model.losses import linear_cross_entropy, sampled_softmax_loss

    torch.manual_seed(0)
    h, weight = torch.randn(64, 8), torch.randn(40, 8)
    targets = torch.randint(1, 40, (64,))
    full = linear_cross_entropy(h, weight, targets)
    # many uniform draws with the logQ correction: the sampled sum approaches the full one
    estimate = sampled_softmax_loss(h, weight, targets, 200_000)
    assert abs(estimate.item() - full.item()) < 0.05 * full.item()
    counts = torch.arange(40, dtype=torch.float32)
    counts[0] = 0
    by_popularity = sampled_softmax_loss(h, weight, targets, 200_000, counts / counts.sum())
    assert abs(by_popularity.item() - full.item()) < 0.05 * full.item()
    # an accidental hit (a negative equal to the target) is masked: one negative, always the target
    only_target = sampled_softmax_loss(h[:1], weight, targets[:1], 3, torch.nn.functional.one_hot(targets[:1], 40)[0].float())
    assert only_target.item() == pytest.approx(0.0, abs=1e-6)
    # ignored rows give nothing
    ignored = targets.clone()
    ignored[::2] = 0
    half = sampled_softmax_loss(h, weight, ignored, 50, ignore_index=0)
    assert torch.isfinite(half)


def test_models_train_with_sampled_softmax():
    from recbole_diffcl.model.sasrecplus import SASRecPlus

    torch.manual_seed(0)
    model = make_model(SASRecPlus, loss_type="SSM", ssm_negatives=16, **SMALL)
    loss = model.calculate_loss(make_batch(batch=16, seed=3))
    loss.backward()
    assert torch.isfinite(loss) and model.item_embedding.weight.grad.abs().sum() > 0
    torch.manual_seed(0)
    diff = make_model(DiffCLRec, loss_type="SSM", ssm_negatives=16, mask_ratio=0.5, **SMALL)
    assert all(torch.isfinite(p) for p in diff.calculate_loss(make_batch(batch=16, seed=3)))


def test_denoiser_skips_rows_without_chosen_positions(monkeypatch):
    """Denoising only the rows with a chosen position gives the same x0, x0 prediction and logits there
    (noise switched off, so that both runs see the same inputs; dropout off)."""
    from recbole_diffcl import diffusion

    monkeypatch.setattr(diffusion, "_randn", lambda n, dim, like, generator: like.new_zeros(n, dim))
    batch = make_batch(batch=12, seed=7, shortest=2, longest=6)
    item_seq = batch["item_id_list"][:, :6]
    real = item_seq != 0
    chosen = torch.zeros_like(real)
    chosen[0, 1] = chosen[3, 0] = chosen[3, 1] = chosen[7, 1] = True  # rows 0, 3 and 7 only
    t = torch.arange(12) * 7
    results = []
    for sync_free in (True, False):  # True: the whole batch, every position; False: the rows with a chosen position
        torch.manual_seed(0)
        model = make_model(DiffCLRec, sync_free_steps=sync_free, pack_sequences=False, **SMALL).eval()
        rows = []
        denoiser_forward = model.denoiser.forward
        model.denoiser.forward = lambda x_t, t_, r, **kw: rows.append(x_t.size(0)) or denoiser_forward(x_t, t_, r, **kw)
        with torch.no_grad():
            x0, x0_pred, logits = model.denoise(item_seq, batch["item_length"], real, chosen, t)
        results.append((x0, x0_pred, logits, sum(rows)))
    (x0_a, pred_a, logits_a, rows_a), (x0_b, pred_b, logits_b, rows_b) = results
    assert rows_a == 12 and rows_b == 3
    assert pred_a.shape == (12, 6, SMALL["hidden_size"]) and logits_a.shape[:2] == (12, 6)  # every position
    torch.testing.assert_close(x0_b[chosen], x0_a[chosen])
    torch.testing.assert_close(pred_b, pred_a[chosen])
    torch.testing.assert_close(logits_b, logits_a[chosen])


@pytest.mark.parametrize("position,context", [
    ("relative", "both"), ("absolute", "left"), ("none", "none"), ("disentangled", "both"), ("relative", "left"),
])
def test_denoiser_at_chosen_positions_equals_the_full_output(position, context):
    """The denoiser's last layer run only at the chosen positions gives the full pass's outputs there."""
    from recbole_diffcl import diffusion

    torch.manual_seed(0)
    denoiser = diffusion.Denoiser(16, 8, n_layers=2, n_heads=2, inner_size=32, position=position,
                                  context=context).eval()
    if position == "relative":  # a non-zero bias per distance, so that its indexing is checked too
        torch.nn.init.normal_(denoiser.relative_bias.weight)
    lengths = torch.tensor([8, 3, 5, 1, 6])
    real = torch.arange(8)[None, :] < lengths[:, None]
    x_t, t = torch.randn(5, 8, 16), torch.tensor([0, 10, 200, 999, 5])
    chosen = real & (torch.rand(5, 8) < 0.4)
    chosen[0, 0] = chosen[0, 7] = chosen[3, 0] = True  # several in one row; a row of length 1
    chosen[4] = False  # and a row with none
    with torch.no_grad():
        torch.testing.assert_close(denoiser(x_t, t, real, at=chosen), denoiser(x_t, t, real)[chosen])
        nothing = denoiser(x_t, t, real, at=torch.zeros_like(chosen))  # e.g. a sub-batch without a chosen position
        assert nothing.shape == (0, 16)


def test_diffclrec_denoises_chosen_positions_in_length_sorted_passes():
    """DiffCLRec's x0 prediction at the chosen positions, by sub-batches of similar length with the last
    layer at those positions only, equals the full pass indexed by the chosen mask (row-major order)."""
    batch = make_batch(batch=40, seed=11, shortest=1, longest=12)
    item_seq, lengths = batch["item_id_list"][:, :12], batch["item_length"]
    real = item_seq != 0
    torch.manual_seed(1)
    chosen = real & (torch.rand(real.shape) < 0.3)
    torch.manual_seed(0)
    model = make_model(DiffCLRec, length_sorted_passes=4, **SMALL).eval()
    assert model.length_sorted_plan(lengths) is not None  # the sub-batch path is the one tested
    x_t, t = torch.randn(*item_seq.shape, model.hidden_size), torch.randint(0, 1000, (40,))
    chosen[lengths <= 4] = False  # the sub-batches of the shortest rows have no chosen position
    with torch.no_grad():
        full = model.map_length_sorted(model.denoiser, lengths, x_t, t, real)[chosen]
        torch.testing.assert_close(model.denoise_chosen(x_t, t, real, chosen, lengths), full)


def test_fused_optimizer_makes_the_same_update(tmp_path):
    from recbole_diffcl.model.sasrecplus import SASRecPlus
    from recbole_diffcl.quick_start import load_config
    from recbole_diffcl.trainer import get_trainer
    from tests.conftest import tiny_config

    weights = []
    for fused in (False, True):
        _, config = load_config("SASRecPlus", "ml-100k", config_dict={**tiny_config(tmp_path), "fused_optimizer": fused})
        torch.manual_seed(0)
        model = make_model(SASRecPlus, **SMALL)
        trainer = get_trainer(config["MODEL_TYPE"], "SASRecPlus", SASRecPlus)(config, model)
        assert all(bool(group["fused"]) is fused for group in trainer.optimizer.param_groups)  # what step() reads
        for seed in range(3):
            trainer.optimizer.zero_grad()
            model.eval()
            model.calculate_loss(make_batch(batch=16, seed=seed)).backward()
            trainer.optimizer.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b)


def test_best_fit_decreasing_places_every_sequence_once_within_its_row():
    import random

    from recbole_diffcl.model.packing import best_fit_decreasing

    rng = random.Random(0)
    for _ in range(50):
        capacity = rng.randint(1, 50)
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(1, 300))]
        row, start, n_rows = best_fit_decreasing(lengths, capacity)
        slots = {}
        for i, n in enumerate(lengths):
            assert 0 <= start[i] and start[i] + n <= capacity and 0 <= row[i] < n_rows
            for slot in range(start[i], start[i] + n):
                assert slots.setdefault((row[i], slot), i) == i  # no slot holds two sequences
        # no row could take another row's contents whole: fewer rows than twice the lower bound
        assert sum(lengths) / capacity <= n_rows < 2 * sum(lengths) / capacity + 1


@pytest.mark.parametrize("model_class", [DiffCLRec, CL4SRec])
def test_packed_sequences_give_the_same_outputs_and_gradients(model_class):
    """Packed rows against length-sorted passes: the same last-position and every-position outputs (dropout
    off) and the same gradients, lengths 1 to 50."""
    batch = make_batch(batch=40, max_len=50, shortest=1, longest=50, seed=6)
    results = []
    for packed in (False, True):
        torch.manual_seed(0)
        model = make_model(model_class, pack_sequences=packed, length_sorted_passes=4, **SMALL).eval()
        if packed:
            widths = _count_encoder_calls(model)  # the padded paths are not taken
        last = model.forward(batch["item_id_list"], batch["item_length"])
        every = model.encode_all_positions(batch["item_id_list"], batch["item_length"])
        real = torch.arange(every.size(1))[None, :] < batch["item_length"][:, None]
        (last.square().sum() + every[real].square().sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((last.detach(), every.detach()[real], every.shape, grads))
    assert widths == []
    (last0, every0, shape0, grads0), (last1, every1, shape1, grads1) = results
    assert shape0 == shape1  # the trimmed batch's width
    for a, b in ((last0, last1), (every0, every1), (grads0, grads1)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_packed_sequences_give_the_same_training_losses():
    batch = make_batch(batch=24, max_len=50, shortest=1, longest=50, seed=4)
    losses = []
    for packed in (False, True):
        torch.manual_seed(0)
        model = make_model(DiffCLRec, pack_sequences=packed, mask_ratio=0.4, **SMALL).eval()
        torch.manual_seed(7)  # the same augmentation draws in both runs
        losses.append(torch.stack(list(model.calculate_loss(batch))))
    assert losses[0][1] > 0, "the contrastive loss must be part of the comparison"
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


def test_pack_sequences_resolves_per_device():
    from recbole_diffcl.model import SASRecPlus

    assert make_model(SASRecPlus, **SMALL).pack_sequences is True  # auto: on for a CPU
    assert make_model(SASRecPlus, device=torch.device("cuda"), **SMALL).pack_sequences is False


@pytest.mark.parametrize("denoiser", [
    dict(denoiser_position="relative"), dict(denoiser_position="absolute", denoiser_context="left"),
    dict(denoiser_position="none", denoiser_context="none"),
])
def test_packed_denoiser_equals_the_padded_one_at_the_chosen_positions(denoiser):
    batch = make_batch(batch=40, seed=12, shortest=1, longest=30)
    item_seq, lengths = batch["item_id_list"][:, :30], batch["item_length"]
    real = item_seq != 0
    torch.manual_seed(1)
    chosen = real & (torch.rand(real.shape) < 0.3)
    chosen[lengths <= 3] = False
    x_t, t = torch.randn(*item_seq.shape, SMALL["hidden_size"]), torch.randint(0, 1000, (40,))
    outputs = []
    for packed in (False, True):
        torch.manual_seed(0)
        model = make_model(DiffCLRec, pack_sequences=packed, length_sorted_passes=1, **SMALL, **denoiser).eval()
        if denoiser["denoiser_position"] == "relative":  # a bias that is not zero (it starts at zero)
            torch.nn.init.normal_(model.denoiser.relative_bias.weight)
        with torch.no_grad():
            outputs.append(model.denoise_chosen(x_t, t, real, chosen, lengths))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    assert outputs[0].shape == (int(chosen.sum()), SMALL["hidden_size"])


def _attention(dropout: float = 0.0):
    from recbole.model.layers import MultiHeadAttention

    torch.manual_seed(0)
    return MultiHeadAttention(2, 8, 0.0, dropout, 1e-12)


@pytest.mark.parametrize("heads_in_mask", [1, 2])
def test_attention_at_query_positions_equals_the_full_attention(heads_in_mask):
    """Several queries per row (packed last positions, the denoiser's chosen positions), rows without any,
    queries in any order: the outputs and gradients of the full attention at those positions."""
    from recbole_diffcl.layers import attend_from_positions

    attention = _attention().eval()
    h = torch.randn(4, 6, 8, requires_grad=True)
    mask = torch.randn(4, heads_in_mask, 6, 6)
    rows = torch.tensor([2, 0, 2, 3, 2, 0])  # row 1 has no query, row 2 three
    positions = torch.tensor([5, 1, 0, 3, 2, 4])
    expected = attention(h, mask)[rows, positions]
    got = attend_from_positions(attention, h, mask, rows, positions)
    assert torch.allclose(got, expected, atol=1e-6)
    weights = torch.randn_like(got)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), h)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), h)
    assert torch.allclose(grad_got, grad_expected, atol=1e-6)
    one_per_row = attend_from_positions(attention, h, mask, None, torch.tensor([5, 1, 0, 3]))
    assert torch.allclose(one_per_row, attention(h, mask)[torch.arange(4), torch.tensor([5, 1, 0, 3])], atol=1e-6)
    assert attend_from_positions(attention, h, mask, rows[:0], positions[:0]).shape == (0, 8)


def test_attention_at_query_positions_drops_attention_weights_per_query():
    """In training, each query's attention weights get a dropout mask of their own (the dropout's rate and
    scaling): about p of the weights are zeroed, and two queries of one row are not dropped alike."""
    from recbole_diffcl.layers import attend_from_positions

    attention = _attention(dropout=0.5).train()
    captured = []
    attention.attn_dropout.register_forward_hook(lambda module, args, out: captured.append(out))
    h = torch.randn(3, 40, 8)
    rows = torch.tensor([0, 0, 1, 2, 2, 2])
    attend_from_positions(attention, h, torch.zeros(3, 1, 40, 40), rows, torch.tensor([39, 38, 39, 39, 20, 10]))
    (keep,) = captured  # N x H x L: the scaled keep-mask of the N real queries
    assert keep.shape == (6, 2, 40)
    assert set(keep.unique().tolist()) == {0.0, 2.0}
    assert 0.35 < (keep == 0).float().mean() < 0.65
    assert not torch.equal(keep[0], keep[1])


class HostReads(torch.overrides.TorchFunctionMode):
    """Records the tensor operations of a block that read a value back to the host: on a GPU each makes
    the host wait for the device (item, tolist, bool/int of a tensor, nonzero, boolean-mask indexing)."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
             torch.Tensor.__index__, torch.Tensor.__float__, torch.nonzero, torch.Tensor.nonzero,
             torch.masked_select, torch.Tensor.masked_select, torch.unique, torch.Tensor.unique}
    INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_, torch.Tensor.index_put}

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.reads.append(func.__name__)
        elif func in self.INDEXING:
            index = args[1] if len(args) > 1 else ()
            parts = index if isinstance(index, (tuple, list)) else (index,)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                self.reads.append(f"{func.__name__} with a boolean mask")
        return func(*args, **(kwargs or {}))


SYNC_FREE = dict(sync_free_steps=True, trim_batches=False, pack_sequences=False, length_sorted_passes=1,
                 fused_cross_entropy=False)  # the GPU defaults


@pytest.mark.parametrize("props", [
    {},
    {"nll_reduction": "sequence", "mse_weight": 0.5},
    {"aug_candidate_scores": "debiased", "aug_exclude": "history", "aug_sampling": "softmax"},
    {"diffusion_input_scale": "unit", "aug_timestep_range": [0.0, 0.1], "aug_exclude": "original",
     "aug_candidate_scores": "cos"},
])
def test_sync_free_diffclrec_step_equals_the_compacted_one(props, monkeypatch):
    """``sync_free_steps`` denoises every position and keeps the chosen ones by masks: the same losses,
    gradients and view statistics as the compacted step for the same chosen positions, timesteps and
    noise (noise off, one candidate per position so that both draw the same views, dropout off)."""
    from recbole_diffcl import diffusion

    batch = make_batch(batch=10, shortest=2, longest=9, seed=6)
    chosen = diffusion.choose_positions(batch["item_id_list"], 0.4, torch.Generator().manual_seed(2))
    monkeypatch.setattr(diffusion, "choose_positions", lambda item_seq, ratio, generator=None, dense=False:
                        chosen[:, : item_seq.size(1)])
    monkeypatch.setattr(diffusion, "_randn", lambda n, dim, like, generator: like.new_zeros(n, dim))
    results = []
    for sync_free in (False, True):
        torch.manual_seed(0)
        model = make_model(DiffCLRec, aug_topk=1, cl_weight=0.1, **SMALL, **props,
                           **(SYNC_FREE if sync_free else {"sync_free_steps": False}))
        model.set_item_counts(torch.arange(model.n_items).float())
        model.schedule.sample_timesteps = lambda n, generator=None: torch.full((n,), 3)
        model.eval()
        losses = model.calculate_loss(batch)
        sum(losses).backward()
        results.append((torch.stack([part.detach() for part in losses]),
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                        model.pop_statistics()))
    (losses_a, grads_a, stats_a), (losses_b, grads_b, stats_b) = results
    assert losses_a[1] > 0 and losses_a[2] > 0  # InfoNCE and NLL
    torch.testing.assert_close(losses_b, losses_a)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], msg=name)
    assert stats_b == pytest.approx(stats_a) and "pop_pct_replacement" in stats_a


@pytest.mark.parametrize("props", [{}, {"aug_source": "random"}, {"aug_candidate_scores": "debiased",
                                                                  "aug_exclude": "history", "aug_sampling": "softmax"}])
def test_sync_free_diffclrec_step_reads_nothing_back_to_the_host(props):
    """The whole training loss of DiffCLRec with ``sync_free_steps`` (GPU defaults: no trimming, packing or
    sub-batches) runs without a host read; the compacted step, as the check's own control, has some."""
    batch = make_batch(batch=10, shortest=2, longest=9, seed=6)
    for sync_free in (True, False):
        torch.manual_seed(0)
        model = make_model(DiffCLRec, cl_weight=0.1, mse_weight=0.1, **SMALL, **props,
                           **(SYNC_FREE if sync_free else {"sync_free_steps": False}))
        model.set_item_counts(torch.arange(model.n_items).float())
        with HostReads() as reads:
            losses = model.calculate_loss(batch)
        assert all(torch.isfinite(part) for part in losses)
        assert (reads.reads == []) is sync_free, reads.reads


def test_fast_dropout_keeps_one_minus_p_scaled_with_the_same_gradient():
    from recbole_diffcl.model.dropout import FastDropout

    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    dropout = FastDropout(0.3, on=None)
    y = dropout(x)
    y.sum().backward()
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.003  # ~6.5 standard deviations of the share kept
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    torch.testing.assert_close(x.grad, y.detach())  # d(x * mask / (1 - p)) / dx = mask / (1 - p)
    assert torch.equal(dropout.eval()(x), x)
    # on a device type it does not draw for (here: CPU tensors, cuda only), it is torch's dropout, same draws
    torch.manual_seed(1)
    other = FastDropout(0.3, on=("cuda",))(x)
    torch.manual_seed(1)
    assert torch.equal(other, torch.nn.functional.dropout(x, 0.3, True))


@pytest.mark.parametrize("setting", [True, False, "auto"])
def test_models_draw_dropout_masks_as_fast_dropout_says(setting):
    from recbole_diffcl.model.dropout import FastDropout

    torch.manual_seed(0)
    model = make_model(DiffCLRec, fast_dropout=setting, **SMALL)
    reference = make_model(DiffCLRec, fast_dropout=False, **SMALL)
    fast = [m for m in model.modules() if isinstance(m, FastDropout)]
    torch_dropout = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    # every dropout of the model, RecBole's encoder layers and the denoiser included, and with their own p
    assert len(fast) + len(torch_dropout) == 14 and (len(fast) == 14) is (setting is not False)
    assert sorted(m.p for m in fast + torch_dropout) == sorted(m.p for m in reference.modules()
                                                                if isinstance(m, torch.nn.Dropout))
    assert all(m.on == (None if setting is True else ("cpu",)) for m in fast)
    assert model.state_dict().keys() == reference.state_dict().keys()  # checkpoints are interchangeable


_PAGE_FAULTS_OF_STEPS = """
import resource, sys, torch
from recbole_diffcl.utils import keep_freed_memory
changed = keep_freed_memory({"on": "auto", "off": False}[sys.argv[1]], "cpu")
torch.manual_seed(0)
w, x = torch.randn(256, 4096, requires_grad=True), torch.randn(2048, 256)
def step():  # 2048 x 4096 logits (32 MiB) and their gradient, as a step's CE over a catalog makes
    torch.log_softmax(x @ w, -1).mean().backward()
step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_keep_freed_memory_reuses_freed_blocks_instead_of_faulting_pages_in_again():
    def faults(setting: str) -> tuple[str, int]:
        proc = subprocess.run([sys.executable, "-c", _PAGE_FAULTS_OF_STEPS, setting], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        changed, count = proc.stdout.split()
        return changed, int(count)

    (changed_off, off), (changed_on, on) = faults("off"), faults("on")
    if changed_on != "True":
        pytest.skip("this C library has no mallopt, or refused the setting")
    assert changed_off == "False"
    assert off > 10 * 8192  # glibc's default: each step's 32 MiB blocks mapped and faulted in again (~330k here)
    assert on < off / 3, (on, off)  # (~47k here: most of a step's memory reused)


def test_keep_freed_memory_auto_leaves_a_gpu_alone_and_false_changes_nothing():
    from recbole_diffcl.utils import keep_freed_memory

    assert keep_freed_memory("auto", "cuda") is False and keep_freed_memory(False, "cpu") is False
    assert keep_freed_memory(None, "cpu") is False  # (RecBole's config gives None for a missing key)
