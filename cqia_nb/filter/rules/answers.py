"""Answer-shape rules: answers cut off mid-sentence, answers that repeat the question."""

from __future__ import annotations

import dataclasses
import re

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


#: Characters that do not end a sentence: function words and prefixes (或 其 各 被 于 和 与 把 ...).
#: Each is followed by sentence-final punctuation or a line end in under 0.5 % of its 3,000+
#: occurrences in the real CQIA answers, and no real answer ends on one (把 left out: a measure
#: word, "一小把").
NEVER_FINAL = "各或其自不最第这什且被于而很都更几那和并就只没与非太给让如还将至较从及对使在所每该"
#: Conjunctions and prepositions that introduce what follows and never end a sentence ("……，因此",
#: "……通过"): no real CQIA answer ends on one.
NEVER_FINAL_WORDS = ("所以", "因此", "如果", "因为", "但是", "虽然", "而且", "并且", "或者", "以及", "不过", "然而",
                     "于是", "尽管", "即使", "只要", "除了", "通过", "关于", "根据", "由于", "对于", "为了", "随着",
                     "按照", "例如", "比如", "包括", "甚至")
#: Opening marks whose closing mark a finished sentence has: 《》 “” 「」 『』 【】.
_PAIRS = {"《": "》", "“": "”", "「": "」", "『": "』", "【": "】"}
#: Short last lines that close an answer on purpose.
SIGN_OFFS = ("以上", "完", "完毕", "谢谢", "感谢", "多谢", "谢邀", "拜拜", "白白", "再见", "晚安", "加油", "共勉",
             "祝好", "收工", "结束", "同上", "附图", "如图", "图片", "海报")
_OPTION = re.compile(r"(?:^|[\s（(:：])([A-F])[.．、:：)）]\s*([^\n]{0,60})")
_NAMES_CHOICE = re.compile(r"(?<![A-Za-z])[A-Fa-fＡ-Ｆ]+(?![A-Za-z])|[①②③④⑤⑥⑦⑧⑨⑩]|正确|错误|不对|对的|错的|[√×✓✗]")
_CLOSED_LINE = r"[。！？!?；;…）)」』”】》.~～]\s*$"


def unclosed_pair(text: str) -> str | None:
    """What a cut left open at the end of ``text`` (stripped), or None: a 《 “ 「 『 【 opened in the
    last sentence (after the last 。！？!? or line break) and never closed; a JSON-looking answer
    (starting with { or [) whose brackets do not balance outside its strings; an odd number of
    ``` fences. Parentheses （ ( are not counted: informal answers leave asides open."""
    t = text.strip()
    if not t:
        return None
    if t.count("```") % 2 == 1 and not t.endswith("```"):
        return "unclosed ``` code block"
    if re.match(r"(?:\{\s*[\"']|\[\s*[\"'{\[\d-])", t):  # JSON or a Python list, not "[品牌]"
        depth, quote, esc = 0, "", False
        for ch in t:
            if quote:
                if ch == quote and not esc:
                    quote = ""
                esc = not esc and ch == "\\"
                continue
            if ch in "\"'":
                quote = ch
            elif ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
        if depth > 0 or quote:
            return "unbalanced JSON brackets"
    last = max(t.rfind(c) for c in "。！？!?\n")
    frag = t[last + 1:]
    for o, c in _PAIRS.items():
        i = frag.rfind(o)
        if i >= 0 and c not in frag[i:]:
            # a mark opened as the very last character follows a word ("列入《"), not a finished
            # sentence or a verdict letter ("故选D“" is a stray mark)
            if i == len(frag) - 1 and not re.search(r"[\u3400-\u9fff\d：:]\Z", frag[:i]):
                continue
            return f"unclosed {o}"
    return None


def _visible_chars(text: str) -> int:
    """Letters, digits and CJK characters (no whitespace, punctuation, symbols)."""
    return len(re.sub(r"[\W_]+", "", text))


