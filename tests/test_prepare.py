"""Data preparation: benchmark files -> RecBole atomic files -> RecBole datasets and splits.

The acceptance tests read the benchmark files from ../shared/data (or $RECBOLE_DIFFCL_SHARED_DATA)
and skip when they are absent, as on a user's machine; nothing from them is copied into the repo.
The k-core, malformed-input and pre-flight-check tests use small files written here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # plain `pytest` from any folder, before the package is installed
    sys.path.insert(0, str(REPO_ROOT))

from recbole_diffcl.data import checks, readers, registry  # noqa: E402
from recbole_diffcl.data import prepare as prep  # noqa: E402
from recbole_diffcl.data.checks import check_dataset_files  # noqa: E402
from recbole_diffcl.errors import UserError  # noqa: E402

SHARED = Path(os.environ.get("RECBOLE_DIFFCL_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
SPORTS_TXT = SHARED / "amazon-sports" / "Sports_and_Outdoors.txt"
BEAUTY_TXT = SHARED / "amazon-beauty" / "Beauty.txt"


def _need(path: Path) -> None:
    if not path.is_file():
        if os.environ.get("RECBOLE_DIFFCL_REQUIRE_SHARED_DATA"):  # set by .ci/run: CI must not skip these
            pytest.fail(f"benchmark file {path} is required (RECBOLE_DIFFCL_REQUIRE_SHARED_DATA is set)")
        pytest.skip(
            f"benchmark file {path} not present (shared data lives in ../shared/data on development "
            f"machines; set RECBOLE_DIFFCL_SHARED_DATA to another folder)"
        )


def _source_lines(path: Path) -> dict[str, list[str]]:
    """Independent reader of the benchmark format, so the tests do not trust readers.read_sequences."""
    out: dict[str, list[str]] = {}
    with open(path) as f:
        for line in f:
            uid, *items = line.split()
            out[uid] = items
    return out


def _recbole_config(dataset: str, data_path: Path, **extra):
    from recbole.config import Config

    config_dict = {
        "data_path": str(data_path),
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "show_progress": False,
    }
    config_dict.update(extra)
    props = REPO_ROOT / "props" / "dataset" / f"{dataset}.yaml"
    files = [str(props)] if props.is_file() else None
    if files is None:
        config_dict["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
    argv = sys.argv
    sys.argv = argv[:1]  # RecBole's Config parses --key=value from the command line (pytest's here)
    try:
        return Config(model="SASRec", dataset=dataset, config_file_list=files, config_dict=config_dict)
    finally:
        sys.argv = argv


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def sports(tmp_path_factory):
    """amazon-sports prepared from the benchmark file, loaded and split by RecBole (once per module)."""
    _need(SPORTS_TXT)
    from recbole.data import create_dataset

    root = tmp_path_factory.mktemp("data")
    target, stats = prep.prepare("amazon-sports", SPORTS_TXT, root, say=_quiet)
    config = _recbole_config("amazon-sports", root)
    dataset = create_dataset(config)
    # build() turns inter_feat into augmented training rows in place: count before it.
    counts = (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num)  # minus [PAD]
    train, valid, test = dataset.build()
    return {
        "root": root, "target": target, "stats": stats, "config": config, "counts": counts,
        "dataset": dataset, "train": train, "valid": valid, "test": test,
        "source": _source_lines(SPORTS_TXT),
    }


# --------------------------------------------------------------------------------------------------
# Acceptance on the shared benchmark files


def test_sports_counts_through_recbole(sports):
    assert sports["counts"] == (35598, 18357, 296337)
    s = sports["stats"]
    assert (s.users, s.items, s.interactions) == (35598, 18357, 296337)
    assert round(s.avg_length, 2) == 8.32
    # Nothing but the .inter file was left behind (the temporary file was renamed into place).
    assert sorted(p.name for p in sports["target"].parent.iterdir()) == ["amazon-sports.inter"]


def test_sports_leave_one_out_matches_source_lines(sports):
    source, d = sports["source"], sports["dataset"]
    uid_f, iid_f = d.uid_field, d.iid_field
    list_f, len_f = d.item_id_list_field, d.item_list_length_field
    max_len = sports["config"]["MAX_ITEM_LIST_LENGTH"]
    for split, back in (("test", 1), ("valid", 2)):
        feat = sports[split].inter_feat
        users = d.id2token(uid_f, feat[uid_f].numpy())
        targets = d.id2token(iid_f, feat[iid_f].numpy())
        hist = feat[list_f].numpy()
        lens = feat[len_f].numpy()
        assert len(users) == len(source) == len(set(users))  # one row per user
        for row, (u, t) in enumerate(zip(users, targets)):
            seq = source[u]
            assert t == seq[-back], (split, u)
            expected_hist = seq[:-back][-max_len:]
            got_hist = list(d.id2token(iid_f, hist[row, : lens[row]]))
            assert got_hist == expected_hist, (split, u)
    # Everything else is training: one row per item after each user's first, up to the third-last.
    assert len(sports["train"]) == 296337 - 3 * 35598


def test_sports_atomic_round_trips_to_source(sports):
    assert readers.inter_to_sequences(sports["target"]) == sports["source"]


def test_sports_check_dataset_files_accepts_prepared_file(sports):
    check_dataset_files(sports["config"])  # a real RecBole Config, valid header: no error


def test_beauty_counts_without_source(tmp_path, monkeypatch):
    """No --source: the benchmark file is found through the search path (env override here)."""
    _need(BEAUTY_TXT)
    from recbole.data import create_dataset

    monkeypatch.setenv("RECBOLE_DIFFCL_SHARED_DATA", str(SHARED))
    monkeypatch.setattr(registry, "can_reach", lambda *a, **k: pytest.fail("must not try the network"))
    lines: list[str] = []
    target, stats = prep.prepare("amazon-beauty", None, tmp_path, say=lines.append)
    assert any(str(BEAUTY_TXT.name) in ln for ln in lines)
    assert (stats.users, stats.items, stats.interactions) == (22363, 12101, 198502)
    d = create_dataset(_recbole_config("amazon-beauty", tmp_path))
    assert (d.user_num - 1, d.item_num - 1, d.inter_num) == (22363, 12101, 198502)
    assert readers.inter_to_sequences(target) == _source_lines(BEAUTY_TXT)


def test_cli_prints_stats(tmp_path, capsys):
    _need(BEAUTY_TXT)
    rc = prep.main(["amazon-beauty", "--source", str(BEAUTY_TXT), "--data_path", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    for text in ("users: 22,363", "items: 12,101", "interactions: 198,502", "average length: 8.88",
                 "sparsity: 99.92"):
        assert text in out


# --------------------------------------------------------------------------------------------------
# k-core path on a small ratings file written here


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(ln + "\n" for ln in lines))
    return path


def _cascade_csv(path: Path, header: bool) -> Path:
    """Ratings whose iterative 5-core takes three passes; U1 has two items with equal timestamps.

    Core: users U1..U5 x items I1..I5, each with exactly 5 interactions. Item R has 4 users
    (U1, U2, U3, A) -> removed in pass 1. User A has I1..I3 + R + M = 5 -> 4 after pass 1 -> removed
    in pass 2. Item M has 5 users (U1, U2, U3, U4, A) -> 4 after pass 2 -> removed in pass 3. The final
    5-core is exactly the 25 core interactions.
    """
    rows: list[tuple[str, str, float]] = []
    t = 1_400_000_000
    for u in range(1, 6):
        for i in range(1, 6):
            rows.append((f"U{u}", f"I{i}", t))
            t += 86400
    # U1: I3 and I2 get the same timestamp, I3 first in the file -> I3 must stay before I2.
    rows = [r for r in rows if not (r[0] == "U1" and r[1] in ("I2", "I3"))]
    rows.insert(0, ("U1", "I3", 1_300_000_000))
    rows.insert(1, ("U1", "I2", 1_300_000_000))
    for u in ("U1", "U2", "U3", "A"):
        rows.append((u, "R", 1_500_000_000))
    for i in ("I1", "I2", "I3"):
        rows.append(("A", i, 1_450_000_000))
    for u in ("U1", "U2", "U3", "U4", "A"):
        rows.append((u, "M", 1_600_000_000))
    lines = (["user,item,rating,timestamp"] if header else []) + [
        f"{u},{i},5.0,{t}" for u, i, t in rows
    ]
    return _write(path, lines)


def test_kcore_iterates_until_stable():
    import numpy as np

    # Item 9 has 1 user; user 0 loses it and falls below 2, which then drops item 1 below 2.
    users = np.array([0, 0, 1, 1, 2, 2, 1, 2])
    items = np.array([9, 1, 1, 2, 2, 3, 3, 2])
    keep, rounds = readers.kcore(users, items, k=2)
    assert rounds >= 2
    kept = sorted(zip(users[keep].tolist(), items[keep].tolist()))
    assert kept == [(1, 2), (1, 3), (2, 2), (2, 2), (2, 3)]


@pytest.mark.parametrize("header", [True, False])
def test_ratings_csv_5core(tmp_path, header):
    src = _cascade_csv(tmp_path / "ratings.csv", header)
    lines: list[str] = []
    target, stats = prep.prepare("toy", src, tmp_path / "data", say=lines.append)
    assert (stats.users, stats.items, stats.interactions) == (5, 5, 25)
    assert any("3 pass(es)" in ln for ln in lines), lines
    seqs = readers.inter_to_sequences(target)
    assert set(seqs) == {f"U{u}" for u in range(1, 6)}
    assert seqs["U1"] == ["I3", "I2", "I1", "I4", "I5"]  # equal timestamps keep file order
    assert seqs["U2"] == ["I1", "I2", "I3", "I4", "I5"]
    # The written file itself is in that order too (what RecBole's stable sort starts from).
    body = target.read_text().splitlines()
    assert body[0] == prep.HEADER
    assert [ln.split("\t")[1] for ln in body[1:6]] == ["I3", "I2", "I1", "I4", "I5"]
    assert body[1].split("\t")[2] == "1300000000"


def test_ratings_equal_timestamps_survive_recbole(tmp_path):
    from recbole.data import create_dataset

    src = _cascade_csv(tmp_path / "ratings.csv", header=True)
    root = tmp_path / "data"
    prep.prepare("toy", src, root, say=_quiet)
    d = create_dataset(_recbole_config("toy", root))
    train, valid, test = d.build()
    # U1's order I3, I2, I1, I4, I5 (I3/I2 tied): RecBole's first training target for U1 is I2.
    uid = d.token2id(d.uid_field, "U1")
    feat = train.inter_feat
    rows = (feat[d.uid_field] == uid).nonzero().flatten()
    first = rows[feat[d.item_list_length_field][rows].argmin()]
    assert d.id2token(d.iid_field, feat[d.iid_field][first].item()) == "I2"


def test_recbole_atomic_download_format(tmp_path):
    """RecBole's downloaded Amazon .inter (user_id, item_id, rating, timestamp; tab, typed header)."""
    src = tmp_path / "Amazon_Toys.inter"
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(6):
        for i in range(5):
            rows.append(f"A{u}\tB{i}\t4.0\t{1_000_000 + 10 * (u + i)}")
    rows.append("A0\tRARE\t1.0\t5")
    _write(src, rows)
    target, stats = prep.prepare("toy", src, tmp_path / "data", say=_quiet)
    assert (stats.users, stats.items, stats.interactions) == (6, 5, 30)
    assert readers.inter_to_sequences(target)["A0"] == ["B0", "B1", "B2", "B3", "B4"]


