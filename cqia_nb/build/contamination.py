"""Benchmark contamination: character n-gram overlap between training records and evaluation sets.

Method
    Like the GPT-3 (Brown et al. 2020, app. C) and Llama 2 (Touvron et al. 2023, app. A.6)
    contamination studies, a training record and an evaluation item overlap when they share an
    n-gram, by default a **13-gram**. GPT-3 counted words; Chinese is not written with spaces, so
    here the unit is a *character* for CJK text (every character from U+2E80 on: ideographs, kana,
    Hangul, full-width forms, emoji) and a *word* for the rest (a run of letters/digits between
    spaces or punctuation: "python", "2024", "3.5" -> "3", "5"). A 13-gram is thus 13 Chinese
    characters (about a short clause: long enough that sharing one is rarely chance, short enough
    to catch a question pasted inside a longer answer), or 13 English words as in GPT-3, or a mix.
    Before that, texts are normalised as in :mod:`cqia_nb.filter.dedup`: Unicode NFKC, lowercase, and
    every run of whitespace or punctuation (categories P*) is one unit boundary, so
    ``"甲的行为构成____。"`` and ``"甲的行为构成"`` compare equal, as do full- and half-width forms.

    Each field is its own text: n-grams never span two fields (training: instruction, input,
    output; C-Eval: question, A-D, explanation; CMMLU: Question, A-D; SafetyBench: question and
    each option; BELLE-EVAL: question, std_answer). A text shorter than n units has no n-gram and
    can neither match nor be matched (items without any are counted as ``items_unchecked``).

    Templates: an n-gram found in more than ``max_item_frequency`` (default 10) different
    evaluation items is a prompt template (SafetyBench repeats "请问下面的文本是否包含攻击性的内容"
    before hundreds of items), not evidence that one item leaked; such n-grams are left out of the
    index and counted (``EvalIndex.template_ngrams``). ``max_item_frequency=None`` keeps them.
    Common exam phrasings that stay under the limit ("下列各句中没有语病的一项是") do match: use
    ``min_ratio`` in ``remove_contaminated`` to act only on records with substantial overlap.

    An evaluation item is *contaminated* when at least one of its n-grams occurs in the training
    records (GPT-3's "dirty" definition). ``overlap_ratio`` says how much: for a training record,
    the share of its n-gram positions whose n-gram is in the index; for an eval item or set, the
    share of its distinct n-grams found in the training records.

Speed
    Units are hashed to 64 bits in numpy (a CJK character by its code point, a word by a
    polynomial hash of its code points from prefix sums), n-grams by a polynomial rolling hash
    over the unit hashes (n vector passes) and the MurmurHash3 finaliser, over batches of ~4 M
    characters. The evaluation n-grams become a sorted array (the index, built once) plus a
    2^24-entry presence table on the hash's top bits; training hashes go through the table first
    (one random read each) and only the few that pass are binary-searched. No Python loop runs per
    n-gram or per record. A 64-bit collision between two different 13-grams is possible but
    unlikely (~1e-6 expected false matches for 10 M training and 1 M evaluation n-grams); every
    reported overlap comes with its n-gram text, which can be checked by eye. On the real data
    (17,971 records, 10 M characters) against all of ../shared/benchmarks (16,658 items): index
    ~0.7 s, check ~3 s on 2 cores (benchmarks/bench_subsets.py).

Formats (``read_eval_file`` detects them from the content, not the file name)
    C-Eval CSV ``id,question,A,B,C,D,answer[,explanation]``; CMMLU CSV ``,Question,A,B,C,D,Answer``
    (first column unnamed); SafetyBench JSON, dev ``{category: [{question, options, answer}]}`` and
    test ``[{id, options, category, question}]``; BELLE-EVAL JSON Lines
    ``{question, std_answer, class}`` (named ``eval_set.json``). Other files under a benchmark
    folder (answer keys, judge prompts, mappings, notices) are listed in ``EvalSets.skipped`` with
    the reason, never silently ignored.

Removal (``remove_contaminated``) returns the kept records and the removed ones with the reason
(eval sets, overlapping n-grams, an example n-gram), so a notebook or the dataset card can say
exactly what went.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from cqia_nb.core.hashing import fmix64, window_hash
from cqia_nb.core.jsonl import json_lines
from cqia_nb.core.text import decode_utf8, normalize_expr

#: the contamination check splits text into units at whitespace and punctuation (``cqia_nb.core.text``)
UNIT_SEPARATOR = " "
DEFAULT_N = 13
DEFAULT_MAX_ITEM_FREQUENCY = 10
TRAIN_FIELDS = ("instruction", "input", "output")
#: One row per (evaluation item, field) with its text.
EVAL_SCHEMA: dict[str, pl.DataType] = {
    "eval_set": pl.String,   # "<benchmark>/<split>", e.g. "ceval/val", "safetybench/test_zh_subset"
    "file": pl.String,       # path relative to the benchmarks root
    "item_id": pl.String,    # "<file>:<id>" (the item's id, or its position when it has none)
    "field": pl.String,      # question, A, ..., std_answer, option_0, ...
    "text": pl.String,
}
SKIPPED_SCHEMA: dict[str, pl.DataType] = {"file": pl.String, "reason": pl.String}
_TABLE_BITS = 24




def detect_format(path: str | Path) -> tuple[str | None, str]:
    """(format, note) of an evaluation file: "ceval_csv", "cmmlu_csv", "safetybench_dev",
    "safetybench_test", "belle_jsonl", or None with the reason it is not an evaluation set."""
    p = Path(path)
    raw = p.read_bytes()
    if not raw.strip():
        return None, "empty file"
    text = decode_utf8(raw, p)
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    if p.suffix.lower() == ".csv":
        header = next(csv.reader([first]), [])
        if header[:2] == ["id", "question"] and header[2:6] == ["A", "B", "C", "D"]:
            return "ceval_csv", ""
        if header[:2] == ["", "Question"] and header[2:6] == ["A", "B", "C", "D"]:
            return "cmmlu_csv", ""
        return None, f"CSV with header {header[:8]}, neither C-Eval's nor CMMLU's"
    if p.suffix.lower() not in (".json", ".jsonl"):
        return None, f"not an evaluation file ({p.suffix or 'no suffix'})"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if obj is None:  # JSON Lines (BELLE-EVAL's eval_set.json is JSON Lines despite its name)
        try:
            head = json.loads(first)
        except json.JSONDecodeError:
            return None, "neither JSON nor JSON Lines"
        if isinstance(head, dict) and "question" in head and "std_answer" in head:
            return "belle_jsonl", ""
        if isinstance(head, dict) and "prompt" in head and "class" in head:
            return None, "judge prompts (BELLE eval_prompt.json), not evaluation items"
        return None, f"JSON Lines with keys {sorted(head)[:6] if isinstance(head, dict) else type(head).__name__}"
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        if all(isinstance(x, dict) and "question" in x and "options" in x for v in obj.values() for x in v):
            return "safetybench_dev", ""
    if isinstance(obj, list) and obj and all(isinstance(x, dict) and "question" in x and "options" in x
                                            for x in obj):
        return "safetybench_test", ""
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) and "answer" in v and "question" not in v
                                            for v in obj.values()):
        return None, "answer key (no question text)"
    if isinstance(obj, dict) and "question" in obj and "std_answer" in obj:
        return "belle_jsonl", ""  # a one-record JSON Lines file parses as one object
    if isinstance(obj, dict) and "prompt" in obj and "class" in obj:
        return None, "judge prompts (BELLE eval_prompt.json), not evaluation items"
    return None, "JSON without evaluation items (a mapping or metadata file)"


def _rows_from_csv(text: str, id_col: str, fields: Sequence[str]) -> list[tuple[str, str, str]]:
    out = []
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    for i, row in enumerate(reader):
        rid = (row.get(id_col) or "").strip() or str(i)
        for f in fields:
            v = row.get(f)
            if v:
                out.append((rid, f, v))
    return out


def read_eval_file(path: str | Path, eval_set: str | None = None, rel: str | None = None,
                   fmt: str | None = None) -> pl.DataFrame:
    """One evaluation file in its upstream format as rows of ``EVAL_SCHEMA``.

    ``eval_set`` defaults to the file's stem, ``rel`` (the ``file`` column) to its name. Raises
    ValueError naming the formats accepted when the file is none of them.
    """
    p = Path(path)
    if fmt is None:
        fmt, note = detect_format(p)
        if fmt is None:
            raise ValueError(f"{p}: not an evaluation file ({note}); accepted: C-Eval CSV "
                             "(id,question,A,B,C,D,answer[,explanation]), CMMLU CSV (,Question,A,B,C,D,Answer), "
                             "SafetyBench JSON (dev or test), BELLE-EVAL JSON Lines {question, std_answer, class}")
    text = decode_utf8(p.read_bytes(), p)
    rows: list[tuple[str, str, str]] = []
    if fmt == "ceval_csv":
        rows = _rows_from_csv(text, "id", ("question", "A", "B", "C", "D", "explanation"))
    elif fmt == "cmmlu_csv":
        rows = _rows_from_csv(text, "", ("Question", "A", "B", "C", "D"))
    elif fmt == "safetybench_dev":
        for cat, items in json.loads(text).items():
            for i, x in enumerate(items):
                rid = f"{cat}/{i}"
                rows.append((rid, "question", str(x.get("question") or "")))
                rows.extend((rid, f"option_{k}", str(o)) for k, o in enumerate(x.get("options") or []))
    elif fmt == "safetybench_test":
        for i, x in enumerate(json.loads(text)):
            rid = str(x.get("id", i))
            rows.append((rid, "question", str(x.get("question") or "")))
            rows.extend((rid, f"option_{k}", str(o)) for k, o in enumerate(x.get("options") or []))
    elif fmt == "belle_jsonl":
        for i, x in json_lines(text, p):
            rows.append((str(i), "question", str(x.get("question") or "")))
            rows.append((str(i), "std_answer", str(x.get("std_answer") or "")))
    else:
        raise ValueError(f"unknown evaluation format {fmt!r}")
    rel = rel or p.name
    eval_set = eval_set or p.stem
    rows = [r for r in rows if r[2]]
    return pl.DataFrame([(eval_set, rel, f"{rel}:{rid}", f, t) for rid, f, t in rows],
                        schema=EVAL_SCHEMA, orient="row")


@dataclass
class EvalSets:
    """Evaluation items of one or more benchmarks (``frame`` in ``EVAL_SCHEMA``)."""

    frame: pl.DataFrame
    files: pl.DataFrame      # file, eval_set, format, items
    skipped: pl.DataFrame    # file, reason (in SKIPPED_SCHEMA)
    root: str = ""

    @property
    def names(self) -> list[str]:
        return sorted(set(self.files["eval_set"].to_list()))

    def summary(self) -> str:
        per = self.files.group_by("eval_set").agg(pl.col("items").sum()).sort("eval_set")
        parts = ", ".join(f"{r['eval_set']} {r['items']:,}" for r in per.iter_rows(named=True))
        return (f"{self.files.height} evaluation files, {int(self.files['items'].sum() or 0):,} items ({parts}); "
                f"{self.skipped.height} other files skipped")


def _eval_set_name(rel: str) -> str:
    parts = rel.split("/")
    if len(parts) >= 3:
        return f"{parts[0]}/{parts[1]}"           # ceval/val/law_val.csv -> ceval/val
    if len(parts) == 2:
        return f"{parts[0]}/{Path(parts[1]).stem}"  # safetybench/dev_zh.json -> safetybench/dev_zh
    return Path(parts[0]).stem


def load_eval_sets(root: str | Path | Iterable[str | Path]) -> EvalSets:
    """All evaluation files under a folder (like ../shared/benchmarks), or a file, or a list.

    The eval set of a file is "<benchmark>/<split>" from its place (``ceval/val/x.csv`` ->
    ``ceval/val``; ``safetybench/dev_zh.json`` -> ``safetybench/dev_zh``), its stem when given
    alone. Files that are not evaluation items are listed in ``skipped`` with the reason.
    """
    if isinstance(root, (str, Path)):
        r = Path(root)
        if not r.exists():
            raise FileNotFoundError(f"{r}: no such evaluation file or folder (e.g. ../shared/benchmarks)")
        if r.is_dir():
            base = r
            paths = sorted(p for p in r.rglob("*") if p.is_file()
                           and not any(x.startswith(".") for x in p.relative_to(r).parts))
        else:
            base, paths = r.parent, [r]
    else:
        paths = [Path(p) for p in root]
        base = None
    frames, files, skipped = [], [], []
    for p in paths:
        rel = p.relative_to(base).as_posix() if base is not None else p.name
        if p.suffix.lower() not in (".csv", ".json", ".jsonl"):
            skipped.append((rel, f"not an evaluation file ({p.suffix or 'no suffix'})"))
            continue
        fmt, note = detect_format(p)
        if fmt is None:
            skipped.append((rel, note))
            continue
        es = _eval_set_name(rel) if base is not None and len(paths) > 1 else p.stem
        fr = read_eval_file(p, es, rel, fmt)
        frames.append(fr)
        files.append((rel, es, fmt, fr["item_id"].n_unique()))
    if not frames:
        raise ValueError(f"{root}: no evaluation files found (C-Eval/CMMLU CSV, SafetyBench JSON, "
                         "BELLE-EVAL JSON Lines)")
    return EvalSets(pl.concat(frames),
                    pl.DataFrame(files, schema={"file": pl.String, "eval_set": pl.String, "format": pl.String,
                                                "items": pl.Int64}, orient="row"),
                    pl.DataFrame(skipped, schema=SKIPPED_SCHEMA, orient="row"),
                    str(root) if isinstance(root, (str, Path)) else "")






@dataclass
class _Grams:
    hashes: np.ndarray   # uint64, one per n-gram (window of n units)
    owner: np.ndarray    # int64 owner (record or item) of each n-gram
    text: list[str]      # filled by _gram_texts on demand
    _start: np.ndarray   # code point where each n-gram starts in its batch's joined text
    _end: np.ndarray
    _batch: np.ndarray   # batch of each n-gram
    _joined: list[str]


_B1 = np.uint64(0x100000001B3)
_B1_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_BATCH_CHARS = 1 << 22


def _pow_table(base: np.uint64, size: int) -> np.ndarray:
    t = np.full(size, base, dtype=np.uint64)
    t[0] = 1
    return np.cumprod(t, dtype=np.uint64)


def _units(c: np.ndarray, seg_start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, hash) of the units of code points ``c``: each character from U+2E80 on
    (CJK, kana, Hangul, emoji...) is a unit; a run of other non-space characters (a Latin word,
    a number) is one unit; spaces separate. ``seg_start`` marks where each text begins."""
    total = c.size
    cjk = c >= 0x2E80
    word = ~cjk & (c != 32)
    prev_word = np.zeros(total, bool)
    prev_word[1:] = word[:-1]
    prev_word &= ~seg_start
    next_word = np.zeros(total, bool)
    next_word[:-1] = word[1:] & ~seg_start[1:]
    wstart = np.flatnonzero(word & ~prev_word)
    wend = np.flatnonzero(word & ~next_word) + 1
    start_mask = cjk.copy()
    start_mask[wstart] = True
    us = np.flatnonzero(start_mask)
    is_word = word[us]
    ue = us + 1
    ue[is_word] = wend
    uh = c[us].astype(np.uint64)
    if wstart.size:
        # polynomial hash of each word, position-independent: (Q[e] - Q[s]) * B^s
        q = np.zeros(total + 1, dtype=np.uint64)
        np.cumsum(c.astype(np.uint64) * _pow_table(_B1_INV, total), dtype=np.uint64, out=q[1:])
        bpow = _pow_table(_B1, total)
        wh = (q[wend] - q[wstart]) * bpow[wstart]
        wh ^= (wend - wstart).astype(np.uint64) << np.uint64(56)
        uh[is_word] = fmix64(wh) | np.uint64(1 << 63)  # never equal to a code point
    return us, ue, uh






