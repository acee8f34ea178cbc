"""Recommending from a checkpoint: load_data_and_model, the top-k of known and new users, the CLI."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from recbole_diffcl.errors import UserError
from recbole_diffcl.report import read_rankings
from recbole_diffcl.quick_start import load_data_and_model, run
from recbole_diffcl.recommend import Recommender, main
from tests.conftest import ROOT, tiny_config

TOPK = 20  # max(topk) of props/overall.yaml: the length of RecBole's top-k list in evaluation


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch DiffCLRec on the ml-100k slice, with its per-user test rankings recorded."""
    tmp = tmp_path_factory.mktemp("trained")
    props = {**tiny_config(tmp), "user_rankings_file": str(tmp / "rankings.csv"), "diffusion_steps": 50}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest.one_torch_thread: threads spinning on a shared machine are slow
    try:
        yield run("DiffCLRec", "ml-100k", config_dict=props), tmp
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def recommender(trained):
    return Recommender.from_checkpoint(trained[0]["checkpoint"])


def test_load_data_and_model_rebuilds_the_run(trained, recommender):
    result, _ = trained
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(result["checkpoint"])
    assert config["model"] == "DiffCLRec" and config["hidden_size"] == 16 and not model.training
    stored = torch.load(result["checkpoint"], weights_only=True)
    assert config["user_inter_num_interval"] == stored["config"]["user_inter_num_interval"]  # stored values as they were
    saved = stored["state_dict"]
    assert all(torch.equal(v.cpu(), saved[k]) for k, v in model.state_dict().items())
    assert len(test_data._dataset) == len(recommender.splits[2]._dataset) > 100


def test_topk_of_known_users_is_the_full_sort_test_ranking(trained, recommender):
    rankings = read_rankings(str(trained[1] / "rankings.csv"))
    users = list(rankings["user_id"])  # every test user, in the test loader's order (same batches)
    rows = recommender.recommend(users=users, k=TOPK)
    lists = {}
    for user, rank, item, _ in rows:
        lists.setdefault(user, []).append(item)
    assert all(len(lists[u]) == TOPK for u in users)
    # the test target sits in our list exactly where the evaluation's top-k list had it (0: absent)
    for user, target, position in zip(users, rankings["target_item"], rankings["topk_position"]):
        ours = lists[user].index(target) + 1 if target in lists[user] else 0
        assert ours == position, user
    # and the lists are RecBole's own full_sort_topk on the test loader
    from recbole.utils.case_study import full_sort_topk

    some = users[:5]
    uids = recommender.user_ids(some)
    _, ids = full_sort_topk(uids, recommender.model, recommender.splits[2], TOPK, recommender.device)
    expected = recommender.dataset.id2token("item_id", ids.cpu().numpy())
    assert [lists[u] for u in some] == [list(e) for e in expected]


def test_new_sequence_equals_the_known_user_with_that_history(recommender):
    user = recommender.dataset.id2token("user_id", int(recommender.splits[2]._dataset.inter_feat["user_id"][0]))
    rows, _ = recommender.known_users(recommender.user_ids([user]))
    seq = rows["item_id_list"][0][: int(rows["item_length"][0])]
    tokens = list(recommender.dataset.id2token("item_id", seq.numpy()))
    as_user = recommender.recommend(users=[user], k=10)
    as_sequence = recommender.recommend(sequence=tokens, k=10)
    assert [r[2] for r in as_user] == [r[2] for r in as_sequence]
    assert np.allclose([r[3] for r in as_user], [r[3] for r in as_sequence], atol=1e-5)
    assert {r[0] for r in as_sequence} == {"sequence"}


def test_exclude_history_and_context_all(recommender):
    test = recommender.splits[2]._dataset.inter_feat
    user_ids = test["user_id"][:10].numpy()
    users = list(recommender.dataset.id2token("user_id", user_ids))
    # the whole history (train + valid + test items) of each user, from the full dataset's rows
    full = recommender.dataset.inter_feat
    history = {
        u: set(recommender.dataset.id2token("item_id", full["item_id"][full["user_id"] == uid].numpy()))
        | set(recommender.dataset.id2token("item_id", full["item_id_list"][full["user_id"] == uid].flatten().numpy()))
        for u, uid in zip(users, user_ids)
    }
    rows = recommender.recommend(users=users, k=30, exclude_history=True, context="all")
    assert rows and all(item not in history[user] for user, _, item, _ in rows)
    # context=all: the test item is appended to the input
    seq_rows, _ = recommender.known_users(user_ids, context="all")
    assert torch.equal(seq_rows["item_length"], torch.clamp(test["item_length"][:10] + 1, max=50))
    last = seq_rows["item_id_list"][torch.arange(10), seq_rows["item_length"] - 1]
    assert torch.equal(last, test["item_id"][:10])


