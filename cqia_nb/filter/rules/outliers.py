"""Answers that are abnormal for their kind of request: a few characters where the group's answers
are long, placeholders ("无", "略", "同上"), and a sentence or paragraph looping at the end.

What "normal" means is learned from the frame being filtered, per group (by default the HF config
and the task type): the median and the MAD of the log answer length. A one-letter answer is normal
for a multiple-choice exam and absurd for a zhihu question; one global length threshold cannot tell
the two apart, a per-group robust z-score can.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import polars as pl

from cqia_nb.filter.framework import batch_slices, register
from cqia_nb.filter.rules.common import FieldSpec, TextFilter, fmt, parse_fields, series_of, text_expr

#: Characters that are not letters, digits or CJK: stripped before answers are measured.
_NOT_VISIBLE = r"[\s\p{P}\p{S}\p{Cf}\p{Cc}\p{Z}]"
#: Requests whose right answer may be a letter, a word or a number: options listed (A. B. …),
#: choice / true-false / fill-in / classification / extraction wording, factoid questions (who,
#: how many, which year, "……是？") — the wording ones unless the request also asks for an
#: explanation. Yes/no wording (是不是, 是否) is not closed: in CQIA such questions (ruozhiba,
#: human_value) are answered at length, and the group statistics decide.
CLOSED_OPTIONS = r"(?:^|[\s（(:：])[A-Ea-e][.．、:：)）]|选项|[单多]选|选择题|判断题|判断正误|对的打"
CLOSED_WORDING = (r"填空|_{2,}|（\s*）|\(\s*\)|分类|类别|标签|情感倾向|抽取|提取|实体|关键词|只需|直接回答|简短回答|一个词"
                  r"|成语|缩写|谁|多少|几[个年岁次种天]|什么时候|何时|哪一年|等于|计算"
                  # a rewrite of one sentence is as short as the sentence ("用文言文表达这句话")
                  r"|一句话|这句话|这个词|用文言文"
                  # a question that ends "……是？" asks for a name or a number
                  r"|(?:是|为|有)[？?]\s*\z")
OPEN_WORDING = (r"解释|介绍|描述|写一|写出|撰写|创作|续写|谈谈|谈一谈|说说|讲讲|分析|论述|阐述|评价|怎么看|看法|为什么|为何"
                r"|如何|怎样|怎么|建议|体验|感受|心得|总结|概括|讨论|说明|详细|理由|原因|区别|步骤|方法|推断|推理|译为|翻译"
                r"|释义|意思|含义")
#: Task types (``task_type_major`` / ``task_type_minor``) whose answers are labels or short spans.
CLOSED_TASK_TYPES = r"分类|意图|语义分析|推理|抽取|匹配|判断|选择|实体|关键词"
#: Rewrites (translation, style transfer): a right answer is about as long as the text it rewrites.
TRANSFORM_WORDING = r"翻译|译为|译成|改写|转换|转述|润色|用文言文|用白话"
TRANSFORM_TASK_TYPES = r"翻译|改写|转换|风格迁移"
#: Placeholder answers: what a record holds when nobody wrote the answer. Never a real answer.
PLACEHOLDERS: tuple[str, ...] = (
    "略", "同上", "见上", "见下", "如上", "详见上文", "省略", "此处省略", "待补充", "待定", "todo", "tbd",
)
#: Placeholders that are also a right answer to some closed requests ("无" to "抽取文中的人名").
WEAK_PLACEHOLDERS: tuple[str, ...] = ("无", "暂无", "无答案", "没有答案", "不知道", "空", "na", "n/a", "none", "null")


def _visible_len(spec: tuple[str, ...]) -> pl.Expr:
    return text_expr(spec).str.replace_all(_NOT_VISIBLE, "").str.len_chars()


def _as_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` as one string per record (lists joined with "|"), nulls as ""."""
    col = pl.col(column)
    return (col.list.join("|") if isinstance(frame.schema[column], pl.List) else col.cast(pl.String)).fill_null("")


def _task_type_matches(frame: pl.DataFrame, pattern: str) -> pl.Expr:
    """True where ``task_type_major`` or ``task_type_minor`` (those present) matches ``pattern``."""
    e = pl.lit(False)
    for c in ("task_type_major", "task_type_minor"):
        if c in frame.columns:
            e = e | _as_text(frame, c).str.contains(pattern)
    return e


def closed_request(frame: pl.DataFrame, prompt: tuple[str, ...] = ("instruction", "input")) -> pl.Series:
    """True where a short answer can be right: options, closed wording (unless the request also
    asks for an explanation), or a closed task type (classification, extraction, inference …)."""
    cols = [c for c in prompt if c in frame.columns]
    text = text_expr(tuple(cols)) if cols else pl.lit("")
    closed = (text.str.contains(CLOSED_OPTIONS) | (text.str.contains(CLOSED_WORDING) & ~text.str.contains(OPEN_WORDING))
              | _task_type_matches(frame, CLOSED_TASK_TYPES))
    return series_of(frame, closed.fill_null(False), "closed")


