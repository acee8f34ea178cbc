"""Readers of the sources ``prepare`` turns into atomic files: benchmark sequence files (``uid iid
iid ...`` per line), ratings files (CSV, TSV or RecBole atomic ``.inter``), iterative k-core filtering,
and an atomic ``.inter`` read back into sequences. Malformed input raises :class:`UserError` naming the
file and line.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from recbole_diffcl.errors import UserError
from recbole_diffcl.utils import finite_float

_ID = re.compile(r"[0-9]+")

# Column-name synonyms for headed ratings files (matched case-insensitively, before any ':type').
_USER_NAMES = ("user_id", "user", "userid", "uid", "reviewerid", "session_id")
_ITEM_NAMES = ("item_id", "item", "itemid", "iid", "asin", "business_id", "product_id", "movie_id")
_TIME_NAMES = ("timestamp", "time", "unixreviewtime", "date", "datetime")



def _open_text(path: Path):
    try:
        return open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise UserError(f"Source file {path} does not exist. Check the --source path.") from None
    except IsADirectoryError:
        raise UserError(f"Source {path} is a folder; --source must name a file.") from None
    except OSError as e:
        raise UserError(f"Cannot read source file {path}: {e.strerror}.") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without newline); undecodable bytes become a UserError naming the line."""
    with _open_text(path) as f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                yield n, line.rstrip("\r\n")
        except UnicodeDecodeError:
            raise UserError(
                f"{path}, line {n + 1}: not valid UTF-8 text. The source must be a plain-text file."
            ) from None


