"""RecBole's own sequential models run through the plugin's runner, with the same protocol as ours."""
from __future__ import annotations

import pytest
import torch

from recbole_diffcl.quick_start import load_config, run
from tests.conftest import tiny_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec", "GRU4Rec", "FEARec"])
def test_recbole_model_trains_and_tests_through_the_runner(tmp_path, model):
    result = run(model, "ml-100k", config_dict=tiny_config(tmp_path))
    assert result["model"] == model and result["epochs_run"] == 1
    assert result["properties"]["valid_metric"] == "NDCG@10"  # the plugin's protocol (props/overall.yaml)
    for part in ("best_valid_result", "test_result"):
        assert {"hit@10", "ndcg@10", "mrr@10"} <= set(result[part])
        assert all(0 <= v <= 1 for v in result[part].values())
    # the best checkpoint is plain state, reloaded for test with torch's safe loader
    assert torch.load(result["checkpoint"], weights_only=True)["config"]["model"] == model


def test_fearec_gets_the_properties_its_contrastive_loss_reads():
    # RecBole's FEARec.yaml lacks them: FEARec would read None and skip its contrastive terms
    _, config = load_config("FEARec", "ml-100k")
    assert (config["contrast"], config["tau"], config["sim"]) == ("us_x", 1.0, "dot")
    assert (config["lmd"], config["lmd_sem"]) == (0.1, 0.1)  # RecBole's FEARec.yaml, still read


def test_fearec_contrastive_term_runs(tmp_path, monkeypatch):
    from recbole.data import data_preparation
    from recbole.model.sequential_recommender.fearec import FEARec

    from recbole_diffcl.data import create_dataset

    model_class, config = load_config("FEARec", "ml-100k", config_dict=tiny_config(tmp_path))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = model_class(config, train_data._dataset)
    calls = []
    original = FEARec.info_nce
    monkeypatch.setattr(FEARec, "info_nce", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    model.calculate_loss(next(iter(train_data))).backward()
    assert calls, "FEARec trained without its contrastive loss"


def test_looking_up_a_recbole_model_leaves_autograd_anomaly_mode_off():
    # RecBole's sine.py turns anomaly mode on for the whole process when its sequential models are imported
    # (a debugging mode: ~1.4x slower steps); the lookup undoes it. A fresh process, so the import really runs.
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from recbole_diffcl.model import get_model\n"
        "get_model('SASRec')\n"
        "print(torch.is_anomaly_enabled())\n"
        "import importlib, recbole.model.sequential_recommender.sine as sine\n"
        "importlib.reload(sine)\n"  # what the lookup undid, so that this test can fail
        "print(torch.is_anomaly_enabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
