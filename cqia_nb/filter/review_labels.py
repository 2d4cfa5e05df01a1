"""Human review decisions as pipeline steps: ``review_labels`` drops what a reviewer dropped,
``review_edits`` applies their edited answers (the log is ``cqia_nb.core.decisions``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import polars as pl

from cqia_nb.core.decisions import LABEL_SCHEMA, export_labels
from cqia_nb.filter.framework import Filter, Rewritten, Transform, register


def _labels_for(path: str, missing_ok: bool) -> pl.DataFrame:
    p = Path(path)
    if not p.is_file():
        if missing_ok:
            return pl.DataFrame(schema=LABEL_SCHEMA)
        raise ValueError(f"review log {p} not found; review some records first "
                         "(ReviewQueue(frame, path)) or set missing_ok: true")
    return export_labels(p)


@register
@dataclasses.dataclass
class ReviewLabelsFilter(Filter):
    """Human labels from a :class:`ReviewQueue` log (``path``): drops the records whose latest
    decision is drop (value 1.0, detail = the reviewer's note), keeps the rest (value 0.0 for
    keep/edit, null for records never reviewed). ``missing_ok: true`` keeps everything when the
    log does not exist yet (otherwise a wrong path is an error). The log is read when the step
    runs, so re-running the recipe picks up new decisions."""

    name: ClassVar[str] = "review_labels"
    description: ClassVar[str] = "drop records a reviewer labelled drop"
    path: str = ""
    missing_ok: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("review_labels needs `path:` (the review log written by ReviewQueue)")
        if not self.missing_ok and not Path(self.path).is_file():
            raise ValueError(f"review log {self.path} not found (set missing_ok: true to allow)")

    def required_columns(self) -> tuple[str, ...]:
        return ("record_id",)

    def _joined(self, frame: pl.DataFrame) -> pl.DataFrame:
        labels = _labels_for(self.path, self.missing_ok).select("record_id", "decision", "note")
        return (frame.select(pl.col("record_id").cast(pl.String))
                .join(labels, on="record_id", how="left", maintain_order="left"))

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        j = self._joined(frame)
        self._last = (frame.height, j)
        return j.select(pl.when(pl.col("decision") == "drop").then(1.0)
                        .when(pl.col("decision").is_not_null()).then(0.0)
                        .otherwise(None).alias("value")).to_series()

    def keep(self, values: pl.Series) -> pl.Series:
        return values.fill_null(0.0) < 0.5

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        last = getattr(self, "_last", None)
        j = last[1] if last is not None and last[0] == frame.height else self._joined(frame)
        return j.select(pl.when(pl.col("decision") == "drop").then(pl.col("note")).alias("detail")).to_series()


@register
@dataclasses.dataclass
class ReviewEditsTransform(Transform):
    """Apply the reviewers' edits from a :class:`ReviewQueue` log: the output of every record
    whose latest decision is edit becomes the edited text. Drops nothing (pair it with
    ``review_labels`` for the drops)."""

    name: ClassVar[str] = "review_edits"
    description: ClassVar[str] = "replace outputs with the reviewers' edits"
    path: str = ""
    missing_ok: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("review_edits needs `path:` (the review log written by ReviewQueue)")
        if not self.missing_ok and not Path(self.path).is_file():
            raise ValueError(f"review log {self.path} not found (set missing_ok: true to allow)")

    def required_columns(self) -> tuple[str, ...]:
        return ("record_id", "output")

    def transform(self, frame: pl.DataFrame) -> Rewritten:
        edits = (_labels_for(self.path, self.missing_ok).filter(pl.col("decision") == "edit")
                 .select("record_id", pl.col("edited_output").alias("__edited")))
        j = frame.select(pl.col("record_id").cast(pl.String)).join(edits, on="record_id", how="left",
                                                                   maintain_order="left")
        new = j["__edited"]
        changed = (new.is_not_null() & (new != frame["output"])).fill_null(False)
        out = frame.with_columns(pl.when(pl.lit(changed)).then(pl.lit(new)).otherwise(pl.col("output"))
                                 .alias("output"))
        return Rewritten(out, changed, changed.cast(pl.Float64))
