"""Figures of notebook 05: accuracy with intervals, BELLE-EVAL per class, base vs tuned beside published numbers."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl

from cqia_nb.core.results_schema import EXTERNAL_SUFFIX, FRACTION_METRICS, result_label


def plot_accuracy(result: Any, by: Literal["category", "subject"] = "category", title: str | None = None):
    """Bar chart of accuracy per category (or subject) with the bootstrap interval as error bars
    (``result``: a ``cqia_nb.eval.mc.MCResult``)."""

    df = result.by_category if by == "category" else result.by_subject
    df = df.sort("accuracy", descending=True)
    acc = df["accuracy"].to_numpy()
    fig = go.Figure(go.Bar(
        x=df[by].to_list(), y=acc,
        error_y=dict(type="data", symmetric=False, array=(df["ci_high"].to_numpy() - acc),
                     arrayminus=(acc - df["ci_low"].to_numpy())),
        customdata=np.stack([df["n"].to_numpy(), df["correct"].to_numpy()], axis=-1),
        hovertemplate="%{x}<br>accuracy %{y:.3f}<br>%{customdata[1]} / %{customdata[0]}<extra></extra>"))
    pct = int(round(result.config.ci * 100))
    fig.update_layout(
        title=title or f"{result.benchmark}: accuracy per {by} ({result.overall['shots']}-shot, {pct}% bootstrap CI)",
        xaxis_title=by, yaxis_title="accuracy", yaxis_range=[0, 1], template="plotly_white")
    if result.overall.get("n"):
        chance = float(np.mean([1 / max(1, sum(v is not None for v in r))
                                for r in result.per_question.select(pl.col("^prob_[A-Z]$")).rows()]
                               )) if result.config.mode == "loglikelihood" else 0.25
        fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    return fig


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
                        hovertext=[result_label(x) for x in sub.iter_rows(named=True)])
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
    reference numbers hatched and labelled "(external)"): pass ``cqia_nb.eval.results.reference_results()``
    as ``reference`` (None: ours only)."""
    if reference is None:
        reference = results.clear()
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
