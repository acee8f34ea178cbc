"""Sequence packing: several short sequences share one row of the encoder or the denoiser.

A training batch of amazon-beauty holds 256 sequences of 1 to 50 items (8.9 on average): padded, 256 x 50
positions of which ~1,500 are real. Length-sorted sub-batches (``length_sorted_passes``) cut the padding but
run every operation of the encoder once per sub-batch, and on a CPU those many small operations cost more
than the arithmetic. Packed, the sequences are laid end to end in ~35 rows as wide as the longest one
(best fit, longest first); each item keeps the position embedding of its place in its own sequence, and
the attention mask lets a position see only its own sequence's positions (earlier ones, for the causal
encoder; both sides, or the ``denoiser_context``, for DiffCLRec's denoiser). The outputs at every real
position are those of the padded batch (tests), from one pass of a few larger operations. Dropout draws its masks in the packed layout, so training draws other random
numbers than the padded layout does (the same dropout).

Packing reads the lengths on the host (as trimming does): the property ``pack_sequences`` is ``auto``, on
for a CPU, off for a GPU.
"""
from __future__ import annotations

import torch


def best_fit_decreasing(lengths: list[int], capacity: int) -> tuple[list[int], list[int], int]:
    """Places sequences of ``lengths`` (each <= ``capacity``) in rows of ``capacity`` slots: longest first,
    each into the open row with the least room that still fits it. Returns each sequence's row and first
    slot, and the number of rows."""
    rows_with_room: list[list[int]] = [[] for _ in range(capacity + 1)]  # room left -> rows with that room
    room_of: list[int] = []
    row, start = [0] * len(lengths), [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        fit = next((r for r in range(n, capacity + 1) if rows_with_room[r]), None)
        if fit is None:
            target = len(room_of)
            room_of.append(capacity)
        else:
            target = rows_with_room[fit].pop()
        row[i], start[i] = target, capacity - room_of[target]
        room_of[target] -= n
        rows_with_room[room_of[target]].append(target)
    return row, start, len(room_of)


class PackedBatch:
    """Where the sequences of a batch (left-aligned, lengths B) go when packed into R rows of its longest length W.

    ``pack`` lays out any per-position tensor of the batch (item ids, embeddings, masks) in the packed rows,
    ``unpack`` puts per-position outputs back. ``positions`` (R x W) is each slot's place in its own sequence
    (for position embeddings), ``sequence`` (R x W) its batch row (-1: padding), ``causal_mask()`` the causal
    encoder's attention mask; ``last_rows`` and ``last_columns`` (B) locate each sequence's last item.
    A sequence of length 0 (RecBole's sequential data has none) is packed as its padding item at position 0.
    """

    def __init__(self, item_seq_len: torch.Tensor):
        lengths = item_seq_len.clamp(min=1)
        as_list = lengths.tolist()  # the host read packing needs
        width = max(as_list)
        row, start, n_rows = best_fit_decreasing(as_list, width)
        device = item_seq_len.device
        row = torch.tensor(row, device=device)
        start = torch.tensor(start, device=device)
        columns = torch.arange(width, device=device)
        self.batch_size, self.width = len(as_list), width
        self.real = columns[None, :] < lengths[:, None]  # B x W
        self.rows = row[:, None].expand(-1, width)[self.real]  # packed place of every real position
        self.columns = (start[:, None] + columns[None, :])[self.real]
        self.n_rows = n_rows
        self.positions = self.pack(columns.expand(self.batch_size, -1))
        self.sequence = self.pack(torch.arange(self.batch_size, device=device)[:, None].expand(-1, width), fill=-1)
        self.last_rows = row
        self.last_columns = start + lengths - 1

    def pack(self, values: torch.Tensor, fill=0) -> torch.Tensor:
        """``values`` (B x L x ..., per position of the batch) in the packed layout, R x W x ..., ``fill`` at
        the padding slots."""
        packed = values.new_full((self.n_rows, self.width, *values.shape[2:]), fill)
        packed[self.rows, self.columns] = values[:, : self.width][self.real]
        return packed

    def same_sequence(self) -> torch.Tensor:
        """R x W x W bool: whether slot j holds an item of the same sequence as slot i (never padding)."""
        return (self.sequence[:, :, None] == self.sequence[:, None, :]) & (self.sequence[:, None, :] >= 0)

    def causal_mask(self) -> torch.Tensor:
        """The causal encoder's additive attention mask (R x 1 x W x W, RecBole's -10000): each position sees
        the positions up to itself of its own sequence."""
        causal = torch.ones(self.width, self.width, dtype=torch.bool, device=self.sequence.device).tril()
        return torch.where((self.same_sequence() & causal)[:, None], 0.0, -10000.0)

    def unpack(self, outputs: torch.Tensor, width: int) -> torch.Tensor:
        """Packed per-position outputs (R x W x d) in the batch's layout, B x ``width`` x d (zeros at padding)."""
        unpacked = outputs.new_zeros(self.batch_size, max(width, self.width), outputs.size(-1))
        unpacked[self.real.nonzero(as_tuple=True)] = outputs[self.rows, self.columns]
        return unpacked[:, :width]
