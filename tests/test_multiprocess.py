"""Multi-process training through RecBole's torch.distributed (gloo on CPUs) and the sharding of our loaders."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import torch

from recbole_diffcl.data.dataloader import LengthBucketBatchSampler
from tests.conftest import ROOT

TINY = ["--user_inter_num_interval=[0,25]", "--epochs=2", "--hidden_size=16", "--inner_size=32",
        "--diffusion_steps=20", "--show_progress=False"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run_recbole_diffcl.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_bucketed_batches_shard_across_processes():
    lengths = np.random.default_rng(0).integers(1, 50, size=1001)
    shards = [list(LengthBucketBatchSampler(lengths, 16, 4, torch.Generator().manual_seed(3), rank=r, world_size=2))
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(LengthBucketBatchSampler(lengths, 16, 4, None, 0, 2))
    rows = [i for shard in shards for batch in shard for i in batch]
    assert set(rows) == set(range(1001))  # every row once per epoch (plus at most one padding batch)
    assert len(rows) - 1001 <= 16


def test_two_cpu_processes_match_one_within_seed_noise(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    p2 = _run(["--nproc=2", f"--port={_free_port()}", *TINY, "--result_file=r.json"], two)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "2 processes" in p2.stdout and p2.stdout.count("recbole_diffcl: DiffCLRec") == 1  # one report
    p1 = _run([*TINY, "--result_file=r.json"], one)
    assert p1.returncode == 0, p1.stderr[-3000:]
    r1, r2 = (json.loads((d / "r.json").read_text()) for d in (one, two))
    assert r2["processes"] == 2 and r1["processes"] == 1 and r1["epochs_run"] == r2["epochs_run"] == 2
    for part in ("best_valid_result", "test_result"):
        assert set(r1[part]) == set(r2[part])
        # seed noise on this 137-user slice after 2 epochs is about 0.01-0.02 in NDCG@10
        assert abs(r1[part]["ndcg@10"] - r2[part]["ndcg@10"]) < 0.03, (r1[part], r2[part])
    saved = sorted(p.name for p in (two / "saved").glob("*.pth"))
    assert len(saved) == 2 and sum(name.endswith("-last.pth") for name in saved) == 1  # rank 0: best and last


def test_impossible_process_layout_is_refused(tmp_path):
    proc = _run(["--nproc=2", "--world_size=1"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "do not fit together" in proc.stderr and list(tmp_path.iterdir()) == []


def test_two_cpu_processes_with_whole_sequence_and_bucketed_loaders(tmp_path):
    proc = _run(["--nproc=2", f"--port={_free_port()}", *TINY, "--whole_sequence_training=True",
                 "--length_bucketing=True", "--result_file=r.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["processes"] == 2 and 0 <= result["test_result"]["ndcg@10"] <= 1


def test_shared_folders_exist_before_the_processes_start(tmp_path, monkeypatch):
    # RecBole makes ./log/<model> and checkpoint_dir with a check-then-create: two processes making them at once
    # crashed one with FileExistsError (seen in CI), so the parent makes them before it spawns
    import torch.multiprocessing as mp

    from recbole_diffcl.quick_start import run_multiprocess

    seen = {}

    def spawn(fn, args, nprocs, join):
        seen.update(log=(tmp_path / "log" / "DiffCLRec").is_dir(), saved=(tmp_path / "saved").is_dir(), n=nprocs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mp, "spawn", spawn)
    run_multiprocess(nproc=2, model="DiffCLRec", dataset="ml-100k",
                     config_dict={"user_inter_num_interval": "[0,25]", "show_progress": False})
    assert seen == {"log": True, "saved": True, "n": 2}