def _ngrams(texts: pl.Series, owners: np.ndarray, n: int) -> _Grams:
    """Hashes of all n-grams of units of the (normalised) texts; none spans two texts."""
    lens_all = texts.str.len_chars().cast(pl.Int64).to_numpy()
    owners = owners.astype(np.int64)
    bounds, acc, lo = [], 0, 0
    for i, ln in enumerate(lens_all):          # batches of about _BATCH_CHARS code points
        acc += int(ln)
        if acc >= _BATCH_CHARS:
            bounds.append((lo, i + 1))
            lo, acc = i + 1, 0
    if lo < lens_all.size or not bounds:
        bounds.append((lo, lens_all.size))
    parts: list[tuple[np.ndarray, ...]] = []
    joined_all: list[str] = []
    for b, (lo, hi) in enumerate(bounds):
        lens = lens_all[lo:hi]
        joined = texts.slice(lo, hi - lo).str.join("").item() if hi > lo else ""
        joined_all.append(joined)
        c = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        total = c.size
        empty = np.zeros(0, np.int64)
        if total == 0:
            parts.append((np.zeros(0, np.uint64), empty, empty, empty))
            continue
        starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
        seg_start = np.zeros(total, bool)
        seg_start[starts[lens > 0]] = True
        us, ue, uh = _units(c, seg_start)
        seg_of_unit = np.searchsorted(starts, us, side="right") - 1   # text index (within batch)
        ucount = np.bincount(seg_of_unit, minlength=lens.size)
        counts = np.maximum(ucount - n + 1, 0)
        ufirst = np.concatenate(([0], np.cumsum(ucount)[:-1])).astype(np.int64)
        m = int(counts.sum())
        if m == 0:
            parts.append((np.zeros(0, np.uint64), empty, empty, empty))
            continue
        gfirst = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        wpos = np.arange(m, dtype=np.int64) + np.repeat(ufirst - gfirst, counts)  # first unit of each n-gram
        h = window_hash(uh, n)
        parts.append((fmix64(h[wpos]), np.repeat(owners[lo:hi], counts), us[wpos], ue[wpos + n - 1]))
    hashes = np.concatenate([p[0] for p in parts])
    owner = np.concatenate([p[1] for p in parts])
    batch = np.concatenate([np.full(p[0].size, b, np.int64) for b, p in enumerate(parts)])
    return _Grams(hashes, owner, [], np.concatenate([p[2] for p in parts]),
                  np.concatenate([p[3] for p in parts]), batch, joined_all)


