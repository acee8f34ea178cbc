"""``python -m recbole_diffcl.benchmark`` end to end on a slice of ml-100k, its rerun behaviour, the
per-group metrics and the ``exclude_history`` protocol option."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_diffcl import benchmark
from recbole_diffcl.evaluation import EvaluationOptionsMixin, rankings_from_positions
from recbole_diffcl.report import ranking_metrics, read_rankings, topk_from_result_keys
from tests.conftest import ROOT

TINY = [
    "--user_inter_num_interval=[0,25]", "--epochs=1", "--hidden_size=16", "--inner_size=32",
    "--train_batch_size=256", "--show_progress=False", "--diffusion_steps=50", "--denoiser_inner_size=32",
]


def run_module(module: str, args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    # One torch thread per run: on a small shared machine two OpenMP threads that wait on each other
    # make these tiny runs many times slower; results are the same.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_benchmark_end_to_end_and_rerun(tmp_path):
    out = tmp_path / "bench"
    args = ["--dataset=ml-100k", "--models=SASRec,DiffCLRec", "--seeds=2020,2021", "--length_groups=-21,22-23,24-",
            *TINY, f"--out={out}"]
    proc = run_module("recbole_diffcl.benchmark", args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[1/4] SASRec seed 2020: running" in proc.stdout and "[4/4] DiffCLRec seed 2021: done" in proc.stdout
    assert "ETA" in proc.stdout

    # results.csv: one row per run with every metric, the groups, and the cost columns
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 4
    assert sorted(zip(frame["model"], frame["seed"])) == sorted(
        (m, s) for m in ("SASRec", "DiffCLRec") for s in (2020, 2021))
    metrics = [f"{m}@{k}" for m in ("hit", "ndcg", "mrr") for k in (5, 10, 20)]
    groups = ["len-21", "len22-23", "len24+"]
    expected = {"model", "seed", "epochs", "seconds_per_epoch", "peak_rss_mb", "exclude_history", *metrics,
                *(f"valid_{m}" for m in metrics), *(f"{g}_{m}" for g in groups for m in metrics),
                *(f"{g}_users" for g in groups)}
    assert expected <= set(frame.columns)
    assert (frame["epochs"] == 1).all() and (frame["seconds_per_epoch"] > 0).all() and (frame["peak_rss_mb"] > 50).all()
    assert not frame["exclude_history"].any()

    for _, row in frame.iterrows():
        rankings = read_rankings(str(out / "runs" / f"{row['model']}-{row['seed']}.users.csv"))
        # the groups partition the test users
        assert sum(row[f"{g}_users"] for g in groups) == len(rankings["user_id"]) > 100
        assert all(row[f"{g}_users"] > 0 for g in groups)
        # the per-user rankings reproduce RecBole's own test result exactly
        result = json.loads((out / "runs" / f"{row['model']}-{row['seed']}.json").read_text())
        names, topk = topk_from_result_keys(list(result["test_result"]))
        assert ranking_metrics(rankings["topk_position"], names, topk) == result["test_result"]
        # the result file's positions by length hold the same (length, position) pairs: enough on its own
        summarised = rankings_from_positions(result["test_positions_by_length"])
        assert sorted(zip(summarised["seq_len"], summarised["topk_position"])) == sorted(
            zip(rankings["seq_len"], rankings["topk_position"]))
        # a group's value is the user-weighted share of the whole
        whole = sum(row[f"{g}_hit@20"] * row[f"{g}_users"] for g in groups) / len(rankings["user_id"])
        assert whole == pytest.approx(row["hit@20"], abs=2e-4)

    summary = (out / "summary.md").read_text()
    assert "| SASRec | 2 |" in summary and "| DiffCLRec | 2 |" in summary
    assert "**" in summary  # best in bold
    assert "scipy.stats.ttest_rel" in summary and "exclude_history: False" in summary
    assert "### len22-23 (22-23 interactions)" in summary
    p_values = [float(p) for p in re.findall(r"p = ([0-9.e+-]+)", summary)]
    assert p_values and all(0 <= p <= 1 for p in p_values)
    png = (out / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # Rerun: finished runs are skipped; an interrupted one (no complete result file) is redone.
    done = out / "runs" / "SASRec-2020.json"
    stamp = done.stat().st_mtime_ns
    (out / "runs" / "DiffCLRec-2021.json").write_text('{"model": "DiffCLRec", "se')  # cut short
    proc = run_module("recbole_diffcl.benchmark", args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 runs: 3 finished earlier, 1 to run" in proc.stdout
    assert proc.stdout.count("finished earlier, skipped") == 3
    assert "[4/4] DiffCLRec seed 2021: done" in proc.stdout
    assert done.stat().st_mtime_ns == stamp
    assert len(pd.read_csv(out / "results.csv")) == 4

    # --summary_only starts no run: the table of what has finished (a campaign's table so far)
    partial = [a if not a.startswith("--seeds=") else "--seeds=2020,2021,2022" for a in args]
    proc = run_module("recbole_diffcl.benchmark", [*partial, "--summary_only"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 runs: 4 finished, summarised" in proc.stdout and "running" not in proc.stdout
    assert not (out / "runs" / "SASRec-2022.log").exists()
    assert "finished runs: 4 of 6" in (out / "summary.md").read_text()

    # Other settings into the same folder are refused (they would mix two experiments).
    proc = run_module("recbole_diffcl.benchmark", [*args, "--learning_rate=0.01"], cwd=tmp_path)
    assert proc.returncode == 2 and "other settings" in proc.stderr and "Traceback" not in proc.stderr


def _fake_execute(fail: set):
    """Stand-in for running the runner: writes a plausible result (or fails) without training."""

    def execute(cmd, log_file, verbose, cwd=None, append=False):
        args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--"))
        name = f"{args['model']}-{args['seed']}"
        Path(log_file).write_text("fake run\n")
        if name in fail:
            return 1
        rng = np.random.default_rng(int(args["seed"]) + len(args["model"]))
        positions = rng.integers(0, 25, size=40)
        pd.DataFrame({
            "user_id": range(40), "seq_len": rng.integers(5, 12, size=40), "target_item": 1,
            "rank": np.where(positions > 0, positions, 50), "topk_position": np.where(positions <= 20, positions, 0),
        }).to_csv(args["user_rankings_file"], index=False)
        test = ranking_metrics(np.where(positions <= 20, positions, 0), ["hit", "ndcg", "mrr"], [5, 10, 20])
        Path(args["result_file"]).write_text(json.dumps({
            "model": args["model"], "dataset": args["dataset"], "seed": int(args["seed"]),
            "properties": {"exclude_history": True, "valid_metric": "NDCG@10"}, "best_valid_result": test,
            "test_result": test, "epochs_run": 2, "seconds_per_epoch": [1.0, 1.2], "peak_rss_mb": 300.0,
            "view_statistics": [{"epoch": 0, "cl_acc": 0.1}, {"epoch": 1, "cl_acc": 0.3 if "config_files" in args else 0.2}]
            if args["model"].startswith("DiffCLRec") else [],
        }))
        return 0

    return execute


def test_failed_runs_are_reported_and_redone(tmp_path, monkeypatch, capsys):
    args = ["--models=SASRec,DiffCLRec", "--seeds=1,2,3", f"--out={tmp_path}"]
    monkeypatch.setattr(benchmark, "execute", _fake_execute(fail={"DiffCLRec-2"}))
    assert benchmark.main(args) == 1
    captured = capsys.readouterr()
    assert "DiffCLRec seed 2: FAILED (exit code 1)" in captured.out and "DiffCLRec-2" in captured.err
    assert len(pd.read_csv(tmp_path / "results.csv")) == 5
    summary = (tmp_path / "summary.md").read_text()
    assert "**failed**: DiffCLRec-2" in summary and "**excluded**" in summary  # exclude_history: True

    monkeypatch.setattr(benchmark, "execute", _fake_execute(fail=set()))
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 5 and "DiffCLRec seed 2: done" in out
    frame = pd.read_csv(tmp_path / "results.csv")
    assert len(frame) == 6
    # counts per group add up to all users, group 'other' only when some fall outside every group
    assert (frame[["short_users", "mid_users", "long_users"]].sum(axis=1) == 40).all()
    assert "other_users" not in frame.columns


def test_runs_from_takes_finished_runs_from_another_folder(tmp_path, monkeypatch, capsys):
    # The main table's folder: SASRec and DiffCLRec, seeds 1-2.
    table, ablation = tmp_path / "table", tmp_path / "ablation"
    monkeypatch.setattr(benchmark, "execute", _fake_execute(fail=set()))
    assert benchmark.main(["--models=SASRec,DiffCLRec", "--seeds=1,2", f"--out={table}"]) == 0
    capsys.readouterr()

    # An ablation folder runs only its own variant and takes the reference runs from the table, in place.
    started = []
    fake = _fake_execute(fail=set())
    monkeypatch.setattr(benchmark, "execute", lambda cmd, *a, **k: started.append(cmd) or fake(cmd, *a, **k))
    args = ["--models=DiffCLRec,DiffCLRec-x=DiffCLRec:" + str(ROOT / "props/ablation/cl_weight-0.yaml"), "--seeds=1,2",
            f"--out={ablation}", f"--runs_from={table}", "--reference=DiffCLRec"]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert len(started) == 2 and all("--model=DiffCLRec" in cmd for cmd in started)
    assert "2 finished run(s) taken from other folders: DiffCLRec-1" in out
    assert sorted(p.name for p in (ablation / "runs").glob("*.json")) == ["DiffCLRec-x-1.json", "DiffCLRec-x-2.json"]
    frame = pd.read_csv(ablation / "results.csv")
    assert sorted(frame["model"]) == ["DiffCLRec", "DiffCLRec", "DiffCLRec-x", "DiffCLRec-x"]
    table_frame = pd.read_csv(table / "results.csv")
    assert (frame[frame["model"] == "DiffCLRec"]["ndcg@10"].values
            == table_frame[table_frame["model"] == "DiffCLRec"]["ndcg@10"].values).all()
    assert "DiffCLRec-x" in (ablation / "summary.md").read_text()

    # A folder made with other settings, or no benchmark folder at all, is refused before any run.
    started.clear()
    fresh = [a if not a.startswith("--out=") else f"--out={tmp_path / 'fresh'}" for a in args]
    assert benchmark.main([*fresh, "--learning_rate=0.01"]) == 2
    assert "--runs_from: " + str(table) + " holds other settings" in capsys.readouterr().err
    assert benchmark.main([*fresh[:-2], f"--runs_from={tmp_path / 'nowhere'}"]) == 2
    assert "not a benchmark folder" in capsys.readouterr().err
    relabelled = [a if not a.startswith("--models=") else "--models=SASRec=DiffCLRec" for a in fresh]
    assert benchmark.main(relabelled) == 2
    assert "holds runs of SASRec with another model" in capsys.readouterr().err
    assert not started and not (tmp_path / "fresh").exists()


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert benchmark.main(["--models=SASRec,NoSuchModel", f"--out={tmp_path}"]) == 2
    assert "Unknown model 'NoSuchModel'" in capsys.readouterr().err
    assert benchmark.main(["--models=SASRec", "--seed=3", f"--out={tmp_path}"]) == 2
    assert "--seed is set by python -m recbole_diffcl.benchmark itself" in capsys.readouterr().err
    assert benchmark.main(["--models=SASRec", "--seeds=1,x", f"--out={tmp_path}"]) == 2
    assert benchmark.main(["--models=SASRec", "--length_groups=1-5,5-9", f"--out={tmp_path}"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert benchmark.main(["--models=SASRec", "--exclude_history=maybe", f"--out={tmp_path}"]) == 2
    assert "exclude_history" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


class _Masker(EvaluationOptionsMixin):
    """The mixin's history masking, without a trainer around it."""

    def __init__(self, config):
        self.config = config


