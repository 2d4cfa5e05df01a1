"""Filtering larger than memory: the recipe run stage by stage over batches, sinking parquet.

``run_streaming(source, config, out_dir)`` writes what ``write_outputs(run_pipeline(...))``
writes (kept/dropped as parquet and JSON Lines, steps.csv, pipeline.json), with the same kept
records in the same order and the same dropped records with the same reasons, while holding one
batch of records at a time:

- the recipe is cut into stages (``framework.segments``): a run of per-record steps (every rule
  filter, ``to_simplified``) is one pass over the records, each batch through ``run_batch``;
- a step that needs every record (``exact_dedup``, ``near_dedup``, ``short_answer``,
  ``placeholder_answer``) uses the stream protocol: one pass writes its small per-record keys
  (``Filter.stream_keys``) to a spill file, ``framework.decisions`` decides from them (near dedup
  reads the texts of its candidate pairs again, nothing else) and a second pass drops the
  decided records batch by batch (``Decided``). The keys are the only thing that grows with the
  input: ``StreamResult.index_bytes`` reports their bytes per record;
- each stage writes the records it keeps to a spill parquet file (row group by row group) that
  the next stage reads; dropped records go to one file per step, concatenated in step order at
  the end, so dropped.parquet's rows come in the order of the in-memory run.

A step without the protocol (model scores, the judge) reads the records that reach it into
memory: a note in the steps table says so (``StreamResult.in_memory_steps``).

Sources (``open_source``): a parquet file, a folder of parquet shards (read in name order, row
group by row group), a previous run's folder (its kept.parquet), or anything the loader reads
('bundled', a COIG-CQIA folder, .jsonl): those go through the loader's on-disk Arrow cache,
memory-mapped, so their pages are the kernel's to drop, not the process's heap.

``cqia-nb filter --streaming`` runs this; without the flag it runs when the input's parquet files
are larger than ``STREAM_ABOVE_BYTES`` (``--set`` nothing: the CLI decides from the file sizes).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import polars as pl

from cqia_nb.core.atomic import staged_files, write_text
from cqia_nb.core.hashing import content_key
from cqia_nb.core.parquet import ParquetSink, arrow_table, parquet_files, parquet_slices  # noqa: F401 (re-exported)
from cqia_nb.filter.framework import (
    AUDIT_COLUMNS,
    DECISION_SCHEMA,
    Decided,
    Filter,
    PipelineConfig,
    StepOutput,
    Transform,
    batch_slices,
    check_columns,
    decisions,
    run_batch,
    segments,
    steps_table,
    summary_line,
    with_audit_columns,
    _release_free_memory,
)
from cqia_nb.filter.outputs import OUTPUT_FILES, write_jsonl, write_pipeline_json

#: ``cqia-nb filter`` streams by itself when the input's parquet files add up to more than this
#: (compressed parquet is ~1/3 of the records in memory, and the in-memory run peaks at ~3x the
#: records: 2 GiB of parquet is ~20 GiB of peak, the most a 32 GiB machine should be asked for).
STREAM_ABOVE_BYTES = 2 << 30
#: Rows per batch read from parquet (the batches are then cut by ``framework.batch_slices``).
READ_ROWS = 16384


@dataclass
class Source:
    """Records to stream: parquet ``files`` read row group by row group, or a ``frame`` (the
    loader's memory-mapped cache) sliced. ``batches()`` can be called again for another pass."""

    files: list[Path] = field(default_factory=list)
    frame: pl.DataFrame | None = None
    label: str = ""

    def batches(self, rows: int = READ_ROWS) -> Iterator[pl.DataFrame]:
        """The records in order, ``rows`` at a time."""
        if self.frame is not None:
            for o in range(0, self.frame.height, rows):
                yield self.frame.slice(o, rows)
            return
        yield from parquet_slices(self._scan(), rows)

    def _scan(self) -> pl.LazyFrame:
        lf = pl.scan_parquet(self.files)
        names = lf.collect_schema().names()
        drop = [c for c in AUDIT_COLUMNS if c in names]
        return lf.drop(drop) if drop else lf

    def empty(self) -> pl.DataFrame:
        """A frame with no rows and the records' columns."""
        return self.frame.clear() if self.frame is not None else self._scan().head(0).collect()

    def read_all(self) -> pl.DataFrame:
        """Every record in one frame (the in-memory engine's input)."""
        return self.frame if self.frame is not None else self._scan().collect()

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the parquet files (0 for a frame)."""
        return sum(f.stat().st_size for f in self.files)


def open_source(path: str | Path, load: Callable[[str], pl.DataFrame] | None = None) -> Source:
    """A Source for a parquet file / folder of shards / previous run, else ``load(path)`` (the
    loader: 'bundled', a COIG-CQIA folder, a .jsonl file)."""
    files = parquet_files(path)
    if files is not None:
        return Source(files=files, label=str(path))
    if load is None:
        raise FileNotFoundError(f"{path}: no parquet file or folder of parquet shards here")
    return Source(frame=load(str(path)), label=str(path))


@dataclass
class StreamResult:
    """What ``run_streaming`` did: the steps table, the counts, the files written."""

    steps: pl.DataFrame
    n_in: int
    n_kept: int
    n_dropped: int
    paths: dict[str, Path]
    #: step name -> bytes per record of the keys it kept for its decision (the index that grows)
    index_bytes: dict[str, float] = field(default_factory=dict)
    #: steps without the stream protocol: the records reaching them were read into memory
    in_memory_steps: list[str] = field(default_factory=list)
    #: stages an earlier run of the same recipe on the same input had finished (taken from its spill)
    resumed: int = 0

    def summary(self) -> str:
        return summary_line(self.n_in, self.n_kept, self.n_dropped)


def streamable(flt: Filter | Transform) -> bool:
    """True when a step runs on batches: per-record, or it has the stream protocol."""
    return flt.per_record or (isinstance(flt, Filter) and type(flt).stream_keys is not Filter.stream_keys)


def _stage_batches(source: Source, columns: list[str], batch_rows: int | None,
                   batch_bytes: int | None) -> Iterator[pl.DataFrame]:
    for b in source.batches():
        for o, n in batch_slices(b, columns, batch_rows, batch_bytes):
            yield b.slice(o, n)


def _fingerprint(source: Source, config: PipelineConfig) -> str:
    """What decides a run's results: the recipe and the input (file names, sizes and mtimes, or the
    frame's row hashes), so a spill folder is reused only by the same run."""
    steps = [(st.filter, st.label, st.params) for st in config.steps]
    if source.frame is not None:
        data: object = [source.frame.height, source.frame.columns, int(source.frame.hash_rows(seed=7).sum())]
    else:
        data = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in source.files]
    return content_key("cqia-stream-1", pl.__version__, steps, data)


