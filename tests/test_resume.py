"""Exact resume: kill -9 mid-run, --resume, and the final results equal the uninterrupted run's."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from recbole_diffcl.checkpoint import read_checkpoint
from recbole_diffcl.errors import UserError
from recbole_diffcl.resume import rng_state, set_rng_state
from tests.conftest import ROOT, tiny_config

RUNNER = str(ROOT / "run_recbole_diffcl.py")
EPOCHS = 4


def tiny_props(tmp_path, name: str) -> dict:
    return tiny_config(
        tmp_path,
        user_inter_num_interval="[0,25]",
        epochs=EPOCHS,
        train_batch_size=256,
        eval_batch_size=512,
        diffusion_steps=50,
        denoiser_inner_size=32,
        checkpoint_dir=str(tmp_path / name / "saved"),
        state="INFO",  # the resumed run's log shows which epochs it trained
    )


# The runner, killed with SIGKILL by itself right after the last checkpoint of epoch KILL_AFTER is written
# (polling from outside raced with epochs of a few milliseconds on the tiny slice).
KILL_AFTER = 1
SELF_KILLING_RUNNER = f"""
import os, signal, sys
from recbole_diffcl.resume import ResumableMixin
save_last = ResumableMixin._save_last
def save_then_die(self, epoch):
    save_last(self, epoch)
    if epoch == {KILL_AFTER}:
        os.kill(os.getpid(), signal.SIGKILL)
ResumableMixin._save_last = save_then_die
from recbole_diffcl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def runner(args, cwd, crash: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = ["-c", SELF_KILLING_RUNNER] if crash else [RUNNER]
    return subprocess.Popen(
        [sys.executable, *command, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out + err


def last_epoch(saved_dir) -> int:
    """Epoch of the run's last checkpoint (-1 while there is none)."""
    files = list(saved_dir.glob("*-last.pth")) if saved_dir.is_dir() else []
    return read_checkpoint(str(files[0]), metadata_only=True)["epoch"] if files else -1


def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    full_dir, crash_dir = tmp_path / "full", tmp_path / "crash"
    full_dir.mkdir(), crash_dir.mkdir()
    args = [f"--{k}={v}" for k, v in tiny_props(tmp_path, "full").items()]
    full = runner([*args, f"--result_file={full_dir / 'result.json'}"], cwd=full_dir)

    # the same run, killed with SIGKILL once two epochs (0 and 1) are done
    crash_saved = crash_dir / "saved"
    args = [f"--{k}={v}" for k, v in tiny_props(tmp_path, "crash").items()]
    crash = runner(args, cwd=crash_dir, crash=True)
    crash.communicate(timeout=300)
    finish(full)
    assert crash.returncode == -signal.SIGKILL
    killed_at = last_epoch(crash_saved)
    assert killed_at == KILL_AFTER

    # --resume picks the newest checkpoint of DiffCLRec on ml-100k in checkpoint_dir
    resumed = runner(
        [*args, "--resume", f"--result_file={crash_dir / 'result.json'}"], cwd=crash_dir
    )
    log = finish(resumed)
    assert f"Resume training from epoch {killed_at + 1}" in log
    trained = [e for e in range(EPOCHS) if f"epoch {e} training" in log]
    assert trained == list(range(killed_at + 1, EPOCHS))  # only the epochs the killed run had not finished

    expected = json.loads((full_dir / "result.json").read_text())
    got = json.loads((crash_dir / "result.json").read_text())
    assert got["test_result"] == expected["test_result"]
    assert got["best_valid_result"] == expected["best_valid_result"]
    assert got["best_valid_score"] == expected["best_valid_score"]
    assert got["epochs_run"] == expected["epochs_run"] == EPOCHS
    assert got["valid_curve"] == expected["valid_curve"] and len(got["valid_curve"]) == EPOCHS
    assert got["stopped_by"] == expected["stopped_by"] == "epochs"
    # the weights of the last epoch are bit-identical too
    last_full = torch.load(expected["last_checkpoint"], weights_only=True)
    last_crash = torch.load(got["last_checkpoint"], weights_only=True)
    assert last_full["epoch"] == last_crash["epoch"] == EPOCHS - 1
    for key, tensor in last_full["state_dict"].items():
        assert torch.equal(tensor, last_crash["state_dict"][key]), key
    # the resumed run continued the interrupted run's files
    assert got["checkpoint"].startswith(str(crash_saved)) and len(list(crash_saved.glob("*.pth"))) == 2


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(3)
    state = rng_state(generator)
    torch.save(state, tmp_path / "rng.pth")
    state = torch.load(tmp_path / "rng.pth", weights_only=True)
    draws = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    set_rng_state(state, generator)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()) == draws


def test_resume_errors(tmp_path):
    from recbole_diffcl.quick_start import resumed_config

    with pytest.raises(UserError, match="no checkpoint of DiffCLRec on ml-100k"):
        resumed_config("latest", config_dict={"checkpoint_dir": str(tmp_path)})
    with pytest.raises(UserError, match="does not exist"):
        resumed_config(str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a torch checkpoint"):
        resumed_config(str(tmp_path / "junk.pth"))