@pytest.mark.filterwarnings("ignore:A value is trying to be set on a copy:FutureWarning")  # RecBole's loader
def test_exclude_history_masks_the_whole_history_but_not_the_target():
    from recbole.data import data_preparation

    from recbole_diffcl.data import create_dataset
    from recbole_diffcl.quick_start import load_config

    # A short MAX_ITEM_LIST_LENGTH: most of the history lies outside the model's input window.
    _, config = load_config("SASRec", "ml-100k", config_dict={
        "user_inter_num_interval": "[0,25]", "MAX_ITEM_LIST_LENGTH": 5, "exclude_history": True})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    masker = _Masker(config)
    masker.prepare_evaluation(train, valid, test)

    inter = dataset.inter_feat  # all rows: the user's items are its targets plus the first input item
    items_of = {}
    for u, target, seq, n in zip(inter["user_id"].tolist(), inter["item_id"].tolist(),
                                 inter["item_id_list"].tolist(), inter["item_length"].tolist()):
        items_of.setdefault(u, set()).update([target, *seq[:n]])

    for loader, later in ((valid, 1), (test, 0)):
        masker._eval_history = next(h for l, h in masker._histories if l is loader)
        interaction, _, positive_u, positive_i = next(iter(loader))
        scores = torch.zeros(len(interaction), dataset.item_num)
        masker._mask_history(interaction, scores, positive_u, positive_i)
        for row, (u, target) in enumerate(zip(interaction["user_id"].tolist(), positive_i.tolist())):
            masked = set(torch.nonzero(torch.isinf(scores[row])).flatten().tolist())
            # valid: everything but the valid and test targets; test: everything but the test target
            assert len(masked) == len(items_of[u]) - 1 - later
            assert target not in masked and masked < items_of[u]
    assert masker._seq_len[test._dataset.inter_feat["user_id"].numpy()].min() >= 20


