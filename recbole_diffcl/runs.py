"""The runs layer shared by ``benchmark`` and ``tune``: one run of the plugin's runner in its own process.

A run is ``python -m recbole_diffcl --model=... --dataset=... [--config_files=...] [--key=value ...]
--result_file=...`` (the same code path as ``run_recbole_diffcl.py``), its output into a log file; a
run counts as finished when its result file is complete, so a caller that reruns only unfinished runs
resumes an interrupted campaign. This module builds the command (:func:`runner_command`), runs it
(:func:`execute`), reads the result back (:func:`read_result`, :func:`load_finished`) and names what
went wrong (:func:`user_error_message`, :func:`tail`).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

#: The folder that holds the ``recbole_diffcl`` package: on every run's PYTHONPATH.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


@dataclass
class RunSpec:
    model: str  # the configuration's label (the model name unless labelled)
    seed: int
    runs_dir: Path
    model_class: str = ""  # the model the runner trains (default: ``model``)
    config_files: tuple[str, ...] = ()  # the configuration's own property files

    def __post_init__(self):
        self.model_class = self.model_class or self.model

    @property
    def name(self) -> str:
        return f"{self.model}-{self.seed}"

    @property
    def result_file(self) -> Path:
        return self.runs_dir / f"{self.name}.json"

    @property
    def rankings_file(self) -> Path:
        return self.runs_dir / f"{self.name}.users.csv"

    @property
    def log_file(self) -> Path:
        return self.runs_dir / f"{self.name}.log"

    @property
    def checkpoint_dir(self) -> Path:
        """The run's own checkpoint folder (best and last epoch): where an interrupted run resumes from."""
        return self.runs_dir.parent / "checkpoints" / self.name


def runner_command(model: str, dataset: str, config_files: Sequence[str], overrides: Mapping[str, Any],
                   *extra: str) -> list[str]:
    """The runner's command line: model, dataset, property files, ``--key=value`` overrides, then ``extra``."""
    cmd = [sys.executable, "-m", "recbole_diffcl", f"--model={model}", f"--dataset={dataset}"]
    if config_files:
        cmd.append("--config_files=" + " ".join(config_files))
    cmd += [f"--{k}={v}" for k, v in overrides.items()]
    return cmd + list(extra)


def run_command(spec: RunSpec, dataset: str, config_files: list[str], overrides: dict[str, str],
                resume: Optional[str] = None) -> list[str]:
    """The runner's command line for one benchmark run (seed, result file, per-user rankings, its own
    checkpoint folder), continuing from the checkpoint ``resume`` when given."""
    return runner_command(
        spec.model_class, dataset, [*config_files, *spec.config_files], overrides,
        f"--seed={spec.seed}", f"--result_file={spec.result_file}", f"--user_rankings_file={spec.rankings_file}",
        f"--checkpoint_dir={spec.checkpoint_dir}", *([f"--resume={resume}"] if resume else []),
    )


def resumable_checkpoint(spec: RunSpec, dataset: str) -> Optional[str]:
    """The newest checkpoint an interrupted run of ``spec`` left in its checkpoint folder (None: start afresh)."""
    if not spec.checkpoint_dir.is_dir():
        return None
    from recbole_diffcl.checkpoint import find_latest_checkpoint

    return find_latest_checkpoint(str(spec.checkpoint_dir), spec.model_class, dataset)


def read_result(path: Path) -> Optional[dict[str, Any]]:
    """A run's result file as a dict, or None when it is missing, cut short or not JSON."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def load_finished(spec: RunSpec, dataset: str) -> Optional[dict[str, Any]]:
    """The run's result if it finished (complete result file with its test rankings by length, or the
    per-user rankings file beside it), else None."""
    result = read_result(spec.result_file)
    complete = (
        result is not None
        and result.get("model") == spec.model_class
        and result.get("seed") == spec.seed
        and result.get("dataset") == dataset
        and bool(result.get("test_result"))
        and (bool(result.get("test_positions_by_length")) or spec.rankings_file.is_file())
    )
    return result if complete else None


def mean_epoch_seconds(result: Mapping[str, Any]) -> Optional[float]:
    """The mean of a result's ``seconds_per_epoch`` (3 decimals), None when no epoch was timed."""
    epoch_seconds = result.get("seconds_per_epoch") or []
    return round(sum(epoch_seconds) / len(epoch_seconds), 3) if epoch_seconds else None


def python_path() -> str:
    """PYTHONPATH for a run: the plugin first, so it imports from any working directory."""
    return os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)


def child_env() -> dict[str, str]:
    """The environment of a run: this one, with the plugin importable from any working directory, and its
    output unbuffered, so that the run's log follows the training as it goes."""
    return {**os.environ, "PYTHONPATH": python_path(), "PYTHONUNBUFFERED": "1"}


_live_runs: set[subprocess.Popen] = set()  # runs started by execute() that have not ended
_live_lock = threading.Lock()
_stopping = threading.Event()  # set while an interrupted command stops its runs: no new run may start


def _end(procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """Terminate ``procs`` and wait for each, killing one that is still there after ``timeout`` seconds."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def stop_live_runs() -> None:
    """End every run still going (an interrupted command's runs resume from their last epoch when it is run
    again); a run that another thread starts meanwhile is terminated as soon as it is registered."""
    with _live_lock:
        _stopping.set()
        procs = list(_live_runs)
    _end(procs)


@contextmanager
def interruptible():
    """SIGTERM (``kill``, a session or job that ends) stops the command as Ctrl-C does: a KeyboardInterrupt
    in the main thread, on which the command ends its runs (``execute`` its own, a parallel pool
    :func:`stop_live_runs`) rather than leaving them training with nobody reading them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stopping short
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    _stopping.clear()
    try:
        yield
    finally:
        _stopping.clear()
        # None: the earlier handler was not installed from Python; the default is the closest we can restore
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def execute(cmd: list[str], log_file: Path, verbose: bool, cwd: Optional[str] = None, append: bool = False) -> int:
    """Run ``cmd``, its output into ``log_file`` (after what it holds with ``append``; also to the console
    when verbose); return the exit code."""
    with open(log_file, "a" if append else "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=cwd
        )
        try:
            with _live_lock:
                _live_runs.add(proc)
                if _stopping.is_set():  # started while an interrupted command stops its runs
                    proc.terminate()
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()  # `tail -f` on the log follows the run
                if verbose:
                    sys.stdout.write(line)
            return proc.wait()
        except KeyboardInterrupt:
            _end([proc])
            raise
        finally:
            with _live_lock:
                _live_runs.discard(proc)


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


def user_error_message(log_file: Path) -> str:
    """The runner's one-paragraph user error (its ``error: ...`` line) from a run's log."""
    for line in reversed(tail(log_file, 40).splitlines()):
        if line.startswith("error: "):
            return line[len("error: "):]
    return f"the run stopped on a user error; see {log_file}"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
