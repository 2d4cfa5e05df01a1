"""The results store's row: its columns, key and the metrics that are fractions, one definition for
the store (``cqia_nb.eval.results``) and the figures that plot it (``cqia_nb.ui.eval_plots``)."""

from __future__ import annotations

from typing import Any, Mapping

import polars as pl

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
EXTERNAL_SUFFIX = " (external)"


def label_expr() -> pl.Expr:
    """The model name, marked " (external)" for numbers published elsewhere."""
    return pl.when(pl.col("external")).then(pl.col("model") + EXTERNAL_SUFFIX).otherwise(pl.col("model"))


def result_label(row: Mapping[str, Any]) -> str:
    """``label_expr`` for one row."""
    return row["model"] + (EXTERNAL_SUFFIX if row.get("external") else "")
