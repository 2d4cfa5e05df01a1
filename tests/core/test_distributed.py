"""The work split of a multi-process job: every process plans the same units and owns a disjoint share."""

from __future__ import annotations

import pytest

from cqia_nb.core.distributed import Shard, balance, current_shard, gather, launched_world


def test_balance_gives_every_unit_one_owner_and_evens_the_load():
    costs = [100, 7, 7, 7, 50, 49, 1, 1, 30]
    owner = balance(costs, 2)
    assert sorted(set(owner)) == [0, 1] and len(owner) == len(costs)
    loads = [sum(c for c, o in zip(costs, owner) if o == r) for r in (0, 1)]
    assert abs(loads[0] - loads[1]) <= max(costs) // 2  # LPT: within the largest unit, here much closer
    assert balance(costs, 2) == owner  # the same plan in every process
    assert balance(costs, 1) == [0] * len(costs)


def test_shards_partition_the_units():
    owner = balance([5, 4, 3, 2, 1, 9], 3)
    shards = [Shard(r, 3) for r in range(3)]
    for u in range(6):
        assert sum(s.owns(u, owner) for s in shards) == 1
    # round robin without an assignment
    assert [u for u in range(7) if Shard(1, 3).owns(u)] == [1, 4]


def test_one_process_when_not_launched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_world() == 1
    shard = current_shard("cpu")
    assert shard == Shard(0, 1, "cpu") and shard.is_main
    assert gather({"x": 1}, shard) == [{"x": 1}]
    monkeypatch.setenv("WORLD_SIZE", "not a number")
    assert launched_world() == 1


@pytest.mark.parametrize("world", ["2", "4"])
def test_launched_world_reads_the_launcher(monkeypatch, world):
    monkeypatch.setenv("WORLD_SIZE", world)
    assert launched_world() == int(world)
