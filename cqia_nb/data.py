"""Load, validate and cache COIG-CQIA into one polars DataFrame with a fixed schema.

Sources (``LoadConfig.source``): ``"bundled"`` (the miniature we ship in ``data/``), ``"hub"``
(``datasets.load_dataset("m-a-p/COIG-CQIA", config)``), or a path to a JSON Lines file or a folder
in the Hugging Face layout (a clone of m-a-p/COIG-CQIA). ``$CQIA_DATA`` overrides ``"auto"``.

Nothing is dropped silently: every line that is not loaded is one row of ``LoadResult.problems``
(file, 1-based line, field, message), and ``records_read == loaded + rejected`` always holds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import orjson
import polars as pl
import pyarrow as pa

CONFIGS: tuple[str, ...] = (
    "chinese_traditional", "coig_pc", "douban", "exam", "finance", "human_value", "logi_qa",
    "ruozhiba", "segmentfault", "wiki", "wikihow", "xhs", "zhihu",
)
HUB_REPO = "m-a-p/COIG-CQIA"

# Record fields in file order, with what each must be.
RECORD_FIELDS: dict[str, str] = {
    "instruction": "str", "input": "str", "output": "str", "task_type": "task_type",
    "domain": "list[str]", "metadata": "str", "answer_from": "str", "human_verified": "bool",
    "copyright": "str",
}

#: The frame every stage reads and writes. Documented in the README.
SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,        # "<source_file>:<line>", stable across loads and machines
    "config": pl.String,           # HF config name (one of CONFIGS for the real data)
    "source_file": pl.String,      # path relative to the dataset root (or "hub:<repo>/<config>")
    "line": pl.Int64,              # 1-based line in source_file (row number for the hub)
    "instruction": pl.String,
    "input": pl.String,
    "output": pl.String,
    "task_type_major": pl.List(pl.String),
    "task_type_minor": pl.List(pl.String),
    "domain": pl.List(pl.String),
    "metadata": pl.String,
    "answer_from": pl.String,
    "human_verified": pl.Boolean,
    "copyright": pl.String,
    "extra": pl.String,            # JSON of keys outside the schema ("" when none): kept, not lost
}
_ARROW_TYPES: dict[str, pa.DataType] = {
    "line": pa.int64(), "instruction": pa.large_string(), "input": pa.large_string(),
    "output": pa.large_string(), "task_type_major": pa.large_list(pa.large_string()),
    "task_type_minor": pa.large_list(pa.large_string()), "domain": pa.large_list(pa.large_string()),
    "metadata": pa.large_string(), "answer_from": pa.large_string(), "human_verified": pa.bool_(),
    "copyright": pa.large_string(), "extra": pa.large_string(),
}
PROBLEM_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String, "line": pl.Int64, "field": pl.String, "message": pl.String,
    "excerpt": pl.String,
}
FILE_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String, "config": pl.String, "status": pl.String, "bytes": pl.Int64,
    "records_read": pl.Int64, "loaded": pl.Int64, "rejected": pl.Int64, "sha256": pl.String,
}

# Bump when parsing or validation changes so stale caches are never reused.
PARSER_VERSION = "3"
LFS_PREFIX = b"version https://git-lfs.github.com/spec/"
DATA_SUFFIXES = (".jsonl", ".json")


class DataValidationError(ValueError):
    """Raised by the strict policy; carries the problems frame."""

    def __init__(self, message: str, problems: pl.DataFrame):
        super().__init__(message)
        self.problems = problems


class DataQualityWarning(UserWarning):
    """Issued by the default policy when some lines could not be loaded."""


@dataclass(frozen=True)
class LoadConfig:
    """What to load and how strictly.

    source: "auto" ($CQIA_DATA, else "bundled"), "bundled", "hub", or a file/folder path.
    configs: restrict to these HF configs (None: all found).
    policy: "collect" reports bad lines in ``problems`` and warns; "strict" raises.
    """

    source: str = "auto"
    configs: tuple[str, ...] | None = None
    policy: Literal["collect", "strict"] = "collect"
    cache: bool = True
    cache_dir: str | None = None
    hub_repo: str = HUB_REPO
    hub_revision: str | None = None
    progress: bool = False


@dataclass
class LoadResult:
    """The loaded frame plus the full account of what was read."""

    frame: pl.DataFrame
    problems: pl.DataFrame
    files: pl.DataFrame
    source: str
    root: Path | None = None
    from_cache: bool = False

    @property
    def records_read(self) -> int:
        return int(self.files["records_read"].sum())

    @property
    def n_loaded(self) -> int:
        return self.frame.height

    @property
    def n_rejected(self) -> int:
        return int(self.files["rejected"].sum())

    def reconciles(self) -> bool:
        """True when every record read is either loaded or reported."""
        return self.records_read == self.n_loaded + self.n_rejected

    def summary(self) -> str:
        ok = (self.files["status"] == "ok").sum()
        return (f"{self.n_loaded:,} records loaded from {ok} data files; "
                f"{self.n_rejected:,} rejected, {self.problems.height:,} problems "
                f"({self.records_read:,} records read)")


# ----------------------------------------------------------------------------- sources

def project_root() -> Path:
    """The repository root (where ``pyproject.toml`` and ``data/`` live)."""
    return Path(__file__).resolve().parent.parent


def bundled_path() -> Path:
    """The miniature dataset written by this project, in the HF layout."""
    return project_root() / "data" / "coig-cqia-mini"


def resolve_source(source: str = "auto") -> str:
    """Turn "auto" into a concrete source using ``$CQIA_DATA`` (default "bundled")."""
    if source == "auto":
        source = os.environ.get("CQIA_DATA", "").strip() or "bundled"
    return source


def cache_dir(config: LoadConfig | None = None) -> Path:
    """Where parsed data is cached: LoadConfig.cache_dir, $CQIA_CACHE_DIR, or ~/.cache/cqia_nb."""
    if config is not None and config.cache_dir:
        return Path(config.cache_dir)
    if os.environ.get("CQIA_CACHE_DIR"):
        return Path(os.environ["CQIA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cqia_nb"


def read_card_configs(root: Path) -> dict[str, list[str]]:
    """The ``configs:`` block of a dataset card: config name -> data_files globs.

    Entries without data_files (the real card lists "finance" twice, once empty) are skipped.
    """
    readme = root / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if not m:
        return {}
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        meta = yaml.load(m.group(1), Loader=loader) or {}
    except yaml.YAMLError:
        return {}
    out: dict[str, list[str]] = {}
    for entry in meta.get("configs") or []:
        if not isinstance(entry, dict) or not entry.get("data_files"):
            continue
        name = str(entry.get("config_name"))
        files = entry["data_files"]
        globs: list[str] = []
        for item in files if isinstance(files, list) else [files]:
            if isinstance(item, str):
                globs.append(item)
            elif isinstance(item, dict):
                paths = item.get("path")
                globs.extend([paths] if isinstance(paths, str) else list(paths or []))
        out.setdefault(name, []).extend(globs)
    return out


def discover_files(root: Path) -> list[tuple[str, Path]]:
    """(config, file) pairs of a folder in the Hugging Face layout, sorted by relative path.

    Uses the card's ``configs:`` globs when present, else one config per top-level folder.
    Every regular file under a config folder is returned (not only .jsonl) so that nothing is
    skipped without a word: the loader reports unsupported files. JSON Lines files that no
    config claims come back with config "" (the loader reports them, and reads none).
    """
    if root.is_file():
        return [(root.parent.name, root)]
    card = read_card_configs(root)
    rels = {p: p.relative_to(root).as_posix()
            for p in sorted(root.rglob("*")) if p.is_file() and not _hidden(p, root)}
    pairs: dict[Path, str] = {}
    if card:
        for config, globs in card.items():
            for p, rel in rels.items():
                if p not in pairs and any(fnmatch.fnmatchcase(rel, g) for g in globs):
                    pairs[p] = config
        for p, rel in rels.items():
            if p not in pairs and p.suffix == ".jsonl":
                pairs[p] = ""
    else:
        for p, rel in rels.items():
            if "/" in rel:
                pairs[p] = rel.split("/", 1)[0]
            elif p.suffix == ".jsonl":
                pairs[p] = p.stem
    return sorted(((c, p) for p, c in pairs.items()), key=lambda cp: rels[cp[1]])


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


# ----------------------------------------------------------------------------- validation

_TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "list",
               dict: "object", type(None): "null"}


def _tname(v: Any) -> str:
    return _TYPE_NAMES.get(type(v), type(v).__name__)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def validate_record(rec: Any) -> list[tuple[str, str]]:
    """Problems of one parsed record as (field, message) pairs; empty when it is valid."""
    if not isinstance(rec, dict):
        return [("-", f"expected a JSON object per line, got {_tname(rec)}: "
                      "write one record object per line")]
    out: list[tuple[str, str]] = []
    for name, kind in RECORD_FIELDS.items():
        if name not in rec:
            hint = {"str": '""', "list[str]": "[]", "bool": "false",
                    "task_type": '{"major": [], "minor": []}'}[kind]
            out.append((name, f"missing required field: add it ({hint} when unknown)"))
            continue
        v = rec[name]
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
            else:
                for sub in ("major", "minor"):
                    if sub not in v:
                        out.append((f"{name}.{sub}", "missing: add a list of strings ([] when unknown)"))
                    elif not _str_list(v[sub]):
                        out.append((f"{name}.{sub}", f"expected a list of strings, got {_short(v[sub])}"))
    return out


def _short(v: Any, n: int = 40) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[: n - 1] + "…"


def _excerpt(raw: bytes | str, n: int = 120) -> str:
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


class _Columns:
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
        return pa.table([pa.array(self.cols[c], type=_ARROW_TYPES[c]) for c in _BODY_COLUMNS],
                        schema=_BODY_SCHEMA)


@dataclass
class _FileResult:
    table: pa.Table
    problems: list[tuple[int, str, str, str]] = field(default_factory=list)  # line, field, msg, excerpt
    status: str = "ok"
    records_read: int = 0
    rejected: int = 0


def _is_json_array_file(raw: bytes) -> bool:
    """A whole-file JSON array of objects (a common mix-up with JSON Lines)."""
    if raw.lstrip().split(b"\n", 1)[0].strip() == b"[":
        return True
    try:
        v = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def parse_jsonl_bytes(raw: bytes) -> _FileResult:
    """Parse and validate JSON Lines content; file-level states become one problem on line 1."""
    cols = _Columns()
    res = _FileResult(table=cols.table())
    if raw.startswith(LFS_PREFIX):
        info = dict(l.split(" ", 1) for l in raw.decode("utf-8", "replace").splitlines() if " " in l)
        size = info.get("size", "?")
        size = f"{int(size):,}" if size.isdigit() else size
        res.status = "lfs-pointer"
        res.problems.append((1, "-", f"Git LFS pointer, not data ({info.get('oid', 'oid ?')}, {size} bytes): "
                                     "run `git lfs pull` in the dataset clone, or load this config from the hub",
                             _excerpt(raw)))
        return res
    if not raw.strip():
        res.status = "empty"
        res.problems.append((1, "-", "empty file: it holds no records; remove it or download it again", ""))
        return res
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 BOM is harmless: accept it
    if raw.lstrip()[:1] == b"[" and _is_json_array_file(raw):
        res.status = "json-array"
        res.problems.append((1, "-", "a JSON array, not JSON Lines: write one record object per line "
                                     "(e.g. jq -c '.[]' in.json > out.jsonl)", _excerpt(raw)))
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
                res.problems.append((lineno, "-", _decode_hint(ue, line), _excerpt(line)))
            else:
                res.problems.append((lineno, "-", f"malformed JSON ({e}): fix or remove this line",
                                     _excerpt(line)))
            res.rejected += 1
            continue
        bad = validate_record(rec)
        if bad:
            res.rejected += 1
            for fname, msg in bad:
                res.problems.append((lineno, fname, msg, _excerpt(line)))
            continue
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
_BODY_SCHEMA = pa.schema([(c, _ARROW_TYPES[c]) for c in _BODY_COLUMNS])


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


# ----------------------------------------------------------------------------- cache

def _file_sha(path: Path, raw: bytes, index: dict[str, Any]) -> str:
    st = path.stat()
    key = str(path.resolve())
    hit = index.get(key)
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    digest = hashlib.sha256(raw).hexdigest()
    index[key] = [st.st_size, st.st_mtime_ns, digest]
    return digest


def _stat_sha(path: Path, index: dict[str, Any]) -> str | None:
    """The file's hash from the stat index, without reading it; None when unknown or changed."""
    try:
        st = path.stat()
    except OSError:
        return None
    hit = index.get(str(path.resolve()))
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    return None


