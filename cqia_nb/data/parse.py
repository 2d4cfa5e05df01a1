"""Parsing and validating JSON Lines bytes: a fast Arrow path for clean files, a careful per-line path
that names the file, line and field of every problem."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from cqia_nb.core.jsonl import compressed_bytes_hint
from cqia_nb.data.schema import ARROW_TYPES, LFS_PREFIX, RECORD_FIELDS, SCHEMA

_TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "list",
               dict: "object", type(None): "null"}


def _tname(v: Any) -> str:
    return _TYPE_NAMES.get(type(v), type(v).__name__)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


#: What a missing or null optional field is loaded as (counted as a normalisation, never silent).
EMPTY_VALUES: dict[str, Any] = {"input": "", "task_type": {"major": [], "minor": []}, "domain": [],
                                "metadata": "", "answer_from": "", "human_verified": False, "copyright": ""}
#: Fields without which a record is rejected: the text it is about.
REQUIRED_TEXT = ("instruction", "output")


def _empty(name: str) -> Any:
    v = EMPTY_VALUES[name]
    return {k: list(x) for k, x in v.items()} if isinstance(v, dict) else (list(v) if isinstance(v, list) else v)


def check_record(rec: Any) -> tuple[Any, list[tuple[str, str]], list[tuple[str, str]]]:
    """``(record, problems, normalised)`` for one parsed record.

    ``problems`` are (field, message) pairs: the record is rejected when there are any. Only a record
    without usable instruction or output text (missing, null, not a string) or with a field of the
    wrong type is rejected. A missing or null optional field (``input``, ``task_type`` and its
    ``major``/``minor``, ``domain``, ``metadata``, ``answer_from``, ``human_verified``,
    ``copyright``) is loaded as its empty value (``EMPTY_VALUES``) and listed in ``normalised`` as
    (field, "missing" | "null"); ``record`` is then a filled copy.
    """
    if not isinstance(rec, dict):
        return rec, [("-", f"expected a JSON object per line, got {_tname(rec)}: "
                           "write one record object per line")], []
    out: list[tuple[str, str]] = []
    fixed: list[tuple[str, str]] = []
    filled: dict[str, Any] = {}
    for name, kind in RECORD_FIELDS.items():
        v = rec.get(name)
        if v is None:
            how = "missing" if name not in rec else "null"
            if name in REQUIRED_TEXT:
                out.append((name, f"no {name} text ({how}): a record needs its instruction and output; "
                                  "fix or remove this line"))
            else:
                fixed.append((name, how))
                filled[name] = _empty(name)
            continue
        if kind == "str":
            if not isinstance(v, str):
                out.append((name, f"expected a string, got {_tname(v)} {_short(v)}"))
        elif kind == "bool":
            if not isinstance(v, bool):
                out.append((name, f"expected true or false, got {_tname(v)} {_short(v)}"))
        elif kind == "list[str]":
            if not _str_list(v):
                out.append((name, f"expected a list of strings, got {_short(v)}"))
        else:  # task_type
            if not isinstance(v, dict):
                out.append((name, f'expected an object {{"major": [...], "minor": [...]}}, '
                                  f"got {_tname(v)} {_short(v)}"))
                continue
            tt = None
            for sub in ("major", "minor"):
                x = v.get(sub)
                if x is None:
                    fixed.append((f"{name}.{sub}", "missing" if sub not in v else "null"))
                    tt = tt if tt is not None else dict(v)
                    tt[sub] = []
                elif not _str_list(x):
                    out.append((f"{name}.{sub}", f"expected a list of strings, got {_short(x)}"))
            if tt is not None:
                filled[name] = tt
    if filled and not out:
        rec = {**rec, **filled}
    return rec, out, fixed


def validate_record(rec: Any) -> list[tuple[str, str]]:
    """Problems of one parsed record as (field, message) pairs; empty when it loads (see ``check_record``)."""
    return check_record(rec)[1]


def empty_value_text(field: str) -> str:
    """How a normalised field is loaded, for messages: ``""``, ``[]``, ``false``, ..."""
    v = EMPTY_VALUES.get(field.split(".")[0])
    return "[]" if "." in field else json.dumps(v, ensure_ascii=False)


def _short(v: Any, n: int = 40) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[: n - 1] + "…"


def excerpt(raw: bytes | str, n: int = 120) -> str:
    s = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return s if len(s) <= n else s[:n] + "…"


def _decode_hint(err: UnicodeDecodeError, raw: bytes) -> str:
    col = err.start + 1
    guess = ""
    for enc in ("gb18030", "big5"):
        try:
            raw.decode(enc)
            guess = f" (it decodes as {enc.upper()})"
            break
        except UnicodeDecodeError:
            pass
    enc = "GB18030" if "GB18030" in guess else ("BIG5" if guess else "<encoding>")
    return (f"not UTF-8: byte 0x{raw[err.start]:02x} at column {col}{guess}; re-encode the file, "
            f"e.g. iconv -f {enc} -t UTF-8 in.jsonl > out.jsonl")


class Columns:
    """Column-wise accumulator: faster than building a frame from a list of dicts."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {k: [] for k in SCHEMA if k not in ("record_id", "config", "source_file")}

    def add(self, line: int, rec: dict[str, Any]) -> None:
        c = self.cols
        c["line"].append(line)
        c["instruction"].append(rec["instruction"])
        c["input"].append(rec["input"])
        c["output"].append(rec["output"])
        tt = rec["task_type"]
        c["task_type_major"].append(tt["major"])
        c["task_type_minor"].append(tt["minor"])
        c["domain"].append(rec["domain"])
        c["metadata"].append(rec["metadata"])
        c["answer_from"].append(rec["answer_from"])
        c["human_verified"].append(rec["human_verified"])
        c["copyright"].append(rec["copyright"])
        extra = {k: v for k, v in rec.items() if k not in RECORD_FIELDS}
        if len(tt) > 2:
            extra["task_type"] = {k: v for k, v in tt.items() if k not in ("major", "minor")}
        c["extra"].append(json.dumps(extra, ensure_ascii=False) if extra else "")

    def table(self) -> pa.Table:
        # pyarrow builds list<string> columns in C++; polars' Python-list path is ~20x slower here.
        return pa.table([pa.array(self.cols[c], type=ARROW_TYPES[c]) for c in _BODY_COLUMNS],
                        schema=_BODY_SCHEMA)


