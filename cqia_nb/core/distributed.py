"""Several processes doing one job: which share of the work is this process's, and gathering the shares.

A job launched by ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) runs the
same code in every process. Each process plans the whole job the same way (deterministic), runs the work
units :meth:`Shard.owns` gives it, and :func:`gather` collects every process's results in all of them,
so that the merged output equals a one-process run's byte for byte: the units, and so the batches the
model sees, are the same ones.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: ``rank`` of ``world`` processes, and the device it should use."""

    rank: int = 0
    world: int = 1
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, unit: int, assignment: Sequence[int] | None = None) -> bool:
        """Whether work unit ``unit`` is this process's (``assignment[unit]``, else round robin)."""
        owner = assignment[unit] if assignment is not None else unit % self.world
        return owner == self.rank


def balance(costs: Sequence[float], world: int) -> list[int]:
    """The process of each work unit: largest units first, each to the least loaded process (ties to the
    lowest rank). Deterministic, so every process computes the same assignment."""
    load = [0.0] * max(1, world)
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        p = min(range(len(load)), key=lambda r: (load[r], r))
        owner[i] = p
        load[p] += costs[i]
    return owner


def launched_world() -> int:
    """How many processes the launcher started (1 when run directly)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current_shard(device: str | None = None) -> Shard:
    """This process's :class:`Shard`. Under a launcher (``WORLD_SIZE`` > 1) it joins the process group
    through accelerate: gloo on CPU, NCCL on GPUs, each process on its own GPU. Run directly: ``Shard()``.

    ``device`` "cpu" (or no GPU here) asks for CPU processes. accelerate must be told so: left to itself on a
    machine without GPUs it records no backend and every process would run the whole job alone."""
    if launched_world() == 1:
        return Shard(device=device)
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes != launched_world():
        raise RuntimeError(f"the launcher started {launched_world()} processes but accelerate joined "
                           f"{state.num_processes}: launch with `accelerate launch --config_file "
                           "recipes/accelerate/cpu.yaml` (CPU) or torchrun")
    return Shard(state.process_index, state.num_processes, device if device else str(state.device))


def gather(obj: Any, shard: Shard) -> list[Any]:
    """Every process's ``obj``, in rank order, in every process (a picklable object)."""
    if shard.world == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


@contextmanager
def main_first(shard: Shard) -> Iterator[None]:
    """The main process runs the block first (e.g. builds a cached model), the others after it."""
    if shard.world == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield
