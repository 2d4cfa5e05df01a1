"""Rule filters: cheap, explainable checks on the text of each record.

Every filter here is a registered :class:`cqia_nb.filters.Filter` dataclass; its docstring says
what it measures and why its default. Defaults were calibrated on the real COIG-CQIA copy
(17,971 records, ``../shared/coig-cqia``): CQIA was already cleaned by its authors, so a rule
whose default drops more than a few tenths of a percent of it is miscalibrated for Chinese text
(Data-Juicer's ``special_characters_filter`` at 0.25 drops ~14 %: it counts full-width
punctuation as special). The calibration numbers are in each docstring; ``benchmarks/bench_rules.py``
re-measures the whole pipeline.

Implementation: polars expressions (Rust regex engine, so patterns have no look-around and no
back-references; an invalid user pattern fails when the recipe is built), and numpy over the
code points of all records concatenated: character classes are lookup tables built once from
the same regex classes; n-grams are polynomial hashes packed with the record index into one
uint64 and counted by one sort (10x faster than a polars group-by here). No per-record Python
loop. The one library call that is not vectorised, OpenCC's conversion, is made once on the
texts that contain a convertible character (3 % of the real records), joined by a
private-use separator. Details (matched text ...) are computed for dropped records only.

``field`` parameters name one text column (``"output"``) or several joined by ``+``
(``"instruction+input"``; joined with a newline). Nulls count as empty strings everywhere.

OpenCC: we use the PyPI package ``opencc`` (1.4.2, the project's C++ library with its own
dictionaries in a wheel). Benchmarked on the 17,971 real records (instruction+input+output,
~9.7 M characters, t2s): ``opencc`` 0.37–0.47 s, ``opencc-python-reimplemented`` 0.1.7 50–65 s
per record or 22 s joined (≈130× slower); the two disagree on 19 records (the C++ one has
newer phrase tables). Both install into the same ``opencc`` import name, so only one can be
present.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import polars as pl

from cqia_nb.filters import Filter, Rewritten, Transform, register

TEXT_FIELDS = ("instruction", "input", "output")
ALL_TEXT = "instruction+input+output"
FieldSpec = str | tuple[str, ...]

#: Fenced code blocks (an unclosed fence runs to the end) and inline code spans.
FENCED_CODE = r"(?s)```.*?(?:```|\z)"
INLINE_CODE = r"`[^`\n]{1,200}`"


# ----------------------------------------------------------------------------- helpers

def parse_fields(spec: FieldSpec) -> tuple[str, ...]:
    """``"instruction+input"`` or ``["instruction", "input"]`` -> ("instruction", "input")."""
    parts = [p.strip() for p in spec.split("+")] if isinstance(spec, str) else [str(p).strip() for p in spec]
    if not parts or any(not p for p in parts):
        raise ValueError(f"field {spec!r}: name one column (e.g. 'output') or several joined by '+' "
                         "(e.g. 'instruction+input')")
    return tuple(parts)


def text_expr(spec: FieldSpec, strip_code: bool = False) -> pl.Expr:
    """The text of ``spec``'s columns (nulls as ""), joined by newlines; optionally without code."""
    cols = [pl.col(c).cast(pl.String).fill_null("") for c in parse_fields(spec)]
    e = cols[0] if len(cols) == 1 else pl.concat_str(cols, separator="\n")
    if strip_code:
        e = e.str.replace_all(FENCED_CODE, "\n").str.replace_all(INLINE_CODE, " ")
    return e


def _short(msg: str) -> str:
    lines = [l for l in str(msg).splitlines() if l.strip()]
    err = [l.strip() for l in lines if l.strip().startswith("error:")]
    return err[0] if err else (lines[0] if lines else str(msg))


def check_regex(pattern: str, what: str = "pattern") -> str:
    """Compile ``pattern`` with the engine the filters use; a clear ValueError otherwise."""
    if not isinstance(pattern, str) or pattern == "":
        raise ValueError(f"{what} {pattern!r}: give a non-empty regular expression")
    try:
        matches_empty = pl.select(pl.lit("").str.contains(pattern)).item()
    except pl.exceptions.PolarsError as e:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression ({_short(e)}). "
                         "Patterns use the Rust regex syntax of polars: no look-around, no back-references; "
                         "escape literal ( ) [ ] { } . + ? * | with a backslash") from None
    if matches_empty:
        raise ValueError(f"{what} {pattern!r} matches the empty string, so it would match every record; "
                         "make it require at least one character (e.g. '+' instead of '*')")
    return pattern


def _escape(word: str) -> str:
    return "".join("\\" + ch if ch in r"\.^$|?*+()[]{}-&~#" else ch for ch in word)


def fmt(template: str, *args: pl.Expr) -> pl.Expr:
    """``pl.format`` built from ``concat_str`` (polars 2.1's ``pl.format`` panics on some
    filtered string-view columns of empty strings); nulls render as "null"."""
    pieces = template.split("{}")
    if len(pieces) != len(args) + 1:
        raise ValueError("template placeholders and arguments differ")
    parts: list[pl.Expr] = []
    for text, arg in zip(pieces, [*args, None]):
        if text:
            parts.append(pl.lit(text, dtype=pl.String))
        if arg is not None:
            parts.append(arg.cast(pl.String).fill_null("null"))
    return pl.concat_str(parts)


def _series(frame: pl.DataFrame, expr: pl.Expr, name: str = "value") -> pl.Series:
    return frame.select(expr.alias(name)).to_series()


def _cls(*ranges: tuple[int, int] | int) -> str:
    """A regex class body from code points / ranges (``\\x{...}`` escapes)."""
    out = []
    for r in ranges:
        a, b = (r, r) if isinstance(r, int) else r
        out.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
    return "".join(out)


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads token ids before the polynomial n-gram hash."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _codepoints(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """All texts' code points concatenated (uint32) and each text's length in code points."""
    texts = texts.cast(pl.String).fill_null("")
    lengths = texts.str.len_chars().cast(pl.Int64).to_numpy()
    joined = "".join(texts.to_list())
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32) if joined else np.zeros(0, np.uint32)
    return cps, lengths


@lru_cache(maxsize=32)
def _bmp_class_table(pattern: str) -> np.ndarray:
    """Which BMP code points match the one-character regex class ``pattern``: evaluated with
    polars' own engine once, so the table and the regex agree by construction."""
    chars = [chr(c) if not 0xD800 <= c <= 0xDFFF else "\ufffd" for c in range(0x10000)]
    table = pl.Series(chars).str.contains(f"^(?:{pattern})$").to_numpy().copy()
    table[0xD800:0xE000] = False  # surrogates never occur in valid UTF-8
    return table


def class_mask(cps: np.ndarray, pattern: str) -> np.ndarray:
    """Boolean per code point: does the character match the one-character class ``pattern``."""
    table = _bmp_class_table(pattern)
    if len(cps) == 0 or cps.max() < 0x10000:
        return table[cps]
    bmp = cps < 0x10000
    out = table[np.where(bmp, cps, 0)] & bmp
    if not bmp.all():  # astral characters (emoji, extension B): ask the regex for the few distinct ones
        uniq = np.unique(cps[~bmp])
        hit = pl.Series([chr(int(c)) for c in uniq]).str.contains(f"^(?:{pattern})$").to_numpy()
        out[~bmp] = hit[np.searchsorted(uniq, cps[~bmp])]
    return out


