"""Tests of the dataset browser (cqia_nb.ui.browser): pure core, HTML escaping, widget, browse()."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import ipywidgets as w
import polars as pl
import pytest

from cqia_nb.ui.browser import BrowserQuery, DatasetBrowser, browse, filter_frame, page_count, page_of
from cqia_nb.ui.common import render_page_html, render_record_html

SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String, "config": pl.String, "source_file": pl.String, "line": pl.Int64,
    "instruction": pl.String, "input": pl.String, "output": pl.String,
    "task_type_major": pl.List(pl.String), "task_type_minor": pl.List(pl.String),
    "domain": pl.List(pl.String), "metadata": pl.String, "answer_from": pl.String,
    "human_verified": pl.Boolean, "copyright": pl.String, "extra": pl.String,
}
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
EVIL_COL = '<b onmouseover="alert(2)">col</b>'
N_FILLER = 20  # plus 3 special records: 23 rows, pages of 10 -> 10, 10, 3


def rec(i: int, **kw: Any) -> dict[str, Any]:
    config = kw.pop("config", "wiki")
    src = f"{config}/f.jsonl"
    base = {
        "record_id": f"{src}:{i + 1}", "config": config, "source_file": src, "line": i + 1,
        "instruction": f"问题 {i}", "input": "", "output": f"回答 {i} " + "长" * (10 * i),
        "task_type_major": ["问答"], "task_type_minor": ["百科问答"], "domain": ["通用"],
        "metadata": "", "answer_from": "human", "human_verified": True, "copyright": "", "extra": "",
    }
    base.update(kw)
    return base


def make_frame() -> pl.DataFrame:
    rows = [
        rec(0, config="zhihu", instruction=f"{SCRIPT} 如何看待", output=f"{IMG} 答案",
            task_type_major=["问答"], task_type_minor=["知乎问答"], domain=["通用", "社会"],
            answer_from="llm", human_verified=False, extra=json.dumps({"url": IMG})),
        rec(1, config="xhs", instruction="abc test", output="short", task_type_major=["生成"],
            task_type_minor=["种草文案"], domain=["生活"], answer_from="expert"),
        rec(2, config="exam", instruction="a.c literal", output="x" * 500, task_type_major=["考试"],
            task_type_minor=["单选题"], domain=["法律"], metadata="多行\n元数据"),
    ]
    rows += [rec(3 + i) for i in range(N_FILLER)]
    rows[-1]["answer_from"] = ""
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


@pytest.fixture
def frame() -> pl.DataFrame:
    return make_frame()


def ids(df: pl.DataFrame) -> set[str]:
    return set(df["record_id"].to_list())


def assert_escaped(text: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()


# ----------------------------------------------------------------------------- escaping

def test_page_html_escapes_record_text(frame: pl.DataFrame) -> None:
    assert_escaped(render_page_html(frame.head(3)))


def test_record_html_escapes_record_text(frame: pl.DataFrame) -> None:
    assert_escaped(render_record_html(frame.row(0, named=True)))


def test_column_names_and_extra_values_escaped(frame: pl.DataFrame) -> None:
    evil = frame.with_columns(pl.lit(IMG).alias(EVIL_COL))
    for html_ in (render_page_html(evil.head(1)), render_record_html(evil.row(0, named=True))):
        assert "&lt;b onmouseover=&quot;alert(2)&quot;&gt;col&lt;/b&gt;" in html_
        assert "<b onmouseover" not in html_
        assert_escaped(html_)


def test_widget_html_is_escaped(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame.with_columns(pl.lit(SCRIPT).alias(EVIL_COL)))
    b.select(0)
    for html_ in (b.page_html, b.record_html):
        assert_escaped(html_)
        assert "<b onmouseover" not in html_


# ----------------------------------------------------------------------------- rendering

def test_page_html_columns_previews_and_lengths(frame: pl.DataFrame) -> None:
    html_ = render_page_html(frame.slice(2, 1))
    for head in ("#", "record_id", "config", "instruction", "output", "len(instruction)", "len(output)"):
        assert f">{head}<" in html_
    assert "exam/f.jsonl:3" in html_
    assert "x" * 80 in html_ and "x" * 81 not in html_  # preview truncated at 80 chars
    assert "…" in html_
    assert ">500<" in html_  # full length of the output


def test_page_html_empty_page(frame: pl.DataFrame) -> None:
    assert "no matching records" in render_page_html(frame.head(0))


def test_record_html_shows_every_field_and_provenance(frame: pl.DataFrame) -> None:
    row = frame.row(2, named=True)
    html_ = render_record_html(row)
    for col in SCHEMA:
        assert f">{col}" in html_, col
    assert "exam/f.jsonl" in html_ and "exam/f.jsonl:3" in html_ and "<b>3</b>" in html_
    assert "考试" in html_ and "单选题" in html_ and "法律" in html_
    assert '<pre style="white-space:pre-wrap' in html_
    assert "x" * 500 in html_  # the full text, not a preview
    assert "多行\n元数据" in html_


def test_record_html_joins_lists_and_pretty_prints_extra(frame: pl.DataFrame) -> None:
    html_ = render_record_html(frame.row(0, named=True))
    assert "通用, 社会" in html_
    assert '&quot;url&quot;: &quot;&lt;img' in html_  # extra JSON, indented and escaped


# ----------------------------------------------------------------------------- filtering

def test_no_filter_returns_everything(frame: pl.DataFrame) -> None:
    assert filter_frame(frame, BrowserQuery()).height == frame.height


def test_literal_search_does_not_treat_dot_as_wildcard(frame: pl.DataFrame) -> None:
    got = filter_frame(frame, BrowserQuery(text="a.c"))
    assert ids(got) == {"exam/f.jsonl:3"}


def test_regex_search_treats_dot_as_wildcard(frame: pl.DataFrame) -> None:
    got = filter_frame(frame, BrowserQuery(text="a.c", regex=True))
    assert ids(got) == {"exam/f.jsonl:3", "xhs/f.jsonl:2"}


def test_literal_search_is_case_insensitive_and_escapes_metacharacters(frame: pl.DataFrame) -> None:
    assert ids(filter_frame(frame, BrowserQuery(text="ABC TEST"))) == {"xhs/f.jsonl:2"}
    assert ids(filter_frame(frame, BrowserQuery(text="(1)</script>"))) == {"zhihu/f.jsonl:1"}


def test_search_only_in_chosen_fields(frame: pl.DataFrame) -> None:
    assert filter_frame(frame, BrowserQuery(text="答案", fields=("output",))).height == 1
    assert filter_frame(frame, BrowserQuery(text="答案", fields=("instruction",))).height == 0


def test_invalid_regex_raises_value_error_naming_pattern() -> None:
    with pytest.raises(ValueError, match=r"invalid regular expression 'a\(b'.*untick 'regex'"):
        filter_frame(make_frame(), BrowserQuery(text="a(b", regex=True))


def test_filter_by_config(frame: pl.DataFrame) -> None:
    got = filter_frame(frame, BrowserQuery(configs=("xhs", "zhihu")))
    assert set(got["config"]) == {"xhs", "zhihu"} and got.height == 2


def test_filter_by_task_type_matches_major_or_minor(frame: pl.DataFrame) -> None:
    assert ids(filter_frame(frame, BrowserQuery(task_type="生成"))) == {"xhs/f.jsonl:2"}
    assert ids(filter_frame(frame, BrowserQuery(task_type="知乎问答"))) == {"zhihu/f.jsonl:1"}
    # "问答" is a major of the zhihu record and of every filler record.
    assert filter_frame(frame, BrowserQuery(task_type="问答")).height == 1 + N_FILLER
    assert filter_frame(frame, BrowserQuery(task_type="问")).height == 0  # membership, not substring


def test_filter_by_domain_membership(frame: pl.DataFrame) -> None:
    assert ids(filter_frame(frame, BrowserQuery(domain="社会"))) == {"zhihu/f.jsonl:1"}
    assert filter_frame(frame, BrowserQuery(domain="通用")).height == 1 + N_FILLER


def test_filter_by_answer_from_and_human_verified(frame: pl.DataFrame) -> None:
    assert ids(filter_frame(frame, BrowserQuery(answer_from="expert"))) == {"xhs/f.jsonl:2"}
    assert ids(filter_frame(frame, BrowserQuery(human_verified=False))) == {"zhihu/f.jsonl:1"}
    assert filter_frame(frame, BrowserQuery(human_verified=True)).height == frame.height - 1


def test_filter_by_length_range_is_inclusive(frame: pl.DataFrame) -> None:
    lengths = frame["output"].str.len_chars()
    lo, hi = 50, int(lengths.sort()[-2])
    got = filter_frame(frame, BrowserQuery(min_len=lo, max_len=hi))
    assert got.height == int(((lengths >= lo) & (lengths <= hi)).sum())
    assert got["output"].str.len_chars().max() == hi
    assert "exam/f.jsonl:3" not in ids(got)  # the 500-char output is above hi
    assert ids(filter_frame(frame, BrowserQuery(min_len=500))) == {"exam/f.jsonl:3"}
    # "问题 3" .. "问题 9" are the only 4-character instructions; none is shorter.
    assert filter_frame(frame, BrowserQuery(length_field="instruction", max_len=4)).height == 7
    assert filter_frame(frame, BrowserQuery(length_field="instruction", max_len=3)).height == 0


def test_filters_combine_with_and(frame: pl.DataFrame) -> None:
    got = filter_frame(frame, BrowserQuery(text="问题", configs=("wiki",), min_len=100))
    assert got.height > 0
    assert (got["config"] == "wiki").all() and (got["output"].str.len_chars() >= 100).all()
    assert got.height < filter_frame(frame, BrowserQuery(text="问题")).height


def test_filter_on_absent_column_raises_value_error(frame: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="'domain' is not in this frame"):
        filter_frame(frame.drop("domain"), BrowserQuery(domain="通用"))


# ----------------------------------------------------------------------------- pagination

def test_page_count() -> None:
    assert [page_count(n, 10) for n in (0, 1, 10, 11, 23)] == [1, 1, 1, 2, 3]
    with pytest.raises(ValueError):
        page_count(5, 0)


def test_page_of_slices_and_clamps(frame: pl.DataFrame) -> None:
    assert page_of(frame, BrowserQuery(page=0)).height == 10
    last = page_of(frame, BrowserQuery(page=2))
    assert last.height == 3 and last["record_id"][-1] == frame["record_id"][-1]
    assert page_of(frame, BrowserQuery(page=99)).equals(last)


def test_widget_pagination(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame, page_size=10)
    assert b.status_text == "page 1 of 3 · 23 matching records"
    b.prev_page()
    assert b.query.page == 0
    b.next_page()
    b.next_page()
    assert b.status_text == "page 3 of 3 · 23 matching records"
    assert b.page_frame.height == 3
    assert b.page_html.count("<tr>") == 1 + 3  # header + rows: only one page is rendered
    b.next_page()  # beyond the last page: stays
    assert b.query.page == 2 and b.page_frame.height == 3
    assert b._next.disabled and not b._prev.disabled


def test_page_size_change_and_filter_reset_page(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame, page_size=5)
    assert b.status_text.startswith("page 1 of 5 ")
    b.next_page()
    b.set_query(page_size=20)
    assert b.query.page == 0 and b.page_frame.height == 20
    b.next_page()
    assert b.query.page == 1
    b.set_query(configs=("wiki",))
    assert b.query.page == 0
    assert b.status_text == f"page 1 of 1 · {N_FILLER} matching records"


# ----------------------------------------------------------------------------- widget

def test_widget_structure_and_display(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    assert isinstance(b.widget, w.VBox)
    bundle = b._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == b.widget.model_id
    assert "23 records" in bundle["text/plain"]


def test_ipython_display_shows_the_vbox(frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[Any] = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    b = DatasetBrowser(frame)
    b._ipython_display_()
    assert shown == [b.widget]


def test_set_query_updates_controls_and_results(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    b.set_query(text="ABC", configs="xhs", domain="生活", human_verified=True)
    assert ids(b.filtered) == {"xhs/f.jsonl:2"}
    c = b.controls
    assert c["search"].value == "ABC"
    assert c["configs"].value == ("xhs",)
    assert c["domain"].value == "生活"
    assert c["human_verified"].value == "True"
    assert b.status_text == "page 1 of 1 · 1 matching record"


def test_controls_drive_the_query(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    c = b.controls
    c["configs"].value = ("exam", "xhs")
    assert set(b.filtered["config"]) == {"exam", "xhs"}
    c["task_type"].value = "考试"
    assert ids(b.filtered) == {"exam/f.jsonl:3"}
    c["task_type"].value = "(any)"
    c["answer_from"].value = "expert"
    assert ids(b.filtered) == {"xhs/f.jsonl:2"}
    c["answer_from"].value = "(any)"
    c["search"].value = "a.c"
    c["regex"].value = True
    assert ids(b.filtered) == {"exam/f.jsonl:3", "xhs/f.jsonl:2"}
    c["fields"].value = ("output",)
    assert b.filtered.height == 0
    c["fields"].value = ("instruction",)
    c["length"].value = (100, c["length"].max)
    assert ids(b.filtered) == {"exam/f.jsonl:3"}


def test_empty_answer_from_is_selectable(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    dd = b.controls["answer_from"]
    assert list(dd.options) == ["(any)", "(empty)", "expert", "human", "llm"]
    dd.value = "(empty)"
    assert b.query.answer_from == "" and ids(b.filtered) == {frame["record_id"][-1]}
    b.set_query(answer_from="human")
    assert dd.value == "human" and b.filtered.height == N_FILLER  # 19 fillers + the exam record


def test_unchanged_filter_keeps_page(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    b.next_page()
    b.set_query(text="")  # same as before: nothing to refilter, stay on page 2
    assert b.query.page == 1
    b.set_query(text="问题")
    assert b.query.page == 0


def test_dropdown_options_are_sorted_with_any(frame: pl.DataFrame) -> None:
    c = DatasetBrowser(frame).controls
    assert c["task_type"].options[0] == "(any)"
    tasks = {"问答", "知乎问答", "生成", "种草文案", "考试", "单选题", "百科问答"}
    assert list(c["task_type"].options[1:]) == sorted(tasks)
    assert list(c["domain"].options[1:]) == sorted({"通用", "社会", "生活", "法律"})
    assert list(c["configs"].options) == ["exam", "wiki", "xhs", "zhihu"]
    assert list(c["human_verified"].options) == ["(any)", "True", "False"]


def test_length_slider_range_follows_field(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    slider = b.controls["length"]
    assert slider.max == 500 and slider.value == (0, 500)
    b.set_query(min_len=10, max_len=20)
    assert slider.value == (10, 20)
    b.controls["length_field"].value = "instruction"
    assert slider.max == max(len(s) for s in frame["instruction"])
    assert b.query.min_len is None and b.query.max_len is None


def test_select_shows_record(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    assert "zhihu/f.jsonl:1" in b.record_html  # first record selected by default
    b.select(2)
    assert b.selected == 2 and "exam/f.jsonl:3" in b.record_html
    assert "x" * 500 in b.record_html
    b.next_page()
    assert b.selected == 0 and frame["record_id"][10] in b.record_html
    with pytest.raises(IndexError):
        b.select(10)


def test_record_dropdown_selects(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    b._record.value = 1
    assert b.selected == 1 and "xhs/f.jsonl:2" in b.record_html


def test_invalid_regex_in_widget_goes_to_status(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    b.set_query(text="a(b", regex=True)  # must not raise
    assert "invalid regular expression 'a(b'" in b.status_text
    assert "untick 'regex'" in b.status_text
    assert "invalid regular expression" in b.page_html and b.filtered.height == 0
    b.controls["regex"].value = False  # the same text, literally: valid again
    assert b.error is None and b.status_text == "page 1 of 1 · 0 matching records"
    b.set_query(text="a.c", regex=True)
    assert b.filtered.height == 2


def test_set_query_accepts_string_booleans(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    b.set_query(human_verified="false")
    assert b.query.human_verified is False and ids(b.filtered) == {"zhihu/f.jsonl:1"}
    with pytest.raises(ValueError, match="human_verified"):
        b.set_query(human_verified="maybe")


def test_set_query_rejects_unknown_field(frame: pl.DataFrame) -> None:
    with pytest.raises(TypeError, match="bogus"):
        DatasetBrowser(frame).set_query(bogus=1)


def test_no_matches_and_empty_frame(frame: pl.DataFrame) -> None:
    b = DatasetBrowser(frame)
    b.set_query(text="不存在的文本")
    assert b.page_frame.height == 0 and "no matching records" in b.page_html
    assert "no record selected" in b.record_html
    e = DatasetBrowser(frame.head(0))
    assert e.status_text == "page 1 of 1 · 0 matching records"


# ----------------------------------------------------------------------------- other frames

def test_extra_columns_are_shown(frame: pl.DataFrame) -> None:
    dropped = frame.with_columns(
        pl.lit("min_length").alias("filter"), pl.int_range(pl.len()).alias("value"),
        (pl.int_range(pl.len()) / 4).alias("score"))
    b = DatasetBrowser(dropped)
    for col in ("filter", "value", "score"):
        assert f">{col}<" in b.page_html
        assert f">{col}<" in b.record_html
    assert "min_length" in b.page_html
    b.select(2)
    assert ">0.5<" in b.record_html


def test_missing_columns_hide_controls_and_do_not_crash(frame: pl.DataFrame) -> None:
    thin = frame.select("instruction", "output")
    b = DatasetBrowser(thin)
    assert set(b.visible_controls) == {"search", "regex", "fields", "length_field", "length"}
    hidden = [b.controls[n] for n in ("configs", "task_type", "domain", "answer_from", "human_verified")]
    shown = _descendants(b.widget)
    assert all(h not in shown for h in hidden)
    assert b.controls["search"] in shown
    b.set_query(text="abc")
    assert b.filtered.height == 1
    assert "abc test" in b.page_html and "abc test" in b.record_html
    b.set_query(configs=("xhs",))  # a filter on an absent column: reported, not raised
    assert "'config' is not in this frame" in b.status_text


def test_frame_without_default_text_fields_searches_its_strings() -> None:
    b = DatasetBrowser(pl.DataFrame({"text": ["猫 cat", "狗 dog"], "n": [1, 2]}))
    assert b.query.fields == ("text",) and b.query.length_field == "text"
    b.set_query(text="CAT")
    assert b.filtered["n"].to_list() == [1]
    assert ">n<" in b.page_html


def _descendants(widget: w.Widget) -> list[w.Widget]:
    out = [widget]
    for child in getattr(widget, "children", ()):
        out.extend(_descendants(child))
    return out


# ----------------------------------------------------------------------------- browse()

def raw_records() -> list[dict[str, Any]]:
    """Records as they are in the COIG-CQIA JSONL files."""
    return [
        {"instruction": f"问题{i}", "input": "", "output": f"回答{i}",
         "task_type": {"major": ["问答"], "minor": ["知乎问答"]}, "domain": ["通用"],
         "metadata": "", "answer_from": "human", "human_verified": True, "copyright": ""}
        for i in range(3)
    ]


def test_browse_polars_and_lazy(frame: pl.DataFrame) -> None:
    assert browse(frame).frame.equals(frame)
    assert browse(frame.lazy(), page_size=5).page_frame.height == 5


def test_browse_initial_query(frame: pl.DataFrame) -> None:
    b = browse(frame, text="abc", configs=["xhs"])
    assert ids(b.filtered) == {"xhs/f.jsonl:2"} and b.controls["configs"].value == ("xhs",)
    with pytest.raises(TypeError, match="nope"):
        browse(frame, nope=1)


def test_browse_pandas(frame: pl.DataFrame) -> None:
    pd_frame = frame.select("record_id", "config", "instruction", "output").to_pandas()
    b = browse(pd_frame)
    assert b.frame.height == frame.height and b.frame["record_id"].to_list() == frame["record_id"].to_list()


def test_browse_datasets_dataset_and_dict(frame: pl.DataFrame) -> None:
    datasets = pytest.importorskip("datasets")
    rows = frame.select("record_id", "config", "instruction", "output", "domain").to_dicts()
    ds = datasets.Dataset.from_list(rows)
    b = browse(ds)
    assert b.frame.height == frame.height and b.frame["domain"].dtype == pl.List(pl.String)
    b.set_query(domain="社会")
    assert ids(b.filtered) == {"zhihu/f.jsonl:1"}
    dd = datasets.DatasetDict({"train": ds, "test": ds.select(range(2))})
    assert browse(dd).frame.height == frame.height
    assert browse(dd, split="test").frame.height == 2
    with pytest.raises(ValueError, match="'validation'.*test.*train"):
        browse(dd, split="validation")


def test_browse_save_to_disk_folders(frame: pl.DataFrame, tmp_path: Path) -> None:
    # A Hugging Face dataset saved with save_to_disk is a folder; browse opens it (Dataset and DatasetDict).
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(frame.select("record_id", "config", "instruction", "output", "domain").to_dicts())
    ds.save_to_disk(str(tmp_path / "ds"))
    b = browse(tmp_path / "ds")
    assert b.frame["record_id"].to_list() == frame["record_id"].to_list()
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(2))}).save_to_disk(str(tmp_path / "dd"))
    assert browse(str(tmp_path / "dd")).frame.height == frame.height
    assert browse(tmp_path / "dd", split="validation").frame.height == 2
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="is a folder but not a saved Hugging Face dataset"):
        browse(tmp_path / "plain")


def test_browse_gzipped_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    monkeypatch.setenv("CQIA_CACHE_DIR", str(tmp_path / "cache"))
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw_records())
    (tmp_path / "part.jsonl.gz").write_bytes(gzip.compress(lines.encode("utf-8")))
    assert browse(tmp_path / "part.jsonl.gz").frame["instruction"].to_list() == ["问题0", "问题1", "问题2"]


def test_browse_list_of_dicts() -> None:
    b = browse([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d", "score": 1.5}])
    assert b.frame.height == 2 and "score" in b.frame.columns
    with pytest.raises(TypeError, match="list of dicts"):
        browse([1, 2])


def test_browse_parquet_csv_json(frame: pl.DataFrame, tmp_path: Path) -> None:
    frame.write_parquet(tmp_path / "f.parquet")
    assert browse(tmp_path / "f.parquet").frame.collect().equals(frame)  # lazy: a LazyFrame
    flat = frame.select("record_id", "config", "instruction", "output", "human_verified")
    flat.write_csv(tmp_path / "f.csv")
    b = browse(str(tmp_path / "f.csv"))
    assert b.frame.height == frame.height
    b.set_query(human_verified=False)
    assert ids(b.filtered) == {"zhihu/f.jsonl:1"}
    frame.write_ndjson(tmp_path / "f.json")
    assert browse(tmp_path / "f.json").frame["record_id"].to_list() == frame["record_id"].to_list()


def test_browse_raw_cqia_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQIA_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "zhihu" / "part.jsonl"
    path.parent.mkdir()
    lines = [json.dumps(r, ensure_ascii=False) for r in raw_records()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    b = browse(path)
    assert b.frame.height == 3
    assert b.frame["instruction"].to_list() == ["问题0", "问题1", "问题2"]
    b.set_query(task_type="知乎问答")
    assert b.filtered.height == 3 and b.error is None


@pytest.mark.filterwarnings("ignore")  # the loader may warn that these are not raw CQIA lines
def test_browse_jsonl_of_a_written_frame(frame: pl.DataFrame, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQIA_CACHE_DIR", str(tmp_path / "cache"))
    out = frame.with_columns(pl.lit("dedup").alias("filter"))
    out.write_ndjson(tmp_path / "dropped.jsonl")
    b = browse(tmp_path / "dropped.jsonl")
    assert b.frame.height == frame.height
    assert "filter" in b.frame.columns and ">filter<" in b.page_html




def test_browse_lfs_pointer_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 10\n")
    with pytest.raises(ValueError, match="Git LFS pointer"):
        browse(path)


def test_browse_missing_path(tmp_path: Path) -> None:
    for name in ("nope.parquet", "nope.jsonl", "nope"):
        missing = tmp_path / name
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ": no such file"):
            browse(str(missing))


def test_browse_unsupported_inputs(tmp_path: Path) -> None:
    expected = r"set.*supported:.*polars DataFrame.*pandas.*datasets\.Dataset.*parquet"
    with pytest.raises(TypeError, match=expected):
        browse({1, 2})
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.txt"):
        browse(tmp_path / "f.txt")


# ----------------------------------------------------------------------------- lazy parquet

ROWS_PER_GROUP = 25


def big_frame(n_copies: int = 8) -> pl.DataFrame:
    """make_frame() repeated with distinct record ids: 184 rows, the hostile records in every copy."""
    parts = [make_frame().with_columns((pl.col("record_id") + f"#{k}").alias("record_id"))
             for k in range(n_copies)]
    return pl.concat(parts)


@pytest.fixture
def row_group_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, tuple[str, ...] | None]]:
    """Every pyarrow row-group read as (file name, row group, columns); polars' eager readers fail."""
    import pyarrow.parquet as pq

    log: list[tuple[str, int, tuple[str, ...] | None]] = []
    real = pq.ParquetFile.read_row_group

    def counted(self: Any, i: int, columns: Any = None, **kw: Any) -> Any:
        log.append(("", i, None if columns is None else tuple(columns)))
        return real(self, i, columns=columns, **kw)

    def no_eager(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the lazy browser read the whole file")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    monkeypatch.setattr(pq.ParquetFile, "read", no_eager)
    monkeypatch.setattr(pl, "read_parquet", no_eager)
    return log


def full_reads(log: list[tuple[str, int, Any]]) -> list[int]:
    return [g for _f, g, cols in log if cols is None]


def test_lazy_parquet_opens_and_pages_reading_only_the_row_groups_shown(
        tmp_path: Path, row_group_reads: list[Any]) -> None:
    big = big_frame()
    path = tmp_path / "big.parquet"
    big.write_parquet(path, row_group_size=ROWS_PER_GROUP)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).num_row_groups == 8
    b = browse(path, page_size=10)
    assert b.lazy and b.source is not None and b.source.height == big.height
    assert full_reads(row_group_reads) == [0]  # the first page only
    assert b.page_frame.equals(big.head(10))
    assert f"{big.height:,} records" in b.status_text and "1 of 8 row groups read" in b.status_text
    # Rows 20..29 straddle row groups 0 and 1; rows 150..159 are in group 6 alone.
    row_group_reads.clear()
    b.set_query(page=2)
    assert b.page_frame.equals(big.slice(20, 10)) and full_reads(row_group_reads) == [0, 1]
    row_group_reads.clear()
    b.set_query(page=15)
    assert b.page_frame.equals(big.slice(150, 10)) and full_reads(row_group_reads) == [6]
    row_group_reads.clear()
    b.set_query(page=10_000)  # clamped to the last page: group 7 only
    assert b.query.page == 18 and b.page_frame.equals(big.slice(180, 10))
    assert full_reads(row_group_reads) == [7] and b.controls["configs"].options  # labels were scanned
    b.set_query(page=0)
    assert_escaped(b.page_html + b.record_html)  # untrusted text escaped as before


