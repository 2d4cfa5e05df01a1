"""The package's shape: a straight pipeline with ``ui`` beside it, no cycles, imports at the top.

The contracts live in pyproject.toml (``[tool.importlinter]``) and are checked by import-linter,
which counts imports inside functions too. Each contract is shown to fail on a copy of the package
with one violation planted, so a green run means something.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "cqia_nb"
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (the test extra has it)")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "4 kept, 0 broken" in res.stdout


# each planted import breaks (at least) the contract named beside it
VIOLATIONS = [
    ("core/paths.py", "from cqia_nb.eval import results", "pipeline"),          # core reaching up the pipeline
    ("data/card.py", "from cqia_nb.filter import dedup", "pipeline"),          # a stage importing a later one
    ("ui/plots.py", "from cqia_nb.filter import framework", "ui-beside"),      # ui calling a stage
    ("eval/human.py", "from cqia_nb.ui import pairwise", "nothing-imports-the-top"),  # a stage importing a widget
    ("filter/minhash.py", "from cqia_nb.filter import dedup", "acyclic"),      # dedup imports minhash: a cycle
]


@pytest.mark.parametrize("where,line,contract", VIOLATIONS, ids=[v[2] + ":" + v[0] for v in VIOLATIONS])
def test_each_contract_can_fail(tmp_path, where, line, contract):
    shutil.copytree(PKG, tmp_path / "cqia_nb", ignore=shutil.ignore_patterns("__pycache__", "resources"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "cqia_nb" / where
    # inside a function, where a hidden cycle would sit: import-linter must still see it
    target.write_text(target.read_text(encoding="utf-8") + f"\n\ndef _planted():\n    {line}\n", encoding="utf-8")
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout[-2000:]
    names = {c["id"]: c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}
    assert f"{names[contract]} BROKEN" in res.stdout  # (an upward import also closes a cycle: both break)


def _own_imports_inside_functions(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and (sub.module or "").split(".")[0] == "cqia_nb":
                    lines.append(sub.lineno)
                elif isinstance(sub, ast.Import) and any(a.name.split(".")[0] == "cqia_nb" for a in sub.names):
                    lines.append(sub.lineno)
    return lines


def test_the_package_imports_itself_at_the_top_of_files():
    found = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
             if (n := _own_imports_inside_functions(ast.parse(p.read_text(encoding="utf-8"))))}
    assert found == {}, f"imports of cqia_nb inside functions (move them to the top): {found}"


def test_the_check_above_can_fail():
    tree = ast.parse("import os\n\ndef f():\n    from cqia_nb.core import paths\n    return paths\n")
    assert _own_imports_inside_functions(tree) == [4]


def test_no_module_is_long_without_saying_why():
    long = {}
    for p in PKG.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        n = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n > 800 and "Why this module is long" not in doc:
            long[str(p.relative_to(ROOT))] = n
    assert long == {}, f"modules over 800 lines without a reason in their docstring: {long}"


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_import_cqia_nb_is_light_and_the_api_loads_on_use():
    mods = _imported_after("import cqia_nb")
    assert not {"polars", "torch", "transformers", "ipywidgets"} & mods
    mods = _imported_after("import cqia_nb; cqia_nb.load; cqia_nb.PipelineConfig")
    assert {"cqia_nb.data.load", "cqia_nb.filter.framework"} <= mods


def test_the_results_store_does_not_import_widgets():
    assert "ipywidgets" not in _imported_after("import cqia_nb.eval.results")
    assert "ipywidgets" in _imported_after("import cqia_nb.ui")  # the check sees ipywidgets when it is there


def test_public_api_names_resolve():
    import cqia_nb

    for name in cqia_nb.__all__:
        assert getattr(cqia_nb, name) is not None, name
