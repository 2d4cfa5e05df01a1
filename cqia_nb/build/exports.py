"""Write a build's outputs in the formats trainers read, each reloadable to the same records.

One call per format, all from the same target frame (``subsets.TARGET_COLUMNS``: record fields,
``subset``, ``split``, ``sample``, ``messages``, ``n_tokens``, ``truncated``):

==================  =================================================================================
``export_jsonl``    ``jsonl/<target>/{train,validation}.jsonl``: the record columns (all but
                    ``messages``, which is derived), one object per line
``export_parquet``  ``parquet/<target>.parquet``: the same columns, both splits (``split`` column)
``export_hf``       ``hf/<target>/``: ``datasets.DatasetDict`` (train/validation) via ``save_to_disk``,
                    all columns including ``messages``; reload with ``datasets.load_from_disk``
``export_trl``      ``trl/<target>/{train,validation}.jsonl``: ``{"messages": [{role, content}]}``
                    (TRL's conversational format for ``SFTTrainer``)
``export_llamafactory``  ``llamafactory/<target>.{alpaca,sharegpt}.{train,validation}.json`` and
                    ``llamafactory/dataset_info.json`` (entries ``<target>_alpaca``,
                    ``<target>_alpaca_validation``, ``<target>_sharegpt``, ...): alpaca records
                    ``{instruction, input, output[, system]}``, sharegpt records
                    ``{conversations: [{from: human|gpt, value}][, system]}``
``write_card``      ``README.md``: a dataset card (sources, filters with counts, contamination,
                    spec, seed, token statistics, file hashes) with ``configs:`` front matter
==================  =================================================================================

Bytes are deterministic: JSON with a fixed key order (the column order), ``ensure_ascii=False``,
compact separators, ``\\n`` line ends; U+2028, U+2029 and U+0085 are written as ``\\u`` escapes
so that no line-splitting reader (Python's ``str.splitlines``) can break a record; Parquet without
timestamps; HF datasets with a content-derived fingerprint instead of a random one. Every per-target
file is written by ``TargetWriter`` as rows arrive (Parquet in row groups of ``ROW_GROUP_ROWS``, the
hf Arrow stream in batches of ``HF_BATCH_ROWS``), so a build fed one frame and one fed batch by batch
(``cqia-nb build --streaming``, :mod:`cqia_nb.build.streaming`) give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl

from cqia_nb.build.formatting import token_stats
from cqia_nb.core.atomic import staged_folder
from cqia_nb.core.parquet import arrow_table

SPLITS = ("train", "validation")
_LINE_BREAKS = ("\u2028", "\u2029", "\u0085")
MANIFEST = "build.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _splits(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """(split, rows) for the splits present, train first; a frame without ``split`` is all train."""
    if "split" not in frame.columns:
        return [("train", frame)]
    out = []
    for s in SPLITS:
        part = frame.filter(pl.col("split") == s)
        if part.height or s == "train":
            out.append((s, part))
    others = sorted(set(frame["split"].unique().to_list()) - set(SPLITS))
    if others:
        raise ValueError(f"unknown split value(s) {others}; splits are {SPLITS}")
    return out


def json_lines(frame: pl.DataFrame) -> list[str]:
    """One compact JSON object per row, keys in column order (see the module docstring)."""
    if frame.height == 0:
        return []
    s = frame.select(pl.struct(pl.all()).struct.json_encode().alias("j")).to_series()
    for ch in _LINE_BREAKS:
        s = s.str.replace_all(ch, f"\\u{ord(ch):04x}", literal=True)
    return s.to_list()


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8", newline="\n")
    return path


#: Rows per Parquet row group and per Arrow record batch of the hf export: fixed, so that a build written
#: from one frame and one written batch by batch (``cqia-nb build --streaming``) have the same bytes.
ROW_GROUP_ROWS = 4096
HF_BATCH_ROWS = 1000


class _Rechunk:
    """Rows in (``push`` a frame), Arrow tables of exactly ``rows`` rows out (the last one shorter,
    from ``flush``), with ``empty``'s columns and ``schema``'s types. Rows wait as Arrow: converting
    copies a frame's strings, whereas a polars slice or filter keeps views into every string buffer
    of the batch it came from, so rows held back for a later chunk would keep whole batches alive."""

    def __init__(self, rows: int, empty: pl.DataFrame, schema: Any):
        self.rows, self.empty, self.schema = rows, empty, schema
        self.buf: list[Any] = []
        self.n = 0

    def push(self, frame: pl.DataFrame) -> Iterator[Any]:
        if frame.height == 0:
            return
        table = arrow_table(frame.select(self.empty.columns).cast(self.empty.schema)).cast(self.schema)  # type: ignore[arg-type]
        while table.num_rows:
            take = min(self.rows - self.n, table.num_rows)
            self.buf.append(table.slice(0, take))
            self.n += take
            table = table.slice(take)
            if self.n == self.rows:
                yield self._take()

    def flush(self) -> Iterator[Any]:
        if self.n:
            yield self._take()

    def _take(self) -> Any:
        import pyarrow as pa

        out = pa.concat_tables(self.buf)
        self.buf, self.n = [], 0
        # fresh buffers: a slice's buffers can be longer than its rows need, and the IPC writer writes
        # their sizes, so the same rows cut differently would give other bytes
        return out.take(pa.array(range(out.num_rows), type=pa.int64())).combine_chunks()


class _Lines:
    """A text file written line by line; ``array`` writes a JSON array (``[]`` when empty)."""

    def __init__(self, path: Path, array: bool = False):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.array, self.n = path, array, 0
        self.f = open(path, "w", encoding="utf-8", newline="\n")

    def write(self, lines: list[str]) -> None:
        for line in lines:
            if self.array:
                self.f.write("[\n" if self.n == 0 else ",\n")
            self.f.write(line)
            if not self.array:
                self.f.write("\n")
            self.n += 1

    def close(self) -> Path:
        if self.array:
            self.f.write("[]\n" if self.n == 0 else "\n]\n")
        self.f.close()
        return self.path


class _ParquetRows:
    """One Parquet file (zstd, no statistics) in row groups of ``ROW_GROUP_ROWS`` rows."""

    def __init__(self, path: Path, empty: pl.DataFrame):
        import pyarrow.parquet as pq

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.empty = path, empty
        self.schema = arrow_table(empty).schema
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd", write_statistics=False)
        self.chunks = _Rechunk(ROW_GROUP_ROWS, empty, self.schema)

    def write(self, frame: pl.DataFrame) -> None:
        for c in self.chunks.push(frame):
            self.writer.write_table(c)

    def close(self) -> Path:
        for c in self.chunks.flush():
            self.writer.write_table(c)
        self.writer.close()
        return self.path


class _HFSplit:
    """One split of a ``save_to_disk`` folder: the Arrow stream written in record batches of
    ``HF_BATCH_ROWS`` rows, the fingerprint (``_fingerprint``) hashed as the rows come."""

    def __init__(self, path: Path, name: str, split: str, empty: pl.DataFrame, schema: Any):
        import pyarrow as pa

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.empty, self.schema = path, empty, schema
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, schema)
        self.chunks = _Rechunk(HF_BATCH_ROWS, empty, schema)
        self.hash = hashlib.sha256()
        self.rows = 0

    def write(self, frame: pl.DataFrame) -> None:
        key = _fingerprint_key(frame)
        if key is not None:  # the keys of all rows joined by newlines, hashed as they come
            self.hash.update((("\n" if self.rows else "") + key).encode("utf-8"))
        self.rows += frame.height
        for c in self.chunks.push(frame):
            self._batch(c)

    def _batch(self, table: Any) -> None:
        for b in table.to_batches():
            self.writer.write_batch(b)

    def fingerprint(self) -> str:
        """SHA-256 of the rows' keys (``_fingerprint_key``), joined by newlines."""
        return self.hash.hexdigest()

    def close(self) -> None:
        for c in self.chunks.flush():
            self._batch(c)
        self.writer.close()
        self.sink.close()