@dataclass
class FileResult:
    table: pa.Table
    problems: list[tuple[int, str, str, str]] = field(default_factory=list)  # line, field, msg, excerpt
    status: str = "ok"
    records_read: int = 0
    rejected: int = 0
    normalized: int = 0  # records loaded with missing/null optional fields filled
    notes: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (field, how) -> [records, first line]

    def note(self, line: int, fixed: list[tuple[str, str]]) -> None:
        self.normalized += 1
        for key in fixed:
            hit = self.notes.get(key)
            if hit is None:
                self.notes[key] = [1, line]
            else:
                hit[0] += 1


def _is_json_array_file(raw: bytes) -> bool:
    """A whole-file JSON array of objects (a common mix-up with JSON Lines)."""
    if raw.lstrip().split(b"\n", 1)[0].strip() == b"[":
        return True
    try:
        v = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def parse_jsonl_bytes(raw: bytes) -> FileResult:
    """Parse and validate JSON Lines content; file-level states become one problem on line 1."""
    res = FileResult(table=empty_body())
    if raw.startswith(LFS_PREFIX):
        info = dict(l.split(" ", 1) for l in raw.decode("utf-8", "replace").splitlines() if " " in l)
        size = info.get("size", "?")
        size = f"{int(size):,}" if size.isdigit() else size
        res.status = "lfs-pointer"
        res.problems.append((1, "-", f"Git LFS pointer, not data ({info.get('oid', 'oid ?')}, {size} bytes): "
                                     "run `git lfs pull` in the dataset clone, or load this config from the hub",
                             excerpt(raw)))
        return res
    if not raw or raw.isspace():  # == not raw.strip(), without copying the file
        res.status = "empty"
        res.problems.append((1, "-", "empty file: it holds no records; remove it or download it again", ""))
        return res
    compressed = compressed_bytes_hint(raw)
    if compressed:
        res.status = "compressed"
        res.problems.append((1, "-", compressed, ""))
        return res
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 BOM is harmless: accept it
    first = _LEADING_WS.match(raw).end()  # type: ignore[union-attr]  # == len(raw) - len(raw.lstrip())
    if raw[first:first + 1] == b"[" and _is_json_array_file(raw):
        res.status = "json-array"
        res.problems.append((1, "-", "a JSON array, not JSON Lines: write one record object per line "
                                     "(e.g. jq -c '.[]' in.json > out.jsonl)", excerpt(raw)))
        return res
    fast = _parse_fast(raw)
    if fast is not None:
        res.table, res.records_read = fast, fast.num_rows
        return res
    cols = Columns()
    loads = orjson.loads
    # Split on \n only: records hold raw U+2028 that str.splitlines() would break on.
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        res.records_read += 1
        try:
            rec = loads(line)
        except orjson.JSONDecodeError as e:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as ue:
                res.problems.append((lineno, "-", _decode_hint(ue, line), excerpt(line)))
            else:
                res.problems.append((lineno, "-", f"malformed JSON ({e}): fix or remove this line",
                                     excerpt(line)))
            res.rejected += 1
            continue
        rec, bad, fixed = check_record(rec)
        if bad:
            res.rejected += 1
            for fname, msg in bad:
                res.problems.append((lineno, fname, msg, excerpt(line)))
            continue
        if fixed:
            res.note(lineno, fixed)
        cols.add(lineno, rec)
    res.table = cols.table()
    return res


