"""data/benchmarks-mini: our own tiny evaluation set in the real formats (notebook 05's default)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL_BENCHMARKS, ROOT

MINI = ROOT / "data" / "benchmarks-mini"


def test_generator_reproduces_committed_files_byte_for_byte(tmp_path):
    out = tmp_path / "benchmarks-mini"
    res = subprocess.run([sys.executable, str(ROOT / "data" / "make_benchmarks_mini.py"), str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    want = sorted(p.relative_to(MINI).as_posix() for p in MINI.rglob("*") if p.is_file())
    assert got == want
    for rel in want:
        assert (out / rel).read_bytes() == (MINI / rel).read_bytes(), rel


def _questions(root: Path) -> set[str]:
    out: set[str] = set()
    for p in root.rglob("*.csv"):
        with p.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out.add((row.get("question") or row.get("Question") or "").strip())
    for p in root.rglob("*.json"):
        if p.name.startswith(("test_answers", "subject_mapping", "llamafactory", "eval_prompt")):
            continue
        text = p.read_text(encoding="utf-8")
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:  # JSON lines (BELLE-EVAL)
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        for doc in docs:
            items = doc if isinstance(doc, list) else [x for v in doc.values() for x in v] if isinstance(doc, dict) and "question" not in doc else [doc]
            out.update(str(it.get("question", "")).strip() for it in items if isinstance(it, dict))
    out.discard("")
    return out


def test_answers_are_valid_and_every_split_is_present():
    for p in (MINI / "ceval").rglob("*.csv"):
        rows = list(csv.DictReader(p.open(encoding="utf-8")))
        assert rows and all(r["answer"] in "ABCD" for r in rows), p
    for p in (MINI / "cmmlu").rglob("*.csv"):
        rows = list(csv.DictReader(p.open(encoding="utf-8")))
        assert rows and all(r["Answer"] in "ABCD" for r in rows), p
    dev = json.loads((MINI / "safetybench" / "dev_zh.json").read_text(encoding="utf-8"))
    assert len(dev) == 7 and all(0 <= q["answer"] < len(q["options"]) for v in dev.values() for q in v)
    belle = [json.loads(x) for x in (MINI / "belle_eval" / "eval_set.json").read_text(encoding="utf-8").splitlines()]
    assert {r["class"] for r in belle} >= {"math", "code", "closed\u00a0qa"}
    assert len(_questions(MINI)) == 33 + 22 + 14 + 7 + len(belle)


@pytest.mark.realdata
def test_no_question_is_taken_from_the_real_benchmarks():
    if not REAL_BENCHMARKS.is_dir():
        pytest.skip(f"real benchmarks not found at {REAL_BENCHMARKS} (set CQIA_REAL_BENCHMARKS to run this tier)")
    shared = _questions(MINI) & _questions(REAL_BENCHMARKS)
    assert not shared, sorted(shared)[:5]
