"""The README's several-GPU and several-node commands, checked as far as a CPU allows: the Slurm script runs
with stand-ins for srun, scontrol and accelerate, and every command line goes through its launcher's own
parser. (Two CPU processes are launched for real in test_processes.py.)"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "recipes" / "slurm" / "train-multinode.sbatch"


def _stub(folder: Path, name: str, body: str) -> None:
    p = folder / name
    p.write_text("#!/bin/bash\n" + body + "\n", encoding="utf-8")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


def _accelerate_args(argv: list[str]):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(argv)
    args, _, _ = _validate_launch_command(args)
    return args


def test_slurm_script_launches_one_accelerate_per_node(tmp_path):
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.jsonl"
    _stub(bindir, "scontrol", 'printf "gpu-node-07\\ngpu-node-08\\n"')
    # srun: one task per node, as Slurm would start them, with that node's SLURM_NODEID
    _stub(bindir, "srun", 'shift; for n in 0 1; do SLURM_NODEID=$n "$@" || exit 1; done')
    _stub(bindir, "accelerate", f'{shlex.quote(sys.executable)} -c "import json,sys; print(json.dumps(sys.argv[1:]))" '
                                f'"$@" >> {shlex.quote(str(log))}')
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
           "SLURM_NNODES": "2"}
    r = subprocess.run(["bash", str(SBATCH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert len(calls) == 2
    for rank, argv in enumerate(calls):
        assert argv[0] == "launch"
        args = _accelerate_args(argv[1:])
        assert (args.num_machines, args.num_processes, args.machine_rank) == (2, 16, rank)
        assert args.main_process_ip == "gpu-node-07" and args.main_process_port == 29500
        assert args.use_deepspeed and args.module and args.training_script == "cqia_nb.train"
        assert args.training_script_args == ["--config", "recipes/train-yi-34b-full.yaml"]


def test_torchrun_multinode_command_parses():
    from torch.distributed.run import get_args_parser

    line = ("torchrun --nnodes 2 --nproc_per_node 8 --node_rank 1 --master_addr gpu-node-07 --master_port 29500 "
            "-m cqia_nb.train --config recipes/train-yi-6b-qlora.yaml")
    assert line in (ROOT / "README.md").read_text(encoding="utf-8")
    args = get_args_parser().parse_args(shlex.split(line)[1:])
    assert (args.nnodes, args.nproc_per_node, args.node_rank, args.master_addr) == ("2", "8", 1, "gpu-node-07")
    assert args.module and args.training_script == "cqia_nb.train"


@pytest.mark.parametrize("config,processes", [("ddp", 8), ("cpu", 2)])
def test_one_node_commands_parse(config, processes):
    from cqia_nb.train.launch import launch_command

    recipe = "recipes/train-cpu-tiny.yaml" if config == "cpu" else "recipes/train-yi-6b-qlora.yaml"
    argv = launch_command(recipe, config)
    assert shlex.join(argv) in (ROOT / "README.md").read_text(encoding="utf-8")
    args = _accelerate_args(argv[2:])
    assert args.num_processes == processes and args.multi_gpu
