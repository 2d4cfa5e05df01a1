"""Load, validate and cache COIG-CQIA into one polars DataFrame with a fixed schema.

Sources (``LoadConfig.source``): ``"bundled"`` (the miniature we ship in ``data/``), ``"hub"``
(``datasets.load_dataset("m-a-p/COIG-CQIA", config)``), or a path to a JSON Lines file or a folder
in the Hugging Face layout (a clone of m-a-p/COIG-CQIA). ``$CQIA_DATA`` overrides ``"auto"``.

Nothing is dropped silently: every line that is not loaded is one row of ``LoadResult.problems``
(file, 1-based line, field, message), and ``records_read == loaded + rejected`` always holds.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import polars as pl
import pyarrow as pa

from cqia_nb.core.jsonl import CompressedDataError, data_name, decompress
from cqia_nb.core.paths import cache_dir, project_root
from cqia_nb.data.cache import (
    RecordsWriter,
    cache_get,
    combined_key,
    file_sha,
    read_index,
    remember_sha,
    same_listing_cached,
    stat_key,
    stat_sha,
    write_index,
)
from cqia_nb.data.parse import (
    Columns,
    FileResult,
    arrow_frame,
    check_record,
    empty_body,
    empty_value_text,
    excerpt,
    parse_jsonl_bytes,
)
from cqia_nb.data.schema import (
    CONFIGS,
    DATA_SUFFIXES,
    FILE_SCHEMA,
    HUB_REPO,
    LFS_PREFIX,
    NOTE_SCHEMA,
    PROBLEM_SCHEMA,
    SCHEMA,
    DataQualityWarning,
    DataValidationError,
)


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
    notes: pl.DataFrame = dataclasses.field(default_factory=lambda: _empty(NOTE_SCHEMA))

    @property
    def records_read(self) -> int:
        return int(self.files["records_read"].sum())

    @property
    def n_loaded(self) -> int:
        return self.frame.height

    @property
    def n_rejected(self) -> int:
        return int(self.files["rejected"].sum())

    @property
    def n_normalized(self) -> int:
        """Records loaded with missing or null optional fields filled (see ``notes``)."""
        return int(self.files["normalized"].sum())

    def reconciles(self) -> bool:
        """True when every record read is either loaded or reported."""
        return self.records_read == self.n_loaded + self.n_rejected

    def summary(self) -> str:
        ok = (self.files["status"] == "ok").sum()
        return (f"{self.n_loaded:,} records loaded from {ok} data files; "
                f"{self.n_rejected:,} rejected, {self.problems.height:,} problems, "
                f"{self.n_normalized:,} normalised ({self.records_read:,} records read)")


def bundled_path() -> Path:
    """The miniature dataset written by this project, in the HF layout."""
    return project_root() / "data" / "coig-cqia-mini"


def resolve_source(source: str = "auto") -> str:
    """Turn "auto" into a concrete source using ``$CQIA_DATA`` (default "bundled")."""
    if source == "auto":
        source = os.environ.get("CQIA_DATA", "").strip() or "bundled"
    return source


def data_cache_dir(config: LoadConfig | None = None) -> Path:
    """Where parsed data is cached: ``LoadConfig.cache_dir``, else :func:`cqia_nb.core.paths.cache_dir`."""
    return cache_dir(config.cache_dir if config is not None else None)


def read_card_configs(root: Path) -> dict[str, list[str]]:
    """The ``configs:`` block of a dataset card: config name -> data_files globs.

    Entries without data_files (the real card lists "finance" twice, once empty) are skipped.
    """
    readme = root / "README.md"
    try:
        st = stat_key(readme.stat())
    except OSError:
        return {}
    if not readme.is_file():
        return {}
    where = str(readme.absolute())
    memo = _CARDS.get(where)
    if memo is not None and memo[0] == st:  # unchanged card (size, mtime, inode, ctime): parsed before
        return {k: list(v) for k, v in memo[1].items()}
    out = _read_card_configs(readme)
    _CARDS[where] = (st, out)
    return {k: list(v) for k, v in out.items()}


#: Parsed cards by path, with the stat key they were parsed at (a warm load parsed the YAML every time).
_CARDS: dict[str, tuple[list[int], dict[str, list[str]]]] = {}


def _read_card_configs(readme: Path) -> dict[str, list[str]]:
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
    ``.jsonl.gz`` and ``.jsonl.zst`` count as JSON Lines (read decompressed, as ``datasets`` does).
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
            if p not in pairs and data_name(p).endswith(".jsonl"):
                pairs[p] = ""
    else:
        for p, rel in rels.items():
            if "/" in rel:
                pairs[p] = rel.split("/", 1)[0]
            elif data_name(p).endswith(".jsonl"):
                pairs[p] = data_name(p)[: -len(".jsonl")]
    return sorted(((c, p) for p, c in pairs.items()), key=lambda cp: rels[cp[1]])


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


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

    cdir = data_cache_dir(config)
    index = read_index(cdir) if config.cache else {}
    rels = [(c, p, p.relative_to(base).as_posix()) for c, p in pairs]
    dirs: dict[Path, str] = {}  # folders resolved once for the stat index's keys

    # Warm path: every file known to the stat index -> one combined key -> memory-mapped frames.
    if config.cache:
        shas = [stat_sha(p, index, dirs) for _, p, _ in rels]
        if all(shas):
            key = combined_key((rel, c, s) for (c, _, rel), s in zip(rels, shas))  # type: ignore[misc]
            hit = cache_get(cdir, key)
            if hit is not None:
                return _cached_result(hit, root, base)

    # Cold path, one file at a time: read, parse, add provenance, append to the cache entry,
    # release; nothing of the whole dataset is held in anonymous memory. The SHA-256 of each file
    # (the cache key and the files frame need it) is computed on a helper thread meanwhile, and
    # the cache writes on another (both release the GIL).
    sizes = [_size(p) for _, p, _ in rels]
    if config.cache and same_listing_cached(cdir, [(rel, c, n) for (c, _, rel), n in zip(rels, sizes)]):
        # An entry lists the same files and sizes: maybe the same content under new mtimes (a
        # fresh clone). Hash first, as before, so that a hit skips the parse.
        keyparts = []
        for c, p, rel in rels:
            raw = p.read_bytes()
            keyparts.append((rel, c, file_sha(p, raw, index, dirs)))
            del raw
        hit = cache_get(cdir, combined_key(keyparts))
        if hit is not None:
            write_index(cdir, index)
            return _cached_result(hit, root, base)
    return _parse_all(path, root, base, rels, index, dirs, cdir, config)


def _parse_all(path: str | Path, root: Path, base: Path, rels: list[tuple[str, Path, str]],
               index: dict[str, Any], dirs: dict[Path, str], cdir: Path, config: LoadConfig) -> LoadResult:
    """Parse every file (streaming the records into a new cache entry when ``config.cache``)."""
    problems: list[tuple[str, int, str, str, str]] = []
    notes: list[tuple[str, str, int, int, str]] = []
    files: list[list[Any]] = []
    chunks: list[pl.DataFrame] = []
    shas: list[str | Future[str]] = []
    stats: list[list[int] | None] = []
    pending: collections.deque[Future[str]] = collections.deque()
    writer = RecordsWriter(cdir) if config.cache else None
    cache_error: OSError | None = None
    inflight: tuple[Future[None], pl.DataFrame] | None = None  # the write in progress and its chunk
    it: Iterable[tuple[str, Path, str]] = rels
    if config.progress:
        from tqdm.auto import tqdm

        it = tqdm(rels, desc="parsing", unit="file")

    def settle() -> bool:
        """Wait for the write in flight; False when the load must start again without the cache
        (a write failed after records were already streamed into the entry)."""
        nonlocal inflight, writer, cache_error
        if inflight is None:
            return True
        job, chunk = inflight
        inflight = None
        try:
            job.result()
            return True
        except OSError as e:
            cache_error = e
            if writer is not None and writer.rows:
                return False
            if writer is not None:
                writer.abort()
            writer = None  # nothing written yet: keep the frames in memory
            chunks.append(chunk)
            return True

    def restart() -> LoadResult:
        if writer is not None:
            writer.abort()
        _warn_cache(cdir, cache_error, stacklevel=5)
        return _load_path(path, dataclasses.replace(config, cache=False))

    try:
        with ThreadPoolExecutor(max_workers=1) as hasher, ThreadPoolExecutor(max_workers=1) as wpool:
            for c, p, rel in it:
                raw = p.read_bytes()
                known = stat_sha(p, index, dirs) if config.cache else None
                stats.append(None if known or not config.cache else _stat_now(p))
                if known:
                    shas.append(known)
                else:
                    # At most two files wait for their hash: a queued job holds its bytes, and a
                    # hasher slower than the parser must not pile the whole dataset up.
                    while len(pending) >= 2:
                        pending.popleft().result()
                    pending.append(hasher.submit(_sha_hex, raw))
                    shas.append(pending[-1])
                res = _parse_file(c, p, raw)
                problems.extend((rel, ln, f, m, x) for ln, f, m, x in res.problems)
                notes.extend(_note_rows(rel, res))
                files.append([rel, c, res.status, len(raw), res.records_read, res.table.num_rows, res.rejected,
                              res.normalized, None])
                del raw
                if res.table.num_rows:
                    chunk = _provenance(res.table, rel, c)
                    if not settle():
                        return restart()
                    if writer is not None:
                        inflight = (wpool.submit(writer.write, chunk), chunk)
                    else:
                        chunks.append(chunk)
                del res
            if not settle():
                return restart()
            for row, (c, p, rel), sha, st in zip(files, rels, shas, stats):
                row[8] = sha if isinstance(sha, str) else sha.result()
                if st is not None:
                    remember_sha(p, st, row[8], index, dirs)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

    if sum(f[3] for f in files) > 1 << 26:
        # Once, at the end: after every large file it cost 0.36 CPU-s at 10x the data (the pages
        # released are faulted in again by the next parse) for a peak 47 MiB lower.
        _trim_heap()
    key = combined_key((f[0], f[1], f[8]) for f in files)
    prob = pl.DataFrame(problems, schema=PROBLEM_SCHEMA, orient="row") if problems else _empty(PROBLEM_SCHEMA)
    fdf = pl.DataFrame(files, schema=FILE_SCHEMA, orient="row")
    ndf = pl.DataFrame(notes, schema=NOTE_SCHEMA, orient="row") if notes else _empty(NOTE_SCHEMA)
    if writer is not None:
        try:
            writer.commit(key, prob.to_arrow(), fdf.to_arrow(), ndf.to_arrow())
            write_index(cdir, index)
        except OSError as e:  # a read-only cache must not stop the load
            cache_error = e
        # The frame is the memory-mapped records file, as on a warm load (zero-copy).
        try:
            frame = writer.frame()
        except OSError:  # the records file itself could not be completed: parse again, in memory
            writer.abort()
            _warn_cache(cdir, cache_error)
            return _load_path(path, dataclasses.replace(config, cache=False))
        writer.abort()  # removes a leftover temporary file (the mapping stays valid)
    else:
        frame = pl.concat(chunks, how="vertical", rechunk=False) if chunks else _empty(SCHEMA)
    if cache_error is not None:
        _warn_cache(cdir, cache_error)
    return LoadResult(frame, prob, fdf, source=str(root), root=base, notes=ndf)


def _warn_cache(cdir: Path, err: OSError | None, stacklevel: int = 4) -> None:
    # stacklevel 4: _warn_cache <- _parse_all <- _load_path <- the public entry point
    warnings.warn(f"could not write the cache in {cdir}: {err}; set CQIA_CACHE_DIR to a writable folder",
                  stacklevel=stacklevel)


def _parse_file(config: str, p: Path, raw: bytes) -> FileResult:
    """One file's records and problems (files outside every config, or not JSON Lines, are not read)."""
    if not config and not raw.startswith(LFS_PREFIX):
        res = FileResult(table=empty_body(), status="outside-configs")
        res.problems.append((1, "-", "no config of the card's `configs:` block includes this file, so it "
                                     "was not read (it may repeat other files); load it on its own with "
                                     "source=<this file> if you want it", ""))
    elif Path(data_name(p)).suffix not in DATA_SUFFIXES and not raw.startswith(LFS_PREFIX):
        res = FileResult(table=empty_body(), status="unsupported")
        res.problems.append((1, "-", f"not a JSON Lines file ({p.suffix or 'no suffix'}): "
                                     "convert it to .jsonl or move it out of the config folder", ""))
    else:
        try:
            res = parse_jsonl_bytes(decompress(raw, p))
        except CompressedDataError as e:
            res = FileResult(table=empty_body(), status="unreadable")
            res.problems.append((1, "-", str(e), ""))
    return res


