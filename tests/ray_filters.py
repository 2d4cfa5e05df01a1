"""Filters for tests/filter/test_ray_engine.py, in a module of their own so that the test can have them
pickled by value for the Ray workers (``cloudpickle.register_pickle_by_value``), not the test module."""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import ClassVar

import polars as pl

from cqia_nb.filter.framework import Filter


@dataclasses.dataclass
class KillOnce(Filter):
    """Keeps every record; but the first batch holding ``record_id``, in any process other than
    ``spare_pid``, kills its own process with SIGKILL (once: ``marker`` is created first, atomically,
    holding the pid). A Ray worker dying in the middle of a job."""

    name: ClassVar[str] = "test_ray_kill_once"
    per_record: ClassVar[bool] = True
    record_id: str = ""
    marker: str = ""
    spare_pid: int = 0

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        if os.getpid() != self.spare_pid and self.record_id in frame["record_id"].to_list():
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return pl.Series("value", [None] * frame.height, dtype=pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        return pl.Series([True] * values.len(), dtype=pl.Boolean)


@dataclasses.dataclass
class EveryNth(Filter):
    """Drops every ``n``-th record of the frame it sees (by position, so it needs every record at once)
    and has no stream protocol: the Ray engine runs it on the driver."""

    name: ClassVar[str] = "test_ray_every_nth"
    n: int = 5

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return pl.Series("value", [float(i % self.n) for i in range(frame.height)], dtype=pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        return values != self.n - 1

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return pl.Series("detail", [f"position {i}" for i in range(frame.height)], dtype=pl.String)
