"""Evaluation options on top of RecBole's full-ranking evaluation (the trainer's side).

Two properties change or extend what the trainer's full-sort evaluation does:

- ``exclude_history`` (default ``False``). RecBole's sequential full ranking keeps the items a user
  already interacted with among the candidates; S3-Rec-family code and RecTools drop them. With
  ``True`` every item of the user's history before the target (all of it, not only the last
  ``MAX_ITEM_LIST_LENGTH`` items the model sees) is scored ``-inf`` for validation and test, so
  numbers can be set against published ones. The target itself is never masked, even when the user
  interacted with it before (as RecBole's general full ranking: history = used - positive).
- ``user_rankings_file`` (default ``~``). A CSV path; the test evaluation writes one line per test
  user: the user's token, the user's whole-sequence length (interactions in train + valid + test),
  the target item, the target's rank among all candidates and its position in RecBole's top-k list
  (0 when outside). The top-k position is taken from exactly the ``torch.topk`` call RecBole's
  ``Collector`` makes, so metrics recomputed from the file equal RecBole's test result. The same test
  evaluation also keeps :func:`positions_by_length` (how many test users of each length had the target at
  each top-k position), which the runner puts in its result file: every top-k metric of any grouping of
  the users by length follows from it, so a result file alone (without the per-user file, which holds the
  test items) is enough for the benchmark's tables.

:func:`recbole_diffcl.report.group_metrics` recomputes RecBole's top-k metrics for users grouped by
sequence length from such a file.
"""
from __future__ import annotations

import csv
from logging import getLogger
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch

from recbole_diffcl.utils import atomic_write

RANKING_COLUMNS = ["user_id", "seq_len", "target_item", "rank", "topk_position"]


def prefix_rows(train_dataset):
    """The training split as RecBole's one row per prefix. Whole-sequence training keeps one (possibly
    truncated) row per user and the prefix rows beside it (``prefix_inter_feat``): histories and lengths
    must come from those, which show every training interaction."""
    prefix = getattr(train_dataset, "prefix_inter_feat", None)
    return train_dataset if prefix is None else train_dataset.copy(prefix)


def split_items(split_dataset, n_users: int, n_items: int) -> sp.csr_matrix:
    """Users x items matrix of every item a split's rows show: targets plus the input of each user's first row.

    Rows of a user are in time order inside a split (RecBole orders by time before splitting), so the
    first row's input holds the user's oldest items and the targets all the later ones: together every
    item of the user in this split, without touching the (rows x MAX_ITEM_LIST_LENGTH) item lists.
    """
    inter = split_dataset.inter_feat
    uid_field, iid_field = split_dataset.uid_field, split_dataset.iid_field
    uids = inter[uid_field].numpy()
    targets = inter[iid_field].numpy()
    rows, cols = [uids], [targets]
    list_field = getattr(split_dataset, "item_id_list_field", None)
    if list_field is not None and list_field in inter:
        _, first = np.unique(uids, return_index=True)
        first_lists = inter[list_field][torch.as_tensor(first)].numpy()
        nz_r, nz_c = np.nonzero(first_lists)
        rows.append(uids[first][nz_r])
        cols.append(first_lists[nz_r, nz_c])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_users, n_items))
    matrix.data[:] = 1  # duplicates were summed
    return matrix