def _read_index(cdir: Path) -> dict[str, Any]:
    try:
        return json.loads((cdir / "stat-index.json").read_text())
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_index(cdir: Path, index: dict[str, Any]) -> None:
    _atomic_write(cdir / "stat-index.json", lambda p: p.write_text(json.dumps(index)))


def _combined_key(items: Iterable[tuple[str, str, str]]) -> str:
    h = hashlib.sha256(f"cqia-nb parser {PARSER_VERSION}\n".encode())
    for rel, config, sha in items:
        h.update(f"{rel}\t{config}\t{sha}\n".encode())
    return h.hexdigest()[:32]


def _cache_paths(cdir: Path, key: str) -> dict[str, Path]:
    return {n: cdir / f"{key}.{n}.arrow" for n in ("records", "problems", "files")}


def _cache_get(cdir: Path, key: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None:
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


def _cache_put(cdir: Path, key: str, tables: tuple[pa.Table, pa.Table, pa.Table]) -> None:
    # Written from Arrow directly: polars' IPC writer converts string views and is ~3x slower.
    cdir.mkdir(parents=True, exist_ok=True)
    for (name, path), table in zip(_cache_paths(cdir, key).items(), tables):
        _atomic_write(path, lambda p, t=table: _write_arrow(p, t))


# ----------------------------------------------------------------------------- loading

def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _with_provenance(body: pa.Table, rels: list[str], configs: list[str], counts: list[int]) -> pa.Table:
    """Add config / source_file / record_id to bodies concatenated in ``rels`` order (in Arrow)."""
    import numpy as np
    import pyarrow.compute as pc

    idx = pa.array(np.repeat(np.arange(len(rels), dtype=np.int32), counts))
    source = pa.DictionaryArray.from_arrays(idx, pa.array(rels, pa.large_string())).cast(pa.large_string())
    config = pa.DictionaryArray.from_arrays(idx, pa.array(configs, pa.large_string())).cast(pa.large_string())
    line = body.column("line")
    record_id = pc.binary_join_element_wise(source, pc.cast(line, pa.large_string()), pa.scalar(":", pa.large_string()))
    cols = {"record_id": record_id, "config": config, "source_file": source}
    return pa.table([cols[c] if c in cols else body.column(c) for c in SCHEMA], names=list(SCHEMA))


def load_path(path: str | Path, config: LoadConfig = LoadConfig()) -> LoadResult:
    """Load a JSONL file or a folder in the Hugging Face layout."""
    return _report(_load_path(path, config), config)


def _load_path(path: str | Path, config: LoadConfig) -> LoadResult:
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"{root}: no such file or folder. Point the loader at a clone of {HUB_REPO} "
            "(e.g. ../shared/coig-cqia), a .jsonl file, or use source='bundled'.")
    base = root if root.is_dir() else root.parent
    pairs = discover_files(root)
    if config.configs:
        unknown = sorted(set(config.configs) - {c for c, _ in pairs})
        if unknown:
            found = sorted({c for c, _ in pairs})
            raise ValueError(f"{root}: no data for config(s) {unknown}; configs found: {found}")
        pairs = [(c, p) for c, p in pairs if c in config.configs]
    if not pairs:
        raise ValueError(f"{root}: no data files found; expected <config>/*.jsonl as in {HUB_REPO}")

    cdir = cache_dir(config)
    index = _read_index(cdir) if config.cache else {}
    rels = [(c, p, p.relative_to(base).as_posix()) for c, p in pairs]

    # Warm path: every file known to the stat index -> one combined key -> memory-mapped frames.
    if config.cache:
        shas = [_stat_sha(p, index) for _, p, _ in rels]
        if all(shas):
            key = _combined_key((rel, c, s) for (c, _, rel), s in zip(rels, shas))  # type: ignore[misc]
            hit = _cache_get(cdir, key)
            if hit is not None:
                return LoadResult(*hit, source=str(root), root=base, from_cache=True)

    raws: list[bytes] = []
    keyparts = []
    for c, p, rel in rels:
        raw = p.read_bytes()
        raws.append(raw)
        sha = _file_sha(p, raw, index) if config.cache else hashlib.sha256(raw).hexdigest()
        keyparts.append((rel, c, sha))
    key = _combined_key(keyparts)
    if config.cache:
        # Same content under a new mtime (a fresh clone, say): still a hit once hashed.
        hit = _cache_get(cdir, key)
        if hit is not None:
            _write_index(cdir, index)
            return LoadResult(*hit, source=str(root), root=base, from_cache=True)

    frames, problems, files = [], [], []
    it = list(zip(rels, raws, keyparts))
    if config.progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="parsing", unit="file")
    for (c, p, rel), raw, (_, _, sha) in it:
        if not c and not raw.startswith(LFS_PREFIX):
            res = _FileResult(table=_Columns().table(), status="outside-configs")
            res.problems.append((1, "-", "no config of the card's `configs:` block includes this file, so it "
                                         "was not read (it may repeat other files); load it on its own with "
                                         "source=<this file> if you want it", ""))
        elif p.suffix not in DATA_SUFFIXES and not raw.startswith(LFS_PREFIX):
            res = _FileResult(table=_Columns().table(), status="unsupported")
            res.problems.append((1, "-", f"not a JSON Lines file ({p.suffix or 'no suffix'}): "
                                         "convert it to .jsonl or move it out of the config folder", ""))
        else:
            res = parse_jsonl_bytes(raw)
        frames.append(res.table)
        problems.extend((rel, ln, f, m, x) for ln, f, m, x in res.problems)
        files.append((rel, c, res.status, len(raw), res.records_read, res.table.num_rows, res.rejected, sha))

    table = _with_provenance(pa.concat_tables(frames), [f[0] for f in files],
                             [f[1] for f in files], [f[5] for f in files])
    prob = pl.DataFrame(problems, schema=PROBLEM_SCHEMA, orient="row") if problems else _empty(PROBLEM_SCHEMA)
    fdf = pl.DataFrame(files, schema=FILE_SCHEMA, orient="row")
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if config.cache:
        try:
            _cache_put(cdir, key, (table, prob.to_arrow(), fdf.to_arrow()))
            _write_index(cdir, index)
        except OSError as e:  # a read-only cache must not stop the load
            warnings.warn(f"could not write the cache in {cdir}: {e}; set CQIA_CACHE_DIR to a writable folder",
                          stacklevel=2)
    return LoadResult(frame, prob, fdf, source=str(root), root=base)


