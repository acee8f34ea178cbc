"""Issue 24: a named benchmark arrives by itself. The published file is downloaded (checked against its
pinned sha256, nothing half-written on a mismatch or a dropped connection) and prepared, or prepared from a
copy already on the machine; all against a local HTTP server on the loopback address, never the network."""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recbole_diffcl.data import registry
from recbole_diffcl.data.download import download_file
from recbole_diffcl.errors import UserError
from tests.conftest import tiny_config

# A small benchmark-like sequence file, made here (not real data): 40 users, 6-9 items each of 30.
FIXTURE = "".join(
    f"{u} " + " ".join(str((u * 7 + k * 3) % 30 + 1) for k in range(6 + u % 4)) + "\n" for u in range(1, 41)
).encode()
SHA = hashlib.sha256(FIXTURE).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """/ok/<file>: the fixture; /drop/<file>: announces the whole fixture, sends half, closes the connection."""

    def _head(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(FIXTURE)))
        self.end_headers()

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self._head()

    def do_GET(self):  # noqa: N802
        self._head()
        if self.path.startswith("/drop/"):
            self.wfile.write(FIXTURE[: len(FIXTURE) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(FIXTURE)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_with_the_right_checksum(server, tmp_path):
    target = download_file(f"{server}/ok/Toy.txt", tmp_path / "toy" / "Toy.txt", SHA, say=lambda line: None)
    assert target.read_bytes() == FIXTURE and sorted(p.name for p in target.parent.iterdir()) == ["Toy.txt"]


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    with pytest.raises(UserError, match="not the pinned") as err:
        download_file(f"{server}/ok/Toy.txt", tmp_path / "Toy.txt", "0" * 64, say=lambda line: None)
    assert SHA in str(err.value) and "Fix:" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_keeps_nothing(server, tmp_path):
    with pytest.raises(UserError, match=r"(stopped|failed) after") as err:
        download_file(f"{server}/drop/Toy.txt", tmp_path / "Toy.txt", SHA, say=lambda line: None)
    assert "nothing was kept" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_keeps_nothing(tmp_path):
    with pytest.raises(UserError, match="failed after"):
        download_file("http://127.0.0.1:9/Toy.txt", tmp_path / "Toy.txt", SHA, say=lambda line: None, timeout=2)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def toy_benchmark(monkeypatch, server):
    """A benchmark 'toybench' whose published copy is the fixture on the local server (mirror variable)."""
    bench = registry.BenchmarkDataset("toybench", "Toy.txt", None, None, sha256=SHA)
    monkeypatch.setitem(registry.BENCHMARKS, "toybench", bench)
    monkeypatch.setenv(registry.MIRROR_ENV, f"{server}/ok")
    monkeypatch.delenv(registry.SHARED_DATA_ENV, raising=False)
    return bench


def test_runner_downloads_prepares_and_trains(toy_benchmark, tmp_path, capsys):
    from recbole_diffcl.quick_start import run

    data = tmp_path / "data"
    result = run("SASRecPlus", "toybench", config_dict={**tiny_config(tmp_path), "data_path": str(data)})
    out = capsys.readouterr().out
    assert f"downloading {toy_benchmark.url}" in out
    assert f"prepared toybench: wrote {data / 'toybench' / 'toybench.inter'}" in out and "40 users" in out
    assert (data / "toybench" / "Toy.txt").read_bytes() == FIXTURE
    assert result["epochs_run"] == 1 and result["test_result"]
    # a second run finds the prepared file: no download, no second line
    run("SASRecPlus", "toybench", config_dict={**tiny_config(tmp_path), "data_path": str(data)})
    assert "prepared" not in capsys.readouterr().out


def test_runner_prepares_a_copy_already_there_without_the_network(toy_benchmark, tmp_path, monkeypatch, capsys):
    from recbole_diffcl.quick_start import run

    monkeypatch.setattr(registry, "can_reach", lambda *a, **k: pytest.fail("must not try the network"))
    data = tmp_path / "data"
    (data / "toybench").mkdir(parents=True)
    (data / "toybench" / "Toy.txt").write_bytes(FIXTURE)
    run("SASRecPlus", "toybench", config_dict={**tiny_config(tmp_path), "data_path": str(data)})
    assert f"prepared toybench: wrote {data / 'toybench' / 'toybench.inter'} from {data / 'toybench' / 'Toy.txt'}" in (
        capsys.readouterr().out)


def test_offline_and_not_found_says_what_to_do(toy_benchmark, tmp_path, monkeypatch):
    from recbole_diffcl.data import prepare as prep
    from recbole_diffcl.quick_start import run

    monkeypatch.setattr(registry, "can_reach", lambda *a, **k: False)
    monkeypatch.setattr(prep, "can_reach", lambda *a, **k: False)
    data = tmp_path / "data"
    with pytest.raises(UserError, match="is not prepared") as err:
        run("SASRecPlus", "toybench", config_dict={**tiny_config(tmp_path), "data_path": str(data)})
    assert "python -m recbole_diffcl.prepare toybench" in str(err.value) and "cannot" in str(err.value)
    with pytest.raises(UserError, match="unreachable"):  # the prepare command without --source, offline
        prep.prepare("toybench", None, data, say=lambda line: None)
    assert not (data / "toybench" / "toybench.inter").exists()


def test_prepare_command_downloads_the_published_file(toy_benchmark, tmp_path):
    from recbole_diffcl.data import prepare as prep

    lines = []
    target, stats = prep.prepare("toybench", None, tmp_path, say=lines.append)
    assert stats.users == 40 and target.is_file() and (tmp_path / "toybench" / "Toy.txt").is_file()
    assert any("sha256 checked" in line for line in lines)


def test_every_named_benchmark_has_a_pinned_checksum():
    for bench in registry.BENCHMARKS.values():
        assert bench.sha256 and len(bench.sha256) == 64, bench.name
        assert bench.url.startswith(registry.S3REC_DATA_URL) and bench.url.endswith(bench.sequence_file)
