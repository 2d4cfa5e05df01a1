"""Evaluation results: one store for every benchmark, external reference numbers, comparison figures.

The store
---------
An append-only JSON Lines file (default ``build/results/results.jsonl`` in the repository, or
``$CQIA_RESULTS``), one row per model × benchmark × subset × metric × shots:

========== ======= ==================================================================
column     type    meaning
========== ======= ==================================================================
model      str     the model's display name (required)
benchmark  str     ``ceval``, ``cmmlu``, ``safetybench``, ``belle_eval``, ``human_pairwise`` … (required)
subset     str     ``overall``, ``macro``, a category, a BELLE-EVAL class, an opponent … (required)
metric     str     ``accuracy``, ``mean_score``, ``win_rate`` … (required)
value      float   the number (required); ``accuracy``/``mean_score``/``win_rate`` are fractions in [0, 1]
ci_low     float   lower end of the confidence interval (or null)
ci_high    float   upper end (or null)
n          int     items behind the number (or null)
shots      int     few-shot examples (null: not applicable, e.g. open generation)
base_model str     the base the model was tuned from (null: it *is* a base or unknown)
train_subset str   the CQIA subset / mixture it was tuned on (null: not tuned here)
source     str     ``cqia-notebooks`` for our runs, else where the number comes from (a URL)
date       str     ISO date (``YYYY-MM-DD``) of the run or of the source
notes      str     anything else (settings, caveats)
external   bool    true for numbers we did not measure (reference numbers)
========== ======= ==================================================================

The key is ``(model, benchmark, subset, metric, shots)``. :func:`append_results` checks every
row against the schema *before* writing anything (a bad row is an error naming its index and
field) and appends all rows at once, atomically (the same temp-file + ``os.replace`` writer as
the review log, :func:`cqia_nb.core.jsonl.append_lines`). :func:`read_results` keeps the *latest*
line per key (file order): re-running an evaluation replaces its numbers without rewriting the
file. A line that does not fit the schema is an error naming the file and line.

Reference numbers
-----------------
``cqia_nb/resources/reference_results.yaml`` holds numbers typed from their sources, each entry
with its source; :func:`reference_results` reads them as store rows with ``external`` true.
The figures draw them beside ours, labelled "(external)".

Statistics
----------
:func:`bootstrap_mean_ci` (seeded percentile bootstrap of a mean, optionally stratified) and
:func:`wilson_interval` (score interval for a proportion) are shared by the open-generation and
human evaluations.
"""

from __future__ import annotations

import math
import os
from datetime import date as _date
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import polars as pl

from cqia_nb.core.jsonl import append_lines, json_lines
from cqia_nb.core.paths import project_root, resource
from cqia_nb.core.results_schema import COLUMNS, FRACTION_METRICS, KEY, REQUIRED, label_expr

OUR_SOURCE = "cqia-notebooks"
REFERENCE_FILE = resource("reference_results.yaml")


class ResultsError(ValueError):
    """A results row or file that does not fit the schema; the message names where and what to do."""


def default_results_path() -> Path:
    """``$CQIA_RESULTS``, else ``build/results/results.jsonl`` in the repository."""
    env = os.environ.get("CQIA_RESULTS", "").strip()
    if env:
        return Path(env)
    return project_root() / "build" / "results" / "results.jsonl"


def _check_row(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise ResultsError(f"{where}: expected a mapping of column -> value, got {type(row).__name__}")
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ResultsError(f"{where}: unknown column(s) {unknown}; the columns are {list(COLUMNS)}")
    out: dict[str, Any] = {}
    for col, dtype in COLUMNS.items():
        v = row.get(col)
        if isinstance(v, float) and math.isnan(v):
            v = None
        if v is None:
            if col in REQUIRED:
                raise ResultsError(f"{where}: field {col!r} is required (give a value)")
            out[col] = None
            continue
        if dtype == pl.String:
            if col == "date" and isinstance(v, _date):
                v = v.isoformat()
            if not isinstance(v, str) or (col in REQUIRED and not v.strip()):
                raise ResultsError(f"{where}: field {col!r} must be a non-empty string, got {v!r}")
        elif dtype == pl.Float64:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(v)):
                raise ResultsError(f"{where}: field {col!r} must be a finite number, got {v!r}")
            v = float(v)
        elif dtype == pl.Int64:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 0:
                raise ResultsError(f"{where}: field {col!r} must be a non-negative integer, got {v!r}")
            v = int(v)
        elif dtype == pl.Boolean:
            if not isinstance(v, (bool, np.bool_)):
                raise ResultsError(f"{where}: field {col!r} must be true or false, got {v!r}")
            v = bool(v)
        out[col] = v
    if out["metric"] in FRACTION_METRICS:
        for col in ("value", "ci_low", "ci_high"):
            if out[col] is not None and not 0.0 <= out[col] <= 1.0:
                raise ResultsError(f"{where}: {out['metric']} is a fraction in [0, 1], but {col} is {out[col]!r} "
                                   "(divide percentages by 100)")
    if out["ci_low"] is not None and out["ci_high"] is not None and not out["ci_low"] <= out["ci_high"]:
        raise ResultsError(f"{where}: ci_low {out['ci_low']} is above ci_high {out['ci_high']}")
    if out["date"] is not None:
        try:
            _date.fromisoformat(out["date"])
        except ValueError:
            raise ResultsError(f"{where}: field 'date' must be an ISO date like 2024-03-26, got {out['date']!r}") from None
    if out["source"] is None:
        out["source"] = OUR_SOURCE
    if out["external"] is None:
        out["external"] = out["source"] != OUR_SOURCE
    return out


