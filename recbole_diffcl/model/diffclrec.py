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

Ablations of the paper's claims, each off by default (the full method): ``aug_source`` (replacements
drawn uniformly or by popularity instead of from the denoiser), ``denoiser_context`` (the denoiser sees
only the left context, or none), ``share_item_embedding`` (the denoiser gets its own item table) and
``train_diffusion`` (the denoiser stays at its initialisation); see ``props/ablation/``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_diffcl import diffusion
from recbole_diffcl import properties as P
from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender


NLL_REDUCTIONS = ("token", "sequence")
AUG_SOURCES = ("diffusion", "random", "popularity")


def training_item_counts(dataset, n_items: int) -> Optional[torch.Tensor]:
    """How often each item id occurs in the training data (n_items floats, padding 0), or None when the
    dataset holds no interactions (e.g. a model built without RecBole data).

    Counted over each user's longest training row (its input items plus its target): every training
    interaction once, in the prefix and in the whole-sequence regime alike (inputs are cut to the last
    MAX_ITEM_LIST_LENGTH items).
    """
    from recbole_diffcl.data.dataloader import last_row_per_user

    feat = getattr(dataset, "inter_feat", None)
    if feat is None:
        return None
    iid_field = dataset.iid_field
    items = [feat[iid_field]]
    list_field = getattr(dataset, "item_id_list_field", None)
    if list_field is not None and list_field in feat:
        rows = last_row_per_user(feat[dataset.uid_field], feat[dataset.item_list_length_field])
        items = [feat[list_field][rows].flatten(), feat[iid_field][rows]]
    counts = torch.bincount(torch.cat(items).long(), minlength=n_items)[:n_items].float()
    counts[0] = 0.0
    return counts