def group_keys(frame: pl.DataFrame, group_by: tuple[str, ...]) -> list[pl.Series]:
    """One key per grouping level, finest first: all of ``group_by``, then fewer columns, then
    everything (""). Missing columns are skipped; lists are joined with "|"."""
    present = [c for c in group_by if c in frame.columns]
    exprs = [_as_text(frame, c) for c in present]
    keys = []
    for k in range(len(exprs), 0, -1):  # categorical: 4 bytes a record, whatever the key's length
        keys.append(series_of(frame, pl.concat_str(exprs[:k], separator="\x1f").cast(pl.Categorical), "key"))
    keys.append(pl.Series("key", [""] * frame.height, dtype=pl.Categorical))
    return keys


def robust_stats(x: np.ndarray, keys: list[pl.Series], min_group: int) -> tuple[np.ndarray, np.ndarray]:
    """Per record, the median and MAD of ``x`` over its finest group with at least ``min_group``
    values (coarser levels are the fallback; the last level, everything, always applies). NaN
    values do not count (records left out of the statistics still get their group's)."""
    med = np.full(len(x), np.nan)
    mad = np.full(len(x), np.nan)
    for level, key in enumerate(keys):
        last = level == len(keys) - 1
        df = pl.DataFrame({"key": key, "x": pl.Series(x, dtype=pl.Float64).fill_nan(None)})
        stats = df.group_by("key").agg(
            pl.col("x").count().alias("n"), pl.col("x").median().alias("med"),
            (pl.col("x") - pl.col("x").median()).abs().median().alias("mad"))
        j = df.select("key").join(stats, on="key", how="left", maintain_order="left")
        ok = (j["n"].to_numpy() >= (1 if last else min_group)) & np.isnan(med)
        med[ok] = j["med"].to_numpy()[ok]
        mad[ok] = j["mad"].to_numpy()[ok]
    return med, mad


