"""The parsed-data cache: Arrow IPC files keyed by the SHA-256 of every input file (plus the parser
version), with a stat index so unchanged files are not re-hashed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import polars as pl
import pyarrow as pa

from cqia_nb.data.schema import PARSER_VERSION


def file_sha(path: Path, raw: bytes, index: dict[str, Any]) -> str:
    st = path.stat()
    key = str(path.resolve())
    hit = index.get(key)
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    digest = hashlib.sha256(raw).hexdigest()
    index[key] = [st.st_size, st.st_mtime_ns, digest]
    return digest


def stat_sha(path: Path, index: dict[str, Any]) -> str | None:
    """The file's hash from the stat index, without reading it; None when unknown or changed."""
    try:
        st = path.stat()
    except OSError:
        return None
    hit = index.get(str(path.resolve()))
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    return None


def read_index(cdir: Path) -> dict[str, Any]:
    try:
        return json.loads((cdir / "stat-index.json").read_text())
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_index(cdir: Path, index: dict[str, Any]) -> None:
    _atomic_write(cdir / "stat-index.json", lambda p: p.write_text(json.dumps(index)))


def combined_key(items: Iterable[tuple[str, str, str]]) -> str:
    h = hashlib.sha256(f"cqia-nb parser {PARSER_VERSION}\n".encode())
    for rel, config, sha in items:
        h.update(f"{rel}\t{config}\t{sha}\n".encode())
    return h.hexdigest()[:32]


def _cache_paths(cdir: Path, key: str) -> dict[str, Path]:
    return {n: cdir / f"{key}.{n}.arrow" for n in ("records", "problems", "files")}


def cache_get(cdir: Path, key: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None:
    paths = _cache_paths(cdir, key)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        # Uncompressed Arrow IPC, memory-mapped: zero-copy, like `datasets`' own cache.
        return tuple(pl.from_arrow(pa.ipc.open_file(pa.memory_map(str(paths[n]))).read_all())  # type: ignore[misc]
                     for n in ("records", "problems", "files"))
    except Exception:  # a damaged cache entry is rebuilt, never trusted
        return None


def _write_arrow(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def cache_put(cdir: Path, key: str, tables: tuple[pa.Table, pa.Table, pa.Table]) -> None:
    # Written from Arrow directly: polars' IPC writer converts string views and is ~3x slower.
    cdir.mkdir(parents=True, exist_ok=True)
    for (name, path), table in zip(_cache_paths(cdir, key).items(), tables):
        _atomic_write(path, lambda p, t=table: _write_arrow(p, t))
