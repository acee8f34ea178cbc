"""The package stands in layers: every module imports only modules of its own layer or lower ones, and no
import circle exists (every import counted, function-level ones and ``importlib`` calls included)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = "recbole_diffcl"

#: Bottom to top, as RecBole's config < data < model < trainer < quick_start < commands. A module name
#: ending in ".*" stands for every module of that sub-package.
LAYERS = [
    ("base", ["errors", "utils", "console"]),
    ("config", ["properties", "config"]),
    ("data", ["augment", "data", "data.*"]),
    ("model", ["layers", "diffusion", "model", "model.*"]),
    ("trainer", ["checkpoint", "evaluation", "trainer", "resume"]),
    ("run", ["preflight", "quick_start"]),
    ("commands", ["__main__", "cli", "runs", "report", "benchmark", "tune", "recommend", "views", "prepare"]),
]


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Package modules that the file imports anywhere in it (``from X import Y`` counts Y when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        found |= {n for n in names if n in known}
    return found


def layer_of(module: str) -> int:
    short = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    for rank, (_, members) in enumerate(LAYERS):
        for member in members:
            if short == member or (member.endswith(".*") and short.startswith(member[:-1])):
                return rank
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: give it one")


def graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {m: imports_of(p, known) - {m} for m, p in modules.items() if m != PACKAGE}


def test_every_module_imports_only_its_layer_and_below():
    upward = []
    for module, imported in graph().items():
        for other in imported:
            if other != PACKAGE and layer_of(other) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {other} "
                              f"({LAYERS[layer_of(other)][0]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(edges.get(module, ())):
            if state.get(other) == 1:
                circles.append(" -> ".join(path[path.index(other):] + [other]))
            elif other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_walk_sees_function_level_and_importlib_imports(tmp_path):
    source = tmp_path / "lower.py"
    source.write_text(
        "import importlib\n"
        "def late():\n"
        "    from recbole_diffcl.quick_start import run\n"
        "    from recbole_diffcl import views\n"
        "    return importlib.import_module('recbole_diffcl.benchmark')\n"
    )
    known = set(package_modules())
    assert imports_of(source, known) == {f"{PACKAGE}.quick_start", f"{PACKAGE}.views", f"{PACKAGE}.benchmark",
                                         PACKAGE}
    # placed in the data layer, each of these would be an upward import
    assert all(layer_of(m) > layer_of(f"{PACKAGE}.data.prepare") for m in imports_of(source, known) - {PACKAGE})


def test_documented_import_paths():
    from recbole_diffcl.model import CL4SRec, DiffCLRec, DuoRec, SASRecPlus  # noqa: F401
    from recbole_diffcl.quick_start import load_data_and_model, run, run_multiprocess  # noqa: F401