class EvaluationOptionsMixin:
    """``exclude_history`` and ``user_rankings_file`` for any RecBole trainer (see the module docstring).

    Mixed in front of the trainer class by :func:`with_evaluation_options`. :meth:`prepare_evaluation`
    gives it the split loaders; without that call ``exclude_history`` masks the items of the input
    sequence only and no rankings are recorded.
    """

    _eval_history: Optional[sp.csr_matrix] = None  # history of the loader being evaluated
    _ranking_records: Optional[list] = None  # per-batch records while evaluating the test loader

    def prepare_evaluation(self, train_data, valid_data, test_data) -> None:
        """Build the users' histories per evaluation split and the whole-sequence lengths."""
        dataset = prefix_rows(train_data._dataset)
        n_users, n_items = dataset.user_num, dataset.item_num
        splits = [dataset] + [d._dataset for d in (valid_data, test_data) if d]
        # Each target of a split is one interaction; the user's first interaction is never a target.
        self._seq_len = sum(
            np.bincount(s.inter_feat[s.uid_field].numpy(), minlength=n_users) for s in splits
        ) + 1
        self._histories = []  # (loader, users x items matrix of items before that loader's targets)
        if self.config["exclude_history"]:
            seen = split_items(dataset, n_users, n_items)
            for loader in (valid_data, test_data):
                if loader:
                    self._histories.append((loader, seen))
                    seen = (seen + split_items(loader._dataset, n_users, n_items)).astype(bool).astype(np.int8)
        self._rankings_loader = test_data
        self._rankings_file = self.config["user_rankings_file"]

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        self._eval_history = next((h for loader, h in getattr(self, "_histories", []) if loader is eval_data), None)
        record = bool(getattr(self, "_rankings_file", None)) and eval_data is getattr(self, "_rankings_loader", None)
        self._ranking_records = [] if record else None
        result = super().evaluate(
            eval_data, load_best_model=load_best_model, model_file=model_file, show_progress=show_progress
        )
        if record:
            if self._ranking_records:
                self._write_rankings(eval_data)
            else:
                getLogger().warning(
                    "user_rankings_file is set but the test evaluation is not a sequential full ranking "
                    "(eval_args mode: full); no per-user rankings were written."
                )
        self._ranking_records = None
        return result

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        sequential = batched_data[1] is None  # RecBole passes history_index only for general models
        if sequential and self.config["exclude_history"]:
            self._mask_history(interaction, scores, positive_u, positive_i)
        if sequential and self._ranking_records is not None:
            self._record_rankings(interaction, scores, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i

    def _mask_history(self, interaction, scores, positive_u, positive_i) -> None:
        positive_u, positive_i = positive_u.to(scores.device), positive_i.to(scores.device)  # loaders give CPU ids
        target_scores = scores[positive_u, positive_i].clone()
        list_field = self.config["ITEM_ID_FIELD"] + self.config["LIST_SUFFIX"]
        if list_field in interaction:  # the input sequence (covers evaluation without prepare_evaluation)
            seq = interaction[list_field].to(scores.device)
            rows, cols = torch.nonzero(seq, as_tuple=True)
            scores[rows, seq[rows, cols]] = -np.inf
        if self._eval_history is not None:  # the whole history, beyond MAX_ITEM_LIST_LENGTH
            uids = interaction[self.config["USER_ID_FIELD"]].cpu().numpy()
            rows, cols = self._eval_history[uids].nonzero()
            scores[torch.as_tensor(rows, device=scores.device), torch.as_tensor(cols, device=scores.device)] = -np.inf
        scores[positive_u, positive_i] = target_scores  # the target is never masked

    def _record_rankings(self, interaction, scores, positive_u, positive_i) -> None:
        positive_u, positive_i = positive_u.to(scores.device), positive_i.to(scores.device)  # loaders give CPU ids
        # Sequential full ranking: row r of the batch has exactly one target, positive_i[r].
        assert torch.equal(positive_u, torch.arange(len(scores), device=scores.device)), "one target per row expected"
        # The same call as RecBole's Collector.eval_batch_collect, on the same tensor: same top-k list.
        _, topk_idx = torch.topk(scores, max(self.config["topk"]), dim=-1)
        hits = topk_idx == positive_i.unsqueeze(1)
        position = torch.where(hits.any(dim=1), hits.float().argmax(dim=1) + 1, torch.zeros_like(positive_u))
        target_scores = scores.gather(1, positive_i.unsqueeze(1))
        rank = (scores > target_scores).sum(dim=1) + 1  # 1 + items scored strictly higher (ties in its favour)
        uids = interaction[self.config["USER_ID_FIELD"]]
        self._ranking_records.append(
            (uids.cpu().numpy(), positive_i.cpu().numpy(), rank.cpu().numpy(), position.cpu().numpy())
        )

    def _write_rankings(self, eval_data) -> None:
        dataset = eval_data._dataset
        uids, items, ranks, positions = (np.concatenate(part) for part in zip(*self._ranking_records))
        seq_len = getattr(self, "_seq_len", None)
        lengths = seq_len[uids] if seq_len is not None else np.full(len(uids), -1)
        user_tokens = dataset.id2token(dataset.uid_field, uids)
        item_tokens = dataset.id2token(dataset.iid_field, items)
        path = self._rankings_file
        with atomic_write(path, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(RANKING_COLUMNS)
            writer.writerows(zip(user_tokens, lengths.tolist(), item_tokens, ranks.tolist(), positions.tolist()))
        getLogger().info(f"per-user test rankings: {path}")
        self.test_positions_by_length = positions_by_length(lengths, positions, max(self.config["topk"]))


def positions_by_length(lengths: np.ndarray, positions: np.ndarray, max_k: int) -> dict[str, list[int]]:
    """``{length: [users whose target was outside the top max_k, at position 1, ..., at position max_k]}``."""
    counts: dict[str, list[int]] = {}
    for length in np.unique(lengths):
        at = np.bincount(positions[lengths == length], minlength=max_k + 1)
        counts[str(int(length))] = at.tolist()
    return counts


def rankings_from_positions(counts: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """The ``seq_len`` and ``topk_position`` columns that :func:`positions_by_length` summarised, one entry
    per user (in length order)."""
    lengths, positions = [], []
    for length, at in counts.items():
        lengths.append(np.full(sum(at), int(length), dtype=np.int64))
        positions.append(np.repeat(np.arange(len(at), dtype=np.int64), at))
    if not lengths:
        return {"seq_len": np.zeros(0, np.int64), "topk_position": np.zeros(0, np.int64)}
    return {"seq_len": np.concatenate(lengths), "topk_position": np.concatenate(positions)}


def with_evaluation_options(trainer_class: type) -> type:
    """``trainer_class`` with :class:`EvaluationOptionsMixin` in front (same name, so logs are unchanged)."""
    if issubclass(trainer_class, EvaluationOptionsMixin):
        return trainer_class
    return type(trainer_class.__name__, (EvaluationOptionsMixin, trainer_class), {})
