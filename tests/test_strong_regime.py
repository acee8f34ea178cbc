"""The strong regime: SASRecPlus, the authors' BCE loss, whole-sequence DuoRec, the authors' denoiser options."""
from __future__ import annotations

import pytest
import torch

from recbole_diffcl.diffusion import Denoiser
from recbole_diffcl.model.contrastive import binary_cross_entropy, resolve_length_sorted_passes, sample_negatives
from recbole_diffcl.model.diffclrec import DiffCLRec, per_sequence_mean
from recbole_diffcl.model.sasrecplus import SASRecPlus
from tests.conftest import make_batch, make_model, tiny_config

SMALL = dict(hidden_size=16, inner_size=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bce_negatives_are_never_the_target_nor_padding_and_cover_the_other_items():
    torch.manual_seed(0)
    n_items = 7  # ids 1..6 are real items, 0 is padding
    targets = torch.randint(1, n_items, (4000,))
    negatives = sample_negatives(targets, n_items)
    assert (negatives != targets).all() and (negatives >= 1).all() and (negatives < n_items).all()
    # uniform over the 5 other real items: each one about 20% of the time for a fixed target
    fixed = sample_negatives(torch.full((5000,), 3), n_items)
    counts = torch.bincount(fixed, minlength=n_items)[1:].float() / 5000
    assert counts[2] == 0 and ((counts[[0, 1, 3, 4, 5]] - 0.2).abs() < 0.03).all()


def test_bce_negatives_avoid_the_items_of_their_row():
    torch.manual_seed(0)
    row_items = torch.tensor([[1, 2, 3, 4, 0], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[2, 3, 4, 0], [6, 7, 8, 9]])
    negatives = sample_negatives(targets, 12, row_items)
    for row in range(2):
        assert not set(negatives[row].tolist()) & set(row_items[row].tolist())


def test_bce_loss_is_the_authors_formula():
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    expected = (-torch.log(torch.sigmoid(pos)) - torch.log(1 - torch.sigmoid(neg))).mean()
    torch.testing.assert_close(binary_cross_entropy(pos, neg), expected)


def test_whole_sequence_bce_scores_only_real_positions():
    torch.manual_seed(0)
    model = make_model(SASRecPlus, loss_type="BCE", **SMALL).eval()
    batch = make_batch(batch=6, shortest=2, longest=9, seed=3)
    scored = []
    original = model.score_pairs
    model.score_pairs = lambda outputs, items: scored.append(items) or original(outputs, items)
    model.calculate_loss(batch)
    positives, negatives = scored
    assert positives.numel() == int(batch["item_length"].sum())  # one term per real position
    assert (positives != 0).all() and (negatives != 0).all() and (negatives != positives).all()


@pytest.mark.parametrize("loss_type", ["CE", "BCE"])
def test_sasrecplus_loss_equals_diffclrec_recommendation_loss(loss_type):
    batch = make_batch(batch=12, shortest=2, longest=15, seed=1)
    torch.manual_seed(0)
    plus = make_model(SASRecPlus, loss_type=loss_type, **SMALL).eval()
    diff = make_model(DiffCLRec, loss_type=loss_type, **SMALL).eval()
    diff.load_state_dict(plus.state_dict(), strict=False)  # the encoder and item table, same weights
    torch.manual_seed(7)
    plus_loss = plus.calculate_loss(batch)
    torch.manual_seed(7)
    rec_loss = diff.calculate_loss(batch)[0]
    torch.testing.assert_close(plus_loss, rec_loss)


def test_disentangled_denoiser_never_attends_to_padding():
    torch.manual_seed(0)
    denoiser = Denoiser(hidden_size=16, max_seq_length=10, inner_size=32, position="disentangled").eval()
    real = torch.tensor([[True] * 6 + [False] * 4, [True] * 3 + [False] * 7])
    x = torch.randn(2, 10, 16)
    t = torch.tensor([5, 500])
    out = denoiser(x, t, real)
    changed = x.clone()
    changed[~real] = torch.randn(int((~real).sum()), 16) * 100  # anything at padded positions
    torch.testing.assert_close(denoiser(changed, t, real)[real], out[real])
    # the output at real positions does depend on the other real positions (both sides)
    moved = x.clone()
    moved[0, 5] = torch.randn(16)
    assert not torch.allclose(denoiser(moved, t, real)[0, 0], out[0, 0])


def test_disentangled_layers_draw_their_own_relative_position_dropout():
    from recbole_diffcl.layers import DisentangledTransformerEncoder

    torch.manual_seed(0)
    encoder = DisentangledTransformerEncoder(2, 2, 16, 32, 10, 0.5, 0.0, "gelu", 1e-12).train()
    seen = []
    for attention in encoder.attention:
        attention.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    encoder(torch.randn(2, 10, 16), torch.ones(2, 10, dtype=torch.bool))
    assert len(seen) == 2 and not torch.equal(seen[0] == 0, seen[1] == 0)  # two layers, two dropout masks
    encoder.eval()
    seen.clear()
    encoder(torch.randn(2, 10, 16), torch.ones(2, 10, dtype=torch.bool))
    assert torch.equal(seen[0], encoder.rel_embeddings.weight) and torch.equal(seen[1], seen[0])


def test_disentangled_attention_matches_transformers_deberta():
    transformers = pytest.importorskip("transformers", reason="optional: the parity check needs `transformers`")
    from transformers import DebertaConfig
    from transformers.models.deberta.modeling_deberta import DebertaEncoder

    from recbole_diffcl.layers import DisentangledTransformerEncoder

    d, heads, span = 16, 2, 10
    config = DebertaConfig(
        hidden_size=d, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=32, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12, relative_attention=True,
        max_relative_positions=-1, max_position_embeddings=span, pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
    )
    torch.manual_seed(0)
    theirs = DebertaEncoder(config).eval()
    for name, param in theirs.named_parameters():  # random, not DeBERTa's zero biases, so every term counts
        if "LayerNorm" not in name:
            param.data.normal_(0, 0.3)
    ours = DisentangledTransformerEncoder(2, heads, d, 32, span, 0.0, 0.0, "gelu", 1e-12).eval()
    ours.rel_embeddings.weight.data.copy_(theirs.rel_embeddings.weight.data)
    for layer, attention, feed_forward in zip(theirs.layer, ours.attention, ours.feed_forward):
        self_att = layer.attention.self
        # in_proj's rows are per head: [q_head0, k_head0, v_head0, q_head1, ...], each d_head rows
        q_w, k_w, v_w = self_att.in_proj.weight.data.view(heads, 3, d // heads, d).unbind(1)
        q_w, k_w, v_w = (w.reshape(d, d) for w in (q_w, k_w, v_w))
        attention.query.weight.data.copy_(q_w)
        attention.query.bias.data.copy_(self_att.q_bias.data)
        attention.key.weight.data.copy_(k_w)
        attention.value.weight.data.copy_(v_w)
        attention.value.bias.data.copy_(self_att.v_bias.data)
        attention.pos_proj.weight.data.copy_(self_att.pos_proj.weight.data)
        attention.pos_q_proj.load_state_dict(self_att.pos_q_proj.state_dict())
        attention.dense.load_state_dict(layer.attention.output.dense.state_dict())
        attention.LayerNorm.load_state_dict(layer.attention.output.LayerNorm.state_dict())
        feed_forward.dense_1.load_state_dict(layer.intermediate.dense.state_dict())
        feed_forward.dense_2.load_state_dict(layer.output.dense.state_dict())
        feed_forward.LayerNorm.load_state_dict(layer.output.LayerNorm.state_dict())
    real = torch.tensor([[True] * 7 + [False] * 3, [True] * 10])
    x = torch.randn(2, 10, d)
    expected = theirs(x, real.long(), output_hidden_states=False).last_hidden_state
    torch.testing.assert_close(ours(x, real)[real], expected[real], atol=1e-5, rtol=1e-4)


def test_per_sequence_mean_counts_sequences_with_nothing_chosen_as_zero():
    chosen = torch.tensor([[True, True, False], [False, False, False], [False, True, False]])
    values = torch.tensor([1.0, 3.0, 5.0])  # row 0: 1, 3; row 2: 5
    torch.testing.assert_close(per_sequence_mean(values, chosen), torch.tensor((2.0 + 0.0 + 5.0) / 3))


@pytest.mark.parametrize(
    "options",
    [
        dict(denoiser_position="disentangled"),
        dict(denoiser_input_dropout_prob=0.5, denoiser_output_layer=False),
        dict(nll_reduction="sequence", mse_weight=0.5),
    ],
)
def test_denoiser_options_train(options):
    torch.manual_seed(0)
    model = make_model(DiffCLRec, mask_ratio=0.4, **SMALL, **options)
    parts = model.calculate_loss(make_batch(batch=16, shortest=3, longest=20))
    assert all(torch.isfinite(p) for p in parts) and parts[2] > 0
    sum(parts).backward()
    if options.get("denoiser_output_layer") is False:
        assert isinstance(model.denoiser.output, torch.nn.Identity)


def test_length_sorted_passes_auto_resolves_per_device():
    assert resolve_length_sorted_passes("auto", torch.device("cuda")) == 1
    assert resolve_length_sorted_passes("auto", "cpu") == 8
    assert resolve_length_sorted_passes(3, "cuda") == 3


@pytest.mark.parametrize(
    "model, overrides",
    [("SASRecPlus", {}), ("DiffCLRec", {"loss_type": "BCE"}), ("DuoRec", {}), ("SASRecPlus", {"loss_type": "BCE"})],
)
def test_strong_regime_runs_end_to_end(tmp_path, model, overrides):
    from recbole_diffcl.quick_start import run

    result = run(model, "ml-100k", config_dict={**tiny_config(tmp_path), **overrides})
    assert result["properties"]["whole_sequence_training"] is True  # the plugin models' default
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_bce_is_refused_for_recbole_models(tmp_path):
    from recbole_diffcl.errors import UserError
    from recbole_diffcl.quick_start import load_config

    with pytest.raises(UserError, match="loss_type=BCE"):
        load_config("SASRec", "ml-100k", config_dict={**tiny_config(tmp_path), "loss_type": "BCE"})


def test_whole_sequence_duorec_draws_positives_from_all_prefix_rows(tmp_path):
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.data.dataloader import whole_sequence_train_data
    from recbole_diffcl.model.duorec import DuoRec
    from recbole_diffcl.quick_start import load_config

    _, config = load_config("DuoRec", "ml-100k", config_dict=tiny_config(tmp_path))
    prefix_data, _, _ = data_preparation(config, create_dataset(config))
    whole_data = whole_sequence_train_data(config, prefix_data)
    assert len(whole_data._dataset.inter_feat) < len(prefix_data._dataset.inter_feat)
    torch.manual_seed(0)
    model = DuoRec(config, whole_data._dataset)
    assert model.train_item_seq.size(0) == len(prefix_data._dataset.inter_feat)
    batch = next(iter(whole_data))
    from recbole_diffcl import augment

    rows = augment.sample_same_target(
        batch[model.ROW_ID], model.same_target_targets, model.same_target_rows, model.same_target_indptr,
        model.same_target_position,
    )
    prefix = prefix_data._dataset.inter_feat
    # each supervised positive is a prefix row whose next item is the anchor's target
    assert torch.equal(prefix["item_id"][rows], batch["item_id"])
    sem_seq, _ = model.sample_same_target(batch[model.ROW_ID])
    assert torch.equal(model.train_item_seq, prefix["item_id_list"])
    parts = model.calculate_loss(batch)
    assert all(torch.isfinite(p) for p in parts) and parts[2] > 0


def test_max_train_seconds_stops_training_and_still_tests_the_best_checkpoint(tmp_path):
    from recbole_diffcl.quick_start import run

    result = run("SASRecPlus", "ml-100k", config_dict={**tiny_config(tmp_path), "epochs": 50, "max_train_seconds": 1e-6})
    assert result["epochs_run"] == 1 and result["stopped_by"] == "time_budget"
    assert len(result["valid_curve"]) == 1 and 0 <= result["test_result"]["ndcg@10"] <= 1
    assert result["ranking"] == "full (history kept)" and result["regime"] == "whole sequence"


def test_whole_sequence_training_keeps_histories_and_lengths_of_the_prefix_rows(tmp_path):
    """exclude_history and the per-user lengths must not depend on the training regime."""
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.data.dataloader import whole_sequence_train_data
    from recbole_diffcl.evaluation import with_evaluation_options
    from recbole_diffcl.quick_start import load_config
    from recbole_diffcl.trainer import get_trainer

    _, config = load_config("SASRecPlus", "ml-100k", config_dict={**tiny_config(tmp_path), "exclude_history": True,
                                                                  "MAX_ITEM_LIST_LENGTH": 5})
    prefix_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    whole_data = whole_sequence_train_data(config, prefix_data)
    model = SASRecPlus(config, whole_data._dataset)
    trainer_class = with_evaluation_options(get_trainer(config["MODEL_TYPE"], config["model"], SASRecPlus))
    from_prefix, from_whole = trainer_class(config, model), trainer_class(config, model)
    from_prefix.prepare_evaluation(prefix_data, valid_data, test_data)
    from_whole.prepare_evaluation(whole_data, valid_data, test_data)
    assert (from_prefix._seq_len == from_whole._seq_len).all()
    for (_, a), (_, b) in zip(from_prefix._histories, from_whole._histories):
        assert (a != b).nnz == 0  # rows truncated to 5 items still exclude the user's whole history


def test_contrastive_loss_at_every_position_pairs_positions_across_views(monkeypatch):
    torch.manual_seed(0)
    model = make_model(DiffCLRec, mask_ratio=0.4, cl_positions="every", cl_pair="two_views", **SMALL)
    batch = make_batch(batch=8, shortest=3, longest=12)
    seen = {}
    original = model.contrastive_loss

    def spy(z1, z2, *args, **kwargs):
        seen["shapes"] = (z1.shape, z2.shape)
        return original(z1, z2, *args, **kwargs)

    monkeypatch.setattr(model, "contrastive_loss", spy)
    parts = model.calculate_loss(batch)
    real_positions = int(batch["item_length"].sum())
    assert seen["shapes"] == ((real_positions, 16), (real_positions, 16))  # one pair per real position
    assert torch.isfinite(parts[1]) and parts[1] > 0
    sum(parts).backward()


def test_runs_started_together_never_share_a_checkpoint_file(tmp_path):
    """benchmark --parallel starts runs of one model in the same second and folder: RecBole's
    <Model>-<time>.pth names would make them overwrite and reload each other's weights."""
    from recbole_diffcl.quick_start import load_config
    from recbole_diffcl.trainer import get_trainer
    from tests.conftest import FakeDataset

    _, config = load_config("SASRecPlus", "ml-100k", config_dict=tiny_config(tmp_path))
    trainer_class = get_trainer(config["MODEL_TYPE"], config["model"], SASRecPlus)
    names = {trainer_class(config, SASRecPlus(config, FakeDataset(50))).saved_model_file for _ in range(3)}
    assert len(names) == 3 and all(n.startswith(str(tmp_path / "saved" / "SASRecPlus-")) for n in names)
