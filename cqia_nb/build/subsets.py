"""Named subsets of the filtered records: the card's groups, quality tiers, and what a spec selects."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import polars as pl

from cqia_nb.build.spec import GROUPS, SpecError, SubsetSpec, where_expr

_TIER = re.compile(r"score(\d+(?:\.\d+)?-\d+(?:\.\d+)?)")
DERIVED_COLUMNS = ("instruction_chars", "input_chars", "output_chars", "quality_tier", "group")


def _glob_any(path: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def quality_tier(source_file: str) -> str | None:
    """The zhihu score bucket in a file name ("zhihu/zhihu_score8.0-8.5_clean_v3.jsonl" -> "8.0-8.5")."""
    m = _TIER.search(Path(source_file).name)
    return m.group(1) if m else None


def group_of(config: str, source_file: str) -> str | None:
    """The card group of a record (None for configs the card does not know)."""
    for name, g in GROUPS.items():
        if (config in g.configs or _glob_any(source_file, g.files)) and not _glob_any(source_file, g.exclude):
            return name
    return None


def add_derived(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the derived columns subsets can use (``DERIVED_COLUMNS``); computed per distinct file."""
    files = frame.select("config", "source_file").unique(maintain_order=True)
    tiers = [quality_tier(s) for s in files["source_file"].to_list()]
    groups = [group_of(c, s) for c, s in files.iter_rows()]
    files = files.with_columns(pl.Series("quality_tier", tiers, dtype=pl.String),
                               pl.Series("group", groups, dtype=pl.String))
    out = frame.drop([c for c in ("quality_tier", "group") if c in frame.columns])
    out = out.join(files, on=["config", "source_file"], how="left", maintain_order="left")
    return out.with_columns(pl.col(f).str.len_chars().cast(pl.Int64).alias(f"{f}_chars")
                            for f in ("instruction", "input", "output"))


def select(frame: pl.DataFrame, spec: SubsetSpec) -> pl.DataFrame:
    """The records of one subset, in input order. ``frame`` needs the derived columns
    (``add_derived``); ``where`` columns are checked against it."""
    for c in ("group", "quality_tier"):
        if c not in frame.columns:
            frame = add_derived(frame)
            break
    return frame.filter(subset_mask(frame, spec))


def subset_mask(frame: pl.DataFrame, spec: SubsetSpec) -> pl.Series:
    """Which rows of ``frame`` (with the derived columns) belong to the subset: a record's own
    columns decide, so batches' masks concatenated are the whole frame's (``where`` is checked by
    ``check_elementwise`` before a streaming build relies on that)."""
    cond: pl.Expr = pl.lit(True)
    source: list[pl.Expr] = []
    if spec.configs:
        source.append(pl.col("config").is_in(list(spec.configs)))
    if spec.groups:
        source.append(pl.col("group").is_in(list(spec.groups)))
    if spec.files:
        files = frame["source_file"].unique().to_list()
        hit = sorted(f for f in files if _glob_any(f, spec.files))
        source.append(pl.col("source_file").is_in(hit))
    if source:
        cond = pl.any_horizontal(source)
    if spec.exclude_files:
        files = frame["source_file"].unique().to_list()
        out = sorted(f for f in files if _glob_any(f, spec.exclude_files))
        cond = cond & ~pl.col("source_file").is_in(out)
    if spec.quality_tier:
        cond = cond & pl.col("quality_tier").is_in(list(spec.quality_tier)).fill_null(False)
    for col in ("task_type_major", "task_type_minor", "domain"):
        vals = getattr(spec, col)
        if vals:
            cond = cond & (pl.col(col).list.set_intersection(pl.lit(list(vals), dtype=pl.List(pl.String)))
                           .list.len() > 0)
    if spec.where:
        e = where_expr(spec.where, spec.entry)
        cols = set(e.meta.root_names())
        missing = sorted(cols - set(frame.columns))
        if missing:
            raise SpecError(f"{spec.entry}: `where` uses unknown column(s) {missing}; columns: "
                            f"{', '.join(c for c in frame.columns if c not in ('messages', 'text'))}")
        try:
            mask = frame.select(e.alias("_m")).to_series()
        except Exception as ex:
            raise SpecError(f"{spec.entry}: `where: {spec.where}` failed on the data "
                            f"({type(ex).__name__}: {str(ex).splitlines()[0]})") from ex
        if mask.dtype != pl.Boolean:
            raise SpecError(f"{spec.entry}: `where: {spec.where}` gives {mask.dtype}, not true/false; "
                            "write a comparison (e.g. output_chars > 100)")
        return frame.select(cond.alias("_c")).to_series() & mask.fill_null(False)
    return frame.select(cond.alias("_c")).to_series()


#: What a `where` expression must not call in a streaming build (it is evaluated a batch at a time):
#: aggregations, windows and anything else that looks at other rows.
_NOT_ELEMENTWISE = re.compile(r"\.(mean|max|min|sum|std|var|median|quantile|count|n_unique|first|last|over|rank|"
                              r"shift|cum_\w+|arg_\w+|head|tail|sort\w*|unique\w*|diff|mode|implode|is_duplicated|"
                              r"is_first_distinct|is_last_distinct|gather\w*|slice|reverse)\(|(?<!list)\.len\(\)|int_range|"
                              r"^len\(\)|[\[( ]len\(\)")


def check_elementwise(spec: SubsetSpec) -> None:
    """Refuse a ``where`` that reads other rows than its own (``AVG(output_chars)``, windows):
    streaming evaluates it one batch at a time, where it would mean something else."""
    if not spec.where:
        return
    e = where_expr(spec.where, spec.entry)
    if _NOT_ELEMENTWISE.search(str(e)):
        raise SpecError(f"{spec.entry}: `where: {spec.where}` aggregates over rows (or uses a window); a streaming "
                        "build evaluates `where` one batch at a time: build without --streaming, or compare with "
                        "fixed numbers")
