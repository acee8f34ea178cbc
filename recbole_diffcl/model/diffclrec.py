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
7. ``L_cl`` (weight ``cl_weight``): InfoNCE between the two views' encodings (``cl_pair: two_views``); our
   default ``view_and_original`` makes one view and contrasts it with the original sequence's encoding from
   step 1's pass: half the views' encoder work, and on amazon-beauty a little better (docs/results.md).

Diffusion model and recommender share the item table and one optimiser. Inference is SASRec scoring.

Ablations of the paper's claims, each off by default (the full method): ``aug_source`` (replacements
drawn uniformly or by popularity instead of from the denoiser), ``denoiser_context`` (the denoiser sees
only the left context, or none), ``share_item_embedding`` (the denoiser gets its own item table) and
``train_diffusion`` (the denoiser stays at its initialisation); see ``props/ablation/``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_diffcl import diffusion
from recbole_diffcl import properties as P
from recbole_diffcl.data.dataloader import training_item_counts
from recbole_diffcl.errors import UserError
from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender
from recbole_diffcl.model.packing import PackedBatch


NLL_REDUCTIONS = ("token", "sequence")
AUG_SOURCES = ("diffusion", "random", "popularity")
#: how the views score candidate items from the denoiser's x0 prediction (docs/views.md, issue #25)
CANDIDATE_SCORES = ("dot", "cos", "debiased")
#: the scale of the item embeddings the diffusion runs on
INPUT_SCALES = ("none", "unit", "std")
AUG_SAMPLING = ("topk_uniform", "softmax")
AUG_EXCLUDE = ("none", "original", "history")
#: what the InfoNCE contrasts: the paper's two views, or one view and the original sequence (ours, the default)
CL_PAIRS = ("two_views", "view_and_original")


def timestep_range() -> P.Check:
    return (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(P._is_number(x) for x in v)
        and 0 <= v[0] < v[1] <= 1,
        "a list [low, high] of fractions of diffusion_steps with 0 <= low < high <= 1, e.g. [0.0, 0.1]",
    )


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


def chosen_mean(values: torch.Tensor, chosen: torch.Tensor, reduction: str = "token") -> torch.Tensor:
    """The mean of ``values`` (B x L, one per position) over the chosen positions: over all of them
    (``token``), or within each sequence, then over the B sequences (``sequence``, as
    :func:`per_sequence_mean`); masks only, no host read."""
    kept = values * chosen
    if reduction == "sequence":
        return (kept.sum(1) / chosen.sum(1).clamp(min=1)).mean()
    return kept.sum() / chosen.sum().clamp(min=1)


