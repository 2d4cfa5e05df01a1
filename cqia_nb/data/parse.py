"""Parsing and validating JSON Lines bytes: a fast Arrow path for clean files, a careful per-line path
that names the file, line and field of every problem."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
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
    cols = Columns()
    res = FileResult(table=cols.table())
    if raw.startswith(LFS_PREFIX):
        info = dict(l.split(" ", 1) for l in raw.decode("utf-8", "replace").splitlines() if " " in l)
        size = info.get("size", "?")
        size = f"{int(size):,}" if size.isdigit() else size
        res.status = "lfs-pointer"
        res.problems.append((1, "-", f"Git LFS pointer, not data ({info.get('oid', 'oid ?')}, {size} bytes): "
                                     "run `git lfs pull` in the dataset clone, or load this config from the hub",
                             excerpt(raw)))
        return res
    if not raw.strip():
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
    if raw.lstrip()[:1] == b"[" and _is_json_array_file(raw):
        res.status = "json-array"
        res.problems.append((1, "-", "a JSON array, not JSON Lines: write one record object per line "
                                     "(e.g. jq -c '.[]' in.json > out.jsonl)", excerpt(raw)))
        return res
    fast = _parse_fast(raw)
    if fast is not None:
        res.table, res.records_read = fast, fast.num_rows
        return res
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


def _parse_fast(raw: bytes) -> pa.Table | None:
    """Arrow's C++ JSON reader for files that are entirely valid; None sends the file to the
    line-by-line path, which finds and words every problem. Both paths give identical tables."""
    import pyarrow.compute as pc
    import pyarrow.json as pj

    try:
        table = pj.read_json(
            pa.py_buffer(raw),
            parse_options=pj.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="error"),
        )
        # Arrow's reader passes invalid UTF-8 through; a full validation catches it (cheaply).
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    body = raw[:-1] if raw.endswith(b"\n") else raw
    if table.num_rows != body.count(b"\n") + 1:
        return None  # blank lines in between: line numbers need the careful path
    # Missing keys arrive as nulls (and [null] inside lists): only the slow path can name them.
    tt = table.column("task_type")
    major, minor = pc.struct_field(tt, [0]), pc.struct_field(tt, [1])
    cols = {n: table.column(n) for n in table.column_names if n != "task_type"}
    cols["task_type_major"], cols["task_type_minor"] = major, minor
    if tt.null_count or any(c.null_count for c in cols.values()):
        return None
    if any(pc.list_flatten(cols[c]).null_count for c in ("task_type_major", "task_type_minor", "domain")):
        return None
    cols["line"] = pa.array(range(1, table.num_rows + 1), type=pa.int64())
    cols["extra"] = pa.array([""] * table.num_rows, type=pa.large_string())
    return pa.table([cols[c] for c in _BODY_COLUMNS], schema=_BODY_SCHEMA)
