"""The parsed-data cache: Arrow IPC files keyed by the SHA-256 of every input file (plus the parser
version), with a stat index (size, mtime, inode, ctime) so unchanged files are not re-hashed.

Records are stored with string views (polars' own layout), so a memory-mapped entry becomes a
polars frame without a copy; a cold load streams each file's records into the entry as it goes
(:class:`RecordsWriter`) and returns that memory-mapped entry, as a warm load does."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable

import polars as pl
import pyarrow as pa

from cqia_nb.core.atomic import atomic_file, write_text
from cqia_nb.data.parse import arrow_frame
from cqia_nb.data.schema import PARSER_VERSION, SCHEMA


def stat_key(st: os.stat_result) -> list[int]:
    """What must be unchanged for a file's hash to be reused: size, mtime, inode and ctime (ns).
    Size and mtime alone can be restored after the bytes change (``os.utime``, ``cp -p``, ``rsync -t``);
    ctime cannot (the kernel sets it on every write and every ``utime``), and a file replaced by
    another has a new inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def index_key(path: Path, dirs: dict[Path, str] | None = None) -> str:
    """The stat index's key for ``path``: ``str(path.resolve())``. With ``dirs`` (a dict kept for one
    load) each folder is resolved once, a quarter of a warm load's time otherwise: a file that is not
    a symlink resolves to its folder, resolved, plus its name."""
    if dirs is None or path.is_symlink():
        return str(path.resolve())
    parent = dirs.get(path.parent)
    if parent is None:
        parent = dirs[path.parent] = str(path.parent.resolve())
    return os.path.join(parent, path.name)


def file_sha(path: Path, raw: bytes, index: dict[str, Any], dirs: dict[Path, str] | None = None) -> str:
    """SHA-256 of ``raw`` (the bytes of ``path``), taken from the stat index when unchanged; remembered."""
    key = index_key(path, dirs)
    st = stat_key(path.stat())
    hit = index.get(key)
    if hit and hit[:-1] == st:
        return hit[-1]
    digest = hashlib.sha256(raw).hexdigest()
    index[key] = [*st, digest]
    return digest


def stat_sha(path: Path, index: dict[str, Any], dirs: dict[Path, str] | None = None) -> str | None:
    """The file's hash from the stat index, without reading it; None when unknown or changed."""
    try:
        st = stat_key(path.stat())
    except OSError:
        return None
    hit = index.get(index_key(path, dirs))
    if hit and hit[:-1] == st:
        return hit[-1]
    return None


def remember_sha(path: Path, st: list[int], digest: str, index: dict[str, Any],
                 dirs: dict[Path, str] | None = None) -> None:
    """Record ``digest`` for ``path`` as it was when read (``st``: :func:`stat_key` taken then)."""
    index[index_key(path, dirs)] = [*st, digest]


def read_index(cdir: Path) -> dict[str, Any]:
    try:
        return json.loads((cdir / "stat-index.json").read_text())
    except (OSError, ValueError):
        return {}


def write_index(cdir: Path, index: dict[str, Any]) -> None:
    write_text(cdir / "stat-index.json", json.dumps(index))


def combined_key(items: Iterable[tuple[str, str, str]]) -> str:
    h = hashlib.sha256(f"cqia-nb parser {PARSER_VERSION}\n".encode())
    for rel, config, sha in items:
        h.update(f"{rel}\t{config}\t{sha}\n".encode())
    return h.hexdigest()[:32]


def _cache_paths(cdir: Path, key: str) -> dict[str, Path]:
    return {n: cdir / f"{key}.{n}.arrow" for n in CACHED_TABLES}


#: The tables of one cached load, in ``LoadResult`` order.
CACHED_TABLES = ("records", "problems", "files", "notes")


def cache_get(cdir: Path, key: str) -> dict[str, pl.DataFrame] | None:
    paths = _cache_paths(cdir, key)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        # Uncompressed Arrow IPC, memory-mapped: zero-copy, like `datasets`' own cache (the records'
        # string views come back without a copy: pages are read when used).
        return {n: arrow_frame(pa.ipc.open_file(pa.memory_map(str(paths[n]))).read_all()) for n in CACHED_TABLES}
    except Exception:  # a damaged cache entry is rebuilt, never trusted
        return None


