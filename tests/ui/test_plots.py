"""Every figure is titled, axis-labelled, built from the frame's numbers, and saved as HTML."""

from __future__ import annotations

import polars as pl

import cqia_nb.data as data
import cqia_nb.ui.plots as plots


def _frame() -> pl.DataFrame:
    return pl.DataFrame({
        "config": ["zhihu", "zhihu", "xhs"], "instruction": ["问一", "问二", "问三"], "input": ["", "补充", ""],
        "output": ["答" * 10, "答" * 30, "答" * 5], "task_type_major": [["问答"], ["问答"], ["文本生成"]],
        "task_type_minor": [["百科问答"], [], ["写作"]], "domain": [["通用"], ["医疗", "百科"], []],
        "answer_from": ["human", "llm", ""], "human_verified": [True, False, True],
        "source_file": ["zhihu/a.jsonl", "zhihu/a.jsonl", "xhs/x.jsonl"],
    })


def test_figures_are_titled_labelled_and_carry_the_counts(tmp_path):
    f = _frame()
    counts = data.config_counts(f.with_columns(pl.lit("").alias("metadata")))
    bar = plots.counts_bar(counts)
    assert bar.layout.title.text and bar.layout.xaxis.title.text and bar.layout.yaxis.title.text
    assert dict(zip(bar.data[0].x, bar.data[0].y)) == {"xhs": 1, "zhihu": 2}
    heat = plots.origin_heatmap(f)
    assert heat.layout.title.text and heat.layout.xaxis.title.text
    assert int(heat.data[0].z.sum()) == 3
    sun = plots.task_sunburst(f)
    assert sun.layout.title.text and sum(v for v, p in zip(sun.data[0].values, sun.data[0].parents) if p == "") == 3
    tree = plots.domain_treemap(f)
    assert tree.layout.title.text
    box = plots.length_box(f)
    assert "chars" in box.layout.yaxis.title.text
    path = plots.save_figure(bar, "t_bar", tmp_path)
    assert path.read_text().count("plotly") > 0 and (tmp_path / "plotly.min.js").exists()


def test_figures_dir_override_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CQIA_FIGURES_DIR", str(tmp_path / "env"))
    assert plots.figures_dir("auto") == tmp_path / "env"
    assert plots.figures_dir(tmp_path / "x") == tmp_path / "x"
