"""Project hygiene: environment files agree, notebooks are committed clean, the two commands exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import cqia_nb.runner as notebooks

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_requirements() -> list[str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = proj["optional-dependencies"]
    return proj["dependencies"] + extras["notebooks"] + extras["test"]


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [p for p in pip if p != "-e ."]
    assert sorted(listed) == sorted(_pyproject_requirements()), (
        "environment.yml and pyproject.toml list different packages: update both together")
    assert any(str(d).startswith("python>=3.11") for d in env["dependencies"])


def test_torch_is_pinned_exactly():
    assert "torch==2.13.0" in _pyproject_requirements()


def test_notebooks_are_committed_clean():
    nbs = notebooks.list_notebooks()
    assert nbs, "no numbered notebooks found"
    problems = [p for nb in nbs for p in notebooks.committed_form_problems(nb)]
    assert problems == []


def test_committed_form_check_catches_outputs(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("X = 1")
    params.metadata["tags"] = ["parameters"]
    dirty = nbformat.v4.new_code_cell("print(1)")
    dirty.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(2)")
    nb.cells = [params, dirty, checked]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, str(path))
    found = notebooks.committed_form_problems(path)
    assert any("cell 1: stored output in an unchecked cell" in p for p in found)
    assert any("cell 2: NBVAL_CHECK_OUTPUT cell has no stored output" in p for p in found)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    commands = [l.strip() for b in blocks[:2] for l in b.splitlines() if l.strip() and not l.startswith("#")]
    assert commands[:2] == ["make run", "make test"]
    ci = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert ci[-1].strip() in ("make test", "exec make test")
