"""The parsed-data cache: Arrow IPC files keyed by the SHA-256 of every input file (plus the parser
version), with a stat index (size, mtime, inode, ctime) so unchanged files are not re-hashed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import polars as pl
import pyarrow as pa

from cqia_nb.core.atomic import atomic_file, write_text
from cqia_nb.data.schema import PARSER_VERSION


def stat_key(st: os.stat_result) -> list[int]:
    """What must be unchanged for a file's hash to be reused: size, mtime, inode and ctime (ns).
    Size and mtime alone can be restored after the bytes change (``os.utime``, ``cp -p``, ``rsync -t``);
    ctime cannot (the kernel sets it on every write and every ``utime``), and a file replaced by
    another has a new inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def file_sha(path: Path, raw: bytes, index: dict[str, Any]) -> str:
    key = str(path.resolve())
    st = stat_key(path.stat())
    hit = index.get(key)
    if hit and hit[:-1] == st:
        return hit[-1]
    digest = hashlib.sha256(raw).hexdigest()
    index[key] = [*st, digest]
    return digest


def stat_sha(path: Path, index: dict[str, Any]) -> str | None:
    """The file's hash from the stat index, without reading it; None when unknown or changed."""
    try:
        st = stat_key(path.stat())
    except OSError:
        return None
    hit = index.get(str(path.resolve()))
    if hit and hit[:-1] == st:
        return hit[-1]
    return None


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
        # Uncompressed Arrow IPC, memory-mapped: zero-copy, like `datasets`' own cache.
        return {n: pl.from_arrow(pa.ipc.open_file(pa.memory_map(str(paths[n]))).read_all())  # type: ignore[misc]
                for n in CACHED_TABLES}
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