def _dangling_line(text: str) -> bool:
    """``text`` (stripped) ends with a last line of 1–2 CJK characters after a line that ends closed,
    has 20+ visible characters, and the last line is no sign-off and no two-character word echoing
    the line before (a punchline: "……迁徙之自由。”\\n\\n自由")."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if len(lines) < 2 or _visible_chars(text) < 20:
        return False
    last, prev = lines[-1], lines[-2]
    if last in SIGN_OFFS or not re.search(_CLOSED_LINE, prev):
        return False
    return not (len(last) == 2 and last in prev)


def names_no_choice(prompt: str, answer: str) -> bool:
    """True when ``prompt`` lists options A, B and C and the ``answer`` (20+ visible characters, an
    explanation) names none: no option letter standing alone (A, BCD, c), no ① … ⑩, no 正确 / 错误
    / √ / ×, and no option's own text (after "A." up to the line end)."""
    opts = _OPTION.findall(prompt)
    if not {"A", "B", "C"} <= {k for k, _ in opts}:
        return False
    if len(re.sub(r"[\s\W_]", "", answer)) < 20 or _NAMES_CHOICE.search(answer):
        return False
    for _, txt in opts:
        txt = re.sub(r"[\s。．.，,；;]+$", "", txt.strip())
        if txt and txt in answer:
            return False
    return True


