"""DeBERTa-v1 disentangled attention: the relative-position Transformer of DiffCLRec's denoiser.

The DiffCLRec authors build their denoiser from HuggingFace's ``DebertaEncoder`` (He et al., "DeBERTa:
Decoding-enhanced BERT with Disentangled Attention", ICLR 2021) with ``relative_attention=True``,
``pos_att_type=[p2c, c2p]``, ``position_biased_input=False`` and ``max_relative_positions=-1`` (so the
span k is the maximum sequence length). This module is that encoder, written on plain torch so that the
plugin needs no ``transformers``; ``tests/test_strong_regime.py`` checks it against ``transformers`` when
that package is installed.

Per layer, with one table R of 2k relative-position embeddings shared by all layers (each layer applies
its own dropout to it, as DeBERTa's ``pos_dropout`` does),
and delta(i, j) = clamp(i - j + k, 0, 2k - 1), the score of query i on key j is

    [ q_i . k_j  +  q_i . Kr[delta(i, j)]  (c2p)  +  k_j . Qr[delta(i, j)]  (p2c) ] / sqrt(3 d_head)

with Kr = pos_proj(R) (no bias) and Qr = pos_q_proj(R). (The DeBERTa paper writes the p2c index as
delta(j, i); the released code, which the authors ran, gathers it so that it equals delta(i, j).)
Padding is masked as keys and as queries (a padded query attends to nothing and yields zeros before the
output projection), as DeBERTa's ``XSoftmax``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
from recbole.model.layers import FeedForward


def relative_index(length: int, span: int, device=None) -> torch.Tensor:
    """L x L indices delta(i, j) = clamp(i - j + span, 0, 2 span - 1) into the relative-position table."""
    pos = torch.arange(length, device=device)
    return (pos[:, None] - pos[None, :] + span).clamp(0, 2 * span - 1)


class DisentangledSelfAttention(nn.Module):
    """DeBERTa-v1 self-attention (content-to-content, content-to-position, position-to-content) + output."""

    def __init__(self, hidden_size: int, n_heads: int, hidden_dropout_prob: float, attn_dropout_prob: float,
                 layer_norm_eps: float):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the number of heads {n_heads}")
        self.n_heads, self.head_size = n_heads, hidden_size // n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)  # DeBERTa's in_proj has no key bias
        self.value = nn.Linear(hidden_size, hidden_size)
        self.pos_proj = nn.Linear(hidden_size, hidden_size, bias=False)  # keys of relative positions (c2p)
        self.pos_q_proj = nn.Linear(hidden_size, hidden_size)  # queries of relative positions (p2c)
        self.attn_dropout = nn.Dropout(attn_dropout_prob)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """... x d -> ... heads x positions x d_head (for B x L x d: B x H x L x d_head)."""
        x = x.view(*x.shape[:-1], self.n_heads, self.head_size)
        return x.transpose(-3, -2)

    def forward(self, h: torch.Tensor, pair_mask: torch.Tensor, rel: torch.Tensor, delta: torch.Tensor):
        """h: B x L x d; pair_mask: B x 1 x L x L bool (query and key both real); rel: 2k x d (after
        dropout); delta: L x L relative indices."""
        scale = math.sqrt(self.head_size * 3)
        q = self.heads(self.query(h)) / scale  # B x H x L x dh
        k = self.heads(self.key(h))
        v = self.heads(self.value(h))
        pos_k = self.heads(self.pos_proj(rel))  # H x 2k x dh
        pos_q = self.heads(self.pos_q_proj(rel)) / scale
        expand = lambda index: index.expand(q.size(0), self.n_heads, -1, -1)  # noqa: E731
        c2p = torch.gather(q @ pos_k.transpose(-1, -2), -1, expand(delta))  # [b, h, i, j] = q_i . Kr[delta(i, j)]
        # rows of k @ pos_q^T are keys: gathering at delta^T[j, i] = delta(i, j), then transposing, gives
        # [b, h, i, j] = k_j . Qr[delta(i, j)], as DeBERTa's code does
        p2c = torch.gather(k @ pos_q.transpose(-1, -2), -1, expand(delta.T)).transpose(-1, -2)
        scores = q @ k.transpose(-1, -2) + c2p + p2c
        scores = scores.masked_fill(~pair_mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1).masked_fill(~pair_mask, 0.0)
        context = (self.attn_dropout(probs) @ v).transpose(1, 2).reshape(h.shape)
        return self.LayerNorm(self.out_dropout(self.dense(context)) + h)


class DisentangledTransformerEncoder(nn.Module):
    """A stack of DeBERTa-v1 layers (disentangled attention + feed-forward, post-LayerNorm) sharing one
    table of 2 ``span`` relative-position embeddings."""

    def __init__(self, n_layers: int, n_heads: int, hidden_size: int, inner_size: int, span: int,
                 hidden_dropout_prob: float, attn_dropout_prob: float, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.span = span
        self.rel_embeddings = nn.Embedding(2 * span, hidden_size)
        self.rel_dropout = nn.Dropout(hidden_dropout_prob)
        self.attention = nn.ModuleList(
            DisentangledSelfAttention(hidden_size, n_heads, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps)
            for _ in range(n_layers)
        )
        self.feed_forward = nn.ModuleList(
            FeedForward(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)
            for _ in range(n_layers)
        )

    def forward(self, h: torch.Tensor, real: torch.Tensor, visible: Optional[torch.Tensor] = None) -> torch.Tensor:
        """h: B x L x d input, real: B x L bool (non-padding), visible: optional L x L bool of the (query,
        key) pairs allowed besides padding (e.g. a causal mask). Returns the last layer's output."""
        pair_mask = (real[:, None, :, None] & real[:, None, None, :])  # B x 1 x L x L
        if visible is not None:
            pair_mask = pair_mask & visible
        delta = relative_index(h.size(1), self.span, h.device)
        for attention, feed_forward in zip(self.attention, self.feed_forward):
            # a dropout mask of its own per layer, as each of DeBERTa's attention layers draws one
            h = feed_forward(attention(h, pair_mask, self.rel_dropout(self.rel_embeddings.weight), delta))
        return h


