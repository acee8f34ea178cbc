"""Next-item losses over the whole item table, shared by the plugin's models.

:func:`linear_cross_entropy` is the cross-entropy of the scores ``h @ W.T`` of every item, the plugin's
``loss_type: CE`` at every position. The plain way builds the N x n_items score matrix, its log-softmax,
the NLL's zero-filled gradient and the log-softmax's gradient: four passes over the largest tensors of a
step (2,000 positions x 12,101 items on Beauty), which cost more than the matrix products on a CPU. The
fused way computes the loss and both gradients chunk by chunk in its forward pass, while each chunk of
scores is still in the cache, and keeps only the gradients (N x d and n_items x d) for the backward pass:
the same values (tests: to float rounding), the same three matrix products, a fraction of the memory
traffic. It is ``fused_cross_entropy: auto`` (on for a CPU; a GPU keeps torch's kernels, one launch each).

:func:`sampled_softmax_loss` (``loss_type: SSM``) scores a few hundred sampled negatives instead of the
whole table, for catalogs where the full softmax does not fit.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

#: positions per chunk: 256 x 12,101 scores (12 MB) stay in a CPU's last-level cache
CHUNK_ROWS = 256


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean over rows with target != ignore_index of CE(h @ W.T, target); gradients made in the forward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                chunk: int) -> torch.Tensor:
        keep = targets != ignore_index
        count = keep.sum().clamp(min=1)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(h) if need_grad else None
        grad_w = torch.zeros_like(weight) if need_grad else None
        total = h.new_zeros((), dtype=torch.float32)
        for start in range(0, h.size(0), chunk):
            rows_h = h[start : start + chunk]
            rows_keep = keep[start : start + chunk]
            safe_t = targets[start : start + chunk].masked_fill(~rows_keep, 0)
            index = torch.arange(safe_t.size(0), device=h.device)
            # scores with items along rows (n_items x chunk): on a CPU these products run ~1.3x faster than
            # the other orientation, and the reductions run along contiguous rows
            scores = weight @ rows_h.T
            target_scores = scores[safe_t, index]
            # log-sum-exp and softmax with one exp pass, in place of the scores
            top = scores.amax(dim=0, keepdim=True)
            probs = scores.sub_(top).exp_()
            sums = probs.sum(dim=0, keepdim=True)
            lse = top.squeeze(0) + sums.squeeze(0).log()
            total = total + ((lse - target_scores) * rows_keep).sum()
            if need_grad:
                probs.div_(sums)
                probs[safe_t, index] -= 1.0
                if not bool(rows_keep.all()):  # (a host read: the fused path runs on CPUs)
                    probs.mul_(rows_keep[None, :])  # ignored rows give no gradient
                torch.mm(probs.T, weight, out=grad_h[start : start + chunk])
                grad_w.addmm_(probs, rows_h)
        ctx.save_for_backward(grad_h, grad_w, count)
        return total / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad_output / count
        return (grad_h * scale if ctx.needs_input_grad[0] else None,
                grad_w * scale if ctx.needs_input_grad[1] else None, None, None, None)


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, fused: bool = False, ignore_index: int = -100
) -> torch.Tensor:
    """Mean cross-entropy of the item scores ``h @ weight.T`` (N x d against n_items x d) for ``targets`` (N),
    rows whose target is ``ignore_index`` left out; ``fused``: chunk by chunk (module docstring), else
    torch's ``F.cross_entropy`` on the full score matrix."""
    if (fused and torch.is_grad_enabled() and h.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_autocast_enabled(h.device.type)):  # mixed precision (enable_amp) keeps torch's path
        return _ChunkedLinearCrossEntropy.apply(h, weight, targets, ignore_index, CHUNK_ROWS)
    return F.cross_entropy(h @ weight.T, targets, ignore_index=ignore_index)


def sampled_softmax_loss(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    n_negatives: int,
    sampling_probs: Optional[torch.Tensor] = None,
    ignore_index: int = -100,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Sampled softmax (``loss_type: SSM``): the CE of each target against ``n_negatives`` items drawn once
    for the whole batch, with replacement (uniformly over the real items 1..n_items-1, or by
    ``sampling_probs``, n_items values). The logQ correction scores each negative j minus log(K q_j), its
    expected count among the K draws, so that the sum over the negatives estimates the sum over all items
    (unbiased): the loss approaches the full softmax's as K grows. A negative that is a row's own target is
    masked out of that row. Cost and memory grow with ``n_negatives``, not the catalog: the loss of
    SASRec+SS and eSASRec for catalogs too large for the full softmax.
    """
    n_items = weight.size(0)
    if sampling_probs is None:
        negatives = torch.randint(1, n_items, (n_negatives,), device=h.device, generator=generator)
        log_expected = torch.full((n_negatives,), math.log(n_negatives / max(1, n_items - 1)), device=h.device)
    else:
        negatives = torch.multinomial(sampling_probs, n_negatives, replacement=True, generator=generator)
        log_expected = torch.log(n_negatives * sampling_probs[negatives])
    keep = targets != ignore_index
    safe_t = targets.masked_fill(~keep, 0)
    positive = (h * weight[safe_t]).sum(-1)  # N
    scores = h @ weight[negatives].T - log_expected  # N x K
    scores = scores.masked_fill(negatives[None, :] == safe_t[:, None], float("-inf"))  # accidental hits
    losses = torch.logsumexp(torch.cat([positive[:, None], scores], dim=1), dim=1) - positive
    return (losses * keep).sum() / keep.sum().clamp(min=1)
