"""Diffusion machinery of DiffCLRec, independent of any RecBole dataset.

DiffCLRec (Cui et al., "Diffusion-based Contrastive Learning for Sequential Recommendation",
arXiv 2405.09369; CIKM 2024 as CaDiRec) replaces a few items of a user sequence with items that a
diffusion model generates from the context on both sides. This module holds the parts of that
process that do not depend on RecBole:

- :class:`NoiseSchedule`: betas / alpha-bars for the ``sqrt`` (DiffuSeq), ``linear`` and ``cosine``
  schedules;
- :func:`choose_positions`, :func:`add_context_noise`, :func:`q_sample`: which positions to replace
  and the forward (noising) process applied to those positions only;
- :class:`Denoiser`: a bidirectional Transformer that predicts x0 from x_t and the timestep;
- :func:`sample_topk`, :func:`make_views`, :func:`ddim_reverse`: turning denoiser predictions into
  augmented item sequences (one-step x0 prediction as the authors do, or a few-step DDIM sampler).

All random draws are made per *real* (or per chosen) position, never per padded cell, so a batch
trimmed to its longest sequence draws exactly the same numbers as the padded batch. Every function
takes an optional ``torch.Generator`` so that seeded runs repeat exactly.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from recbole.model.layers import TransformerEncoder

from recbole_diffcl.layers import DisentangledTransformerEncoder, attend_from_positions

NOISE_SCHEDULES = ("sqrt", "linear", "cosine")
POSITION_MODES = ("relative", "disentangled", "absolute", "none")
#: what each position of the denoiser may attend to: the whole sequence (the method), the positions up to
#: itself (causal), or only itself (no context: the noisy position and the timestep)
CONTEXT_MODES = ("both", "left", "none")


def visible_pairs(length: int, context: str, device=None) -> torch.Tensor:
    """L x L bool, [i, j] = whether query position i may attend to key position j under ``context``."""
    if context not in CONTEXT_MODES:
        raise ValueError(f"unknown denoiser context '{context}', expected one of {CONTEXT_MODES}")
    pos = torch.arange(length, device=device)
    if context == "left":
        return pos[None, :] <= pos[:, None]
    if context == "none":
        return pos[None, :] == pos[:, None]
    return torch.ones(length, length, dtype=torch.bool, device=device)


def _betas_for_alpha_bar(steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    # Discretise a continuous alpha-bar(s), s in [0, 1], into per-step betas (Nichol & Dhariwal 2021).
    betas = [min(1.0 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return np.asarray(betas, dtype=np.float64)


def make_betas(name: str, steps: int) -> np.ndarray:
    """Betas of the named noise schedule with ``steps`` steps (float64, each in (0, 1))."""
    if steps < 1:
        raise ValueError(f"diffusion_steps must be >= 1, got {steps}")
    if name == "sqrt":  # DiffuSeq's schedule, used by the DiffCLRec authors
        return _betas_for_alpha_bar(steps, lambda s: 1.0 - math.sqrt(s + 1e-4))
    if name == "linear":  # DDPM's, rescaled so that any step count spans the same noise range
        scale = 1000.0 / steps
        return np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), steps, dtype=np.float64)
    if name == "cosine":
        return _betas_for_alpha_bar(steps, lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ValueError(f"unknown noise_schedule '{name}', expected one of {NOISE_SCHEDULES}")


class NoiseSchedule(nn.Module):
    """Per-step coefficients of the forward process q(x_t | x_0), kept as (non-persistent) buffers."""

    def __init__(self, name: str = "sqrt", steps: int = 1000):
        super().__init__()
        self.name, self.steps = name, steps
        betas = make_betas(name, steps)
        alphas_cumprod = np.cumprod(1.0 - betas)
        as_buffer = lambda array: torch.tensor(array, dtype=torch.float32)  # noqa: E731
        self.register_buffer("betas", as_buffer(betas), persistent=False)
        self.register_buffer("alphas_cumprod", as_buffer(alphas_cumprod), persistent=False)
        self.register_buffer("sqrt_alphas_cumprod", as_buffer(np.sqrt(alphas_cumprod)), persistent=False)
        self.register_buffer(
            "sqrt_one_minus_alphas_cumprod", as_buffer(np.sqrt(1.0 - alphas_cumprod)), persistent=False
        )

    def sample_timesteps(self, batch_size: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One timestep per sequence, uniform over {0, ..., steps - 1}."""
        return torch.randint(0, self.steps, (batch_size,), generator=generator, device=self.betas.device)