def validate_rows(rows: Iterable[Mapping[str, Any]] | pl.DataFrame, where: str = "row") -> list[dict[str, Any]]:
    """Every row checked and normalised to :data:`COLUMNS` (missing optional fields become null,
    ``source`` defaults to ``cqia-notebooks``, ``date`` to today, ``external`` to "source is not
    ours"). Raises :class:`ResultsError` naming the first bad row and field."""
    if isinstance(rows, pl.DataFrame):
        rows = rows.to_dicts()
    today = _date.today().isoformat()
    out = []
    for i, r in enumerate(rows):
        checked = _check_row(r, f"{where} {i}")
        if checked["date"] is None:
            checked["date"] = today
        out.append(checked)
    return out


def append_results(rows: Iterable[Mapping[str, Any]] | pl.DataFrame, path: str | Path | None = None) -> Path:
    """Check ``rows`` and append them to the store (all or none). Returns the store's path."""

    checked = validate_rows(rows)
    p = Path(path) if path is not None else default_results_path()
    if checked:
        append_lines(p, checked)
    return p


def _key_of(r: Mapping[str, Any]) -> tuple:
    return tuple(r.get(k) for k in KEY)


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=COLUMNS, orient="row") if rows else pl.DataFrame(schema=COLUMNS)


def read_results(path: str | Path | None = None, latest: bool = True, include_reference: bool = False) -> pl.DataFrame:
    """The store as a frame (:data:`COLUMNS`), latest line per key unless ``latest=False``
    (then every line, in file order). A missing file is an empty store. ``include_reference``
    appends :func:`reference_results`."""
    p = Path(path) if path is not None else default_results_path()
    rows: list[dict[str, Any]] = []
    try:
        data = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        data = ""
    except UnicodeDecodeError as e:
        raise ResultsError(f"{p}: not UTF-8 ({e.reason} at byte {e.start}); restore the file from a backup") from None
    for i, obj in json_lines(data, p, ResultsError, "; fix or delete that line"):
        try:
            rows.append(_check_row(obj, f"{p}:{i}"))
        except ResultsError as e:
            raise ResultsError(f"{e}; fix or delete that line") from None
    if latest:
        by_key: dict[tuple, dict[str, Any]] = {}
        for r in rows:
            by_key.pop(_key_of(r), None)  # re-insert: the latest line also takes the latest place
            by_key[_key_of(r)] = r
        rows = list(by_key.values())
    out = _frame(rows)
    if include_reference:
        out = pl.concat([out, reference_results()], how="vertical")
    return out


def reference_results(path: str | Path | None = None) -> pl.DataFrame:
    """The reference numbers (``cqia_nb/resources/reference_results.yaml``) as store rows,
    ``external`` true. Every entry must name its source."""
    import yaml

    p = Path(path) if path is not None else REFERENCE_FILE
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ResultsError(f"reference file {p} not found") from None
    entries = doc.get("references") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ResultsError(f"{p}: expected a top-level `references:` list")
    rows = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ResultsError(f"{p}: references[{i}] is not a mapping")
        e = dict(e)
        e.pop("reported", None)  # the figure as printed in the source, kept in the YAML for checking
        if not e.get("source") or e.get("source") == OUR_SOURCE:
            raise ResultsError(f"{p}: references[{i}] ({e.get('model')} {e.get('benchmark')}) needs `source:` "
                               "(where the number was published)")
        e["external"] = True
        rows.append(_check_row(e, f"{p}: references[{i}]"))
    return _frame(rows)


def comparison_table(results: pl.DataFrame, metric: str | None = None, subset: str = "overall",
                     shots: int | None = None) -> pl.DataFrame:
    """Models × benchmarks: one row per model (external ones marked), one column per benchmark,
    for one ``subset`` (and ``metric`` / ``shots`` when given)."""
    r = results.filter(pl.col("subset") == subset)
    if metric is not None:
        r = r.filter(pl.col("metric") == metric)
    if shots is not None:
        r = r.filter(pl.col("shots") == shots)
    if r.height == 0:
        return pl.DataFrame({"model": []}, schema={"model": pl.String})
    r = r.with_columns(label_expr().alias("model"))
    dup = r.group_by("model", "benchmark").len().filter(pl.col("len") > 1)
    if dup.height:
        first = dup.row(0, named=True)
        raise ResultsError(f"comparison_table: {first['len']} numbers for {first['model']!r} on {first['benchmark']!r}; "
                           "choose metric= and shots= so that one is left")
    return (r.pivot(on="benchmark", index="model", values="value", aggregate_function=None)
            .sort("model"))


