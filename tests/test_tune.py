"""``python -m recbole_diffcl.tune``: search spaces, trials through the runner, trials.csv and best.yaml."""
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recbole_diffcl import tune
from recbole_diffcl.errors import UserError
from recbole_diffcl.quick_start import load_config
from tests.test_benchmark import TINY, run_module


def check_outputs(out: Path, model: str, fixed_files: list, n_trials: int, params: list) -> pd.DataFrame:
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == n_trials and (trials["status"] == "ok").all()
    expected = {"trial", "status", "score", "valid_ndcg@10", "test_ndcg@10", "epochs", "seconds_per_epoch", *params}
    assert expected <= set(trials.columns)
    assert (trials["score"] == trials["valid_ndcg@10"]).all()  # the score is the valid_metric
    best = trials.loc[trials["score"].idxmax()]
    # best.yaml is a property file: it loads back into the runner's Config with the best trial's values
    best_file = out / "best.yaml"
    values = yaml.safe_load(best_file.read_text())
    assert set(values) == set(params)
    _, config = load_config(model, "ml-100k", [*fixed_files, str(best_file)])
    for name in params:
        assert config[name] == pytest.approx(best[name])
    assert f"# Best of {n_trials} trials ({best['trial']})" in best_file.read_text()
    # each trial ran the runner on its own property file
    for name in trials["trial"]:
        result = json.loads((out / "trials" / f"{name}.json").read_text())
        assert result["model"] == model and result["epochs_run"] == 1
    return trials


def test_tpe_search_sasrec(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {loguniform: [0.0005, 0.005]}\nn_layers: [1, 2]\n")
    out = tmp_path / "tune"
    args = ["--model=SASRec", "--dataset=ml-100k", f"--params_file={space}", "--algo=tpe", "--max_evals=2",
            *TINY, f"--out={out}"]
    proc = run_module("recbole_diffcl.tune", args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[2/2] learning_rate=" in proc.stdout
    trials = check_outputs(out, "SASRec", [], 2, ["learning_rate", "n_layers"])
    assert trials["learning_rate"].between(0.0005, 0.005).all() and set(trials["n_layers"]) <= {1, 2}


def test_grid_search_diffclrec_with_config_file(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("cl_weight: 0.2\n")
    space = tmp_path / "space.yaml"
    space.write_text("mask_ratio: {choice: [0.1, 0.3]}\n")
    out = tmp_path / "tune"
    args = ["--model=DiffCLRec", f"--params_file={space}", "--algo=grid", f"--config_files={base}", *TINY,
            f"--out={out}"]
    proc = run_module("recbole_diffcl.tune", args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = check_outputs(out, "DiffCLRec", [str(base)], 2, ["mask_ratio"])
    assert sorted(trials["mask_ratio"]) == [0.1, 0.3]  # the whole grid
    result = json.loads((out / "trials" / f"{trials['trial'][0]}.json").read_text())
    assert result["properties"]["cl_weight"] == 0.2  # the user's file reached every trial


def test_failed_trial_is_recorded_and_search_goes_on(tmp_path, monkeypatch, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {uniform: [0.001, 0.002]}\n")
    calls = []

    def fake_execute(cmd, log_file, verbose, cwd=None):
        calls.append(cmd)
        Path(log_file).write_text("fake\n")
        if len(calls) == 2:
            return 1
        result_file = next(a.split("=", 1)[1] for a in cmd if a.startswith("--result_file="))
        score = 0.01 * len(calls)
        Path(result_file).write_text(json.dumps({
            "best_valid_score": score, "best_valid_result": {"ndcg@10": score}, "test_result": {"ndcg@10": score / 2},
            "epochs_run": 1, "seconds_per_epoch": [1.0]}))
        return 0

    monkeypatch.setattr(tune, "execute", fake_execute)
    assert tune.main(["--model=SASRec", f"--params_file={space}", "--algo=random", "--max_evals=3",
                      "--early_stop=5", f"--out={tmp_path / 'out'}"]) == 0
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert list(trials["status"]) == ["ok", "failed (exit code 1)", "ok"]
    assert yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())["learning_rate"] == trials["learning_rate"][2]
    assert "--config_files=" in " ".join(calls[0]) and calls[0][-1].startswith("--result_file=")


def test_all_trials_failing_exits_1(tmp_path, monkeypatch, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {uniform: [0.001, 0.002]}\n")
    monkeypatch.setattr(tune, "execute", lambda cmd, log_file, verbose, cwd=None: Path(log_file).write_text("") and 1)
    assert tune.main(["--model=SASRec", f"--params_file={space}", "--algo=tpe", "--max_evals=2",
                      f"--out={tmp_path / 'out'}"]) == 1
    assert "no trial finished" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "out" / "trials.csv")) == 2 and not (tmp_path / "out" / "best.yaml").exists()


@pytest.mark.parametrize(
    "space, options, message",
    [
        ("lr: {normal: [0, 1]}", {}, "is not understood"),
        ("learning_rate: {loguniform: [0, 0.01]}", {}, "0 < low < high"),
        ("learning_rate: {uniform: [0.01, 0.001]}", {}, "low < high"),
        ("learning_rate: {uniform: [0.001, 0.01]}", {"algo": "grid"}, "searches choices only"),
        ("learning_rate: [0.001]", {"learning_rate": "0.1"}, "both searched"),
        ("learning_rate: [0.001, -1]", {}, "learning_rate"),  # a value the runner's checks reject
        ("learning_rate: [0.001]", {"max_evals": None}, "needs --max_evals"),
        ("[1, 2]", {}, "must map property names"),
        ("learning_rate: [0.001]", {"seed": "1", "result_file": "x.json"}, "recbole_diffcl.tune itself"),
    ],
)
def test_user_errors(tmp_path, capsys, space, options, message):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(space + "\n")
    options = {"model": "SASRec", "params_file": space_file, "out": tmp_path / "out", "algo": "random",
               "max_evals": "2", **options}
    assert tune.main([f"--{k}={v}" for k, v in options.items() if v is not None]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_space_to_hyperopt_and_plain_values():
    params = {p.name: p for p in tune.load_space_from_dict({
        "a": {"quniform": [10, 50, 10]}, "b": [[64, 64], "x"], "c": {"loguniform": [1e-4, 1e-2]}})}
    assert params["a"].integer and params["a"].plain(30.0) == 30 and isinstance(params["a"].plain(30.0), int)
    assert params["b"].plain((64, 64)) == [64, 64]  # hyperopt hands lists back as tuples
    assert params["c"].plain(0.00123456789) == 0.00123457
    with pytest.raises(UserError):
        tune.load_space_from_dict({"a": {"choice": []}})


def test_ray_tune(tmp_path):
    """Ray Tune runs trials in parallel when its extras are installed (pyarrow < 20 with numpy < 2)."""
    pytest.importorskip("pyarrow")
    pytest.importorskip("ray.tune")
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: [0.001, 0.002]\n")
    out = tmp_path / "tune"
    args = ["--model=SASRec", f"--params_file={space}", "--algo=grid", "--engine=ray", *TINY, f"--out={out}"]
    proc = run_module("recbole_diffcl.tune", args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_outputs(out, "SASRec", [], 2, ["learning_rate"])
