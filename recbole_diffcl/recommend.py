"""Top-k recommendations from a trained checkpoint.

    python -m recbole_diffcl.recommend --checkpoint saved/DiffCLRec-<time>.pth --users 42,57 --topk 10
    python -m recbole_diffcl.recommend --checkpoint PATH --users_file users.txt --exclude_history --out recs.csv
    python -m recbole_diffcl.recommend --checkpoint PATH --sequence "17 9 301" --topk 10

Users and items are named by their tokens in the atomic files (not RecBole's internal ids). The CSV
has one line per recommendation: ``user, rank, item, score`` (``user`` is ``sequence`` for
``--sequence``). Scoring is RecBole's full sort (every item scored by ``full_sort_predict``, padding
never recommended), in batches of ``eval_batch_size`` users, on the GPU when there is one.

A known user's sequence is, by default (``--context test``), what the test evaluation ranks from: the
user's items before the held-out test item, so the top-k list is the full-sort evaluation's ranking
(and RecBole's ``full_sort_topk`` on the test loader). ``--context all`` appends the test item: the
next item after everything the user did. ``--sequence`` scores a history the model never saw.
``--exclude_history`` never recommends an item of the user's history (all of it, also beyond
``MAX_ITEM_LIST_LENGTH``). Any ``--key=value`` overrides a property of the checkpoint's run (e.g.
``--data_path=DIR`` when the dataset moved, ``--use_gpu=False``).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_diffcl.errors import UserError
from recbole_diffcl.utils import atomic_write

COLUMNS = ["user", "rank", "item", "score"]
SEQUENCE_USER = "sequence"


def _listing(tokens: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(repr(t) for t in tokens[:most])
    return shown + (f" and {len(tokens) - most} more" if len(tokens) > most else "")


class Recommender:
    """A trained model with its dataset: top-k items for known users or for new item sequences."""

    def __init__(self, config, model, dataset, train_data, valid_data, test_data):
        self.config, self.model, self.dataset = config, model, dataset
        self.splits = [train_data, valid_data, test_data]
        self.device = config["device"]
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.list_field = self.iid_field + config["LIST_SUFFIX"]
        self.length_field = config["ITEM_LIST_LENGTH_FIELD"]
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        self.batch_size = config["eval_batch_size"]

    @classmethod
    def from_checkpoint(cls, checkpoint_file: str, config_dict: Optional[dict] = None) -> "Recommender":
        from recbole_diffcl.quick_start import load_data_and_model

        return cls(*load_data_and_model(checkpoint_file, config_dict))

    # ---------------------------------------------------------------------------------------- inputs
    def _token_ids(self, field: str, tokens: Sequence[str], problem: str) -> np.ndarray:
        """Internal ids of ``tokens`` of ``field``; a :class:`UserError` (``problem`` with ``{}`` for the unknown ones)."""
        token_id = self.dataset.field2token_id[field]
        unknown = [t for t in tokens if t not in token_id or token_id[t] == 0]  # 0: RecBole's padding token
        if unknown:
            raise UserError(problem.format(_listing(unknown)))
        return np.array([token_id[t] for t in tokens], dtype=np.int64)

    def user_ids(self, user_tokens: Sequence[str]) -> np.ndarray:
        """Internal ids of user tokens; a :class:`UserError` naming the unknown ones."""
        return self._token_ids(
            self.uid_field, user_tokens,
            f"Unknown user(s) {{}}: not in dataset '{self.config['dataset']}' as the model was trained on it (after "
            f"its filtering). Fix: give user tokens of the atomic file's {self.uid_field} column, or score a new "
            f"user's history with --sequence \"ITEM ITEM ...\".",
        )

    def item_ids(self, item_tokens: Sequence[str]) -> np.ndarray:
        """Internal ids of item tokens; a :class:`UserError` naming the unknown ones."""
        return self._token_ids(
            self.iid_field, item_tokens,
            f"Unknown item(s) {{}} in --sequence: the model knows only the items of dataset "
            f"'{self.config['dataset']}' it was trained on ({self.dataset.item_num - 1} items). Fix: give item "
            f"tokens of the atomic file's {self.iid_field} column, or leave out the items the model never saw.",
        )

    def known_users(self, uids: np.ndarray, context: str = "test") -> tuple[Interaction, list[np.ndarray]]:
        """The input rows of known users and their histories (item ids to exclude on request).

        ``context="test"``: the test split's row of each user (its input is everything before the test
        item), exactly as the full-sort test evaluation ranks. ``"all"``: that row with the test item
        appended (oldest item dropped when the row is full).
        """
        if context not in ("test", "all"):
            raise UserError(f"--context={context} is not known. Fix: use --context=test or --context=all.")
        test = self.splits[2]._dataset
        row_of = {int(u): r for r, u in enumerate(test.inter_feat[self.uid_field].numpy())}
        missing = [int(u) for u in uids if int(u) not in row_of]
        if missing:
            tokens = list(self.dataset.id2token(self.uid_field, missing))
            raise UserError(
                f"User(s) {_listing(tokens)} have no test sequence (too few interactions for the leave-one-out "
                f"split). Fix: score their items with --sequence \"ITEM ITEM ...\"."
            )
        rows = test.inter_feat[torch.as_tensor([row_of[int(u)] for u in uids], dtype=torch.long)]
        if context == "all":
            seq, length = self._append(rows[self.list_field], rows[self.length_field], rows[self.iid_field])
            rows = Interaction({self.uid_field: rows[self.uid_field], self.list_field: seq, self.length_field: length})
        histories = self._histories(uids, with_test=context == "all")
        return rows, histories

    def new_sequence(self, item_tokens: Sequence[str]) -> tuple[Interaction, list[np.ndarray]]:
        """One input row for a history the model never saw (tokens oldest first)."""
        if not item_tokens:
            raise UserError('--sequence is empty. Fix: give the items oldest first, e.g. --sequence "17 9 301".')
        items = self.item_ids(item_tokens)
        recent = items[-self.max_len :]
        seq = torch.zeros(1, self.max_len, dtype=torch.long)
        seq[0, : len(recent)] = torch.from_numpy(recent)
        row = Interaction(
            {
                self.uid_field: torch.zeros(1, dtype=torch.long),
                self.list_field: seq,
                self.length_field: torch.tensor([len(recent)], dtype=torch.long),
            }
        )
        return row, [np.unique(items)]

    def _append(self, seq: torch.Tensor, length: torch.Tensor, item: torch.Tensor):
        seq, length = seq.clone(), length.clone()
        full = length >= self.max_len
        seq[full] = torch.roll(seq[full], -1, dims=1)
        length[full] -= 1
        seq[torch.arange(len(seq)), length] = item
        return seq, length + 1

    def _histories(self, uids: np.ndarray, with_test: bool) -> list[np.ndarray]:
        from recbole_diffcl.evaluation import prefix_rows, split_items

        n_users, n_items = self.dataset.user_num, self.dataset.item_num
        train, *evaluated = [d._dataset for d in (self.splits if with_test else self.splits[:2]) if d]
        seen = sum(split_items(d, n_users, n_items) for d in [prefix_rows(train), *evaluated]).tocsr()
        return [seen[int(u)].indices for u in uids]

    # --------------------------------------------------------------------------------------- scoring
    @torch.no_grad()
    def topk(
        self, rows: Interaction, k: int, exclude: Optional[list[np.ndarray]] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, item ids)`` of the top ``k`` items for each row (on the CPU), best first.

        Full sort in batches of ``eval_batch_size`` rows; padding is never recommended, nor the items of
        ``exclude[i]`` for row ``i`` when given (their score is ``-inf``, as RecBole masks history).
        """
        n_candidates = self.dataset.item_num - 1
        if not 1 <= k <= n_candidates:
            raise UserError(f"--topk={k} is out of range. Fix: give a number from 1 to {n_candidates} (the items).")
        self.model.eval()
        all_scores, all_ids = [], []
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size].to(self.device)
            scores = self.model.full_sort_predict(batch).view(len(batch), -1)
            scores[:, 0] = -np.inf
            if exclude is not None:
                part = exclude[start : start + self.batch_size]
                r = np.repeat(np.arange(len(part)), [len(h) for h in part])
                c = np.concatenate(part) if part else np.zeros(0, dtype=np.int64)
                scores[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = -np.inf
            top_scores, top_ids = torch.topk(scores, k, dim=-1)
            all_scores.append(top_scores.cpu())
            all_ids.append(top_ids.cpu())
        return torch.cat(all_scores), torch.cat(all_ids)

    def recommend(
        self,
        users: Optional[Sequence[str]] = None,
        sequence: Optional[Sequence[str]] = None,
        k: int = 10,
        exclude_history: bool = False,
        context: str = "test",
    ) -> list[tuple[str, int, str, float]]:
        """``(user, rank, item, score)`` rows: the top ``k`` for each of ``users`` or for ``sequence``."""
        if (users is None) == (sequence is None):
            raise ValueError("give users or sequence")
        if sequence is not None:
            rows, histories = self.new_sequence(sequence)
            names = [SEQUENCE_USER]
        else:
            rows, histories = self.known_users(self.user_ids(users), context)
            names = list(users)
        scores, ids = self.topk(rows, k, histories if exclude_history else None)
        item_tokens = self.dataset.id2token(self.iid_field, ids.numpy())
        out = []
        for i, name in enumerate(names):
            for rank in range(k):
                score = float(scores[i, rank])
                if score == -np.inf:  # fewer than k items left after excluding the history
                    break
                out.append((name, rank + 1, str(item_tokens[i, rank]), score))
        return out


def write_csv(rows: Iterable[tuple], out: Optional[str]) -> None:
    """The recommendations as CSV with a header, to ``out`` (atomically) or to stdout."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows((user, rank, item, f"{score:.6g}") for user, rank, item, score in rows)
    if not out:
        sys.stdout.write(buffer.getvalue())
        return
    with atomic_write(out, newline="") as f:
        f.write(buffer.getvalue())


def read_users_file(path: str) -> list[str]:
    """User tokens from a file: separated by newlines, commas or whitespace."""
    if not os.path.isfile(path):
        raise UserError(f"--users_file {path} does not exist. Fix: give a file with one user token per line.")
    with open(path, encoding="utf-8") as f:
        return [t for t in f.read().replace(",", " ").split() if t]


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    from recbole_diffcl.cli import parse_property_overrides

    parser = argparse.ArgumentParser(
        prog="python -m recbole_diffcl.recommend",
        allow_abbrev=False,
        description="Top-k recommendations from a trained recbole_diffcl checkpoint, as CSV (user, rank, item, "
        "score) with user and item tokens of the atomic files. Extra --key=value pairs override properties of "
        "the checkpoint's run (e.g. --data_path=DIR, --use_gpu=False).",
    )
    parser.add_argument("--checkpoint", required=True, help="a .pth checkpoint written by training (saved/)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated user tokens, e.g. 42,57")
    who.add_argument("--users_file", help="file of user tokens (one per line)")
    who.add_argument("--sequence", help='item tokens of a new user, oldest first, e.g. "17 9 301"')
    parser.add_argument("--topk", type=int, default=10, help="items per user (default: 10)")
    parser.add_argument("--exclude_history", action="store_true", help="never recommend an item of the history")
    parser.add_argument(
        "--context", choices=["test", "all"], default="test",
        help="known users: 'test' ranks from the items before the held-out test item, as the test evaluation "
        "(default); 'all' from every item of the user",
    )
    parser.add_argument("--out", default=None, help="CSV file to write (default: stdout)")
    args, rest = parser.parse_known_args(list(argv))
    return args, parse_property_overrides(parser, rest)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from recbole_diffcl.errors import exit_code_of

    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)

    def recommend() -> int:
        if args.users is not None:
            users = [t.strip() for t in args.users.split(",") if t.strip()]
            if not users:
                raise UserError("--users is empty. Fix: give user tokens separated by commas, e.g. --users 42,57.")
        elif args.users_file is not None:
            users = read_users_file(args.users_file)
            if not users:
                raise UserError(f"--users_file {args.users_file} names no user. Fix: put one user token per line.")
        else:
            users = None
        sequence = args.sequence.replace(",", " ").split() if args.sequence is not None else None
        recommender = Recommender.from_checkpoint(args.checkpoint, overrides)
        rows = recommender.recommend(users, sequence, args.topk, args.exclude_history, args.context)
        write_csv(rows, args.out)
        if args.out:
            print(f"{len(rows)} recommendations: {args.out}", file=sys.stderr)
        return 0

    return exit_code_of(recommend)


if __name__ == "__main__":
    sys.exit(main())
