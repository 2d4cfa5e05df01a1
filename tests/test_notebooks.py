"""Notebooks on the real data: every cell runs top to bottom (nbval covers the bundled default)."""

from __future__ import annotations

import pytest

from cqia_nb import notebooks


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
    secs = notebooks.execute(nb, out, params, env={"CQIA_FIGURES_DIR": str(tmp_path / "figures")})
    text = out.read_text(encoding="utf-8")
    assert "17,971 records loaded" in text or "17971 records" in text or "17971 filtered records" in text
    assert (tmp_path / "figures").is_dir() and any((tmp_path / "figures").glob("*.html"))
    if name.startswith("02"):
        assert (tmp_path / "02_filter" / "kept.parquet").is_file()
    if name.startswith("03"):
        assert (tmp_path / "03_subsets" / "README.md").is_file()
    assert secs < 600
