"""The runner end to end on a slice of ml-100k, property layering, and user-error handling."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from recbole_diffcl.quick_start import load_config
from tests import forked_cli
from tests.conftest import ROOT

RUNNER = str(ROOT / "run_recbole_diffcl.py")


def run_cli(args, cwd, timeout=600):
    """The runner as a process (forked from a server that imported torch and the plugin once: tests/forked_cli.py)."""
    return forked_cli.run([sys.executable, RUNNER, *args], cwd, {**os.environ, "PYTHONPATH": str(ROOT)}, timeout)


def as_cli(props: dict) -> list:
    return [f"--{k}={v}" for k, v in props.items()]


def test_end_to_end_train_validate_reload_test(tmp_path, tiny_run_dict):
    result_file = tmp_path / "out" / "result.json"
    proc = run_cli([*as_cli(tiny_run_dict), f"--result_file={result_file}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["model"] == "DiffCLRec" and result["dataset"] == "ml-100k" and result["seed"] == 2020
    assert result["peak_rss_mb"] > 50
    assert result["epochs_run"] == 2 and len(result["seconds_per_epoch"]) == 2
    assert all(s > 0 for s in result["seconds_per_epoch"]) and result["wall_seconds"] > sum(result["seconds_per_epoch"])
    for part in ("best_valid_result", "test_result"):
        assert set(result[part]) >= {"hit@10", "ndcg@10", "mrr@10", "hit@5", "ndcg@20"}
        assert all(0 <= v <= 1 for v in result[part].values())
    assert result["test_result"]["hit@20"] >= result["test_result"]["hit@10"] >= result["test_result"]["hit@5"]
    # properties as set by the layering: model file, overall file, command line
    assert result["properties"]["mask_ratio"] == 0.1
    assert result["properties"]["valid_metric"] == "NDCG@10"
    assert result["properties"]["hidden_size"] == 16
    # the best checkpoint is plain state: it loads with torch's safe loader and restores the model
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert checkpoint["config"]["model"] == "DiffCLRec"
    assert any(k.startswith("denoiser.") for k in checkpoint["state_dict"])
    assert not list(Path(result["checkpoint"]).parent.glob("*.tmp"))
    # the log names every loss part and the best checkpoint was reloaded for test
    log = next((tmp_path / "log" / "DiffCLRec").glob("*.log")).read_text()
    for name in ("rec:", "cl:", "nll:", "mse:", "Loading model structure and parameters from"):
        assert name in log
    assert "FutureWarning" not in proc.stderr


def test_property_layering_later_wins(tmp_path):
    user_file = tmp_path / "mine.yaml"
    user_file.write_text("mask_ratio: 0.3\naug_topk: 7\n")
    _, config = load_config("DiffCLRec", "ml-100k")
    assert config["valid_metric"] == "NDCG@10"          # props/overall.yaml over RecBole's default (MRR@10)
    assert config["user_inter_num_interval"] == "[0,30]"  # props/dataset/ml-100k.yaml
    assert config["mask_ratio"] == 0.1                 # props/model/DiffCLRec.yaml
    _, config = load_config("DiffCLRec", "ml-100k", [str(user_file)])
    assert config["mask_ratio"] == 0.3 and config["aug_topk"] == 7
    _, config = load_config("DiffCLRec", "ml-100k", [str(user_file)], {"mask_ratio": "0.4"})
    assert config["mask_ratio"] == 0.4 and config["aug_topk"] == 7
    _, config = load_config("SASRec", "ml-100k")
    assert config["n_layers"] == 2 and config["valid_metric"] == "NDCG@10"  # RecBole's model file + ours


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model=NoSuchModel"], "Unknown model 'NoSuchModel'"),
        (["--dataset=no-such-data"], "no-such-data"),
        (["--mask_ratio=1.5"], "mask_ratio=1.5"),
        (["--cl_weight=-1"], "cl_weight=-1"),
        (["--noise_schedule=quadratic"], "noise_schedule"),
        (["--config_files=missing.yaml"], "missing.yaml"),
        (["--loss_type=BPR"], "train_neg_sample_args"),
        (["--model=SASRec", "--whole_sequence_training=True"], "whole_sequence_training=True is not available"),
        (["--length_sorted_passes=0"], "length_sorted_passes=0"),
    ],
)
def test_user_errors_exit_nonzero_with_one_paragraph_and_no_files(tmp_path, args, expected):
    proc = run_cli(args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    message = proc.stderr.strip()
    assert message.startswith("error: ") and expected in message
    assert "\n\n" not in message, "one paragraph"
    assert "Fix" in message or "recbole_diffcl.prepare" in message, "the message names the fix"
    assert list(tmp_path.iterdir()) == [], "nothing may be written for a rejected run"


def test_malformed_atomic_file_is_a_user_error(tmp_path):
    data = tmp_path / "data" / "broken"
    data.mkdir(parents=True)
    (data / "broken.inter").write_text("user_id\titem_id\n1\t2\n")  # header lacks ':type'
    proc = run_cli(["--dataset=broken", f"--data_path={tmp_path / 'data'}"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "broken.inter" in proc.stderr
