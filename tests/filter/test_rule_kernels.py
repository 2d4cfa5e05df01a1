"""The fast rule kernels (issue 15) against straightforward references: n-gram repetition
(candidate rounds vs sorting every key vs a Counter per text), one-table class counts (vs one
regex class at a time and vs polars' regex count), regex_clean's prefilters (vs no prefilter),
OpenCC on one joined batch (vs one call per text), the codepoints cache, window_hash (vs the
polynomial written out) and threaded batches (vs one thread). Edge cases first, then the real
copy (slow). Each equivalence has a negative control: the check fails on a broken variant."""

from __future__ import annotations

import importlib.util
import random
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import cqia_nb.filter.framework as F
from cqia_nb.core.hashing import WINDOW_BASE, window_hash
from cqia_nb.filter.rules import clean, kernels as K, traditional
from cqia_nb.filter.rules.chars import SPECIAL_CHAR
from conftest import assert_frames_identical, float_bits_equal
from conftest import ref_char_rep

ROOT = Path(__file__).resolve().parents[2]

EDGE_TEXTS = [
    "", "a", "短", "😀", "𠀀", "abcdefghi", "abcdefghij", "abcdefghijk",   # shorter than, equal to, longer than 10
    "啊" * 9, "啊" * 10, "啊" * 11, "啊" * 200,                         # one character repeated
    "😀" * 25, "𠀀𠀁" * 20, "👨‍👩‍👧‍👦" * 6, "🇨🇳🇨🇳🇨🇳 好好学习",              # astral, ZWJ sequences, flags
    "好好学习天天向上" * 20, "ab" * 50, "Hello World hello WORLD " * 5,
    "x\u3000y\u00a0z\t\n\r 　", "\ufffd\ufffd ☃★☆ ▲ \x00\x01 \ue000 \U000f0000",
    "1234567890" * 3 + "\n" + "1234567890" * 3,                        # the same 10-gram on both sides of a newline
    "重复的文字在结尾重复的文字在结尾", "重复的文字在结尾",                   # a text, then its half: boundary check
    "Ｆｕｌｌ　ｗｉｄｔｈ ＡＢＣ ａｂｃ", "Ǆǅǆ ſ K ß ẞ İ ı",                  # case folding oddities
]


def random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    pools = ["的一是在不了有和人这中大为上个", "abcXYZ 012", "😀😁🎉𠀀𠀁", "，。！？ \n", "ＡＢ１２"]
    out = []
    for _ in range(n):
        pool = "".join(rng.sample(pools, rng.randint(1, len(pools))))
        t = "".join(rng.choice(pool) for _ in range(rng.randint(0, 400)))
        if rng.random() < 0.4 and t:
            a = rng.randint(0, len(t))
            t = t + t[a:a + rng.randint(0, 60)] * rng.randint(1, 4)  # repeated spans
        out.append(t)
    return out


# ----------------------------------------------------------------------------- references

def ref_word_rep(ids: list[int], n: int = 10) -> float:
    """Data-Juicer's word_repetition_filter over a text's token ids, in plain Python."""
    grams = Counter(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))
    total = sum(grams.values())
    return sum(f for f in grams.values() if f > 1) / total if total else 0.0


def ref_groups(tokens: list[list[int]], n: int) -> list[tuple[int, int]]:
    """(doc, frequency) of every n-gram repeated within its document, exact, sorted."""
    out = []
    for d, toks in enumerate(tokens):
        c = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
        out += [(d, f) for f in c.values() if f > 1]
    return sorted(out)


def measure(name: str, texts: list[str | None], **params) -> pl.Series:
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    K._LAST.value = None
    return F.make_filter(name, field="text", **params).measure(frame)


# ----------------------------------------------------------------------------- n-gram repetition

@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_ngram_repeats_equals_sorting_every_key_and_a_counter(n):
    texts = EDGE_TEXTS + random_texts(n, 60)
    cps, lengths = K.codepoints(pl.Series(texts))
    got = K.ngram_repeats(cps, lengths, n)
    want = K.ngram_repeats_sorted(cps, lengths, n)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    groups = sorted(zip(got[0].tolist(), got[1].tolist()))
    assert groups == ref_groups([[ord(c) for c in t] for t in texts], n)
    total = [max(len(t) - n + 1, 0) for t in texts]
    distinct = [len({t[i:i + n] for i in range(len(t) - n + 1)}) for t in texts]
    assert got[2].tolist() == total and got[3].tolist() == distinct