def per_text_sum(mask: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-text count of True in ``mask`` (code points of all texts concatenated)."""
    cs = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    ends = np.cumsum(lengths)
    return cs[ends] - cs[ends - lengths]


def ngram_keys(tokens: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Sorted n-gram keys of all documents: ``doc << (64 - doc_bits) | hash >> doc_bits``.

    ``tokens`` are the uint64 ids of all documents' tokens concatenated, ``lengths`` the tokens
    per document. n-grams are 64-bit polynomial hashes of the mixed ids, truncated to
    ``64 - doc_bits`` bits (49 bits for 18k records): two different n-grams of one text collide
    with probability ~ m²/2⁵⁰ for m n-grams, negligible for a ratio. Sorting the packed keys
    (numpy, one array) groups equal n-grams of each document; it is ~10x faster than a polars
    group-by on (doc, hash) here.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n_docs = len(lengths)
    doc_bits = max(1, int(max(n_docs - 1, 0)).bit_length())
    if doc_bits > 32:
        raise ValueError("more than 2**32 records in one call")
    m = int(lengths.sum()) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64), doc_bits
    with np.errstate(over="ignore"):  # one odd multiply spreads small ids (code points) over 64 bits
        t = np.multiply(tokens, np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
    h = _window_hash(t, n)
    del t
    shift = np.uint64(64 - doc_bits)
    h >>= np.uint64(doc_bits)
    h |= np.repeat(np.arange(n_docs, dtype=np.uint64) << shift, lengths)[:m]
    # windows that run past the end of their document: the last n-1 starts of each
    ends = np.cumsum(lengths)
    starts = ends - lengths
    bad = (ends[:, None] - np.arange(1, n, dtype=np.int64)[None, :])
    bad = bad[(bad >= starts[:, None]) & (bad < m)]
    if len(bad):
        valid = np.ones(m, dtype=bool)
        valid[bad] = False
        keys = h[valid]
    else:
        keys = h
    _sort_doc_major(keys, 64 - doc_bits)
    return keys, doc_bits


def _window_hash(t: np.ndarray, n: int) -> np.ndarray:
    """h[i] = sum_k t[i+k] * B**(n-1-k) (mod 2**64) for every window of n tokens: Horner's
    rule in place on one buffer (2 passes per token of the window, no temporaries: fresh
    allocations cost more than the arithmetic on these machines)."""
    base = np.uint64(0x100000001B3)
    m = len(t) - n + 1
    h = t[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            np.multiply(h, base, out=h)
            np.add(h, t[k:k + m], out=h)
    return h


def _sort_doc_major(keys: np.ndarray, shift: int, chunk: int = 1 << 16) -> None:
    """Sort packed keys in place. They arrive grouped by document (the high bits), so sorting
    document-aligned chunks of ~64k keys gives the fully sorted array; the chunks fit in cache
    and the sort is ~2x faster than one ``keys.sort()`` of 10 M keys."""
    n = len(keys)
    if n <= chunk:
        keys.sort()
        return
    docs = keys >> np.uint64(shift)
    starts = np.flatnonzero(docs[1:] != docs[:-1]) + 1
    if len(starts) == 0:
        keys.sort()
        return
    cuts = np.unique(starts[np.minimum(np.searchsorted(starts, np.arange(chunk, n, chunk)), len(starts) - 1)])
    bounds = [0, *cuts.tolist(), n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a > 1:
            keys[a:b].sort()


def ngram_runs(tokens: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct n-grams per document as (doc index, frequency) arrays, one entry per distinct n-gram."""
    keys, doc_bits = ngram_keys(tokens, lengths, n)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    counts = np.diff(np.concatenate((starts, [len(keys)])))
    docs = (keys[starts] >> np.uint64(64 - doc_bits)).astype(np.int64)
    return docs, counts


def ngram_repeats(tokens: np.ndarray, lengths: np.ndarray, n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The repeated n-grams only: (doc index, frequency) of every n-gram seen more than once in
    its document, plus per document the number of n-grams and of distinct n-grams. Found from
    the equal neighbours of the sorted keys, so no array of all distinct n-grams is built
    (most n-grams of a text are unique)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = np.maximum(lengths - n + 1, 0)
    keys, doc_bits = ngram_keys(tokens, lengths, n)
    empty = np.zeros(0, dtype=np.int64)
    if len(keys) < 2:
        return empty, empty, total, total.copy()
    shift = np.uint64(64 - doc_bits)
    idx = np.flatnonzero(keys[1:] == keys[:-1])      # i where key i repeats at i + 1
    if len(idx) == 0:
        return empty, empty, total, total.copy()
    distinct = total - np.bincount((keys[idx] >> shift).astype(np.int64), minlength=len(lengths))
    brk = np.flatnonzero(np.diff(idx) != 1)
    first = idx[np.concatenate(([0], brk + 1))]
    last = idx[np.concatenate((brk, [len(idx) - 1]))]
    return (keys[first] >> shift).astype(np.int64), last - first + 2, total, distinct


@lru_cache(maxsize=1)
def _bmp_tables() -> tuple[np.ndarray, np.ndarray]:
    """Token class (0 skip, 1 Han, 2 word character) and lower-case code point for the BMP."""
    import unicodedata

    cls = np.zeros(0x10000, dtype=np.uint8)
    lower = np.arange(0x10000, dtype=np.uint32)
    for cp in range(0x10000):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat[0] in "LNM":
            cls[cp] = 2
        lo = ch.lower()
        if len(lo) == 1:
            lower[cp] = ord(lo)
    for a, b in _HAN_RANGES:
        cls[a:min(b, 0xFFFF) + 1] = 1
    return cls, lower


@lru_cache(maxsize=1)
def _word_table() -> np.ndarray:
    """BMP code points that are letters, digits or CJK (Unicode L*, N*)."""
    import unicodedata

    t = np.array([unicodedata.category(chr(cp))[0] in "LN" for cp in range(0x10000)], dtype=bool)
    for a, b in _HAN_RANGES:
        t[a:min(b, 0xFFFF) + 1] = True
    return t


_HAN_RANGES = ((0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3400, 0x4DBF),
               (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


def word_tokens(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """"Word-ish" token ids of each text (see ``TOKEN``): each CJK character is a token, each
    run of other letters/digits/marks one token (lower-cased); the rest separates tokens.
    Returns (uint64 ids of all texts concatenated, tokens per text). Pure numpy."""
    cps, lengths = _codepoints(texts)
    if len(cps) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(len(lengths), dtype=np.int64)
    cls_t, low_t = _bmp_tables()
    if cps.max() < 0x10000:
        cls, low = cls_t[cps], low_t[cps]
    else:
        bmp = cps < 0x10000
        idx = np.where(bmp, cps, 0)
        cls = np.where(bmp, cls_t[idx], 0).astype(np.uint8)
        cls[(cps >= 0x20000) & (cps <= 0x3FFFF)] = 1
        low = np.where(bmp, low_t[idx], cps)
    word = cls == 2
    doc_start = np.zeros(len(cps), dtype=bool)
    doc_start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    run_start = word & (doc_start | np.concatenate(([False], ~word[:-1])))
    # word runs, computed on the word characters only (a minority in Chinese text)
    w = np.flatnonzero(word)
    ids = low.astype(np.uint64)
    if len(w):
        ws = run_start[w]                       # run starts, in word-character space
        wpos = np.arange(len(w), dtype=np.int64)
        offset = (wpos - np.maximum.accumulate(np.where(ws, wpos, 0))).astype(np.uint64)
        with np.errstate(over="ignore"):
            contrib = _mix(ids[w] * np.uint64(0x10001) + offset * np.uint64(0x9E3779B1))
            run_ids = np.add.reduceat(contrib, np.flatnonzero(ws))
        ids[run_start] = run_ids | np.uint64(1 << 63)  # word ids apart from code points
    take = (cls == 1) | run_start
    counts = per_text_sum(take, lengths)
    return ids[take], counts


# ----------------------------------------------------------------------------- base classes

@dataclasses.dataclass
class _TextFilter(Filter):
    """A filter over one text (``field``); subclasses override the default field."""

    details_per_record = True
    field: FieldSpec = ALL_TEXT

    def __post_init__(self) -> None:
        self._fields = parse_fields(self.field)
        self.field = "+".join(self._fields)

    def required_columns(self) -> tuple[str, ...]:
        return self._fields

    def text(self, strip_code: bool = False) -> pl.Expr:
        return text_expr(self._fields, strip_code)


@dataclasses.dataclass
class _PatternFilter(_TextFilter):
    """Counts regex matches; keeps records with at most ``max_count``; detail = first match.

    ``patterns`` adds user regexes (Rust syntax, checked when the recipe is built);
    ``replace_defaults: true`` uses only them. ``skip_code`` ignores fenced and inline code.
    """

    max_count: int = 0
    patterns: tuple[str, ...] = ()
    replace_defaults: bool = False
    skip_code: bool = False
    DEFAULT_PATTERNS: ClassVar[tuple[str, ...]] = ()
    threshold_fields: ClassVar[tuple[str, ...]] = ("max_count",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.patterns, str):
            self.patterns = (self.patterns,)
        self.patterns = tuple(self.patterns)
        for i, p in enumerate(self.patterns, start=1):
            check_regex(p, f"patterns[{i}]")
        pats = self.patterns if self.replace_defaults else (*self.DEFAULT_PATTERNS, *self.patterns)
        if not pats:
            raise ValueError("no patterns: give `patterns:` when `replace_defaults: true`")
        if self.max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {self.max_count}")
        self._regex = "|".join(f"(?:{p})" for p in pats)

    def ignore_regex(self) -> str | None:
        """Matches that also match this regex are not counted (allow-lists); None: count all."""
        return None

    def _matches(self) -> pl.Expr:
        m = self.text(self.skip_code).str.extract_all(self._regex)
        ign = self.ignore_regex()
        if ign is not None:
            m = m.list.eval(pl.element().filter(~pl.element().str.contains(ign)))
        return m

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        if self.ignore_regex() is None:
            return _series(frame, self.text(self.skip_code).str.count_matches(self._regex))
        return _series(frame, self._matches().list.len().fill_null(0))

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_count

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        if self.ignore_regex() is None:
            first = self.text(self.skip_code).str.extract(self._regex, 0)
        else:
            first = self._matches().list.first()
        return _series(frame, first.str.slice(0, 200), "detail")


# ----------------------------------------------------------------------------- length / empty

@register
@dataclasses.dataclass
class LengthFilter(_TextFilter):
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
        return _series(frame, self.text().str.len_chars())

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


_INVISIBLE = r"[\s\p{P}\p{Cf}\p{Cc}\p{Z}]+"
_VISIBLE = r"[^\s\p{P}\p{Cf}\p{Cc}\p{Z}]"


@register
@dataclasses.dataclass
class EmptyOutputFilter(_TextFilter):
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
        return _series(frame, self.text().str.replace_all(_INVISIBLE, "").str.len_chars())

    def keep(self, values: pl.Series) -> pl.Series:
        return values >= self.min_chars

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return _series(frame, fmt("{} visible chars: \"{}\"", self.text().str.len_chars(),
                                        self.text().str.slice(0, 40)), "detail")


# ----------------------------------------------------------------------------- contact, links, ads

# ASCII word boundary: CJK characters count as non-word, so "电话13812345678" matches.
_B = r"(?-u:\b)"
_MOBILE = r"1[3-9][0-9](?:[- ]?[0-9]{4}){2}"


@register
@dataclasses.dataclass
class PhoneFilter(_PatternFilter):
    """Chinese phone numbers: mobiles ``1[3-9]x xxxx xxxx`` (spaces/dashes allowed, optional
    ``+86``/``86``/``0086``), landlines ``0xx(x)-xxxxxxx(x)`` or ``(0xx)xxxxxxxx``, and
    ``400``/``800`` service numbers. Digit runs must stand alone (a 15-digit id does not match).

    Default ``max_count: 0`` with ``skip_code: true``: a contact number in an instruction pair
    is an ad or personal data; digits in code (ids, file names) are not. Real data: 2 records
    (landlines in finance news).
    """

    name = "phone"
    description = "phone numbers (mobile, landline, 400/800)"
    skip_code: bool = True
    DEFAULT_PATTERNS = (
        rf"\+86[- ]?{_MOBILE}{_B}",
        rf"{_B}(?:00)?(?:86[- ]?)?{_MOBILE}{_B}",
        rf"{_B}0[1-9][0-9]{{1,2}}-[2-9][0-9]{{6,7}}{_B}",
        rf"[(（]0[1-9][0-9]{{1,2}}[)）][- ]?[2-9][0-9]{{6,7}}{_B}",
        rf"{_B}[48]00[- ]?[0-9]{{3}}[- ]?[0-9]{{4}}{_B}",
    )


@register
@dataclasses.dataclass
class EmailFilter(_PatternFilter):
    """E-mail addresses (``name@host.tld``, TLD of 2+ letters, so ``pkg@1.2.3`` does not match;
    ``pkg@x.y/index.js``-style module paths, whose "TLD" is a file extension, are not counted).

    Default ``max_count: 0`` with ``skip_code: true`` (addresses in code samples are examples).
    Real data at default: 7 records (6 finance news items with "联系run@ebrun.com", a douban
    call for papers), all real contact addresses.
    """

    name = "email"
    description = "e-mail addresses"
    skip_code: bool = True
    DEFAULT_PATTERNS = (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}" + _B,)
    FILE_EXTENSIONS: ClassVar[str] = (
        "js|jsx|ts|tsx|vue|css|scss|less|html?|json|xml|ya?ml|md|py|java|go|rs|php|rb|sh|txt|png|jpe?g|gif|svg|map")

    def ignore_regex(self) -> str | None:
        return rf"(?i)\.(?:{self.FILE_EXTENSIONS})$"


_URL_STOP = r"\s<>\"'，。！？、；：（）【】《》「」“”‘’"
_TLDS = r"com|cn|net|org|top|xyz|cc|vip|info|shop|club|site|online|me|tv|io"


@register
@dataclasses.dataclass
class UrlFilter(_PatternFilter):
    """URLs: ``http(s)://``/``ftp://`` links, ``www.`` hosts, and bare domains under common
    TLDs (``example.cn``, ``shop.xyz/a``) that stand alone (not ``obj.com.method``-like code).

    Default ``max_count: 0`` with ``skip_code: true``: links inside fenced or inline code in
    segmentfault answers (``require('http://...')``, config files) are part of the answer.
    ``allow_domains`` (hosts and their subdomains) are not counted: by default documentation
    and reference sites that good technical answers cite (github.com, developer.mozilla.org,
    stackoverflow.com, wikipedia.org, arxiv.org, doi.org, python.org, w3.org, gov.cn ...);
    set ``allow_domains: []`` to count every link (then 141 real records). Real data at
    default: 118 records (0.66 %),
    mostly finance news with source links, douban reviews linking to video/event pages,
    watermarks in exam texts ("书村网www.mcqyy.com") and pan.baidu.com shares in zhihu.
    """

    name = "url"
    description = "links and domains"
    skip_code: bool = True
    allow_domains: tuple[str, ...] = (
        "github.com", "gitee.com", "stackoverflow.com", "segmentfault.com", "developer.mozilla.org",
        "w3.org", "python.org", "nodejs.org", "npmjs.com", "jsfiddle.net", "codepen.io",
        "wikipedia.org", "arxiv.org", "doi.org", "gov.cn")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.allow_domains, str):
            self.allow_domains = (self.allow_domains,)
        self.allow_domains = tuple(d.strip().lower().lstrip(".") for d in self.allow_domains if d.strip())
        bad = [d for d in self.allow_domains if not re.fullmatch(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+", d)]
        if bad:
            raise ValueError(f"allow_domains {bad}: give host names such as 'github.com'")

    def ignore_regex(self) -> str | None:
        if not self.allow_domains:
            return None
        doms = "|".join(_escape(d) for d in self.allow_domains)
        return rf"(?i)^[^a-z0-9]*(?:[a-z]+://)?(?:[a-z0-9-]+\.)*(?:{doms})(?:[^a-z0-9.-]|\.[^a-z0-9]|\.?$)"

    DEFAULT_PATTERNS = (
        rf"(?i)(?:https?|ftp)://[^{_URL_STOP}]+",
        rf"(?i){_B}www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+[^{_URL_STOP}]*",
        rf"(?i)(?:^|[^A-Za-z0-9._/@-])[a-z0-9][a-z0-9-]{{0,62}}(?:\.[a-z0-9-]{{1,63}})*\.(?:{_TLDS})(?:\.cn)?"
        rf"(?:/[^{_URL_STOP}]*)?{_B}(?:[^.A-Za-z0-9(]|$)",
    )

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        d = super().details(frame, values)
        # the bare-domain pattern includes one boundary character on each side
        return d.str.strip_chars(" \t\n,;:!?()[]{}<>\"'，。！？、；：（）【】《》「」“”‘’") if d is not None else None


@register
@dataclasses.dataclass
class QQWechatFilter(_PatternFilter):
    """QQ numbers and WeChat ids: ``QQ``/``扣扣``/``QQ群`` followed by 5–11 digits;
    ``微信``/``威信``/``薇信``/``V信`` followed by an id (letter + 5–19 of ``[-_A-Za-z0-9]``, or
    6–11 digits); ``vx``/``wx``/``wechat``/``weixin`` need a ``:``/``号`` before the id so that
    code like ``wxWidgets`` does not match.

    Default ``max_count: 0``: contact ids are ads or personal data. Real data: 4 records
    (finance news with "微信: …" ads).
    """

    name = "qq_wechat"
    description = "QQ numbers and WeChat ids"
    DEFAULT_PATTERNS = (
        rf"(?i)(?:qq|扣扣|企鹅)(?:号码|号|群号|群)?\s*[:：]?\s*[1-9][0-9]{{4,10}}{_B}",
        rf"(?:微信|威信|薇信|[Vv]信)(?:号|公众号|id|ID)?\s*[:：]?\s*(?:[A-Za-z][-_A-Za-z0-9]{{5,19}}|[0-9]{{6,11}}){_B}",
        rf"(?i){_B}(?:vx|wx|wechat|weixin)\s*(?:号|id)?\s*[:：]\s*[A-Za-z0-9][-_A-Za-z0-9]{{5,19}}{_B}",
    )


@register
@dataclasses.dataclass
class AdsFilter(_PatternFilter):
    """Advertising calls to action: "加微信/加V", "扫码关注/领取", "关注公众号", "点击链接领取",
    "【点击领取】", "私信领取", "免费领取 … 点击/扫码/链接" (both orders, within 20 characters),
    "限时抢购/秒杀/特价", "全场五折", "领券链接/下单返现", "招代理/加盟", "咨询热线: 1…", "厂家直销",
    "一对一跟单", "活动地址:", "进群领取", "淘宝搜索:".

    Value = number of matches; default ``max_count: 0``. The patterns are phrased as calls to
    action so that text that *talks about* promotions passes: on the real data, bare keywords
    ("免费领取", "客服电话", "买一送一", "全网最低价") hit douban reviews, ruozhiba answers
    ("拨打银行客服电话") and xhs shopping notes that CQIA accepted; these phrases hit 8 records
    (0.04 %), real ads in finance news and zhihu answers and xhs promotion notes.
    """

    name = "ads"
    description = "advertising calls to action"
    DEFAULT_PATTERNS = (
        r"(?i)加(?:我|本人|小编|客服)?(?:的)?(?:微信|v信|vx|wx|qq|扣扣|好友)",
        r"扫(?:码|描二维码|一扫|描下方二维码)(?:关注|领取|添加|进群|下单|购买|咨询|了解)",
        r"关注(?:我们的|我的|本)?(?:微信)?公众号",
        r"(?:点击|戳)(?:下方|以下|左下角|文末)?(?:链接|阅读原文)(?:立即|马上|即可)?(?:领取|购买|抢购|下单|报名|获取|查看)",
        r"【点击(?:领取|购买|报名|查看|下载)】",
        r"私信(?:我|小编|博主)?(?:领取|获取|咨询|下单)",
        r"免费(?:领取|咨询|试用|索取)[^。\n]{0,20}(?:点击|扫码|私信|添加|关注|链接|地址|热线|电话)"
        r"|(?:点击|扫码|私信|添加|关注|链接)[^。\n]{0,20}免费(?:领取|咨询|试用|索取)",
        r"限时(?:抢购|秒杀|免费领|特价)|全场[0-9一二三四五六七八九半]{1,2}折",
        r"(?:领取|领)(?:优惠券|红包)[^。\n]{0,10}(?:链接|点击|扫码|口令)|优惠券(?:链接|口令)|(?:下单|购买)(?:立减|返现|返利)",
        r"(?:招|诚招|火热招募)(?:代理|加盟|合伙人|代理商)|加盟(?:热线|电话)",
        r"(?i)(?:咨询|订购|预订|招商|客服)(?:热线|电话|微信|qq)\s*[:：]\s*[0-9A-Za-z]",
        r"厂家直销|包邮到家|一对一跟单|活动地址\s*[:：]",
        r"(?:进|入|拉你进)(?:群|粉丝群|交流群)(?:领取|了解|咨询)|进群(?:领|送)",
        r"(?:淘宝|天猫|拼多多|京东)(?:搜索|搜|店铺名?)\s*[:：]",
    )


# ----------------------------------------------------------------------------- HTML / markdown

_TAGS = ("a|abbr|article|audio|b|blockquote|body|br|button|center|code|dd|div|dl|dt|em|embed|figcaption|"
         "figure|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|label|li|link|meta|nav|"
         "ol|option|p|pre|script|section|select|small|source|span|strike|strong|style|sub|sup|table|"
         "tbody|td|textarea|tfoot|th|thead|title|tr|u|ul|video")
_ENTITIES = ("nbsp|amp|lt|gt|quot|apos|ensp|emsp|thinsp|mdash|ndash|hellip|ldquo|rdquo|lsquo|rsquo|"
             "middot|bull|times|divide|copy|reg|trade|deg|plusmn|laquo|raquo|yen|euro|pound|cent|sect")


@register
@dataclasses.dataclass
class HtmlFilter(_PatternFilter):
    """HTML and markdown remnants of scraping: tags of HTML elements (``<p>``, ``</div>``,
    ``<br/>``, ``<img src=...>``, ``<a href=...>``; other ``<word>`` such as ``List<String>`` or
    ``a<b>c`` do not match), entities (``&nbsp;``, ``&amp;``, ``&#8203;``, ``&#x3000;``),
    markdown images ``![...](...)`` and links ``[text](target)``.

    Code: segmentfault answers legitimately contain ``<div>`` in fenced code blocks (```` ``` ````)
    and inline code (``<div>`` between backticks), which ``skip_code: true`` (default) removes
    before matching.
    Their prose also names tags ("用<button>触发事件", "<p>标签中") when the same text shows
    the code in a block, so with ``tags_in_code_texts: false`` (default) tags are not counted in a
    text that contains code at all; entities and markdown remnants still are. Default
    ``max_count: 0``. Real data at default: 6 records (douban synopses with ``<BR>&nbsp;``,
    finance news with ``&nbsp;``, zhihu answers with markdown links); counting tags in code
    texts too would add 9 segmentfault questions.
    """

    name = "html"
    description = "HTML tags, entities, markdown image/link remnants (outside code)"
    skip_code: bool = True
    tags_in_code_texts: bool = False
    TAG_PATTERN: ClassVar[str] = rf"(?i)</?(?:{_TAGS})(?:\s[^<>\n]{{0,300}})?/?>"
    DEFAULT_PATTERNS = (
        TAG_PATTERN,
        rf"(?i)&(?:{_ENTITIES}|#[0-9]{{2,6}}|#x[0-9a-f]{{2,5}});",
        r"!\[[^\]\n]{0,200}\]\([^)\n]{0,500}\)",
        r"\[[^\]\n]{1,200}\]\((?:https?://|www\.|/|\.{1,2}/|#)[^)\s]{0,500}\)",
    )

    def _has_code(self) -> pl.Expr:
        return self.text().str.contains(r"```|`[^`\n]{1,200}`")

    def _text_for_tags(self) -> pl.Expr:
        t = self.text(self.skip_code)
        if self.tags_in_code_texts:
            return t
        # in a text with code, hide tags from the match (entities, markdown still count)
        return pl.when(self._has_code()).then(t.str.replace_all(self.TAG_PATTERN, " ")).otherwise(t)

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return _series(frame, self._text_for_tags().str.count_matches(self._regex))

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return _series(frame, self._text_for_tags().str.extract(self._regex, 0).str.slice(0, 200), "detail")


# ----------------------------------------------------------------------------- flagged words

def shipped_words_file() -> Path:
    return Path(__file__).resolve().parent / "resources" / "flagged_words_zh.txt"


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
class FlaggedWordsFilter(_TextFilter):
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
        self._regex = "|".join(f"(?i:{_escape(w)})" if w.upper() != w.lower() else _escape(w) for w in uniq)
        check_regex(self._regex, "word list")
        if self.mode not in ("ratio", "count"):
            raise ValueError(f"mode must be 'ratio' or 'count', got {self.mode!r}")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        t = self.text()
        if self.mode == "count":
            return _series(frame, t.str.count_matches(self._regex))
        texts = _series(frame, t, "t")
        hit = texts.str.contains(self._regex).to_numpy()
        out = np.where(texts.str.contains(_VISIBLE).to_numpy(), 0.0, np.nan)
        idx = np.flatnonzero(hit)
        if len(idx):  # the few texts with a hit: characters inside matched words / visible ones
            sub = texts.gather(idx)
            matched = (sub.str.extract_all(self._regex)
                       .list.eval(pl.element().str.len_chars()).list.sum().fill_null(0).to_numpy())
            visible = sub.str.replace_all(_INVISIBLE, "").str.len_chars().to_numpy()
            out[idx] = matched / np.maximum(visible, 1)
        return pl.Series("value", out).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= (self.max_ratio if self.mode == "ratio" else self.max_count)

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return _series(frame, self.text().str.extract(self._regex, 0), "detail")


# ----------------------------------------------------------------------------- special characters

#: What counts as ordinary text for ``special_chars`` besides letters, marks, digits, whitespace.
NORMAL_PUNCT = _cls(
    (0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E),   # ASCII punctuation and symbols
    0xA7, 0xA9, 0xAB, 0xAE, 0xB0, 0xB1, 0xB7, 0xBB, 0xD7, 0xF7,  # § © « ® ° ± · » × ÷
    (0x2010, 0x2027), (0x2030, 0x205E),                       # general punctuation: – — ‘ ’ “ ” … ‰ ※
    0x20AC, 0xA5, 0xA3,                                       # € ¥ £
    (0x2100, 0x218F),                                         # letterlike, number forms: ℃ № Ⅲ
    (0x2190, 0x21FF), (0x2200, 0x22FF),                       # arrows, mathematical operators
    (0x2460, 0x24FF),                                         # ① ⑴ ⒈
    (0x25A0, 0x25FF), 0x2605, 0x2606, 0x2713, 0x2714,          # ■ □ ▲ ● ◆ ★ ☆ ✓
    (0x3000, 0x303F),                                         # CJK punctuation: 、。《》「」【】〜
    (0x3200, 0x33FF),                                         # ㈠ ㊣ ㎡ ㎏
    (0xFE30, 0xFE4F), (0xFE50, 0xFE6F),                       # vertical and small forms
    (0xFF01, 0xFF65), (0xFFE0, 0xFFEE),                       # full-width forms: ！，：（） ￥
)
SPECIAL_CHAR = rf"[^\p{{L}}\p{{M}}\p{{N}}\s{NORMAL_PUNCT}]"


@register
@dataclasses.dataclass
class SpecialCharsFilter(_TextFilter):
    """Share of visible characters that are neither letters (CJK included), marks, digits,
    nor common punctuation/symbols (ASCII, CJK and full-width punctuation, ``℃ ㎡ ① × ÷ → ≤``
    and other math/units, ``■ ★``). What remains special: emoji and pictographs, box drawing,
    control and private-use characters, U+FFFD and the symbols of mojibake (``¤ ¸ Ã``-style
    sequences count via their ``¤ ¸ ¦``), dingbats.

    Default ``max_ratio: 0.25`` on instruction+input+output, calibrated on real CQIA: at our
    definition 6 real records (0.03 %, xhs notes dense with emoji) exceed 0.25 (0.2: 14,
    0.15: 23), so 99.97 % pass; Data-Juicer's definition at its default 0.25 removes ~14 %
    (it counts full-width punctuation and digits).
    """

    name = "special_chars"
    description = "share of special (non-text, non-punctuation) characters"
    threshold_fields = ("max_ratio",)
    max_ratio: float = 0.25

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        # code-point tables built from the same regex classes: same counts as
        # count_matches(SPECIAL_CHAR) / non-whitespace characters, ~5x faster
        cps, lengths = _codepoints(_series(frame, self.text()))
        special = per_text_sum(class_mask(cps, SPECIAL_CHAR), lengths)
        visible = lengths - per_text_sum(class_mask(cps, r"\s"), lengths)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(visible > 0, special / np.maximum(visible, 1), np.nan)
        return pl.Series("value", ratio).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return _series(frame, self.text().str.extract_all(SPECIAL_CHAR).list.head(10).list.join(""), "detail")


_CP1252_HIGH = _cls((0x80, 0xBF), 0x152, 0x153, 0x160, 0x161, 0x178, 0x17D, 0x17E, 0x192, 0x2C6, 0x2DC,
                    (0x2013, 0x2014), (0x2018, 0x201A), (0x201C, 0x201E), (0x2020, 0x2022), 0x2026, 0x2030,
                    0x2039, 0x203A, 0x20AC, 0x2122)


@register
@dataclasses.dataclass
class MojibakeFilter(_PatternFilter):
    """Garbled text from wrong decoding: U+FFFD replacement characters, the GBK artefacts
    "锟斤拷" (U+FFFD bytes read as GBK) and "烫烫烫"/"屯屯屯" (uninitialised memory shown as GBK),
    and UTF-8 read as Latin-1/cp1252: ``ä¸­æ–‡`` for 中文 (two or more lead characters
    ``â-é``/``ï`` each followed by two bytes of the ``\x80-\xBF`` range or their cp1252 forms;
    ``ã€‚`` for 。, ``ï¼Œ`` for ，) and any ``â€`` + such a byte (``â€œ`` for “, ``â€”`` for —),
    which no real text contains.

    Value = number of such sequences; default ``max_count: 0``. Real data: 3 records, each
    with a real U+FFFD (exam, segmentfault, xhs).
    ``special_chars`` sees part of this too (``¤ ¸ ¦``), but a short garbled span in a long
    answer stays under any ratio threshold that spares emoji-rich xhs notes.
    """

    name = "mojibake"
    description = "mis-decoded text (U+FFFD, 锟斤拷, UTF-8 read as Latin-1)"
    DEFAULT_PATTERNS = (
        r"\x{FFFD}+",
        r"锟斤拷|烫烫烫|屯屯屯",
        rf"(?:[\x{{E2}}-\x{{E9}}\x{{EF}}][{_CP1252_HIGH}]{{2}}){{2,}}",
        rf"â€[{_CP1252_HIGH}]",  # a curly quote or dash read as cp1252: “ -> â€œ
    )


# ----------------------------------------------------------------------------- repetition

@register
@dataclasses.dataclass
class CharRepetitionFilter(_TextFilter):
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
        cps, lengths = _codepoints(_series(frame, self.text()))
        rd, rc, total, distinct = ngram_repeats(cps, lengths, self.rep_len)
        n_docs = frame.height
        k = np.minimum(np.floor(np.sqrt(distinct)).astype(np.int64), np.bincount(rd, minlength=n_docs))
        order = np.lexsort((-rc, rd))  # by doc, most frequent first
        rd, rc = rd[order], rc[order]
        rank = np.arange(len(rd)) - np.searchsorted(rd, rd, side="left")
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
class NgramRepetitionFilter(_TextFilter):
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

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        ids, lengths = word_tokens(_series(frame, self.text()))
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
class ConsecutiveRepeatsFilter(_TextFilter):
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
        cps, lengths = _codepoints(_series(frame, text))
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
            cls_t, _ = _bmp_tables()
            bmp = x < 0x10000
            # letters, digits, CJK (not marks: emoji variation selectors are marks)
            word = np.where(bmp, _word_table()[np.where(bmp, x, 0)], (x >= 0x20000) & (x <= 0x3FFFF))
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


# ----------------------------------------------------------------------------- language / script

_URLISH = r"(?i)(?:https?|ftp)://\S+|www\.\S+|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+"


@register
@dataclasses.dataclass
class NonChineseRatioFilter(_TextFilter):
    """Share of letters that are not CJK: ``1 - (Han characters) / (letters)``, letters being
    Unicode category L (Han, Latin, kana, Hangul, Cyrillic...). Fenced and inline code, URLs
    and e-mail addresses are removed first (``skip_code``); null (kept) when fewer than
    ``min_letters`` letters remain.

    Default ``max_ratio: 0.97`` on instruction+input+output: latin letters outnumber Chinese
    characters in many legitimate records (an English word is 5–8 letters, a Chinese word 1–2
    characters): real segmentfault answers reach 0.93 even without code, English reading
    questions in exam 0.96. At 0.97 the filter drops text with essentially no Chinese: 7 real
    records (0.04 %, English-only zhihu answers and exam items); every segmentfault record
    passes.
    """

    name = "non_chinese_ratio"
    description = "share of letters that are not CJK"
    threshold_fields = ("max_ratio",)
    max_ratio: float = 0.97
    min_letters: int = 10
    skip_code: bool = True

    def _clean(self) -> pl.Expr:
        return self.text(self.skip_code).str.replace_all(_URLISH, " ")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        cps, lengths = _codepoints(_series(frame, self._clean()))
        letters = per_text_sum(class_mask(cps, r"\p{L}"), lengths)
        han = per_text_sum(class_mask(cps, r"\p{Han}"), lengths)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(letters >= max(self.min_letters, 1), 1 - han / np.maximum(letters, 1), np.nan)
        return pl.Series("value", ratio).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        t = self._clean()
        return _series(frame, fmt("{} Han of {} letters", t.str.count_matches(r"\p{Han}"),
                                        t.str.count_matches(r"\p{L}")), "detail")


# ----------------------------------------------------------------------------- traditional

@lru_cache(maxsize=8)
def _converter(config: str):
    try:
        import opencc
    except ImportError as e:  # pragma: no cover - opencc is a dependency
        raise ValueError("the traditional filter needs the `opencc` package: pip install 'opencc>=1.4.2'") from e
    try:
        return opencc.OpenCC(config)
    except Exception as e:
        raise ValueError(f"OpenCC config {config!r} not available ({e}); use t2s, tw2s, hk2s or tw2sp") from e


_SEPARATORS = ("\ue000", "\ue001", "\U000f0000", "\x00")


def convert_texts(texts: pl.Series, config: str = "t2s") -> pl.Series:
    """OpenCC conversion of every text in one library call (joined by a private-use separator
    that no text contains); nulls stay null."""
    conv = _converter(config)
    filled = texts.cast(pl.String).fill_null("")
    sep = next((s for s in _SEPARATORS if not filled.str.contains(s, literal=True).any()), None)
    if sep is None:  # every separator occurs in the data: convert one by one
        return pl.Series(texts.name, [None if t is None else conv.convert(t) for t in texts.to_list()],
                         dtype=pl.String)
    parts = conv.convert(sep.join(filled.to_list())).split(sep)
    if len(parts) != filled.len():  # the converter touched a separator: be safe, go one by one
        parts = [conv.convert(t) for t in filled.to_list()]
    out = pl.Series(texts.name, parts, dtype=pl.String)
    return pl.select(pl.when(texts.is_null()).then(None).otherwise(out)).to_series().alias(texts.name)


def _changed_stats(before: pl.Series, after: pl.Series) -> tuple[np.ndarray, list[str | None]]:
    """Characters changed per text (positional; OpenCC's t2s keeps lengths) and the first change."""
    b = before.cast(pl.String).fill_null("")
    a = after.cast(pl.String).fill_null("")
    n = b.len()
    changed = np.zeros(n, dtype=np.int64)
    first: list[str | None] = [None] * n
    diff_rows = (b != a).to_numpy().nonzero()[0]
    if len(diff_rows) == 0:
        return changed, first
    bb, aa = b.gather(diff_rows), a.gather(diff_rows)
    same_len = (bb.str.len_chars() == aa.str.len_chars()).to_numpy()
    idx_same = diff_rows[same_len]
    if len(idx_same):
        cb, lb = _codepoints(b.gather(idx_same))
        ca, _ = _codepoints(a.gather(idx_same))
        neq = cb != ca
        doc = np.repeat(np.arange(len(idx_same)), lb)
        changed[idx_same] = np.bincount(doc[neq], minlength=len(idx_same))
        pos = np.flatnonzero(neq)
        if len(pos):
            docs_with, first_pos = np.unique(doc[pos], return_index=True)
            for d, p in zip(docs_with, pos[first_pos]):
                first[idx_same[d]] = f"{chr(cb[p])}→{chr(ca[p])}"
    for i in diff_rows[~same_len]:  # phrase conversions that change length: rare, count per text
        x, y = b[int(i)], a[int(i)]
        changed[i] = sum(c1 != c2 for c1, c2 in zip(x, y)) + abs(len(x) - len(y))
        first[i] = next((f"{c1}→{c2}" for c1, c2 in zip(x, y) if c1 != c2), None)
    return changed, first


@lru_cache(maxsize=8)
def changeable_chars(config: str = "t2s") -> str:
    """Every CJK character (BMP blocks and extension B) that OpenCC ``config`` changes on its
    own, as one string (~2,700 for t2s). Computed once, in one conversion call."""
    conv = _converter(config)
    cps = [*range(0x3400, 0x4DC0), *range(0x4E00, 0xA000), *range(0xF900, 0xFB00), *range(0x20000, 0x2A6E0)]
    chars = [chr(c) for c in cps]
    out = conv.convert("\n".join(chars)).split("\n")
    if len(out) != len(chars):  # pragma: no cover - the separator survived before; be safe
        out = [conv.convert(c) for c in chars]
    return "".join(c for c, o in zip(chars, out) if c != o)


def traditional_share(frame: pl.DataFrame, fields: tuple[str, ...], config: str = "t2s",
                      skip_japanese: bool = True) -> tuple[pl.Series, pl.Series, dict[str, pl.Series]]:
    """(share of Han characters OpenCC changes, first change, converted columns).

    Only records containing a character that ``config`` changes on its own
    (``changeable_chars``) are converted — 3 % of the real records, so the step costs a
    regex scan instead of a conversion of all text. A record without any gets share 0 (null
    without Han): OpenCC could still rewrite a phrase there (乾燥→干燥), but such texts are
    simplified text by definition of this measure. With ``skip_japanese`` the share is null
    for Japanese text (kana >= 20 % of kana + Han): its kanji (決, 範) are not traditional
    Chinese and must not be converted. Converted columns equal the input outside candidates.
    """
    text = text_expr(fields)
    cls = "[" + changeable_chars(config) + "]"
    flags = frame.select(text.str.contains(cls).alias("cand"), text.str.contains(r"\p{Han}").alias("has_han"))
    cand = np.flatnonzero(flags["cand"].to_numpy())
    share = np.where(flags["has_han"].to_numpy(), 0.0, np.nan)
    first: list[str | None] = [None] * frame.height
    converted: dict[str, pl.Series] = {f: frame[f].cast(pl.String) for f in fields}
    if len(cand):
        sub = frame.select([pl.col(f) for f in dict.fromkeys(fields)])[cand]
        changed = np.zeros(len(cand), dtype=np.int64)
        sub_first: list[str | None] = [None] * len(cand)
        for f in dict.fromkeys(fields):
            col = sub[f].cast(pl.String)
            conv = convert_texts(col, config)
            converted[f] = converted[f].scatter(cand, conv)
            c, fst = _changed_stats(col, conv)
            changed += c
            sub_first = [x if x is not None else y for x, y in zip(sub_first, fst)]
        counts = sub.select(text.str.replace_all(r"\P{Han}+", "").str.len_chars().alias("han"),
                            text.str.replace_all(r"[^\p{Hiragana}\p{Katakana}]+", "").str.len_chars().alias("kana"))
        han, kana = counts["han"].to_numpy(), counts["kana"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            sh = np.where(han > 0, changed / np.maximum(han, 1), np.nan)
            if skip_japanese:
                sh = np.where(kana >= 0.2 * np.maximum(kana + han, 1), np.nan, sh)
        share[cand] = sh
        for i, fs in zip(cand, sub_first):
            first[i] = fs
    return (pl.Series("value", share).fill_nan(None), pl.Series("detail", first, dtype=pl.String), converted)


@register
@dataclasses.dataclass
class ToSimplifiedTransform(Transform):
    """Convert traditional characters to simplified (OpenCC ``config``, default ``t2s``) in
    ``field`` for records whose traditional share (see ``traditional``) is at least
    ``min_ratio``; other records are left untouched, so stray characters that OpenCC would
    change in simplified text (乾, 著, 於 in names and classical quotes) stay as written.
    Drops nothing; the steps table counts the records changed.

    Default ``min_ratio: 0.05``, the ``traditional`` filter's threshold.
    """

    name = "to_simplified"
    description = "convert traditional to simplified characters"
    field: FieldSpec = ALL_TEXT
    config: str = "t2s"
    min_ratio: float = 0.05
    skip_japanese: bool = True

    def __post_init__(self) -> None:
        self._fields = parse_fields(self.field)
        self.field = "+".join(self._fields)
        _converter(self.config)

    def required_columns(self) -> tuple[str, ...]:
        return self._fields

    def transform(self, frame: pl.DataFrame) -> Rewritten:
        share, first, converted = traditional_share(frame, self._fields, self.config, self.skip_japanese)
        do = (share.fill_null(0.0) >= self.min_ratio) & (share.fill_null(0.0) > 0)
        cols = [pl.when(pl.lit(do)).then(pl.lit(converted[f])).otherwise(pl.col(f)).alias(f) for f in self._fields]
        out = frame.with_columns(cols)
        return Rewritten(out, do, share, first)


@register
@dataclasses.dataclass
class TraditionalFilter(_TextFilter):
    """Traditional-character text: value = share of the Han characters that OpenCC's ``t2s``
    conversion changes (们 for 們, 这 for 這 ...); null without Han characters. Keeps
    ``value <= max_ratio``; detail = the first change (``這→这``).

    ``convert: true`` makes the recipe step the ``to_simplified`` transform (same ``field``,
    ``config``, and ``max_ratio`` as its ``min_ratio``): records are converted, not dropped.

    Default ``max_ratio: 0.05``: in simplified text a few characters are changed by t2s
    (乾隆 stays, but 著/乾 in some phrases, names); on the real data the 99.9th percentile of the
    share is under 0.05 outside the traditional-character records, while running text in
    traditional characters changes 20–40 % of its characters.
    """

    name = "traditional"
    description = "share of characters OpenCC t2s changes"
    threshold_fields = ("max_ratio",)
    max_ratio: float = 0.05
    convert: bool = False
    config: str = "t2s"
    skip_japanese: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _converter(self.config)

    def as_step(self):
        if self.convert:
            return ToSimplifiedTransform(field=self.field, config=self.config, min_ratio=self.max_ratio,
                                         skip_japanese=self.skip_japanese)
        return self

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        share, first, _ = traditional_share(frame, self._fields, self.config, self.skip_japanese)
        self._last_detail = (frame, first)  # details() of the same frame reuses the conversion
        return share

    def keep(self, values: pl.Series) -> pl.Series:
        if self.convert:  # a converting step never drops (used directly, outside a recipe)
            return pl.Series([True] * values.len(), dtype=pl.Boolean)
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        cached = getattr(self, "_last_detail", None)
        self._last_detail = None
        if cached is not None and cached[0] is frame:
            return cached[1]
        return traditional_share(frame, self._fields, self.config, self.skip_japanese)[1]


# ----------------------------------------------------------------------------- truncation

_SENT_END = r"[。！？!?…]"
_LINE_CLOSED = r"[。！？!?.…~～；;”’」』）)】》\]>〉*|`=\-—:：\p{So}\p{Sk}]$"


@register
@dataclasses.dataclass
class TruncatedFilter(_TextFilter):
    """Answers cut off mid-sentence. For outputs longer than ``min_chars`` (default 50), value 1
    (truncated) when the last visible character

    * is a continuing mark — ``，、,：:（(“‘《【`` — (a sentence never ends there), or
    * (``han_endings: true``, default) is a CJK character although the rest of the text is
      punctuated: at least 2 sentence-final marks (``。！？!?…``; 1 in a text of several
      lines), at least 80 % of the earlier lines end closed, and the unfinished last sentence
      has 5+ characters;

    and the ending is not one of the legitimate unpunctuated endings: code (fenced block,
    ``}``, ``;``), list items / table rows (last line starts with ``1.``, ``-``, ``•``, ``（一）``,
    ``A.`` — unless the item before it ends with punctuation, "1. ……；\n2. 需要随时" is a cut —
    or ends with ``|``), hashtags (``#旅行``), signatures (``——作者``), a last paragraph of up
    to 8 characters (labels: "以上", "谢谢邀请"), exam verdicts (``故选A``, ``D项正确``: letters,
    digits, "正确/错误").
    Else 0; null (kept) for shorter outputs. Detail: the last 20 characters.

    Calibration on real CQIA (outputs > 50 chars): continuing marks end 38 answers (0.2 %),
    mostly real cuts; CJK endings are the norm in xhs notes, casual zhihu answers and douban
    reviews (890 answers, 5 %), so the rule only flags those in otherwise punctuated texts:
    total at default 245 records, 1.4 % (in a sample ~1 in 3 really cut, e.g. a classical text
    stopping at "子安能为之", "……可有可无的选"; the rest end on a noun phrase without a full
    stop). ``han_endings: false`` keeps only the first rule (38 records, 0.2 %).
    """

    name = "truncated"
    description = "answer ends mid-sentence"
    threshold_fields = ("min_chars",)
    field: FieldSpec = "output"
    min_chars: int = 50
    han_endings: bool = True

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        t = pl.col("t")
        lines = (t.str.split("\n").list.eval(pl.element().str.strip_chars())
                 .list.eval(pl.element().filter(pl.element() != "")))
        n_lines = lines.list.len()
        last = lines.list.last().fill_null("")
        prev_closed = (lines.list.head(n_lines - 1)
                       .list.eval(pl.element().str.contains(_LINE_CLOSED)).list.mean().fill_null(1.0))
        end = t.str.slice(-1, 1)
        continuing = end.str.contains(r"^[，、,：:（(“‘《【]$")
        frag = t.str.extract(r"([^。！？!?…\n]*)\z", 1).fill_null("")
        n_end = t.str.count_matches(_SENT_END)
        han_cut = (end.str.contains(r"^\p{Han}$") & ((n_end >= 2) | ((n_lines >= 2) & (n_end >= 1)))
                   & (prev_closed >= 0.8) & (frag.str.len_chars() >= 5))
        flagged = continuing | (han_cut if self.han_endings else pl.lit(False))
        prev = lines.list.get(-2, null_on_oob=True).fill_null("")
        list_item = last.str.contains(
            r"^(?:[-*+•·●○◆■□▪–]|[0-9]{1,3}[.、)）]|[（(][0-9一二三四五六七八九十]{1,3}[)）]|"
            r"[一二三四五六七八九十]{1,3}[、.．]|第[0-9一二三四五六七八九十]+[步章节条点]|[A-Za-z][.、)）])")
        exempt = (
            # an unpunctuated list item ends a list of unpunctuated items; after an item that
            # ends with punctuation ("1. ……；") it is a cut
            (list_item & ~prev.str.contains(_LINE_CLOSED))
            | last.str.contains(r"\|\s*$")
            | last.str.contains(r"#[^#\s]+#?$")
            | last.str.contains(r"(?:——|--|—)\s*\S{1,20}$")
            | t.str.contains(r"```\s*\z") | t.str.contains(r"[{};]\s*\z")
            | t.str.contains(r"\n\s*\n[^\n]{1,8}\z")
            | t.str.contains(r"(?:正确|错误|不正确|[选为][A-Za-z]{1,4})\z")
        )
        texts = frame.select(self.text().str.strip_chars().alias("t"))
        n = texts["t"].str.len_chars().to_numpy()
        out = np.where(n > self.min_chars, 0.0, np.nan)
        # only long texts ending on a CJK character or a continuing mark can be flagged
        cand = np.flatnonzero((n > self.min_chars)
                              & texts["t"].str.contains(r"[\p{Han}，、,：:（(“‘《【]\z").to_numpy())
        if len(cand):
            out[cand] = texts[cand].select((flagged & ~exempt).cast(pl.Float64)).to_series().to_numpy()
        return pl.Series("value", out).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values < 0.5

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return _series(frame, pl.concat_str(pl.lit("…"), self.text().str.strip_chars().str.slice(-20)), "detail")


# ----------------------------------------------------------------------------- answer vs question

_NORM_DROP = r"[\s\p{P}\p{S}\p{C}]"


@register
@dataclasses.dataclass
class AnswerRepeatsQuestionFilter(Filter):
    """The answer restates the question: value = share of the answer's distinct character
    bigrams that also occur in the question, after lower-casing and removing whitespace,
    punctuation and symbols (1.0 when the two are equal, whatever their length; an answer
    contained in the question scores 1.0 too). Keeps ``value < max_overlap``.

    Not a restatement, value 0: answers shorter than ``min_length_ratio`` (0.5) of the
    question — a label or option picked from the choices the question lists (finance
    classification tasks answer ``{"PREDICTION": "FREEZE"}`` out of a list in the
    instruction; 128 real records would be dropped without this rule) — and answers over 3×
    the question (their overlap cannot reach 0.9 in practice). Null (kept): answers under
    ``min_chars`` (8) normalised characters — exam answers such as ``A`` or ``正确``.

    ``question`` defaults to ``instruction`` (not the input: extractive answers legitimately
    come from the passage). ``max_overlap: 0.9``: a copied question scores 1.0, a question
    with one word changed ~0.9; on real CQIA the default drops 4 records (0.02 %).
    """

    name = "answer_repeats_question"
    details_per_record = True
    description = "answer equal to / contained in / overlapping the question"
    threshold_fields = ("max_overlap",)
    question: FieldSpec = "instruction"
    answer: FieldSpec = "output"
    max_overlap: float = 0.9
    min_chars: int = 8
    min_length_ratio: float = 0.5

    def __post_init__(self) -> None:
        self._q = parse_fields(self.question)
        self._a = parse_fields(self.answer)
        self.question, self.answer = "+".join(self._q), "+".join(self._a)
        if not 0 < self.max_overlap <= 1:
            raise ValueError(f"max_overlap must be in (0, 1], got {self.max_overlap}")

    def required_columns(self) -> tuple[str, ...]:
        return (*self._q, *self._a)

    @staticmethod
    def _norm(spec: tuple[str, ...]) -> pl.Expr:
        return text_expr(spec).str.to_lowercase().str.replace_all(_NORM_DROP, "")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        norm = frame.select(self._norm(self._q).alias("q"), self._norm(self._a).alias("a"))
        q, a = norm["q"], norm["a"]
        alen = a.str.len_chars().to_numpy()
        qlen = q.str.len_chars().to_numpy()
        # distinct answer bigrams can only all be in the question if the question is not much
        # shorter: skip the n-gram work for answers > 3x the question (their overlap is < 0.9)
        cand = np.flatnonzero((alen >= max(self.min_chars, 2)) & (alen <= 3 * qlen + 2)
                              & (alen >= self.min_length_ratio * qlen))
        out = np.full(frame.height, np.nan)
        out[alen >= max(self.min_chars, 1)] = 0.0
        if len(cand):
            qa, ql = _codepoints(q.gather(cand))
            aa, al = _codepoints(a.gather(cand))
            qk, _ = ngram_keys(qa, ql, 2)
            ak, bits = ngram_keys(aa, al, 2)
            if len(ak):
                ak = ak[np.concatenate(([True], ak[1:] != ak[:-1]))]  # sorted: distinct per doc
            adoc = (ak >> np.uint64(64 - bits)).astype(np.int64)
            n_a = np.bincount(adoc, minlength=len(cand))
            if len(qk):
                pos = np.minimum(np.searchsorted(qk, ak), len(qk) - 1)
                found = qk[pos] == ak
            else:
                found = np.zeros(len(ak), dtype=bool)
            hit = np.bincount(adoc[found], minlength=len(cand))
            with np.errstate(divide="ignore", invalid="ignore"):
                out[cand] = np.where(n_a > 0, hit / np.maximum(n_a, 1), 0.0)
        eq = (q == a).to_numpy() & (alen > 0)
        out[eq] = 1.0  # equal texts (also covers answers of one character)
        return pl.Series("value", out).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values < self.max_overlap

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        a = text_expr(self._a)
        return _series(frame, fmt("{}% of answer bigrams in the question: \"{}\"",
                                        (pl.lit(values) * 100).round(1), a.str.slice(0, 40)), "detail")


__all__ = [
    "ALL_TEXT", "TEXT_FIELDS", "parse_fields", "text_expr", "check_regex", "ngram_keys", "ngram_runs", "ngram_repeats", "word_tokens", "convert_texts",
    "LengthFilter", "EmptyOutputFilter", "PhoneFilter", "EmailFilter", "UrlFilter", "QQWechatFilter",
    "AdsFilter", "HtmlFilter", "MojibakeFilter", "FlaggedWordsFilter", "SpecialCharsFilter", "CharRepetitionFilter",
    "NgramRepetitionFilter", "ConsecutiveRepeatsFilter", "NonChineseRatioFilter", "TraditionalFilter", "ToSimplifiedTransform",
    "TruncatedFilter", "AnswerRepeatsQuestionFilter",
]