def test_labelled_configurations_sit_side_by_side(tmp_path, monkeypatch, capsys):
    paper = tmp_path / "paper.yaml"
    paper.write_text("cl_weight: 0.1\n")
    seen = []
    fake = _fake_execute(fail=set())

    def recording(cmd, log_file, verbose, cwd=None, append=False):
        seen.append(cmd)
        return fake(cmd, log_file, verbose, cwd)

    monkeypatch.setattr(benchmark, "execute", recording)
    out = tmp_path / "bench"
    args = [f"--models=DiffCLRec,DiffCLRec-paper=DiffCLRec:{paper}", "--seeds=1,2", f"--out={out}"]
    assert benchmark.main(args) == 0
    frame = pd.read_csv(out / "results.csv")
    assert sorted(set(frame["model"])) == ["DiffCLRec", "DiffCLRec-paper"] and set(frame["model_class"]) == {"DiffCLRec"}
    with_file = [c for c in seen if any(a.startswith("--config_files=") and str(paper) in a for a in c)]
    assert len(with_file) == 2 and all("--model=DiffCLRec" in c for c in seen)  # only the labelled runs read it
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == [
        "DiffCLRec-1.json", "DiffCLRec-2.json", "DiffCLRec-paper-1.json", "DiffCLRec-paper-2.json"]
    summary = (out / "summary.md").read_text()
    assert "`DiffCLRec-paper` = DiffCLRec with" in summary and "paper.yaml" in summary
    assert re.search(r"DiffCLRec-paper.*\|", summary.split("Paired")[-1]), "the paired tests compare the labels"
    # model selection's metrics and the views of the last epoch (not the first) sit beside the test table
    assert "## Validation metrics (the selected epoch)" in summary
    views = summary.split("## Views (last training epoch)")[1]
    assert "| DiffCLRec | 2 | 0.2000 ± 0.0000 |" in views and "| DiffCLRec-paper | 2 | 0.3000 ± 0.0000 |" in views
    assert set(frame["view_cl_acc"]) == {0.2, 0.3}
    capsys.readouterr()

    # the same label with other files in the same folder would mix two experiments: refused
    other = tmp_path / "other.yaml"
    other.write_text("cl_weight: 0.2\n")
    assert benchmark.main([f"--models=DiffCLRec-paper=DiffCLRec:{other}", "--seeds=1", f"--out={out}"]) == 2
    assert "DiffCLRec-paper" in capsys.readouterr().err
    # a new label may join the folder
    assert benchmark.main([f"--models=DiffCLRec-other=DiffCLRec:{other}", "--seeds=1", f"--out={out}"]) == 0
    # the same files from another place (a moved checkout, a campaign worktree at a newer commit) continue it
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "paper.yaml").write_text(paper.read_text())
    seen.clear()
    assert benchmark.main([f"--models=DiffCLRec-paper=DiffCLRec:{moved / 'paper.yaml'}", "--seeds=1,3", f"--out={out}"]) == 0
    assert len(seen) == 1 and "--seed=3" in seen[0]  # seed 1 was finished; only seed 3 runs
    for bad in ["--models=X=", f"--models=A=DiffCLRec:{tmp_path / 'missing.yaml'}", "--models=A=SASRec,A=DiffCLRec"]:
        assert benchmark.main([bad, "--seeds=1", f"--out={tmp_path / 'bad'}"]) == 2
    assert not (tmp_path / "bad").exists()