def _stage_record(seg: list[int], outs: list[StepOutput], rows: int, index_bytes: dict[str, float],
                  in_memory: list[str]) -> str:
    return json.dumps({"rows": rows, "outs": {str(k): [outs[k].n_in, outs[k].kept, outs[k].changed, outs[k].seconds]
                                              for k in seg}, "index_bytes": index_bytes, "in_memory": in_memory})


def run_streaming(source: Source, config: PipelineConfig, out_dir: str | Path, *, spill_dir: str | Path | None = None,
                  batch_rows: int | None = None, batch_bytes: int | None = None,
                  progress: bool = False) -> StreamResult:
    """Run ``config`` over ``source`` one batch at a time and write the outputs to ``out_dir``
    (atomically, as ``write_outputs`` does).

    Spill files go to ``.cqia-spill.<key>`` in ``spill_dir`` (default: ``out_dir``), removed when
    the run succeeds. A run that stops (killed, a full disk) leaves the stages it finished there,
    and the same command (same recipe, same input) starts after them: ``StreamResult.resumed``."""
    built = config.build()
    empty = source.empty()
    check_columns(empty, built)
    if "record_id" not in empty.columns and not all(f.per_record for _, f in built):
        raise ValueError(f"{source.label}: the records have no record_id column; streaming needs one for the steps "
                         "that see every record (dedup): load the data with cqia_nb.data.load or add record_id")
    outs = [StepOutput() for _ in built]
    audit_empty = with_audit_columns(empty)
    index_bytes: dict[str, float] = {}
    in_memory: list[str] = []
    resumed = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(built), desc="filters (streaming)", unit="step")
    out = Path(out_dir)
    with staged_files(out) as tmp:
        spill = Path(spill_dir or out) / f".cqia-spill.{_fingerprint(source, config)[:16]}"
        spill.mkdir(parents=True, exist_ok=True)
        current = source
        segs = segments(built)
        for si, seg in enumerate(segs):
            done, target = spill / f"stage-{si:04d}.json", ParquetSink(spill / f"stage-{si:04d}.parquet", empty)
            if done.is_file() and target.path.is_file():  # finished by an earlier run that stopped later
                rec = json.loads(done.read_text(encoding="utf-8"))
                for k, (n_in, kept, changed, sec) in rec["outs"].items():
                    o = outs[int(k)]
                    o.n_in, o.kept, o.changed, o.seconds = n_in, kept, changed, sec
                index_bytes.update(rec["index_bytes"])
                in_memory.extend(rec["in_memory"])
                target.rows = rec["rows"]
                resumed += 1
            else:
                gone = {k: ParquetSink(spill / f"dropped-{k:04d}.parquet", audit_empty) for k in seg}
                ib, im = _run_stage(current, built, seg, spill / f"keys-{si:04d}.parquet", target, gone, outs,
                                    batch_rows, batch_bytes)
                for sink in gone.values():
                    sink.close()
                index_bytes.update(ib)
                in_memory.extend(im)
                write_text(done, _stage_record(seg, outs, target.rows, ib, im))
            current = Source(files=[target.path], label=str(target.path))
            if bar is not None:
                bar.update(len(seg))
        if bar is not None:
            bar.close()
        table = steps_table(built, outs)
        n_in, n_dropped = finish_outputs(tmp, target.path, [spill / f"dropped-{k:04d}.parquet" for k in range(len(built))],
                                         audit_empty, table, config)
        result = StreamResult(table, n_in, target.rows, n_dropped, {}, index_bytes, in_memory, resumed)
    shutil.rmtree(spill, ignore_errors=True)
    result.paths = {n: out / n for n in (*OUTPUT_FILES, "pipeline.json")}
    return result