def test_char_and_word_repetition_values_equal_the_plain_definitions():
    texts = EDGE_TEXTS + random_texts(11, 80)
    char = measure("char_repetition", texts, rep_len=10).to_list()
    word = measure("ngram_repetition", texts, rep_len=10).to_list()
    for t, c, w in zip(texts, char, word):
        assert c == ref_char_rep(t), t[:30]  # the same integer division: equal, not approximately
        ids, _ = K.word_tokens(pl.Series([t]))
        assert w == ref_word_rep(ids.tolist()), t[:30]


def test_maybe_repeated_marks_every_repeat_with_any_piece_size():
    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 40, 300)
    starts = np.cumsum(lengths) - lengths
    doc = np.repeat(np.arange(len(lengths)), lengths)
    keys = (doc.astype(np.uint64) << np.uint64(40)) | rng.integers(0, 25, len(doc)).astype(np.uint64)
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    repeated = counts[inv] > 1
    assert repeated.any() and not repeated.all()
    for chunk in (1, 2, 7, 64, 1 << 15):
        for mult in K._BUCKET_MULTS:
            got = K._maybe_repeated(keys, starts, mult, chunk=chunk, load_bits=0)  # small tables: collisions
            assert not (repeated & ~got).any(), chunk
    # negative control: cuts inside documents split equal keys, and the check sees it
    bad = K._maybe_repeated(keys, np.arange(1, len(keys)), K._BUCKET_MULTS[0], chunk=1)
    assert (repeated & ~bad).any()


def test_ngram_repeats_across_many_pieces_and_one_long_text():
    # a batch of many short texts spans several pieces of _maybe_repeated; one long text is a piece alone
    texts = random_texts(3, 400) + ["好好学习天天向上" * 5000 + "的" * 50000]
    cps, lengths = K.codepoints(pl.Series(texts))
    for n in (2, 10):
        for g, w in zip(K.ngram_repeats(cps, lengths, n), K.ngram_repeats_sorted(cps, lengths, n)):
            assert np.array_equal(g, w)


def test_window_hash_is_the_polynomial():
    rng = np.random.default_rng(2)
    u = rng.integers(0, 2**63, 70).astype(np.uint64)
    for n in (1, 2, 3, 7, 8, 9, 10, 16, 17, 31, 70, 71):
        want = [sum(int(u[i + k]) * pow(WINDOW_BASE, n - 1 - k, 1 << 64) for k in range(n)) % (1 << 64)
                for i in range(len(u) - n + 1)]
        assert window_hash(u, n).tolist() == want, n


# ----------------------------------------------------------------------------- character classes

def test_class_counts_equal_one_class_at_a_time_and_regex_counts():
    texts = EDGE_TEXTS + random_texts(4, 50)
    s = pl.Series(texts)
    cps, lengths = K.codepoints(s)
    for pats in ((SPECIAL_CHAR, r"\s"), (r"\p{L}", r"\p{Han}"), (r"\p{So}",)):
        got = K.class_counts(cps, lengths, pats)
        for p, g in zip(pats, got):
            assert np.array_equal(g, K.per_text_sum(K.class_mask(cps, p), lengths)), p
            assert g.tolist() == s.str.count_matches(p).to_list(), p
    # negative control: a different class gives different counts
    assert K.class_counts(cps, lengths, (r"\p{Han}",))[0].tolist() != s.str.count_matches(r"\p{L}").to_list()


def test_special_chars_value_is_the_regex_definition():
    texts = EDGE_TEXTS + random_texts(6, 50) + [None]
    got = measure("special_chars", texts)
    s = pl.Series(texts, dtype=pl.String).fill_null("")
    special = s.str.count_matches(SPECIAL_CHAR).to_numpy()
    visible = (s.str.len_chars() - s.str.count_matches(r"\s")).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        want = pl.Series("value", np.where(visible > 0, special / np.maximum(visible, 1), np.nan)).fill_nan(None)
    assert float_bits_equal(got, want)


def test_codepoints_cache_returns_equal_texts_only_and_read_only_arrays():
    a = pl.Series(["重复的文字", "😀x"])
    cps, lengths = K.codepoints(a)
    assert not cps.flags.writeable and not lengths.flags.writeable
    with pytest.raises(ValueError):
        cps[0] = 1
    again = K.codepoints(pl.Series(["重复的文字", "😀x"]))
    assert again[0] is cps  # equal texts: the kept result
    other = K.codepoints(pl.Series(["重复的文字", "😀y"]))  # same lengths, one character differs
    assert other[0] is not cps and other[0].tolist() == [ord(c) for c in "重复的文字😀y"]
    assert K.codepoints(pl.Series([None, ""], dtype=pl.String))[1].tolist() == [0, 0]


# ----------------------------------------------------------------------------- regex_clean

