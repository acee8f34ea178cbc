"""Prepare RecBole atomic files for the sequential benchmarks (and any sequence file or ratings CSV).

Usage::

    python -m recbole_diffcl.prepare amazon-sports --source PATH/TO/Sports_and_Outdoors.txt
    python -m recbole_diffcl.prepare amazon-sports --source ratings_Sports_and_Outdoors.csv
    python -m recbole_diffcl.prepare amazon-sports            # find the benchmark file, else download

writes ``<data_path>/<name>/<name>.inter`` (``user_id:token item_id:token timestamp:float``).

Sources:
  * a benchmark sequence file, one line per user ``uid iid iid ...`` in chronological order. It has
    no timestamps, so each item gets its 1-based position as timestamp: RecBole's stable time ordering
    (``eval_args.order: TO``) then reproduces every line exactly, and leave-one-out puts the last item
    of each line in test and the second-last in valid, as in the literature;
  * a ratings file ``user,item,rating,timestamp`` (CSV with or without header, or a RecBole atomic
    ``.inter`` such as RecBole's Amazon downloads): iterative k-core filtering (users and items both
    with at least k interactions, repeated until nothing changes), equal timestamps keep file order;
  * nothing: the benchmark file is looked up in the known places (see
    :func:`recbole_diffcl.data.registry.benchmark_search_paths`); failing that, the published file is
    downloaded from its public copy, checked against its pinned sha256 and kept as
    ``<data_path>/<name>/<file>`` (network needed; fails fast offline). With ``--raw``, RecBole's raw
    download of the matching dataset is fetched and 5-core filtered instead (the route RecBole users know;
    the counts differ slightly from the published file).

:func:`prepare_for_run` does the same for the runner: a benchmark whose atomic file is missing is made
from the benchmark file where one is found, or from the download, before training.

The output is written to a temporary file in the target folder and renamed into place, so an
interrupted run never leaves a truncated ``.inter`` that RecBole would load.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from recbole_diffcl.data.download import download_file
from recbole_diffcl.data.readers import Ratings, detect_format, kcore, read_ratings, read_sequences
from recbole_diffcl.data.registry import (
    BENCHMARKS,
    SHARED_DATA_ENV,
    benchmark_search_paths,
    can_reach,
    find_benchmark_source,
    recbole_download_url,
)
from recbole_diffcl.errors import UserError, exit_code_of
from recbole_diffcl.config import check_writable_dir
from recbole_diffcl.utils import atomic_write

HEADER = "user_id:token\titem_id:token\ttimestamp:float"
DEFAULT_DATA_PATH = "dataset/"  # RecBole's default data_path
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Stats:
    """Size of a prepared dataset (true counts: RecBole's [PAD] id is not included)."""

    users: int
    items: int
    interactions: int

    @property
    def avg_length(self) -> float:
        return self.interactions / self.users if self.users else 0.0

    @property
    def sparsity(self) -> float:
        cells = self.users * self.items
        return 1.0 - self.interactions / cells if cells else 1.0

    def summary(self) -> str:
        return (
            f"users: {self.users:,}  items: {self.items:,}  interactions: {self.interactions:,}  "
            f"average length: {self.avg_length:.2f}  sparsity: {100 * self.sparsity:.4f}%"
        )


# --------------------------------------------------------------------------------------------------
# Writing


def _write_inter(target: Path, lines: Iterable[str], overwrite: bool = True) -> None:
    """Write the lines atomically (a temporary file beside ``target``, synced, then renamed).

    With ``overwrite=False`` an existing ``target`` with other content is kept and a UserError raised
    (the same content is simply left in place)."""

    def keep_other_data(tmp: str) -> None:
        if not overwrite and target.exists() and not filecmp.cmp(tmp, target, shallow=False):
            raise UserError(
                f"{target} already exists and holds other data than this source gives (a dataset prepared "
                f"from another file?); it was left unchanged. Fix: pass --overwrite to replace it, or choose "
                f"another dataset name or --data_path."
            )

    with atomic_write(target, newline="\n", fsync=True, before_replace=keep_other_data) as f:
        for line in lines:
            f.write(line)


def write_sequences_inter(target: str | os.PathLike, seqs: dict[str, list[str]], overwrite: bool = True) -> Stats:
    """Write {uid: [iid, ...]} as an atomic .inter with timestamp = 1-based position in the line."""

    def lines() -> Iterator[str]:
        yield HEADER + "\n"
        for uid, items in seqs.items():
            for pos, iid in enumerate(items, 1):
                yield f"{uid}\t{iid}\t{pos}\n"

    _write_inter(Path(target), lines(), overwrite)
    items = {i for seq in seqs.values() for i in seq}
    return Stats(len(seqs), len(items), sum(len(s) for s in seqs.values()))


def _fmt_time(t: float) -> str:
    return str(int(t)) if t.is_integer() and abs(t) < 2**53 else repr(t)


def write_ratings_inter(target: str | os.PathLike, r: Ratings, keep: np.ndarray, overwrite: bool = True) -> Stats:
    """Write the kept interactions grouped by user (first-appearance order), oldest first.

    Both sorts are stable, so equal timestamps keep their order in the source file; RecBole's own
    sorts are stable as well and keep that order.
    """
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(r.times[idx], kind="stable")]
    idx = idx[np.argsort(r.users[idx], kind="stable")]

    def lines() -> Iterator[str]:
        yield HEADER + "\n"
        ut, it = r.user_tokens, r.item_tokens
        for u, i, t in zip(r.users[idx].tolist(), r.items[idx].tolist(), r.times[idx].tolist()):
            yield f"{ut[u]}\t{it[i]}\t{_fmt_time(t)}\n"

    _write_inter(Path(target), lines(), overwrite)
    return Stats(len(np.unique(r.users[idx])), len(np.unique(r.items[idx])), len(idx))