def _randn(n: int, dim: int, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randn(n, dim, generator=generator, device=like.device, dtype=like.dtype)


def choose_positions(
    item_seq: torch.Tensor, ratio: float, generator: Optional[torch.Generator] = None, dense: bool = False
) -> torch.Tensor:
    """Bool mask (B x L): each real (non-zero) position is chosen independently with probability ``ratio``.

    ``dense``: one draw per cell, padding included (no host read, for ``sync_free_steps``; other draws)."""
    real = item_seq != 0
    if dense:
        return real & (torch.rand(item_seq.shape, generator=generator, device=item_seq.device) < ratio)
    chosen = torch.zeros_like(real)
    # One draw per real position (row-major order), so trimming the padding changes nothing.
    draws = torch.rand(int(real.sum()), generator=generator, device=item_seq.device)
    chosen[real] = draws < ratio
    return chosen


def add_context_noise(
    emb: torch.Tensor, real: torch.Tensor, schedule: NoiseSchedule, generator: Optional[torch.Generator] = None,
    dense: bool = False,
) -> torch.Tensor:
    """x0 = E[S] plus Gaussian noise of std sqrt(1 - alpha-bar_0) at every real position (DiffuSeq's x_start).

    ``dense``: noise drawn at every cell and masked (no host read; other draws)."""
    if dense:
        noise = _randn(real.numel(), emb.size(-1), emb, generator).view(emb.shape) * real[..., None]
        return emb + schedule.sqrt_one_minus_alphas_cumprod[0] * noise
    noise = torch.zeros_like(emb)
    noise[real] = _randn(int(real.sum()), emb.size(-1), emb, generator)
    return emb + schedule.sqrt_one_minus_alphas_cumprod[0] * noise


def q_sample(
    x0: torch.Tensor,
    t: torch.Tensor,
    chosen: torch.Tensor,
    schedule: NoiseSchedule,
    generator: Optional[torch.Generator] = None,
    dense: bool = False,
) -> torch.Tensor:
    """Forward diffusion at chosen positions only; every other position keeps x0 exactly (the context).

    x0: B x L x d, t: B (one timestep per sequence), chosen: B x L bool. ``dense``: noise drawn at every
    cell, kept at the chosen ones (no host read; other draws).
    """
    if dense:
        noise = _randn(chosen.numel(), x0.size(-1), x0, generator).view(x0.shape)
        noisy = (schedule.sqrt_alphas_cumprod[t][:, None, None] * x0
                 + schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None] * noise)
        return torch.where(chosen[..., None], noisy, x0)
    rows, cols = chosen.nonzero(as_tuple=True)
    step = t[rows]
    noise = _randn(rows.numel(), x0.size(-1), x0, generator)
    noisy = (
        schedule.sqrt_alphas_cumprod[step, None] * x0[rows, cols]
        + schedule.sqrt_one_minus_alphas_cumprod[step, None] * noise
    )
    return x0.index_put((rows, cols), noisy)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim), as in DDPM / DiffuSeq."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Denoiser(nn.Module):
    """Bidirectional Transformer f(x_t, t) -> x0 prediction for every position.

    Only padding is masked: each position sees the context on both sides (``context``: ``both``; the
    ablations ``left`` (a causal mask: positions up to itself) and ``none`` (only itself: the noisy
    position and the timestep) take context away). Position information (``position``):

    - ``relative``: a learned per-head bias on the attention score for each distance, shared by all
      layers (our default: a small stand-in for the authors' relative attention);
    - ``disentangled``: DeBERTa-v1 attention with content-to-position and position-to-content terms,
      as the authors' denoiser (:mod:`recbole_diffcl.layers`);
    - ``absolute``: learned position embeddings added to the input; ``none``: no position information.

    The input is x_t plus a timestep embedding, then LayerNorm and dropout (``input_dropout_prob``; the
    authors reuse SASRec's 0.5). ``output_layer`` adds a Linear after the encoder (the authors have none:
    the last hidden state is the x0 prediction).
    """

    def __init__(
        self,
        hidden_size: int,
        max_seq_length: int,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 128,
        hidden_dropout_prob: float = 0.2,
        attn_dropout_prob: float = 0.2,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-12,
        position: str = "relative",
        input_dropout_prob: Optional[float] = None,
        output_layer: bool = True,
        context: str = "both",
    ):
        super().__init__()
        if position not in POSITION_MODES:
            raise ValueError(f"unknown denoiser position mode '{position}', expected one of {POSITION_MODES}")
        if context not in CONTEXT_MODES:
            raise ValueError(f"unknown denoiser context '{context}', expected one of {CONTEXT_MODES}")
        self.context = context
        self.hidden_size, self.max_seq_length, self.n_heads, self.position = (
            hidden_size, max_seq_length, n_heads, position,
        )
        self.time_mlp = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size), nn.SiLU(), nn.Linear(4 * hidden_size, hidden_size)
        )
        if position == "absolute":
            self.position_embedding = nn.Embedding(max_seq_length, hidden_size)
        elif position == "relative":
            self.relative_bias = nn.Embedding(2 * max_seq_length - 1, n_heads)
            nn.init.zeros_(self.relative_bias.weight)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob if input_dropout_prob is None else input_dropout_prob)
        layer_args = dict(
            n_layers=n_layers,
            n_heads=n_heads,
            hidden_size=hidden_size,
            inner_size=inner_size,
            hidden_dropout_prob=hidden_dropout_prob,
            attn_dropout_prob=attn_dropout_prob,
            hidden_act=hidden_act,
            layer_norm_eps=layer_norm_eps,
        )
        if position == "disentangled":
            self.encoder = DisentangledTransformerEncoder(span=max_seq_length, **layer_args)
        else:
            self.encoder = TransformerEncoder(**layer_args)
        self.output = nn.Linear(hidden_size, hidden_size) if output_layer else nn.Identity()

    def attention_mask(self, real: torch.Tensor, same_sequence: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Additive mask: -10000 on padded keys (as RecBole) and on keys outside the ``context``, plus the
        relative-position bias. ``same_sequence`` (B x L x L bool), for rows that pack several sequences:
        the keys of the query's own sequence (context and distances then hold within each sequence, whose
        items keep their order in adjacent slots)."""
        if same_sequence is None:
            mask = torch.where(real[:, None, None, :], 0.0, -10000.0)  # B x 1 x 1 x L
        else:
            mask = torch.where((same_sequence & real[:, None, :])[:, None], 0.0, -10000.0)  # B x 1 x L x L
        if self.context != "both":
            hidden = ~visible_pairs(real.size(1), self.context, real.device)
            mask = mask + torch.where(hidden, -10000.0, 0.0)[None, None]  # B x 1 x L x L
        if self.position == "relative":
            length = real.size(1)
            pos = torch.arange(length, device=real.device)
            distance = (pos[None, :] - pos[:, None]) + self.max_seq_length - 1  # L x L, key - query
            bias = self.relative_bias(distance).permute(2, 0, 1)  # H x L x L
            mask = mask + bias[None]
        return mask

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        real: torch.Tensor,
        at: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        same_sequence: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x_t: B x L x d noisy embeddings, t: B timesteps (or B x L, one per position), real: B x L bool
        (non-padding).

        Returns the x0 prediction at every position (B x L x d), or with ``at`` (B x L bool) only at those
        positions (N x d, row-major order, as ``[at]`` would give): the last layer then computes only
        those queries (the same values; the chosen positions are ~10% of a training batch).
        Rows that pack several sequences (model/packing.py) give each slot's ``positions`` within its
        sequence and ``same_sequence`` (``attention_mask``); the ``disentangled`` attention takes no packed rows.
        """
        time = self.time_mlp(timestep_embedding(t.reshape(-1), self.hidden_size))
        h = x_t + (time[:, None, :] if t.dim() == 1 else time.view(*t.shape, -1))
        if self.position == "absolute":
            h = h + (self.position_embedding.weight[: x_t.size(1)][None] if positions is None
                     else self.position_embedding(positions))
        h = self.dropout(self.LayerNorm(h))
        if self.position == "disentangled":
            if same_sequence is not None:
                raise ValueError("the disentangled denoiser takes no packed rows (pack_sequences)")
            visible = None if self.context == "both" else visible_pairs(real.size(1), self.context, real.device)
            h = self.encoder(h, real, visible)
            return self.output(h if at is None else h[at])
        mask = self.attention_mask(real, same_sequence)
        if at is None:
            return self.output(self.encoder(h, mask, output_all_encoded_layers=False)[-1])
        *lower, last = self.encoder.layer
        for layer in lower:
            h = layer(h, mask)
        rows, positions = at.nonzero(as_tuple=True)
        h = attend_from_positions(last.multi_head_attention, h, mask, rows, positions)
        return self.output(last.feed_forward(h))