ADVERSARIAL = [
    "", "见 http://a.com/x 好", "HTTPS://A.COM/Y", "ftp:/x", "mailto:a@b.cn", "a:b", "ab:1", "ab:%",
    "x.co/", "X.CO/path", "www.a.cn。", "WWW1.x", "www1234.x", "\u212aa:/x",  # Kelvin sign folds to k
    "\u017fx:/y", "ſtp://x", "中文http://例子.中国/路径", "（https://x.y/z）", "(http://x.y/(a)b)",
    "a_b-c:/d", "é:/x", "1a:/x", "a:", "www.", "a.bc", "a.bc/", "a.b/", "user@host.com", "@", "a@b.c",
    "a@b.", "x@y.cn\ny@z.cn", None,
]


def test_link_prefilter_is_a_necessary_condition():
    assert clean.DJ_LINK == "(?i)\\b(" + clean.DJ_LINK_HEAD + clean.DJ_LINK[len("(?i)\\b(") + len(clean.DJ_LINK_HEAD):]
    rng = random.Random(13)  # link-ish fuzz: the characters each part of the pattern looks at
    parts = ["http", "www", "WWW2", "://", ":/", ":", ".", "/", "a", "Ab", "x1", "co", "%", "(", ")", " ",
             "中", "\u212a", "\u017f", "é", "-", "_", "w", "9", "`", "«", "\t", "@"]
    fuzz = ["".join(rng.choice(parts) for _ in range(rng.randint(0, 12))) for _ in range(5000)]
    texts = pl.Series(ADVERSARIAL + random_texts(8, 50) + fuzz, dtype=pl.String)
    matched = texts.str.contains(clean.DJ_LINK).fill_null(False)
    passes = texts.str.contains(clean.DJ_LINK_PREFILTER).fill_null(False)
    assert matched.sum() >= 300 and not (matched & ~passes).any()
    email = texts.str.contains(clean.DJ_EMAIL).fill_null(False)
    assert email.sum() >= 3 and not (email & ~texts.str.contains("@", literal=True).fill_null(False)).any()


@pytest.mark.parametrize("preset", ["dj_links", "dj_email"])
def test_regex_clean_with_prefilter_equals_replace_all(preset):
    pattern, prefilter = clean.RegexCleanTransform.PRESETS[preset]
    texts = pl.Series("text", ADVERSARIAL + random_texts(9, 50), dtype=pl.String)
    after, changed = clean.replace_all(texts, pattern, "", prefilter)
    want = texts.str.replace_all(pattern, "")
    assert after.equals(want, null_equal=True)
    assert changed.to_list() == (texts != want).fill_null(False).to_list() and changed.any()
    frame = pl.DataFrame({"record_id": [str(i) for i in range(texts.len())], "text": texts})
    out = F.make_filter("regex_clean", field="text", pattern=preset).transform(frame)
    assert out.frame["text"].equals(want, null_equal=True) and out.changed.to_list() == changed.to_list()
    # negative control: a prefilter that is not a necessary condition leaves matches in place
    wrong, _ = clean.replace_all(texts, pattern, "", "http" if preset == "dj_links" else "@y")
    assert not wrong.equals(want, null_equal=True)


def test_regex_clean_checks_its_parameters():
    with pytest.raises(ValueError, match="preset"):
        F.make_filter("regex_clean", pattern="dj_links", prefilter="x")
    with pytest.raises(ValueError, match="empty string"):
        F.make_filter("regex_clean", pattern="a*")


