"""Shared fixtures: a DiffCLRec-family model built without a RecBole dataset, and tiny-run settings."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` from anywhere imports the checkout
    sys.path.insert(0, str(ROOT))

# RecBole fields a SequentialRecommender reads from its config.
RECBOLE_FIELDS = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "LIST_SUFFIX": "_list",
    "ITEM_LIST_LENGTH_FIELD": "item_length",
    "NEG_PREFIX": "neg_",
    "device": torch.device("cpu"),
}


class FakeDataset:
    """The one thing a SequentialRecommender asks its dataset: the number of item ids (with padding)."""

    def __init__(self, n_items: int):
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items


def model_config(model: str, **overrides) -> dict:
    """The plugin's property files for ``model`` (overall < model) as a plain dict, plus overrides."""
    config = dict(RECBOLE_FIELDS)
    for path in (ROOT / "props" / "overall.yaml", ROOT / "props" / "model" / f"{model}.yaml"):
        config.update(yaml.safe_load(path.read_text()))
    config["layer_norm_eps"] = float(config["layer_norm_eps"])
    config.update(overrides)
    return config


def make_model(model_class, n_items: int = 60, **overrides):
    return model_class(model_config(model_class.__name__, **overrides), FakeDataset(n_items))


def make_batch(batch: int = 8, max_len: int = 50, n_items: int = 60, seed: int = 0, shortest: int = 2, longest: int = 12):
    """A RecBole-like training batch: left-aligned sequences padded with 0 to ``max_len``."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(shortest, longest + 1, (batch,), generator=g)
    seq = torch.randint(1, n_items, (batch, max_len), generator=g)
    seq[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0
    return {
        "item_id_list": seq,
        "item_length": lengths,
        "item_id": torch.randint(1, n_items, (batch,), generator=g),
    }


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so RecBole's log/, log_tensorboard/ and saved/
    (relative to the working folder) never land in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: on a shared 2-core machine, threads spinning against other
    processes made training steps ~40x slower; one thread keeps these tests fast and stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(tmp_path, **overrides) -> dict:
    """Properties for a fast one-epoch run on a slice of ml-100k (bundled with RecBole)."""
    props = {
        "user_inter_num_interval": "[0,30]",
        "epochs": 1,
        "train_batch_size": 128,
        "eval_batch_size": 256,
        "show_progress": False,
        "hidden_size": 16,
        "inner_size": 32,
        "checkpoint_dir": str(tmp_path / "saved"),
        "log_wandb": False,
        "state": "WARNING",
    }
    props.update(overrides)
    return props


@pytest.fixture
def tiny_run_dict(tmp_path) -> dict:
    """A two-epoch DiffCLRec-sized run that logs at INFO (the end-to-end test reads the log)."""
    return tiny_config(
        tmp_path,
        user_inter_num_interval="[0,25]",
        epochs=2,
        train_batch_size=256,
        eval_batch_size=512,
        diffusion_steps=50,
        denoiser_inner_size=32,
        state="INFO",
    )