def _report(result: LoadResult, config: LoadConfig) -> LoadResult:
    """Apply the error policy; called by the public entry points so warnings name the caller."""
    if result.problems.height:
        if config.policy == "strict":
            raise DataValidationError(
                f"{result.problems.height} problem(s) in {result.source}:\n"
                + format_problems(result.problems, limit=20)
                + "\nFix them, or load with policy='collect' to get the good records and a report.",
                result.problems)
        files = result.problems["file"].n_unique()
        warnings.warn(f"{result.problems.height} problem(s) in {files} file(s) of {result.source} "
                      f"({result.n_rejected} record(s) not loaded): see LoadResult.problems "
                      "or run `cqia-nb validate`", DataQualityWarning, stacklevel=3)
    return result


def format_problems(problems: pl.DataFrame, limit: int | None = None) -> str:
    """``FILE:LINE: FIELD: message`` lines, one per problem."""
    rows = problems.head(limit) if limit else problems
    lines = [f"{r['file']}:{r['line']}: {r['field']}: {r['message']}" for r in rows.iter_rows(named=True)]
    if limit and problems.height > limit:
        lines.append(f"... and {problems.height - limit} more")
    return "\n".join(lines)


def hub_load_kwargs(config: str, repo: str = HUB_REPO, revision: str | None = None) -> dict[str, Any]:
    """Arguments for ``datasets.load_dataset`` for one config; validates the name first."""
    if config not in CONFIGS:
        raise ValueError(f"unknown COIG-CQIA config {config!r}; choose from: {', '.join(CONFIGS)}")
    kwargs: dict[str, Any] = {"path": repo, "name": config, "split": "train"}
    if revision:
        kwargs["revision"] = revision
    return kwargs


