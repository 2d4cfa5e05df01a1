"""Character-level rules: special characters, mojibake, the share of non-Chinese text."""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

import numpy as np
import polars as pl

from cqia_nb.filter.framework import register
from cqia_nb.filter.rules.common import PatternFilter, TextFilter, char_class, fmt, series_of
from cqia_nb.filter.rules.kernels import class_codes, class_counts, codepoints

#: What counts as ordinary text for ``special_chars`` besides letters, marks, digits, whitespace.
NORMAL_PUNCT = char_class(
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
class SpecialCharsFilter(TextFilter):
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

    def __post_init__(self) -> None:
        super().__post_init__()
        class_codes(np.zeros(0, np.uint32), (SPECIAL_CHAR, r"\s"))  # its code-point table, built once

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        # code-point tables built from the same regex classes: same counts as
        # count_matches(SPECIAL_CHAR) / non-whitespace characters, ~5x faster
        cps, lengths = codepoints(series_of(frame, self.text()))
        special, space = class_counts(cps, lengths, (SPECIAL_CHAR, r"\s"))
        visible = lengths - space
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(visible > 0, special / np.maximum(visible, 1), np.nan)
        return pl.Series("value", ratio).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return series_of(frame, self.text().str.extract_all(SPECIAL_CHAR).list.head(10).list.join(""), "detail")


_CP1252_HIGH = char_class((0x80, 0xBF), 0x152, 0x153, 0x160, 0x161, 0x178, 0x17D, 0x17E, 0x192, 0x2C6, 0x2DC,
                    (0x2013, 0x2014), (0x2018, 0x201A), (0x201C, 0x201E), (0x2020, 0x2022), 0x2026, 0x2030,
                    0x2039, 0x203A, 0x20AC, 0x2122)


#: A character that is not CJK text but appears in garbled text: Latin-1 and Latin Extended-A
#: letters and symbols (the bytes of UTF-8 read as Latin-1 / cp1252: ``Ã¤Â¸``), the cp1252 forms
#: (``€ ™ † ‡ • ‰``), C1 controls, ``※``, arrows, box drawing, geometric shapes (``■◆▲●``),
#: miscellaneous symbols (``★☆``) and U+FFFD. ``symbol_run`` counts the distinct ones in a run.
GARBAGE_SYMBOL = "[" + char_class(
    (0x80, 0x9F), (0xA1, 0xFF), (0x152, 0x153), (0x160, 0x161), 0x178, (0x17D, 0x17E), 0x192, 0x2C6, 0x2DC,
    0x2020, 0x2021, 0x2022, 0x2030, 0x2039, 0x203A, 0x203B, 0x20AC, 0x2122,
    (0x2190, 0x21FF), (0x2500, 0x25FF), (0x2600, 0x26FF), 0xFFFD) + "]"

@lru_cache(maxsize=1)
def _common_class() -> str:
    """A regex class of the GB2312 characters (the 6,763 common hanzi) and CJK / full-width punctuation."""
    cps = [c for c in range(0x4E00, 0xA000) if _in_gb2312(chr(c))]
    ranges: list[list[int]] = []
    for c in cps:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "[\u3000-\u303f\uff00-\uffef" + "".join(f"{chr(a)}-{chr(b)}" if a < b else chr(a) for a, b in ranges) + "]"


def _in_gb2312(ch: str) -> bool:
    try:
        ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=1)
