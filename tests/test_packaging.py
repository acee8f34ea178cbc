"""A non-editable install carries the property files (they live in props/ at the top of the repo)."""
import shutil
import subprocess
import sys

from tests.conftest import ROOT


def test_installed_copy_has_props(tmp_path):
    src = tmp_path / "src"
    # copy the checkout (without bulky run outputs) so the build leaves nothing in the repo
    top_level_outputs = {".git", "log", "log_tensorboard", "saved", "dataset", "scratch", "build", "results"}
    shutil.copytree(ROOT, src, ignore=lambda d, names: top_level_outputs & set(names) if d == str(ROOT) else set())
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    props = target / "recbole_diffcl" / "props"
    for name in ("overall.yaml", "model/DiffCLRec.yaml", "model/DiffCLRec-paper.yaml", "model/SASRecPlus.yaml",
                 "dataset/ml-100k.yaml", "dataset/amazon-sports.yaml", "search/DiffCLRec.yaml",
                 "ablation/aug_source-random.yaml"):
        assert (props / name).is_file(), name
    assert (target / "recbole_diffcl" / "data" / "prepare.py").is_file()  # the data package is installed
    found = subprocess.run(
        [sys.executable, "-c", "from recbole_diffcl.utils import props_dir; print(props_dir())"],
        cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(props)
