"""Downloading a published benchmark file: all of it, checked against its pinned sha256, or nothing.

The file is streamed into a temporary file beside its destination (with a progress bar on a terminal)
and hashed on the way; only a complete file with the expected checksum is renamed into place. A broken
connection, a short read, a server error or a checksum mismatch removes the temporary file and raises a
``UserError`` that says what happened, so a rerun never finds half a file.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Optional

from recbole_diffcl.errors import UserError

CHUNK_BYTES = 1 << 16


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"


def download_file(
    url: str,
    target: str | os.PathLike,
    sha256: Optional[str],
    say: Callable[[str], None] = print,
    show_progress: Optional[bool] = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``target`` (its folder is created), checking ``sha256`` when given; return ``target``.

    ``show_progress``: a tqdm bar on stderr (default: when stderr is a terminal). Reads time out after
    ``timeout`` seconds of silence. On any failure nothing is left at ``target`` or beside it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    digest = hashlib.sha256()
    received, expected_bytes = 0, None
    say(f"downloading {url} ...")
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                expected_bytes = int(length) if length and length.isdigit() else None
                from tqdm import tqdm

                with tqdm(total=expected_bytes, unit="B", unit_scale=True, desc=target.name, file=sys.stderr,
                          disable=not show_progress, leave=False) as bar:
                    while True:
                        chunk = response.read(CHUNK_BYTES)
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        except (OSError, urllib.error.URLError, HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            of = f" of {_size(expected_bytes)}" if expected_bytes else ""
            raise UserError(
                f"Downloading {url} failed after {_size(received)}{of} ({type(exc).__name__}: {reason}); nothing was "
                f"kept. Fix: run the command again when the connection is back, or download the file yourself and "
                f"pass it with --source (python -m recbole_diffcl.prepare NAME --source FILE)."
            ) from None
        if expected_bytes is not None and received != expected_bytes:
            raise UserError(
                f"Downloading {url} stopped after {_size(received)} of {_size(expected_bytes)}: the connection "
                f"closed early; nothing was kept. Fix: run the command again."
            )
        got = digest.hexdigest()
        if sha256 is not None and got != sha256:
            raise UserError(
                f"{url} arrived with sha256 {got}, not the pinned {sha256}: the file is not the published one (or "
                f"was damaged on the way), so it was not kept. Fix: run again; if it persists, check the file at "
                f"that address and pass a copy you trust with --source."
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    say(f"downloaded {target} ({_size(received)}, sha256 checked)")
    return target