def finish_outputs(tmp: Path, kept: Path, dropped_parts: list[Path], audit_empty: pl.DataFrame, table: pl.DataFrame,
                   config: PipelineConfig) -> tuple[int, int]:
    """Write what ``write_outputs`` writes into ``tmp`` from parquet files, a batch at a time:
    ``kept`` (moved in as kept.parquet), ``dropped_parts`` (one a step, in step order; a missing
    file is a step that dropped nothing) joined into dropped.parquet, both as JSON Lines, the steps
    ``table`` and pipeline.json. Returns (records in, records dropped); checks in = kept + dropped."""
    dropped_sink = ParquetSink(tmp / "dropped.parquet", audit_empty)
    for part in dropped_parts:
        if part.is_file():
            for b in _raw_batches(part):
                dropped_sink.write(b)
    dropped_sink.close()
    n_kept = pl.scan_parquet(kept).select(pl.len()).collect().item()
    n_in = int(table["records_in"][0]) if table.height else n_kept
    if n_in != n_kept + dropped_sink.rows or (table.height and int(table["kept"][-1]) != n_kept):
        raise RuntimeError(f"the run lost or doubled records: {summary_line(n_in, n_kept, dropped_sink.rows)}")
    write_jsonl(tmp / "kept.jsonl", Source(files=[kept]).batches())
    write_jsonl(tmp / "dropped.jsonl", _raw_batches(tmp / "dropped.parquet"), audit=True)
    table.write_csv(tmp / "steps.csv")
    write_pipeline_json(tmp / "pipeline.json", config, summary_line(n_in, n_kept, dropped_sink.rows))
    if kept != tmp / "kept.parquet":
        shutil.move(kept, tmp / "kept.parquet")  # the spill folder may be on another disk
    return n_in, dropped_sink.rows


def _run_stage(current: Source, built: list[tuple[str, Filter | Transform]], seg: list[int], keys_path: Path,
               target: ParquetSink, gone: dict[int, ParquetSink], outs: list[StepOutput], batch_rows: int | None,
               batch_bytes: int | None) -> tuple[dict[str, float], list[str]]:
    """One stage over ``current``: its kept records to ``target``, each step's dropped ones to
    ``gone``; returns the index bytes a record of a decided step and the steps read into memory."""
    steps: list[tuple[int, str, Filter | Transform]] = [(k + 1, *built[k]) for k in seg]
    flt = built[seg[0]][1]
    cols = [c for k in seg for c in built[k][1].required_columns()]
    index_bytes: dict[str, float] = {}
    if not flt.per_record and streamable(flt):
        t0 = time.perf_counter()
        keys = ParquetSink(keys_path)
        for b in _stage_batches(current, cols, batch_rows, batch_bytes):
            keys.write(flt.stream_keys(b))  # type: ignore[union-attr]
        keys.close()
        if keys.rows:
            index_bytes[steps[0][1]] = keys.path.stat().st_size / keys.rows
            dropped = decisions(flt, pl.scan_parquet(keys.path),  # type: ignore[arg-type]
                                lambda: _stage_batches(current, cols, batch_rows, batch_bytes))
        else:
            dropped = pl.DataFrame(schema=DECISION_SCHEMA)
        outs[seg[0]].seconds += time.perf_counter() - t0
        steps = [(seg[0] + 1, steps[0][1], Decided(flt, dropped))]  # type: ignore[arg-type]
    if not streamable(flt):
        batches: Iterator[pl.DataFrame] = iter([current.read_all()])
    else:
        batches = _stage_batches(current, cols, batch_rows, batch_bytes)
    accs = [outs[k] for k in seg]
    for b in batches:
        target.write(run_batch(b, steps, accs))
        for k, acc in zip(seg, accs):
            for g in acc.gone:
                gone[k].write(g)
            acc.gone.clear()
            acc.measured.clear()  # not an output; kept per batch only
        _release_free_memory()
    target.close()
    return index_bytes, ([] if streamable(flt) else [steps[0][1]])


def _raw_batches(path: Path) -> Iterator[pl.DataFrame]:
    """A parquet file's rows as they are (audit columns included)."""
    return parquet_slices(pl.scan_parquet(path), READ_ROWS)