def test_lazy_search_matches_eager_and_stops_early(tmp_path: Path, row_group_reads: list[Any]) -> None:
    big = big_frame()
    path = tmp_path / "big.parquet"
    big.write_parquet(path, row_group_size=ROWS_PER_GROUP)
    lazy_b, eager_b = browse(path, page_size=5), browse(big, page_size=5)
    assert not eager_b.lazy
    queries: list[dict[str, Any]] = [
        {"text": "abc"}, {"text": "a.c", "regex": True}, {"text": "问题 1"}, {"configs": ("zhihu", "exam")},
        {"task_type": "考试"}, {"domain": "社会"}, {"answer_from": ""}, {"human_verified": False},
        {"min_len": 30, "max_len": 100}, {"text": "nothing like this"},
    ]
    reset: dict[str, Any] = {"text": "", "regex": False, "configs": (), "task_type": None, "domain": None,
                             "answer_from": None, "human_verified": None, "min_len": None, "max_len": None}
    for q in queries:
        eager_b.set_query(**{**reset, **q})
        lazy_b.set_query(**{**reset, **q})
        expected = filter_frame(big, lazy_b.query)
        assert eager_b.filtered.equals(expected), q
        got = []
        while True:
            got.append(lazy_b.page_frame)
            if lazy_b._next.disabled:
                break
            lazy_b.next_page()
        assert pl.concat(got).equals(expected), q
        assert lazy_b.count_all() == expected.height == eager_b.count_all(), q
        assert lazy_b.filtered.collect().equals(expected), q
        if expected.height:
            assert f"{expected.height:,} matching" in lazy_b.status_text
    # A search whose first page is in row group 0 scans group 0 (search columns only) and stops.
    lazy_b.set_query(text="", configs=())
    row_group_reads.clear()
    lazy_b.set_query(text="问题")
    assert [g for _f, g, _c in row_group_reads] == [0, 0]
    assert row_group_reads[0][2] is not None and set(row_group_reads[0][2]) <= {"instruction", "input", "output"}
    assert "at least 20 matching" in lazy_b.status_text and lazy_b._progress.value == 1
    # Invalid regex: the error, as for a frame.
    lazy_b.set_query(text="(", regex=True)
    assert lazy_b.error and "invalid regular expression" in lazy_b.status_text