def test_parallel_runs_give_the_same_table_and_respect_the_limit(tmp_path, monkeypatch, capsys):
    import threading
    import time as _time

    fake = _fake_execute(fail={"DiffCLRec-2"})
    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def slow(cmd, log_file, verbose, cwd=None, append=False):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        _time.sleep(0.05)
        try:
            return fake(cmd, log_file, verbose, cwd)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(benchmark, "execute", slow)
    args = ["--models=SASRec,DiffCLRec", "--seeds=1,2,3"]
    assert benchmark.main([*args, "--parallel=3", f"--out={tmp_path / 'p'}"]) == 1  # DiffCLRec-2 failed
    assert state["most"] == 3
    out = capsys.readouterr().out
    assert "6 runs: 0 finished earlier, 6 to run, 3 at a time" in out and "DiffCLRec seed 2: FAILED" in out
    monkeypatch.setattr(benchmark, "execute", _fake_execute(fail={"DiffCLRec-2"}))
    assert benchmark.main([*args, f"--out={tmp_path / 's'}"]) == 1
    parallel = pd.read_csv(tmp_path / "p" / "results.csv").sort_values(["model", "seed"]).reset_index(drop=True)
    serial = pd.read_csv(tmp_path / "s" / "results.csv").sort_values(["model", "seed"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(parallel, serial)


# Loaded by every Python process of the killed benchmark (sitecustomize on PYTHONPATH): the runner kills
# its whole process group (the benchmark included) right after the last checkpoint of epoch 1 is written.
KILL_AT_EPOCH_1 = """
from recbole_diffcl.resume import ResumableMixin
save_last = ResumableMixin._save_last
def save_then_kill_all(self, epoch):
    import os, signal
    save_last(self, epoch)
    if epoch == 1:
        os.killpg(os.getpgid(0), signal.SIGKILL)
ResumableMixin._save_last = save_then_kill_all
"""


# Loaded by every Python process of the benchmark (sitecustomize on PYTHONPATH): after the last checkpoint of
# epoch 1 the run notes its pid and what its log already holds, sends SIGTERM to the benchmark (its parent)
# and then goes on as if it were still training.
TERM_PARENT_AT_EPOCH_1 = """
import sys
import time
from pathlib import Path
from recbole_diffcl.resume import ResumableMixin
save_last = ResumableMixin._save_last
def save_then_term_parent(self, epoch):
    import os, signal, time
    save_last(self, epoch)
    if epoch == 1:
        result = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--result_file="))
        log = Path(result).with_suffix(".log").read_text()
        Path(os.environ["MARKER"]).write_text(f"{os.getpid()} {'epoch 0 training' in log}")
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(120)
ResumableMixin._save_last = save_then_term_parent
"""


def test_sigterm_stops_the_benchmark_and_its_run(tmp_path):
    """``kill`` of the benchmark (or a session that ends) stops its run too instead of leaving it training
    unobserved, exits like Ctrl-C (130), and keeps the run's last checkpoint; the run's log follows it live."""
    args = ["--dataset=ml-100k", "--models=SASRecPlus", "--seeds=2020",
            *[a for a in TINY if not a.startswith("--epochs")], "--epochs=4", "--stopping_step=100"]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(TERM_PARENT_AT_EPOCH_1)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1", "MARKER": str(marker)}
    out = tmp_path / "bench"
    started = time.time()
    stopped = subprocess.run([sys.executable, "-m", "recbole_diffcl.benchmark", *args, f"--out={out}"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 130, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    assert "interrupted" in stopped.stderr
    pid, log_was_live = marker.read_text().split()
    assert log_was_live == "True"  # the benchmark's log had the run's epoch 0 while the run was at epoch 1
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # the run was stopped and reaped, not left sleeping or training
    assert time.time() - started < 100  # it did not wait for the run's 120 s "training"
    assert not (out / "runs" / "SASRecPlus-2020.json").exists()
    assert list((out / "checkpoints" / "SASRecPlus-2020").glob("*-last.pth"))  # a rerun resumes from here


def test_an_interrupted_command_stops_running_and_starting_runs(tmp_path):
    """With runs in parallel threads: the live run is terminated, and one that a thread starts while the
    command stops is terminated as soon as it is registered (nothing left for the pool to wait hours on)."""
    from concurrent.futures import ThreadPoolExecutor

    from recbole_diffcl import runs

    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = time.time()
    with runs.interruptible(), ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(runs.execute, cmd, tmp_path / "first.log", False)
        while not runs._live_runs and time.time() - started < 30:
            time.sleep(0.05)
        runs.stop_live_runs()
        late = pool.submit(runs.execute, cmd, tmp_path / "late.log", False)
        codes = first.result(timeout=50), late.result(timeout=50)
    assert all(code != 0 for code in codes) and time.time() - started < 50
    assert not runs._live_runs and not runs._stopping.is_set()  # cleared when the command's block ends


def test_killed_benchmark_resumes_its_run_with_the_same_result_in_a_moved_folder(tmp_path):
    epochs = ["--epochs=4", "--stopping_step=100"]  # four epochs whatever validation says
    args = ["--dataset=ml-100k", "--models=DiffCLRec", "--seeds=2020", "--length_groups=-21,22-",
            *[a for a in TINY if not a.startswith("--epochs")], *epochs]
    whole = run_module("recbole_diffcl.benchmark", [*args, f"--out={tmp_path / 'whole'}"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]

    killer = tmp_path / "killer"
    killer.mkdir()
    (killer / "sitecustomize.py").write_text(KILL_AT_EPOCH_1)
    env = {**os.environ, "PYTHONPATH": f"{killer}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "cut"
    killed = subprocess.run([sys.executable, "-m", "recbole_diffcl.benchmark", *args, f"--out={out}"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert killed.returncode == -9
    assert not (out / "runs" / "DiffCLRec-2020.json").exists()
    assert list((out / "checkpoints" / "DiffCLRec-2020").glob("*-last.pth"))

    # The folder moves (another disk, machine or session) and the same command continues it there.
    moved = tmp_path / "elsewhere" / "cut"
    moved.parent.mkdir()
    out = Path(shutil.move(str(out), str(moved)))
    again = run_module("recbole_diffcl.benchmark", [*args, f"--out={out}"], cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "DiffCLRec seed 2020: resuming from" in again.stdout
    log = (out / "runs" / "DiffCLRec-2020.log").read_text()
    assert "the benchmark resumes this run" in log and "Resume training from epoch 2" in log
    resumed_part = log.split("the benchmark resumes this run")[1]
    assert [e for e in range(4) if f"epoch {e} training" in resumed_part] == [2, 3]  # one epoch lost at most

    expected = json.loads((tmp_path / "whole" / "runs" / "DiffCLRec-2020.json").read_text())
    got = json.loads((out / "runs" / "DiffCLRec-2020.json").read_text())
    for key in ("test_result", "best_valid_result", "valid_curve", "test_positions_by_length"):
        assert got[key] == expected[key], key
    assert got["epochs_run"] == 4
    assert Path(got["last_checkpoint"]).parent == out / "checkpoints" / "DiffCLRec-2020"
    assert not (tmp_path / "cut").exists()  # nothing written where the folder was
    assert pd.read_csv(out / "results.csv").drop(columns=["seconds_per_epoch", "wall_seconds", "peak_rss_mb",
        "test_eval_seconds"]).equals(pd.read_csv(tmp_path / "whole" / "results.csv").drop(
        columns=["seconds_per_epoch", "wall_seconds", "peak_rss_mb", "test_eval_seconds"]))


def test_diverged_runs_are_results_with_a_note(tmp_path, monkeypatch, capsys):
    fake = _fake_execute(fail=set())

    def diverging(cmd, log_file, verbose, cwd=None, append=False):
        fake(cmd, log_file, verbose, cwd)
        args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--"))
        if args["model"] == "DiffCLRec" and args["seed"] == "2":
            result = json.loads(Path(args["result_file"]).read_text())
            result.update(stopped_by="diverged", divergence="Training diverged in epoch 3")
            Path(args["result_file"]).write_text(json.dumps(result))
            return 1  # the runner's exit code for a diverged run
        return 0

    monkeypatch.setattr(benchmark, "execute", diverging)
    args = ["--models=SASRec,DiffCLRec", "--seeds=1,2", f"--out={tmp_path}"]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert "DiffCLRec seed 2: DIVERGED" in out and "FAILED" not in out
    frame = pd.read_csv(tmp_path / "results.csv")
    assert len(frame) == 4 and list(frame[frame["stopped_by"] == "diverged"]["seed"]) == [2]
    assert "**diverged**" in (tmp_path / "summary.md").read_text()
    assert benchmark.main(args) == 0 and "finished earlier, skipped" in capsys.readouterr().out