@dataclasses.dataclass
class _GroupedAnswerFilter(TextFilter):
    """Shared: the answer's visible length and its group's robust statistics."""

    per_record = False  # a record's value depends on its group's median and MAD: every record at once
    field: FieldSpec = "output"
    prompt: FieldSpec = "instruction+input"
    group_by: tuple[str, ...] = ("config", "task_type_major")
    min_group: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        self._prompt = parse_fields(self.prompt)
        self.prompt = "+".join(self._prompt)
        self.group_by = tuple(self.group_by)
        if self.min_group < 1:
            raise ValueError(f"min_group must be >= 1, got {self.min_group}")

    def required_columns(self) -> tuple[str, ...]:
        return (*self._fields, *self._prompt)

    def _features(self, batch: pl.DataFrame) -> dict[str, np.ndarray]:
        """Per record of ``batch``: what the value needs besides the group statistics (a few bytes
        a record; the text is read here and nowhere else)."""
        return {"x": np.log1p(series_of(batch, _visible_len(self._fields)).to_numpy().astype(np.float64)),
                "closed": closed_request(batch, self._prompt).to_numpy()}

    def _log_stats(self, frame: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(features, group median, group MAD) per record, ``features["x"]`` = log1p(visible
        length). The text is read in bounded batches and only small per-record arrays are kept, so
        memory does not grow with the text. The statistics come from the open requests only (the
        labels of closed ones say nothing about a normal answer to an open one: finance mixes
        intent labels with term explanations)."""
        parts = [self._features(frame.slice(o, n)) for o, n in batch_slices(frame, self.required_columns())]
        f = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._stats(f, group_keys(frame, self.group_by))

    def _stats(self, f: dict[str, np.ndarray], keys: list[pl.Series]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        open_x = np.where(f["closed"], np.nan, f["x"])
        med, mad = robust_stats(open_x, keys, self.min_group)
        return f, med, mad

    def _value(self, f: dict[str, np.ndarray], med: np.ndarray, mad: np.ndarray) -> pl.Series:
        raise NotImplementedError

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return self._value(*self._log_stats(frame))

    def stream_keys(self, batch: pl.DataFrame) -> pl.DataFrame:
        """record_id, the features (``_f_<name>``) and the group columns as text: ~20 bytes a record."""
        f = self._features(batch)
        return batch.select(pl.col("record_id").cast(pl.String), *[
            _as_text(batch, c).alias(c) for c in self.group_by if c in batch.columns]).with_columns(
            [pl.Series(f"_f_{k}", v) for k, v in f.items()])

    def stream_decide(self, keys: pl.DataFrame | pl.LazyFrame, reread=None) -> pl.DataFrame:
        """The group statistics of all records from their keys, then each record's value."""
        k = keys.collect() if isinstance(keys, pl.LazyFrame) else keys
        f = {c[3:]: k[c].to_numpy() for c in k.columns if c.startswith("_f_")}
        groups = k.select([c for c in self.group_by if c in k.columns])
        value = self._value(*self._stats(f, group_keys(groups, self.group_by)))
        return k.select("record_id").with_columns(value.alias("value"))


@register
@dataclasses.dataclass
class ShortAnswerFilter(_GroupedAnswerFilter):
    """Answers far shorter than the answers to the same kind of request. Value: the robust z-score
    of ``log(1 + visible characters)`` within the record's group — ``0.6745 * (x - median) / MAD``
    (Iglewicz & Hoaglin), MAD floored at ``min_mad`` — where the group is ``group_by`` (config and
    task type) if it has ``min_group`` records, else the config, else the whole frame. The
    statistics come from the frame being filtered, so each config keeps its own idea of normal.

    Dropped when ``value < -max_z`` (2.0) and the answer has at most ``max_chars`` visible characters
    and the request is open (``closed_request`` is false: no options, no choice / fill-in /
    classification / extraction / factoid wording, not a classification or extraction task type).
    Null (kept) for closed requests, answers over ``max_chars``, and rewrites (translation, style
    transfer) whose answer has at least ``min_source_ratio`` of the prompt's visible characters. So "A" to a multiple-choice exam question stays (closed; and
    a short answer is normal there), "不是" in finance intent detection stays (its group's median
    is 2 characters), and "还行" to a zhihu question (median ~500 characters) goes.

    Defaults ``max_z: 2.0``, ``max_chars: 10``, ``min_group: 20``: the answer cap is what keeps
    precision (a 10-character answer is short in every open group), the z-score is what spares
    groups where short answers are normal. Real CQIA (17,971 records): 0 records dropped at the
    defaults; the only short answers to open-looking requests were factoid questions (a question
    ending "……是？" that asks for two names, a sum to complete), which is why such wording counts
    as closed.
    """

    name = "short_answer"
    description = "answer a few characters long where the group's answers are long (robust z)"
    threshold_fields = ("max_z",)
    max_z: float = 2.0
    max_chars: int = 10
    min_mad: float = 0.25
    min_source_ratio: float = 0.15

    def _features(self, batch: pl.DataFrame) -> dict[str, np.ndarray]:
        return {**super()._features(batch), "rewrite": self._rewrite(batch),
                "prompt_len": self._prompt_lengths(batch)}

    def _value(self, f: dict[str, np.ndarray], med: np.ndarray, mad: np.ndarray) -> pl.Series:
        x = f["x"]
        z = 0.6745 * (x - med) / np.maximum(mad, self.min_mad)
        # a long answer is never "cut to a few characters", however unusual its length; a rewrite
        # of a short text (translate one sentence) is short because its source is
        z[(np.expm1(x) > self.max_chars) | f["closed"]
          | (f["rewrite"] & (np.expm1(x) >= self.min_source_ratio * f["prompt_len"]))] = np.nan
        return pl.Series("value", z).fill_nan(None)

    def _prompt_lengths(self, frame: pl.DataFrame) -> np.ndarray:
        return series_of(frame, _visible_len(self._prompt)).to_numpy().astype(np.float64)

    def _rewrite(self, frame: pl.DataFrame) -> np.ndarray:
        """True for translation / rewrite requests (wording or task type)."""
        e = text_expr(self._prompt).str.contains(TRANSFORM_WORDING) | _task_type_matches(frame, TRANSFORM_TASK_TYPES)
        return series_of(frame, e.fill_null(False), "rewrite").to_numpy()

    def keep(self, values: pl.Series) -> pl.Series:
        return values >= -self.max_z

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return series_of(frame, fmt("{} visible chars, robust z {}", _visible_len(self._fields),
                                    pl.lit(values).round(1)), "detail")


@register
@dataclasses.dataclass
class PlaceholderAnswerFilter(_GroupedAnswerFilter):
    """Placeholder answers: "略", "同上", "见上", "待补充" … (``PLACEHOLDERS`` plus ``extra``; never
    an answer) always, and "无", "暂无", "不知道", "N/A" … (``WEAK_PLACEHOLDERS``) or punctuation
    only ("。", "……") when the request is open and its group's answers are normally long (median
    visible length >= ``min_group_median``): "无" is a right answer to "抽取文中的人名".
    Compared after removing whitespace, punctuation and symbols and lower-casing. Value 1 for
    such records, else 0.

    Default ``min_group_median: 20``: the groups of real CQIA whose answers are labels or spans
    (finance intent detection, extraction) have medians of 2–10 characters, every open group has
    70 or more. Real CQIA: 0 records dropped at the defaults (its authors removed such answers).
    """

    name = "placeholder_answer"
    description = "placeholder answer (无, 略, 同上, 。) where real answers are long"
    min_group_median: float = 20.0
    extra: tuple[str, ...] = ()

    def _norm(self) -> pl.Expr:
        return text_expr(self._fields).str.to_lowercase().str.replace_all(_NOT_VISIBLE, "")

    def _features(self, batch: pl.DataFrame) -> dict[str, np.ndarray]:
        def norm_set(ws):
            return sorted({re.sub(r"[\s\W_]+", "", w.lower()) for w in ws} - {""})

        f = super()._features(batch)
        norm = series_of(batch, self._norm(), "n")
        f["strong"] = norm.is_in(norm_set((*PLACEHOLDERS, *self.extra))).to_numpy()
        f["weak"] = (norm.is_in(norm_set(WEAK_PLACEHOLDERS)) | (norm == "")).to_numpy() & ~f["closed"]
        return f

    def _value(self, f: dict[str, np.ndarray], med: np.ndarray, mad: np.ndarray) -> pl.Series:
        long_group = np.expm1(med) >= self.min_group_median
        return pl.Series("value", (f["strong"] | (f["weak"] & long_group)).astype(np.float64))

    def keep(self, values: pl.Series) -> pl.Series:
        return values < 0.5

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return series_of(frame, fmt("placeholder answer \"{}\"", text_expr(self._fields).str.slice(0, 20)), "detail")


_SEGMENT = re.compile(r"[^。！？!?…\n]*(?:[。！？!?…]+|\n+|$)")


def tail_repeats(text: str, max_block: int = 3, min_unit: int = 8) -> tuple[int, int]:
    """(copies, unit length): how many times the answer's last block of 1..``max_block``
    sentences / lines occurs back to back at its end, for blocks of at least ``min_unit`` visible
    characters; (1, 0) when nothing repeats."""
    segs = [s.strip() for s in _SEGMENT.findall(text)]
    segs = [s for s in segs if s]
    best, unit = 1, 0
    for p in range(1, max_block + 1):
        if 2 * p > len(segs):
            break
        block = segs[-p:]
        if len(re.sub(r"[\s\W_]+", "", "".join(block))) < min_unit:
            continue
        k = 1
        while (k + 1) * p <= len(segs) and segs[-(k + 1) * p: len(segs) - k * p] == block:
            k += 1
        if k > best:
            best, unit = k, len("".join(block))
    return best, unit


@register
@dataclasses.dataclass
class RepeatedTailFilter(TextFilter):
    """The answer ends with a sentence, line or paragraph (a block of 1..``max_block`` sentences)
    repeated back to back — a generation stuck in a loop. Value: the copies of the answer's last
    block at its end, counted on whole sentences (split at 。！？!?… and line breaks, whitespace
    stripped) for blocks of at least ``min_unit`` visible characters. Keeps ``value <
    min_repeats`` (default 3 copies).

    ``consecutive_repeats`` catches short phrases (2–20 characters, > 4 copies) anywhere; this
    catches long units (a whole sentence or paragraph) with fewer copies, only at the end, where a
    loop stops when the length budget runs out. Sentence lists (poems with refrains, lists of
    steps) repeat structure, not whole sentences, so they are not counted. Real CQIA: 0 records
    dropped at the default 3 copies, 2 at ``min_repeats: 2``.
    """

    name = "repeated_tail"
    details_per_record = True
    description = "a sentence or paragraph repeated back to back at the end of the answer"
    threshold_fields = ("min_repeats",)
    field: FieldSpec = "output"
    min_repeats: int = 3
    max_block: int = 3
    min_unit: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_repeats < 2:
            raise ValueError(f"min_repeats must be >= 2, got {self.min_repeats}")

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        texts = series_of(frame, self.text(), "t").to_list()
        # only texts whose last segment occurs at least twice can repeat: a cheap pre-check
        out = [float(tail_repeats(t, self.max_block, self.min_unit)[0]) if t and len(t) >= 2 * self.min_unit else 1.0
               for t in texts]
        return pl.Series("value", out, dtype=pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        return values < self.min_repeats

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        texts = series_of(frame, self.text(), "t").to_list()
        out = []
        for t in texts:
            k, u = tail_repeats(t or "", self.max_block, self.min_unit)
            out.append(f"last {u}-char block x{k}" if k > 1 else None)
        return pl.Series("detail", out, dtype=pl.String)

