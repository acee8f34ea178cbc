"""Every user mistake is caught before training: exit code 2, one message naming the problem and the fix,
no traceback, and nothing left on disk. One table of cases for the runner, ``prepare`` and the benchmark."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forked_cli
from tests.conftest import ROOT

TINY = ["--epochs=1", "--hidden_size=16", "--inner_size=32", "--diffusion_steps=20", "--show_progress=False"]
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def _inter(rows: list[str]) -> str:
    return HEADER + "".join(r + "\n" for r in rows)


# Input files each case needs, relative to the case's folder.
FILES = {
    "short": {"data/short/short.inter": _inter([f"{u}\t{u % 9 + k + 1}\t{k}" for u in range(1, 30) for k in range(1 + u % 2)])},
    "badts": {"data/badts/badts.inter": _inter(["1\t2\t3", "1\t3\tyesterday", "1\t4\t5"])},
    "onlyuid": {"data/onlyuid/onlyuid.inter": _inter(["1\t2\t3", "7", "1\t4\t5"])},
    "yaml_syntax": {"bad.yaml": "mask_ratio: 0.2\naug_topk: [10\n"},
    "yaml_list": {"list.yaml": "- mask_ratio\n- 0.2\n"},
    "yaml_scalar": {"scalar.yaml": "mask_ratio=0.2\n"},
    "confdir": {"confs/a.yaml": "mask_ratio: 0.2\n"},
    "afile": {"afile": "not a folder\n"},
    "seqs": {"seqs.txt": "".join(f"{u} " + " ".join(str((u + k) % 30 + 1) for k in range(6)) + "\n" for u in range(1, 21)),
             "other.txt": "".join(f"{u} " + " ".join(str((u * k) % 30 + 1) for k in range(6)) + "\n" for u in range(1, 21))},
    "adir": {"adir/keep.txt": "x\n"},
}

RUNNER = [sys.executable, str(ROOT / "run_recbole_diffcl.py")]
PREPARE = [sys.executable, "-m", "recbole_diffcl.prepare"]
BENCH = [sys.executable, "-m", "recbole_diffcl.benchmark"]
PERF = {name: [sys.executable, str(ROOT / "perf" / f"{name}.py")] for name in ("profile_step", "step_speed", "side_by_side")}

# (id, files, command, words the message must contain)
CASES = [
    # item 2: output paths are checked before training
    ("result_in_proc", None, [*RUNNER, "--result_file=/proc/x.json"], ["/proc", "not writable", "--result_file"]),
    ("result_in_sys", None, [*RUNNER, "--result_file=/sys/x.json"], ["/sys", "not writable"]),
    ("result_is_dir", "adir", [*RUNNER, "--result_file=adir"], ["adir", "existing folder"]),
    ("result_under_file", "afile", [*RUNNER, "--result_file=afile/r.json"], ["afile", "is a file"]),
    ("result_device", None, [*RUNNER, "--result_file=/dev/null"], ["not a regular file"]),
    ("checkpoint_in_proc", None, [*RUNNER, "--checkpoint_dir=/proc/saved"], ["checkpoint", "--checkpoint_dir"]),
    ("checkpoint_is_file", "afile", [*RUNNER, "--checkpoint_dir=afile"], ["checkpoint", "is a file"]),
    # item 3: a dataset too short to split
    ("too_short", "short", [*RUNNER, "--dataset=short", "--data_path=data"], ["too short to split", "at least 3"]),
    # item 4: messages instead of tracebacks
    ("heads_split", None, [*RUNNER, "--hidden_size=63"], ["hidden_size=63", "n_heads=2", "multiple of 2"]),
    ("denoiser_heads", None, [*RUNNER, "--hidden_size=16", "--denoiser_n_heads=3"], ["denoiser_n_heads=3"]),
    ("sasrec_heads", None, [*RUNNER, "--model=SASRec", "--hidden_size=65"], ["hidden_size=65", "n_heads"]),
    ("timestamp_text", "badts", [*RUNNER, "--dataset=badts", "--data_path=data"], ["line 3", "yesterday", "float"]),
    ("prepare_path_file", "seqs", [*PREPARE, "toy", "--source", "seqs.txt", "--data_path", "seqs.txt"],
     ["is a file", "--data_path"]),
    ("prepare_path_proc", "seqs", [*PREPARE, "toy", "--source", "seqs.txt", "--data_path", "/proc/data"],
     ["not writable", "--data_path"]),
    # item 5: misspelled or meaningless properties
    ("misspelled", None, [*RUNNER, "--mask_ratoi=0.5"], ["mask_ratoi", "Did you mean 'mask_ratio'"]),
    ("unknown", None, [*RUNNER, "--no_such_property=1"], ["Unknown property --no_such_property"]),
    ("topk_above_items", None, [*RUNNER, "--aug_topk=100000", *TINY], ["aug_topk=100000", "items"]),
    ("foreign_invalid", None, [*RUNNER, "--model=SASRec", "--mask_ratio=7"], ["mask_ratio=7", "DiffCLRec"]),
    ("bench_foreign_invalid", None, [*BENCH, "--models=SASRec", "--seeds=1", "--out=b", "--mask_ratio=7"],
     ["mask_ratio=7"]),
    # item 7: wording
    ("yaml_syntax", "yaml_syntax", [*RUNNER, "--config_files=bad.yaml"], ["bad.yaml", "line 3", "not valid YAML"]),
    ("yaml_list", "yaml_list", [*RUNNER, "--config_files=list.yaml"], ["list.yaml", "name: value"]),
    ("yaml_scalar", "yaml_scalar", [*RUNNER, "--config_files=scalar.yaml"], ["scalar.yaml", "mapping"]),
    ("config_is_dir", "confdir", [*RUNNER, "--config_files=confs"], ["confs", "is a folder"]),
    ("dataset_path", None, [*RUNNER, "--dataset=../../etc"], ["'../../etc'", "--data_path"]),
    ("bench_unknown_model", None, [*BENCH, "--models=SASRec,NoSuch", "--out=b"], ["NoSuch", "--models"]),
    ("bench_empty_seeds", None, [*BENCH, "--seeds=,", "--out=b"], ["--seeds=2020,2021,2022"]),
    ("only_user_id", "onlyuid", [*RUNNER, "--dataset=onlyuid", "--data_path=data"], ["line 3", "1 value"]),
    # item 6: prepare does not silently overwrite another dataset
    ("prepare_overwrite", "seqs", None, ["already exists", "--overwrite"]),
    # issue 22: RecBole's own properties, checked before training (integers, floats, strings, booleans, lists,
    # dicts, metric names, split specifications), and values that cannot work with the rest of the run
    ("rb_int_zero", None, [*RUNNER, "--epochs=0"], ["epochs=0", "positive integer"]),
    ("rb_int_text", None, [*RUNNER, "--train_batch_size=many"], ["train_batch_size='many'", "an integer"]),
    ("rb_float_negative", None, [*RUNNER, "--learning_rate=-0.1"], ["learning_rate=-0.1", "> 0"]),
    ("rb_float_decay", None, [*RUNNER, "--weight_decay=-1"], ["weight_decay=-1", ">= 0"]),
    ("rb_str_learner", None, [*RUNNER, "--learner=adamm"], ["learner='adamm'", "silently"]),
    ("rb_str_state", None, [*RUNNER, "--state=loud"], ["state='loud'", "WARNING"]),
    ("rb_bool", None, [*RUNNER, "--show_progress=yes"], ["show_progress='yes'", "True or False"]),
    ("rb_list_topk", None, [*RUNNER, "--topk=[0,10]"], ["topk=[0, 10]", "positive integer"]),
    ("rb_metric_name", None, [*RUNNER, "--metrics=['NDCG','Hitt']"], ["Hitt", "metric names"]),
    ("rb_metric_mix", None, [*RUNNER, "--metrics=['NDCG','AUC']"], ["AUC", "ranking metrics only"]),
    ("rb_valid_metric", None, [*RUNNER, "--valid_metric=NDCG@50"], ["valid_metric='NDCG@50'", "NDCG@10", "epoch"]),
    ("rb_valid_metric_absent", None, [*RUNNER, "--valid_metric=Recall@10"], ["Recall@10", "Hit@10"]),
    ("rb_split_valid_only", None, [*RUNNER, "--eval_args={'split':{'LS':'valid_only'},'order':'TO','mode':'full'}"],
     ["valid_only", "valid_and_test"]),
    ("rb_split_two_ratios", None, [*RUNNER, "--eval_args={'split':{'RS':[0.8,0.2]},'order':'TO','mode':'full'}"],
     ["RS", "three ratios"]),
    ("rb_split_random_order", None, [*RUNNER, "--eval_args={'split':{'LS':'valid_and_test'},'order':'RO','mode':'full'}"],
     ["order TO", "sequential"]),
    ("rb_split_mode", None, [*RUNNER, "--eval_args={'split':{'LS':'valid_and_test'},'order':'TO','mode':'uni'}"],
     ["uniN", "full"]),
    ("rb_dict_negatives", None, [*RUNNER, "--train_neg_sample_args={'distribution':'uniform','sample_num':1}"],
     ["train_neg_sample_args", "loss_type CE"]),
    ("rb_dict_clip", None, [*RUNNER, "--clip_grad_norm=5"], ["clip_grad_norm=5", "mapping"]),
    ("rb_dict_load_col", None, [*RUNNER, "--load_col=['user_id']"], ["load_col", "mapping"]),
    ("rb_interval_malformed", None, [*RUNNER, "--user_inter_num_interval=[0,30"], ["'[0,30'", "filter nothing"]),
    ("rb_interval_keeps_nobody", None, [*RUNNER, "--user_inter_num_interval=[0,2]"], ["3 or more", "no user"]),
    ("rb_not_repeatable", None, [*RUNNER, "--repeatable=False"], ["repeatable=False", "sequential"]),
    ("rb_sasrec_metric", None, [*RUNNER, "--model=SASRec", "--metrics=['NDCG','Hitt']"], ["Hitt"]),
    # the speed scripts of perf/: missing data or a wrong checkout is a message, not a download attempt or a traceback
    ("perf_profile_no_data", None, [*PERF["profile_step"], "--dataset=nosuch", "--model=SASRecPlus"],
     ["'nosuch' was not found", "prepare"]),
    ("perf_step_speed_no_data", None, [*PERF["step_speed"], "--dataset=nosuch"], ["'nosuch' was not found"]),
    ("perf_side_by_side_old", "adir", [*PERF["side_by_side"], "--old=adir", "--rounds=2"],
     ["--old=", "not a checkout", "git worktree add"]),
    ("perf_side_by_side_no_data", None, [*PERF["side_by_side"], f"--old={ROOT}", "--dataset=nosuch", "--rounds=2"],
     ["'nosuch' was not found"]),
    ("perf_side_by_side_no_file", None, [*PERF["side_by_side"], "--models=SASRecPlus,X=DiffCLRec:nosuch.yaml", "--rounds=2"],
     ["nosuch.yaml", "does not exist"]),
]


def _write(folder: Path, name) -> None:
    for rel, text in (FILES.get(name) or {}).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


def _run(cmd, cwd):
    """The command as a process would run it, forked from a server that imported torch and the plugin once
    (tests/forked_cli.py: ~10x faster than a fresh interpreter per case)."""
    return forked_cli.run(cmd, cwd, {**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("case, files, cmd, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, case, files, cmd, words):
    _write(tmp_path, files)
    if case == "prepare_overwrite":
        first = _run([*PREPARE, "toy", "--source", "seqs.txt", "--data_path", "data"], tmp_path)
        assert first.returncode == 0, first.stderr
        again = _run([*PREPARE, "toy", "--source", "seqs.txt", "--data_path", "data"], tmp_path)
        assert again.returncode == 0, "the same source again is fine"
        cmd = [*PREPARE, "toy", "--source", "other.txt", "--data_path", "data"]
    before = _tree(tmp_path)
    proc = _run(cmd, tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: "), output[-2000:]
    for word in words:
        assert word in message, (word, message)
    assert "Fix" in message or "fix" in message or "Pass" in message or "pass" in message, message
    assert _tree(tmp_path) == before, "a rejected run leaves nothing behind"


def test_cases_cover_the_issue():
    assert len(CASES) >= 25
    assert sum(1 for c in CASES if c[0].startswith("rb_")) >= 12  # issue 22: RecBole's own properties


def test_divergence_stops_cleanly_with_exit_1(tmp_path):
    """A loss that becomes NaN in the first epoch: exit 1, a message naming the epoch, the part and the fix,
    the result file written with stopped_by: diverged (nothing validated yet, so nothing tested)."""
    proc = _run([*RUNNER, "--user_inter_num_interval=[0,25]", *TINY, "--cl_temperature=1e-45",
                 "--result_file=r.json"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: Training diverged in epoch 0: the loss part 'cl'")
    assert "--learning_rate=0.0001" in message and "--cl_weight" in message and "stopped_by: diverged" in message
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["stopped_by"] == "diverged" and result["test_result"] == {} and result["divergence"] == message[7:]


def test_divergence_keeps_and_tests_the_best_checkpoint(tmp_path, monkeypatch):
    """NaN from the third epoch on: the run stops there, the best checkpoint (of a finite epoch) is tested, the
    last checkpoint is the last finite epoch's, and the result file says so."""
    import torch

    from recbole_diffcl.errors import TrainingDiverged
    from recbole_diffcl.model.sasrecplus import SASRecPlus
    from recbole_diffcl.quick_start import run
    from tests.conftest import tiny_config

    real_loss = SASRecPlus.calculate_loss

    def nan_from_epoch_2(self, interaction):
        loss = real_loss(self, interaction)
        return loss * float("nan") if self.current_epoch >= 2 else loss

    monkeypatch.setattr(SASRecPlus, "calculate_loss", nan_from_epoch_2)
    props = tiny_config(tmp_path, epochs=5, user_inter_num_interval="[0,25]", stopping_step=100)
    with pytest.raises(TrainingDiverged, match=r"epoch 2: the loss part 'rec' became nan") as raised:
        run("SASRecPlus", "ml-100k", config_dict=props, result_file=str(tmp_path / "r.json"))
    assert "was kept and is tested" in str(raised.value)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["stopped_by"] == "diverged" and result["epochs_run"] == 2 and result["test_result"]["ndcg@10"] >= 0
    best = torch.load(result["checkpoint"], weights_only=True)
    last = torch.load(result["last_checkpoint"], weights_only=True)
    assert best["epoch"] <= 1 and last["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_dataset_without_property_file_trains(tmp_path):
    """A dataset made by our own prepare, with no props/dataset/<name>.yaml, loads its timestamp and trains."""
    _write(tmp_path, "seqs")
    assert _run([*PREPARE, "mydata", "--source", "seqs.txt", "--data_path", "data"], tmp_path).returncode == 0
    proc = _run([*RUNNER, "--dataset=mydata", "--data_path=data", *TINY, "--result_file=r.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["test_result"] and result["best_valid_result"]
    # output for people: a header, the metrics table and the paths on stdout; the configuration in the log only
    assert proc.stdout.startswith("recbole_diffcl: DiffCLRec on mydata")
    assert "device:" in proc.stdout and "ndcg@10" in proc.stdout and "checkpoint:" in proc.stdout
    assert "result:     r.json" in proc.stdout and "log:" in proc.stdout
    assert "gpu_id" not in proc.stdout + proc.stderr and "OrderedDict" not in proc.stdout + proc.stderr
    log = next((tmp_path / "log" / "DiffCLRec").glob("*.log")).read_text()
    assert "gpu_id" in log and "learning_rate" in log


def test_yaml_unknown_property_is_a_warning(tmp_path):
    from recbole_diffcl.quick_start import load_config

    user = tmp_path / "mine.yaml"
    user.write_text("mask_ratoi: 0.3\n")
    proc = _run([sys.executable, "-c", f"from recbole_diffcl.quick_start import load_config; "
                 f"load_config('DiffCLRec', 'ml-100k', [{str(user)!r}])"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "unknown property 'mask_ratoi'" in proc.stderr and "Did you mean 'mask_ratio'" in proc.stderr
    _, config = load_config("DiffCLRec", "ml-100k", [str(user)])
    assert config["mask_ratio"] == 0.1


def test_result_file_failure_at_the_end_keeps_the_result(tmp_path, monkeypatch):
    """A full disk at the end loses nothing: the result goes beside the log, no .tmp is left."""
    from recbole_diffcl import quick_start
    from recbole_diffcl.console import RunOutputError

    real_dump = json.dump

    def full_disk(obj, f, **kwargs):
        if str(getattr(f, "name", "")).startswith(str(tmp_path / "out")):
            raise OSError(28, "No space left on device")
        return real_dump(obj, f, **kwargs)

    monkeypatch.setattr(quick_start.json, "dump", full_disk)
    (tmp_path / "out").mkdir()
    (tmp_path / "log").mkdir()
    summary = {"model": "M", "best_valid_score": float("-inf"), "test_result": {"ndcg@10": float("nan")}}
    with pytest.raises(RunOutputError, match="saved to"):
        quick_start._save_result(str(tmp_path / "out" / "r.json"), summary, str(tmp_path / "log" / "run.log"))
    assert list((tmp_path / "out").iterdir()) == []
    kept = json.loads((tmp_path / "log" / "run.json").read_text())  # standard JSON: no -Infinity / NaN
    assert kept["best_valid_score"] is None and kept["test_result"]["ndcg@10"] is None


def test_same_seed_same_result(tmp_path):
    """Two runs with the same seed give the same metrics and losses (RecBole's reproducibility)."""
    results = []
    for i in range(2):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        proc = _run([*RUNNER, "--user_inter_num_interval=[0,25]", *TINY, "--epochs=2", "--result_file=r.json"], folder)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads((folder / "r.json").read_text()))
    for key in ("best_valid_score", "best_valid_result", "test_result", "epochs_run"):
        assert results[0][key] == results[1][key], key


@pytest.mark.parametrize("longest, expected", [(2, "too short to split"), (9, "could not split")])
def test_split_failures_are_reworded_by_their_cause(monkeypatch, tmp_path, longest, expected):
    """RecBole's split errors: "too short" only where no user has three interactions, else RecBole's reason
    (a missing time column once read as "too short")."""
    import numpy as np

    from recbole_diffcl import preflight
    from recbole_diffcl.errors import UserError
    from recbole_diffcl.quick_start import load_config

    _, config = load_config("SASRecPlus", "ml-100k", config_dict={"user_inter_num_interval": "[0,25]"})

    class Data:
        inter_feat = {config["USER_ID_FIELD"]: np.repeat(np.arange(4), longest)}

    def fail(*args):
        raise ValueError("[timestamp] is not exist in interaction")

    monkeypatch.setattr("recbole_diffcl.data.create_dataset", lambda c: Data())
    monkeypatch.setattr("recbole.data.data_preparation", fail)
    with pytest.raises(UserError, match=expected) as err:
        preflight.load_checked_data(config)
    assert ("timestamp" in str(err.value)) and ("at least 3" in str(err.value)) == (longest < 3)


def test_valid_recbole_forms_are_accepted(tmp_path):
    """Values RecBole accepts after its own conversions: not mistakes (the review of issue 22's checks)."""
    from recbole_diffcl.properties import check_recbole_properties
    from recbole_diffcl.quick_start import config_from_checkpoint, load_config, run
    from tests.conftest import tiny_config

    base = {"metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "repeatable": True,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}}
    for extra in ({"gpu_id": (0, 1)}, {"user_inter_num_interval": (4, 100)}, {"user_inter_num_interval": [4, 100]},
                  {"stopping_step": 0}, {"eval_args": {"split": {"TS": [0.8, 0.1, 0.1]}, "order": "TO"}},
                  {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "None"}}):
        check_recbole_properties({**base, **extra})
    # a model with its own input type may sample negatives whatever loss_type says (TransRec)
    load_config("TransRec", "ml-100k", config_dict={"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}})
    # a checkpoint of a run with an open interval reloads (RecBole evaluates "(4,30)" into a tuple)
    result = run("SASRecPlus", "ml-100k", config_dict={**tiny_config(tmp_path), "user_inter_num_interval": "(4,30)"})
    import torch

    stored = torch.load(result["checkpoint"], weights_only=True)
    config_from_checkpoint(stored)
    # loss_type SSM end to end
    assert run("SASRecPlus", "ml-100k", config_dict={**tiny_config(tmp_path), "loss_type": "SSM"})["test_result"]


def test_side_by_side_worker_runs_its_own_checkout(tmp_path):
    """A worker of perf/side_by_side.py imports the package of the checkout it measures, not the script's own
    (it did for a while, so that --old timed the new code twice)."""
    fake = tmp_path / "checkout" / "recbole_diffcl"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "quick_start.py").write_text("raise SystemExit('the checkout under test was imported')\n")
    proc = subprocess.run([*PERF["side_by_side"], "--worker", f"--checkout={fake.parent}", "--model=SASRecPlus",
                           "--dataset=ml-100k"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "the checkout under test was imported" in proc.stderr, proc.stderr[-2000:]