def _write_arrow(path: Path, table: pa.Table) -> None:
    with atomic_file(path, "wb") as fh, pa.ipc.new_file(fh, table.schema) as writer:
        writer.write_table(table)


def cache_put(cdir: Path, key: str, tables: tuple[pa.Table, ...]) -> None:
    # Written from Arrow directly: polars' IPC writer converts string views and is ~3x slower.
    cdir.mkdir(parents=True, exist_ok=True)
    for (name, path), table in zip(_cache_paths(cdir, key).items(), tables):
        _write_arrow(path, table)


def same_listing_cached(cdir: Path, listing: list[tuple[str, str, int]]) -> bool:
    """Whether a cache entry's files table lists exactly these (file, config, bytes): only then can
    hashing every file first find a hit (same bytes imply same sizes), so only then does it pay."""
    for fp in cdir.glob("*.files.arrow"):
        try:
            t = pa.ipc.open_file(pa.memory_map(str(fp))).read_all()
            if list(zip(*(t.column(n).to_pylist() for n in ("file", "config", "bytes")))) == listing:
                return True
        except Exception:  # a damaged entry is no hit
            continue
    return False


class RecordsWriter:
    """Streams per-file record frames into a cache entry's records file (Arrow IPC with string
    views: polars maps it back without copying), so that no whole-dataset copy is held in memory.
    Written to a temporary file (``.records.*.tmp``) renamed into place by :meth:`commit`."""

    def __init__(self, cdir: Path) -> None:
        self.cdir = cdir
        self.tmp = cdir / f".records.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        self.writer: Any = None
        self.sink: Any = None
        self.rows = 0
        self.closed: Path | None = None  # the complete records file, wherever it is now

    def _open(self, schema: pa.Schema) -> None:
        self.cdir.mkdir(parents=True, exist_ok=True)
        self.sink = pa.OSFile(str(self.tmp), "wb")
        self.writer = pa.ipc.new_file(self.sink, schema)

    def write(self, chunk: pl.DataFrame) -> None:
        """Append one file's records (one record batch: a warm load imports batch by batch, and 526
        batches at 10x cost 3x the time of 39; rechunking views copies the 16-byte views, not text)."""
        table = chunk.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
        if self.writer is None:
            self._open(table.schema)
        self.writer.write_table(table)
        self.rows += chunk.height

    def commit(self, key: str, problems: pa.Table, files: pa.Table, notes: pa.Table) -> None:
        """Close the records file, rename it into place, then write the other tables of the entry
        (an entry is complete only when all four exist, see :func:`cache_get`)."""
        if self.writer is None:  # no records at all: an empty table of the frame's schema
            self._open(pl.DataFrame(schema=SCHEMA).to_arrow(compat_level=pl.CompatLevel.newest()).schema)
        self.writer.close()
        self.sink.close()
        self.writer = self.sink = None
        self.closed = self.tmp
        paths = _cache_paths(self.cdir, key)
        os.replace(self.tmp, paths["records"])
        self.closed = paths["records"]
        for name, table in (("problems", problems), ("files", files), ("notes", notes)):
            _write_arrow(paths[name], table)

    def frame(self) -> pl.DataFrame:
        """The records written, memory-mapped (zero-copy)."""
        if self.closed is None:
            raise OSError(f"the records file in {self.cdir} could not be completed")
        return arrow_frame(pa.ipc.open_file(pa.memory_map(str(self.closed))).read_all())

    def abort(self) -> None:
        """Close and remove the temporary file, if any (a mapping of a renamed file stays valid)."""
        try:
            if self.writer is not None:
                self.writer.close()
            if self.sink is not None:
                self.sink.close()
        except Exception:  # closing a half-written file: removing it is what matters
            pass
        self.writer = self.sink = None
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError:
            pass