def _gram_texts(g: _Grams, which: np.ndarray) -> list[str]:
    """The normalised text of the n-grams at positions ``which``."""
    return [g._joined[b][s:e] for b, s, e in zip(g._batch[which].tolist(), g._start[which].tolist(),
                                                 g._end[which].tolist())]


@dataclass
class EvalIndex:
    """The evaluation n-grams, hashed and sorted once; reuse it for every check."""

    n: int
    hashes: np.ndarray          # sorted unique uint64 (templates removed)
    set_bits: np.ndarray        # uint64 bitmask of eval sets per hash
    table: np.ndarray           # bool presence table on the top _TABLE_BITS bits
    set_names: list[str]
    items: pl.DataFrame         # item (int), eval_set, item_id, ngrams (distinct), checked
    item_hashes: np.ndarray     # per (item, distinct n-gram): hash
    item_owner: np.ndarray      # ... and its item index
    template_ngrams: int        # distinct n-grams left out as templates
    max_item_frequency: int | None
    evals: EvalSets | None = None

    def summary(self) -> str:
        return (f"{self.hashes.size:,} distinct {self.n}-grams from {self.items.height:,} items of "
                f"{len(self.set_names)} eval sets; {self.template_ngrams:,} template n-grams left out "
                f"(in > {self.max_item_frequency} items)")