def _provenance(body: pa.Table, rel: str, config: str) -> pl.DataFrame:
    """One file's body with record_id / config / source_file, as a polars frame (built in polars:
    pyarrow's scalar and array constructors import pandas, a second of start-up)."""
    return arrow_frame(body).select(
        (pl.lit(rel + ":") + pl.col("line").cast(pl.String)).alias("record_id"),
        pl.lit(config, pl.String).alias("config"),
        pl.lit(rel, pl.String).alias("source_file"),
        *[c for c in SCHEMA if c not in ("record_id", "config", "source_file")],
    )


_MALLOC_TRIM: Any = None


def _trim_heap() -> None:
    """Give the heap memory freed by the parse back to the OS (glibc keeps what the reader's worker
    threads freed in their arenas, ~50-100 MB at 10x the data, for the rest of the session). No-op
    elsewhere."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return -1


def _stat_now(p: Path) -> list[int] | None:
    """The stat key of ``p`` just after reading it (what the hash will be remembered under)."""
    try:
        return stat_key(p.stat())
    except OSError:
        return None


def _sha_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _cached_result(hit: dict[str, pl.DataFrame], root: Path, base: Path) -> LoadResult:
    return LoadResult(hit["records"], hit["problems"], hit["files"], source=str(root), root=base, from_cache=True,
                      notes=hit["notes"])


def _note_rows(rel: str, res: FileResult) -> list[tuple[str, str, int, int, str]]:
    """One NOTE_SCHEMA row per (field, missing|null) of a file."""
    return [(rel, f, n, first, f"{how}: loaded as {empty_value_text(f)}")
            for (f, how), (n, first) in sorted(res.notes.items(), key=lambda kv: (kv[1][1], kv[0]))]


def format_notes(notes: pl.DataFrame, limit: int | None = None) -> str:
    """``FILE: FIELD: missing: loaded as "" in N records (first at line L)`` lines, one per note."""
    rows = notes.head(limit) if limit else notes
    lines = [f"{r['file']}: {r['field']}: {r['message']} in {r['records']:,} record(s) (first at line {r['first_line']})"
             for r in rows.iter_rows(named=True)]
    if limit and notes.height > limit:
        lines.append(f"... and {notes.height - limit} more")
    return "\n".join(lines)


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
    frames, problems, files, notes = [], [], [], []
    for kw in kwargs:
        try:
            ds = datasets.load_dataset(**kw)
        except Exception as e:
            raise RuntimeError(
                f"could not load {kw['path']} config {kw['name']!r} from the hub ({type(e).__name__}: {e}); "
                "check your connection or clone the dataset and pass its folder as source") from e
        rel = f"hub:{kw['path']}/{kw['name']}"
        cols = Columns()
        res = FileResult(table=cols.table())
        for i, rec in enumerate(ds, start=1):
            res.records_read += 1
            # `datasets` gives every row every column, None where a record lacked the key.
            rec, bad, fixed = check_record(rec)
            if bad:
                res.rejected += 1
                problems.extend((rel, i, f, m, excerpt(json.dumps(rec, ensure_ascii=False, default=str)))
                                for f, m in bad)
                continue
            if fixed:
                res.note(i, fixed)
            cols.add(i, rec)
        body = cols.table()
        fr = pl.from_arrow(_with_provenance(body, [rel], [kw["name"]], [body.num_rows]))
        assert isinstance(fr, pl.DataFrame)
        frames.append(fr)
        notes.extend(_note_rows(rel, res))
        files.append((rel, kw["name"], "ok", 0, res.records_read, fr.height, res.rejected, res.normalized,
                      getattr(ds, "_fingerprint", "") or ""))
    frame = pl.concat(frames) if frames else _empty(SCHEMA)
    prob = pl.DataFrame(problems, schema=PROBLEM_SCHEMA, orient="row") if problems else _empty(PROBLEM_SCHEMA)
    ndf = pl.DataFrame(notes, schema=NOTE_SCHEMA, orient="row") if notes else _empty(NOTE_SCHEMA)
    return LoadResult(frame, prob, pl.DataFrame(files, schema=FILE_SCHEMA, orient="row"),
                      source=f"hub:{config.hub_repo}", notes=ndf)


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
