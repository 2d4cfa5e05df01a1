"""Filtering on Ray Data: ``cqia-nb filter --engine ray [--address ADDR]``.

``run_ray(source, config)`` gives what ``run_pipeline`` gives (a ``PipelineResult``: the same kept
records in the same order, the same dropped records with the same reasons in the same order, the
same steps table; only ``seconds`` differ and ``measured`` is left empty), with the work spread over
the Ray cluster's workers. ``write_outputs`` then writes the same files as the local run.

How the recipe runs (the stages are ``framework.segments``, as in the other engines, except that a
decided step takes the per-record steps after it into its pass: ``_stages``):

- The records are one Ray Dataset of Arrow blocks (polars in the workers), parquet read in blocks
  of about a quarter of the input per CPU (``_block_bytes``), so that every worker has work. Once a
  stage has run, each row also carries the audit columns (step, step_name, filter, value, detail):
  null while the record is still in the running, set by the step that dropped it. Dropped rows
  travel along with the others to the end, untouched, so one dataset holds the whole audit trail.
- A run of per-record steps (every rule filter, ``to_simplified``) is one ``map_batches``: each
  block's live rows go through ``run_batch`` (in ``batch_slices``, bounded memory), which is
  designed for this: a record's fate depends on that record alone, so any partition of the records
  gives the in-memory result. Each output block carries its steps' counts and seconds (a JSON cell
  in the ``_stats`` column, on its first row), read back after the stage and added up; a retried
  task replaces its whole output, so nothing is counted twice.
- A step that needs every record uses the stream protocol (``Filter.stream_keys`` /
  ``stream_decide``): the keys are computed by ``map_batches`` on the workers (the costly part:
  text features, MinHash signatures), then the step decides:

  * ``exact_dedup`` on the cluster: its decisions are local to a group of identical texts, so the
    keys are shuffled by a partition of their text digest (``groupby("_part").map_groups``: Ray
    calls the function once a group, and one call per text cost more than the work) and each
    partition decides alone; records with an empty text are never duplicates and skip the shuffle;
  * ``near_dedup`` in stages, as datatrove does: the band hashes become (band, hash, text digest)
    rows (``dedup.band_rows``), shuffled by a partition of the bucket's hash on the cluster, each
    partition giving its buckets' candidate pairs (``dedup.bucket_pairs``); the driver gets the pairs and the keys without their
    bands, and ``reread`` streams the candidates' texts back from the object store for the
    verification, answer check, components and survivors (``NearDedup.stream_decide``);
  * ``short_answer``, ``placeholder_answer`` on the driver, from the keys of all records collected
    in input order (~20 bytes a record: the group statistics need every record).
    The stage before such a rule computes its keys on the records it keeps and packs them in each
    output block (``_keys``), read back with the counts: a pass over the records less per rule;

  and the small table of the records it drops is shipped with a ``map_batches`` that applies it
  (``framework.Decided``, looked up by record_id), together with the per-record steps after it
  (``_stages``: one pass for both).
- A step without the protocol (model scores, the judge) runs on the driver, on the records that
  reach it (``RayResult.in_driver_steps``).
- Order: ``preserve_order`` is set for the run, and every block keeps its rows' order, so the kept
  records come out in input order; dropped rows are then sorted by step, stably (the local order).
- Failures: Ray Data retries a map task whose worker died; without limit by default, here at most
  ``MAX_TASK_RETRIES`` times, so a batch that kills its worker every time (out of memory, say) fails
  the run instead of looping. Each stage is materialised (in the object store, spilled to disk
  beyond it) before the next, as the keys, the decisions and the applying pass read it again.

The outputs are collected on the driver (as the local run holds them) and written there. Workers of
a cluster need this package and its dependencies installed (the same environment as the driver);
a local instance (no ``address``) uses the driver's.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import polars as pl
import pyarrow as pa

from cqia_nb.core.atomic import staged_files
from cqia_nb.filter.dedup import ExactDedup, NearDedup, band_rows, bucket_pairs
from cqia_nb.filter.framework import (
    AUDIT_COLUMNS,
    BATCH_ROWS,
    DECISION_SCHEMA,
    Decided,
    Filter,
    PipelineConfig,
    PipelineResult,
    StepOutput,
    Transform,
    _release_free_memory,
    batch_slices,
    check_columns,
    decisions,
    run_batch,
    segments,
    steps_table,
    summary_line,
    with_audit_columns,
)
from cqia_nb.filter.outputs import OUTPUT_FILES
from cqia_nb.filter.streaming import ParquetSink, Source, arrow_table, finish_outputs, streamable

#: Tries after the first for a map task whose worker died (Ray Data's default: no limit).
MAX_TASK_RETRIES = 3
#: Column of the per-block step counts (JSON, first row of each block); removed from the outputs.
STATS = "_stats"
#: Column of the next grouped answer rule's stream keys, computed by the stage before it (Arrow IPC
#: of the block's keys, first row of each block): saves that rule a pass over the records.
KEYS = "_keys"
#: Seconds to wait for the head node's GCS port to accept a connection.
CONNECT_TIMEOUT_S = 5.0
#: Bounds of the block size a parquet input is read in (``_block_bytes``); the upper is Ray's default.
BLOCK_BYTES_MIN, BLOCK_BYTES_MAX = 8 << 20, 128 << 20
INSTALL_HINT = "pip install 'cqia-notebooks[ray]' (or `make setup`)"
_INTERNAL = (*AUDIT_COLUMNS, STATS, KEYS)

Step = tuple[int, str, "Filter | Transform"]


class RayEngineError(ValueError):
    """Ray cannot run the recipe here (not installed, no cluster at the address, a task failed);
    the message says what to do."""


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a RayEngineError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayEngineError(f"ray is not installed ({e}): {INSTALL_HINT}") from None
    return ray


@contextmanager
def ray_connection(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected to the cluster at ``address`` ('auto': the one `ray start` started on this
    machine, or HOST:PORT), or to a new local instance with ``num_cpus`` (default: every core) when
    ``address`` is None. A connection this process already has is used as it is. The connection
    made here is closed at the end (a local instance stops with it)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address not in (None, "auto"):
        _check_reachable(address)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address is None:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if address is None:
            raise RayEngineError(f"cannot start a local Ray instance ({first}); see Ray's logs under "
                                 "/tmp/ray/session_latest/logs, or start a cluster with `ray start --head` and pass "
                                 "--address") from None
        raise RayEngineError(f"cannot connect to a Ray cluster at {address!r} ({first}): start one with "
                             "`ray start --head` and pass its address (or 'auto' on its head node), or leave out "
                             "--address to start a local Ray instance") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT nothing listens on: ``ray.init`` would retry for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        raise RayEngineError(f"--address {address!r}: give the head node's HOST:PORT (the GCS port `ray start --head` "
                             "printed, 6379 by default) or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise RayEngineError(f"no Ray cluster answers at {address} ({e.strerror or e}): start one with "
                             "`ray start --head --port PORT` and pass HOST:PORT (or 'auto' on its head node), or "
                             "leave out --address to start a local Ray instance") from None


@dataclass
class RayResult:
    """What ``run_ray`` did: the result (as ``run_pipeline``'s) and how it ran."""

    #: the in-memory result (``out_dir`` not given), else None: the outputs were written there
    result: PipelineResult | None
    #: steps without the stream protocol: the records reaching them were collected on the driver
    in_driver_steps: list[str] = field(default_factory=list)
    nodes: int = 0
    seconds: float = 0.0
    #: wall seconds on the driver: "connect", then each stage by its first step's name, then "collect"
    timings: dict[str, float] = field(default_factory=dict)
    #: the steps table and the counts (either way)
    steps: pl.DataFrame | None = None
    n_in: int = 0
    n_kept: int = 0
    n_dropped: int = 0
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        return summary_line(self.n_in, self.n_kept, self.n_dropped)


def _split(table: pa.Table) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """A block's records still in the running (record columns only) and those dropped before
    (with their audit columns; None before the first stage)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if "step" not in frame.columns:
        return frame.drop([c for c in _INTERNAL if c in frame.columns]), None
    live = frame["step"].is_null()
    return frame.filter(live).drop([c for c in _INTERNAL if c in frame.columns]), \
        frame.filter(~live).drop([c for c in (STATS, KEYS) if c in frame.columns])


def _block(kept: pl.DataFrame, gone: Sequence[pl.DataFrame], dead: pl.DataFrame | None,
           stats: str | None, keys: bytes | None = None) -> pl.DataFrame:
    """One output block: kept rows (audit columns null), rows dropped now, rows dropped before,
    each group in its input order; ``stats`` and ``keys`` on the first row."""
    cols = [*kept.columns, *AUDIT_COLUMNS]
    parts = [with_audit_columns(kept), *gone]
    if dead is not None:
        parts.append(dead)
    out = pl.concat([p.select(cols) for p in parts], how="vertical_relaxed")
    def first_row(value: Any) -> list[Any]:
        return [value] + [None] * (out.height - 1) if out.height else []

    return out.with_columns(pl.Series(STATS, first_row(stats), dtype=pl.String),
                            pl.Series(KEYS, first_row(keys), dtype=pl.Binary))


def _pack(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="uncompressed")
    return buf.getvalue()


def _unpack(cell: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(cell))


class _Stage:
    """``map_batches`` function: consecutive per-record steps on one block's live records; with
    ``then`` (the next step, a grouped rule decided on the driver), its stream keys of the records
    the steps kept, packed in the block's ``_keys`` cell."""

    def __init__(self, steps: Sequence[Step], batch_rows: int | None, batch_bytes: int | None,
                 then: Filter | None = None):
        self.steps, self.batch_rows, self.batch_bytes = list(steps), batch_rows, batch_bytes
        self.then = _Keys(then, batch_rows, batch_bytes) if then is not None else None
        self.columns = [c for _, _, flt in self.steps for c in flt.required_columns()]

    def __call__(self, table: pa.Table) -> pa.Table:
        live, dead = _split(table)
        outs = [StepOutput() for _ in self.steps]
        parts = []
        for o, n in batch_slices(live, self.columns, self.batch_rows, self.batch_bytes):
            parts.append(run_batch(live.slice(o, n), self.steps, outs))
            _release_free_memory()
        kept = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
        stats = json.dumps([[a.n_in, a.kept, a.changed, a.seconds] for a in outs])
        keys = _pack(self.then.keys(kept)) if self.then is not None else None
        return arrow_table(_block(kept, [g for a in outs for g in a.gone], dead, stats, keys))


class _Keys:
    """``map_batches`` function: a step's stream keys for one block's live records; with
    ``hashed_only``, only the records that have a text digest (``_h``; exact dedup's groups)."""

    def __init__(self, flt: Filter, batch_rows: int | None, batch_bytes: int | None, hashed_only: bool = False):
        self.flt, self.batch_rows, self.batch_bytes, self.hashed_only = flt, batch_rows, batch_bytes, hashed_only

    def __call__(self, table: pa.Table) -> pa.Table:
        keys = self.keys(_split(table)[0])
        return arrow_table(keys.filter(pl.col("_h").is_not_null()) if self.hashed_only else keys)

    def keys(self, live: pl.DataFrame) -> pl.DataFrame:
        """The step's stream keys of ``live`` (records still in the running), in order."""
        bounds = batch_slices(live, self.flt.required_columns(), self.batch_rows, self.batch_bytes)
        parts = [self.flt.stream_keys(live.slice(o, n)) for o, n in bounds]
        if any(p is None for p in parts):
            raise RuntimeError(f"filter {self.flt.name!r}: stream_keys gave nothing")
        keys = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
        assert keys is not None
        return keys


def _partitions(rows: int, cpus: float) -> int:
    """How many groups a shuffle's ``map_groups`` gets: Ray calls the function once a group, so a
    group per text (exact dedup) or per LSH bucket (near dedup: bands x records, ~2M at 100k records)
    cost more in calls than the work; instead each group is a partition of whole groups, enough for
    every CPU several times over and ~250k rows each at most."""
    return max(4 * max(int(cpus), 1), -(-rows // 250_000))


class _WithPart:
    """``map_batches`` function: adds ``_part``, a hash of ``column`` modulo ``parts``: every row
    of one text (exact dedup) or of one LSH bucket (near dedup) lands in the same partition."""

    def __init__(self, column: str, parts: int):
        self.column, self.parts = column, parts

    def __call__(self, table: pa.Table) -> pa.Table:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return arrow_table(frame.with_columns((pl.col(self.column).hash(0) % self.parts).cast(pl.Int32).alias("_part")))


class _BandRows:
    """``map_batches`` function: near dedup's keys as bucket rows (``dedup.band_rows``), each with
    its bucket's partition (``_part``, from the band hash)."""

    def __init__(self, bands: int, parts: int):
        self.bands, self.part = bands, _WithPart("_bh", parts)

    def __call__(self, table: pa.Table) -> pa.Table:
        keys = pl.from_arrow(table)
        assert isinstance(keys, pl.DataFrame)
        return self.part(arrow_table(band_rows(keys, self.bands)))


def _bucket_candidates(group: pa.Table) -> pa.Table:
    """``map_groups`` function: the candidate pairs of one partition of LSH buckets (``dedup.bucket_pairs``)."""
    rows = pl.from_arrow(group)
    assert isinstance(rows, pl.DataFrame)
    return arrow_table(bucket_pairs(rows))


def _group_decisions(group: pa.Table, flt: Filter) -> pa.Table:
    """``map_groups`` function: the records one partition of texts drops (exact dedup decides
    within each group of identical texts, and a partition holds whole groups)."""
    keys = pl.from_arrow(group)
    assert isinstance(keys, pl.DataFrame)
    return arrow_table(decisions(flt, keys.drop("_part"), None).select(list(DECISION_SCHEMA)).cast(DECISION_SCHEMA))


class _LiveColumns:
    """``map_batches`` function: the live records of a block, only ``columns`` (near dedup's reread)."""

    def __init__(self, columns: Sequence[str]):
        self.columns = list(dict.fromkeys(columns))

    def __call__(self, table: pa.Table) -> pa.Table:
        live, _ = _split(table)
        return arrow_table(live.select(self.columns))


def _frames(ds: Any) -> Iterator[pl.DataFrame]:
    """A dataset's blocks as polars frames, in order."""
    for t in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        f = pl.from_arrow(t)
        assert isinstance(f, pl.DataFrame)
        yield f


def _collect(ds: Any, schema: Mapping[str, pl.DataType] | None = None) -> pl.DataFrame:
    parts = [f for f in _frames(ds) if f.height]
    if not parts:
        return pl.DataFrame(schema=schema or {})
    return pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]


def _map(ds: Any, fn: Any) -> Any:
    with warnings.catch_warnings():
        # max_retries has no named parameter in Ray 2.60 (the pinned version), only **ray_remote_args
        warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
        return ds.map_batches(fn, batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
                              max_retries=MAX_TASK_RETRIES)


def _input_dataset(ray: Any, source: Source, cpus: int) -> Any:
    """The records as a Dataset: a frame in blocks (at least two per CPU, at most BATCH_ROWS rows,
    so that every node has work), parquet files read by Ray in blocks of ``_block_bytes`` (audit
    columns of a previous run's dropped.parquet left out, as the other engines do)."""
    if source.frame is not None:
        frame = source.frame
        rows = max(1, min(BATCH_ROWS, -(-frame.height // (2 * cpus))))
        return ray.data.from_arrow([arrow_table(frame.slice(o, rows)) for o in range(0, max(frame.height, 1), rows)])
    from ray.data import DataContext

    # set before the read: a dataset copies the context when it is made, and its stages inherit it
    DataContext.get_current().target_max_block_size = _block_bytes(source.nbytes, cpus)
    ds = ray.data.read_parquet([str(f) for f in source.files], partitioning=None)
    drop = [c for c in _INTERNAL if c in ds.schema().names]
    return ds.drop_columns(drop) if drop else ds


def _block_bytes(parquet_bytes: int, cpus: int) -> int:
    """Ray Data's block size for a run over ``parquet_bytes`` of parquet: Ray's default (128 MiB)
    packs the row groups of a 100k-record input (~180 MB in Arrow) into 3 blocks of 78,572, 14,285
    and 7,143 rows, so one of 2 workers did 80 % of every stage; aiming at 4 blocks per CPU (Arrow
    taken as twice the parquet bytes), between 8 MiB and Ray's default, balances them."""
    return int(min(BLOCK_BYTES_MAX, max(BLOCK_BYTES_MIN, 2 * parquet_bytes // (4 * max(cpus, 1)))))


def _harvest(ds: Any, seg: Sequence[int], outs: list[StepOutput], keys: bool = False) -> pl.DataFrame | None:
    """Add the per-block counts of a stage (``_stats``) to its steps' StepOutputs; with ``keys``,
    return the next step's keys that the stage computed (``_keys``), in input order."""
    parts = []
    for f in _frames(ds.select_columns([STATS, KEYS] if keys else [STATS])):
        for cell in f[STATS].drop_nulls().to_list():
            for k, (n_in, kept, changed, seconds) in zip(seg, json.loads(cell)):
                outs[k].n_in += n_in
                outs[k].kept += kept
                outs[k].changed += changed
                outs[k].seconds += seconds
        if keys:
            parts.extend(_unpack(cell) for cell in f[KEYS].drop_nulls().to_list())
    if not keys:
        return None
    return pl.concat(parts, how="vertical") if parts else pl.DataFrame()


def _decide(ds: Any, flt: Filter, batch_rows: int | None, batch_bytes: int | None, cpus: float,
            keys: pl.DataFrame | None = None) -> pl.DataFrame:
    """The records a step that needs every record drops (record_id, value, detail), by the stream
    protocol: exact dedup shuffled by text digest on the cluster; near dedup's LSH buckets grouped
    on the cluster (band hashes -> group by (band, hash) -> candidate pairs), its verification and
    components on the driver; the grouped answer rules on the driver, from ``keys`` where the stage
    before computed them (``_keys_on_cluster``)."""
    if isinstance(flt, ExactDedup):
        keys = _map(ds, _Keys(flt, batch_rows, batch_bytes, hashed_only=True)).materialize()
        parts = _partitions(keys.count(), cpus)
        groups = _map(keys, _WithPart("_h", parts)).groupby("_part").map_groups(
            _group_decisions, batch_format="pyarrow", fn_kwargs={"flt": flt})
        return _collect(groups, DECISION_SCHEMA)
    text = _map(ds, _LiveColumns(["record_id", *flt.required_columns()]))
    if isinstance(flt, NearDedup):
        # band hashes -> group by (band, hash) on the cluster -> candidate pairs; the driver gets
        # the pairs and the keys without their bands, verifies and joins the components
        bands = flt.lsh_params[0]
        keys = _map(ds, _Keys(flt, batch_rows, batch_bytes)).materialize()
        parts = _partitions(keys.count() * bands, cpus)
        buckets = _map(keys, _BandRows(bands, parts)).groupby("_part").map_groups(
            _bucket_candidates, batch_format="pyarrow")
        candidates = _collect(buckets, {"_ha": pl.Binary, "_hb": pl.Binary})
        keys_df = _collect(keys.drop_columns([f"_b{b}" for b in range(bands)]))
        if keys_df.height == 0:
            return pl.DataFrame(schema=DECISION_SCHEMA)
        return decisions(flt, keys_df, lambda: _frames(text), candidates=candidates)
    keys_df = keys if keys is not None else _collect(_map(ds, _Keys(flt, batch_rows, batch_bytes)))
    if keys_df.height == 0:
        return pl.DataFrame(schema=DECISION_SCHEMA)
    return decisions(flt, keys_df, lambda: _frames(text))


def _empty(ds: Any) -> pl.DataFrame:
    """A frame with no rows and the dataset's columns."""
    frame = pl.from_arrow(ds.schema().base_schema.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _on_driver(ray: Any, ds: Any, steps: Sequence[Step], accs: Sequence[StepOutput]) -> Any:
    """A step without the stream protocol: every row to the driver, the step there, back as blocks."""
    live, dead = _split(arrow_table(_collect(ds, _empty(ds).schema)))
    kept = run_batch(live, steps, accs)
    gone = [g for a in accs for g in a.gone]
    for a in accs:
        a.gone.clear()
    out = _block(kept, gone, dead, None).drop(STATS)
    rows = max(1, min(BATCH_ROWS, out.height))
    return ray.data.from_arrow([arrow_table(out.slice(o, rows)) for o in range(0, max(out.height, 1), rows)])


@contextmanager
def _run_settings() -> Iterator[None]:
    """Ray Data's settings for a run, restored after it: rows in input order, exact dedup's groupby
    as a sort by tasks (the default hash shuffle starts aggregator actors for each run: 10-20 s on 2
    cores against 0.5-3 s on the bundled and the real data), no progress bars or per-stage lines."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()  # copied into each dataset when it is made: set before
    saved = (ctx.execution_options.preserve_order, ctx.shuffle_strategy, ctx.enable_progress_bars,
             ctx.print_on_execution_start, ctx.target_max_block_size)
    loggers = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in loggers}
    ctx.execution_options.preserve_order = True
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ctx.enable_progress_bars = ctx.print_on_execution_start = False
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        (ctx.execution_options.preserve_order, ctx.shuffle_strategy, ctx.enable_progress_bars,
         ctx.print_on_execution_start, ctx.target_max_block_size) = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _run_stages(ray: Any, ds: Any, built: list[tuple[str, Filter | Transform]], outs: list[StepOutput],
                batch_rows: int | None, batch_bytes: int | None, timings: dict[str, float]) -> tuple[Any, list[str]]:
    """Every stage of the recipe over ``ds``: the last stage's rows (materialised) and the steps that
    ran on the driver; each stage's wall seconds go to ``timings``."""
    in_driver: list[str] = []
    segs = _stages(built)
    keys: pl.DataFrame | None = None  # the current step's keys, where the stage before computed them
    for i, seg in enumerate(segs):
        t0 = time.perf_counter()
        steps: list[Step] = [(k + 1, *built[k]) for k in seg]
        flt = built[seg[0]][1]
        if not streamable(flt):
            in_driver.append(steps[0][1])
            ds = _on_driver(ray, ds, steps, [outs[k] for k in seg]).materialize()
            keys = None
        else:
            if not flt.per_record:
                assert isinstance(flt, Filter)
                dropped = _decide(ds, flt, batch_rows, batch_bytes, ray.cluster_resources().get("CPU", 1), keys)
                outs[seg[0]].seconds += time.perf_counter() - t0
                steps = [(seg[0] + 1, steps[0][1], Decided(flt, dropped)), *steps[1:]]
            then = _keys_on_cluster(built[segs[i + 1][0]][1]) if i + 1 < len(segs) else None
            ds = _map(ds, _Stage(steps, batch_rows, batch_bytes, then)).materialize()
            keys = _harvest(ds, seg, outs, keys=then is not None)
        timings[steps[0][1]] = time.perf_counter() - t0
    return ds, in_driver


def _stages(built: list[tuple[str, Filter | Transform]]) -> list[list[int]]:
    """The recipe's stages on Ray: ``framework.segments``, except that a step that needs every
    record takes the per-record steps after it into its applying pass (once decided it is a
    per-record step, ``Decided``): a pass over the records less each time."""
    out: list[list[int]] = []
    for seg in segments(built):
        head = built[out[-1][0]][1] if out else None
        if head is not None and not head.per_record and streamable(head) and built[seg[0]][1].per_record:
            out[-1].extend(seg)
        else:
            out.append(list(seg))
    return out


def _keys_on_cluster(step: Filter | Transform) -> Filter | None:
    """``step`` where the stage before it computes its keys: a grouped rule decided on the driver
    from small keys (the dedup steps shuffle theirs on the cluster and read them there)."""
    if isinstance(step, Filter) and not step.per_record and streamable(step) \
            and not isinstance(step, (ExactDedup, NearDedup)):
        return step
    return None


def run_ray(source: Source | pl.DataFrame, config: PipelineConfig, *, address: str | None = None,
            num_cpus: int | None = None, batch_rows: int | None = None, batch_bytes: int | None = None,
            out_dir: str | Path | None = None) -> RayResult:
    """Run ``config`` over ``source`` (a frame, or a streaming ``Source``: parquet files or a loaded
    frame) on Ray (``ray_connection(address, num_cpus)``) and return the in-memory run's result;
    with ``out_dir``, write the outputs there instead, a block at a time (``_write_blocks``), so the
    driver never holds every record."""
    t_start = time.perf_counter()
    src = Source(frame=source) if isinstance(source, pl.DataFrame) else source
    built = config.build()
    outs = [StepOutput() for _ in built]
    timings: dict[str, float] = {}
    with ray_connection(address, num_cpus) as ray, _run_settings():
        timings["connect"] = time.perf_counter() - t_start
        try:
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            ds = _input_dataset(ray, src, max(1, int(ray.cluster_resources().get("CPU", 1))))
            empty = _empty(ds)
            check_columns(empty, built)
            if "record_id" not in empty.columns and not all(f.per_record for _, f in built):
                raise ValueError(f"{src.label or 'the input'}: the records have no record_id column; the steps that "
                                 "see every record (dedup) need one: load the data with cqia_nb.data.load")
            ds, in_driver = _run_stages(ray, ds, built, outs, batch_rows, batch_bytes, timings)
            t0 = time.perf_counter()
            if out_dir is not None:
                table = steps_table(built, outs)
                n_in, n_kept, n_dropped, paths = _write_blocks(ds, empty, table, config, Path(out_dir))
                timings["write"] = time.perf_counter() - t0
                return RayResult(None, in_driver, nodes, time.perf_counter() - t_start, timings, table, n_in, n_kept,
                                 n_dropped, paths)
            rows = _collect(ds)
            timings["collect"] = time.perf_counter() - t0
        except Exception as e:
            if isinstance(e, ValueError) or not type(e).__module__.startswith("ray"):
                raise
            raise RayEngineError(f"the Ray run failed: {type(e).__name__}: {str(e).strip()[-2000:]}") from e
    kept, dropped = _outputs(rows, empty)
    result = PipelineResult(kept, dropped, steps_table(built, outs), {}, config)
    if not result.reconciles():
        raise RuntimeError(f"the Ray run lost or doubled records: {result.summary()}, steps:\n{result.steps}")
    return RayResult(result, in_driver, nodes, time.perf_counter() - t_start, timings, result.steps, result.n_in,
                     result.kept.height, result.dropped.height)


def _write_blocks(ds: Any, empty: pl.DataFrame, table: pl.DataFrame, config: PipelineConfig,
                  out: Path) -> tuple[int, int, int, dict[str, Path]]:
    """The last stage's blocks, in input order, to the output files (as the streaming engine writes
    them): live rows to kept.parquet, dropped rows to one file per step, joined in step order."""
    audit = with_audit_columns(empty)
    with staged_files(out) as tmp:
        kept = ParquetSink(tmp / ".kept-rows.parquet", empty)
        gone: dict[int, ParquetSink] = {}
        for f in _frames(ds):
            if "step" not in f.columns:
                kept.write(f.select(empty.columns))
                continue
            live = f["step"].is_null()
            kept.write(f.filter(live).select(empty.columns))
            for (step,), part in f.filter(~live).select(audit.columns).group_by("step", maintain_order=True):
                gone.setdefault(int(step), ParquetSink(tmp / f".dropped-{int(step):04d}.parquet", audit)).write(part)
        kept.close()
        for sink in gone.values():
            sink.close()
        parts = [gone[k].path for k in sorted(gone)]
        n_in, n_dropped = finish_outputs(tmp, kept.path, parts, audit, table, config)
        for p in parts:
            p.unlink()
    return n_in, n_in - n_dropped, n_dropped, {n: out / n for n in (*OUTPUT_FILES, "pipeline.json")}


def _outputs(rows: pl.DataFrame, empty: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Kept and dropped frames from every row of the last stage, with the local run's columns and
    order (dropped: by step, then input order)."""
    audit = with_audit_columns(empty)
    if "step" not in rows.columns:  # no step ran (an empty recipe cannot be built) or no rows
        return pl.concat([empty, rows.select(empty.columns)], how="vertical_relaxed") if rows.height else empty, audit
    live = rows["step"].is_null()
    kept = pl.concat([empty, rows.filter(live).select(empty.columns)], how="vertical_relaxed")
    dropped = pl.concat([audit, rows.filter(~live).select(audit.columns)], how="vertical_relaxed")
    return kept, dropped.sort("step", maintain_order=True)