def attend_from_one_position(attention, h: torch.Tensor, attention_mask: torch.Tensor, query_index: torch.Tensor):
    """RecBole's ``MultiHeadAttention`` (``attention``, its weights and dropouts) for one query position per
    row: the output at ``query_index`` (B) of ``attention(h, attention_mask)``, B x d, without computing the
    other positions' queries (their keys and values are still needed).

    A causal encoder's sequence representation is its last layer's output at the last real position: the
    last layer then needs one query per row instead of L, which the sequence representation of every view,
    prefix row and evaluated user uses.
    """
    return attend_from_positions(attention, h, attention_mask, None, query_index)


def attend_from_positions(
    attention, h: torch.Tensor, attention_mask: torch.Tensor, rows: Optional[torch.Tensor], positions: torch.Tensor
) -> torch.Tensor:
    """``attention(h, attention_mask)`` (RecBole's ``MultiHeadAttention``) at the N query positions
    (``rows[i]``, ``positions[i]``) only: N x d. Keys and values are projected once per row; a row may have
    several queries (packed sequences' last positions, the denoiser's chosen positions). ``rows`` None: one
    query per row, in row order. ``attention_mask`` is additive, B x (1 or H) x (1 or L) x L."""
    heads = lambda t: t.view(*t.shape[:-1], attention.num_attention_heads, attention.attention_head_size)  # noqa: E731
    key = heads(attention.key(h)).permute(0, 2, 3, 1)  # B x H x dh x L
    value = heads(attention.value(h)).permute(0, 2, 1, 3)  # B x H x L x dh
    mask = attention_mask.expand(-1, -1, h.size(1), -1)
    if rows is None:
        x = h[torch.arange(h.size(0), device=h.device), positions]  # B x d
        slots = x.unsqueeze(1)  # B x 1 x d: one query per row
        mask = mask[torch.arange(h.size(0), device=h.device), :, positions].unsqueeze(2)  # B x (1 or H) x 1 x L
    else:
        # The queries of each row side by side (A = the most any row has) so that they meet their own row's keys
        # in one batched product: no copy of a row's keys and values per query, whose gathering and gradient
        # cost more than the scores themselves (e.g. 512 views' anchors in ~60 packed rows).
        # (``slot.max()`` is a host read; its callers, packed rows and chosen positions, read the host anyway)
        x = h[rows, positions]  # N x d
        slot = query_slots(rows, h.size(0))
        width = int(slot.max()) + 1 if slot.numel() else 1
        place = torch.zeros(h.size(0), width, dtype=torch.long, device=h.device)
        place[rows, slot] = positions  # R x A positions (unused slots: position 0, their outputs dropped)
        slots = h.gather(1, place[:, :, None].expand(-1, -1, h.size(2)))  # R x A x d
        mask = mask.gather(2, place[:, None, :, None].expand(-1, mask.size(1), -1, mask.size(3)))  # R x . x A x L
    query = heads(attention.query(slots)).transpose(1, 2)  # R x H x A x dh
    probs = attention.softmax(query @ key / attention.sqrt_attention_head_size + mask)  # R x H x A x L
    if rows is None:
        probs = attention.attn_dropout(probs)
    elif attention.training and attention.attn_dropout.p > 0:
        # the dropout's mask drawn for the N real queries only (its own scaling), unused slots kept as they are
        n_rows, n_heads, width, length = probs.shape
        keep = probs.new_ones(n_rows, width, n_heads, length)
        keep[rows, slot] = attention.attn_dropout(probs.new_ones(rows.numel(), probs.size(1), probs.size(3)))
        probs = probs * keep.transpose(1, 2)
    context = (probs @ value).transpose(1, 2).flatten(2)  # R x A x d
    context = context.squeeze(1) if rows is None else context[rows, slot]  # N x d (N may be 0)
    return attention.LayerNorm(attention.out_dropout(attention.dense(context)) + x)


def query_slots(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Each query's place among its row's queries (0, 1, ... in the order given): N, for ``rows`` (N)."""
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=n_rows)
    first = torch.cumsum(counts, 0) - counts  # where each row's queries begin in ``order``
    slot = torch.empty_like(rows)
    slot[order] = torch.arange(rows.numel(), device=rows.device) - first[rows[order]]
    return slot
