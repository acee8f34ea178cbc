"""Run the plugin's command lines as ``subprocess.run`` would, in children forked from a server that has
imported torch, RecBole and the plugin once.

A user-mistake test starts a command that stops within a second of its start; a fresh interpreter spends
5-10 s importing torch and RecBole first, which made the table of bad inputs most of the suite's time.
multiprocessing's ``forkserver`` preloads those modules in a clean process (no torch operation has run
there, so no OpenMP pool is forked) and forks one child per command: the child gets its own working folder,
environment, ``sys.argv`` and stdout/stderr files, runs the script or module as ``__main__`` and exits
with its exit code; an uncaught exception prints its traceback and exits 1, as the interpreter does.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

PRELOAD = ["torch", "recbole.quick_start", "recbole_diffcl.quick_start", "recbole_diffcl.benchmark",
           "recbole_diffcl.prepare", "recbole_diffcl.cli"]
_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(argv: list[str], module: bool, cwd: str, env: dict, out: str, err: str) -> None:
    code = 1
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        sys.argv = list(argv)
        try:
            if module:
                runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
            else:
                sys.path.insert(0, str(Path(argv[0]).resolve().parent))
                runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run(cmd: list[str], cwd, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)`` for
    ``[python, script.py, ...]`` and ``[python, -m, module, ...]``, in a forked child (anything else in a
    real subprocess)."""
    if cmd[0] != sys.executable or cmd[1] == "-c" or sys.platform == "win32":
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    module = cmd[1] == "-m"
    argv = cmd[2:] if module else cmd[1:]
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
        process = _server().Process(target=_child, args=(argv, module, str(cwd), dict(env), out, err))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(cmd, timeout)
        read = lambda path: Path(path).read_text() if os.path.exists(path) else ""  # noqa: E731
        return subprocess.CompletedProcess(cmd, process.exitcode, read(out), read(err))
