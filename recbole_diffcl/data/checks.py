"""A fast pre-flight check of the RecBole atomic files a run is about to read.

RecBole fails late and obscurely on a missing or malformed ``.inter`` file (and, offline, hangs on a
download it cannot make). :func:`check_dataset_files` runs after the configuration is built and before
``create_dataset``: the files exist with a valid header, or the dataset is one RecBole downloads from a
reachable host; otherwise a :class:`UserError` says how to prepare the data
(:mod:`recbole_diffcl.data.registry` knows the named benchmarks).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

from recbole_diffcl.data.registry import (
    BENCHMARKS,
    can_reach,
    find_benchmark_source,
    prepare_command,
    recbole_download_url,
)
from recbole_diffcl.errors import UserError

# RecBole's FeatureType values; anything else in a header makes RecBole fail with a bare ValueError.
FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")

ATOMIC_DOCS = "https://recbole.io/docs/user_guide/data/atomic_files.html"


def _get(config: Any, key: str) -> Any:
    """config[key] for RecBole's Config (None when unset) and for plain dicts."""
    try:
        return config[key]
    except (KeyError, TypeError):
        return None


def _required_columns(config: Any) -> list[str]:
    """Columns the .inter header must have: load_col's, the id fields and, for time order, the time."""
    required: list[str] = []
    load_col = _get(config, "load_col")
    if isinstance(load_col, dict) and load_col.get("inter"):
        required += [str(c) for c in load_col["inter"]]
    keys = ["USER_ID_FIELD", "ITEM_ID_FIELD"]
    eval_args = _get(config, "eval_args")
    if isinstance(eval_args, dict) and eval_args.get("order") == "TO":
        keys.append("TIME_FIELD")  # RecBole sorts by it and fails deep inside build() without it
    for key in keys:
        field = _get(config, key)
        if field and field not in required:
            required.append(str(field))
    return required


def check_inter_header(
    path: str | os.PathLike,
    required: Iterable[str] = (),
    field_separator: str = "\t",
    encoding: str = "utf-8",
) -> list[str]:
    """Validate the header (and first record) of an atomic ``.inter`` file; return its field names.

    Mirrors how RecBole 1.2.1 parses the header (``name:type`` split by ``field_separator``, type one
    of token/token_seq/float/float_seq), but fails with a :class:`UserError` that names the file, the
    line and the fix instead of RecBole's bare ValueError / KeyError later on.
    """
    path = Path(path)
    shown_sep = repr(field_separator)
    fix_header = (
        f"The first line must list the columns as name:type separated by {shown_sep}, with type one "
        f"of {', '.join(FEATURE_TYPES)}, e.g. 'user_id:token{field_separator}item_id:token"
        f"{field_separator}timestamp:float' (see {ATOMIC_DOCS})."
    )
    try:
        with open(path, "rb") as f:
            raw_head = f.readline()
            raw_first = f.readline()
    except OSError as e:
        raise UserError(f"Cannot read the interaction file {path}: {e.strerror}.") from None
    try:
        head = raw_head.decode(encoding)
        first = raw_first.decode(encoding)
    except UnicodeDecodeError:
        raise UserError(
            f"{path}: line 1 or 2 is not valid {encoding} text. Re-save the file as {encoding} "
            f"(or set the 'encoding' property to the file's encoding)."
        ) from None
    if not head.strip():
        raise UserError(
            f"{path} is empty (line 1 should be the header). {fix_header} Re-create the file, e.g. "
            f"with '{prepare_command(path.stem)} --source FILE'."
        )
    if head.startswith("\ufeff"):
        raise UserError(
            f"{path}, line 1: the file starts with a byte-order mark, which RecBole reads as part of "
            f"the first column name. Re-save it as UTF-8 without BOM."
        )
    if head.endswith("\r\n") or "\r" in head:
        raise UserError(
            f"{path}, line 1: the file has Windows (CRLF) line endings, which RecBole 1.2.1 does not "
            f"strip from the header. Convert it to Unix line endings (e.g. 'dos2unix {path}')."
        )
    head = head.rstrip("\n")
    columns = head.split(field_separator)
    names: list[str] = []
    for col in columns:
        name, colon, ftype = col.partition(":")
        if not colon or not name or ":" in ftype or ftype not in FEATURE_TYPES:
            hint = ""
            if field_separator not in head and any(s in head for s in (" ", ",", ";")):
                hint = f" The columns seem to be separated by something other than {shown_sep}."
            raise UserError(
                f"{path}, line 1: column {col!r} of the header is not name:type.{hint} {fix_header}"
            )
        if name in names:
            raise UserError(f"{path}, line 1: column {name!r} appears twice in the header. {fix_header}")
        names.append(name)
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError(
            f"{path}, line 1: the header has columns {names} but the configuration needs "
            f"{missing} (load_col / USER_ID_FIELD / ITEM_ID_FIELD / TIME_FIELD). Add the columns to the "
            f"file, or change load_col and the field-name properties to match the file."
        )
    if not first.strip():
        raise UserError(
            f"{path}: there are no interactions after the header (line 2 is empty). Re-create the "
            f"file, e.g. with '{prepare_command(path.stem)} --source FILE'."
        )
    n = len(first.rstrip("\r\n").split(field_separator))
    if n != len(columns):
        raise UserError(
            f"{path}, line 2: {n} field(s) separated by {shown_sep}, but the header has "
            f"{len(columns)}. Every line must have one value per header column."
        )
    return names


