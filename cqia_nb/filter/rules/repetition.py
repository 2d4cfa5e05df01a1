"""Repetition rules: repeated characters, repeated n-grams, the same line or sentence over and over."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from cqia_nb.filter.framework import register
from cqia_nb.filter.rules.common import FieldSpec, TextFilter, fmt, series_of
from cqia_nb.filter.rules.kernels import bmp_tables, codepoints, ngram_repeats, word_table, word_tokens


@register
@dataclasses.dataclass
class CharRepetitionFilter(TextFilter):
    """Character n-gram repetition, Data-Juicer's ``character_repetition_filter`` (from BigScience
    ROOTS): take all character ``rep_len``-grams of the text with their frequencies; with ``D``
    distinct n-grams, ``k = min(floor(sqrt(D)), number of n-grams seen more than once)``; value =
    (sum of the ``k`` highest frequencies) / (number of n-grams). 0 for texts shorter than
    ``rep_len``. Keeps ``value <= max_ratio``.

    Defaults ``rep_len: 10`` (Data-Juicer's) on the output, ``max_ratio: 0.5`` like
    Data-Juicer's: on real CQIA it drops 3 records (0.02 %, code dumps such as
    ``{a:{a:{a:…``). Note the definition: a text that is one short phrase repeated has few
    distinct n-grams, so its ratio is only ~1/sqrt(period) ("好好学习天天向上" x 20: 0.25);
    ``consecutive_repeats`` catches those.
    """

    name = "char_repetition"
    description = "share of the most repeated character n-grams"
    threshold_fields = ("max_ratio",)
    field: FieldSpec = "output"
    rep_len: int = 10
    max_ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rep_len < 1:
            raise ValueError(f"rep_len must be >= 1, got {self.rep_len}")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        cps, lengths = codepoints(series_of(frame, self.text()))
        rd, rc, total, distinct = ngram_repeats(cps, lengths, self.rep_len)
        n_docs = frame.height
        k = np.minimum(np.floor(np.sqrt(distinct)).astype(np.int64), np.bincount(rd, minlength=n_docs))
        if len(rc) and rc.max() >= 1 << 32:  # pragma: no cover - a text of 4 G characters
            order = np.lexsort((-rc, rd))  # by doc, most frequent first
            rd, rc = rd[order], rc[order]
        else:  # the same order from one sort of packed (doc, -frequency) keys (rd arrives sorted)
            packed = (rd << 32) | (0xFFFFFFFF - rc)
            packed.sort(kind="stable")
            rd, rc = packed >> 32, 0xFFFFFFFF - (packed & 0xFFFFFFFF)
        rank = np.arange(len(rd)) - np.searchsorted(rd, np.arange(n_docs))[rd]
        top_sel = rank < k[rd]
        top = np.bincount(rd[top_sel], weights=rc[top_sel], minlength=n_docs)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, top / np.maximum(total, 1), 0.0)
        return pl.Series("value", ratio)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return pl.select(fmt("{}% of {}-grams in the top repeats", (pl.lit(values) * 100).round(1),
                                   pl.lit(self.rep_len))).to_series()


#: "Word-ish" tokens: one CJK character, or a run of other letters/digits (lower-cased).
TOKEN = r"\p{Han}|[^\p{Han}\s\p{P}\p{S}\p{C}]+"


@register
@dataclasses.dataclass
class NgramRepetitionFilter(TextFilter):
    """Word n-gram repetition, Data-Juicer's ``word_repetition_filter`` (RedPajama's
    duplicated-n-gram fraction): value = (n-grams occurring more than once, counted with
    multiplicity) / (all n-grams), over "word-ish" tokens — each CJK character is a token,
    each run of other letters/digits is one (lower-cased); punctuation, symbols and spaces are
    not tokens. 0 when the text has fewer than ``rep_len`` tokens.

    Without a Chinese word segmenter a CJK character stands in for a word (Chinese words are
    1.5–2 characters long), so ``rep_len: 10`` tokens ≈ 5–7 words. Defaults ``rep_len: 10``
    (Data-Juicer's) and ``max_ratio: 0.6`` on the output: real CQIA exam explanations restate
    the chosen option ("……，因此答案为A" after the same sentence), and Data-Juicer's 0.5 drops
    46 real records (0.26 %), 0.6 drops 34 (0.19 %, answers pasted twice, code dumps) and
    still catches any text pasted twice (ratio ≈ 1).
    """

    name = "ngram_repetition"
    description = "share of repeated word-ish n-grams"
    threshold_fields = ("max_ratio",)
    field: FieldSpec = "output"
    rep_len: int = 10
    max_ratio: float = 0.6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rep_len < 1:
            raise ValueError(f"rep_len must be >= 1, got {self.rep_len}")
        bmp_tables()  # the tokeniser's code-point tables, built once

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        ids, lengths = word_tokens(series_of(frame, self.text()))
        rd, rc, total, _ = ngram_repeats(ids, lengths, self.rep_len)
        repeated = np.bincount(rd, weights=rc, minlength=frame.height)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, repeated / np.maximum(total, 1), 0.0)
        return pl.Series("value", ratio)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return pl.select(fmt("{}% of {}-token n-grams repeated", (pl.lit(values) * 100).round(1),
                                   pl.lit(self.rep_len))).to_series()


@register
@dataclasses.dataclass
class ConsecutiveRepeatsFilter(TextFilter):
    """A phrase repeated back to back — the tail of a looping generation
    ("综上所述综上所述综上所述…", "真的很好用真的很好用…"): value = the largest number of
    consecutive copies of any unit of ``min_unit``–``max_unit`` characters, counted after runs
    of one character are collapsed (so "哈哈哈哈哈哈", "======" and "！！！！" are not repeats) and
    only for units with a letter, digit or CJK character (so markdown table rules
    "| --- | --- |" and rows of emoji are not; xhs sticker codes such as "[赞R]" count as one
    symbol) whose repeated span is at least ``min_span`` characters. Code
    (fenced/inline) is removed first (``skip_code``). Keeps ``value <= max_repeats``.

    Why a separate filter: a loop of a 4-character phrase ten times in a 200-character answer
    raises the Data-Juicer-style ratios only to ~0.2 (``char_repetition``, ``ngram_repetition``),
    far below any threshold that spares real answers. Default ``max_repeats: 4``: on real CQIA
    it drops 1 record (a finance text listing ``'\u2002', `` ten times); ``3`` would drop 4.
    """

    name = "consecutive_repeats"
    description = "largest number of back-to-back copies of a phrase"
    threshold_fields = ("max_repeats",)
    field: FieldSpec = "output"
    max_repeats: int = 4
    min_unit: int = 2
    max_unit: int = 20
    min_span: int = 16
    skip_code: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.min_unit <= self.max_unit:
            raise ValueError(f"need 1 <= min_unit <= max_unit, got {self.min_unit}, {self.max_unit}")

    def _best(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(max repeats per record, unit length of that maximum)."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is frame:
            return cached[1]
        # xhs sticker codes ("[赞R]") become one symbol, so a row of stickers collapses
        text = self.text(self.skip_code).str.replace_all(r"\[[^\[\]\n]{1,8}R\]", "◇")
        cps, lengths = codepoints(series_of(frame, text))
        n_docs = frame.height
        best = np.zeros(n_docs, dtype=np.int64)
        unit = np.zeros(n_docs, dtype=np.int64)
        if len(cps):
            # one unique sentinel after each text: no run of equal pairs can cross it
            ends = np.cumsum(lengths)
            x = np.insert(cps.astype(np.int32), ends, 0x110000 + np.arange(n_docs, dtype=np.int32))
            keep = np.ones(len(x), dtype=bool)
            keep[1:] = x[1:] != x[:-1]  # collapse runs of one character
            x = x[keep]
            is_sentinel = x >= 0x110000
            doc_of = np.cumsum(is_sentinel) - is_sentinel  # sentinel k closes text k
            cls_t, _ = bmp_tables()
            bmp = x < 0x10000
            # letters, digits, CJK (not marks: emoji variation selectors are marks)
            word = np.where(bmp, word_table()[np.where(bmp, x, 0)], (x >= 0x20000) & (x <= 0x3FFFF))
            cw = np.concatenate(([0], np.cumsum(word)))
            for p in range(self.min_unit, self.max_unit + 1):
                if len(x) <= p:
                    break
                idx = np.flatnonzero(x[:-p] == x[p:])
                if len(idx) == 0:
                    continue
                brk = np.flatnonzero(np.diff(idx) != 1)
                starts = idx[np.concatenate(([0], brk + 1))]
                stops = idx[np.concatenate((brk, [len(idx) - 1]))]
                run = stops - starts + 1              # positions i with x[i] == x[i + p]
                reps = run // p + 1
                ok = (reps > 1) & (run + p >= self.min_span) & (cw[starts + p] - cw[starts] > 0)
                if not ok.any():
                    continue
                dd, rr = doc_of[starts[ok]], reps[ok]
                better = rr > best[dd]
                np.maximum.at(best, dd, rr)
                unit[dd[better]] = p
        self._cache = (frame, (best, unit))
        return best, unit

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return pl.Series("value", self._best(frame)[0].astype(np.float64))

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_repeats

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        best, unit = self._best(frame)
        self._cache = None
        return pl.Series("detail", [f"{b} copies of a {u}-char unit" if b > 1 else None
                                    for b, u in zip(best.tolist(), unit.tolist())], dtype=pl.String)
