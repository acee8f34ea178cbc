"""Sequence views for the contrastive baselines, vectorised over the batch.

* CL4SRec's random augmentations (Xie et al., "Contrastive Learning for Sequential Recommendation",
  ICDE 2022): :func:`crop`, :func:`mask`, :func:`reorder`, and :func:`augment_views` which gives every
  sequence two views made by two distinct operations drawn at random.
* DuoRec's supervised positives (Qiu et al., "Contrastive Learning for Representation Degeneration
  Problem in Sequential Recommendation", WSDM 2022): :class:`SameTargetIndex`, another training row
  with the same next item, sampled without any Python loop over rows.

Every function takes left-aligned, zero-padded sequences (B x L, as RecBole stores them) and their
lengths, returns *new* tensors (inputs are never written to: RecBole's stored training data must not
drift between epochs) and accepts an optional ``torch.Generator`` (on the tensors' device) so that a
result can be reproduced without a dataset or a model.

Counts follow the authors' code (``math.floor`` of share x length): crop keeps
``max(1, floor(eta * len))`` items (the authors leave length-1 sequences unaugmented, which the
``max(1, .)`` reproduces), mask replaces ``floor(gamma * len)`` items, reorder shuffles a window of
``floor(beta * len)`` items.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

AUG_OPERATIONS = ("crop", "mask", "reorder")


def _uniform(shape: Sequence[int], like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, device=like.device)


def _share_count(item_seq_len: torch.Tensor, share: float) -> torch.Tensor:
    # floor(share * len) in float64, so that e.g. 0.6 * 5 gives 3 and not 2.9999...
    return torch.floor(item_seq_len.double() * share + 1e-9).long()


def _random_start(
    item_seq_len: torch.Tensor, window: torch.Tensor, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """Uniform start in [0, len - window] for every row."""
    room = (item_seq_len - window + 1).clamp(min=1)
    return (_uniform(item_seq_len.shape, item_seq_len, generator) * room).long().clamp(max=room - 1)


def crop(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    eta: float = 0.6,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a random contiguous run of ``max(1, floor(eta * len))`` items, left-aligned and re-padded.

    Returns the cropped sequences (same width as ``item_seq``) and their new lengths.
    """
    keep = torch.minimum(_share_count(item_seq_len, eta).clamp(min=1), item_seq_len)
    start = _random_start(item_seq_len, keep, generator)
    cols = torch.arange(item_seq.size(1), device=item_seq.device)
    source = (start[:, None] + cols[None, :]).clamp(max=item_seq.size(1) - 1)
    cropped = item_seq.gather(1, source)
    cropped = cropped.masked_fill(cols[None, :] >= keep[:, None], 0)
    return cropped, keep