def popularity_percentiles(counts: torch.Tensor) -> torch.Tensor:
    """Each item's popularity percentile among the real items (mid-rank of its count, in [0, 1]; id 0: 0)."""
    real = counts[1:]
    ordered = real.sort().values
    below = torch.searchsorted(ordered, real, right=False)
    up_to = torch.searchsorted(ordered, real, right=True)
    pct = (below + up_to).float() / (2 * max(1, real.numel()))
    return torch.cat([pct.new_zeros(1), pct])


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
        "cl_positions": P.one_of("last", "every"),
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
        "aug_source": P.one_of(*AUG_SOURCES),
        "denoiser_context": P.one_of(*diffusion.CONTEXT_MODES),
        "share_item_embedding": P.boolean(),
        "train_diffusion": P.boolean(),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        optional = lambda key, default: config[key] if key in config and config[key] is not None else default  # noqa: E731
        self.mask_ratio = config["mask_ratio"]
        self.aug_topk = config["aug_topk"]
        self.aug_sampler = config["aug_sampler"]
        self.aug_reverse_steps = config["aug_reverse_steps"]
        self.nll_weight = config["nll_weight"]
        self.mse_weight = config["mse_weight"]
        self.nll_reduction = config["nll_reduction"] or "token"
        self.cl_detach_view_embeddings = config["cl_detach_view_embeddings"]
        self.cl_positions = config["cl_positions"] or "last"
        # ablations (the defaults are the method)
        self.aug_source = optional("aug_source", "diffusion")
        self.share_item_embedding = optional("share_item_embedding", True)
        self.train_diffusion = optional("train_diffusion", True)
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
            context=optional("denoiser_context", "both"),
        )
        if not self.share_item_embedding:  # the denoiser's own item table: its losses train only this one
            self.denoiser_item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.apply(self._init_weights)
        if self.denoiser.position == "relative":
            torch.nn.init.zeros_(self.denoiser.relative_bias.weight)  # start as plain bidirectional attention
        if not self.train_diffusion:  # views from the denoiser as initialised
            for module in (self.denoiser, getattr(self, "denoiser_item_embedding", None)):
                if module is not None:
                    module.requires_grad_(False)
        # Item popularity in the training data (for aug_source=popularity); not saved in checkpoints.
        self.register_buffer("item_counts", torch.zeros(0), persistent=False)
        self.register_buffer("item_percentiles", torch.zeros(0), persistent=False)
        self.has_item_counts = False
        counts = training_item_counts(dataset, self.n_items)
        if counts is not None:
            self.set_item_counts(counts)
        # The denoiser runs when it makes the views or when its losses train something.
        self.runs_denoiser = self.aug_source == "diffusion" or (
            self.train_diffusion and (self.nll_weight > 0 or self.mse_weight > 0)
        )

    def set_item_counts(self, counts: torch.Tensor) -> None:
        """Replace the training item counts (n_items values; what ``aug_source=popularity`` samples by)."""
        self.item_counts = counts.to(self.item_embedding.weight.device, torch.float32)
        self.has_item_counts = bool(self.item_counts.sum() > 0)  # once, at build time: not in the step
        self.item_percentiles = popularity_percentiles(self.item_counts) if self.has_item_counts else torch.zeros(0)

    # -- the diffusion model ------------------------------------------------------------------------
    @property
    def diffusion_embedding(self) -> nn.Embedding:
        """The item table of the diffusion model: the recommender's (shared, the method) or its own."""
        return self.item_embedding if self.share_item_embedding else self.denoiser_item_embedding

    def denoise(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, real: torch.Tensor, chosen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward diffusion at the chosen positions, then the denoiser's x0 prediction from the context.

        Returns (x0: B x L x d, x0 prediction at the chosen positions: N x d, its logits: N x n_items).
        """
        table = self.diffusion_embedding
        x0 = diffusion.add_context_noise(table(item_seq), real, self.schedule)
        t = self.schedule.sample_timesteps(item_seq.size(0))
        x_t = diffusion.q_sample(x0, t, chosen, self.schedule)
        x0_pred = self.map_length_sorted(self.denoiser, item_seq_len, x_t, t, real)[chosen]  # N_chosen x d
        return x0, x0_pred, x0_pred @ table.weight[: self.n_items].T

    def diffusion_losses(
        self, x0: torch.Tensor, x0_pred: torch.Tensor, logits: torch.Tensor, original: torch.Tensor, chosen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_nll, L_mse), unweighted: CE of the x0 logits against the original items, squared error to x0."""
        nll = F.cross_entropy(logits, original, reduction="none")
        mse = (x0_pred - x0[chosen]).pow(2).mean(-1) if self.mse_weight > 0 else None  # mean over dims (authors)
        zero = logits.new_zeros(())
        if self.nll_reduction == "sequence":
            return per_sequence_mean(nll, chosen), per_sequence_mean(mse, chosen) if mse is not None else zero
        return nll.mean(), mse.mean() if mse is not None else zero

    # -- views ----------------------------------------------------------------------------------------
    def candidate_logits(
        self, x0: torch.Tensor, logits: torch.Tensor, chosen: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """Scores of every item at the chosen positions (N x n_items) that the views draw their top-k from."""
        if self.aug_sampler == "reverse":
            x0_final = diffusion.ddim_reverse(
                self.denoiser, x0.detach(), chosen, real, self.schedule, self.aug_reverse_steps
            )
            return x0_final[chosen] @ self.diffusion_embedding.weight[: self.n_items].detach().T
        return logits.detach()  # "one_step": the x0 prediction, as the authors do

    def sample_replacements(
        self, n_chosen: int, candidates: Optional[torch.Tensor] = None, n_views: int = 2
    ) -> torch.Tensor:
        """Replacement items for the chosen positions, one column per view (N x n_views).

        ``aug_source``: ``diffusion`` draws uniformly from ``candidates`` (N x k, the denoiser's top-k);
        ``random`` uniformly from all real items; ``popularity`` in proportion to the items' training
        counts (uniformly when the model has none).
        """
        device = self.item_embedding.weight.device
        if self.aug_source == "diffusion":
            return diffusion.sample_from_candidates(candidates, n_views)
        if self.aug_source == "popularity" and self.has_item_counts:
            draws = torch.multinomial(self.item_counts, n_chosen * n_views, replacement=True)
            return draws.view(n_chosen, n_views)
        return torch.randint(1, self.n_items, (n_chosen, n_views), device=device)

    def record_view_statistics(
        self,
        original: torch.Tensor,
        real: torch.Tensor,
        denoiser_top: Optional[torch.Tensor] = None,
        sampled: Optional[torch.Tensor] = None,
    ) -> None:
        """Per-epoch view diagnostics from tensors the step already has (no extra passes, no host reads).

        ``original``: the N items at the chosen positions; ``denoiser_top``: N x k, the denoiser's top-k
        candidates of its one-step x0 prediction, best first; ``sampled``: N x 2, the two views' replacements.
        """
        if denoiser_top is not None:
            self.record_statistic("recon_top1", denoiser_top[:, 0] == original)  # original item ranked first
            self.record_statistic("recon_topk", (denoiser_top == original[:, None]).any(1))  # among the top k
        if sampled is None:
            return
        self.record_statistic("repl_is_original", sampled == original[:, None])  # replacement = replaced item
        differ = sampled[:, 0] != sampled[:, 1]
        self.record_statistic("chosen_views_differ", differ)  # share of chosen positions where views differ
        self.record_statistic("views_differ", differ, real.sum())  # share of all real positions (as CL4SRec's)
        if self.has_item_counts:  # mean popularity percentile (0 rarest, 1 most popular) of items in and out
            self.record_statistic("pop_pct_replacement", self.item_percentiles[sampled])
            self.record_statistic("pop_pct_original", self.item_percentiles[original])

    def run_denoiser(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, real: torch.Tensor, chosen: torch.Tensor
    ) -> tuple:
        """(x0, x0 prediction, logits, top-k candidates of the logits) at the chosen positions, or four Nones
        when the denoiser does not run (a random or popularity source with nothing of it to train)."""
        if not self.runs_denoiser:
            return None, None, None, None
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_diffusion):
            x0, x0_pred, logits = self.denoise(item_seq, item_seq_len, real, chosen)
        return x0, x0_pred, logits, diffusion.topk_candidates(logits, self.aug_topk).indices

    def view_replacements(
        self, original: torch.Tensor, chosen: torch.Tensor, real: torch.Tensor, x0, logits, denoiser_top
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(replacements: N x 2, one column per view; the candidates they were drawn from: N x k, or None
        for the random and popularity sources)."""
        top = None
        if self.aug_source == "diffusion":
            top = denoiser_top if self.aug_sampler != "reverse" else diffusion.topk_candidates(
                self.candidate_logits(x0, logits, chosen, real), self.aug_topk
            ).indices
        return self.sample_replacements(original.size(0), top), top

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
        original = item_seq[chosen]
        nll_loss = mse_loss = zero
        x0, x0_pred, logits, denoiser_top = self.run_denoiser(item_seq, item_seq_len, real, chosen)
        if x0 is not None and self.train_diffusion:
            nll_loss, mse_loss = self.diffusion_losses(x0, x0_pred, logits, original, chosen)

        cl_loss = zero
        sampled = None
        if self.cl_active():
            sampled, _ = self.view_replacements(original, chosen, real, x0, logits, denoiser_top)
            views = diffusion.make_views(item_seq, chosen, sampled)
            # The authors embed views with a gradient-free copy of the table; detach() avoids copying it.
            item_weight = self.item_embedding.weight.detach() if self.cl_detach_view_embeddings else None
            if self.cl_positions == "every":
                # both views at every real position: the replacements sit at the same positions in both, so
                # position i of one view is the positive of position i of the other
                outputs = self.encode_all_positions(torch.cat(views), item_seq_len.repeat(2), item_weight)
                z1, z2 = (view_outputs[real] for view_outputs in outputs.chunk(2))
            else:
                z1, z2 = self.encode_views(views, item_seq_len, item_weight)
            cl_loss = self.contrastive_loss(z1, z2)
        self.record_view_statistics(original, real, denoiser_top, sampled)

        return (
            rec_loss,
            self.cl_weight * cl_loss,
            self.nll_weight * nll_loss,
            self.mse_weight * mse_loss,
        )
