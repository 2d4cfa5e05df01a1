"""Notebooks on the real data: every cell runs top to bottom (nbval covers the bundled default)."""

from __future__ import annotations

import pytest

import cqia_nb.runner as notebooks


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", ["01_explore_sources.ipynb", "02_filter.ipynb", "03_build_subsets.ipynb"])
def test_notebook_runs_on_real_data(name, real_data, tmp_path, monkeypatch):
    nb = notebooks.notebooks_dir() / name
    out = tmp_path / name
    params = {"DATA_SOURCE": str(real_data)}
    if name.startswith("03"):
        params.update(INPUT=str(real_data), OUT_DIR=str(tmp_path / "03_subsets"))
    if name.startswith("02"):
        params.update(OUT_DIR=str(tmp_path / "02_filter"), REVIEW_LOG=str(tmp_path / "review.jsonl"),
                      QUALITY_SAMPLE=300)
    notebooks.execute(nb, out, params, env={"CQIA_FIGURES_DIR": str(tmp_path / "figures")})
    text = out.read_text(encoding="utf-8")
    assert "17,971 records loaded" in text or "17971 records" in text or "17971 filtered records" in text
    assert (tmp_path / "figures").is_dir() and any((tmp_path / "figures").glob("*.html"))
    if name.startswith("02"):
        assert (tmp_path / "02_filter" / "kept.parquet").is_file()
    if name.startswith("03"):
        assert (tmp_path / "03_subsets" / "README.md").is_file()


@pytest.mark.slow
@pytest.mark.realdata
def test_notebook_05_runs_on_the_real_benchmark_files(tmp_path):
    from conftest import REAL_BENCHMARKS

    if not (REAL_BENCHMARKS / "ceval").is_dir():
        pytest.skip(f"real benchmarks not found at {REAL_BENCHMARKS} (set CQIA_REAL_BENCHMARKS to run this tier)")
    nb = notebooks.notebooks_dir() / "05_evaluate.ipynb"
    out = tmp_path / nb.name
    store = tmp_path / "results.jsonl"
    # 1 question per subject (52 C-Eval, 67 CMMLU, 7 SafetyBench), 5-shot, 20 BELLE-EVAL questions:
    # every real format and the shots, in a few minutes on 2 cores
    params = {"BENCHMARKS_DIR": str(REAL_BENCHMARKS), "SHOTS": 5, "LIMIT": 1, "BELLE_LIMIT": 20,
              "MAX_NEW_TOKENS": 16, "OUT_DIR": str(tmp_path / "05"), "RESULTS": str(store),
              "MODELS_DIR": str(tmp_path / "no-runs")}
    notebooks.execute(nb, out, params, env={"CQIA_FIGURES_DIR": str(tmp_path / "figures")})
    text = out.read_text(encoding="utf-8")
    assert "ceval: 52 questions read in 52 subjects" in text and "cmmlu: 67 questions read in 67 subjects" in text
    import polars as pl

    rows = pl.read_ndjson(store)
    assert {"ceval", "cmmlu", "safetybench", "belle_eval"} <= set(rows["benchmark"].to_list())
    assert set(rows.filter(pl.col("benchmark") == "ceval")["shots"].to_list()) == {5}
    assert any((tmp_path / "figures").glob("05_*.html"))