def mask(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    mask_token: int,
    gamma: float = 0.3,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Replace ``floor(gamma * len)`` distinct real items (chosen uniformly) by ``mask_token``; lengths keep."""
    cols = torch.arange(item_seq.size(1), device=item_seq.device)
    real = cols[None, :] < item_seq_len[:, None]
    # Random keys, padding sorted last: the rows' first n keys in sorted order are n uniform real positions.
    keys = _uniform(item_seq.shape, item_seq, generator).masked_fill(~real, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    chosen = rank < _share_count(item_seq_len, gamma)[:, None]
    return item_seq.masked_fill(chosen, mask_token)


def reorder(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    beta: float = 0.6,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Shuffle a random window of ``floor(beta * len)`` consecutive items; everything else stays in place."""
    window = _share_count(item_seq_len, beta)
    start = _random_start(item_seq_len, window, generator)
    cols = torch.arange(item_seq.size(1), device=item_seq.device)
    inside = (cols[None, :] >= start[:, None]) & (cols[None, :] < (start + window)[:, None])
    # Sort keys: a position outside the window keeps its index as key; inside, a uniform key in
    # [start, start + window) - so sorting permutes the window uniformly and fixes every other position.
    noise = start[:, None] + _uniform(item_seq.shape, item_seq, generator) * (window[:, None] - 0.5).clamp(min=0)
    keys = torch.where(inside, noise, cols[None, :].to(noise.dtype).expand_as(noise))
    return item_seq.gather(1, keys.argsort(dim=1))


def apply_operation(
    operation: str,
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    *,
    mask_token: int,
    crop_eta: float = 0.6,
    mask_gamma: float = 0.3,
    reorder_beta: float = 0.6,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmentation by name on every row; returns (sequences, lengths), both new tensors."""
    if operation == "crop":
        return crop(item_seq, item_seq_len, crop_eta, generator)
    if operation == "mask":
        return mask(item_seq, item_seq_len, mask_token, mask_gamma, generator), item_seq_len.clone()
    if operation == "reorder":
        return reorder(item_seq, item_seq_len, reorder_beta, generator), item_seq_len.clone()
    raise ValueError(f"unknown augmentation '{operation}', expected one of {AUG_OPERATIONS}")


def draw_operation_pairs(
    batch_size: int, n_operations: int, device: torch.device, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """B x 2 operation indices: two distinct ones per row, uniformly (both the same when only one exists)."""
    if n_operations == 1:
        return torch.zeros(batch_size, 2, dtype=torch.long, device=device)
    keys = torch.rand(batch_size, n_operations, generator=generator, device=device)
    return keys.argsort(dim=1)[:, :2]


def augment_views(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    operations: Sequence[str] = AUG_OPERATIONS,
    *,
    mask_token: int,
    crop_eta: float = 0.6,
    mask_gamma: float = 0.3,
    reorder_beta: float = 0.6,
    generator: Optional[torch.Generator] = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """CL4SRec's two views of every sequence.

    Per row two distinct operations are drawn from ``operations`` (one per view); each view applies its
    operation to the rows that drew it (one vectorised call per view and operation). Returns the two
    views, their lengths and the drawn operation indices (B x 2, into ``operations``).
    """
    pairs = draw_operation_pairs(item_seq.size(0), len(operations), item_seq.device, generator)
    views, lengths = [], []
    for v in range(2):
        view, length = item_seq.clone(), item_seq_len.clone()
        for k, operation in enumerate(operations):
            rows = (pairs[:, v] == k).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            view[rows], length[rows] = apply_operation(
                operation,
                item_seq[rows],
                item_seq_len[rows],
                mask_token=mask_token,
                crop_eta=crop_eta,
                mask_gamma=mask_gamma,
                reorder_beta=reorder_beta,
                generator=generator,
            )
        views.append(view)
        lengths.append(length)
    return views, lengths, pairs


class SameTargetIndex:
    """Training rows grouped by next item (CSR), for DuoRec's supervised positives.

    Built once from the target item of every training row: ``rows`` lists the row ids sorted by target,
    ``indptr[t]:indptr[t + 1]`` is the slice of rows whose target is ``t`` and ``position[r]`` is where
    row ``r`` lies in ``rows``. :meth:`sample` draws, for each anchor row, another row with the same
    target uniformly (the anchor itself only when no other row has that target), in O(B) torch ops.
    """

    def __init__(self, targets: torch.Tensor, n_items: int):
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_items):
            low, high = int(targets.min()), int(targets.max())
            raise ValueError(f"target ids must lie in [0, {n_items}), got ids from {low} to {high}")
        self.n_items = n_items
        self.targets = targets
        self.rows = torch.argsort(targets, stable=True)
        counts = torch.bincount(targets, minlength=n_items)
        self.indptr = torch.zeros(n_items + 1, dtype=torch.long)
        self.indptr[1:] = counts.cumsum(0)
        self.position = torch.empty_like(self.rows)
        self.position[self.rows] = torch.arange(targets.numel())

    def __len__(self) -> int:
        return self.targets.numel()

    def tensors(self) -> dict[str, torch.Tensor]:
        """The index as plain tensors (a model registers them as buffers so that they follow its device)."""
        return {"targets": self.targets, "rows": self.rows, "indptr": self.indptr, "position": self.position}

    def sample(self, anchor_rows: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return sample_same_target(anchor_rows, **self.tensors(), generator=generator)


def sample_same_target(
    anchor_rows: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    indptr: torch.Tensor,
    position: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """For each anchor row id, a uniformly drawn *other* row id with the same target (the anchor if none).

    The tensors are those of :class:`SameTargetIndex` (on the anchors' device).
    """
    target = targets[anchor_rows]
    start = indptr[target]
    others = indptr[target + 1] - start - 1  # rows sharing the target, anchor excluded
    draw = (torch.rand(anchor_rows.shape, generator=generator, device=anchor_rows.device) * others).long()
    draw = torch.minimum(draw, (others - 1).clamp(min=0))
    own = position[anchor_rows] - start
    offset = torch.where(others > 0, draw + (draw >= own).long(), own)  # skip over the anchor's own slot
    return rows[start + offset]
