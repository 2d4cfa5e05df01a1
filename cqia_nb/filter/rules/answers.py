"""Answer-shape rules: answers cut off mid-sentence, answers that repeat the question."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from cqia_nb.filter.framework import Filter, register
from cqia_nb.filter.rules.common import FieldSpec, TextFilter, fmt, parse_fields, series_of, text_expr
from cqia_nb.filter.rules.kernels import codepoints, ngram_keys

_SENT_END = r"[。！？!?…]"
_LINE_CLOSED = r"[。！？!?.…~～；;”’」』）)】》\]>〉*|`=\-—:：\p{So}\p{Sk}]$"


@register
@dataclasses.dataclass
class TruncatedFilter(TextFilter):
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
        return series_of(frame, pl.concat_str(pl.lit("…"), self.text().str.strip_chars().str.slice(-20)), "detail")


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
    per_record = True
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
            qa, ql = codepoints(q.gather(cand))
            aa, al = codepoints(a.gather(cand))
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
        return series_of(frame, fmt("{}% of answer bigrams in the question: \"{}\"",
                                        (pl.lit(values) * 100).round(1), a.str.slice(0, 40)), "detail")