def test_lazy_parquet_folder_of_shards(tmp_path: Path, row_group_reads: list[Any]) -> None:
    big = big_frame()
    shards = tmp_path / "shards"
    shards.mkdir()
    for k, start in enumerate((0, 60, 130)):
        big.slice(start, {0: 60, 1: 70, 2: 54}[k]).write_parquet(shards / f"part-{k:02d}.parquet",
                                                                  row_group_size=ROWS_PER_GROUP)
    b = browse(shards, page_size=10)
    assert b.lazy and b.source.height == big.height and len(b.source.paths) == 3
    assert full_reads(row_group_reads) == [0]
    b.set_query(page=5)  # rows 50..59 (shard 0) ... rows 60..69 are shard 1's first
    assert b.page_frame.equals(big.slice(50, 10))
    b.set_query(page=6)
    assert b.page_frame.equals(big.slice(60, 10))
    b.set_query(configs=("xhs",))
    assert b.count_all() == 8 and b.filtered.collect().equals(big.filter(pl.col("config") == "xhs"))


def test_lazyframe_is_browsed_lazily(frame: pl.DataFrame) -> None:
    lf = big_frame().lazy()
    b = browse(lf, page_size=7)
    assert b.lazy and b.page_frame.equals(big_frame().head(7))
    b.set_query(text="abc")
    assert b.count_all() == 8


def test_lazy_raw_cqia_parquet_unpacks_task_type(tmp_path: Path) -> None:
    # Raw records keep task_type as a struct; a lazy scan reads `task_type` for a task-type filter.
    pl.from_dicts(raw_records() * 20).write_parquet(tmp_path / "raw.parquet", row_group_size=7)
    b = browse(tmp_path / "raw.parquet", page_size=5)
    assert b.lazy and "task_type_major" in b.page_frame.columns
    assert b.controls["task_type"].options == ("(any)", "知乎问答", "问答")
    b.set_query(task_type="知乎问答")
    assert b.error is None and b.count_all() == 60
    b.set_query(task_type="nope")
    assert b.count_all() == 0 and "no matching records" in b.page_html
