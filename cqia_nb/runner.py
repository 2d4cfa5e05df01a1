"""Run the numbered notebooks, and keep their committed form clean.

Committed notebooks carry no outputs except in cells marked ``# NBVAL_CHECK_OUTPUT``: those keep
the deterministic output of the default run (bundled data, tiny profile) for nbval to compare.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cqia_nb.core.paths import project_root

CHECK_MARK = "NBVAL_CHECK_OUTPUT"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks (``01_*.ipynb`` …) in story order."""
    folder = folder or notebooks_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_checked(cell: dict[str, Any]) -> bool:
    return cell.get("cell_type") == "code" and CHECK_MARK in _source(cell)


def committed_form_problems(path: Path) -> list[str]:
    """What keeps a notebook from its committed form (empty list: it is clean)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    out: list[str] = []
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(params) != 1:
        out.append(f"{path.name}: needs exactly one cell tagged 'parameters' (found {len(params)})")
    for i, c in enumerate(nb["cells"]):
        if c.get("cell_type") != "code":
            continue
        if is_checked(c):
            if not c.get("outputs"):
                out.append(f"{path.name} cell {i}: {CHECK_MARK} cell has no stored output; "
                           "run `make refresh-notebooks`")
        elif c.get("outputs") or c.get("execution_count"):
            out.append(f"{path.name} cell {i}: stored output in an unchecked cell; "
                       "run `make refresh-notebooks` (or clear outputs)")
    return out


@dataclass
class RunReport:
    notebook: str
    seconds: float
    output: Path
    error: str | None = None


@dataclass
class RunConfig:
    """How ``cqia-nb notebooks`` runs: where executed copies and figures go, and overrides."""

    out_dir: Path = Path("build/executed")
    figures_dir: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    timeout_s: int = 1800


def execute(path: Path, out: Path, parameters: dict[str, Any] | None = None,
            env: dict[str, str] | None = None, timeout_s: int = 1800) -> float:
    """Execute one notebook with papermill (parameters injected after the tagged cell)."""
    import papermill as pm

    out.parent.mkdir(parents=True, exist_ok=True)
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    t = time.perf_counter()
    try:
        pm.execute_notebook(str(path), str(out), parameters=parameters or {}, cwd=str(path.parent),
                            kernel_name="python3", progress_bar=False, log_output=False,
                            execution_timeout=timeout_s)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return time.perf_counter() - t


def run_all(config: RunConfig) -> list[RunReport]:
    """Execute every numbered notebook top to bottom; stop at the first failure."""
    root = notebooks_dir().parent
    figs = config.figures_dir or root / "figures"
    env = {"CQIA_FIGURES_DIR": str(Path(figs).resolve()), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
    reports: list[RunReport] = []
    for nb in list_notebooks():
        if config.only and not any(nb.name.startswith(o) for o in config.only):
            continue
        out = Path(config.out_dir) / nb.name
        try:
            secs = execute(nb, out, config.parameters, env, config.timeout_s)
            reports.append(RunReport(nb.name, secs, out))
        except Exception as e:  # papermill's PapermillExecutionError names cell and traceback
            reports.append(RunReport(nb.name, float("nan"), out, f"{type(e).__name__}: {e}"))
            break
    return reports


def peak_child_rss_mib() -> float:
    """Largest peak RSS among finished child processes (the notebook kernels)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def refresh_checked(path: Path, executed: Path) -> None:
    """Write ``path`` back in committed form: outputs of checked cells taken from ``executed``."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    ran = nbformat.read(str(executed), as_version=4)
    by_source = {}
    for c in ran.cells:
        if c.cell_type == "code":
            by_source.setdefault(c.source, c)
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        if CHECK_MARK in c.source and c.source in by_source:
            src = by_source[c.source]
            c.outputs = [_strip_output(o) for o in src.outputs]
            c.execution_count = src.execution_count
        else:
            c.outputs = []
            c.execution_count = None
        c.metadata.pop("execution", None)
        c.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, str(path))


def _strip_output(o: Any) -> Any:
    o.pop("metadata", None) if o.get("output_type") == "stream" else None
    if "metadata" in o:
        o["metadata"] = {}
    return o
