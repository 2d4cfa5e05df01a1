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
the review log, :func:`cqia_nb.review.append_lines`). :func:`read_results` keeps the *latest*
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

import json
import math
import os
from datetime import date as _date
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl

__all__ = [
    "COLUMNS",
    "KEY",
    "ResultsError",
    "append_results",
    "base_vs_tuned_bars",
    "bootstrap_mean_ci",
    "class_radar",
    "comparison_table",
    "default_results_path",
    "read_results",
    "reference_results",
    "subset_bars",
    "validate_rows",
    "wilson_interval",
]

COLUMNS: dict[str, pl.DataType] = {
    "model": pl.String, "benchmark": pl.String, "subset": pl.String, "metric": pl.String,
    "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64, "shots": pl.Int64,
    "base_model": pl.String, "train_subset": pl.String, "source": pl.String, "date": pl.String,
    "notes": pl.String, "external": pl.Boolean,
}
KEY: tuple[str, ...] = ("model", "benchmark", "subset", "metric", "shots")
REQUIRED: tuple[str, ...] = ("model", "benchmark", "subset", "metric", "value")
#: metrics whose values are fractions; a percentage there is refused (72.0 is not an accuracy)
FRACTION_METRICS = frozenset({"accuracy", "mean_score", "overlap_f1", "win_rate"})
OUR_SOURCE = "cqia-notebooks"
REFERENCE_FILE = Path(__file__).resolve().parent / "resources" / "reference_results.yaml"
EXTERNAL_SUFFIX = " (external)"


class ResultsError(ValueError):
    """A results row or file that does not fit the schema; the message names where and what to do."""


# ----------------------------------------------------------------------------- statistics

def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
                      strata: Sequence[Any] | None = None) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of ``values`` (``(None, None)`` when empty).

    With ``strata`` (one label per value) each resample draws within every stratum, and the
    statistic is the *mean of the stratum means* (a macro average). Seeded: the same inputs give
    the same interval.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return None, None
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    if strata is None:
        stats = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    else:
        labels = np.asarray(list(strata), dtype=object)
        if labels.size != v.size:
            raise ValueError(f"{labels.size} strata labels for {v.size} values")
        groups = [v[labels == g] for g in dict.fromkeys(labels.tolist())]
        stats = np.mean([g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1) for g in groups], axis=0)
    a = (1 - ci) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return float(lo), float(hi)


