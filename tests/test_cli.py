"""``cqia-nb validate`` / ``stats``: output format and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import jsonl, make_record

from cqia_nb.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cqia_nb.cli", *args], capture_output=True, text=True)


def test_validate_lists_problems_and_exits_1(tmp_path: Path, capsys):
    f = tmp_path / "zhihu" / "a.jsonl"
    f.parent.mkdir()
    f.write_bytes(jsonl([make_record()]) + b"{bad\n" + jsonl([make_record(domain="x")]))
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("zhihu/a.jsonl:2: -: malformed JSON")
    assert out[1].startswith("zhihu/a.jsonl:3: domain: expected a list of strings")
    assert out[-1] == "1 records loaded, 2 problems"


def test_validate_clean_exits_0_and_usage_errors_exit_2(tmp_path: Path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(jsonl([make_record(), make_record()]))
    ok = run("validate", str(f))
    assert ok.returncode == 0 and ok.stdout.splitlines() == ["2 records loaded, 0 problems"]
    missing = run("validate", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    assert run("validate").returncode == 2
    assert run("frobnicate").returncode == 2


def test_stats_prints_per_config_table(tmp_path: Path, capsys):
    for cfg, n in (("xhs", 2), ("zhihu", 3)):
        (tmp_path / cfg).mkdir()
        (tmp_path / cfg / "a.jsonl").write_bytes(jsonl([make_record()] * n))
    assert main(["stats", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in lines if l.startswith("| ")}
    assert rows["xhs"][:3] == ["1", "0", "2"] and rows["zhihu"][:3] == ["1", "0", "3"]
    assert rows["(total)"][0] == "2" and rows["(total)"][2] == "5"


@pytest.mark.realdata
def test_validate_real_copy(real_data):
    r = run("validate", str(real_data))
    lines = r.stdout.splitlines()
    assert r.returncode == 1
    assert lines[-1] == "17971 records loaded, 4 problems"
    assert all("Git LFS pointer" in l for l in lines[:-1]) and len(lines) == 5
