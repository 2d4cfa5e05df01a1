"""Figures of the subset sweep (notebook 06): the train × eval heat map, the ranking with intervals,
and every seed's number beside the subset means. They read the frames of
``cqia_nb.eval.sweep.SweepResult`` (``matrix()``, ``ranking()``, ``scores()``); subset names are
dataset labels and are escaped by plotly's text rendering like any other string."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
import polars as pl

BEST_MARK = "★"
NOISE_MARK = "≈"


def _order(names: Sequence[str], preferred: Sequence[str] | None) -> list[str]:
    names = list(dict.fromkeys(names))
    if preferred:
        return [n for n in preferred if n in names] + [n for n in names if n not in preferred]
    return names


def _short(name: str) -> str:
    return name.split(".", 1)[1] if name.startswith(("group.", "config.")) else name


def sweep_heatmap(matrix: pl.DataFrame, value: str = "change", order: Sequence[str] | None = None,
                  title: str | None = None) -> go.Figure:
    """Rows: the subset a run was tuned on; columns: the subset whose held-out split it was scored
    on. Colour and number: ``value`` (``change``: mean held-out loss minus the base's, negative =
    better; or ``mean``: the loss itself), ``±`` half the seed interval. In each column ★ marks the
    best training subset and ≈ the ones whose interval overlaps the best's (within noise of it)."""
    if value not in ("change", "mean"):
        raise ValueError(f"value must be 'change' or 'mean', got {value!r}")
    rows = _order(matrix["train_subset"].to_list(), order)
    cols = _order(matrix["eval_subset"].to_list(), rows)
    cell = {(r["train_subset"], r["eval_subset"]): r for r in matrix.iter_rows(named=True)}
    z, text = [], []
    for tr in rows:
        zr, tr_text = [], []
        for ev in cols:
            c = cell.get((tr, ev))
            if c is None:
                zr.append(None)
                tr_text.append("")
                continue
            zr.append(c[value])
            half = (c["ci_high"] - c["ci_low"]) / 2 if c["ci_low"] is not None and c["ci_high"] is not None else None
            mark = f" {BEST_MARK}" if c["best"] else (f" {NOISE_MARK}" if c["within_noise"] else "")
            num = f"{c[value]:+.2f}" if value == "change" else f"{c[value]:.2f}"
            tr_text.append(num + (f"<br>±{half:.2f}" if half is not None else "") + mark)
        z.append(zr)
        text.append(tr_text)
    seeds = sorted(set(matrix["seeds"].to_list()))
    n = f"{seeds[0]} seeds" if len(seeds) == 1 else "seeds"
    fig = go.Figure(go.Heatmap(
        z=z, x=[_short(c) for c in cols], y=[_short(r) for r in rows], text=text, texttemplate="%{text}",
        colorscale="RdBu_r" if value == "change" else "Viridis", zmid=0 if value == "change" else None,
        colorbar=dict(title=dict(text="loss − base" if value == "change" else "held-out loss")),
        hovertemplate="tuned on %{y}<br>scored on %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_layout(
        title=title or (f"Held-out loss {'change vs the base' if value == 'change' else ''} (mean of {n}; "
                        f"{BEST_MARK} best in column, {NOISE_MARK} within noise of it)"),
        xaxis_title="held-out split of", yaxis_title="tuned on", yaxis_autorange="reversed",
        template="plotly_white")
    return fig


def sweep_ranking(ranking: pl.DataFrame, metric: str = "held-out loss (mean over subsets)",
                  title: str | None = None) -> go.Figure:
    """The training subsets in rank order: mean over seeds with its interval; those within noise of
    the best (intervals overlapping) in one colour and marked ≈, the others grey."""
    r = ranking.sort("rank")
    names = [_short(s) for s in r["train_subset"].to_list()]
    mean = r["mean"].to_numpy()
    lo = r["ci_low"].fill_null(r["mean"]).to_numpy()
    hi = r["ci_high"].fill_null(r["mean"]).to_numpy()
    fig = go.Figure()
    for flag, colour, label in ((True, "#1f77b4", f"{NOISE_MARK} within noise of the best"),
                                (False, "#9a9a9a", "distinguishable from the best")):
        idx = [i for i, v in enumerate(r["within_noise"].to_list()) if bool(v) == flag]
        if not idx:
            continue
        fig.add_scatter(x=[mean[i] for i in idx], y=[names[i] for i in idx], mode="markers", name=label,
                        marker=dict(size=11, color=colour),
                        error_x=dict(type="data", symmetric=False, array=[hi[i] - mean[i] for i in idx],
                                     arrayminus=[mean[i] - lo[i] for i in idx]),
                        text=[(f"{BEST_MARK} best" if r["best"][i] else NOISE_MARK if flag else "") for i in idx],
                        hovertemplate="%{y}: %{x:.3f} %{text}<extra></extra>")
    fig.update_layout(title=title or f"Ranking of training subsets by {metric} (mean and t interval over seeds)",
                      xaxis_title=metric, yaxis_title="tuned on", template="plotly_white",
                      yaxis=dict(categoryorder="array", categoryarray=names, autorange="reversed"))
    return fig


def sweep_seeds(scores: pl.DataFrame, metric: str, order: Sequence[str] | None = None,
                title: str | None = None) -> go.Figure:
    """Every seed's ``metric`` per training subset (dots) and the subset mean (bar): the
    seed-to-seed spread drawn beside the differences between subsets."""
    s = scores.filter(pl.col("metric") == metric)
    if s.height == 0:
        raise ValueError(f"no scores for metric {metric!r}")
    names = _order(s["train_subset"].to_list(), order)
    means = s.group_by("train_subset").agg(pl.col("value").mean())
    m = dict(zip(means["train_subset"].to_list(), means["value"].to_list()))
    fig = go.Figure()
    fig.add_bar(x=[_short(n) for n in names], y=[m[n] for n in names], name="mean over seeds",
                marker_color="rgba(31,119,180,0.35)")
    fig.add_scatter(x=[_short(n) for n in s["train_subset"].to_list()], y=s["value"].to_list(), mode="markers",
                    name="one seed", marker=dict(size=8, color="#d62728"),
                    text=[f"seed {x}" for x in s["seed"].to_list()],
                    hovertemplate="%{x}, %{text}: %{y:.3f}<extra></extra>")
    lo = min(s["value"].min(), min(m.values()))
    hi = max(s["value"].max(), max(m.values()))
    pad = (hi - lo) * 0.15 or abs(hi) * 0.05 or 1.0
    fig.update_layout(title=title or f"{metric}: each seed and the mean per training subset",
                      xaxis_title="tuned on", yaxis_title=metric, yaxis_range=[lo - pad, hi + pad],
                      template="plotly_white")
    return fig
