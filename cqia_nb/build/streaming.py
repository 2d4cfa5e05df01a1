"""Building larger than memory: ``cqia-nb build --streaming``, the same output folder a batch at a time.

``run_build_streaming(spec, ...)`` returns a ``StreamBuild`` that ``exports.export_all`` writes to
the same bytes, file by file, as it writes ``run_build``'s, while holding one batch of full records
(``batch_rows``) plus a few light columns per record:

1. **Input** (``Source``): parquet (a filter output folder's kept.parquet, a .parquet file, a folder
   of parquet shards) is read in row slices by polars (``core.parquet.parquet_slices``); 'bundled', a
   COIG-CQIA folder or .jsonl goes through the loader first (its Arrow cache, memory-mapped) and is
   then sliced, as ``cqia-nb filter --streaming`` does.
2. **Pass 1** (with ``contamination:``): the check per batch against the benchmark index (built once,
   small): ``contamination.check_records`` per record, the first occurrence of each matched n-gram
   (``merge_hits``) for the eval side (``eval_side``), removal per record. It also keeps the light
   input columns for the card (record_id, config, source_file) and counts the characters the tiny
   tokenizer's sample is drawn from.
3. **Pass 2** (tokenizer ``tiny`` only): the tiny BPE's training sample, every k-th kept record as in
   memory (``data.tokens.corpus_stride``), then the tokenizer, trained once.
4. **Pass 3**: per batch, ``format_records`` (messages, token counts, the truncation policy: per
   record, so the batches' reports add up), ``add_derived`` and every subset's membership mask; the
   full rows go to a spill file, in input order; kept in memory per record: record_id, source_file,
   n_tokens and one boolean per subset. A ``where`` that names ``split`` is evaluated in one more pass
   over the spill once the split is known; a ``where`` that aggregates over rows is refused
   (``subsets.check_elementwise``).
5. The split (``assign_split``) and the mixtures' seeded draws (``build_mixture``) run on the light
   frame exactly as in memory: they read record_id, source_file, split and n_tokens only.
6. **Pass 4** (``export_all`` -> ``feed_targets``): one pass over the spill writes every subset
   (in input order, each target through its ``exports.TargetWriter``); each mixture is an external
   permutation: one pass over the spill sorts its rows (repeats included) into bucket files of
   ``batch_rows`` output positions, then the buckets are read in order, each sorted in memory.

Memory: a batch of full rows, the writers' buffers (a Parquet row group of ``ROW_GROUP_ROWS`` rows
per subset target being written, an hf batch of ``HF_BATCH_ROWS``), and per record ~100 bytes of light
columns (more with the contamination report's per-record row). The spill folder
(``.cqia-build-spill-*`` in ``spill_dir``, default beside the output folder) holds the formatted
records once more on disk, plus the mixture buckets; ``StreamBuild.close`` removes it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

from cqia_nb.build import contamination as C
from cqia_nb.build import formatting
from cqia_nb.build.mixture import assign_split
from cqia_nb.build.run import (
    Build,
    InputData,
    check_records_file,
    eval_index,
    load_input,
    make_targets,
    parquet_input,
    target_frame,
)
from cqia_nb.build.spec import BuildSpec, SpecError, SubsetSpec, builtin_subsets, where_expr
from cqia_nb.build.subsets import add_derived, check_elementwise, subset_mask
from cqia_nb.core.memory import release_free_memory
from cqia_nb.core.parquet import ParquetSink, parquet_slices
from cqia_nb.data.tokens import TokenizerConfig, corpus_stride, corpus_texts, text_chars
from cqia_nb.filter.streaming import READ_ROWS, STREAM_ABOVE_BYTES, Source

__all__ = ["STREAM_ABOVE_BYTES", "StreamBuild", "input_bytes", "run_build_streaming"]

#: the light columns of a target frame in a streaming build (``_row``: the record's row in the spill)
LIGHT_TARGET_COLUMNS = ("record_id", "subset", "split", "sample", "n_tokens", "_row")


def input_bytes(source: str) -> int:
    """Bytes of INPUT's parquet files (0 when it is not parquet): what ``cqia-nb build`` compares with
    ``STREAM_ABOVE_BYTES`` to stream by itself."""
    data = parquet_input(source)
    return sum(p.stat().st_size for p in data.paths or []) if data is not None else 0


@dataclass
class StreamBuild(Build):
    """A ``Build`` whose records stay on disk: ``base`` and the targets' frames hold light columns
    (``LIGHT_TARGET_COLUMNS``), the full rows are in the spill folder until ``close``."""

    spill: Path | None = None
    rows_file: Path | None = None
    empty: pl.DataFrame | None = None          # the spill's columns
    batch_rows: int = READ_ROWS
    masks: dict[str, str] = field(default_factory=dict)  # subset -> mask column of base

    def __enter__(self) -> "StreamBuild":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spill folder (the build cannot be exported after this)."""
        if self.spill is not None:
            shutil.rmtree(self.spill, ignore_errors=True)
            self.spill = None

    def _batches(self) -> Iterator[tuple[int, pl.DataFrame]]:
        """(first row, batch) of the spill, in order."""
        if self.spill is None:
            raise RuntimeError("this streaming build was closed (its spill folder is gone): build it again")
        o = 0
        for b in parquet_slices(pl.scan_parquet(self.rows_file), self.batch_rows):
            yield o, b
            o += b.height

    def empty_target(self, name: str) -> pl.DataFrame:
        return target_frame(self.empty.with_columns(  # type: ignore[union-attr]
            pl.lit(None, dtype=pl.String).alias("subset"), pl.lit(None, dtype=pl.String).alias("split"),
            pl.lit(None, dtype=pl.Int64).alias("sample")))

    def feed_targets(self, writers: dict[str, Any]) -> None:
        subsets = [n for n in writers if self.targets[n].kind == "subset"]
        if subsets:
            split = self.base["split"]
            for o, b in self._batches():
                b = b.with_columns(split.slice(o, b.height))
                for name in subsets:
                    m = self.base[self.masks[name]].slice(o, b.height)
                    if m.any():
                        writers[name].write(target_frame(b.filter(m).with_columns(
                            pl.lit(name).alias("subset"), pl.lit(0, dtype=pl.Int64).alias("sample"))))
                del b
                release_free_memory()
        for name in writers:
            if self.targets[name].kind == "mixture":
                self._write_mixture(name, writers[name])

    def _write_mixture(self, name: str, writer: Any) -> None:
        """The mixture's rows in its shuffled order: bucket by output position, then bucket by bucket."""
        mix = (self.targets[name].frame.select("_row", "split", "sample", "subset")
               .with_row_index("_pos").with_columns(pl.col("_pos").cast(pl.Int64)).sort("_row", maintain_order=True))
        rows_col = mix["_row"].to_numpy()
        size = self.batch_rows
        folder = self.spill / f"mix-{name}"  # type: ignore[operator]
        folder.mkdir()
        sinks: dict[int, ParquetSink] = {}
        for o, b in self._batches():
            lo, hi = np.searchsorted(rows_col, [o, o + b.height])
            if lo == hi:
                continue
            want = mix.slice(int(lo), int(hi - lo))
            got = want.join(b.with_row_index("_row", offset=o).with_columns(pl.col("_row").cast(pl.Int64)),
                            on="_row", how="left", maintain_order="left")
            got = got.with_columns((pl.col("_pos") // size).alias("_bucket"))
            for (k,), part in got.partition_by("_bucket", as_dict=True, maintain_order=True).items():
                sink = sinks.get(int(k))
                if sink is None:
                    sink = sinks[int(k)] = ParquetSink(folder / f"{int(k):06d}.parquet")
                sink.write(part.drop("_bucket"))
            del got, want
            release_free_memory()
        for k in sorted(sinks):
            path = sinks[k].close()
            chunk = pl.read_parquet(path).sort("_pos")
            path.unlink()
            writer.write(target_frame(chunk))
            del chunk
            release_free_memory()
        shutil.rmtree(folder, ignore_errors=True)


def _open_input(source: str) -> tuple[Source, InputData]:
    data = parquet_input(source)
    if data is not None:
        src = Source(files=data.paths or [], label=source)
        check_records_file(src.empty(), source)
        return src, data
    data = load_input(source)  # the loader's frame (its Arrow cache, memory-mapped), sliced
    return Source(frame=data.frame, label=source), data


def run_build_streaming(spec: BuildSpec, seed: int | None = None, input: str | None = None, tokenizer: Any = None,
                        evals: Any = None, *, spill_dir: str | Path | None = None,
                        batch_rows: int = READ_ROWS) -> StreamBuild:
    """``run_build`` a batch of ``batch_rows`` records at a time (module docstring); the spill folder
    is made in ``spill_dir`` (default: the system's temporary folder). Export with
    ``exports.export_all``, then ``close()`` (or use the build as a context manager)."""
    seed = spec.seed if seed is None else seed
    if seed is None:
        raise SpecError(f"{spec.path or 'spec'}: no seed; pass --seed S or write `seed:` in the spec")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    specs = spec.subset_specs()
    all_specs = {**builtin_subsets(), **{s.name: s for s in spec.subsets}}
    for m in spec.mixtures:
        for p in m.parts:
            specs.setdefault(p.subset, all_specs[p.subset])
    for s in specs.values():
        check_elementwise(s)
    cfg = spec.format or formatting.FormatConfig()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    source, data = _open_input(input or spec.input or "bundled")
    timings["load"] = time.perf_counter() - t
    spill = Path(tempfile.mkdtemp(prefix=".cqia-build-spill-", dir=spill_dir))
    try:
        return _run(spec, seed, source, data, cfg, tokenizer, evals, specs, spill, batch_rows, timings)
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise


def _run(spec: BuildSpec, seed: int, source: Source, data: InputData, cfg: formatting.FormatConfig, tokenizer: Any,
         evals: Any, specs: dict[str, SubsetSpec], spill: Path, batch_rows: int,
         timings: dict[str, float]) -> StreamBuild:
    # pass 1: contamination, the light input columns, the tokenizer's corpus size
    t = time.perf_counter()
    cs = spec.contamination
    index, note = eval_index(spec, evals)
    tiny = tokenizer is None and cfg.tokenizer == "tiny"
    light_in, rec_parts, hit_parts, removed_parts, drop_ids = [], [], [], [], []
    chars = 0
    for b in source.batches(batch_rows):
        light_in.append(b.select("record_id", "config", "source_file"))
        if index is not None:
            recs, hits = C.check_records(b, index)
            rec_parts.append(recs)
            hit_parts.append(hits)
            if cs.remove:  # type: ignore[union-attr]
                part = C.ContaminationReport(index.n, recs, pl.DataFrame(), pl.DataFrame())
                b, gone = C.remove_contaminated(b, part, cs.min_overlap, cs.min_ratio)  # type: ignore[union-attr]
                removed_parts.append(gone.select("record_id", *[c for c in C.RECORD_SCHEMA if c != "record_id"],
                                                 "reason"))
                drop_ids.append(gone["record_id"])
        if tiny:
            chars += text_chars(b)
    data.frame = pl.concat(light_in) if light_in else data.frame.clear().select("record_id", "config", "source_file")
    report = removed = None
    if index is not None:
        if cs.remove and data.frame["record_id"].is_duplicated().any():  # type: ignore[union-attr]
            raise ValueError("record_id is not unique in the frame; contamination removal needs unique ids")
        report = C.eval_side(index, pl.concat(rec_parts), C.merge_hits(hit_parts))
        note = report.summary()
        if cs.remove:  # type: ignore[union-attr]
            removed = pl.concat(removed_parts)
            note += f"; {removed.height:,} records removed"
        timings["contamination"] = time.perf_counter() - t
    gone_ids = pl.concat(drop_ids) if drop_ids else None

    def kept_batches() -> Iterator[pl.DataFrame]:
        for b in source.batches(batch_rows):
            yield b.filter(~pl.col("record_id").is_in(gone_ids.implode())) if gone_ids is not None and gone_ids.len() else b

    # pass 2: the tiny tokenizer's sample (every k-th kept record, as data.tokens._corpus takes it)
    t = time.perf_counter()
    if tiny:
        stride = corpus_stride(chars, TokenizerConfig().max_train_chars)
        sample, o = [], 0
        for b in kept_batches():
            first = (-o) % stride
            sample.append(b.select([c for c in ("instruction", "input", "output") if c in b.columns])
                      .slice(first).gather_every(stride))
            o += b.height
        tokenizer = formatting.load_tokenizer("tiny", texts=corpus_texts(pl.concat(sample)))
    elif tokenizer is None:
        tokenizer = formatting.load_tokenizer(cfg.tokenizer)

    # pass 3: formatting, derived columns, subset masks; full rows to the spill
    masks = {name: f"_m{i}" for i, name in enumerate(specs)}
    later = [n for n, s in specs.items() if s.where and "split" in _where_columns(s)]
    # the rendered text is in no export: spilled only when a `where` read after the split needs it
    keep_text = any("text" in _where_columns(specs[n]) for n in later)
    sink = ParquetSink(spill / "rows.parquet")
    light, dropped = [], []
    rep = formatting.TruncationReport(cfg.max_length, cfg.truncation, 0)
    empty = None
    for b in kept_batches():
        if b.height == 0:
            continue
        fmt = formatting.format_records(b, cfg, tokenizer)
        for k in ("records", "over", "truncated", "dropped", "kept_over"):
            setattr(rep, k, getattr(rep, k) + getattr(fmt.report, k))
        dropped.append(fmt.dropped.select("record_id", "reason"))
        base = add_derived(fmt.frame)
        probe = base.with_columns(pl.lit(None, dtype=pl.String).alias("split"))
        light.append(base.select("record_id", "source_file", "n_tokens").with_columns(
            [subset_mask(probe, s).alias(masks[n]) for n, s in specs.items() if n not in later]))
        if not keep_text:
            base = base.drop("text")
        if empty is None:
            empty = base.clear()
        sink.write(base)
        del fmt, base, probe
        release_free_memory()
    sink.close()
    if empty is None:  # nothing left to format
        fmt = formatting.format_records(source.empty(), cfg, tokenizer)
        empty = add_derived(fmt.frame).clear()
        empty = empty if keep_text else empty.drop("text")
    base = pl.concat(light) if light else pl.DataFrame(schema={"record_id": pl.String, "source_file": pl.String,
                                                               "n_tokens": pl.Int64})
    fmt_light = formatting.FormatResult(empty.clear(), pl.concat(dropped) if dropped else
                                        pl.DataFrame(schema={"record_id": pl.String, "reason": pl.String}),
                                        rep, cfg, tokenizer)
    timings["format"] = time.perf_counter() - t

    # split, the subsets a `where` on split picks, targets and mixtures on the light frame
    t = time.perf_counter()
    split = assign_split(base, spec.validation, seed)
    base = base.join(split, on="record_id", how="left", maintain_order="left").with_row_index("_row").with_columns(
        pl.col("_row").cast(pl.Int64))
    build = StreamBuild(spec, seed, data, {}, base, {}, fmt_light, report, note, removed, timings, spill=spill,
                        rows_file=sink.path, empty=empty, batch_rows=batch_rows, masks=masks)
    if later:
        cols: dict[str, list[pl.Series]] = {masks[n]: [] for n in later}
        for o, b in build._batches():
            b = b.with_columns(base["split"].slice(o, b.height))
            for n in later:
                cols[masks[n]].append(subset_mask(b, specs[n]).alias(masks[n]))
        base = base.with_columns([pl.concat(v) if v else pl.Series(k, [], dtype=pl.Boolean) for k, v in cols.items()])
        build.base = base
    timings["split"] = time.perf_counter() - t

    def pick(s: SubsetSpec) -> pl.DataFrame:
        return base.filter(pl.col(masks[s.name])).select("record_id", "split", "n_tokens", "_row")

    def shape(fr: pl.DataFrame) -> pl.DataFrame:
        return fr.select(LIGHT_TARGET_COLUMNS)

    build.targets, build.skipped = make_targets(spec, seed, base.height, pick, shape, timings)
    return build


def _where_columns(s: SubsetSpec) -> set[str]:
    """The columns a subset's ``where`` reads."""
    return set(where_expr(s.where, s.entry).meta.root_names()) if s.where else set()