def _gbk_lead_class() -> str:
    """A regex class of the characters whose GBK bytes are a UTF-8 lead byte (E0-EF) and a
    continuation byte (80-BF), 1,024 of them. Every run of two or more UTF-8 triples in a GBK byte
    stream contains one (the pairs are 2 bytes wide, the triples 3), so a text without any hides no
    GBK mojibake and is not decoded."""
    cps = []
    for c in range(0x80, 0x10000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        try:
            b = chr(c).encode("gbk")
        except UnicodeEncodeError:
            continue
        if len(b) == 2 and 0xE0 <= b[0] <= 0xEF and 0x80 <= b[1] <= 0xBF:
            cps.append(c)
    return "[" + char_class(*cps) + "]"


@lru_cache(maxsize=8)
def _gbk_regexes(min_chars: int) -> tuple[re.Pattern[bytes], re.Pattern[str]]:
    k = max(min_chars, 1)
    return re.compile(rb"(?:[\xe0-\xef][\x80-\xbf]{2}){%d,}" % k), re.compile(f"{_common_class()}{{{k},}}")


def gbk_mojibake_chars(text: str, min_chars: int = 1) -> int:
    """The longest run (of at least ``min_chars``, else 0) of common Chinese characters hidden in
    ``text`` as GBK mojibake: UTF-8 bytes read as GBK ("鎴戜釜浜" for 我个人). The text is encoded
    as GBK again and searched for runs of valid three-byte UTF-8 sequences; a decoded run counts
    only as far as it is common CJK text (GB2312 characters, CJK punctuation). Normal Chinese
    encoded as GBK gives such bytes by chance (GB2312 bytes are A1-FE), but they decode to rare
    characters or garbage: on the real CQIA copy the longest run is 1 character, in a mojibake
    span it is the whole span."""
    triples, common = _gbk_regexes(min_chars)
    best = 0
    for m in triples.finditer(text.encode("gbk", errors="replace")):
        if len(m.group(0)) // 3 <= best:
            continue
        for c in common.finditer(m.group(0).decode("utf-8", errors="replace")):
            best = max(best, len(c.group(0)))
    return best


@register
@dataclasses.dataclass
class MojibakeFilter(PatternFilter):
    """Garbled text from wrong decoding: U+FFFD replacement characters, the GBK artefacts
    "锟斤拷" (U+FFFD bytes read as GBK) and "烫烫烫"/"屯屯屯" (uninitialised memory shown as GBK),
    and UTF-8 read as Latin-1/cp1252: ``ä¸­æ–‡`` for 中文 (two or more lead characters
    ``â-é``/``ï`` each followed by two bytes of the ``\x80-\xBF`` range or their cp1252 forms;
    ``ã€‚`` for 。, ``ï¼Œ`` for ，) and any ``â€`` + such a byte (``â€œ`` for “, ``â€”`` for —),
    which no real text contains. Issue 14 added what a short garbled span leaves: a single
    Latin-1 triple (``å¾·`` for 德: a lead ``\xE0-\xEF`` and two ``\x80-\xBF`` characters, not
    their cp1252 forms, so "ì——" in pinyin stays), a two-byte one (``Ã©`` for é, ``Â·`` for ·),
    C1 control characters (``\x80-\x9F``, what Latin-1 makes of bytes cp1252 would show as ``€ ™``),
    and GBK mojibake (UTF-8 read as GBK, "鎴戜釜浜哄枩娆" for 我个人喜欢, which regexes cannot
    tell from rare characters): with ``gbk_min_chars`` (default 2, 0 turns it off) a record counts
    one more match when ``gbk_mojibake_chars`` finds that many common characters hidden in a row.

    Value = number of such sequences (+1 for GBK mojibake); default ``max_count: 0``. Real data:
    3 records, each with a real U+FFFD (exam, segmentfault, xhs); the issue-14 additions drop 0
    (no C1 control, no Latin-1 triple or pair, longest hidden GBK run 1 character in 17,971 records).
    ``special_chars`` sees part of this too (``¤ ¸ ¦``), but a short garbled span in a long
    answer stays under any ratio threshold that spares emoji-rich xhs notes.
    """

    name = "mojibake"
    description = "mis-decoded text (U+FFFD, 锟斤拷, UTF-8 read as Latin-1 or GBK)"
    gbk_min_chars: int = 2
    DEFAULT_PATTERNS = (
        r"\x{FFFD}+",
        r"锟斤拷|烫烫烫|屯屯屯",
        rf"(?:[\x{{E2}}-\x{{E9}}\x{{EF}}][{_CP1252_HIGH}]{{2}}){{2,}}",
        rf"â€[{_CP1252_HIGH}]",  # a curly quote or dash read as cp1252: “ -> â€œ
        r"[\x{80}-\x{9F}]+",  # C1 controls: bytes 0x80-0x9F read as Latin-1
        r"[\x{E0}-\x{EF}][\x{80}-\x{BF}]{2}",  # one 3-byte UTF-8 character read as Latin-1: å¾· (德)
        r"[\x{C2}\x{C3}][\x{80}-\x{BF}]",  # one 2-byte character read as Latin-1: Ã© (é), Â· (·)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gbk_min_chars < 0:
            raise ValueError(f"gbk_min_chars must be >= 0 (0: off), got {self.gbk_min_chars}")

    def _gbk(self, frame: pl.DataFrame) -> np.ndarray:
        """1 where ``gbk_min_chars`` common characters hide as GBK mojibake, else 0. Only texts with
        a character of ``_gbk_lead_class`` can (2,805 of the 17,971 real records); the check runs on those."""
        out = np.zeros(frame.height, dtype=np.float64)
        if self.gbk_min_chars == 0 or frame.height == 0:
            return out
        texts = series_of(frame, self.text(self.skip_code), "t")
        lead = r"\p{Han}" if self.gbk_min_chars < 2 else _gbk_lead_class()
        cand = np.flatnonzero(texts.str.contains(lead).fill_null(False).to_numpy())
        for i, t in zip(cand, texts.gather(cand).to_list()):
            if gbk_mojibake_chars(t, self.gbk_min_chars) >= self.gbk_min_chars:
                out[i] = 1.0
        return out

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return super().measure(frame).cast(pl.Float64) + pl.Series("value", self._gbk(frame))

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        first = super().details(frame, values)
        # a record counted but without a regex match was counted for its GBK mojibake
        gbk = (values.fill_null(0) > 0).to_numpy() & first.is_null().to_numpy()
        return first.scatter(np.flatnonzero(gbk), "GBK mojibake (UTF-8 read as GBK)") if gbk.any() else first


@register
@dataclasses.dataclass
class SymbolRunFilter(TextFilter):
    """A run of garbage symbols: value = the most distinct characters in one run of
    ``GARBAGE_SYMBOL`` characters (Latin-1 and cp1252 letters and signs ``Ã Â â ¤ § ¶ ¬ ± µ ¿ œ ž
    € ™ † ‡``, arrows, box drawing, geometric shapes ``■ ◆ ▲ ●``, ``★ ☆ ※``, U+FFFD) with nothing else
    between them, e.g. "◆€¤☆Â○◇§" left by mis-decoding or pasted binary. Keeps ``value <
    min_distinct``.

    What real text writes with these characters repeats one or two of them: ratings "★★★★☆",
    progress bars "▓▓▓░░░", separators "━━━━●───", box frames "┏┈┈┓"; a word with a Latin-1
    letter ("café") has ASCII around it. On the real CQIA copy (17,971 records) the most distinct
    characters in such a run is 3 (xhs kaomoji frames "╰◟◞"), so the default ``min_distinct: 5``
    drops 0 real records; emoji and decorative letters (𝕮𝖍𝖗𝖎𝖘𝖙, ʜᴀᴘᴘʏ) are outside the class. A
    garbled span in a long answer stays under ``special_chars``' ratio; this rule does not
    depend on the answer's length.
    """

    name = "symbol_run"
    description = "a run of distinct garbage symbols (mojibake, pasted binary)"
    threshold_fields = ("min_distinct",)
    min_distinct: int = 5
    min_run: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_distinct < 2:
            raise ValueError(f"min_distinct must be >= 2, got {self.min_distinct}")

    def _runs(self) -> pl.Expr:
        return self.text().str.extract_all(f"{GARBAGE_SYMBOL}{{{max(self.min_run, 2)},}}")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        distinct = self._runs().list.eval(pl.element().str.split("").list.n_unique()).list.max().fill_null(0)
        return series_of(frame, distinct.cast(pl.Float64))

    def keep(self, values: pl.Series) -> pl.Series:
        return values < self.min_distinct

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        longest = self._runs().list.eval(pl.element().sort_by(pl.element().str.len_chars(), descending=True)).list.first()
        return series_of(frame, longest.str.slice(0, 40), "detail")


_URLISH = r"(?i)(?:https?|ftp)://\S+|www\.\S+|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+"


@register
@dataclasses.dataclass
class NonChineseRatioFilter(TextFilter):
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
        cps, lengths = codepoints(series_of(frame, self._clean()))
        letters, han = class_counts(cps, lengths, (r"\p{L}", r"\p{Han}"))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(letters >= max(self.min_letters, 1), 1 - han / np.maximum(letters, 1), np.nan)
        return pl.Series("value", ratio).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        t = self._clean()
        return series_of(frame, fmt("{} Han of {} letters", t.str.count_matches(r"\p{Han}"),
                                        t.str.count_matches(r"\p{L}")), "detail")