def wilson_interval(successes: float, n: float, ci: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval for a proportion ``successes / n`` (``(None, None)`` for n = 0).

    ``successes`` may be fractional (ties counted as half a win): the interval is then the usual
    approximation with the same formula."""
    if n <= 0:
        return None, None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- the store

def default_results_path() -> Path:
    """``$CQIA_RESULTS``, else ``build/results/results.jsonl`` in the repository."""
    env = os.environ.get("CQIA_RESULTS", "").strip()
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "build" / "results" / "results.jsonl"


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
    from cqia_nb.review import append_lines

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
    for i, line in enumerate(data.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{p}:{i}: not valid JSON ({e.msg} at column {e.colno}); fix or delete that line") from None
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


# ----------------------------------------------------------------------------- tables

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
    r = r.with_columns(_label_expr().alias("model"))
    dup = r.group_by("model", "benchmark").len().filter(pl.col("len") > 1)
    if dup.height:
        first = dup.row(0, named=True)
        raise ResultsError(f"comparison_table: {first['len']} numbers for {first['model']!r} on {first['benchmark']!r}; "
                           "choose metric= and shots= so that one is left")
    return (r.pivot(on="benchmark", index="model", values="value", aggregate_function=None)
            .sort("model"))


def _label_expr() -> pl.Expr:
    return pl.when(pl.col("external")).then(pl.col("model") + EXTERNAL_SUFFIX).otherwise(pl.col("model"))


def _label(row: Mapping[str, Any]) -> str:
    return row["model"] + (EXTERNAL_SUFFIX if row.get("external") else "")


# ----------------------------------------------------------------------------- figures

def _error_arrays(frame: pl.DataFrame) -> dict[str, Any] | None:
    if frame["ci_low"].null_count() == frame.height:
        return None
    v = frame["value"].to_numpy()
    lo = frame["ci_low"].fill_null(frame["value"]).to_numpy()
    hi = frame["ci_high"].fill_null(frame["value"]).to_numpy()
    return dict(type="data", symmetric=False, array=hi - v, arrayminus=v - lo)


def subset_bars(results: pl.DataFrame, benchmarks: Sequence[str] | None = None, subset: str = "overall",
                metric: str | None = None, base_model: str | None = None,
                title: str | None = None) -> go.Figure:
    """Bars per training subset (x) and benchmark (colour), with CI error bars — the paper's
    per-subset comparison. Rows without ``train_subset`` are shown as "(base)"; ``base_model``
    keeps one base family."""
    r = results.filter(pl.col("subset") == subset)
    if metric is not None:
        r = r.filter(pl.col("metric") == metric)
    if benchmarks is not None:
        r = r.filter(pl.col("benchmark").is_in(list(benchmarks)))
    if base_model is not None:
        r = r.filter((pl.col("base_model") == base_model) | (pl.col("model") == base_model))
    r = r.with_columns(pl.col("train_subset").fill_null("(base)").alias("train_subset"))
    fig = go.Figure()
    for bench in dict.fromkeys(r["benchmark"].to_list()):
        part = r.filter(pl.col("benchmark") == bench)
        for external in (False, True):
            sub = part.filter(pl.col("external") == external)
            if sub.height == 0:
                continue
            fig.add_bar(x=sub["train_subset"].to_list(), y=sub["value"].to_list(),
                        name=bench + (EXTERNAL_SUFFIX if external else ""), error_y=_error_arrays(sub),
                        marker_pattern_shape="/" if external else "",
                        hovertext=[_label(x) for x in sub.iter_rows(named=True)])
    metric_name = metric or ", ".join(sorted(set(r["metric"].to_list()))) or "value"
    fig.update_layout(barmode="group", title=title or f"Per training subset ({subset}, {metric_name})",
                      xaxis_title="training subset", yaxis_title=metric_name, legend_title_text="benchmark")
    return fig


def class_radar(results: pl.DataFrame, models: Sequence[str] | None = None, benchmark: str = "belle_eval",
                metric: str = "mean_score", title: str | None = None) -> go.Figure:
    """Radar of per-class scores (BELLE-EVAL classes by default), one trace per model; the
    ``overall``/``macro`` rows are left out. External numbers are labelled "(external)"."""
    r = results.filter((pl.col("benchmark") == benchmark) & (pl.col("metric") == metric)
                       & ~pl.col("subset").is_in(["overall", "macro"]))
    if models is not None:
        r = r.filter(pl.col("model").is_in(list(models)))
    classes = sorted(set(r["subset"].to_list()))
    fig = go.Figure()
    for (model, external), part in r.group_by(["model", "external"], maintain_order=True):
        by = dict(zip(part["subset"].to_list(), part["value"].to_list()))
        vals = [by.get(c) for c in classes]
        fig.add_scatterpolar(r=vals + vals[:1], theta=classes + classes[:1], fill="toself", opacity=0.6,
                             name=model + (EXTERNAL_SUFFIX if external else ""),
                             line_dash="dash" if external else "solid")
    fig.update_layout(title=title or f"{benchmark}: {metric} per class",
                      # a polar angular axis has no title: the class names are its tick labels
                      polar=dict(radialaxis=dict(range=[0, 1] if metric in FRACTION_METRICS else None,
                                                 title=dict(text=metric))),
                      legend_title_text="model")
    return fig


def base_vs_tuned_bars(results: pl.DataFrame, benchmarks: Sequence[str] = ("ceval", "cmmlu"),
                       subset: str = "overall", metric: str = "accuracy", reference: pl.DataFrame | None = None,
                       title: str | None = None) -> go.Figure:
    """Grouped bars per benchmark: each model's ``metric`` (ours solid, with CIs; external
    reference numbers hatched and labelled "(external)"). ``reference`` defaults to
    :func:`reference_results` filtered to the same benchmarks."""
    if reference is None:
        reference = reference_results()
    both = pl.concat([results.filter(~pl.col("external")), reference.filter(pl.col("external"))], how="vertical")
    r = both.filter(pl.col("benchmark").is_in(list(benchmarks)) & (pl.col("subset") == subset)
                    & (pl.col("metric") == metric))
    r = r.with_columns(pl.when(pl.col("train_subset").is_null()).then(pl.lit("base"))
                       .otherwise(pl.lit("tuned")).alias("kind"))
    fig = go.Figure()
    for (model, external, kind), part in r.group_by(["model", "external", "kind"], maintain_order=True):
        shots = sorted({s for s in part["shots"].to_list() if s is not None})
        label = f"{model} · {kind}" + (f" · {shots[0]}-shot" if len(shots) == 1 else "") + \
            (EXTERNAL_SUFFIX if external else "")
        fig.add_bar(x=part["benchmark"].to_list(), y=part["value"].to_list(), name=label,
                    error_y=_error_arrays(part), marker_pattern_shape="/" if external else "",
                    hovertext=part["source"].to_list())
    fig.update_layout(barmode="group", title=title or f"Base vs tuned ({metric}, {subset}); hatched = external",
                      xaxis_title="benchmark", yaxis_title=metric, legend_title_text="model")
    return fig
