"""Lazy sources for the dataset browser: a parquet file or folder (or a polars LazyFrame) larger
than memory, read a chunk at a time.

A source knows its schema and row count up front (for parquet: from the footers only) and reads
one *chunk* on demand: a parquet row group (``pyarrow.parquet.ParquetFile.read_row_group``, only
the columns asked for), or a fixed slice of a LazyFrame. :class:`MatchScan` runs a filter as a
scan over the chunks, reading only the columns the filter uses and stopping as soon as it has the
matches a page needs; it remembers how many rows matched in each chunk scanned (a few integers),
so a page of matches re-reads only the chunks that hold it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import polars as pl

#: Rows per chunk of a LazyFrame that is not a parquet scan.
LAZYFRAME_CHUNK_ROWS = 65_536


class LazySource:
    """Rows read a chunk at a time; ``reads`` logs every chunk read as ``(chunk, columns)``."""

    _raw_schema: pl.Schema

    schema: pl.Schema
    height: int
    n_chunks: int
    chunk_starts: list[int]  # first row of each chunk, plus ``height`` at the end
    what: str = "chunks"  # what a chunk is called in the status line

    def __init__(self) -> None:
        self.reads: list[tuple[int, tuple[str, ...] | None]] = []
        # Applied to every chunk read and to lazy(): takes a DataFrame or a LazyFrame.
        self.post: Callable = lambda df: df

    def _read(self, i: int, columns: Sequence[str] | None) -> pl.DataFrame:
        raise NotImplementedError

    def _raw_columns(self, columns: Sequence[str] | None) -> list[str] | None:
        """``columns`` as stored: those derived by ``post`` (task_type_major/minor) come from ``task_type``."""
        if columns is None:
            return None
        raw = self._raw_schema
        out = [c for c in columns if c in raw]
        if any(c not in raw for c in columns) and "task_type" in raw and "task_type" not in out:
            out.append("task_type")
        return out

    def read_chunk(self, i: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Rows of chunk ``i`` (``columns`` only, when given; ``post`` applied, e.g. unpacking task_type)."""
        self.reads.append((i, None if columns is None else tuple(columns)))
        return self.post(self._read(i, columns))

    def rows(self, start: int, n: int) -> pl.DataFrame:
        """Rows ``start .. start+n`` of the source, reading only the chunks that hold them."""
        start = max(0, min(start, self.height))
        stop = min(self.height, start + max(0, n))
        parts = []
        for i in range(self.n_chunks):
            lo, hi = self.chunk_starts[i], self.chunk_starts[i + 1]
            if hi <= start or hi == lo:
                continue
            if lo >= stop:
                break
            part = self.read_chunk(i)
            parts.append(part.slice(max(0, start - lo), min(hi, stop) - max(lo, start)))
        if not parts:
            return self.empty()
        return pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)

    def lazy(self) -> pl.LazyFrame:
        """The whole source as a polars LazyFrame (nothing is read until it is collected)."""
        raise NotImplementedError

    def distinct(self, groups: dict[str, Sequence[str]]) -> dict[str, list[str]]:
        """Per group: sorted distinct non-null values of its (small, label) columns.

        One streaming projection scan for every group together (only those columns are read).
        """
        lf = self.lazy()
        queries, keys = [], []
        for key, names in groups.items():
            parts = []
            for name in names:
                if name not in self.schema:
                    continue
                col = pl.col(name)
                if isinstance(self.schema[name], pl.List):
                    col = col.explode()
                parts.append(lf.select(col.cast(pl.String).drop_nulls().unique().alias("v")))
            if parts:
                queries.append(pl.concat(parts).unique().sort("v"))
                keys.append(key)
        out: dict[str, list[str]] = {key: [] for key in groups}
        for key, frame in zip(keys, pl.collect_all(queries, engine="streaming")):
            out[key] = frame["v"].to_list()
        return out