def load_hub(config: LoadConfig = LoadConfig(source="hub")) -> LoadResult:
    """Load configs from the Hugging Face hub (needs internet), validated like local files."""
    return _report(_load_hub(config), config)


def _load_hub(config: LoadConfig) -> LoadResult:
    import datasets

    names = config.configs or CONFIGS
    kwargs = [hub_load_kwargs(n, config.hub_repo, config.hub_revision) for n in names]
    frames, problems, files = [], [], []
    for kw in kwargs:
        try:
            ds = datasets.load_dataset(**kw)
        except Exception as e:
            raise RuntimeError(
                f"could not load {kw['path']} config {kw['name']!r} from the hub ({type(e).__name__}: {e}); "
                "check your connection or clone the dataset and pass its folder as source") from e
        rel = f"hub:{kw['path']}/{kw['name']}"
        cols, rejected = _Columns(), 0
        n = 0
        for i, rec in enumerate(ds, start=1):
            n += 1
            bad = validate_record(rec)
            if bad:
                rejected += 1
                problems.extend((rel, i, f, m, _excerpt(json.dumps(rec, ensure_ascii=False, default=str)))
                                for f, m in bad)
            else:
                cols.add(i, rec)
        body = cols.table()
        fr = pl.from_arrow(_with_provenance(body, [rel], [kw["name"]], [body.num_rows]))
        assert isinstance(fr, pl.DataFrame)
        frames.append(fr)
        files.append((rel, kw["name"], "ok", 0, n, fr.height, rejected, getattr(ds, "_fingerprint", "") or ""))
    frame = pl.concat(frames) if frames else _empty(SCHEMA)
    prob = pl.DataFrame(problems, schema=PROBLEM_SCHEMA, orient="row") if problems else _empty(PROBLEM_SCHEMA)
    return LoadResult(frame, prob, pl.DataFrame(files, schema=FILE_SCHEMA, orient="row"),
                              source=f"hub:{config.hub_repo}")