def topk_candidates(
    logits: torch.Tensor, k: int, excluded: tuple[int, ...] = (0,)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k items of each row of ``logits`` (N x n_items, or any leading shape), best first: (scores,
    item ids), N (...) x k each.

    Ids in ``excluded`` (the padding id 0) are never among them; k is cut to the number of allowed ids.
    """
    logits = logits.detach().clone()
    for item in excluded:  # one scalar index at a time: no index tensor copied from the host
        logits[..., item] = -torch.inf
    k = max(1, min(k, logits.size(-1) - len(excluded)))
    return logits.topk(k, dim=-1)


def sample_from_candidates(
    top: torch.Tensor, n_views: int = 2, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """For each row of ``top`` (N (...) x k candidate ids) draw ``n_views`` of them uniformly: N (...) x n_views."""
    pick = torch.randint(0, top.size(-1), (*top.shape[:-1], n_views), generator=generator, device=top.device)
    return top.gather(-1, pick)


def sample_topk(
    logits: torch.Tensor,
    k: int,
    n_views: int = 2,
    excluded: tuple[int, ...] = (0,),
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """For each row of ``logits`` (N x n_items, or any leading shape) draw ``n_views`` items uniformly from
    its top-k.

    Ids in ``excluded`` (the padding id 0) are never returned. Returns N (...) x n_views item ids.
    """
    return sample_from_candidates(topk_candidates(logits, k, excluded).indices, n_views, generator)


def make_views(item_seq: torch.Tensor, chosen: torch.Tensor, sampled: torch.Tensor) -> list[torch.Tensor]:
    """One augmented copy of ``item_seq`` per column of ``sampled`` (N_chosen x n_views).

    Chosen positions take the sampled items (row-major order of ``chosen``); all others keep the original.
    ``sampled`` may also hold a draw for every position (B x L x n_views, no host read), kept where chosen.
    """
    if sampled.dim() == chosen.dim() + 1:
        return [torch.where(chosen, sampled[..., v], item_seq) for v in range(sampled.size(-1))]
    views = []
    for v in range(sampled.size(1)):
        view = item_seq.clone()
        view[chosen] = sampled[:, v]
        views.append(view)
    return views


@torch.no_grad()
def ddim_reverse(
    denoiser: Denoiser,
    x_context: torch.Tensor,
    chosen: torch.Tensor,
    real: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int = 5,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Few-step deterministic DDIM sampler (eta = 0) from pure noise at the chosen positions.

    The context (unchosen positions) stays at ``x_context`` throughout, so every step is conditioned on
    both sides of each chosen position. Returns the final x0 prediction (B x L x d).
    """
    rows, cols = chosen.nonzero(as_tuple=True)
    x = x_context.index_put((rows, cols), _randn(rows.numel(), x_context.size(-1), x_context, generator))
    timesteps = torch.linspace(schedule.steps - 1, 0, max(1, steps)).round().long().unique_consecutive()
    x0_hat = x
    for i, step in enumerate(timesteps.tolist()):
        t = torch.full((x.size(0),), step, dtype=torch.long, device=x.device)
        x0_hat = denoiser(x, t, real)
        if i + 1 == len(timesteps):
            break
        prev = int(timesteps[i + 1])
        a_t, s_t = schedule.sqrt_alphas_cumprod[step], schedule.sqrt_one_minus_alphas_cumprod[step]
        a_p, s_p = schedule.sqrt_alphas_cumprod[prev], schedule.sqrt_one_minus_alphas_cumprod[prev]
        eps = (x[rows, cols] - a_t * x0_hat[rows, cols]) / s_t
        x = x.index_put((rows, cols), a_p * x0_hat[rows, cols] + s_p * eps)
    return x0_hat
