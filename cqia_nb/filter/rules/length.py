"""Length and empty-answer rules."""

from __future__ import annotations

import dataclasses

import polars as pl

from cqia_nb.filter.framework import register
from cqia_nb.filter.rules.common import FieldSpec, TextFilter, fmt, series_of


@register
@dataclasses.dataclass
class LengthFilter(TextFilter):
    """Characters (Unicode code points) in ``field``; keeps ``min_chars <= value <= max_chars``.

    Defaults: output, 1 to 50,000. The shortest real CQIA answers are single letters (exam
    multiple choice, ``"A"``), so any minimum above 1 on the output drops good records; the
    longest real answer has 23,502 characters, so 50,000 only catches runaway texts (pasted
    logs, 1 MB strings). Use ``field: instruction+input`` for the prompt side (real minimum: 3).
    ``None`` disables a bound.
    """

    name = "length"
    description = "characters per field"
    threshold_fields = ("min_chars", "max_chars")
    field: FieldSpec = "output"
    min_chars: int | None = 1
    max_chars: int | None = 50_000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) > max_chars ({self.max_chars})")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return series_of(frame, self.text().str.len_chars())

    def keep(self, values: pl.Series) -> pl.Series:
        ok = pl.Series([True] * values.len(), dtype=pl.Boolean)
        if self.min_chars is not None:
            ok = ok & (values >= self.min_chars)
        if self.max_chars is not None:
            ok = ok & (values <= self.max_chars)
        return ok

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        lo = "-inf" if self.min_chars is None else self.min_chars
        hi = "inf" if self.max_chars is None else self.max_chars
        return pl.select(fmt("{} chars in {} (allowed {}..{})", pl.lit(values).cast(pl.Int64),
                                   pl.lit(self.field), pl.lit(str(lo)), pl.lit(str(hi)))).to_series()


INVISIBLE = r"[\s\p{P}\p{Cf}\p{Cc}\p{Z}]+"
VISIBLE = r"[^\s\p{P}\p{Cf}\p{Cc}\p{Z}]"


@register
@dataclasses.dataclass
class EmptyOutputFilter(TextFilter):
    """Visible characters of the answer: not whitespace, punctuation, zero-width or control
    characters. Keeps records with at least ``min_chars`` (default 1).

    Catches ``""``, ``"  "``, ``"\\u200b"``, ``"。"``, ``"..."``. A single digit or letter is a
    real answer in CQIA's exam config, so the default is 1; real data: 0 records dropped.
    """

    name = "empty_output"
    description = "answer has no visible characters"
    threshold_fields = ("min_chars",)
    field: FieldSpec = "output"
    min_chars: int = 1

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return series_of(frame, self.text().str.replace_all(INVISIBLE, "").str.len_chars())

    def keep(self, values: pl.Series) -> pl.Series:
        return values >= self.min_chars

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return series_of(frame, fmt("{} visible chars: \"{}\"", self.text().str.len_chars(),
                                        self.text().str.slice(0, 40)), "detail")