def load(config: LoadConfig | None = None, **overrides: Any) -> LoadResult:
    """Load COIG-CQIA from the configured source. ``load(source="../shared/coig-cqia")`` works too."""
    config = config or LoadConfig()
    if overrides:
        config = LoadConfig(**{**config.__dict__, **overrides})
    source = resolve_source(config.source)
    if source == "hub":
        return _report(_load_hub(config), config)
    path = bundled_path() if source == "bundled" else Path(source)
    return _report(_load_path(path, config), config)


def config_counts(frame: pl.DataFrame, files: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per-config counts: files, records, human-verified share, answers by origin.

    With ``files`` (``LoadResult.files``) every config that has a file shows, even when none of
    its files held loadable records (LFS pointers only, say), and files not loaded are counted.
    """
    stats = (
        frame.group_by("config")
        .agg(
            pl.len().cast(pl.Int64).alias("records"),
            pl.col("human_verified").mean().round(3).alias("human_verified_share"),
            (pl.col("answer_from") == "human").sum().cast(pl.Int64).alias("answer_human"),
            (pl.col("answer_from") == "llm").sum().cast(pl.Int64).alias("answer_llm"),
            (pl.col("answer_from") == "expert").sum().cast(pl.Int64).alias("answer_expert"),
            pl.col("output").str.len_chars().median().alias("median_output_chars"),
        )
    )
    if files is None:
        per_file = frame.group_by("config").agg(pl.col("source_file").n_unique().cast(pl.Int64).alias("files"))
    else:
        per_file = (files.filter(pl.col("config") != "").group_by("config").agg(
            pl.len().cast(pl.Int64).alias("files"),
            (pl.col("status") != "ok").sum().cast(pl.Int64).alias("files_not_loaded")))
    return (per_file.join(stats, on="config", how="left")
            .with_columns(pl.col("records").fill_null(0)).sort("config"))