def _fingerprint_key(part: pl.DataFrame) -> str | None:
    cols = [c for c in ("record_id", "sample", "n_tokens", "truncated") if c in part.columns]
    if not part.height or not cols:
        return None
    return part.select(pl.concat_str([pl.col(c).cast(pl.String) for c in cols]
                                     + [pl.col(c).str.len_bytes().cast(pl.String)
                                        for c in ("instruction", "input", "output") if c in part.columns],
                                     separator="\x1f").str.join("\n")).item()


def _fingerprint(name: str, split: str, rows: int, keys_digest: str) -> str:
    """A content-derived ``datasets`` fingerprint (its default is random, which would change the
    bytes of state.json on every run): SHA-256 of the split's row count and of the rows' ids, repeat
    numbers, token counts and text lengths (a cache key for ``datasets``, not a checksum: the card
    lists the files' SHA-256)."""
    return hashlib.sha256(f"{name}\x1f{split}\x1f{rows}\x1f{keys_digest}".encode()).hexdigest()[:16]


def _hf_schema(empty: pl.DataFrame, scratch: Path) -> Any:
    """The Arrow schema (with the ``huggingface`` features metadata) ``datasets`` writes for ``empty``'s columns."""
    import pyarrow as pa

    _save_hf({"train": (empty, "0")}, scratch)
    with pa.OSFile(str(scratch / "train" / HF_DATA_FILE), "rb") as f:
        schema = pa.ipc.open_stream(f).schema
    shutil.rmtree(scratch)
    return schema