# --------------------------------------------------------------------------------------------------
# Download (RecBole's raw data, used only without --source)


def raw_download_url(name: str, data_path: str | os.PathLike) -> str:
    """URL of RecBole's raw data for benchmark ``name``, after checking (within ~3 s) it is reachable.

    Called only when no benchmark file was found, so the errors say where we looked.
    """
    bench = BENCHMARKS[name]
    url = recbole_download_url(bench.raw_name) if bench.raw_name else None
    looked = "; ".join(str(p) for p in benchmark_search_paths(name, data_path))
    if url is None:
        raise UserError(
            f"No source for '{name}': the benchmark file {bench.sequence_file} was not found (looked "
            f"in: {looked}) and RecBole has no download for it. Pass --source PATH/TO/"
            f"{bench.sequence_file}."
        )
    if not can_reach(url):
        raise UserError(
            f"No source for '{name}': the benchmark file {bench.sequence_file} was not found (looked "
            f"in: {looked}) and RecBole's download of the raw '{bench.raw_name}' data ({url}) is "
            f"unreachable from this machine. Pass --source PATH/TO/{bench.sequence_file} (or a ratings "
            f"CSV), or set {SHARED_DATA_ENV} to a folder holding {name}/{bench.sequence_file}."
        )
    return url


def download_benchmark(name: str, data_path: str | os.PathLike, say: Callable[[str], None] = print) -> Path:
    """The published benchmark file of ``name``, downloaded to ``<data_path>/<name>/<file>`` and checked
    against its pinned sha256; a ``UserError`` naming where we looked when it cannot be reached."""
    bench = BENCHMARKS[name]
    if not can_reach(bench.url):
        looked = "; ".join(str(p) for p in benchmark_search_paths(name, data_path))
        raise UserError(
            f"No source for '{name}': the benchmark file {bench.sequence_file} was not found (looked in: {looked}) "
            f"and its published copy ({bench.url}) is unreachable from this machine. Fix: pass --source "
            f"PATH/TO/{bench.sequence_file} (or a ratings CSV), or set {SHARED_DATA_ENV} to a folder holding "
            f"{name}/{bench.sequence_file}."
        )
    return download_file(bench.url, Path(data_path) / name / bench.sequence_file, bench.sha256, say)


