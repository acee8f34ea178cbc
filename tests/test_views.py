"""Issue 16: ``python -m recbole_diffcl.views`` on a trained checkpoint, and its user errors (exit 2)."""
from __future__ import annotations

import csv

import pytest
import torch

from recbole_diffcl import views
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    from recbole_diffcl.quick_start import run

    tmp = tmp_path_factory.mktemp("views")
    props = tiny_config(tmp, epochs=1, diffusion_steps=50, denoiser_inner_size=32, mask_ratio=0.3)
    return run("DiffCLRec", "ml-100k", config_dict=props)["checkpoint"]


def test_views_of_named_users_printed_and_written_as_csv(checkpoint, tmp_path, capsys):
    out = tmp_path / "views.csv"
    assert views.main(["--checkpoint", checkpoint, "--users", "166,50", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    # our default cl_pair (view_and_original): one view per user, its pair is the original sequence
    assert "user 166:" in printed and "user 50:" in printed and "view 1:" in printed and "view 2:" not in printed
    assert "paired with the original" in printed
    for name in ("recon_top1", "recon_topk", "repl_is_original", "views_differ", "pop_pct_original", "cl_acc"):
        assert name in printed
    rows = list(csv.DictReader(out.open()))
    assert {r["user_id"] for r in rows} == {"166", "50"}
    chosen = [r for r in rows if r["chosen"] == "1"]
    assert chosen, "mask_ratio 0.3 over two sequences chooses some position"
    for r in chosen:
        candidates = r["candidates"].split()
        assert len(candidates) == 10 and len(r["candidate_scores"].split()) == 10
        assert r["view1"] in candidates and r["view2"] == r["item"]  # drawn from the top-k; paired with the original
        scores = [float(s) for s in r["candidate_scores"].split()]
        assert scores == sorted(scores, reverse=True)
    for r in rows:
        if r["chosen"] == "0":
            assert r["view1"] == r["view2"] == r["item"]  # unchosen positions keep the original


def test_first_n_users_by_default(checkpoint, tmp_path, capsys):
    out = tmp_path / "v.csv"
    assert views.main(["--checkpoint", checkpoint, "--n", "3", "--csv", str(out), "--no_dataset_statistics"]) == 0
    assert capsys.readouterr().out.count("\nuser ") + 1 >= 3
    assert len({r["user_id"] for r in csv.DictReader(out.open())}) == 3


def _junk(path):
    path.write_text("not a checkpoint")


def _other_model(path):
    torch.save({"config": {"model": "SASRecPlus", "dataset": "ml-100k"}, "state_dict": {}}, path)


@pytest.mark.parametrize(
    "make, expected",
    [(None, "does not exist"), (_junk, "not a torch checkpoint"), (_other_model, "needs DiffCLRec")],
)
def test_bad_checkpoints_exit_2_with_one_paragraph(tmp_path, capsys, make, expected):
    path = tmp_path / "model.pth"
    if make:
        make(path)
    assert views.main(["--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Fix:" in err and "Traceback" not in err


def test_unknown_user_exits_2(checkpoint, capsys):
    assert views.main(["--checkpoint", checkpoint, "--users", "166,nobody"]) == 2
    err = capsys.readouterr().err
    assert "nobody" in err and "Fix:" in err


def test_timestep_spectrum(checkpoint, tmp_path, capsys):
    out = tmp_path / "v.csv"
    assert views.main(["--checkpoint", checkpoint, "--n", "1", "--csv", str(out), "--no_dataset_statistics",
                       "--timesteps", "0,10,49"]) == 0
    printed = capsys.readouterr().out
    assert "the denoiser at fixed timesteps" in printed
    config, model, dataset, train_data = views.load_diffclrec(checkpoint)
    rows = views.timestep_spectrum(model, views.training_rows(train_data, config), [0, 10, 49])
    assert [r["t"] for r in rows] == [0, 10, 49]
    assert rows[0]["noise_std"] < rows[1]["noise_std"] < rows[2]["noise_std"]
    for r in rows:
        assert r["positions"] > 0 and 0 <= r["recon_top1"] <= r["recon_topk"] <= 1 and 0 <= r["cand_pop_pct"] <= 1
    for bad in ("0,x", "-1", "50"):  # 50: beyond the model's 50 steps
        assert views.main(["--checkpoint", checkpoint, "--timesteps", bad, "--no_dataset_statistics"]) == 2
        assert "--timesteps" in capsys.readouterr().err