def _inter_files(config: Any, dataset_dir: Path, name: str) -> list[Path]:
    suffixes = _get(config, "benchmark_filename")
    if suffixes:
        return [dataset_dir / f"{name}.{s}.inter" for s in suffixes]
    return [dataset_dir / f"{name}.inter"]


def check_dataset_files(config: Any) -> None:
    """Fail fast, with the fix, when the atomic files for ``config['dataset']`` are missing or broken.

    Call after RecBole's ``Config`` is built and before ``create_dataset``; ``config['data_path']``
    is then ``<data_path>/<dataset>``. Returns None when RecBole can go on: the ``.inter`` file(s)
    exist with a valid header, or the dataset is one RecBole downloads and its host is reachable.
    Raises :class:`UserError` otherwise. Benchmark names (:data:`BENCHMARKS`) are never downloaded by
    RecBole, even where RecBole has a different dataset of the same name (``amazon-beauty``, ``yelp``).
    """
    name = str(_get(config, "dataset"))
    dataset_dir = Path(str(_get(config, "data_path")))
    data_root = dataset_dir.parent
    files = _inter_files(config, dataset_dir, name)
    present = [f for f in files if f.is_file()]

    if present and len(present) == len(files):
        sep = _get(config, "field_separator") or "\t"
        encoding = _get(config, "encoding") or "utf-8"
        required = _required_columns(config)
        for f in files:
            check_inter_header(f, required, sep, encoding)
        return

    if present:  # some benchmark_filename parts exist, others do not
        missing = [str(f) for f in files if not f.is_file()]
        raise UserError(
            f"Dataset '{name}': benchmark_filename is set to {list(_get(config, 'benchmark_filename'))} "
            f"but {', '.join(missing)} is missing. Provide every split file or unset benchmark_filename."
        )

    inter = files[0]
    if name in BENCHMARKS:
        bench = BENCHMARKS[name]
        source = find_benchmark_source(name, data_root)
        if source is not None:
            cmd = prepare_command(name, data_root, source)
            how = f"The benchmark file was found at {source}; convert it with: {cmd}"
        else:
            cmd = prepare_command(name, data_root, f"PATH/TO/{bench.sequence_file}")
            how = (
                f"The runner downloads the published benchmark file by itself when it can reach "
                f"{bench.url}, which this machine cannot. Convert a copy of {bench.sequence_file} (one line "
                f"per user: uid iid iid ...) with: {cmd} (or put it at {data_root / name / bench.sequence_file}, "
                f"where the runner finds it)"
            )
        raise UserError(
            f"Dataset '{name}' is not prepared: {inter} does not exist. '{name}' is a 5-core "
            f"sequential benchmark that RecBole cannot download under this name. {how}, then run "
            f"again."
        )

    url = recbole_download_url(name)
    if url is not None:
        if dataset_dir.exists():
            # RecBole downloads only when the whole folder is absent; otherwise it fails on the file.
            raise UserError(
                f"Dataset '{name}': the folder {dataset_dir} exists but has no {inter.name}, so RecBole "
                f"will not download it. Remove the folder to let RecBole download '{name}' from {url}, "
                f"or place the atomic file {inter} there (see {ATOMIC_DOCS})."
            )
        if can_reach(url):
            return
        raise UserError(
            f"Dataset '{name}' is not on this machine ({inter} does not exist) and RecBole's download "
            f"host for it ({urllib.parse.urlparse(url).hostname}) cannot be reached. Download {url} "
            f"elsewhere and unzip it into {dataset_dir} (renaming the files to {name}.inter etc.), or "
            f"place your own atomic file at {inter} (see {ATOMIC_DOCS}); or pass --data_path to the "
            f"folder that already holds {name}/."
        )

    known = ", ".join(sorted(BENCHMARKS))
    raise UserError(
        f"Dataset '{name}' was not found: {inter} does not exist, and '{name}' is neither a prepared "
        f"benchmark ({known}) nor a dataset RecBole can download. Fix: put its interactions in the "
        f"RecBole atomic file {inter} (tab-separated, header 'user_id:token\\titem_id:token\\t"
        f"timestamp:float'; see {ATOMIC_DOCS}), or create it from a sequence file or ratings CSV "
        f"with: {prepare_command(name, data_root, 'FILE')}; or check --dataset and --data_path for a "
        f"typo."
    )