@register
@dataclasses.dataclass
class UnfinishedAnswerFilter(TextFilter):
    """Answers that stop before they are done, on evidence stronger than a missing full stop
    (``truncated`` judges that one; 2,352 of the real answers the recipe keeps end on a letter, digit
    or CJK character, nearly all of them complete). Value 1
    when the answer (``field``, stripped)

    * ends inside an unclosed 《 “ 「 『 【 of its last sentence, a JSON answer whose brackets do
      not balance, or an unclosed ``` block (``unclosed_pair``; any length);
    * ends on a CJK character and a continuing mark ``，、,“‘《【`` (any length; ``truncated`` takes
      those over 50 characters): not a stray mark after a finished sentence ("……选B。、"), not a
      list number ("。二、"), not in a text that ends 3+ other lines with a comma (its author's
      style), and not （ (informal answers end on a wry "（");
    * ends on a character that never ends a sentence (``NEVER_FINAL``: 或 其 各 被 于 和 与 从 很 都
      ..., after a CJK character) or on a conjunction or preposition (``NEVER_FINAL_WORDS``: 因此,
      通过, 包括 ...), in an answer of 5+ visible characters;
    * ends with a dangling last line of 1–2 CJK characters ("…的潜力。\\n大", "…选A。\\n故") after
      a line that ends closed, in an answer of 20+ visible characters, unless it is a sign-off
      (``SIGN_OFFS``: 以上, 谢谢, 完 …) or a two-character word echoing the line before (a punchline);
    * answers a multiple-choice request (the prompt, ``prompt``, lists options A, B, C) with an
      explanation of 20+ visible characters that names no choice (``names_no_choice``): cut
      before its verdict, "故选B" being what such explanations end with.

    Else 0 (kept: ``value < 0.5``). Detail: which of these, and the last 20 characters.

    Why these and no more: COIG-CQIA is full of complete answers without a final 。 (xhs notes,
    zhihu, lists, poems, labels), so "prose ending on a character" cannot be told from a cut on its
    own; every check here needs evidence that something is missing, and is on by default because
    each drops only records that really stop short. On the real copy (17,971 records, each check
    alone): unclosed 2, continuing mark 11 (all over 50 characters; ``truncated`` drops them first
    in the recipe), never-final 1, dangling line 2, no choice named 0; 16 records in all, every one
    read by hand, 16 cut (data/reviews/issue14-recall-review.csv). After the steps before it in the
    default recipe it drops 3 (two "…\\n大" in human_value, one poem list stopping at "高鼎《村居").
    What it leaves: on the noise benchmark (cuts at 40–80 % of the answer) it and ``truncated``
    together catch about 0.57 of the cuts on the real copy; the rest end on a word that can end a
    sentence, which only a language model could judge.
    """

    name = "unfinished_answer"
    description = "answer stops before it is done (unclosed pair, function word, dangling line, no choice)"
    field: FieldSpec = "output"
    prompt: FieldSpec = "instruction+input"
    unclosed: bool = True
    continuing: bool = True
    never_final: bool = True
    dangling_line: bool = True
    choice: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._prompt = parse_fields(self.prompt)
        self.prompt = "+".join(self._prompt)

    def required_columns(self) -> tuple[str, ...]:
        return (*self._fields, *(c for c in self._prompt if c not in self._fields))

    def _reasons(self, frame: pl.DataFrame) -> list[str | None]:
        """Per record, why it is unfinished (None: it is not). Cheap regexes over every record pick
        the few candidates; only those are read in Python."""
        t = self.text().str.strip_chars()
        flags = frame.select(
            # a word cut at a continuing mark ("……的革命，"), not a stray mark after a finished
            # sentence ("……选B。、"), a list number ("。二、") or an author who ends paragraphs so
            (t.str.contains(r"\p{Han}[，、,“‘《【]\z") & ~t.str.contains(r"(?:^|[^\p{Han}])[一二三四五六七八九十]{1,3}、\z")
             & (t.str.count_matches(r"[，,][ \t]*\n") < 3)).alias("cont"),
            (t.str.contains(rf"\p{{Han}}[{NEVER_FINAL}]\z") | t.str.contains(f"(?:{'|'.join(NEVER_FINAL_WORDS)})\\z"))
            .alias("nf"),
            t.str.contains(r"\n[ \t\u3000]*\p{Han}{1,2}\z").alias("dangle"),
            # only texts with an opener, a fence or a JSON start can be unclosed; a pair only counts
            # when the text stops open (on a letter, digit or the opening mark itself)
            (t.str.contains(r"```|\A[{\[]\s*[\"'{\[\d-]")
             | (t.str.contains(r"[《“「『【]") & t.str.contains(r"[\p{L}\p{N}《“「『【]\z"))).alias("open"),
            # only answers of a prompt with options can fail to name one
            text_expr(self._prompt).str.contains(r"(?:^|[\s（(:：])C[.．、:：)）]").alias("choice"),
        )
        on = {"cont": self.continuing, "nf": self.never_final, "dangle": self.dangling_line,
              "open": self.unclosed, "choice": self.choice}
        masks = {k: flags[k].fill_null(False).to_numpy() & on[k] for k in flags.columns}
        out: list[str | None] = [None] * frame.height
        cand = np.flatnonzero(np.logical_or.reduce(list(masks.values())))
        if not len(cand):
            return out
        sub = frame[cand].select(t.alias("t"), text_expr(self._prompt).alias("p"))
        for i, text, prompt in zip(cand, sub["t"].to_list(), sub["p"].to_list()):
            text, why = text or "", None
            if masks["cont"][i]:
                why = "ends on a continuing mark"
            elif masks["nf"][i] and _visible_chars(text) >= 5:
                why = "ends on a word that never ends a sentence"
            elif masks["dangle"][i] and _dangling_line(text):
                why = "dangling last line"
            elif masks["open"][i]:
                why = unclosed_pair(text)
            if why is None and masks["choice"][i] and names_no_choice(prompt or "", text):
                why = "multiple choice, no choice named"
            out[i] = why
        return out

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return pl.Series("value", [0.0 if r is None else 1.0 for r in self._reasons(frame)], dtype=pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        return values < 0.5

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        tails = frame.select(self.text().str.strip_chars().str.slice(-20).alias("x"))["x"].to_list()
        return pl.Series("detail", [None if r is None else f"{r}: …{x}" for r, x in zip(self._reasons(frame), tails)],
                         dtype=pl.String)
