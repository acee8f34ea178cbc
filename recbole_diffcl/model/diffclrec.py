"""DiffCLRec: diffusion-based contrastive learning for sequential recommendation.

Reference: Ziqiang Cui, Haolun Wu, Bowei He, Ji Cheng, Chen Ma. "Diffusion-based Contrastive
Learning for Sequential Recommendation", arXiv 2405.09369 (2024); published at CIKM 2024 as
"Context Matters: Enhancing Sequential Recommendation with Context-aware Diffusion-based
Contrastive Learning" (CaDiRec).

Each training step (defaults are the authors' settings for the Amazon datasets):

1. ``L_rec``: SASRec next-item loss on the original sequence.
2. Choose each real position with probability ``mask_ratio`` (same positions for both views).
3. Noise the chosen positions' embeddings to a random timestep (one per sequence); the rest is context.
4. A bidirectional denoiser predicts x0 from the noisy sequence and the timestep.
5. ``L_nll`` (weight ``nll_weight``): cross-entropy of the x0 prediction against the original item,
   ``L_mse`` (weight ``mse_weight``): squared error to x0; both on chosen positions.
6. Two views: at each chosen position draw an item from the prediction's top ``aug_topk``.
7. ``L_cl`` (weight ``cl_weight``): InfoNCE between the two views' encodings.

Diffusion model and recommender share the item table and one optimiser. Inference is SASRec scoring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_diffcl import diffusion
from recbole_diffcl import properties as P
from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender


NLL_REDUCTIONS = ("token", "sequence")


def per_sequence_mean(values: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The authors' reduction: mean of ``values`` (one per chosen position, row-major) within each
    sequence, then the mean over all B sequences (a sequence with nothing chosen counts as 0)."""
    rows = chosen.nonzero(as_tuple=True)[0]
    per_row = values.new_zeros(chosen.size(0)).index_add_(0, rows, values)
    return (per_row / chosen.sum(1).clamp(min=1)).mean()


class DiffCLRec(ContrastiveSequentialRecommender):
    r"""DiffCLRec (Cui et al., CIKM 2024 / arXiv 2405.09369) on RecBole's sequential data."""

    loss_names = ("rec", "cl", "nll", "mse")
    supports_whole_sequence = True
    property_checks = {
        "mask_ratio": P.probability(),
        "diffusion_steps": P.positive_int(),
        "noise_schedule": P.one_of(*diffusion.NOISE_SCHEDULES),
        "denoiser_n_layers": P.positive_int(),
        "denoiser_n_heads": P.positive_int(),
        "denoiser_inner_size": P.positive_int(),
        "denoiser_hidden_dropout_prob": P.probability(upper_open=True),
        "denoiser_attn_dropout_prob": P.probability(upper_open=True),
        "denoiser_position": P.one_of(*diffusion.POSITION_MODES),
        "denoiser_input_dropout_prob": P.probability(upper_open=True),
        "denoiser_output_layer": P.boolean(),
        "nll_reduction": P.one_of(*NLL_REDUCTIONS),
        "nll_weight": P.non_negative(),
        "mse_weight": P.non_negative(),
        "aug_topk": P.positive_int(),
        "aug_sampler": P.one_of("one_step", "reverse"),
        "aug_reverse_steps": P.positive_int(),
        "cl_detach_view_embeddings": P.boolean(),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.mask_ratio = config["mask_ratio"]
        self.aug_topk = config["aug_topk"]
        self.aug_sampler = config["aug_sampler"]
        self.aug_reverse_steps = config["aug_reverse_steps"]
        self.nll_weight = config["nll_weight"]
        self.mse_weight = config["mse_weight"]
        self.nll_reduction = config["nll_reduction"] or "token"
        self.cl_detach_view_embeddings = config["cl_detach_view_embeddings"]
        self.schedule = diffusion.NoiseSchedule(config["noise_schedule"], config["diffusion_steps"])
        self.denoiser = diffusion.Denoiser(
            hidden_size=self.hidden_size,
            max_seq_length=self.max_seq_length,
            n_layers=config["denoiser_n_layers"],
            n_heads=config["denoiser_n_heads"],
            inner_size=config["denoiser_inner_size"],
            hidden_dropout_prob=config["denoiser_hidden_dropout_prob"],
            attn_dropout_prob=config["denoiser_attn_dropout_prob"],
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            position=config["denoiser_position"],
            input_dropout_prob=config["denoiser_input_dropout_prob"],
            output_layer=config["denoiser_output_layer"] is not False,
        )
        self.apply(self._init_weights)
        if self.denoiser.position == "relative":
            torch.nn.init.zeros_(self.denoiser.relative_bias.weight)  # start as plain bidirectional attention

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = self.trim(interaction[self.ITEM_SEQ], item_seq_len)
        rec_loss = self.next_item_loss(item_seq, item_seq_len, interaction)
        zero = rec_loss.new_zeros(())

        # Forward diffusion on a few chosen positions, then predict x0 from both-sided context.
        real = item_seq != 0
        chosen = diffusion.choose_positions(item_seq, self.mask_ratio)
        if not chosen.any():
            return rec_loss, zero, zero, zero
        x0 = diffusion.add_context_noise(self.item_embedding(item_seq), real, self.schedule)
        t = self.schedule.sample_timesteps(item_seq.size(0))
        x_t = diffusion.q_sample(x0, t, chosen, self.schedule)
        x0_pred = self.map_length_sorted(self.denoiser, item_seq_len, x_t, t, real)[chosen]  # N_chosen x d
        logits = x0_pred @ self.item_table.T  # N_chosen x n_items
        nll = F.cross_entropy(logits, item_seq[chosen], reduction="none")
        mse = (x0_pred - x0[chosen]).pow(2).mean(-1) if self.mse_weight > 0 else None  # mean over dims (authors)
        if self.nll_reduction == "sequence":
            nll_loss = per_sequence_mean(nll, chosen)
            mse_loss = per_sequence_mean(mse, chosen) if mse is not None else zero
        else:
            nll_loss = nll.mean()
            mse_loss = mse.mean() if mse is not None else zero

        cl_loss = zero
        if self.cl_active():
            if self.aug_sampler == "reverse":
                x0_final = diffusion.ddim_reverse(
                    self.denoiser, x0.detach(), chosen, real, self.schedule, self.aug_reverse_steps
                )
                candidate_logits = x0_final[chosen] @ self.item_table.detach().T
            else:  # "one_step": the x0 prediction above, as the authors do
                candidate_logits = logits.detach()
            sampled = diffusion.sample_topk(candidate_logits, self.aug_topk, n_views=2)
            views = diffusion.make_views(item_seq, chosen, sampled)
            # The authors embed views with a gradient-free copy of the table; detach() avoids copying it.
            item_weight = self.item_embedding.weight.detach() if self.cl_detach_view_embeddings else None
            z1, z2 = self.encode_views(views, item_seq_len, item_weight)
            cl_loss = self.contrastive_loss(z1, z2)

        return (
            rec_loss,
            self.cl_weight * cl_loss,
            self.nll_weight * nll_loss,
            self.mse_weight * mse_loss,
        )