_LIST = pa.list_(pa.large_string())
_JSON_SCHEMA = pa.schema([
    ("instruction", pa.large_string()), ("input", pa.large_string()), ("output", pa.large_string()),
    ("task_type", pa.struct([("major", _LIST), ("minor", _LIST)])), ("domain", _LIST),
    ("metadata", pa.large_string()), ("answer_from", pa.large_string()),
    ("human_verified", pa.bool_()), ("copyright", pa.large_string()),
])
_BODY_COLUMNS = [c for c in SCHEMA if c not in ("record_id", "config", "source_file")]
_BODY_SCHEMA = pa.schema([(c, ARROW_TYPES[c]) for c in _BODY_COLUMNS])


_LEADING_WS = re.compile(rb"[ \t\n\r\x0b\x0c]*")  # bytes.strip()'s whitespace
_EMPTY_BODY: pa.Table | None = None


def empty_body() -> pa.Table:
    """The body table with no rows (built from ``pa.nulls``: ``pa.array(list)`` imports pandas, a
    second of start-up on a first load)."""
    global _EMPTY_BODY
    if _EMPTY_BODY is None:
        _EMPTY_BODY = pa.Table.from_arrays([pa.nulls(0, f.type) for f in _BODY_SCHEMA], schema=_BODY_SCHEMA)
    return _EMPTY_BODY


class _ArrowStream:
    """Hands a pyarrow table to polars through the Arrow C stream interface: zero-copy and no
    rechunk (``pl.DataFrame(table)`` rechunks, i.e. copies; ``pl.from_arrow`` imports
    pyarrow.compute, 0.3 s of CPU on every fresh start)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self.table.__arrow_c_stream__(requested_schema)


def arrow_frame(table: pa.Table) -> pl.DataFrame:
    """A polars frame over ``table``'s buffers (string views and memory maps are not copied)."""
    return pl.DataFrame(_ArrowStream(table))


def _utf8_newlines(raw: bytes) -> int | None:
    """Newlines in ``raw``, or None when it is not valid UTF-8, without copying the bytes: polars'
    SIMD UTF-8 validator (~6 GB/s) and numpy's byte compare in 1 MiB steps (~5 GB/s; bytes.count
    is ~1.8). The full Arrow table validation used before cost more than the JSON parse itself.
    Equivalent for the fast path: Arrow's JSON reader rejects lone surrogate escapes itself, so a
    table parsed from valid UTF-8 bytes holds valid UTF-8 strings, and invalid bytes anywhere
    either make the parse fail or would land in a string column (both: careful path)."""
    # Slices of ~4 MiB ending on newlines (ASCII, so never inside a character) as binary views:
    # length, 4-byte prefix, buffer 0, offset (with one view per file polars copies the bytes).
    cuts, pos, step = [0], 0, 1 << 22
    while len(raw) - pos > step:
        nl = raw.find(b"\n", pos + step)
        if nl < 0:
            break
        pos = nl + 1
        cuts.append(pos)
    cuts.append(len(raw))
    views = b"".join(struct.pack("<i4sii", b - a, raw[a:a + 4], 0, a) if b - a > 12
                     else struct.pack("<i12s", b - a, raw[a:b]) for a, b in zip(cuts, cuts[1:]))
    arr = pa.Array.from_buffers(pa.binary_view(), len(cuts) - 1, [None, pa.py_buffer(views), pa.py_buffer(raw)])
    try:
        arrow_frame(pa.Table.from_arrays([arr], names=["raw"])).to_series().cast(pl.String)
    except pl.exceptions.PolarsError:
        return None
    u8 = np.frombuffer(raw, np.uint8)
    step = 1 << 20
    return sum(int(np.count_nonzero(u8[i:i + step] == 10)) for i in range(0, len(u8), step))


