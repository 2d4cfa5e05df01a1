"""`cqia-nb eval mc` in two CPU processes, started by the launchers users use, writes the predictions
file of a one-process run byte for byte, each process having scored a share of the questions."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(name: str) -> list[str]:
    bindir = Path(sys.executable).parent
    if name == "accelerate":
        return [str(bindir / "accelerate"), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu.yaml"),
                "--main_process_port", str(_free_port()), "-m", "cqia_nb"]
    return [str(bindir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "cqia_nb"]


def _eval(prefix: list[str], out: Path, sets: list[str]) -> subprocess.CompletedProcess:
    cmd = [*prefix, "eval", "mc", "--config", "recipes/eval-ceval.yaml", "--set", f"out={out}"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("launcher,sets", [
    ("accelerate", ["shots=2"]),                                  # prefix groups: a subject's shots run once
    ("accelerate", ["shots=0", "batch_size=4", "prefix_cache=false"]),  # batches across subjects
    ("torchrun", ["mode=generate", "batch_size=4", "max_new_tokens=4"]),
])
def test_two_processes_write_the_one_process_predictions(tmp_path, launcher, sets):
    if launcher == "accelerate" and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate's launcher is not installed in this environment")
    if launcher == "torchrun" and not shutil.which("torchrun", path=str(Path(sys.executable).parent)):
        pytest.skip("torchrun is not installed in this environment")
    one = _eval([sys.executable, "-m", "cqia_nb"], tmp_path / "one.jsonl", sets)
    two = _eval(_launcher(launcher), tmp_path / "two.jsonl", sets)
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    n = len((tmp_path / "one.jsonl").read_text(encoding="utf-8").splitlines())
    shares = {int(m[0]): int(m[1]) for m in re.findall(r"process (\d) of 2: \w+ (\d+) of \d+ questions", two.stderr)}
    assert sorted(shares) == [0, 1], two.stderr[-2000:]
    assert all(k > 0 for k in shares.values()) and sum(shares.values()) >= n
    # one report, printed by the main process only
    assert two.stdout.count("overall accuracy") == 1 == one.stdout.count("overall accuracy")
    assert two.stdout.splitlines()[-1] == one.stdout.splitlines()[-1]