def test_bench_uses_data_juicers_patterns_verbatim():
    spec = importlib.util.spec_from_file_location("bench_rules_fair", ROOT / "benchmarks" / "bench_rules_fair.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.DJ_LINK == clean.DJ_LINK and bench.DJ_EMAIL == clean.DJ_EMAIL


# ----------------------------------------------------------------------------- t2s

def test_convert_texts_equals_one_call_per_text():
    conv = traditional._converter("t2s")
    texts = ["們這個東西", None, "", "乾燥的頭髮", "𠀀體😀", "a\ue000b", "\ue001\U000f0000", "們\n們"] + EDGE_TEXTS
    got = traditional.convert_texts(pl.Series("t", texts, dtype=pl.String))
    assert got.name == "t" and got.to_list() == [None if t is None else conv.convert(t) for t in texts]
    # every separator present: the one-by-one path gives the same
    every = texts + ["".join(traditional._SEPARATORS)]
    assert traditional.convert_texts(pl.Series(every)).to_list() == [None if t is None else conv.convert(t) for t in every]
    assert traditional.convert_texts(pl.Series([], dtype=pl.String)).to_list() == []
    # OpenCC's C API (through ctypes) and its Python method: the same bytes; a NUL byte takes the method
    native = traditional._native("t2s")
    assert native is not None  # the opencc wheel the project pins exports it
    for t in [x for x in texts if x and "\x00" not in x] + ["們" * 1000, "𠀀" * 3 + "臺灣的頭髮乾燥"]:
        assert native(t.encode()).decode() == conv.convert(t)
    cjk = "\n".join(chr(c) for c in (*range(0x3400, 0x4DC0), *range(0x4E00, 0xA000), *range(0xF900, 0xFB00),
                                     *range(0x20000, 0x2A6E0)))  # every character OpenCC's t2s could change
    assert native(cjk.encode()).decode() == conv.convert(cjk)
    nul = ["們\x00這", "x\x00", "\x00"]
    assert traditional.convert_texts(pl.Series(nul)).to_list() == [conv.convert(t) for t in nul]


# ----------------------------------------------------------------------------- threads

def test_threaded_batches_give_the_results_of_one_thread():
    texts = EDGE_TEXTS + random_texts(12, 300) + ["啊" * 300, "见 http://a.com/x 好" * 3]
    frame = pl.DataFrame({"record_id": [f"r{i}" for i in range(len(texts))], "text": texts,
                          "output": texts, "instruction": ["问"] * len(texts), "input": [""] * len(texts)})
    cfg = F.PipelineConfig.from_dict({"steps": [
        {"filter": "traditional", "convert": True, "field": "text"},
        {"filter": "special_chars", "field": "text", "max_ratio": 0.3},
        {"transform": "regex_clean", "field": "text", "pattern": "dj_links"},
        {"filter": "char_repetition", "field": "text", "max_ratio": 0.2},
        {"filter": "ngram_repetition", "field": "text", "max_ratio": 0.3},
        {"filter": "consecutive_repeats"},
        {"filter": "exact_dedup", "fields": "text"},
        {"filter": "length", "field": "text", "min_chars": 5}]})
    one = F.run_pipeline(frame, cfg, batch_rows=16)
    assert one.dropped.height > 5
    for threads in (2, 3):
        many = F.run_pipeline(frame, cfg, batch_rows=16, threads=threads)
        assert_frames_identical(one.kept, many.kept, "kept")
        assert_frames_identical(one.dropped, many.dropped, "dropped")
        assert_frames_identical(one.steps.drop("seconds"), many.steps.drop("seconds"), "steps")
        for step in one.measured:
            assert_frames_identical(one.measured[step], many.measured[step], step)


# ----------------------------------------------------------------------------- the real copy

@pytest.mark.slow
@pytest.mark.realdata
def test_fast_kernels_identical_on_real_data(real_data):
    """Every value of the changed kernels on the 17,971 real records (instruction+input+output, and
    the output alone): candidate rounds vs sorting every key, one-table class counts vs one class at
    a time, prefiltered regex_clean vs replace_all on every text, joined t2s vs one call per text,
    and the char-repetition value vs the plain Python definition."""
    from cqia_nb.data.load import LoadConfig, load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(LoadConfig(source=str(real_data))).frame
    joined = frame.select(pl.concat_str([pl.col(c).fill_null("") for c in ("instruction", "input", "output")],
                                        separator="\n").alias("t"))["t"]
    for texts in (joined, frame["output"].fill_null("")):
        for o in range(0, texts.len(), 4096):  # the pipeline's batches
            part = texts.slice(o, 4096)
            cps, lengths = K.codepoints(part)
            for n in (10, 2):
                for g, w in zip(K.ngram_repeats(cps, lengths, n), K.ngram_repeats_sorted(cps, lengths, n)):
                    assert np.array_equal(g, w)
            ids, counts = K.word_tokens(part)
            for g, w in zip(K.ngram_repeats(ids, counts, 10), K.ngram_repeats_sorted(ids, counts, 10)):
                assert np.array_equal(g, w)
            for pats in ((SPECIAL_CHAR, r"\s"), (r"\p{L}", r"\p{Han}")):
                for p, g in zip(pats, K.class_counts(cps, lengths, pats)):
                    assert np.array_equal(g, K.per_text_sum(K.class_mask(cps, p), lengths)), p
        char = measure("char_repetition", texts.to_list(), rep_len=10).to_list()
        assert char == [ref_char_rep(t) for t in texts.to_list()]
        for preset in ("dj_links", "dj_email"):
            pattern, prefilter = clean.RegexCleanTransform.PRESETS[preset]
            after, changed = clean.replace_all(texts, pattern, "", prefilter)
            want = texts.str.replace_all(pattern, "")
            assert after.equals(want) and changed.sum() == (texts != want).sum() > 0
    conv = traditional._converter("t2s")
    assert traditional.convert_texts(joined).to_list() == [conv.convert(t) for t in joined.to_list()]
