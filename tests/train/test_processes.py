"""Training with several CPU processes (gloo), started by the launchers users use.

DDP through ``accelerate launch --config_file recipes/accelerate/cpu.yaml`` (and torchrun): the loss curve of
two processes with 4 examples each equals one process with 8 (same global batch, same data order), one
summary is printed, checkpoints carry both processes' RNG states, and a two-process run resumed from its
checkpoint continues exactly. FSDP2's ``fully_shard`` on CPU is checked directly (Trainer cannot run it on
CPU: ``runtime_problems`` says so instead of letting it fall back to DDP silently).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cqia_nb.train.config import TrainConfig, runtime_problems
from cqia_nb.train.trainer import read_metrics

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
STEPS = ["--set", "max_steps=8", "--set", "eval_steps=null", "--set", "eval_on_start=false", "--set", "val_fraction=0",
         "--set", "save_steps=4", "--set", "logging_steps=1"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(kind: str) -> list[str]:
    if kind == "accelerate":
        return [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu.yaml"),
                "--main_process_port", str(_port()), "-m", "cqia_nb"]
    if kind == "torchrun":
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_port()), "-m", "cqia_nb"]
    return [sys.executable, "-m", "cqia_nb"]


def _train(kind: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    per_device = "8" if kind == "one" else "4"
    cmd = [*_launch(kind), "train", "--config", "recipes/train-cpu-tiny.yaml", *STEPS, "--set", f"output_dir={out}",
           "--set", f"per_device_train_batch_size={per_device}", *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _losses(out: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(out) if "loss" in m}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    one = _train("one", tmp / "one")   # first: it builds the cached tiny base the others reuse
    two = _train("accelerate", tmp / "two")
    return tmp, one, two


def test_two_processes_follow_the_one_process_loss_curve(runs):
    tmp, one, two = runs
    a, b = _losses(tmp / "one"), _losses(tmp / "two")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    # same global batch, same order; only fp32 reduction order differs (the gradients are averaged over 2)
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-5
    tokens = {m["step"]: m["tokens"] for m in read_metrics(tmp / "one") if "loss" in m}
    assert tokens == {m["step"]: m["tokens"] for m in read_metrics(tmp / "two") if "loss" in m}
    # one summary line, from rank 0; both processes' RNG states in the checkpoint
    assert len([line for line in two.stdout.splitlines() if line.startswith('{"output_dir"')]) == 1
    assert {p.name for p in (tmp / "two" / "checkpoint-4").glob("rng_state_*.pth")} == {"rng_state_0.pth",
                                                                                      "rng_state_1.pth"}
    assert (tmp / "two" / "adapter_model.safetensors").is_file()


def test_two_process_run_resumes_exactly(runs):
    """torchrun this time: the checkpoint-4 of the two-process run, resumed, ends where the run did."""
    tmp, _, _ = runs
    if not (BIN / "torchrun").exists():
        pytest.skip("torchrun is not installed in this environment")
    cut = tmp / "cut"
    shutil.copytree(tmp / "two", cut)
    shutil.rmtree(cut / "checkpoint-8")
    for f in cut.glob("adapter_*"):
        f.unlink()
    _train("torchrun", cut, "--resume")
    whole, resumed = _losses(tmp / "two"), _losses(cut)
    assert sorted(resumed) == list(range(1, 9))
    assert [resumed[s] for s in range(5, 9)] == [whole[s] for s in range(5, 9)]  # bit for bit


def test_fully_shard_on_cpu_matches_unsharded():
    r = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_port()),
                        str(ROOT / "tests/train/fsdp2_cpu.py")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["world"] == 2 and res["dtensor_params"] > 0
    assert 0.45 < res["sharded_fraction"] < 0.55  # each process holds half of the weights
    assert res["max_loss_diff"] < 1e-5 and res["max_param_diff"] < 1e-5


def test_fsdp_on_cpu_is_refused_not_silently_ddp(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: FSDP can run")
    assert not any(p.startswith("FSDP:") for p in runtime_problems(TrainConfig()))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with fsdp.yaml sets
    assert any(p.startswith("FSDP:") and "cpu.yaml" in p for p in runtime_problems(TrainConfig()))
