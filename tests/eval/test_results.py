"""Results store (schema check, latest wins, atomic all-or-none appends), reference numbers,
comparison tables and figures, and the shared statistics."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest
import yaml

import cqia_nb.eval.results as R
from cqia_nb.core.intervals import bootstrap_mean_ci, wilson_interval
from cqia_nb.eval.results import ResultsError, append_results, read_results, reference_results
from cqia_nb.ui.eval_plots import base_vs_tuned_bars, class_radar, subset_bars
from cqia_nb.ui.plots import save_figure


def row(**over) -> dict:
    r = {"model": "Yi-6B+CQIA", "benchmark": "ceval", "subset": "overall", "metric": "accuracy", "value": 0.7,
         "ci_low": 0.68, "ci_high": 0.72, "n": 1346, "shots": 5, "base_model": "Yi-6B", "train_subset": "mix-groups"}
    r.update(over)
    return r


def test_append_and_read_round_trip_with_defaults(tmp_path):
    p = append_results([row(), row(benchmark="cmmlu", value=0.74, date="2024-04-01")], tmp_path / "r" / "res.jsonl")
    df = read_results(p)
    assert df.schema == pl.Schema(R.COLUMNS) and df.height == 2
    first = df.row(0, named=True)
    assert first["source"] == "cqia-notebooks" and first["external"] is False and len(first["date"]) == 10
    assert df["value"].to_list() == [0.7, 0.74] and df["date"][1] == "2024-04-01"
    assert read_results(tmp_path / "missing.jsonl").height == 0


def test_latest_line_per_key_wins(tmp_path):
    p = tmp_path / "res.jsonl"
    append_results([row(value=0.60), row(shots=0, value=0.55)], p)
    append_results([row(value=0.65, notes="rerun")], p)
    df = read_results(p)
    assert df.height == 2  # 0-shot and 5-shot are different keys
    five = df.filter(pl.col("shots") == 5).row(0, named=True)
    assert five["value"] == 0.65 and five["notes"] == "rerun"
    assert read_results(p, latest=False)["value"].to_list() == [0.60, 0.55, 0.65]


@pytest.mark.parametrize("bad, message", [
    ({"model": None}, r"row 1: field 'model' is required"),
    ({"value": 72.0}, r"row 1: accuracy is a fraction in \[0, 1\], but value is 72.0 \(divide percentages by 100\)"),
    ({"ci_low": 0.9}, r"ci_low 0.9 is above ci_high 0.72"),
    ({"shots": -1}, r"field 'shots' must be a non-negative integer"),
    ({"date": "01/04/2024"}, r"field 'date' must be an ISO date"),
    ({"score": 1}, r"unknown column\(s\) \['score'\]"),
    ({"value": float("inf")}, r"field 'value' must be a finite number"),
])
def test_schema_check_names_row_and_field_and_writes_nothing(tmp_path, bad, message):
    p = tmp_path / "res.jsonl"
    append_results([row()], p)
    before = p.read_bytes()
    with pytest.raises(ResultsError, match=message):
        append_results([row(benchmark="cmmlu"), row(**bad)], p)
    assert p.read_bytes() == before


def test_a_bad_line_in_the_file_is_named(tmp_path):
    p = tmp_path / "res.jsonl"
    append_results([row()], p)
    with p.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"model": "m", "benchmark": "b", "subset": "s", "metric": "accuracy", "value": 3}) + "\n")
    with pytest.raises(ResultsError, match=r"res.jsonl:2: accuracy is a fraction .*fix or delete that line"):
        read_results(p)
    p.write_text(p.read_text().splitlines()[0] + "\n{oops\n")
    with pytest.raises(ResultsError, match=r"res.jsonl:2: not valid JSON"):
        read_results(p)


def test_default_path_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CQIA_RESULTS", str(tmp_path / "env.jsonl"))
    assert append_results([row()]) == tmp_path / "env.jsonl" and read_results().height == 1
    monkeypatch.delenv("CQIA_RESULTS")
    assert R.default_results_path().parts[-3:] == ("build", "results", "results.jsonl")


def test_reference_numbers_carry_their_source_and_match_the_reported_figures():
    ref = reference_results()
    raw = yaml.safe_load(R.REFERENCE_FILE.read_text(encoding="utf-8"))["references"]
    assert ref.height == len(raw) >= 4 and ref["external"].all()
    assert all(s.startswith("https://") for s in ref["source"])
    for entry, r in zip(raw, ref.iter_rows(named=True)):  # the fraction is the printed percentage / 100
        assert r["value"] == pytest.approx(float(entry["reported"]) / 100)
    yi = {(r["model"], r["benchmark"]): r for r in ref.iter_rows(named=True)}
    assert yi[("Yi-6B", "ceval")]["shots"] == 5 and ("Yi-34B", "cmmlu") in yi


def test_reference_entries_without_source_are_refused(tmp_path):
    p = tmp_path / "ref.yaml"
    p.write_text(yaml.safe_dump({"references": [{"model": "m", "benchmark": "ceval", "subset": "overall",
                                                 "metric": "accuracy", "value": 0.5}]}))
    with pytest.raises(ResultsError, match=r"references\[0\] \(m ceval\) needs `source:`"):
        reference_results(p)


def test_comparison_table_puts_external_numbers_beside_ours(tmp_path):
    p = tmp_path / "res.jsonl"
    append_results([row(model="Yi-6B", train_subset=None, base_model=None, value=0.70),
                    row(model="Yi-6B", benchmark="cmmlu", train_subset=None, base_model=None, value=0.73)], p)
    t = R.comparison_table(read_results(p, include_reference=True), metric="accuracy", shots=5)
    by = {r["model"]: r for r in t.iter_rows(named=True)}
    assert by["Yi-6B"]["ceval"] == 0.70 and by["Yi-6B (external)"]["ceval"] == pytest.approx(0.72)
    assert by["Yi-34B (external)"]["cmmlu"] == pytest.approx(0.837)
    with pytest.raises(ResultsError, match="choose metric= and shots="):
        append_results([row(model="Yi-6B", train_subset=None, shots=0, value=0.6)], p)
        R.comparison_table(read_results(p))


def _store(tmp_path) -> pl.DataFrame:
    rows = [row(model="Yi-6B", train_subset=None, base_model=None, value=0.70),
            row(model="Yi-6B", benchmark="cmmlu", train_subset=None, base_model=None, value=0.73)]
    for sub, v in (("zhihu", 0.71), ("ruozhiba", 0.72)):
        rows += [row(model=f"Yi-6B+{sub}", train_subset=sub, value=v),
                 row(model=f"Yi-6B+{sub}", benchmark="cmmlu", train_subset=sub, value=v + 0.01)]
        for cls, s in (("open qa", 0.6), ("math", 0.3), ("generation", 0.8)):
            rows.append(row(model=f"Yi-6B+{sub}", benchmark="belle_eval", subset=cls, metric="mean_score", value=s,
                            ci_low=s - 0.1, ci_high=s + 0.1, shots=None, train_subset=sub))
    append_results(rows, tmp_path / "res.jsonl")
    return read_results(tmp_path / "res.jsonl")


def test_figures_are_titled_labelled_mark_external_and_save(tmp_path):
    res = _store(tmp_path)
    bars = subset_bars(res, benchmarks=["ceval", "cmmlu"], metric="accuracy", base_model="Yi-6B")
    assert bars.layout.title.text and bars.layout.xaxis.title.text == "training subset"
    assert bars.layout.yaxis.title.text == "accuracy"
    assert set(bars.data[0].x) == {"(base)", "zhihu", "ruozhiba"} and len(bars.data) == 2
    # error bars run from the value to ci_high / ci_low (all rows: 0.68 .. 0.72)
    assert list(bars.data[0].error_y.array) == pytest.approx([0.72 - v for v in bars.data[0].y])
    assert list(bars.data[0].error_y.arrayminus) == pytest.approx([v - 0.68 for v in bars.data[0].y])

    radar = class_radar(res)
    assert radar.layout.title.text == "belle_eval: mean_score per class"
    assert {t.name for t in radar.data} == {"Yi-6B+zhihu", "Yi-6B+ruozhiba"}
    assert list(radar.data[0].theta) == ["generation", "math", "open qa", "generation"]  # closed polygon

    bvt = base_vs_tuned_bars(res, reference=reference_results())
    names = [t.name for t in bvt.data]
    assert "Yi-6B · base · 5-shot" in names and "Yi-6B · base · 5-shot (external)" in names
    assert "Yi-34B · base · 5-shot (external)" in names and any("tuned" in n for n in names)
    ext = [t for t in bvt.data if t.name.endswith("(external)")]
    assert all(t.marker.pattern.shape == "/" for t in ext) and bvt.layout.yaxis.title.text == "accuracy"
    for name, fig in (("bars", bars), ("radar", radar), ("bvt", bvt)):
        assert isinstance(fig, go.Figure) and save_figure(fig, name, tmp_path / "fig").is_file()


def test_bootstrap_is_seeded_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.uniform(size=20), rng.uniform(size=2000)
    lo, hi = bootstrap_mean_ci(small, seed=1)
    assert lo < small.mean() < hi and (lo, hi) == bootstrap_mean_ci(small, seed=1)
    assert (lo, hi) != bootstrap_mean_ci(small, seed=2)
    blo, bhi = bootstrap_mean_ci(big, seed=1)
    assert bhi - blo < (hi - lo) / 5
    assert bootstrap_mean_ci([]) == (None, None)
    # stratified: the statistic is the mean of the stratum means (macro)
    vals = [1.0] * 90 + [0.0] * 10
    labels = ["a"] * 90 + ["b"] * 10
    mlo, mhi = bootstrap_mean_ci(vals, strata=labels, n_boot=200)
    assert mlo == pytest.approx(0.5) and mhi == pytest.approx(0.5)  # each stratum is constant


def test_wilson_interval_textbook_values():
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (None, None)
