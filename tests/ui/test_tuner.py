"""Tests of the threshold tuner (cqia_nb.ui.tuner): pure functions, live counts, recipe params."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import ipywidgets as w
import polars as pl
import pytest

from cqia_nb.filter.framework import Filter, PipelineConfig, measure_all, register, run_pipeline
from cqia_nb.ui.tuner import ThresholdTuner, drop_label, histogram, infer_threshold, normalize_direction, would_drop

EVIL = "<img src=x onerror=alert(1)>"


def test_would_drop():
    v = pl.Series([0.1, 0.5, None, 0.9, float("nan")])
    assert would_drop(v, 0.5, "above").to_list() == [False, False, False, True, False]
    assert would_drop(v, 0.5, "below").to_list() == [True, False, False, False, False]
    assert would_drop([1, 2, 3], 2, "drop above").to_list() == [False, False, True]
    assert would_drop([], 0, "below").to_list() == []
    assert normalize_direction(">") == "above" and normalize_direction("Drop Below") == "below"
    with pytest.raises(ValueError, match="direction"):
        would_drop(v, 0.5, "sideways")


def test_drop_label():
    assert drop_label(3, 8) == "3 of 8 records would be dropped (37.5 %)"
    assert drop_label(1234, 10000) == "1,234 of 10,000 records would be dropped (12.3 %)"
    assert drop_label(0, 0) == "0 of 0 records would be dropped"


def test_infer_threshold():
    m = pl.DataFrame({"value": [0.0, 0.0, 2.0, 3.0], "keep": [True, True, False, False]})
    assert infer_threshold(m) == ("above", 0.0)
    m = pl.DataFrame({"value": [1.0, 5.0, 6.0], "keep": [False, True, True]})
    assert infer_threshold(m) == ("below", 5.0)
    m = pl.DataFrame({"value": [1.0, 5.0, 6.0], "keep": [True, True, True]})
    assert infer_threshold(m) == ("above", 6.0)
    m = pl.DataFrame({"value": [None, 0.9, 1.0], "keep": [True, False, False]})  # dedup-like
    d, t = infer_threshold(m)
    assert d == "above" and 0.85 < t < 0.9
    assert infer_threshold(pl.DataFrame({"value": [2.0, 7.0]})) == ("above", 7.0)


def test_histogram():
    edges, counts = histogram([0, 1, 1, 3, None])
    assert edges.tolist() == [-0.5, 0.5, 1.5, 2.5, 3.5] and counts.tolist() == [1, 2, 0, 1]
    edges, counts = histogram([0.0, 0.25, 1.0], bins=4)
    assert counts.tolist() == [1, 1, 0, 1]
    assert histogram([None])[1].tolist() == [0]


def _frame() -> pl.DataFrame:
    return pl.DataFrame({"record_id": [f"r{i}" for i in range(10)],
                         "instruction": [f"问题 {i}" for i in range(10)],
                         "output": [f"回答 {i}" if i != 7 else "<script>alert(1)</script>" for i in range(10)]})


def _measured() -> dict[str, pl.DataFrame]:
    return {
        "a": pl.DataFrame({"record_id": [f"r{i}" for i in range(10)], "value": [float(i) for i in range(10)]}),
        "b": pl.DataFrame({"record_id": [f"r{i}" for i in range(6)], "value": [0.5, 0.1, 0.9, None, 0.3, 0.95]}),
    }


def test_slider_changes_update_counts_and_union():
    t = ThresholdTuner(_frame(), _measured(), {"a": ("above", 6.5), "b": ("below", 0.2)})
    c = t.controls
    # a drops r7 r8 r9; b drops r1; union {r1, r7, r8, r9}
    assert c["a"]["label"].value == "3 of 10 records would be dropped (30.0 %)"
    assert c["b"]["label"].value == "1 of 6 records would be dropped (16.7 %)"
    assert t.overall_text == "overall (union of 2 enabled filters): 4 of 10 records would be dropped (40.0 %)"
    c["a"]["slider"].value = 4.5            # a: r5..r9
    assert c["a"]["label"].value == "5 of 10 records would be dropped (50.0 %)"
    assert t._overall.value.endswith("6 of 10 records would be dropped (60.0 %)")   # r1, r5..r9
    c["b"]["direction"].value = "above"      # b above 0.2: r0 r2 r4 r5 (r5 also dropped by a)
    assert c["b"]["label"].value == "4 of 6 records would be dropped (66.7 %)"
    assert t.would_drop_ids().to_list() == ["r0", "r2", "r4", "r5", "r6", "r7", "r8", "r9"]
    assert t.label_text() == "8 of 10 records would be dropped (80.0 %)"   # r5 counted once
    c["a"]["enabled"].value = False
    assert t.label_text() == "4 of 10 records would be dropped (40.0 %)"
    assert t.overall_text.startswith("overall (union of 1 enabled filter):")
    t.set_threshold("b", 0.92)               # from code: the slider follows
    assert c["b"]["slider"].value == 0.92 and t.n_would_drop("b") == 1
    counts = t.counts()
    assert counts.rows()[-1] == ("(union)", None, None, None, 10, 1, 0.1)
    assert counts.filter(pl.col("step") == "a")["enabled"].item() is False


def test_examples_browser_shows_the_would_be_dropped_records():
    t = ThresholdTuner(_frame(), _measured(), {"a": ("above", 6.5), "b": ("below", 0.2)})
    assert t.browser.frame["record_id"].to_list() == ["r1", "r7", "r8", "r9"]
    assert t.browser.frame["would_drop_by"].to_list() == ["b", "a", "a", "a"]
    t.controls["a"]["slider"].value = 8.5
    assert t.browser.frame["record_id"].to_list() == ["r1", "r9"]
    b = t.show_examples("a")
    assert b.frame["record_id"].to_list() == ["r9"] and b.frame["value"].to_list() == [9.0]
    t.set_threshold("a", 6.5)
    assert "&lt;script&gt;" in t.browser.page_html and "<script>" not in t.browser.page_html


def _html_values(widget) -> list[str]:
    out = []
    if isinstance(widget, (w.HTML, w.HTMLMath)):
        out.append(widget.value)
    for child in getattr(widget, "children", ()):
        out.extend(_html_values(child))
    return out


def test_step_names_are_escaped_everywhere():
    m = {EVIL: _measured()["a"]}
    t = ThresholdTuner(_frame(), m, {EVIL: ("above", 6.5)})
    html = "".join(_html_values(t.widget))
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    fig = t.controls[EVIL]["figure"]
    assert "<img" not in fig.layout.title.text
    t.show_examples(EVIL)
    assert "<img" not in "".join(_html_values(t.widget))


def test_histogram_line_follows_the_slider():
    t = ThresholdTuner(_frame(), _measured(), {"a": ("above", 6.5)})
    c = t.controls["a"]
    c["slider"].value = 2.5
    fig = c["figure"]
    assert fig.layout.shapes[0].x0 == fig.layout.shapes[0].x1 == 2.5
    red = [col for col in fig.data[0].marker.color if col == "#d62728"]
    assert len(red) == 7  # one bin per integer value 3..9
    if isinstance(c["view"], w.Output):  # no anywidget: the static figure is re-rendered
        data = c["view"].outputs[0]["data"]["application/vnd.plotly.v1+json"]
        assert data["layout"]["shapes"][0]["x0"] == 2.5


def test_unknown_steps_and_bad_input():
    with pytest.raises(ValueError, match="unknown step"):
        ThresholdTuner(_frame(), _measured(), {"c": ("above", 1.0)})
    with pytest.raises(ValueError, match="record_id and value"):
        ThresholdTuner(_frame(), {"a": pl.DataFrame({"x": [1]})})
    with pytest.raises(TypeError):
        ThresholdTuner(_frame(), [1, 2])
    t = ThresholdTuner(None, _measured())  # no frame: counts over the measured ids, no browser
    assert t.n_total() == 10 and t.browser is None
    empty = ThresholdTuner(_frame(), {"z": pl.DataFrame({"record_id": ["r0"], "value": [None]},
                                                        schema={"record_id": pl.String, "value": pl.Float64})})
    assert empty.label_text("z") == "0 of 1 records would be dropped (0.0 %)"
    assert empty.controls["z"]["slider"].disabled


# ----------------------------------------------------------------------------- recipe params

@register
@dataclass
class _LenFilter(Filter):
    """Test-only: characters of the output; keeps value <= max_len."""

    name: ClassVar[str] = "_test_tuner_len"
    threshold_fields: ClassVar[tuple[str, ...]] = ("max_len",)
    max_len: int = 4
    field: str = "output"

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return frame[self.field].str.len_chars()

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_len


@register
@dataclass
class _FlagFilter(Filter):
    """Test-only: 1.0 when the output has an x; its threshold field is not a bound on the value."""

    name: ClassVar[str] = "_test_tuner_flag"
    threshold_fields: ClassVar[tuple[str, ...]] = ("min_chars",)
    min_chars: int = 3

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return frame["output"].str.contains("x", literal=True).cast(pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        return values < 0.5


def _recipe_frame() -> pl.DataFrame:
    outs = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "x", "yx", "zzzzzzzzz"]
    return pl.DataFrame({"record_id": [f"r{i}" for i in range(len(outs))], "output": outs})


def test_to_recipe_params():
    cfg = PipelineConfig.from_dict({"steps": [
        {"filter": "_test_tuner_len", "max_len": 5, "field": "output"},
        {"filter": "_test_tuner_flag", "label": "flag"}]})
    frame = _recipe_frame()
    res = run_pipeline(frame, cfg)
    t = ThresholdTuner(frame, res)
    assert t.threshold("_test_tuner_len") == ("above", 5.0)  # the recipe's max_len
    assert t.threshold("flag") == ("above", 0.0)              # inferred from the run
    assert t.to_recipe_params() == {
        "_test_tuner_len": {"filter": "_test_tuner_len", "max_len": 5, "field": "output"},
        "flag": {"filter": "_test_tuner_flag", "label": "flag", "threshold": 0.0, "direction": "above"},
    }
    t.controls["_test_tuner_len"]["slider"].value = 2.7       # drops len 3+ -> max_len 2
    assert t.label_text("_test_tuner_len") == "5 of 9 records would be dropped (55.6 %)"  # 3 4 5 6 9 chars
    assert t.to_recipe_params()["_test_tuner_len"]["max_len"] == 2
    assert isinstance(t.to_recipe_params()["_test_tuner_len"]["max_len"], int)
    t.set_threshold("_test_tuner_len", direction="below")     # no min_ parameter: generic
    assert t.to_recipe_params()["_test_tuner_len"] == {"filter": "_test_tuner_len", "threshold": 2.7,
                                                       "direction": "below"}
    t.set_enabled("flag", False)
    assert list(t.to_recipe_params()) == ["_test_tuner_len"]
    # the pasted step reproduces what the tuner counted
    t.set_threshold("_test_tuner_len", 3.2, "above")
    step = t.to_recipe_params()["_test_tuner_len"]
    again = run_pipeline(frame, PipelineConfig.from_dict({"steps": [step]}))
    assert again.dropped["record_id"].sort().to_list() == t.would_drop_ids("_test_tuner_len").sort().to_list()


def test_measure_all_measures_every_record():
    cfg = PipelineConfig.from_dict({"steps": [{"filter": "_test_tuner_len", "max_len": 5},
                                              {"filter": "_test_tuner_flag"}]})
    frame = _recipe_frame()
    res = run_pipeline(frame, cfg)
    assert res.measured["_test_tuner_flag"].height == 7        # the first step dropped ffffff and zzzzzzzzz
    m = measure_all(frame, cfg)
    assert {k: v.height for k, v in m.items()} == {"_test_tuner_len": 9, "_test_tuner_flag": 9}
    t = ThresholdTuner(frame, m, config=cfg)
    assert t.label_text("_test_tuner_flag") == "2 of 9 records would be dropped (22.2 %)"
    assert t.label_text() == "4 of 9 records would be dropped (44.4 %)"  # r5 r8 (length), r6 r7 (x)
    assert t.to_recipe_params()["_test_tuner_len"]["max_len"] == 5
    assert not math.isnan(t.threshold("_test_tuner_flag")[1])
