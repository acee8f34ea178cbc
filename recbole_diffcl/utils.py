"""The location of the property files and small helpers shared by the package: atomic file writes,
optional extras, number checks, the machine and code a run ran on. The bottom layer: it imports no
other module of the package but ``errors``."""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional, Union

from recbole_diffcl.errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent


def props_dir() -> Path:
    """The ``props/`` folder: inside the installed package, or beside it in a source checkout."""
    for candidate in (_PACKAGE_DIR / "props", _PACKAGE_DIR.parent / "props"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError("recbole_diffcl's props/ folder is missing: reinstall the package (pip install .)")


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(
    path: Union[str, os.PathLike],
    mode: str = "w",
    *,
    encoding: Optional[str] = "utf-8",
    newline: Optional[str] = None,
    fsync: bool = False,
    before_replace: Optional[Callable[[str], None]] = None,
) -> Iterator[IO]:
    """Write ``path`` all at once or not at all: the block writes to a temporary file beside it, which
    then replaces ``path``; if the block (or anything up to the rename) fails, the temporary file is
    removed and ``path`` is left as it was.

    The folder is created when missing; the file gets the usual mode (0666 less the umask).
    ``fsync`` forces the data to disk before the rename; ``before_replace(tmp_path)`` may inspect the
    written file and raise to keep ``path`` unchanged.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding, newline=newline) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def require_extra(module: str, extra: str, needed_for: str) -> None:
    """Import ``module``, an optional dependency; when missing, a UserError names the extra that installs it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UserError(
            f"{needed_for} needs {module}, which is not installed ({exc}). Fix: pip install "
            f"\"recbole_diffcl[{extra}]\" (in a checkout: pip install \".[{extra}]\")."
        ) from None


def is_number(value: Any) -> bool:
    """An int or float (not a bool): a numeric property value or YAML scalar."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_float(text: str) -> Optional[float]:
    """``text`` as a finite float (``"1e9"``, ``" 3 "``), or None when it is not one (``"x"``, ``"nan"``)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def cpu_model() -> str:
    """The CPU's model name (``AMD EPYC``, ``Intel(R) Xeon(R) ...``) as /proc/cpuinfo gives it."""
    import platform

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    return name


def machine_description(device: Any) -> str:
    """What trained a run, for its result file: ``cuda: NVIDIA H200`` or ``cpu: AMD EPYC (2 threads)``.

    Sessions of this project have run on AMD EPYC and Intel Xeon machines alike: a speed or quality figure
    is only comparable with others from the same kind of machine.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {cpu_model()} ({torch.get_num_threads()} threads)"


def code_version() -> Optional[str]:
    """The git commit of the code that runs (with ``+changes`` when the checkout has uncommitted edits to
    tracked files), or None outside a git checkout: a campaign's result files say which code made them."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=_PACKAGE_DIR.parent, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != _PACKAGE_DIR.parent:
            return None  # an installed copy inside some other repository
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
#: freed blocks up to this size stay with the process (and no free memory is returned below it)
KEPT_MEMORY_BYTES = 1 << 30


def keep_freed_memory(setting: Any, device: Any) -> bool:
    """``keep_freed_memory``: have glibc's allocator keep freed memory for the process's next allocations.

    By default glibc serves a block above its mmap threshold (at most 32 MiB) with a fresh mapping and returns it
    to the system when it is freed, and trims the heap's free top: a training step on a CPU allocates the same
    large tensors (logits, attention scores, gradients) every step, so their pages were faulted in and zeroed
    again each time (~600,000 page faults per Beauty epoch: perf/side_by_side.py, docs/speed.md). Blocks up to
    ``KEPT_MEMORY_BYTES`` then come from the heap, which is never trimmed below that: the same values; the
    process's memory does not shrink after its peak. glibc before 2.35 refuses mmap thresholds above 32 MiB:
    there no block is mapped at all (``M_MMAP_MAX`` 0). ``auto``: on for a CPU device (a GPU's tensors use
    CUDA's caching allocator); True: on; False: left as it is. Returns whether the allocator was changed (False
    where the C library has no ``mallopt`` or refuses it). It applies to the whole process and stays: a later
    run in the same process with False does not undo it.
    """
    import ctypes

    import torch

    on = torch.device(device).type == "cpu" if setting == "auto" else setting is True
    if not on:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), or no C library to load this way (Windows)
        return False
    mapped_above = mallopt(_M_MMAP_THRESHOLD, KEPT_MEMORY_BYTES) or mallopt(_M_MMAP_MAX, 0)
    return bool(mapped_above and mallopt(_M_TRIM_THRESHOLD, KEPT_MEMORY_BYTES))