def read_sequences(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a benchmark sequence file (``uid iid iid ...`` per line) into {uid: [iid, ...]}.

    Ids must be non-negative integers (normalised, so ``007`` is ``7``); each user appears on one line
    with at least one item. Blank lines are allowed only at the end. Raises :class:`UserError` naming
    the file and line for anything else.
    """
    path = Path(path)
    seqs: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    blank_at: Optional[int] = None
    fmt = "one line per user: a user id, then the user's item ids oldest first, separated by spaces"
    for n, line in _lines(path):
        fields = line.split()
        if not fields:
            blank_at = blank_at or n
            continue
        if blank_at is not None:
            raise UserError(f"{path}, line {blank_at}: empty line inside the file. Expected {fmt}.")
        if len(fields) < 2:
            raise UserError(
                f"{path}, line {n}: only one field ({fields[0]!r}); expected {fmt}, with at least one "
                f"item. Remove the line or add the user's items."
            )
        for k, tok in enumerate(fields, 1):
            if not _ID.fullmatch(tok):
                what = "user id" if k == 1 else "item id"
                raise UserError(
                    f"{path}, line {n}, field {k}: {tok!r} is not an integer {what}. Expected {fmt} "
                    f"(a ratings CSV needs --format ratings)."
                )
        uid = str(int(fields[0]))
        if uid in seqs:
            raise UserError(
                f"{path}, line {n}: user {uid} already has a line (line {first_line[uid]}). Each user "
                f"must appear on exactly one line; merge the two lines in chronological order."
            )
        first_line[uid] = n
        seqs[uid] = [str(int(t)) for t in fields[1:]]
    if not seqs:
        raise UserError(f"{path} is empty: expected {fmt}.")
    return seqs


@dataclass
class Ratings:
    """Interactions of a ratings file, as codes into ``user_tokens`` / ``item_tokens``."""

    user_tokens: list[str]  # code -> original token, in order of first appearance
    item_tokens: list[str]
    users: np.ndarray  # int64 codes, file order
    items: np.ndarray
    times: np.ndarray  # float64


def _pick(names: Sequence[str], wanted: Sequence[str]) -> Optional[int]:
    lowered = [n.lower() for n in names]
    for w in wanted:
        if w in lowered:
            return lowered.index(w)
    return None


def read_ratings(path: str | os.PathLike) -> Ratings:
    """Read ``user,item,rating,timestamp`` rows (CSV with/without header, TSV, or RecBole atomic).

    Headerless files are positional (user, item, rating, timestamp). Headed files are matched by
    column name (``user_id``/``user``/``reviewerID``..., ``item_id``/``item``/``asin``/``business_id``...,
    ``timestamp``/``time``/``date``...), so RecBole's downloaded atomic files work as they are.
    """
    path = Path(path)
    rows = _ratings_rows(path)
    first = next(rows, None)
    if first is None:
        raise UserError(f"{path} is empty: expected ratings rows 'user,item,rating,timestamp'.")
    n0, header = first
    names = [h.split(":", 1)[0].strip() for h in header]
    ncols = len(header)
    cols = (_pick(names, _USER_NAMES), _pick(names, _ITEM_NAMES), _pick(names, _TIME_NAMES))
    data: Iterable[tuple[int, list[str]]] = rows
    if all(c is not None for c in cols):
        ucol, icol, tcol = cols  # type: ignore[misc]  # header with recognised names
    elif ncols == 4 and finite_float(header[3]) is not None:
        ucol, icol, tcol = 0, 1, 3  # no header: the first line is data
        data = _chain([(n0, header)], rows)
    elif ncols == 4:
        ucol, icol, tcol = 0, 1, 3  # header with other names: the documented column order
    else:
        raise UserError(
            f"{path}, line {n0}: {ncols} field(s) and no recognisable header; expected the 4 columns "
            f"user,item,rating,timestamp (with or without a header line) or a header naming "
            f"user_id, item_id and timestamp columns."
        )

    user_code: dict[str, int] = {}
    item_code: dict[str, int] = {}
    users: list[int] = []
    items: list[int] = []
    times: list[float] = []
    for n, fields in data:
        if len(fields) == 1 and not fields[0].strip():
            continue  # blank line
        if len(fields) != ncols:
            raise UserError(
                f"{path}, line {n}: {len(fields)} field(s), expected {ncols} like the first line. "
                f"Fix or remove the line."
            )
        u, i, t = fields[ucol].strip(), fields[icol].strip(), fields[tcol].strip()
        for what, tok in (("user", u), ("item", i)):
            if not tok or any(c in tok for c in "\t\r\n"):
                raise UserError(
                    f"{path}, line {n}: {what} id {tok!r} is empty or contains a tab/line break. "
                    f"Fix or remove the line."
                )
        tv = finite_float(t)
        if tv is None:
            raise UserError(
                f"{path}, line {n}: timestamp {t!r} is not a number. Timestamps must be numeric "
                f"(e.g. Unix seconds); fix or remove the line."
            )
        users.append(user_code.setdefault(u, len(user_code)))
        items.append(item_code.setdefault(i, len(item_code)))
        times.append(tv)
    if not users:
        raise UserError(f"{path} has a header but no ratings rows.")
    return Ratings(
        list(user_code),
        list(item_code),
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.asarray(times, dtype=np.float64),
    )


def _chain(*its: Iterable) -> Iterator:
    for it in its:
        yield from it


def _ratings_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields): tab-separated if the first line has a tab, else CSV."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        return
    n, line = first
    if "\t" in line:
        yield n, line.split("\t")
        for n, line in lines:
            yield n, line.split("\t")
        return
    # csv handles quoted fields; line numbers stay right as long as fields hold no line breaks.
    reader = csv.reader(_chain([line], (ln for _, ln in lines)))
    for k, fields in enumerate(reader, n):
        yield k, fields if fields else [""]


def kcore(users: np.ndarray, items: np.ndarray, k: int = 5) -> tuple[np.ndarray, int]:
    """Iterative k-core: mask of interactions kept so every kept user and item has >= k of them.

    Removing a sparse item can push a user below k (and vice versa), so filter until stable.
    Returns (mask, number of passes that removed something).
    """
    keep = np.ones(len(users), dtype=bool)
    rounds = 0
    while True:
        uc = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        ic = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        new = keep & (uc[users] >= k) & (ic[items] >= k)
        if new.sum() == keep.sum():
            return keep, rounds
        keep = new
        rounds += 1


def inter_to_sequences(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read an atomic .inter back into {uid: [iid, ...]} ordered as RecBole orders it.

    Users in order of first appearance; within a user by timestamp, ties in file order (stable),
    which is what RecBole's ``order: TO`` does.
    """
    path = Path(path)
    per_user: dict[str, list[tuple[float, int, str]]] = {}
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise UserError(f"{path} is empty.")
    names = [h.split(":", 1)[0] for h in first[1].split("\t")]
    try:
        ucol, icol, tcol = (names.index(c) for c in ("user_id", "item_id", "timestamp"))
    except ValueError:
        raise UserError(f"{path}, line 1: header needs user_id, item_id and timestamp.") from None
    for n, line in lines:
        f = line.split("\t")
        if len(f) != len(names):
            raise UserError(f"{path}, line {n}: {len(f)} fields, the header has {len(names)}.")
        per_user.setdefault(f[ucol], []).append((float(f[tcol]), n, f[icol]))
    return {u: [i for _, _, i in sorted(v)] for u, v in per_user.items()}


def detect_format(path: Path) -> str:
    """``ratings`` (commas or tabs, or a .csv / .inter / .tsv name) or ``sequences`` (a benchmark file)."""
    if path.suffix.lower() in (".csv", ".inter", ".tsv"):
        return "ratings"
    for _, line in _lines(path):
        if line.strip():
            return "ratings" if ("," in line or "\t" in line) else "sequences"
    return "sequences"  # empty: read_sequences reports it
