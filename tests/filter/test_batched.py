"""Batched rule steps (issue 17): every batch size gives the results of one call on all records.

"Unbatched" below is one batch holding every record (``batch_rows``/``batch_bytes`` far above
the input), i.e. each step's ``measure`` called once on the whole frame as before batching.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import cqia_nb.filter as F
from cqia_nb.data.load import LoadConfig, bundled_path, load
from cqia_nb.filter.dedup import ExactDedup
from cqia_nb.filter.framework import BATCH_ROWS, StepOutput, batch_slices, measure_batched, run_batch
from cqia_nb.filter.rules.common import TextFilter
from cqia_nb.filter.rules.contact import UrlFilter
from cqia_nb.filter.rules.kernels import codepoints, ngram_keys, word_tokens
from conftest import assert_frames_identical, float_bits_equal

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = ROOT / "recipes" / "filter-default.yaml"
WHOLE = {"batch_rows": 10**12, "batch_bytes": 10**15}


def assert_results_identical(a: F.PipelineResult, b: F.PipelineResult) -> None:
    assert_frames_identical(a.kept, b.kept, "kept")
    assert_frames_identical(a.dropped, b.dropped, "dropped (audit trail)")
    assert_frames_identical(a.steps.drop("seconds"), b.steps.drop("seconds"), "steps table")
    assert list(a.measured) == list(b.measured)
    for step in a.measured:
        assert_frames_identical(a.measured[step], b.measured[step], f"measured[{step}]")


@pytest.fixture(scope="module")
def bundled() -> pl.DataFrame:
    if not bundled_path().is_dir():
        pytest.skip("bundled data not built")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(LoadConfig(source="bundled")).frame


@pytest.fixture(scope="module")
def recipe() -> F.PipelineConfig:
    return F.PipelineConfig.from_yaml(DEFAULT_RECIPE)


@pytest.fixture(scope="module")
def unbatched(bundled, recipe) -> F.PipelineResult:
    return F.run_pipeline(bundled, recipe, **WHOLE)


# ----------------------------------------------------------------------------- batch_slices

def test_batch_slices_cover_in_order_within_limits():
    texts = ["a" * n for n in (5, 1, 30, 2, 2, 2, 100, 3, 0, 7)]
    frame = pl.DataFrame({"output": texts, "other": [1] * len(texts)})
    b = batch_slices(frame, ["output", "no_such_column"], batch_rows=3, batch_bytes=10)
    assert [o for o, _ in b] == list(np.cumsum([0] + [n for _, n in b[:-1]]))
    assert sum(n for _, n in b) == frame.height
    nbytes = [len(t) for t in texts]
    for o, n in b:
        assert 1 <= n <= 3
        assert n == 1 or sum(nbytes[o:o + n]) <= 10  # a record over the cap is a batch of its own
    assert (2, 1) in b and (6, 1) in b  # the 30- and 100-byte records
    assert batch_slices(frame, ["other"], batch_rows=4) == [(0, 4), (4, 4), (8, 2)]  # no text: rows only
    assert batch_slices(frame.clear(), ["output"]) == [(0, 0)]
    assert batch_slices(frame, ["output"]) == [(0, frame.height)]


# ----------------------------------------------------------------------------- the pipeline

@dataclasses.dataclass
class _Spy(TextFilter):
    """Records the heights of the frames it measures (per-record, like every rule filter)."""

    name = "_batch_spy"
    seen: list = dataclasses.field(default_factory=list)

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        self.seen.append(frame.height)
        return frame.select(pl.col("output").str.len_chars().cast(pl.Float64)).to_series()

    def keep(self, values: pl.Series) -> pl.Series:
        return values > 0


def test_per_record_steps_see_bounded_batches(bundled):
    spy = _Spy(field="output")
    measure_batched(spy, bundled, batch_rows=50)
    assert max(spy.seen) <= 50 and sum(spy.seen) == bundled.height and len(spy.seen) > 1
    spy.seen.clear()
    measure_batched(spy, bundled, batch_bytes=2000)
    texts = bundled["output"].fill_null("").str.len_bytes().to_list()
    assert len(spy.seen) > bundled.height // 20 and sum(spy.seen) == bundled.height
    big = sum(1 for t in texts if t > 2000)
    assert sum(1 for h in spy.seen if h == 1) >= big


def test_run_pipeline_batches_rule_steps_not_dedup(bundled, monkeypatch):
    seen: dict[str, list[int]] = {"url": [], "exact_dedup": []}
    for cls in (UrlFilter, ExactDedup):
        def spy(self, frame, _orig=cls.measure):
            seen[self.name].append(frame.height)
            return _orig(self, frame)
        monkeypatch.setattr(cls, "measure", spy)
    cfg = F.PipelineConfig.from_dict({"steps": [{"filter": "url"}, {"filter": "exact_dedup"}]})
    res = F.run_pipeline(bundled, cfg, batch_rows=50)
    assert max(seen["url"]) <= 50 and sum(seen["url"]) == bundled.height
    assert seen["exact_dedup"] == [res.steps["records_in"][1]]  # all records kept by url, at once


def test_whole_frame_steps_are_not_batched(bundled):
    @dataclasses.dataclass
    class WholeSpy(_Spy):
        per_record = False

    spy = WholeSpy(field="output")
    measure_batched(spy, bundled, batch_rows=7)
    assert spy.seen == [bundled.height]


def test_run_batch_over_any_partition_is_one_call():
    """The contract the streaming and Ray engines rely on: run_batch over consecutive
    partitions, outputs added up, equals run_batch on everything."""
    frame = pl.DataFrame({
        "record_id": [f"r{i}" for i in range(12)],
        "instruction": ["问题"] * 12,
        "input": [""] * 12,
        "output": ["好的回答。", "", "見 http://a.cn", "這個問題應該這樣回答", "哈哈哈哈哈哈哈哈哈哈哈哈",
                   "正常", "加微信 abc_123456", "x" * 30, "好", "", "好的", "ok"],
    })
    cfg = F.PipelineConfig.from_dict({"steps": [{"filter": "traditional", "convert": True},
                                                {"filter": "empty_output"}, {"filter": "url"},
                                                {"filter": "qq_wechat"}, {"filter": "consecutive_repeats"}]})
    built = cfg.build()
    steps = [(i, name, flt) for i, (name, flt) in enumerate(built, start=1)]
    whole = [StepOutput() for _ in steps]
    kept_whole = run_batch(frame, steps, whole)
    for cuts in ([0, 1, 5, 12], [0, 6, 12], [0, 11, 12], list(range(13))):
        parts = [StepOutput() for _ in steps]
        kept = pl.concat([run_batch(frame.slice(a, b - a), steps, parts) for a, b in zip(cuts[:-1], cuts[1:])])
        assert kept.equals(kept_whole)
        for p, w in zip(parts, whole):
            assert (p.n_in, p.kept, p.changed) == (w.n_in, w.kept, w.changed)
            assert pl.concat(p.measured).equals(pl.concat(w.measured))
            assert pl.concat(p.gone).equals(pl.concat(w.gone)) if w.gone else not p.gone


@pytest.mark.parametrize("batch_rows", [7, None])
def test_batch_sizes_identical_on_bundled(bundled, recipe, unbatched, batch_rows):
    res = F.run_pipeline(bundled, recipe, batch_rows=batch_rows)
    assert res.reconciles()
    assert_results_identical(res, unbatched)


@pytest.mark.slow
def test_batch_size_one_identical_on_bundled(bundled, recipe, unbatched):
    assert_results_identical(F.run_pipeline(bundled, recipe, batch_rows=1), unbatched)


def test_small_byte_batches_identical_on_bundled(bundled, recipe, unbatched):
    assert_results_identical(F.run_pipeline(bundled, recipe, batch_bytes=3000), unbatched)


def test_apply_and_measure_all_batched_identical(bundled, recipe):
    for step, flt in recipe.build():
        a, b = flt.apply(bundled, batch_rows=7), flt.apply(bundled, **WHOLE)
        if isinstance(a, F.Measured):
            assert float_bits_equal(a.value, b.value), step
            assert a.keep.equals(b.keep), step
            assert (a.detail is None) == (b.detail is None), step
            if a.detail is not None:
                assert a.detail.equals(b.detail, null_equal=True), step
        else:
            assert a.frame.equals(b.frame) and a.changed.equals(b.changed), step
            assert float_bits_equal(a.value, b.value) and a.detail.equals(b.detail, null_equal=True), step
    ma, mb = F.measure_all(bundled, recipe, batch_rows=7), F.measure_all(bundled, recipe, **WHOLE)
    assert list(ma) == list(mb)
    for step in ma:
        assert_frames_identical(ma[step], mb[step], f"measure_all[{step}]")


def test_all_records_dropped_gives_empty_tables():
    frame = pl.DataFrame({"record_id": ["a", "b", "c"], "instruction": ["q"] * 3, "input": [""] * 3,
                          "output": ["", " ", ""]})
    cfg = F.PipelineConfig.from_dict({"steps": [{"filter": "empty_output"}, {"filter": "url"},
                                                {"filter": "traditional", "convert": True}]})
    for rows in (1, 2, None):
        res = F.run_pipeline(frame, cfg, batch_rows=rows)
        assert res.kept.height == 0 and res.dropped.height == 3 and res.reconciles()
        assert res.measured["url"].height == 0
        assert res.measured["url"].schema == {"record_id": pl.String, "value": pl.Float64, "keep": pl.Boolean}
        assert res.measured["traditional"].schema["changed"] == pl.Boolean


# ----------------------------------------------------------------------------- kernels

def test_ngram_keys_of_a_record_do_not_depend_on_its_batch():
    texts = pl.Series(["重复重复重复的文字", "another text, another text", "好" * 40, "", "a"])
    cps, lengths = codepoints(texts)
    keys, bits = ngram_keys(cps.astype(np.uint64), lengths, 3)
    shift = np.uint64(64 - bits)
    for i, t in enumerate(texts):
        c1, l1 = codepoints(pl.Series([t]))
        k1, b1 = ngram_keys(c1.astype(np.uint64), l1, 3)
        assert b1 == bits  # MIN_DOC_BITS: same hash bits for 1 or 5 documents
        mine = keys[(keys >> shift) == np.uint64(i)] & ((np.uint64(1) << shift) - np.uint64(1))
        assert np.array_equal(np.sort(mine), np.sort(k1))


def test_codepoints_and_word_tokens_with_astral_and_empty_texts():
    texts = pl.Series(["", None, "a😀b", "𠀀字Word word", ""], dtype=pl.String)
    cps, lengths = codepoints(texts)
    assert lengths.tolist() == [0, 0, 3, 11, 0]
    assert cps.tolist() == [ord(c) for c in "a😀b𠀀字Word word"]
    ids, counts = word_tokens(texts)
    assert counts.tolist() == [0, 0, 2, 4, 0]  # 😀 separates a from b
    # the two "word"s (case folded) get one id; 𠀀 and 字 are tokens of their own
    assert ids[-1] == ids[-2] and ids[2] == ord("𠀀") and ids[3] == ord("字")
    assert codepoints(pl.Series([], dtype=pl.String))[0].size == 0


# ----------------------------------------------------------------------------- real data

@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("batch_rows", [None, 7])
def test_batch_sizes_identical_on_real_data(real_data, recipe, batch_rows):
    """Measured values, kept set and audit trail on the real copy: default batches (and 7-row
    batches) against one batch holding all 17,971 records."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(LoadConfig(source=str(real_data))).frame
    assert frame.height > BATCH_ROWS  # several batches
    assert_results_identical(F.run_pipeline(frame, recipe, batch_rows=batch_rows),
                             F.run_pipeline(frame, recipe, **WHOLE))