def test_cli_writes_the_csv_and_reports_user_errors(trained, recommender, tmp_path, capsys):
    checkpoint = trained[0]["checkpoint"]
    users = list(recommender.dataset.id2token("user_id", recommender.splits[2]._dataset.inter_feat["user_id"][:2].numpy()))
    out = tmp_path / "recs.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_diffcl.recommend", "--checkpoint", checkpoint, "--users", ",".join(users),
         "--topk", "5", "--exclude_history", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["user", "rank", "item", "score"]
    assert [(r["user"], r["rank"]) for r in table] == [(u, str(k)) for u in users for k in range(1, 6)]
    assert table == sorted(table, key=lambda r: (users.index(r["user"]), -float(r["score"])))

    item = recommender.dataset.id2token("item_id", 1)
    for args, message in [
        (["--sequence", f"{item} no-such-item"], "Unknown item(s) 'no-such-item'"),
        (["--users", "no-such-user"], "Unknown user(s) 'no-such-user'"),
        (["--users", users[0], "--topk", "0"], "--topk=0"),
        (["--users_file", str(tmp_path / "missing.txt")], "missing.txt"),
    ]:
        assert main(["--checkpoint", checkpoint, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.startswith("error: ")
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n")
    assert main(["--checkpoint", checkpoint, "--users_file", str(tmp_path / "users.txt"), "--topk", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 2 * 3


def test_load_errors_not_a_checkpoint_missing_and_different_dataset(trained, tmp_path):
    checkpoint = trained[0]["checkpoint"]
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    with pytest.raises(UserError, match="is not a torch checkpoint"):
        load_data_and_model(str(junk))
    pickled = tmp_path / "recbole.pth"
    torch.save({"config": np.random.RandomState(0), "state_dict": {}}, pickled)  # objects, as RecBole pickles its Config
    with pytest.raises(UserError, match="safe loader refuses"):
        load_data_and_model(str(pickled))
    torch.save({"state_dict": {}}, tmp_path / "bare.pth")
    with pytest.raises(UserError, match="not a recbole_diffcl checkpoint"):
        load_data_and_model(str(tmp_path / "bare.pth"))
    with pytest.raises(UserError, match="does not exist"):
        load_data_and_model(str(tmp_path / "nope.pth"))
    # other filtering gives other users and items: a different dataset than the model was trained on
    with pytest.raises(UserError, match="checkpoint of a different dataset"):
        load_data_and_model(checkpoint, {"user_inter_num_interval": "[0,40]"})

    # the same checkpoint as if trained on a dataset 'mycopy' kept in a folder of its own
    state = torch.load(checkpoint, weights_only=True)
    data_dir = tmp_path / "data"
    state["config"].update(dataset="mycopy", data_path=str(data_dir / "mycopy"))
    state["dataset_fingerprint"]["dataset"] = "mycopy"
    moved = tmp_path / "mycopy.pth"
    torch.save(state, moved)
    with pytest.raises(UserError, match=r"atomic files are missing.*data_path"):
        load_data_and_model(str(moved))
    import recbole

    source = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")
    (data_dir / "mycopy").mkdir(parents=True)
    for ext in ("inter", "item", "user"):
        shutil.copy(os.path.join(source, f"ml-100k.{ext}"), data_dir / "mycopy" / f"mycopy.{ext}")
    config, model, *_ = load_data_and_model(str(moved))
    assert config["data_path"] == str(data_dir / "mycopy")
    lines = (data_dir / "mycopy" / "mycopy.inter").read_text().splitlines(keepends=True)
    (data_dir / "mycopy" / "mycopy.inter").write_text("".join(lines[:-5000]))
    with pytest.raises(UserError, match="checkpoint of a different dataset"):
        load_data_and_model(str(moved))


def test_recbole_model_checkpoint_loads_and_recommends(tmp_path, one_torch_thread):
    result = run("SASRec", "ml-100k", config_dict=tiny_config(tmp_path))
    recommender = Recommender.from_checkpoint(result["checkpoint"])
    assert type(recommender.model).__name__ == "SASRec"
    user = recommender.dataset.id2token("user_id", int(recommender.splits[2]._dataset.inter_feat["user_id"][0]))
    rows = recommender.recommend(users=[user], k=5)
    assert [r[1] for r in rows] == [1, 2, 3, 4, 5]