def download_raw(url: str, workdir: Path, say: Callable[[str], None] = print) -> Path:
    """Download and unzip ``url`` (a RecBole ProcessedDatasets zip) into ``workdir``; return its .inter.

    Reads time out after 60 s of silence, so a dropped connection does not hang the command.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / url.rpartition("/")[2]
    say(f"downloading {url} ...")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as f:
            shutil.copyfileobj(resp, f, length=1 << 20)
        with zipfile.ZipFile(archive) as z:
            z.extractall(workdir)
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(
            f"Downloading {url} failed ({e}). Retry, or pass --source with a local file."
        ) from None
    inters = sorted(workdir.rglob("*.inter"))
    if not inters:
        raise UserError(f"The download {url} holds no .inter file; pass --source instead.")
    return inters[0]


# --------------------------------------------------------------------------------------------------
# Driver


def prepare(
    name: str,
    source: Optional[str | os.PathLike] = None,
    data_path: str | os.PathLike = DEFAULT_DATA_PATH,
    fmt: str = "auto",
    k: int = 5,
    say: Callable[[str], None] = print,
    overwrite: bool = False,
    from_raw: bool = False,
) -> tuple[Path, Stats]:
    """Create ``<data_path>/<name>/<name>.inter``; return its path and size.

    ``fmt`` is ``auto``, ``sequences`` or ``ratings``; ``k`` is the k-core threshold for ratings
    (0 or 1 disables filtering). Without ``source`` a benchmark's file is looked up, else downloaded
    (``from_raw``: RecBole's raw data instead, k-core filtered). Raises :class:`UserError` for bad names, missing or malformed input,
    an unwritable ``data_path``, or (without ``overwrite``) an existing dataset file with other content.
    """
    if not _NAME.fullmatch(name):
        raise UserError(
            f"Invalid dataset name {name!r}: use letters, digits, '.', '_' or '-' (it becomes the folder "
            f"and file name <data_path>/{name}/{name}.inter)."
        )
    if fmt not in ("auto", "sequences", "ratings"):
        raise UserError(f"Unknown --format {fmt!r}: use auto, sequences or ratings.")
    if k < 0:
        raise UserError(f"--kcore must be >= 0, got {k}.")
    target = Path(data_path) / name / f"{name}.inter"
    check_writable_dir(target.parent, "output folder", "pass a writable folder as --data_path")
    download_dir: Optional[Path] = None

    if source is None:
        if name not in BENCHMARKS:
            raise UserError(
                f"'{name}' is not one of the known benchmarks ({', '.join(sorted(BENCHMARKS))}), so "
                f"there is nothing to look up or download: pass --source FILE (a sequence file "
                f"'uid iid iid ...' or a ratings CSV 'user,item,rating,timestamp')."
            )
        found = find_benchmark_source(name, data_path) if not from_raw else None
        if found is None and not from_raw:
            found = download_benchmark(name, data_path, say)
        if found is not None:
            say(f"using the benchmark file {found}")
            src, fmt = found, "sequences"
        else:
            url = raw_download_url(name, data_path)  # fails fast offline, before creating anything
            root = Path(data_path)
            root.mkdir(parents=True, exist_ok=True)
            download_dir = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=root))
            try:
                src = download_raw(url, download_dir, say)
            except BaseException:
                shutil.rmtree(download_dir, ignore_errors=True)
                raise
            fmt = "ratings"
            note = BENCHMARKS[name].raw_note
            say(
                f"note: built from RecBole's raw ratings with {k}-core filtering; counts differ "
                f"slightly from the published benchmark file" + (f" ({note})" if note else "") + "."
            )
    else:
        src = Path(source)
        if not src.is_file():
            raise UserError(f"Source file {src} does not exist (or is not a file). Check --source.")
        if fmt == "auto":
            fmt = detect_format(src)

    try:
        if fmt == "sequences":
            stats = write_sequences_inter(target, read_sequences(src), overwrite)
        else:
            r = read_ratings(src)
            keep, rounds = kcore(r.users, r.items, k) if k > 1 else (np.ones(len(r.users), bool), 0)
            say(
                f"read {len(r.users):,} ratings of {len(r.user_tokens):,} users and "
                f"{len(r.item_tokens):,} items; {k}-core filtering kept {int(keep.sum()):,} "
                f"({rounds} pass(es) removed interactions)"
            )
            if not keep.any():
                raise UserError(
                    f"{src}: no interactions survive {k}-core filtering (every user and item needs at "
                    f"least {k}). Use a larger file or a smaller --kcore."
                )
            stats = write_ratings_inter(target, r, keep, overwrite)
    finally:
        if download_dir is not None:
            shutil.rmtree(download_dir, ignore_errors=True)

    say(f"wrote {target}")
    say(f"  {stats.summary()}")
    bench = BENCHMARKS.get(name)
    if bench and bench.published and fmt == "sequences":
        pub = Stats(*bench.published)
        if (stats.users, stats.items, stats.interactions) == bench.published:
            say("  matches the published benchmark counts")
        else:
            say(f"  note: the published '{name}' benchmark has {pub.summary()}")
    return target, stats


def prepare_for_run(config, say: Callable[[str], None] = print) -> Optional[Path]:
    """Before a run: make a named benchmark's missing atomic file (from the benchmark file where one is found,
    else from the checked download) and say so in one line; None when there is nothing to do or no source
    (the dataset check then says what to do)."""
    name = str(config["dataset"])
    dataset_dir = Path(str(config["data_path"]))  # <data_path>/<dataset> once RecBole's Config is built
    if name not in BENCHMARKS or config["benchmark_filename"] or (dataset_dir / f"{name}.inter").exists():
        return None
    data_root = dataset_dir.parent
    bench = BENCHMARKS[name]
    source = find_benchmark_source(name, data_root)
    if source is None:
        if not can_reach(bench.url):
            return None  # offline: the dataset check names the fixes
        source = download_benchmark(name, data_root, say)
    target, stats = prepare(name, source, data_root, fmt="sequences", say=lambda line: None)
    say(f"prepared {name}: wrote {target} from {source} ({stats.summary()})")
    return target


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m recbole_diffcl.prepare",
        description=(
            "Write RecBole atomic files <data_path>/<name>/<name>.inter for a sequential benchmark, "
            "from a sequence file (uid iid iid ...), a ratings CSV (user,item,rating,timestamp; "
            "k-core filtered) or, with no --source, the known benchmark file locations or RecBole's "
            "raw download."
        ),
    )
    ap.add_argument("name", help=f"dataset name, e.g. {', '.join(BENCHMARKS)}")
    ap.add_argument("--source", help="input file (default: look up the benchmark file, else download the "
                    "published one, checked against its sha256)")
    ap.add_argument("--raw", action="store_true",
                    help="without --source: build from RecBole's raw download, k-core filtered (counts differ "
                    "slightly from the published benchmark file)")
    ap.add_argument(
        "--data_path", "--data-path", default=DEFAULT_DATA_PATH,
        help=f"RecBole data root (default {DEFAULT_DATA_PATH!r}); output goes to DATA_PATH/NAME/",
    )
    ap.add_argument(
        "--format", default="auto", choices=("auto", "sequences", "ratings"),
        help="source format (default: auto; commas/tabs or .csv/.inter mean ratings)",
    )
    ap.add_argument(
        "--kcore", type=int, default=5,
        help="k-core threshold for ratings sources (default 5; 0 disables)",
    )
    ap.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing <name>.inter that holds other data (default: refuse)",
    )
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 for user errors, printed without traceback)."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        prepare(args.name, args.source, args.data_path, args.format, args.kcore, overwrite=args.overwrite,
                from_raw=args.raw)
        return 0

    return exit_code_of(run, interrupted="interrupted; nothing was written")


if __name__ == "__main__":
    sys.exit(main())