# --------------------------------------------------------------------------------------------------
# Malformed input: exit code 2, message names the file and the line, nothing written


@pytest.mark.parametrize(
    "content, line, words",
    [
        ("1 1 2 3\n2 4 x 6\n", 2, "not an integer"),
        ("1 1 2 3\n2\n", 2, "only one field"),
        ("", None, "empty"),
        ("1 1 2 3\n2 4 5\n1 7 8\n", 3, "already has a line (line 1)"),
        ("1 1 2 3\n\n2 4 5\n", 2, "empty line"),
        ("1 1 2 3\n2 -4 5\n", 2, "not an integer"),
    ],
    ids=["non-integer", "too-few-fields", "empty-file", "duplicate-user", "blank-line", "negative"],
)
def test_malformed_sequence_file(tmp_path, capsys, content, line, words):
    src = tmp_path / "seqs.txt"
    src.write_text(content)
    data = tmp_path / "data"
    rc = prep.main(["bad", "--source", str(src), "--data_path", str(data), "--format", "sequences"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(src) in err and words in err
    if line is not None:
        assert f"line {line}" in err
    assert "Traceback" not in err
    assert not [p for p in data.rglob("*") if p.is_file()]  # no temporary files left either


@pytest.mark.parametrize(
    "lines, line, words",
    [
        (["u1,i1,5,100", "u1,i2,5,abc"], 2, "not a number"),
        (["u1,i1,5,100", "u1,i2,5"], 2, "3 field(s), expected 4"),
        (["user,item,rating,timestamp"], None, "no ratings rows"),
        (["u1,i1,100"], 1, "expected the 4 columns"),
    ],
    ids=["bad-timestamp", "too-few-fields", "header-only", "three-columns"],
)
def test_malformed_ratings_file(tmp_path, capsys, lines, line, words):
    src = _write(tmp_path / "ratings.csv", lines)
    rc = prep.main(["bad", "--source", str(src), "--data_path", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert rc == 2 and str(src) in err and words in err, err
    if line is not None:
        assert f"line {line}" in err


def test_module_entry_point_exit_code_without_traceback(tmp_path):
    src = tmp_path / "seqs.txt"
    src.write_text("1 1 2 3\n1 4 5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_diffcl.prepare", "bad", "--source", str(src),
         "--data_path", str(tmp_path / "data")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "line 2" in proc.stderr and "Traceback" not in proc.stderr


def test_prepare_offline_without_source_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "find_benchmark_source", lambda *a, **k: None)
    monkeypatch.setattr(prep, "can_reach", lambda *a, **k: False)
    with pytest.raises(UserError) as e:
        prep.prepare("amazon-toys", None, tmp_path / "data", say=_quiet)
    msg = str(e.value)
    assert "Toys_and_Games.txt" in msg and "--source" in msg and "unreachable" in msg
    assert not (tmp_path / "data").exists()  # nothing created before failing


def test_can_reach_is_bounded(monkeypatch):
    """A stalled name lookup or connection must not hold the runner for more than ~timeout."""
    import urllib.request

    def stall(*args, **kwargs):
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(urllib.request, "urlopen", stall)
    t0 = time.monotonic()
    assert registry.can_reach("https://example.invalid/x.zip", timeout=0.3) is False
    assert time.monotonic() - t0 < 2


def test_can_reach_unresolvable_host_is_false():
    # '.invalid' never resolves (RFC 2606): False at once, online or not.
    assert registry.can_reach("https://example.invalid/x.zip", timeout=2) is False


# --------------------------------------------------------------------------------------------------
# check_dataset_files: what the runner says before RecBole starts


def _cfg(name: str, root: Path, **extra) -> dict:
    return {"dataset": name, "data_path": str(root / name), **extra}


def test_check_missing_benchmark_gives_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "can_reach", lambda *a, **k: pytest.fail("must not try the network"))
    monkeypatch.setattr(checks, "find_benchmark_source", lambda *a, **k: None)
    with pytest.raises(UserError) as e:
        check_dataset_files(_cfg("amazon-toys", tmp_path))
    msg = str(e.value)
    cmd = "python -m recbole_diffcl.prepare amazon-toys --source PATH/TO/Toys_and_Games.txt"
    assert f"{cmd} --data_path {tmp_path}" in msg
    assert str(tmp_path / "amazon-toys" / "amazon-toys.inter") in msg


def test_check_missing_benchmark_names_found_source(tmp_path):
    _need(SPORTS_TXT)
    with pytest.raises(UserError) as e:
        check_dataset_files(_cfg("amazon-sports", tmp_path))
    msg = str(e.value)
    assert "python -m recbole_diffcl.prepare amazon-sports --source" in msg
    assert "Sports_and_Outdoors.txt" in msg and f"--data_path {tmp_path}" in msg


def test_check_benchmark_name_shadowing_recbole_download(tmp_path, monkeypatch):
    """'amazon-beauty' is also a RecBole download (different data): never let RecBole fetch it."""
    monkeypatch.setattr(checks, "can_reach", lambda *a, **k: True)
    with pytest.raises(UserError, match="recbole_diffcl.prepare amazon-beauty"):
        check_dataset_files(_cfg("amazon-beauty", tmp_path))


def test_check_recbole_dataset_offline_and_online(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "can_reach", lambda *a, **k: False)
    with pytest.raises(UserError) as e:
        check_dataset_files(_cfg("ml-1m", tmp_path))
    assert "cannot be reached" in str(e.value) and "ml-1m.inter" in str(e.value)
    monkeypatch.setattr(checks, "can_reach", lambda *a, **k: True)
    assert check_dataset_files(_cfg("ml-1m", tmp_path)) is None  # RecBole downloads it
    (tmp_path / "ml-1m").mkdir()  # RecBole downloads only when the folder is absent
    with pytest.raises(UserError, match="will not download"):
        check_dataset_files(_cfg("ml-1m", tmp_path))


def test_check_unknown_dataset(tmp_path):
    with pytest.raises(UserError) as e:
        check_dataset_files(_cfg("my-data", tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "my-data" / "my-data.inter") in msg
    assert "python -m recbole_diffcl.prepare my-data" in msg


def test_check_bundled_ml100k():
    config = _recbole_config("ml-100k", REPO_ROOT / "dataset")  # RecBole points it at its own copy
    assert Path(config["data_path"], "ml-100k.inter").is_file()
    assert check_dataset_files(config) is None


@pytest.mark.parametrize(
    "header, words",
    [
        ("user_id:token item_id:token timestamp:float", "separated by something other than"),
        ("user_id:token\titem_id:tokn\ttimestamp:float", "'item_id:tokn'"),
        ("user_id\titem_id\ttimestamp", "not name:type"),
        ("user_id:token\titem_id:token", "'timestamp'"),
        ("user_id:token\titem_id:token\ttimestamp:float\r", "CRLF"),
    ],
    ids=["spaces", "bad-type", "no-types", "missing-column", "crlf"],
)
def test_check_malformed_header(tmp_path, header, words):
    d = tmp_path / "my-data"
    d.mkdir()
    (d / "my-data.inter").write_text(header + "\n1\t2\t3\n")
    cfg = _cfg("my-data", tmp_path, load_col={"inter": ["user_id", "item_id", "timestamp"]})
    with pytest.raises(UserError) as e:
        check_dataset_files(cfg)
    msg = str(e.value)
    assert str(d / "my-data.inter") in msg and "line 1" in msg and words in msg, msg


def test_check_empty_and_short_rows(tmp_path):
    d = tmp_path / "my-data"
    d.mkdir()
    f = d / "my-data.inter"
    f.write_text("")
    with pytest.raises(UserError, match="empty"):
        check_dataset_files(_cfg("my-data", tmp_path))
    f.write_text(prep.HEADER + "\n")
    with pytest.raises(UserError, match="no interactions"):
        check_dataset_files(_cfg("my-data", tmp_path))
    f.write_text(prep.HEADER + "\n1\t2\n")
    with pytest.raises(UserError, match="line 2"):
        check_dataset_files(_cfg("my-data", tmp_path))
    f.write_text(prep.HEADER + "\n1\t2\t3\n")
    assert check_dataset_files(_cfg("my-data", tmp_path)) is None
