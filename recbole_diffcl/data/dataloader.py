"""Length-bucketed training batches (an opt-in speed option, ``length_bucketing: True``).

RecBole pads every training row to MAX_ITEM_LIST_LENGTH and batches rows at random; trimming a batch
to its longest sequence helps little when a random batch of 256 nearly always holds one long
sequence. Bucketing shuffles the rows, sorts them by length within large chunks, cuts the chunks into
batches and shuffles the batches: each batch then holds rows of similar length, and trimming removes
most of the padding. Every row is still seen exactly once per epoch (the same multiset of rows).
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader


class LengthBucketBatchSampler:
    """Batches of row indices with similar ``lengths``: shuffle, sort within chunks, shuffle batches."""

    def __init__(self, lengths: np.ndarray, batch_size: int, chunk_batches: int, generator: torch.Generator,
                 rank: int = 0, world_size: int = 1):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.chunk_size = batch_size * max(1, chunk_batches)
        self.generator = generator
        # multi-process training: every process draws the same batches (same seed) and keeps every
        # world_size-th one, padded with the first batches so that all processes take as many steps
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).numpy()
        batches = []
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        if self.world_size > 1:
            order += order[: (-len(order)) % self.world_size]
            order = order[self.rank :: self.world_size]
        for b in order:
            yield batches[b].tolist()


class BucketedTrainDataLoader(TrainDataLoader):
    """RecBole's TrainDataLoader whose batches come from a :class:`LengthBucketBatchSampler`."""

    def __init__(self, config, dataset, sampler, shuffle=True):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        lengths = dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
        distributed = not config["single_spec"]
        self._bucket_sampler = LengthBucketBatchSampler(
            lengths, self.step, config["length_bucket_chunk"], self.generator,
            rank=config["local_rank"] + (config["offset"] or 0) if distributed else 0,
            world_size=config["world_size"] if distributed else 1,
        )

    @property
    def _index_sampler(self):
        # torch's DataLoader draws its batches of indices from here; RecBole's collate_fn then turns
        # each batch of row indices into an Interaction, as for its own shuffled batches.
        return self._bucket_sampler


def bucketed_train_data(config, train_data: TrainDataLoader) -> TrainDataLoader:
    """``train_data`` with length-bucketed batches when ``length_bucketing`` is on, else unchanged."""
    if not config["length_bucketing"]:
        return train_data
    return BucketedTrainDataLoader(config, train_data._dataset, train_data._sampler, shuffle=True)


