"""Character-level rules: special characters, mojibake, the share of non-Chinese text."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from cqia_nb.filter.framework import register
from cqia_nb.filter.rules.common import PatternFilter, TextFilter, char_class, fmt, series_of
from cqia_nb.filter.rules.kernels import class_mask, codepoints, per_text_sum

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

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        # code-point tables built from the same regex classes: same counts as
        # count_matches(SPECIAL_CHAR) / non-whitespace characters, ~5x faster
        cps, lengths = codepoints(series_of(frame, self.text()))
        special = per_text_sum(class_mask(cps, SPECIAL_CHAR), lengths)
        visible = lengths - per_text_sum(class_mask(cps, r"\s"), lengths)
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


@register
@dataclasses.dataclass
class MojibakeFilter(PatternFilter):
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
        letters = per_text_sum(class_mask(cps, r"\p{L}"), lengths)
        han = per_text_sum(class_mask(cps, r"\p{Han}"), lengths)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(letters >= max(self.min_letters, 1), 1 - han / np.maximum(letters, 1), np.nan)
        return pl.Series("value", ratio).fill_nan(None)

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_ratio

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        t = self._clean()
        return series_of(frame, fmt("{} Han of {} letters", t.str.count_matches(r"\p{Han}"),
                                        t.str.count_matches(r"\p{L}")), "detail")