class ParquetSource(LazySource):
    """One parquet file or a folder of parquet shards (``*.parquet``, sorted by name); a chunk is a row group."""

    what = "row groups"

    def __init__(self, paths: Sequence[Path], post: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> None:
        import pyarrow.parquet as pq

        super().__init__()
        if not paths:
            raise ValueError("no parquet files to browse")
        self.paths = [Path(p) for p in paths]
        self._meta = [pq.read_metadata(p) for p in self.paths]  # footers only
        schemas = [m.schema.to_arrow_schema() for m in self._meta]
        for p, s in zip(self.paths[1:], schemas[1:]):
            if not s.equals(schemas[0], check_metadata=False):
                raise ValueError(f"{p}: its columns differ from {self.paths[0]}'s; the shards of a folder "
                                 "must share one schema")
        if post is not None:
            self.post = post
        self.schema = self.post(pl.from_arrow(schemas[0].empty_table())).schema  # type: ignore[union-attr]
        self._raw_schema = pl.from_arrow(schemas[0].empty_table()).schema  # type: ignore[union-attr]
        self.groups: list[tuple[int, int]] = []  # (file index, row group index) per chunk
        self.chunk_starts = [0]
        for f, m in enumerate(self._meta):
            for g in range(m.num_row_groups):
                self.groups.append((f, g))
                self.chunk_starts.append(self.chunk_starts[-1] + m.row_group(g).num_rows)
        self.n_chunks = len(self.groups)
        self.height = self.chunk_starts[-1]
        self._files: dict[int, object] = {}

    def _file(self, f: int):  # noqa: ANN202
        import pyarrow.parquet as pq

        if f not in self._files:
            self._files[f] = pq.ParquetFile(self.paths[f], metadata=self._meta[f])
        return self._files[f]

    def _read(self, i: int, columns: Sequence[str] | None) -> pl.DataFrame:
        f, g = self.groups[i]
        cols = self._raw_columns(columns)
        table = self._file(f).read_row_group(g, columns=cols)
        return pl.from_arrow(table)  # type: ignore[return-value]

    def lazy(self) -> pl.LazyFrame:
        return self.post(pl.scan_parquet([str(p) for p in self.paths]))


class LazyFrameSource(LazySource):
    """A polars LazyFrame; a chunk is a slice of :data:`LAZYFRAME_CHUNK_ROWS` rows.

    The row count is one streaming ``pl.len()`` query (metadata only for a parquet scan).
    """

    what = "chunks"

    def __init__(self, lf: pl.LazyFrame, chunk_rows: int = LAZYFRAME_CHUNK_ROWS,
                 post: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> None:
        super().__init__()
        if post is not None:
            self.post = post
        self._lf = lf
        self._raw_schema = lf.collect_schema()
        self.schema = self.post(pl.DataFrame(schema=self._raw_schema)).schema
        self.height = int(lf.select(pl.len()).collect(engine="streaming").item())
        self.chunk_rows = chunk_rows
        self.n_chunks = -(-self.height // chunk_rows)
        self.chunk_starts = [min(i * chunk_rows, self.height) for i in range(self.n_chunks + 1)]

    def _read(self, i: int, columns: Sequence[str] | None) -> pl.DataFrame:
        lf = self._lf if columns is None else self._lf.select(self._raw_columns(columns))
        return lf.slice(self.chunk_starts[i], self.chunk_rows).collect(engine="streaming")

    def lazy(self) -> pl.LazyFrame:
        return self.post(self._lf)


@dataclass
class MatchScan:
    """A filter run over a source chunk by chunk; ``counts[i]`` = rows of chunk i that match."""

    source: LazySource
    predicate: pl.Expr
    columns: tuple[str, ...]
    counts: list[int] = field(default_factory=list)

    @property
    def scanned(self) -> int:
        return len(self.counts)

    @property
    def done(self) -> bool:
        return self.scanned >= self.source.n_chunks

    @property
    def found(self) -> int:
        return sum(self.counts)

    def ensure(self, n_matches: int, progress: Callable[[int], None] | None = None) -> None:
        """Scan on until ``n_matches`` rows matched or the source ends (filter columns only)."""
        while not self.done and self.found < n_matches:
            chunk = self.source.read_chunk(self.scanned, self.columns)
            self.counts.append(int(chunk.select(self.predicate.sum()).item() or 0) if chunk.height else 0)
            if progress is not None:
                progress(self.scanned)

    def rows(self, start: int, n: int) -> pl.DataFrame:
        """Matches ``start .. start+n`` (of those found so far), re-reading only the chunks that hold them."""
        parts, seen = [], 0
        for i, c in enumerate(self.counts):
            if seen + c > start and c:
                chunk = self.source.read_chunk(i).filter(self.predicate)
                parts.append(chunk.slice(max(0, start - seen), start + n - max(seen, start)))
            seen += c
            if seen >= start + n:
                break
        if not parts:
            return self.source.empty()
        return pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]


def parquet_paths(path: Path) -> list[Path]:
    """A parquet file, or the ``*.parquet`` files under a folder (recursively, sorted)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*.parquet") if p.is_file())
    return [path]