def last_row_per_user(user_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Indices of each user's longest training row (its whole training sequence), in user order."""
    order = np.lexsort((lengths.numpy(), user_ids.numpy()))  # by user, then by length
    users = user_ids.numpy()[order]
    is_last = np.ones(len(order), dtype=bool)
    is_last[:-1] = users[1:] != users[:-1]
    return torch.from_numpy(order[is_last])


#: The field of whole-sequence rows that says how many leading positions are context only (no loss term).
LOSS_START_FIELD = "loss_start"


def user_row_ranks(user_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, rank, count): the rows sorted by user (stable, so each user's rows stay in time order, as
    RecBole stores them), each sorted row's rank within its user (0 = oldest) and its user's number of rows."""
    users = user_ids.numpy()
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1] if len(order) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    return order, rank, np.repeat(sizes, sizes)


def training_item_counts(dataset, n_items: int) -> Optional[torch.Tensor]:
    """How often each item id occurs in the training data (n_items floats, padding 0), or None when the
    dataset holds no interactions (e.g. a model built without RecBole data).

    Counted over RecBole's prefix rows (kept beside whole-sequence rows as ``prefix_inter_feat``): every
    training interaction but a user's first is the target of one row, and the first is the first input
    item of the user's oldest row, so each is counted once, in the prefix and whole-sequence regimes alike.
    """
    feat = getattr(dataset, "prefix_inter_feat", None)
    if feat is None:
        feat = getattr(dataset, "inter_feat", None)
    if feat is None:
        return None
    items = [feat[dataset.iid_field]]
    list_field = getattr(dataset, "item_id_list_field", None)
    if list_field is not None and list_field in feat:
        order, rank, _ = user_row_ranks(feat[dataset.uid_field])
        oldest = torch.from_numpy(order[rank == 0])
        items.append(feat[list_field][oldest, 0])
    counts = torch.bincount(torch.cat(items).long(), minlength=n_items)[:n_items].float()
    counts[0] = 0.0
    return counts


def sequence_windows(n_targets: np.ndarray, max_len: int, overlap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole-sequence rows of users with ``n_targets`` training targets each (vectorised).

    A row is the prefix row of one target e (1-based among the user's targets): its input is the (up to)
    ``max_len`` items before e, and position p predicts target e - len + p. The newest row ends at the
    user's last target. A row whose input reaches back to the user's first item has a loss term at every
    position; an earlier window of a longer user starts inside the history, so its first ``overlap``
    positions are context only, and the next older row ends just before its first loss target. Every
    target is a loss term exactly once, with at least ``overlap`` items of context (or all the user's
    history). Returns (user index, target index e, loss start) per row, newest row of each user first.
    """
    stride = max_len - overlap
    # rows per user: 1 while the targets fit in one row, else 1 + ceil((n - max_len) / stride)
    extra = np.where(n_targets > max_len, -(-(n_targets - max_len) // stride), 0)
    rows_per_user = 1 + extra
    user = np.repeat(np.arange(len(n_targets)), rows_per_user)
    w = np.arange(len(user)) - np.repeat(np.cumsum(rows_per_user) - rows_per_user, rows_per_user)  # 0 = newest
    end = n_targets[user] - w * stride
    loss_start = np.where(end > max_len, overlap, 0)  # the input starts inside the history: context first
    return user, end, loss_start


def whole_sequence_train_data(config, train_data: TrainDataLoader) -> TrainDataLoader:
    """``train_data`` with whole-sequence rows when ``whole_sequence_training`` is on, else unchanged.

    RecBole turns a user's training items into one row per prefix (prefix -> next item). A user's longest
    row holds all the others while the user has at most MAX_ITEM_LIST_LENGTH targets: its sequence plus
    its target is the user's whole training sequence, and a model trained on it with the loss at every
    position (the SASRec paper's regime) sees every prefix -> next-item target once per epoch in
    ~avg-length times fewer encoder passes. A longer user gets several rows, windows over the sequence
    (:func:`sequence_windows`) that overlap by ``whole_sequence_overlap`` x MAX_ITEM_LIST_LENGTH positions,
    which are context only (the row's ``loss_start``): every target is still a loss term exactly once per
    epoch, with at least that much context (RecBole's prefix rows give every target the whole window).
    """
    if not config["whole_sequence_training"]:
        return train_data
    dataset = train_data._dataset
    feat = dataset.inter_feat
    max_len = config["MAX_ITEM_LIST_LENGTH"]
    overlap = min(max_len - 1, int(round((config["whole_sequence_overlap"] or 0) * max_len)))
    order, rank, count = user_row_ranks(feat[config["USER_ID_FIELD"]])
    first_row = np.flatnonzero(rank == 0)  # positions in ``order`` of each user's oldest prefix row
    user, end, loss_start = sequence_windows(count[first_row], max_len, overlap)
    keep = torch.from_numpy(order[first_row[user] + end - 1])  # the prefix row of target ``end``
    whole = dataset.copy(feat[keep])
    whole.inter_feat[LOSS_START_FIELD] = torch.from_numpy(loss_start)
    whole.prefix_inter_feat = feat  # DuoRec draws its same-target positives from all prefix rows
    return TrainDataLoader(config, whole, train_data._sampler, shuffle=True)


def training_loader(config, train_data: TrainDataLoader) -> TrainDataLoader:
    """RecBole's training loader shaped by the run's options: one row per user with
    ``whole_sequence_training``, length-bucketed batches with ``length_bucketing`` (what the runner trains on)."""
    return bucketed_train_data(config, whole_sequence_train_data(config, train_data))