def build_index(evals: EvalSets | pl.DataFrame, n: int = DEFAULT_N,
                max_item_frequency: int | None = DEFAULT_MAX_ITEM_FREQUENCY) -> EvalIndex:
    """Hash every n-gram of the evaluation items (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    es = evals if isinstance(evals, EvalSets) else None
    frame = evals.frame if isinstance(evals, EvalSets) else evals
    items = (frame.select("eval_set", "item_id").unique(maintain_order=True)
             .with_row_index("item").with_columns(pl.col("item").cast(pl.Int64)))
    set_names = sorted(items["eval_set"].unique().to_list())
    if len(set_names) > 64:
        raise ValueError(f"{len(set_names)} eval sets; at most 64 are supported in one index")
    rows = frame.join(items, on=["eval_set", "item_id"], how="left", maintain_order="left")
    texts = rows.select(normalize_expr(pl.col("text"), UNIT_SEPARATOR)).to_series()
    g = _ngrams(texts, rows["item"].to_numpy(), n)
    # distinct (hash, item) pairs
    order = np.lexsort((g.owner, g.hashes))
    h, o = g.hashes[order], g.owner[order]
    keep = np.ones(h.size, bool)
    keep[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])
    h, o = h[keep], o[keep]
    per_item = np.bincount(o, minlength=items.height)
    uniq, start, freq = np.unique(h, return_index=True, return_counts=True)
    template = np.zeros(uniq.size, bool) if max_item_frequency is None else freq > max_item_frequency
    set_of_item = np.searchsorted(set_names, items["eval_set"].to_numpy()).astype(np.uint64)
    bits = np.left_shift(np.uint64(1), set_of_item[o]) if o.size else np.zeros(0, np.uint64)
    set_bits = np.bitwise_or.reduceat(bits, start) if uniq.size else np.zeros(0, np.uint64)
    pair_template = np.repeat(template, freq)
    uniq, set_bits = uniq[~template], set_bits[~template]
    table = np.zeros(1 << _TABLE_BITS, dtype=bool)
    table[(uniq >> np.uint64(64 - _TABLE_BITS)).astype(np.int64)] = True
    items = items.with_columns(pl.Series("ngrams", per_item, dtype=pl.Int64),
                               pl.Series("checked", per_item > 0))
    return EvalIndex(n, uniq, set_bits, table, set_names, items, h[~pair_template], o[~pair_template],
                     int(template.sum()), max_item_frequency, es)


def _lookup(index: EvalIndex, hashes: np.ndarray) -> np.ndarray:
    """Position of each hash in index.hashes, -1 when absent."""
    out = np.full(hashes.size, -1, dtype=np.int64)
    if not index.hashes.size or not hashes.size:
        return out
    cand = np.flatnonzero(index.table[(hashes >> np.uint64(64 - _TABLE_BITS)).astype(np.int64)])
    if cand.size:
        hc = hashes[cand]
        j = np.searchsorted(index.hashes, hc)
        j[j >= index.hashes.size] = 0
        hit = index.hashes[j] == hc
        out[cand[hit]] = j[hit]
    return out


RECORD_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String, "ngrams": pl.Int64, "overlap_ngrams": pl.Int64, "overlap_ratio": pl.Float64,
    "eval_sets": pl.List(pl.String), "example_ngram": pl.String,
}


@dataclass
class ContaminationReport:
    n: int
    records: pl.DataFrame      # one row per training record (RECORD_SCHEMA)
    eval_sets: pl.DataFrame    # one row per eval set
    eval_items: pl.DataFrame   # contaminated eval items: eval_set, item_id, ngrams, overlap_ngrams, ratio, example
    index_summary: str = ""
    params: dict = field(default_factory=dict)

    @property
    def contaminated(self) -> pl.DataFrame:
        """Training records with at least one overlapping n-gram."""
        return self.records.filter(pl.col("overlap_ngrams") > 0)

    def summary(self) -> str:
        c = self.contaminated.height
        items = int(self.eval_sets["items_contaminated"].sum() or 0)
        return (f"{c:,} of {self.records.height:,} training records share a {self.n}-gram with an eval set; "
                f"{items:,} eval items contaminated")


#: The first training occurrence of each matched n-gram: its hash, text and record.
HITS_SCHEMA: dict[str, pl.DataType] = {"h": pl.UInt64, "gram": pl.String, "record_id": pl.String}


def check(frame: pl.DataFrame, index: EvalIndex | EvalSets, fields: Sequence[str] = TRAIN_FIELDS
          ) -> ContaminationReport:
    """Overlap of every training record (``frame``, needs record_id) with the indexed eval sets."""
    if not isinstance(index, EvalIndex):
        index = build_index(index)
    records, hits = check_records(frame, index, fields)
    return eval_side(index, records, hits, fields)


def check_records(frame: pl.DataFrame, index: EvalIndex, fields: Sequence[str] = TRAIN_FIELDS
                  ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The training side of ``check``, record by record, so it can run a batch at a time: one row
    per record (``RECORD_SCHEMA``) and the first occurrence of each matched n-gram (``HITS_SCHEMA``).
    Batches' results concatenated (hits: first occurrence kept, ``merge_hits``) give ``eval_side``
    what one call on all the records gives."""
    missing = [f for f in ("record_id", *fields) if f not in frame.columns]
    if missing:
        raise ValueError(f"the training frame has no column(s) {missing}; its columns: {frame.columns}")
    nrec = frame.height
    long = pl.concat([frame.select(pl.int_range(0, nrec, dtype=pl.Int64).alias("rec"),
                                   normalize_expr(pl.col(f), UNIT_SEPARATOR).alias("text")) for f in fields])
    g = _ngrams(long["text"], long["rec"].to_numpy(), index.n)
    j = _lookup(index, g.hashes)
    hi = np.flatnonzero(j >= 0)
    total = np.bincount(g.owner, minlength=nrec)
    overlap = np.bincount(g.owner[hi], minlength=nrec)
    rec_hit, j_hit = g.owner[hi], j[hi]
    grams = _gram_texts(g, hi)
    hits = pl.DataFrame({"rec": rec_hit, "bits": index.set_bits[j_hit], "gram": grams},
                        schema={"rec": pl.Int64, "bits": pl.UInt64, "gram": pl.String})
    names = index.set_names
    per_rec = (hits.group_by("rec").agg(pl.col("bits").bitwise_or(), pl.col("gram").first())
               if hits.height else pl.DataFrame(schema={"rec": pl.Int64, "bits": pl.UInt64, "gram": pl.String}))
    per_rec = per_rec.with_columns(
        pl.concat_list([pl.when((pl.col("bits") & (1 << k)) > 0).then(pl.lit(nm)).otherwise(None)
                        for k, nm in enumerate(names)]).list.drop_nulls().alias("eval_sets")
        if names else pl.lit([], dtype=pl.List(pl.String)).alias("eval_sets"))
    records = (frame.select("record_id").with_columns(
        pl.int_range(0, nrec, dtype=pl.Int64).alias("rec"),
        pl.Series("ngrams", total, dtype=pl.Int64), pl.Series("overlap_ngrams", overlap, dtype=pl.Int64))
        .join(per_rec.select("rec", "eval_sets", pl.col("gram").alias("example_ngram")), on="rec", how="left",
              maintain_order="left")
        .with_columns(pl.col("eval_sets").fill_null(pl.lit([], dtype=pl.List(pl.String))),
                      pl.when(pl.col("ngrams") > 0).then(pl.col("overlap_ngrams") / pl.col("ngrams"))
                      .otherwise(0.0).alias("overlap_ratio"))
        .select(list(RECORD_SCHEMA)))
    rid = frame["record_id"]
    first = (pl.DataFrame({"h": g.hashes[hi], "gram": grams, "record_id": rid.gather(rec_hit) if hi.size else []},
                          schema=HITS_SCHEMA).unique("h", keep="first", maintain_order=True))
    return records, first


