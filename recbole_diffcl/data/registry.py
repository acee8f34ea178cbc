"""The named benchmark datasets: their files, where those may already lie, RecBole's download URLs.

The sequential-recommendation literature (S3-Rec, CL4SRec, DuoRec, ICLRec, DiffCLRec) evaluates on
fixed 5-core benchmark files, one line per user (``uid iid iid ...``, oldest first). RecBole has no
``amazon-sports`` or ``amazon-toys``, and its ``amazon-beauty`` and ``yelp`` are other (raw) data, so a
plain ``--dataset=amazon-sports`` would either try a download that does not exist or silently fetch
different data. This module knows the benchmark names, where their files may already lie and how to
prepare them; :mod:`recbole_diffcl.data.checks` checks the atomic files before RecBole reads them.

Public API:
    BENCHMARKS, BenchmarkDataset, benchmark_search_paths, find_benchmark_source,
    recbole_download_url, can_reach, prepare_command
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import yaml

# Environment variable naming a folder laid out like ../shared/data (one sub-folder per dataset).
SHARED_DATA_ENV = "RECBOLE_DIFFCL_SHARED_DATA"
# Environment variable naming another base URL for the published benchmark files (a mirror).
MIRROR_ENV = "RECBOLE_DIFFCL_BENCHMARK_MIRROR"
# The public copy of the benchmark files the literature uses (S3-Rec, Zhou et al., CIKM 2020).
S3REC_DATA_URL = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data"

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (recbole_diffcl/data/ is two below)


@dataclass(frozen=True)
class BenchmarkDataset:
    """A named 5-core benchmark and where its data can come from."""

    name: str
    sequence_file: str  # file name of the benchmark sequence file (uid iid iid ...)
    raw_name: Optional[str]  # RecBole's url.yaml name of the matching raw data, for download
    published: Optional[tuple[int, int, int]]  # users, items, interactions as published (S3-Rec)
    raw_note: str = ""  # how the raw download differs from the benchmark file
    sha256: Optional[str] = None  # of the published benchmark file (S3-Rec's copy), checked after download

    @property
    def url(self) -> str:
        """Where the published file is downloaded from: S3-Rec's public copy, or the mirror named by
        :data:`MIRROR_ENV` (a base URL holding the same file names); the checksum is checked either way."""
        base = os.environ.get(MIRROR_ENV) or S3REC_DATA_URL
        return base.rstrip("/") + "/" + self.sequence_file


BENCHMARKS: dict[str, BenchmarkDataset] = {
    b.name: b
    for b in (
        BenchmarkDataset(
            "amazon-sports",
            "Sports_and_Outdoors.txt",
            "amazon-sports-outdoors",
            (35598, 18357, 296337),
            sha256="2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        ),
        BenchmarkDataset(
            "amazon-beauty", "Beauty.txt", "amazon-beauty", (22363, 12101, 198502),
            sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        ),
        BenchmarkDataset(
            "amazon-toys", "Toys_and_Games.txt", "amazon-toys-games", (19412, 11924, 167597),
            sha256="176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        ),
        BenchmarkDataset(
            "yelp",
            "Yelp.txt",
            "yelp",
            (30431, 20033, 316354),
            raw_note=(
                "RecBole's 'yelp' download is the full Yelp review dump; the benchmark Yelp.txt was cut "
                "to a date range before 5-core filtering, so the result will differ from it"
            ),
            sha256="724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
        ),
    )
}


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def benchmark_search_paths(name: str, data_path: Optional[str | os.PathLike] = None) -> list[Path]:
    """Candidate locations of the benchmark sequence file for ``name``, most specific first.

    ``data_path`` is RecBole's data root (the folder that holds ``<name>/``). None of these needs to
    exist: the shared folder is a convenience of development machines, not a requirement.
    """
    bench = BENCHMARKS[name]
    fname = bench.sequence_file
    paths: list[Path] = []
    if data_path is not None:
        # A user may simply drop the benchmark file into the dataset folder.
        paths.append(Path(data_path) / name / fname)
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        paths += [Path(env) / name / fname, Path(env) / fname]
    paths += [
        REPO_ROOT.parent / "shared" / "data" / name / fname,
        Path.cwd().parent / "shared" / "data" / name / fname,
    ]
    return _unique(paths)


def find_benchmark_source(
    name: str, data_path: Optional[str | os.PathLike] = None
) -> Optional[Path]:
    """First existing benchmark sequence file for ``name`` in :func:`benchmark_search_paths`."""
    if name not in BENCHMARKS:
        return None
    for p in benchmark_search_paths(name, data_path):
        if p.is_file():
            return p
    return None


def recbole_url_table() -> dict[str, str]:
    """RecBole's dataset-name -> download URL table (properties/dataset/url.yaml)."""
    # Locate the package without importing it: importing RecBole pulls in torch (seconds).
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).resolve().parent / "properties" / "dataset" / "url.yaml"
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except OSError:
        return {}


def recbole_download_url(name: str) -> Optional[str]:
    """URL RecBole would download ``name`` from, or None when RecBole does not know the name."""
    return recbole_url_table().get(name)


def can_reach(url: str, timeout: float = 3.0) -> bool:
    """Whether an HTTP HEAD request for ``url`` succeeds within about ``timeout`` seconds.

    A bare TCP connect is not enough: sandboxes and corporate firewalls often accept every connection
    and fail later. Name resolution ignores socket timeouts and can stall for long on offline
    machines, so the request runs in a daemon thread that is abandoned after ``timeout``.
    """
    result = [False]

    def probe() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                result[0] = resp.status < 400
        except Exception:  # any failure (DNS, TLS, HTTP status, timeout) means "not downloadable"
            pass

    t = threading.Thread(target=probe, name="recbole_diffcl-can_reach", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0] and not t.is_alive()


def prepare_command(
    name: str, data_root: Optional[str | os.PathLike] = None, source: Optional[str | os.PathLike] = None
) -> str:
    """The shell command that prepares ``name`` (as printed in error messages and docs)."""
    parts = ["python", "-m", "recbole_diffcl.prepare", name]
    if source is not None:
        parts += ["--source", str(source)]
    if data_root is not None:
        parts += ["--data_path", str(data_root)]
    return " ".join(shlex.quote(p) for p in parts)
