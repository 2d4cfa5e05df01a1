"""Traditional characters: detect them, or convert them to simplified with OpenCC (a counted transform)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import polars as pl

from cqia_nb.filter.framework import Rewritten, Transform, register
from cqia_nb.filter.rules.common import ALL_TEXT, FieldSpec, TextFilter, parse_fields, text_expr
from cqia_nb.filter.rules.kernels import codepoints


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


def _convert_utf8(conv, raw: bytes) -> str:
    """``conv.convert(raw.decode())`` without the round trip through a Python str: opencc's
    ``OpenCC.convert`` only encodes its argument to UTF-8 and passes the bytes to the C++ class
    it derives from, which is called here with polars' UTF-8 bytes directly."""
    try:
        return super(type(conv), conv).convert(raw, len(raw))
    except TypeError:  # pragma: no cover - another opencc binding: the public call
        return conv.convert(raw.decode("utf-8"))


@lru_cache(maxsize=8)
def _native(config: str):
    """OpenCC's own C API (``opencc_open`` / ``opencc_convert_utf8``, exported by the same extension
    module the ``opencc`` package loads, on the same config file, hence the same dictionaries) as a
    function UTF-8 bytes -> UTF-8 bytes, or None where the module does not export it. Called through
    ctypes, which releases the GIL for the call (the pybind11 method holds it): batches in other
    threads run meanwhile. The header documents these functions as thread-safe. The result is not
    decoded into a Python str: polars splits it."""
    try:
        import ctypes

        import opencc

        lib = ctypes.CDLL(opencc.opencc_clib.__file__)
        lib.opencc_open.argtypes, lib.opencc_open.restype = [ctypes.c_char_p], ctypes.c_void_p
        lib.opencc_convert_utf8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.opencc_convert_utf8.restype = ctypes.c_void_p
        lib.opencc_convert_utf8_free.argtypes, lib.opencc_convert_utf8_free.restype = [ctypes.c_void_p], None
        handle = lib.opencc_open(_converter(config).config.encode())
    except Exception:  # pragma: no cover - another opencc build
        return None
    if not handle or handle == ctypes.c_void_p(-1).value:  # pragma: no cover
        return None

    def convert(raw: bytes) -> bytes:
        out = lib.opencc_convert_utf8(handle, raw, len(raw))
        if not out:  # pragma: no cover - OpenCC reported an error
            raise ValueError("OpenCC could not convert the text")
        try:
            return ctypes.string_at(out)  # NUL-terminated: callers pass no NUL byte
        finally:
            lib.opencc_convert_utf8_free(out)

    return convert


def convert_texts(texts: pl.Series, config: str = "t2s") -> pl.Series:
    """OpenCC conversion of every text in one library call (joined by a private-use separator
    that no text contains; the joined UTF-8 comes from polars and, through OpenCC's C API
    (``_native``), goes back to polars as bytes: no Python str per record); nulls stay null.
    Texts holding a NUL byte take OpenCC's Python method instead (the C API's output is a C string)."""
    conv = _converter(config)
    filled = texts.cast(pl.String).fill_null("")
    if filled.len() == 0:
        return pl.Series(texts.name, [], dtype=pl.String)
    sep = next((s for s in _SEPARATORS if not filled.str.contains(s, literal=True).any()), None)
    if sep is None:  # every separator occurs in the data: convert one by one
        return pl.Series(texts.name, [None if t is None else conv.convert(t) for t in texts.to_list()],
                         dtype=pl.String)
    joined = filled.str.join(sep).cast(pl.Binary).item()
    native = _native(config)
    out = None
    if native is not None and b"\x00" not in joined:
        out = pl.Series(texts.name, [native(joined)], dtype=pl.Binary).cast(pl.String).str.split(sep).explode()
    if out is None or out.len() != filled.len():
        parts = _convert_utf8(conv, joined).split(sep)
        if len(parts) != filled.len():  # the converter touched a separator: be safe, go one by one
            parts = [conv.convert(t) for t in filled.to_list()]
        out = pl.Series(texts.name, parts, dtype=pl.String)
    if not texts.null_count():
        return out
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
        cb, lb = codepoints(b.gather(idx_same))
        ca, _ = codepoints(a.gather(idx_same))
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
    per_record = True
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
        if not do.any():  # most batches: nothing to convert, the columns stay the input's buffers
            return Rewritten(frame, do, share, first)
        cols = [pl.when(pl.lit(do)).then(pl.lit(converted[f])).otherwise(pl.col(f)).alias(f) for f in self._fields]
        out = frame.with_columns(cols)
        return Rewritten(out, do, share, first)


@register
@dataclasses.dataclass
class TraditionalFilter(TextFilter):
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