class DiffCLRec(ContrastiveSequentialRecommender):
    r"""DiffCLRec (Cui et al., CIKM 2024 / arXiv 2405.09369) on RecBole's sequential data."""

    loss_names = ("rec", "cl", "nll", "mse", "view_rec")
    supports_whole_sequence = True
    property_checks = {
        "cl_positions": P.one_of("last", "every"),
        "cl_pair": P.one_of(*CL_PAIRS),
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
        "aug_candidate_scores": P.one_of(*CANDIDATE_SCORES),
        "aug_popularity_penalty": P.non_negative(),
        "diffusion_input_scale": P.one_of(*INPUT_SCALES),
        "aug_timestep_range": timestep_range(),
        "aug_sampling": P.one_of(*AUG_SAMPLING),
        "aug_temperature": P.positive(),
        "aug_exclude": P.one_of(*AUG_EXCLUDE),
        "aug_rec_weight": P.non_negative(),
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
        self.cl_pair = optional("cl_pair", "view_and_original")
        if self.cl_pair == "view_and_original" and self.cl_positions == "every":
            raise UserError(
                "cl_pair: view_and_original contrasts the view with the original sequence's last-position output "
                "from the recommender's own pass, which has no output at every position outside whole-sequence "
                "training; it cannot be combined with cl_positions: every. Fix: set cl_positions: last, or "
                "cl_pair: two_views."
            )
        # ablations (the defaults are the method)
        self.aug_source = optional("aug_source", "diffusion")
        self.share_item_embedding = optional("share_item_embedding", True)
        self.train_diffusion = optional("train_diffusion", True)
        self.schedule = diffusion.NoiseSchedule(config["noise_schedule"], config["diffusion_steps"])
        # how the views are made from the denoiser (the defaults are the paper's)
        self.aug_candidate_scores = optional("aug_candidate_scores", "dot")
        self.aug_popularity_penalty = optional("aug_popularity_penalty", 1.0)
        self.diffusion_input_scale = optional("diffusion_input_scale", "none")
        low, high = optional("aug_timestep_range", [0.0, 1.0])
        first = min(int(round(low * self.schedule.steps)), self.schedule.steps - 1)
        self.aug_timesteps = (first, max(first + 1, int(round(high * self.schedule.steps))))  # [first, end)
        self.aug_sampling = optional("aug_sampling", "topk_uniform")
        self.aug_temperature = optional("aug_temperature", 1.0)
        self.aug_exclude = optional("aug_exclude", "none")
        self.aug_rec_weight = optional("aug_rec_weight", 0.0)
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
        self.initialise()
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

    def diffusion_table(self) -> torch.Tensor:
        """The item embeddings the diffusion runs on (x0 and the x0 prediction's scores), scaled by
        ``diffusion_input_scale``: ``none`` the table itself (the paper), ``unit`` each embedding at norm
        sqrt(d), ``std`` the table divided by its standard deviation (a constant per step). The last two give
        x0 a per-dimension spread of about 1, the noise's scale, so that small timesteps keep the replaced
        item recognisable (the raw table's spread, ~0.09 on Beauty, is below the noise of t = 0)."""
        weight = self.diffusion_embedding.weight
        if self.diffusion_input_scale == "unit":
            return math.sqrt(weight.size(1)) * F.normalize(weight, dim=-1)
        if self.diffusion_input_scale == "std":
            return weight / weight[1 : self.n_items].detach().std().clamp(min=1e-8)
        return weight

    def denoise(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        real: torch.Tensor,
        chosen: torch.Tensor,
        t: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward diffusion at the chosen positions, then the denoiser's x0 prediction from the context.

        ``t``: one timestep per sequence (default: uniform over all steps, as the paper trains).
        Returns (x0: B x L x d, x0 prediction at the chosen positions: N x d, its logits: N x n_items).

        Only rows with a chosen position are denoised: the others add nothing to the NLL or the views (on
        Beauty ~40% of the rows; the same values). With ``sync_free_steps`` (no host read in the step, for a
        GPU, where every read makes the host wait for the device) the whole batch is denoised at every
        position: x0 prediction B x L x d and logits B x L x n_items, the chosen positions kept by masks.
        """
        table = self.diffusion_table()
        rows = None
        if not self.sync_free:
            has_chosen = chosen.any(1)
            if not bool(has_chosen.all()):
                rows = has_chosen.nonzero(as_tuple=True)[0]
                full_shape = (*item_seq.shape, table.size(1))
                item_seq, item_seq_len, real, chosen = item_seq[rows], item_seq_len[rows], real[rows], chosen[rows]
                t = t[rows] if t is not None else None
        dense = self.sync_free
        x0 = diffusion.add_context_noise(F.embedding(item_seq, table, padding_idx=0), real, self.schedule, dense=dense)
        if t is None:
            t = self.schedule.sample_timesteps(item_seq.size(0))
        x_t = diffusion.q_sample(x0, t, chosen, self.schedule, dense=dense)
        if dense:
            x0_pred = self.denoiser(x_t, t, real)  # B x L x d
        else:
            x0_pred = self.denoise_chosen(x_t, t, real, chosen, item_seq_len)  # N_chosen x d
        if rows is not None:  # back to the whole batch (chosen positions keep their row-major order)
            x0 = x0.new_zeros(full_shape).index_copy(0, rows, x0)
        return x0, x0_pred, x0_pred @ table[: self.n_items].T

    def denoise_chosen(
        self, x_t: torch.Tensor, t: torch.Tensor, real: torch.Tensor, chosen: torch.Tensor, item_seq_len: torch.Tensor
    ) -> torch.Tensor:
        """The denoiser's x0 prediction at the chosen positions (N x d, row-major order), its last layer run
        only there; the sequences packed several to a row, or in length-sorted sub-batches, as the encoder's."""
        if self.pack_sequences and self.denoiser.position != "disentangled":
            packed = PackedBatch(item_seq_len)
            at = packed.pack(chosen)
            x0_pred = self.denoiser(
                packed.pack(x_t), packed.pack(t[:, None].expand_as(real)), packed.pack(real), at=at,
                positions=packed.positions, same_sequence=packed.same_sequence(),
            )
            batch_order = (packed.sequence * chosen.size(1) + packed.positions)[at]
            return x0_pred[torch.argsort(batch_order)]  # from the packed rows' order to the batch's row-major one
        plan = self.length_sorted_plan(item_seq_len)
        if plan is None:
            return self.denoiser(x_t, t, real, at=chosen)
        chunks, widths, _ = plan
        parts, keys = [], []
        for rows, width in zip(chunks, widths):
            at = chosen[rows, :width]  # chosen positions are real, so within the sub-batch's width
            parts.append(self.denoiser(x_t[rows, :width], t[rows], real[rows, :width], at=at))
            keys.append((rows[:, None] * chosen.size(1) + torch.arange(width, device=rows.device))[at])
        return torch.cat(parts)[torch.argsort(torch.cat(keys))]  # back to the batch's row-major order

    def diffusion_losses(
        self, x0: torch.Tensor, x0_pred: torch.Tensor, logits: torch.Tensor, original: torch.Tensor, chosen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_nll, L_mse), unweighted: CE of the x0 logits against the original items, squared error to x0.
        The tensors are those of the chosen positions (N ...), or of every position (B x L ...,
        ``sync_free_steps``), of which the chosen ones count."""
        dense = self.sync_free
        nll = F.cross_entropy(logits.flatten(0, -2), original.flatten(), reduction="none").view(original.shape)
        mse = None
        if self.mse_weight > 0:  # mean over dims (authors)
            mse = (x0_pred - (x0 if dense else x0[chosen])).pow(2).mean(-1)
        zero = logits.new_zeros(())
        if dense:
            reduce = lambda values: chosen_mean(values, chosen, self.nll_reduction)  # noqa: E731
            return reduce(nll), reduce(mse) if mse is not None else zero
        if self.nll_reduction == "sequence":
            return per_sequence_mean(nll, chosen), per_sequence_mean(mse, chosen) if mse is not None else zero
        return nll.mean(), mse.mean() if mse is not None else zero

    # -- views ----------------------------------------------------------------------------------------
    @property
    def n_views(self) -> int:
        """Views made per sequence: one with ``cl_pair: view_and_original`` (the original is its pair), else two."""
        return 1 if self.cl_pair == "view_and_original" else 2

    @property
    def views_use_training_pass(self) -> bool:
        """Whether the views draw from the x0 prediction of the NLL's own pass (the paper: one-step x0
        prediction, timesteps over the whole range), rather than from a pass of their own."""
        return self.aug_sampler != "reverse" and self.aug_timesteps == (0, self.schedule.steps)

    def candidate_scores(self, x0_pred: torch.Tensor, logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores of every item (N x n_items, no gradient) for x0 predictions ``x0_pred`` (N x d), by
        ``aug_candidate_scores``: ``dot`` against the diffusion table (the paper; ``logits`` when given are
        exactly these), ``cos`` both sides normalised, ``debiased`` dot minus ``aug_popularity_penalty`` x
        log(1 + training count) (logit adjustment against the bestsellers)."""
        with torch.no_grad():
            table = self.diffusion_table()[: self.n_items]
            if self.aug_candidate_scores == "cos":
                return F.normalize(x0_pred, dim=-1) @ F.normalize(table, dim=-1).T
            scores = logits.detach() if logits is not None else x0_pred @ table.T
            if self.aug_candidate_scores == "debiased" and self.has_item_counts:
                scores = scores - self.aug_popularity_penalty * torch.log1p(self.item_counts)
            return scores

    def view_scores(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, real: torch.Tensor, chosen: torch.Tensor,
        x0: torch.Tensor, x0_pred: torch.Tensor, logits: torch.Tensor,
    ) -> torch.Tensor:
        """Scores of every item at the chosen positions (N x n_items) that the views draw their replacements
        from: the training pass's x0 prediction, or a pass of the views' own (``aug_timestep_range`` narrower
        than the whole range: fresh noise at timesteps drawn from that range; ``aug_sampler: reverse``: a
        few-step DDIM sampler from noise), scored by :meth:`candidate_scores`, with ``aug_exclude`` applied."""
        with torch.no_grad():
            if self.aug_sampler == "reverse":
                x0_pred = diffusion.ddim_reverse(  # (reads the host: not sync-free)
                    self.denoiser, x0.detach(), chosen, real, self.schedule, self.aug_reverse_steps
                )
                x0_pred = x0_pred if self.sync_free else x0_pred[chosen]
                logits = None
            elif not self.views_use_training_pass:
                first, end = self.aug_timesteps
                t = torch.randint(first, end, (item_seq.size(0),), device=item_seq.device)
                _, x0_pred, logits = self.denoise(item_seq, item_seq_len, real, chosen, t)
            scores = self.candidate_scores(x0_pred, logits)
            if self.aug_exclude != "none":
                scores = scores.clone()  # never write into the training pass's logits
                if self.sync_free:  # every position of the batch
                    row_items = item_seq[:, None, :].expand(-1, item_seq.size(1), -1)
                    at = item_seq[..., None]
                else:
                    rows = chosen.nonzero(as_tuple=True)[0]
                    row_items, at = item_seq[rows], item_seq[chosen][:, None]
                # history: every item of the row (its padding 0 is never a candidate); original: the replaced one
                scores.scatter_(-1, row_items if self.aug_exclude == "history" else at, float("-inf"))
        return scores

    def sample_replacements(
        self,
        shape,
        candidates: Optional[torch.Tensor] = None,
        n_views: int = 2,
        candidate_scores: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Replacement items, one column per view: ``shape`` x n_views (``shape``: N chosen positions, or a
        tuple such as (B, L)).

        ``aug_source``: ``diffusion`` draws from ``candidates`` (N x k ids: the top-k of the views' scores,
        ``candidate_scores``) uniformly (``aug_sampling: topk_uniform``, the paper) or in proportion to
        softmax(score / ``aug_temperature``) (``softmax``); ``random`` uniformly from all real items;
        ``popularity`` in proportion to the items' training counts (uniformly when the model has none).
        """
        device = self.item_embedding.weight.device
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if self.aug_source == "diffusion":
            if self.aug_sampling == "softmax":
                probs = torch.softmax(candidate_scores / self.aug_temperature, dim=-1)
                picks = torch.multinomial(probs.flatten(0, -2), n_views, replacement=True)
                return candidates.gather(-1, picks.view(*candidates.shape[:-1], n_views))
            return diffusion.sample_from_candidates(candidates, n_views)
        if self.aug_source == "popularity" and self.has_item_counts:
            draws = torch.multinomial(self.item_counts, math.prod(shape) * n_views, replacement=True)
            return draws.view(*shape, n_views)
        return torch.randint(1, self.n_items, (*shape, n_views), device=device)

    def record_view_statistics(
        self,
        original: torch.Tensor,
        real: torch.Tensor,
        denoiser_top: Optional[torch.Tensor] = None,
        sampled: Optional[torch.Tensor] = None,
        candidates: Optional[torch.Tensor] = None,
        chosen: Optional[torch.Tensor] = None,
    ) -> None:
        """Per-epoch view diagnostics from tensors the step already has (no extra passes, no host reads).

        ``original``: the N items at the chosen positions; ``denoiser_top``: N x k, the denoiser's top-k
        candidates of its one-step x0 prediction in the training pass, best first; ``sampled``: N x
        ``n_views``, the views' replacements; ``candidates``: N x k, the ids the views drew them from. With ``chosen``
        (B x L, ``sync_free_steps``) the tensors hold every position (B x L ...) and the chosen ones count.
        """
        n_chosen = chosen.sum() if chosen is not None else None  # once per step, on the device

        def record(name: str, values: torch.Tensor, count=None) -> None:
            if chosen is None:
                return self.record_statistic(name, values, count)
            mask = chosen.view(*chosen.shape, *[1] * (values.dim() - chosen.dim()))
            per_position = values[0, 0].numel() if values.dim() > chosen.dim() else 1
            self.record_statistic(name, values * mask, n_chosen * per_position if count is None else count)

        if denoiser_top is not None:
            record("recon_top1", denoiser_top[..., 0] == original)  # original item ranked first
            record("recon_topk", (denoiser_top == original[..., None]).any(-1))  # among the top k
        if candidates is not None and candidates is not denoiser_top:
            record("view_cand_original", (candidates == original[..., None]).any(-1))
        if sampled is None:
            return
        record("repl_is_original", sampled == original[..., None])  # replacement = replaced item
        # the two sides of the contrastive pair: two views, or the one view and the original
        differ = sampled[..., 0] != (sampled[..., 1] if sampled.size(-1) > 1 else original)
        record("chosen_views_differ", differ)  # share of chosen positions where views differ
        record("views_differ", differ, real.sum())  # share of all real positions (as CL4SRec's)
        if self.has_item_counts:  # mean popularity percentile (0 rarest, 1 most popular) of items in and out
            record("pop_pct_replacement", self.item_percentiles[sampled])
            record("pop_pct_original", self.item_percentiles[original])

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
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, chosen: torch.Tensor, real: torch.Tensor,
        x0, x0_pred, logits, denoiser_top,
    ) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, torch.Tensor]]]:
        """(replacements: N x ``n_views``, one column per view; the candidates they were drawn from as
        (scores, ids), N x k each, or None for the random and popularity sources)."""
        top = None
        if self.aug_source == "diffusion":
            default = self.views_use_training_pass and self.aug_candidate_scores == "dot" and self.aug_exclude == "none"
            if default and self.aug_sampling == "topk_uniform":  # the paper's views: no second top-k
                top = (None, denoiser_top)
            else:
                scores = self.view_scores(item_seq, item_seq_len, real, chosen, x0, x0_pred, logits)
                top = diffusion.topk_candidates(scores, self.aug_topk)
        if top is None:
            shape = chosen.shape if self.sync_free else int(chosen.sum())
            return self.sample_replacements(shape, n_views=self.n_views), None
        return self.sample_replacements(top[1].shape[:-1], top[1], self.n_views, candidate_scores=top[0]), top

    def view_rec_loss(
        self, views: list[torch.Tensor], item_seq: torch.Tensor, item_seq_len: torch.Tensor, interaction
    ) -> torch.Tensor:
        """The next-item loss with each view as the input and the original sequence's targets (the views as
        extra training sequences, after DiffuASR), averaged over the views."""
        losses = []
        for view in views:
            if self.whole_sequence:
                outputs = self.encode_all_positions(view, item_seq_len)
                losses.append(self.every_position_loss(outputs, item_seq, item_seq_len, interaction))
            else:
                losses.append(self.rec_loss(self.forward(view, item_seq_len), interaction))
        return torch.stack(losses).mean()

    def views_active(self) -> bool:
        """Whether this step makes views: for the contrastive loss or the views' next-item loss, after
        ``cl_warmup_epochs``."""
        return (self.cl_weight > 0 or self.aug_rec_weight > 0) and self.current_epoch >= self.cl_warmup_epochs

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = self.trim(interaction[self.ITEM_SEQ], item_seq_len)
        original_output, rec_loss = self.encode_with_next_item_loss(item_seq, item_seq_len, interaction)
        zero = rec_loss.new_zeros(())

        # Forward diffusion on a few chosen positions, then predict x0 from both-sided context.
        real = item_seq != 0
        chosen = diffusion.choose_positions(item_seq, self.mask_ratio, dense=self.sync_free)
        if self.sync_free:  # every position carried along, the chosen ones kept by masks: no host read
            original = item_seq
        elif not chosen.any():
            return rec_loss, zero, zero, zero, zero
        else:
            original = item_seq[chosen]
        nll_loss = mse_loss = zero
        x0, x0_pred, logits, denoiser_top = self.run_denoiser(item_seq, item_seq_len, real, chosen)
        if x0 is not None and self.train_diffusion:
            nll_loss, mse_loss = self.diffusion_losses(x0, x0_pred, logits, original, chosen)

        cl_loss = view_rec = zero
        sampled = candidates = None
        if self.views_active():
            sampled, top = self.view_replacements(item_seq, item_seq_len, chosen, real, x0, x0_pred, logits,
                                                  denoiser_top)
            candidates = top[1] if top is not None else None
            views = diffusion.make_views(item_seq, chosen, sampled)
            if self.cl_weight > 0:
                cl_loss = self.views_contrastive_loss(views, item_seq_len, real, original_output)
            if self.aug_rec_weight > 0:
                view_rec = self.view_rec_loss(views, item_seq, item_seq_len, interaction)
        self.record_view_statistics(original, real, denoiser_top, sampled, candidates,
                                    chosen if self.sync_free else None)

        return (
            rec_loss,
            self.cl_weight * cl_loss,
            self.nll_weight * nll_loss,
            self.mse_weight * mse_loss,
            self.aug_rec_weight * view_rec,
        )

    def views_contrastive_loss(
        self, views: list[torch.Tensor], item_seq_len: torch.Tensor, real: torch.Tensor,
        original_output: Optional[torch.Tensor] = None,
    ):
        """InfoNCE between the two views: their last-position outputs, or (``cl_positions: every``) their
        outputs at every real position; with ``cl_pair: view_and_original``, between the one view's
        last-position output and ``original_output`` (B x d: the original sequence's, from the recommender's
        pass, so the pair costs one encoder pass of B rows instead of two)."""
        # The authors embed views with a gradient-free copy of the table; detach() avoids copying it.
        item_weight = self.item_embedding.weight.detach() if self.cl_detach_view_embeddings else None
        if self.cl_pair == "view_and_original":
            (z,) = self.encode_views(views, item_seq_len, item_weight)
            return self.contrastive_loss(original_output, z)
        if self.cl_positions == "every":
            # both views at every real position: the replacements sit at the same positions in both, so
            # position i of one view is the positive of position i of the other
            outputs = self.encode_all_positions(torch.cat(views), item_seq_len.repeat(2), item_weight)
            z1, z2 = (view_outputs[real] for view_outputs in outputs.chunk(2))
        else:
            z1, z2 = self.encode_views(views, item_seq_len, item_weight)
        return self.contrastive_loss(z1, z2)