HF_DATA_FILE = "data-00000-of-00001.arrow"


def _save_hf(splits: dict[str, tuple[pl.DataFrame, str]], path: Path) -> None:
    """``DatasetDict.save_to_disk`` of empty datasets (split -> (empty frame, fingerprint)): the
    metadata files; the data files are then written by ``_HFSplit``."""
    import datasets
    from datasets.table import InMemoryTable

    dd = datasets.DatasetDict({s: datasets.Dataset(InMemoryTable(arrow_table(empty)), split=datasets.NamedSplit(s),
                                                   fingerprint=fp) for s, (empty, fp) in splits.items()})
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        if path.exists():
            shutil.rmtree(path)
        dd.save_to_disk(str(path), num_shards={s: 1 for s in splits})
    finally:
        if was:
            datasets.enable_progress_bars()


class TargetWriter:
    """Every per-target file of ``formats`` for one target, written from its rows batch by batch
    (``write`` with frames of ``TARGET_COLUMNS``, in output order; ``close`` when done). Splits:
    train always, validation when it has rows (as ``_splits``). The bytes do not depend on how the
    rows are cut into batches."""

    def __init__(self, name: str, out: Path, formats: Iterable[str], empty: pl.DataFrame,
                 timings: dict[str, float] | None = None):
        self.name, self.out, self.formats, self.empty = name, Path(out), tuple(formats), empty
        self.timings = timings if timings is not None else {}
        self.files: dict[tuple[str, str], Any] = {}
        self.parquet = None
        self.system = False
        self.hf_schema = None
        self.seen: list[str] = []
        if "parquet" in self.formats:
            self.parquet = self._timed("parquet", lambda: _ParquetRows(self.out / "parquet" / f"{name}.parquet",
                                                                       record_frame(empty)))
        if "hf" in self.formats:
            self.hf_schema = self._timed("hf", lambda: _hf_schema(empty, self.out / "hf" / f".{name}.schema"))

    def _timed(self, fmt: str, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[fmt] = self.timings.get(fmt, 0.0) + time.perf_counter() - t

    def _file(self, fmt: str, split: str):
        key = (fmt, split)
        f = self.files.get(key)
        if f is None:
            if split not in self.seen:
                self.seen.append(split)
            name = self.name
            if fmt == "jsonl":
                f = _Lines(self.out / "jsonl" / name / f"{split}.jsonl")
            elif fmt == "trl":
                f = _Lines(self.out / "trl" / name / f"{split}.jsonl")
            elif fmt in ("alpaca", "sharegpt"):
                f = _Lines(self.out / "llamafactory" / f"{name}.{fmt}.{split}.json", array=True)
            else:  # hf
                f = _HFSplit(self.out / "hf" / f".{name}.{split}.arrow", name, split, self.empty, self.hf_schema)
            self.files[key] = f
        return f

    def _fmts(self) -> list[str]:
        out = [f for f in ("jsonl", "trl", "hf") if f in self.formats]
        return out + (["alpaca", "sharegpt"] if "llamafactory" in self.formats else [])

    def write(self, frame: pl.DataFrame) -> None:
        if self.parquet is not None:
            self._timed("parquet", lambda: self.parquet.write(record_frame(frame)))
        for s, part in _splits(frame):
            if part.height == 0:
                continue
            self._part(s, part)

    def _part(self, s: str, part: pl.DataFrame) -> None:
        if "jsonl" in self.formats:
            self._timed("jsonl", lambda: self._file("jsonl", s).write(json_lines(record_frame(part))))
        if "trl" in self.formats:
            self._timed("trl", lambda: self._file("trl", s).write(json_lines(trl_frame(part))))
        if "hf" in self.formats:
            self._timed("hf", lambda: self._file("hf", s).write(part))
        if "llamafactory" in self.formats:
            def lf() -> None:
                self.system = self.system or _system_of(part) is not None
                self._file("alpaca", s).write(json_lines(alpaca_frame(part)))
                self._file("sharegpt", s).write(json_lines(sharegpt_frame(part)))
            self._timed("llamafactory", lf)

    def close(self) -> list[Path]:
        """Close every file (train ones written empty when the target has no train rows); the paths written."""
        for fmt in self._fmts():
            self._file(fmt, "train")
        splits = [s for s in SPLITS if s in self.seen]
        paths: list[Path] = []
        if self.parquet is not None:
            paths.append(self._timed("parquet", self.parquet.close))
        for (fmt, _), f in sorted(self.files.items()):
            if fmt != "hf":
                paths.append(self._timed("llamafactory" if fmt in ("alpaca", "sharegpt") else fmt, f.close))
        if "hf" in self.formats:
            paths += self._timed("hf", lambda: self._close_hf(splits))
        return paths

    def splits(self) -> list[str]:
        """The splits written so far, train first."""
        return [s for s in SPLITS if s in self.seen]

    def _close_hf(self, splits: list[str]) -> list[Path]:
        path = self.out / "hf" / self.name
        parts = {s: self.files[("hf", s)] for s in splits}
        for p in parts.values():
            p.close()
        _save_hf({s: (self.empty, _fingerprint(self.name, s, p.rows, p.fingerprint())) for s, p in parts.items()}, path)
        for s, p in parts.items():
            os.replace(p.path, path / s / HF_DATA_FILE)
        return sorted(p for p in path.rglob("*") if p.is_file())


def _one_target(frame: pl.DataFrame, name: str, out_dir: str | Path, fmt: str) -> list[Path]:
    w = TargetWriter(name, Path(out_dir), (fmt,), frame.clear())
    w.write(frame)
    return w.close()


def export_jsonl(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    return _one_target(frame, name, out_dir, "jsonl")


def read_jsonl(path: str | Path, schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """A file written by ``export_jsonl`` (or ``export_trl``), with the given or inferred schema."""
    p = Path(path)
    if p.stat().st_size == 0:
        return pl.DataFrame(schema=schema)
    return pl.read_ndjson(p, schema=schema)


def export_parquet(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    return _one_target(frame, name, out_dir, "parquet")


def record_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The columns of the jsonl and parquet exports: everything but ``messages`` (derived from
    instruction/input/output and the build's system prompt; the hf and trl exports carry it)."""
    return frame.drop([c for c in ("messages",) if c in frame.columns])


def export_hf(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    """``DatasetDict`` in the ``save_to_disk`` layout (one shard per split, deterministic bytes)."""
    return _one_target(frame, name, out_dir, "hf")


def read_hf(path: str | Path) -> dict[str, pl.DataFrame]:
    """``datasets.load_from_disk`` -> {split: polars frame}."""
    import datasets

    dd = datasets.load_from_disk(str(path))
    return {s: pl.from_arrow(dd[s].data.table) for s in dd}  # type: ignore[misc]


def trl_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("messages")


def export_trl(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    return _one_target(frame, name, out_dir, "trl")


def _system_of(frame: pl.DataFrame) -> pl.Expr | None:
    """The system prompt column from ``messages`` when the build set one."""
    if frame.height == 0:
        return None
    first = frame["messages"].list.first().struct.field("role")
    if (first == "system").any():
        return (pl.col("messages").list.first().struct.field("content")).alias("system")
    return None


def alpaca_frame(frame: pl.DataFrame) -> pl.DataFrame:
    cols: list[pl.Expr] = [pl.col("instruction").fill_null(""), pl.col("input").fill_null(""),
                           pl.col("output").fill_null("")]
    sys_expr = _system_of(frame)
    if sys_expr is not None:
        cols.append(sys_expr)
    return frame.select(cols)


def sharegpt_frame(frame: pl.DataFrame) -> pl.DataFrame:
    conv = (pl.col("messages").list.eval(
        pl.struct(pl.element().struct.field("role").replace_strict({"user": "human", "assistant": "gpt",
                                                                    "system": "system"}).alias("from"),
                  pl.element().struct.field("content").alias("value")))
        .list.filter(pl.element().struct.field("from") != "system").alias("conversations"))
    cols = [conv]
    sys_expr = _system_of(frame)
    if sys_expr is not None:
        cols.append(sys_expr)
    return frame.select(cols)


def llamafactory_entries(name: str, splits: Iterable[str], system: bool) -> dict[str, Any]:
    """``dataset_info.json`` entries for one target (alpaca and sharegpt, per split)."""
    out: dict[str, Any] = {}
    for s in splits:
        suffix = "" if s == "train" else f"_{s}"
        alpaca_cols = {"prompt": "instruction", "query": "input", "response": "output"}
        share_cols = {"messages": "conversations"}
        if system:
            alpaca_cols["system"] = "system"
            share_cols["system"] = "system"
        out[f"{name}_alpaca{suffix}"] = {"file_name": f"{name}.alpaca.{s}.json", "formatting": "alpaca",
                                         "columns": alpaca_cols}
        out[f"{name}_sharegpt{suffix}"] = {"file_name": f"{name}.sharegpt.{s}.json", "formatting": "sharegpt",
                                           "columns": share_cols,
                                           "tags": {"role_tag": "from", "content_tag": "value",
                                                    "user_tag": "human", "assistant_tag": "gpt"}}
    return out


def export_llamafactory(targets: dict[str, pl.DataFrame], out_dir: str | Path) -> list[Path]:
    """Alpaca and sharegpt files for every target and one ``dataset_info.json`` naming them all."""
    paths: list[Path] = []
    info: dict[str, Any] = {}
    for name, frame in targets.items():
        w = TargetWriter(name, Path(out_dir), ("llamafactory",), frame.clear())
        w.write(frame)
        paths += w.close()
        info.update(llamafactory_entries(name, w.splits(), w.system))
    paths.append(_write_json(Path(out_dir) / "llamafactory" / "dataset_info.json", info))
    return paths


def read_llamafactory(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        s = "" if v is None else (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else
                                  f"{v:.4g}" if isinstance(v, float) else str(v))
        return s.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _definition(t: Any) -> str:
    spec = t.spec
    if t.kind == "mixture":
        parts = ", ".join(f"{p.subset} {p.ratio:g}" if p.ratio is not None else f"{p.subset} {p.tokens:,} tok"
                          for p in spec.parts)
        extra = (f"size {spec.size:,}" if spec.size else f"total_tokens {spec.total_tokens:,}" if spec.total_tokens
                 else "")
        return f"mixture: {parts}" + (f"; {extra}" if extra else "") + ("; upsampling allowed" if spec.allow_upsample else "")
    d = spec.as_dict()
    d.pop("name", None)
    d.pop("description", None)
    return "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in d.items())


def card_text(build: Any, files: dict[str, str]) -> str:
    """The dataset card of a build (``files``: relative path -> SHA-256 of every other output)."""
    import yaml

    spec = build.spec
    lines: list[str] = []
    configs = []
    for name, t in build.targets.items():
        df = [{"split": s, "path": f"jsonl/{name}/{s}.jsonl"} for s, _ in _splits(t.frame)]
        configs.append({"config_name": name, "data_files": df})
    front = {"language": ["zh"], "pretty_name": f"COIG-CQIA rebuild: {spec.name}",
             "task_categories": ["text-generation"], "tags": ["instruction-tuning", "sft", "coig-cqia"],
             "configs": configs}
    lines += ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).rstrip("\n"), "---", ""]
    lines += [f"# COIG-CQIA subsets and mixtures: `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += ["Rebuilt from COIG-CQIA (m-a-p/COIG-CQIA, arXiv 2403.18058) by cqia-notebooks "
              "(`cqia-nb build`). The upstream dataset card states no licence; check the licence of each source "
              "before redistributing. Evaluation benchmarks are not included.", ""]
    # sources
    inp = build.input
    lines += ["## Sources", "", f"- input: `{inp.source}` ({inp.kind}), {inp.frame.height:,} records"]
    if inp.kind != "filter-output":
        lines.append(f"- loading: {inp.problems:,} problems, {inp.rejected:,} records not loaded")
    lines.append("")
    per_config = inp.frame.group_by("config").agg(pl.len().alias("records"),
                                                  pl.col("source_file").n_unique().alias("files")).sort("config")
    lines += [_md_table(["config", "files", "records"],
                        [[r["config"], int(r["files"]), int(r["records"])] for r in per_config.iter_rows(named=True)]), ""]
    # filters
    lines += ["## Filters applied", ""]
    if inp.steps is not None and inp.steps.height:
        cols = [c for c in ("step", "name", "filter", "kind", "records_in", "kept", "dropped", "changed")
                if c in inp.steps.columns]
        lines += [f"From `steps.csv` of the filter output folder (`{inp.source}`):", "",
                  _md_table(cols, [[(int(v) if isinstance(v, int) else v) for v in r]
                                   for r in inp.steps.select(cols).iter_rows()]), ""]
    else:
        lines += ["None: the input was loaded as it is (no `steps.csv`).", ""]
    # contamination
    lines += ["## Contamination check", ""]
    if build.contamination is not None:
        rep = build.contamination
        lines += [f"Character/word {rep.n}-gram overlap with the evaluation sets (cqia_nb.build.contamination): "
                  f"{build.contamination_note}.", "", rep.index_summary + ".", ""]
        cols = ["eval_set", "items", "items_unchecked", "items_contaminated", "contaminated_share", "ngrams",
                "overlap_ngrams", "training_records"]
        lines += [_md_table(cols, [list(r) for r in rep.eval_sets.select(cols).iter_rows()]), ""]
    else:
        lines += [f"Not run{': ' + build.contamination_note if build.contamination_note else ' (no `contamination:` in the spec)'}.", ""]
    if build.removed is not None and build.removed.height:
        lines += [f"{build.removed.height:,} records removed before building subsets:", "",
                  _md_table(["record_id", "reason"], [[r, x] for r, x in build.removed.select("record_id", "reason")
                                                      .head(50).iter_rows()]), ""]
        if build.removed.height > 50:
            lines += [f"... and {build.removed.height - 50:,} more (see build.json).", ""]
    # formatting
    f = build.format
    fc = f.config
    lines += ["## Formatting", "",
              f"- messages: user = instruction (+ \"\\n\" + input when present), assistant = output; "
              f"system prompt: {json.dumps(fc.system, ensure_ascii=False) if fc.system is not None else 'none'}",
              f"- template: `{fc.template or 'the tokenizer’s own'}`; tokenizer: `{fc.tokenizer}`; "
              f"n_tokens = tokens of the rendered conversation",
              f"- truncation: {f.report.summary()}", ""]
    if f.dropped.height:
        lines += [f"{f.dropped.height:,} records dropped by the length policy (first 20):", "",
                  _md_table(["record_id", "reason"], [list(r) for r in f.dropped.select("record_id", "reason")
                                                      .head(20).iter_rows()]), ""]
    # split + targets
    lines += ["## Outputs", "",
              f"Seed {build.seed}. Validation share {spec.validation:g}, one assignment per record for the whole "
              "build (no record is in two splits), stratified by source file; mixtures draw each part from its "
              "train and validation records in proportion.", ""]
    rows = []
    for name, t in build.targets.items():
        sc = t.split_counts()
        st = token_stats(t.frame["n_tokens"])
        rows.append([name, t.kind, _definition(t), t.frame.height, sc["train"], sc["validation"],
                     t.frame["record_id"].n_unique(), st["tokens"], st["mean"], st["p50"], st["p95"], st["max"]])
    lines += [_md_table(["name", "kind", "definition", "rows", "train", "validation", "distinct", "tokens",
                         "mean", "p50", "p95", "max"], rows), ""]
    for name, t in build.targets.items():
        if t.kind == "mixture":
            lines += [f"Mixture `{name}` parts:", "",
                      _md_table(["subset", "target", "available records", "available tokens", "rows", "distinct",
                                 "tokens", "upsampled"],
                                [[p.subset, p.target, p.available_records, p.available_tokens, p.records, p.distinct,
                                  p.tokens, p.upsampled] for p in t.parts]), ""]
    if build.skipped:
        lines += ["Built-in subsets not written (empty on this input): "
                  + ", ".join(f"`{k}`" for k in build.skipped) + ".", ""]
    lines += ["Formats: `jsonl/<name>/<split>.jsonl` (all columns), `parquet/<name>.parquet`, "
              "`hf/<name>` (`datasets.load_from_disk`), `trl/<name>/<split>.jsonl` (`messages`), "
              "`llamafactory/` (alpaca and sharegpt files + `dataset_info.json`).", ""]
    # spec
    lines += ["## Spec", "", "```yaml", yaml.safe_dump(spec.as_dict(), allow_unicode=True, sort_keys=False).rstrip("\n"),
              "```", "", "Reproduce:", "", "```bash",
              f"cqia-nb build --config {Path(spec.path).as_posix() if spec.path else 'SPEC'} --set seed={build.seed} "
              f"--set input={inp.source} --set out_dir=OUT_DIR", "```", ""]
    lines += ["## Files", "", "SHA-256 of every file of this build except this card:", "", "```"]
    lines += [f"{h}  {p}" for p, h in sorted(files.items())]
    lines += ["```", ""]
    return "\n".join(lines)


def write_card(build: Any, out_dir: str | Path, files: dict[str, str]) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(card_text(build, files), encoding="utf-8", newline="\n")
    return path


def manifest(build: Any) -> dict[str, Any]:
    """What ``build.json`` holds: spec, seed, input, per-target counts, reports."""

    out: dict[str, Any] = {
        "spec": build.spec.as_dict(), "seed": build.seed,
        "input": {"source": build.input.source, "kind": build.input.kind, "records": build.input.frame.height},
        "truncation": build.format.report.as_dict(),
        "dropped_by_length": build.format.dropped.select("record_id", "reason").to_dicts(),
        "targets": {name: {"kind": t.kind, **t.split_counts(), "distinct": t.frame["record_id"].n_unique(),
                           "tokens": token_stats(t.frame["n_tokens"]),
                           **({"parts": [p.__dict__ for p in t.parts]} if t.parts else {})}
                    for name, t in build.targets.items()},
        "skipped": build.skipped,
        "contamination": None,
    }
    if build.contamination is not None:
        out["contamination"] = {"summary": build.contamination_note, "params": build.contamination.params,
                                "eval_sets": build.contamination.eval_sets.to_dicts(),
                                "removed": (build.removed.select("record_id", "reason").to_dicts()
                                            if build.removed is not None else [])}
    elif build.contamination_note:
        out["contamination"] = {"summary": build.contamination_note}
    return out


def export_all(build: Any, out_dir: str | Path, formats: Iterable[str] | None = None,
               timings: dict[str, float] | None = None) -> dict[str, str]:
    """Write every format of the spec (or ``formats``) for every target; returns
    {path relative to out_dir: SHA-256} for all files written, the card included.
    ``timings`` (optional) receives seconds per format.

    The build is written to a temporary folder beside ``out_dir`` and renamed to ``out_dir`` when
    complete: a failure (a full disk, say) leaves ``out_dir`` as it was, and a previous build there
    is replaced whole. A folder holding anything but a previous build is refused."""
    final = Path(out_dir)
    if final.is_dir() and any(final.iterdir()) and not (final / MANIFEST).is_file():
        raise ValueError(f"{final}: not empty and not a previous build (no {MANIFEST}); export_all replaces "
                         "the folder whole: choose a new folder")
    with staged_folder(final) as out:
        return _export_into(build, out, formats, timings)


def _export_into(build: Any, out: Path, formats: Iterable[str] | None,
                 timings: dict[str, float] | None) -> dict[str, str]:
    formats = tuple(formats or build.spec.exports)
    written: list[Path] = []
    timings = timings if timings is not None else {}
    per_target = [f for f in ("jsonl", "parquet", "hf", "trl", "llamafactory") if f in formats]
    if per_target:
        writers = {name: TargetWriter(name, out, per_target, build.empty_target(name), timings)
                   for name in build.targets}
        build.feed_targets(writers)  # in memory: each target's frame; streaming: batches from the spill
        info: dict[str, Any] = {}
        for name, w in writers.items():
            written += w.close()
            info.update(llamafactory_entries(name, w.splits(), w.system))
        if "llamafactory" in formats:
            written.append(_write_json(out / "llamafactory" / "dataset_info.json", info))
    t = time.perf_counter()
    written.append(_write_json(out / MANIFEST, manifest(build)))
    hashes = {p.relative_to(out).as_posix(): sha256_file(p) for p in written}
    if "card" in formats:
        card = write_card(build, out, hashes)
        hashes[card.relative_to(out).as_posix()] = sha256_file(card)
    timings["manifest+card+hashes"] = time.perf_counter() - t
    return dict(sorted(hashes.items()))
