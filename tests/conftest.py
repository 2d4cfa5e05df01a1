"""Shared fixtures. Tests never touch the user's cache or the repository's figures/ folder."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("CQIA_REAL_DATA", ROOT.parent / "shared" / "coig-cqia"))
REAL_BENCHMARKS = Path(os.environ.get("CQIA_REAL_BENCHMARKS", ROOT.parent / "shared" / "benchmarks"))

# Set at import so that notebook kernels started by nbval inherit them too.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="cqia-tests-"))
os.environ["CQIA_CACHE_DIR"] = str(_SESSION_TMP / "cache")
os.environ["CQIA_FIGURES_DIR"] = str(_SESSION_TMP / "figures")
os.environ["CQIA_RESULTS"] = str(_SESSION_TMP / "results" / "results.jsonl")  # never build/results
os.environ.pop("CQIA_DATA", None)  # stored notebook outputs are those of the bundled default
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def real_data() -> Path:
    """The real COIG-CQIA copy beside the checkout (CI has it); skip with a reason otherwise."""
    if not (REAL_DATA / "README.md").is_file():
        pytest.skip(f"real COIG-CQIA copy not found at {REAL_DATA} (set CQIA_REAL_DATA to run this tier)")
    return REAL_DATA


def make_record(**over) -> dict:
    rec = {"instruction": "什么是指令微调？", "input": "", "output": "指令微调是用指令和回答训练模型。",
           "task_type": {"major": ["问答"], "minor": ["百科问答"]}, "domain": ["通用"],
           "metadata": "暂无元数据信息", "answer_from": "human", "human_verified": True,
           "copyright": "暂无版权及作者信息"}
    rec.update(over)
    return rec


def jsonl(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")
