"""Append-only JSON Lines logs: atomic appends under an advisory lock, and a reader that skips
(and names) lines it cannot read. The review decisions, pairwise votes and results store use it."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cqia_nb.core.atomic import atomic_file


def json_object(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """One log line's bytes as a JSON object: ``(obj, "")``, or ``(None, why)`` when it is not UTF-8,
    not JSON, or not an object."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    return obj, ""


def json_lines(text: str, path: str | Path, error: type[Exception] = ValueError,
               hint: str = "") -> list[tuple[int, Any]]:
    """``(line, value)`` for each non-blank line of JSON Lines ``text``. Lines are split on "\n"
    only (COIG-CQIA text holds raw U+2028, which ``str.splitlines`` would split on). A line that is
    not JSON raises ``error`` naming ``path:line``, the column, and then ``hint``."""
    out = []
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line)))
        except json.JSONDecodeError as e:
            raise error(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno}){hint}") from None
    return out


#: Compressed JSON Lines read directly, as ``datasets`` does: suffix -> format.
COMPRESSED_SUFFIXES = {".gz": "gzip", ".zst": "zstd"}
_MAGIC = {b"\x1f\x8b": ("gzip", "1f 8b", ".gz"), b"\x28\xb5\x2f\xfd": ("zstd", "28 b5 2f fd", ".zst")}


class CompressedDataError(ValueError):
    """A compressed data file that cannot be decompressed here (damaged, or zstandard missing)."""


def data_name(path: str | Path) -> str:
    """The file name without a compression suffix: ``a.jsonl.gz`` -> ``a.jsonl``."""
    name = Path(path).name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def compressed_bytes_hint(raw: bytes, path: str | Path = "") -> str | None:
    """What to do about compressed bytes in a file not named so (``None`` when ``raw`` is not compressed)."""
    for magic, (fmt, shown, suffix) in _MAGIC.items():
        if raw.startswith(magic):
            stem = data_name(path) if path else ""
            ext = Path(stem).suffix or ".jsonl"
            return f"{fmt}-compressed bytes (magic {shown}): name the file {ext}{suffix} or decompress it"
    return None


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def decompress(raw: bytes, path: str | Path) -> bytes:
    """``raw`` decompressed as the name of ``path`` says (``.gz``, ``.zst``), else as it is.
    Raises :class:`CompressedDataError` naming the file when that is not possible."""
    fmt = COMPRESSED_SUFFIXES.get(Path(path).suffix)
    if fmt == "gzip":
        import gzip
        import zlib

        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CompressedDataError(f"not valid gzip data ({e}): download the file again, or "
                                      "remove the .gz suffix if it is not compressed") from None
    if fmt == "zstd":
        try:
            import zstandard
        except ImportError:
            raise CompressedDataError("a .zst file needs the zstandard package to be read: pip install "
                                      "zstandard (or decompress it: zstd -d FILE)") from None
        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        except zstandard.ZstdError as e:
            raise CompressedDataError(f"not valid zstd data ({e}): download the file again, or "
                                      "remove the .zst suffix if it is not compressed") from None
    return raw


class LogLineWarning(UserWarning):
    """A line of an append-only log could not be read and was skipped (the file is left as it is)."""


def read_log(path: str | Path, parse_line: Callable[[bytes], tuple[dict[str, Any] | None, str]],
             what: str, warn: bool = True) -> list[dict[str, Any]]:
    """Every readable entry of a log, in file order, each with its 1-based ``line``.

    ``parse_line`` turns a line's bytes into ``(entry, "")`` or ``(None, why)``; ``what`` names an
    entry in warnings. Unreadable lines are skipped with a :class:`LogLineWarning`
    ("<file>:<line>: ..."). A missing file is an empty log.
    """
    parse = parse_line
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        entry, why = parse(raw)
        if entry is None:
            if warn:
                torn = i == len(lines) and not data.endswith(b"\n")
                warnings.warn(f"{p}:{i}: skipping unreadable {what}{' (torn last line)' if torn else ''}: "
                              f"{why}; the line is left in the file as it is", LogLineWarning, stacklevel=3)
            continue
        entry["line"] = i
        out.append(entry)
    return out


@contextmanager
def locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; os.replace is still atomic
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append_lines(path: str | Path, entries: Sequence[dict[str, Any]]) -> None:
    """Add JSON lines to an append-only log atomically, all or none (``core.atomic.atomic_file``:
    temp file + fsync + os.replace, under the log's advisory lock). Shared by the review, pairwise-vote and
    results logs."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = b"".join(json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in entries)
    with locked(p):
        try:
            old = p.read_bytes()
        except FileNotFoundError:
            old = b""
        if old and not old.endswith(b"\n"):
            old += b"\n"  # never glue a decision to a torn last line
        with atomic_file(p, "wb", fsync=True) as fh:
            fh.write(old)
            fh.write(line)
