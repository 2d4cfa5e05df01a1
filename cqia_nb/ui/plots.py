"""Plotly figures over the record frame. Every figure is titled, axis-labelled and saveable.

These functions only read frames; they never load or change data.
"""

from __future__ import annotations

import os
from pathlib import Path

import plotly.express as px
import plotly.graph_objects as go
import polars as pl

from cqia_nb.core.paths import project_root

TEXT_FIELDS = ("instruction", "input", "output")


def figures_dir(override: str | Path | None = None) -> Path:
    """Where figures go: the argument, $CQIA_FIGURES_DIR, or ``figures/`` in the repository."""
    if override and str(override) != "auto":
        return Path(override)
    if os.environ.get("CQIA_FIGURES_DIR"):
        return Path(os.environ["CQIA_FIGURES_DIR"])
    return project_root() / "figures"


def save_figure(fig: go.Figure, name: str, folder: str | Path | None = None) -> Path:
    """Write ``fig`` as standalone HTML (plotly.js once per folder, so it opens offline)."""
    out = figures_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.html"
    fig.write_html(path, include_plotlyjs="directory", full_html=True)
    return path


def counts_bar(counts: pl.DataFrame, title: str = "Records per config") -> go.Figure:
    """Bar chart of ``records`` per ``config`` (``data.config_counts`` output)."""
    fig = px.bar(counts.to_pandas(), x="config", y="records", text="records", title=title)
    fig.update_layout(xaxis_title="HF config", yaxis_title="records")
    return fig


def card_vs_copy_bar(comparison: pl.DataFrame, title: str = "Dataset card vs this copy") -> go.Figure:
    """Grouped bars of card and copy counts per card category (``card.compare_with_card`` output)."""
    long = comparison.select("category", "card_count", "copy_count").unpivot(
        index="category", variable_name="where", value_name="records")
    long = long.with_columns(pl.col("where").replace({"card_count": "dataset card", "copy_count": "this copy"}))
    fig = px.bar(long.to_pandas(), x="category", y="records", color="where", barmode="group", title=title)
    fig.update_layout(xaxis_title="card category", yaxis_title="records", legend_title_text="")
    return fig


def length_box(frame: pl.DataFrame, unit: str = "chars", title: str | None = None) -> go.Figure:
    """Box plots of instruction / input / output length per config, in characters or tokens."""
    if unit == "chars":
        cols = [pl.col(f).str.len_chars().alias(f) for f in TEXT_FIELDS]
    else:
        cols = [pl.col(f"{f}_tokens").alias(f) for f in TEXT_FIELDS]
    long = frame.select("config", *cols).unpivot(index="config", variable_name="field", value_name="length")
    long = long.filter(pl.col("length") > 0)  # empty inputs are the norm; log axes cannot show 0
    fig = px.box(long.to_pandas(), x="config", y="length", color="field", log_y=True,
                 title=title or f"Length per config ({unit}, empty fields omitted)")
    fig.update_layout(xaxis_title="HF config", yaxis_title=f"length ({unit}, log scale)")
    return fig


def task_sunburst(frame: pl.DataFrame, title: str = "Task types: major → minor") -> go.Figure:
    """Sunburst of task_type major → minor (a record with several labels counts under each)."""
    long = (frame.select("task_type_major", "task_type_minor")
            .explode("task_type_major", empty_as_null=True).explode("task_type_minor", empty_as_null=True)
            .with_columns(pl.col("task_type_major").fill_null("(none)"), pl.col("task_type_minor").fill_null("(none)"))
            .group_by("task_type_major", "task_type_minor").len(name="records"))
    fig = px.sunburst(long.to_pandas(), path=["task_type_major", "task_type_minor"], values="records", title=title)
    return fig


def domain_treemap(frame: pl.DataFrame, title: str = "Domains per config") -> go.Figure:
    """Treemap config → domain label (multi-label records count under each label)."""
    long = (frame.select("config", "domain").explode("domain", empty_as_null=True)
            .with_columns(pl.col("domain").fill_null("(none)"))
            .group_by("config", "domain").len(name="records"))
    return px.treemap(long.to_pandas(), path=["config", "domain"], values="records", title=title)


def origin_heatmap(frame: pl.DataFrame, title: str = "Answer origin × human verification") -> go.Figure:
    """Heatmap: configs × (answer_from, human_verified) record counts."""
    t = (frame.with_columns(
            pl.when(pl.col("answer_from") == "").then(pl.lit("(blank)")).otherwise(pl.col("answer_from"))
            .alias("answer_from"))
         .with_columns((pl.col("answer_from") + pl.when(pl.col("human_verified"))
                        .then(pl.lit(" · verified")).otherwise(pl.lit(" · unverified"))).alias("origin"))
         .group_by("config", "origin").len(name="records")
         .pivot(on="origin", index="config", values="records").fill_null(0).sort("config"))
    cols = sorted(c for c in t.columns if c != "config")
    fig = go.Figure(go.Heatmap(z=t.select(cols).to_numpy(), x=cols, y=t["config"].to_list(),
                               colorscale="Blues", text=t.select(cols).to_numpy(), texttemplate="%{text}",
                               colorbar_title="records"))
    fig.update_layout(title=title, xaxis_title="answer_from · human_verified", yaxis_title="HF config")
    return fig


def filter_histogram(values: pl.DataFrame, step: str, thresholds: dict[str, float] | None = None,
                     title: str | None = None) -> go.Figure:
    """Histogram of one filter's measured values (``PipelineResult.measured[step]``), kept vs
    dropped coloured, with each threshold drawn as a vertical line."""
    df = values.filter(pl.col("value").is_not_null()).with_columns(
        pl.when(pl.col("keep")).then(pl.lit("kept")).otherwise(pl.lit("dropped")).alias("outcome"))
    fig = px.histogram(df.to_pandas(), x="value", color="outcome", nbins=40,
                       color_discrete_map={"kept": "#4c78a8", "dropped": "#e45756"},
                       title=title or f"{step}: measured value per record "
                                      f"({df.height} measured, {int((~df['keep']).sum())} dropped)")
    for name, t in (thresholds or {}).items():
        if t is not None:
            fig.add_vline(x=float(t), line_dash="dash", line_color="black", annotation_text=f"{name}={t}")
    fig.update_layout(xaxis_title=f"{step} value", yaxis_title="records", legend_title_text="")
    return fig


def steps_funnel(steps: pl.DataFrame, title: str = "Records left after each filter step") -> go.Figure:
    """Funnel of records remaining after each step (``PipelineResult.steps``)."""
    first = steps["records_in"][0] if steps.height else 0
    names = ["(input)"] + steps["name"].to_list()
    left = [first] + steps["kept"].to_list()
    fig = go.Figure(go.Funnel(y=names, x=left, textinfo="value+percent initial"))
    fig.update_layout(title=title, xaxis_title="records left", yaxis_title="step")
    return fig
