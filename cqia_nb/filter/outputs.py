"""What a filter run writes and how the next stage reads it back: kept/dropped as parquet and
COIG-CQIA-shaped JSON Lines, the steps table and the recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import polars as pl

from cqia_nb.core.atomic import staged_files
from cqia_nb.data.schema import SCHEMA
from cqia_nb.filter.framework import AUDIT_COLUMNS, PipelineConfig, PipelineResult

#: COIG-CQIA's record fields, in file order.
CQIA_FIELDS = ("instruction", "input", "output", "task_type", "domain", "metadata", "answer_from",
               "human_verified", "copyright")
OUTPUT_FILES = ("kept.parquet", "dropped.parquet", "kept.jsonl", "dropped.jsonl", "steps.csv")


def to_cqia_jsonl(frame: pl.DataFrame, audit: bool = False) -> pl.Series:
    """One JSON line per record in the COIG-CQIA layout (``task_type: {major, minor}``), with the
    keys kept in ``extra`` merged back; ``audit=True`` appends record_id and the audit columns."""
    exprs: list[pl.Expr] = []
    for name in CQIA_FIELDS:
        if name == "task_type":
            if "task_type_major" in frame.columns or "task_type_minor" in frame.columns:
                exprs.append(pl.struct(
                    [pl.col(c).alias(c.rsplit("_", 1)[1]) if c in frame.columns
                     else pl.lit([], dtype=pl.List(pl.String)).alias(c.rsplit("_", 1)[1])
                     for c in ("task_type_major", "task_type_minor")]).alias("task_type"))
        elif name in frame.columns:
            exprs.append(pl.col(name))
    if audit:
        exprs += [pl.col(c) for c in ("record_id", *AUDIT_COLUMNS) if c in frame.columns]
    if not exprs or frame.height == 0:
        return pl.Series("json", [], dtype=pl.String)
    js = frame.select(pl.struct(exprs).struct.json_encode().alias("json")).to_series()
    if "extra" not in frame.columns:
        return js
    extra = frame["extra"].fill_null("")
    has = extra.str.starts_with("{") & (extra.str.len_chars() > 2)
    merged = pl.select(
        pl.when(has).then(js.str.slice(0, js.str.len_chars() - 1) + "," + extra.str.slice(1))
        .otherwise(js).alias("json")).to_series()
    return merged


def write_outputs(result: PipelineResult, out_dir: str | Path) -> dict[str, Path]:
    """Write kept/dropped as Parquet and JSON Lines (COIG-CQIA layout; dropped lines carry
    record_id, step, step_name, filter, value, detail) and the per-step table ``steps.csv``.

    All files are written to a staging folder inside ``out_dir`` first and renamed into place only
    when every one was written, so a failure (a full disk, say) leaves the previous outputs as they
    were; other files in ``out_dir`` are left alone. An ``out_dir`` that cannot be written raises
    :class:`cqia_nb.core.atomic.OutputError` ("cannot write ...: why; what to do")."""
    out = Path(out_dir)
    names = list(OUTPUT_FILES) + (["pipeline.json"] if result.config is not None else [])
    with staged_files(out) as tmp:
        result.kept.write_parquet(tmp / "kept.parquet")
        result.dropped.write_parquet(tmp / "dropped.parquet")
        for name, frame, audit in (("kept.jsonl", result.kept, False), ("dropped.jsonl", result.dropped, True)):
            write_jsonl(tmp / name, [frame], audit)
        result.steps.write_csv(tmp / "steps.csv")
        if result.config is not None:
            write_pipeline_json(tmp / "pipeline.json", result.config, result.summary())
    return {n: out / n for n in names}


def write_pipeline_json(path: Path, config: PipelineConfig, summary: str) -> None:
    """The recipe as run (every step with its parameters) and the run's summary line."""
    spec = {"name": config.name,
            "steps": [{"filter": s.filter, **({"label": s.label} if s.label else {}), **s.params}
                      for s in config.steps],
            "summary": summary}
    path.write_text(json.dumps(spec, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")


def write_jsonl(path: Path, frames: Iterable[pl.DataFrame], audit: bool = False) -> None:
    """COIG-CQIA JSON Lines of the records of ``frames`` (one file, frame after frame)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for frame in frames:
            lines = to_cqia_jsonl(frame, audit=audit)
            for chunk in lines.to_list() if lines.len() else ():
                f.write(chunk)
                f.write("\n")


def read_kept(out_dir: str | Path) -> pl.DataFrame:
    """The kept records of a previous run (a folder written by ``write_outputs`` or its
    ``kept.parquet``), ready for the next stage."""
    p = Path(out_dir)
    path = p / "kept.parquet" if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no kept.parquet here; run `cqia-nb filter` (or write_outputs) first")
    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several kinds for a damaged file
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e

    missing = [c for c in SCHEMA if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a cqia-nb records file, missing column(s) {missing}")
    extra_audit = [c for c in AUDIT_COLUMNS if c in frame.columns]
    return frame.drop(extra_audit) if extra_audit else frame
