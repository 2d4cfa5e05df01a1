"""Flagged words (a shipped Chinese list, or your own)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from cqia_nb.core.paths import resource
from cqia_nb.filter.framework import register
from cqia_nb.filter.rules.common import TextFilter, check_regex, escape_literal, series_of
from cqia_nb.filter.rules.length import INVISIBLE, VISIBLE


def shipped_words_file() -> Path:
    return resource("flagged_words_zh.txt")


@lru_cache(maxsize=16)
def read_words(path: str) -> tuple[str, ...]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"words_file {path!r} not found; give a UTF-8 text file with one word per line")
    words = []
    for line in p.read_text(encoding="utf-8").splitlines():
        w = line.strip()
        if w and not w.startswith("#"):
            words.append(w)
    return tuple(words)


@register
@dataclasses.dataclass
class FlaggedWordsFilter(TextFilter):
    """Words from a list: our shipped ``resources/flagged_words_zh.txt`` (spam services, ad
    calls to action, gambling/fraud, adult content, sale of drugs/weapons; ~70 terms we wrote),
    plus ``words_file`` and ``words`` (``use_shipped: false`` drops ours). Literal,
    case-insensitive matching.

    ``mode: ratio`` (default): characters inside matched words / visible characters of the
    text (Chinese has no word boundaries, so a character ratio replaces Data-Juicer's word
    ratio); keeps ``value <= max_ratio``. ``mode: count``: number of matches, keeps
    ``value <= max_count``.

    Default ``max_ratio: 0.04`` — one 4-character term per 100 visible characters: spam is
    dense with such terms, while answers that *discuss* a topic (human_value safety answers
    explaining why 代孕 or 色情网站 are illegal, douban synopses) mention one or two in a
    longer text. On the real data the highest ratio is 0.038 (a human_value answer), 0.01
    would drop 16 records (0.09 %) of that kind; 0.04 drops none.
    """

    name = "flagged_words"
    description = "share of characters in flagged words"
    threshold_fields = ("max_ratio", "max_count")
    words_file: str | None = None
    words: tuple[str, ...] = ()
    use_shipped: bool = True
    mode: Literal["ratio", "count"] = "ratio"
    max_ratio: float = 0.04
    max_count: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.words, str):
            self.words = (self.words,)
        self.words = tuple(self.words)
        ws: list[str] = []
        if self.use_shipped:
            ws += read_words(str(shipped_words_file()))
        if self.words_file:
            ws += read_words(str(Path(self.words_file).expanduser()))
        ws += [w.strip() for w in self.words if isinstance(w, str) and w.strip()]
        if not ws:
            raise ValueError("no words: keep use_shipped: true or give words / words_file")
        uniq = sorted({w.lower() for w in ws}, key=lambda w: (-len(w), w))  # longest first
        # case-insensitive only where a word has letters with case: a pure-literal alternation
        # keeps the regex engine's fast literal search
        self._regex = "|".join(f"(?i:{escape_literal(w)})" if w.upper() != w.lower() else escape_literal(w) for w in uniq)
        check_regex(self._regex, "word list")
        if self.mode not in ("ratio", "count"):
            raise ValueError(f"mode must be 'ratio' or 'count', got {self.mode!r}")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        t = self.text()
        if self.mode == "count":
            return series_of(frame, t.str.count_matches(self._regex))
        texts = series_of(frame, t, "t")
        hit = texts.str.contains(self._regex).to_numpy()
        out = np.where(texts.str.contains(VISIBLE).to_numpy(), 0.0, np.nan)
        idx = np.flatnonzero(hit)
        if len(idx):  # the few texts with a hit: characters inside matched words / visible ones
            sub = texts.gather(idx)
            matched = (sub.str.extract_all(self._regex)
                       .list.eval(pl.element().str.len_chars()).list.sum().fill_null(0).to_numpy())
            visible = sub.str.replace_all(INVISIBLE, "").str.len_chars().to_numpy()
            out[idx] = matched / np.maximum(visible, 1)
        return pl.Series("value", out).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= (self.max_ratio if self.mode == "ratio" else self.max_count)

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return series_of(frame, self.text().str.extract(self._regex, 0), "detail")