def _block_size(n: int) -> int:
    """Blocks Arrow's reader parses in parallel: at least 2 for files over 512 KiB (its default,
    1 MiB, leaves most CQIA files to one thread), at most 1 MiB."""
    return min(1 << 20, max(256 << 10, n // 16))


def _read_json(raw: bytes, block_size: int) -> pa.Table:
    import pyarrow.json as pj

    # The system allocator, not Arrow's default mimalloc pool: mimalloc keeps what the reader's
    # worker threads freed in their own heaps (release_unused only reaches the caller's), so file
    # after file the process kept ~100 MB it no longer used at 10x the data (the peak RSS gap).
    return pj.read_json(pa.py_buffer(raw), read_options=pj.ReadOptions(block_size=block_size),
                        parse_options=pj.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="error"),
                        memory_pool=pa.system_memory_pool())


def _to_large_list(ch: pa.ListArray) -> pa.LargeListArray:
    """list<large_string> -> large_list<large_string> for an array without nulls: offsets widened
    with numpy, values shared (the reader cannot produce large_list; a cast imports pyarrow.compute)."""
    off = np.frombuffer(ch.buffers()[1], np.int32, count=len(ch) + 1, offset=ch.offset * 4).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.Array.from_buffers(pa.int64(), len(off), [None, pa.py_buffer(off)]),
                                         ch.values)


def _parse_fast(raw: bytes) -> pa.Table | None:
    """Arrow's C++ JSON reader for files that are entirely valid; None sends the file to the
    line-by-line path, which finds and words every problem. Both paths give identical tables."""
    # Arrow's reader passes invalid UTF-8 through: check the bytes first (cheaply).
    newlines = _utf8_newlines(raw)
    if newlines is None:
        return None
    try:
        table = _read_json(raw, _block_size(len(raw)))
    except pa.ArrowInvalid as e:
        if "straddling" not in str(e):
            return None
        try:  # a record longer than a block: one block for the whole file
            table = _read_json(raw, len(raw) + 1)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    except pa.ArrowNotImplementedError:
        return None
    n = table.num_rows
    # == (raw without one final newline).count(b"\n") + 1, without copying the file
    if n != newlines - raw.endswith(b"\n") + 1:
        return None  # blank lines in between: line numbers need the careful path
    # Missing keys arrive as nulls (and [null] inside lists): only the careful path can name them
    # (and count the normalisations). StructArray.field / ListArray.values instead of
    # pyarrow.compute (0.3 s of CPU to import): with no null struct, field(i) == struct_field; the
    # nulls among a list's values are a superset of its flattened slice's, so the check can only
    # send more files to the careful path, never fewer.
    tt = table.column("task_type")
    if tt.null_count:
        return None
    cols = {c: table.column(c) for c in table.column_names if c != "task_type"}
    for i, name in enumerate(("task_type_major", "task_type_minor")):
        cols[name] = pa.chunked_array([ch.field(i) for ch in tt.chunks], type=_LIST)
    if any(c.null_count for c in cols.values()):
        return None
    lists = ("task_type_major", "task_type_minor", "domain")
    if any(ch.values.null_count for c in lists for ch in cols[c].chunks):
        return None
    for c in lists:
        cols[c] = pa.chunked_array([_to_large_list(ch) for ch in cols[c].chunks], type=ARROW_TYPES[c])
    # line = 1..n and extra = "" from buffers (pa.array(range) would import pandas).
    cols["line"] = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(np.arange(1, n + 1, dtype=np.int64))])
    cols["extra"] = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(np.zeros(n + 1, np.int64)),
                                                                  pa.py_buffer(b"")])
    return pa.Table.from_arrays([cols[c] for c in _BODY_COLUMNS], schema=_BODY_SCHEMA)