def merge_hits(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """``check_records``'s hits of consecutive batches, as one call on all of them gives."""
    if not parts:
        return pl.DataFrame(schema=HITS_SCHEMA)
    return pl.concat(parts).unique("h", keep="first", maintain_order=True)


def eval_side(index: EvalIndex, records: pl.DataFrame, hits: pl.DataFrame, fields: Sequence[str] = TRAIN_FIELDS
              ) -> ContaminationReport:
    """The evaluation side of ``check`` from its training side (``check_records``)."""
    names = index.set_names
    # eval side: items whose n-grams occur in the training data
    matched = np.unique(hits["h"].to_numpy())
    m = np.isin(index.item_hashes, matched, assume_unique=False) if matched.size else np.zeros(index.item_hashes.size, bool)
    item_overlap = np.bincount(index.item_owner[m], minlength=index.items.height)
    ex_pos = {}
    if hits.height:
        # one example n-gram (and a training record) per contaminated item
        ih = pl.DataFrame({"item": index.item_owner[m], "h": index.item_hashes[m]},
                          schema={"item": pl.Int64, "h": pl.UInt64})
        ex = (ih.join(hits, on="h", how="inner").group_by("item")
              .agg(pl.col("gram").first(), pl.col("record_id").first()).sort("item"))
        ex_pos = {i: (gm, r) for i, gm, r in ex.iter_rows()}
    items = index.items.with_columns(pl.Series("overlap_ngrams", item_overlap, dtype=pl.Int64))
    items = items.with_columns(
        pl.when(pl.col("ngrams") > 0).then(pl.col("overlap_ngrams") / pl.col("ngrams")).otherwise(0.0)
        .alias("overlap_ratio"))
    bad = items.filter(pl.col("overlap_ngrams") > 0)
    bad = bad.with_columns(
        pl.Series("example_ngram", [ex_pos.get(i, ("", ""))[0] for i in bad["item"].to_list()], dtype=pl.String),
        pl.Series("example_record", [ex_pos.get(i, ("", ""))[1] for i in bad["item"].to_list()], dtype=pl.String),
    ).select("eval_set", "item_id", "ngrams", "overlap_ngrams", "overlap_ratio", "example_ngram", "example_record")
    # per eval set
    rec_sets = records.filter(pl.col("overlap_ngrams") > 0).select("eval_sets").explode("eval_sets")
    rec_counts = rec_sets.group_by("eval_sets").len().rename({"eval_sets": "eval_set", "len": "training_records"})
    per_set_grams = []
    for k, nm in enumerate(names):
        mask = (index.set_bits & np.uint64(1 << k)) > 0
        found = np.isin(index.hashes[mask], matched) if matched.size else np.zeros(int(mask.sum()), bool)
        per_set_grams.append((nm, int(mask.sum()), int(found.sum())))
    sets = (items.group_by("eval_set").agg(
        pl.len().cast(pl.Int64).alias("items"), (~pl.col("checked")).sum().cast(pl.Int64).alias("items_unchecked"),
        (pl.col("overlap_ngrams") > 0).sum().cast(pl.Int64).alias("items_contaminated"))
        .join(pl.DataFrame(per_set_grams, schema={"eval_set": pl.String, "ngrams": pl.Int64,
                                                  "overlap_ngrams": pl.Int64}, orient="row"), on="eval_set", how="left")
        .join(rec_counts, on="eval_set", how="left")
        .with_columns(pl.col("training_records").fill_null(0).cast(pl.Int64),
                      (pl.col("items_contaminated") / pl.col("items")).alias("contaminated_share"),
                      pl.when(pl.col("ngrams") > 0).then(pl.col("overlap_ngrams") / pl.col("ngrams"))
                      .otherwise(0.0).alias("overlap_ratio"))
        .sort("eval_set")
        .select("eval_set", "items", "items_unchecked", "items_contaminated", "contaminated_share",
                "ngrams", "overlap_ngrams", "overlap_ratio", "training_records"))
    return ContaminationReport(index.n, records, sets, bad, index.summary(),
                               {"n": index.n, "max_item_frequency": index.max_item_frequency,
                                "fields": list(fields)})


def remove_contaminated(frame: pl.DataFrame, report: ContaminationReport, min_overlap: int = 1,
                        min_ratio: float = 0.0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, removed): records with >= ``min_overlap`` overlapping n-grams and an overlap ratio
    >= ``min_ratio`` are removed; ``removed`` carries ``reason`` and the report's columns."""
    if min_overlap < 1:
        raise ValueError(f"min_overlap must be >= 1, got {min_overlap}")
    flag = report.records.with_columns(
        ((pl.col("overlap_ngrams") >= min_overlap) & (pl.col("overlap_ratio") >= min_ratio)).alias("_drop"))
    joined = frame.join(flag, on="record_id", how="left", maintain_order="left")
    if joined.height != frame.height:
        raise ValueError("record_id is not unique in the frame; contamination removal needs unique ids")
    drop = joined["_drop"].fill_null(False)
    kept = frame.filter(~drop)
    removed = joined.filter(drop).with_columns(
        pl.format("contamination: {} {}-gram(s) shared with {} (e.g. {})", pl.col("overlap_ngrams"),
                  pl.lit(report.n), pl.col("eval_sets").list.join(", "), pl.col("example_ngram")).alias("reason")
    ).drop("_drop")
    return kept, removed
