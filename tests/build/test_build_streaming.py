"""cqia_nb.build.streaming: `cqia-nb build --streaming` writes the in-memory build's files, byte for byte."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest
from conftest import REAL_BENCHMARKS, assert_same_build_files, load_frame

import cqia_nb.build as S
import cqia_nb.build.exports as E
from cqia_nb import cli
from cqia_nb.build import contamination as C
from cqia_nb.cli import main

#: subsets (built-in, own with `where`, one whose `where` reads the split), a token-budget mixture with
#: upsampling, a ratio mixture over an own subset, a system prompt and a truncation policy
SPEC = {
    "name": "stream", "seed": 5, "builtin": ["config.xhs", "group.law"], "split": {"validation": 0.2},
    "format": {"system": "你是一个助手。", "max_length": 300, "truncation": "truncate_output"},
    "subsets": [{"name": "long", "where": "output_chars > 200 AND n_tokens < 280"},
                {"name": "law-val", "groups": ["law"], "where": "split = 'validation'"}],
    "mixtures": [{"name": "budget", "parts": [{"subset": "group.law", "tokens": 20000},
                                              {"subset": "config.xhs", "tokens": 60000}], "allow_upsample": True},
                 {"name": "ratio", "parts": [{"subset": "long", "ratio": 0.5}, {"subset": "config.ruozhiba", "ratio": 0.5}],
                  "size": 300, "allow_upsample": True}],
}


@pytest.fixture(scope="module")
def evals() -> C.EvalIndex:
    """An eval 'benchmark' made of every 40th of the first 600 bundled answers: removal has work to do."""
    frame = load_frame("bundled").slice(0, 600).gather_every(40)
    return C.build_index(frame.select(pl.lit("fake").alias("eval_set"), pl.col("record_id").alias("item_id"),
                                      pl.col("output").alias("text")))


def _spec(**over) -> S.BuildSpec:
    d = {**SPEC, **over}
    return S.BuildSpec.from_dict(d)


def _both(tmp_path: Path, spec: S.BuildSpec, batch_rows: int, **kw) -> tuple[Path, Path, S.Build, S.StreamBuild]:
    mem, stream = tmp_path / "memory", tmp_path / "streaming"
    b1 = S.run_build(spec, **kw)
    E.export_all(b1, mem)
    with S.run_build_streaming(spec, batch_rows=batch_rows, spill_dir=tmp_path, **kw) as b2:
        E.export_all(b2, stream)
    return mem, stream, b1, b2


def test_bundled_in_50_row_batches_gives_the_same_files(tmp_path, evals):
    spec = _spec(contamination={"benchmarks": "unused", "remove": True})
    mem, stream, b1, b2 = _both(tmp_path, spec, 50, evals=evals)
    assert_same_build_files(mem, stream)
    # the spec exercised what it says: removal, truncation, upsampling, an empty train split, many batches
    assert b1.removed.height > 0 and b1.format.report.truncated > 0
    assert all(p.upsampled > 0 for p in b1.targets["budget"].parts)
    assert b1.targets["law-val"].split_counts()["train"] == 0
    assert b1.input.frame.height > 10 * 50
    # only light columns stayed in memory; the spill folder is gone
    assert not {"instruction", "output", "messages", "text"} & set(b2.base.columns)
    assert not {"instruction", "output", "messages"} & set(b2.targets["budget"].frame.columns)
    assert not list(tmp_path.glob(".cqia-build-spill-*"))


@pytest.mark.parametrize("batch_rows", [7, 100_000])
def test_batch_size_does_not_change_the_files(tmp_path, batch_rows):
    spec = _spec(builtin=["group.law"], subsets=[], mixtures=[SPEC["mixtures"][0]])
    mem, stream, _, _ = _both(tmp_path, spec, batch_rows)
    assert_same_build_files(mem, stream)


def test_filter_output_folder_as_input(tmp_path):
    from cqia_nb.filter.framework import PipelineConfig, run_pipeline
    from cqia_nb.filter.outputs import write_outputs

    res = run_pipeline(load_frame("bundled"), PipelineConfig.from_dict(
        {"steps": [{"filter": "length", "field": "output", "min_chars": 30}, {"filter": "exact_dedup"}]}))
    write_outputs(res, tmp_path / "filtered")
    spec = _spec(input=str(tmp_path / "filtered"))
    mem, stream, b1, b2 = _both(tmp_path, spec, 64)
    assert b1.input.kind == b2.input.kind == "filter-output"
    assert "From `steps.csv` of the filter output folder" in (stream / "README.md").read_text(encoding="utf-8")
    assert_same_build_files(mem, stream)


def test_parquet_shards_as_input(tmp_path):
    from conftest import parquet_shards

    parquet_shards(load_frame("bundled"), tmp_path / "shards", 3, row_group_size=40)
    spec = _spec(input=str(tmp_path / "shards"), subsets=[], mixtures=[SPEC["mixtures"][0]])
    mem, stream, b1, _ = _both(tmp_path, spec, 100)
    assert b1.input.kind == "parquet"
    assert_same_build_files(mem, stream)


def test_the_comparison_can_fail(tmp_path):
    spec = _spec(builtin=["config.xhs"], subsets=[], mixtures=[])
    mem, stream, _, _ = _both(tmp_path, spec, 50)
    f = stream / "jsonl" / "config.xhs" / "train.jsonl"
    f.write_bytes(f.read_bytes().replace(b'"split":"train"', b'"split":"trian"', 1))
    with pytest.raises(AssertionError, match="files differ"):
        assert_same_build_files(mem, stream)
    (stream / "extra.txt").write_text("x")
    with pytest.raises(AssertionError, match="different files"):
        assert_same_build_files(mem, stream)


def test_a_where_that_aggregates_is_refused(tmp_path):
    spec = _spec(subsets=[{"name": "above-mean", "where": "output_chars > AVG(output_chars)"}], mixtures=[])
    with pytest.raises(S.SpecError, match="aggregates over rows"):
        S.run_build_streaming(spec, spill_dir=tmp_path)
    assert not list(tmp_path.glob(".cqia-build-spill-*"))
    S.run_build(spec)  # in memory it means the whole input's mean


@pytest.mark.slow
def test_real_data_gives_the_same_files(tmp_path, real_data):
    """All 17,971 records, every built-in subset and group, the paper-like mixture; with the real
    benchmarks when present (contamination removal on)."""
    over = {"builtin": ["configs", "groups"], "input": str(real_data), "format": {"system": "你是一个助手。"}}
    if (REAL_BENCHMARKS / "README.md").is_file():
        over["contamination"] = {"benchmarks": str(REAL_BENCHMARKS), "remove": True}
    spec = _spec(**over)
    t = time.perf_counter()
    mem, stream, b1, _ = _both(tmp_path, spec, 4096)
    assert b1.input.frame.height == 17_971
    assert_same_build_files(mem, stream)
    assert time.perf_counter() - t < 600


SPEC_YAML = """\
name: cli-stream
seed: 3
builtin: [config.ruozhiba, group.law]
subsets:
  - {name: long, where: "output_chars > 100"}
mixtures:
  - name: m
    parts: [{subset: group.law, tokens: 2000}, {subset: long, tokens: 6000}]
    allow_upsample: true
"""


def test_cli_streaming_flag_and_setting_give_the_same_files(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_YAML, encoding="utf-8")
    calls = []
    real = S.run_build_streaming
    monkeypatch.setattr(cli.subsets, "run_build_streaming", lambda *a, **k: calls.append(k) or real(*a, **k))
    assert main(["build", "--config", str(spec), "--set", f"out_dir={tmp_path / 'mem'}"]) == 0
    assert main(["build", "--config", str(spec), "--streaming", "--set", f"out_dir={tmp_path / 'str'}"]) == 0
    assert main(["build", "--config", str(spec), "--set", "streaming=true", "--set", "batch_rows=50",
                 "--set", f"out_dir={tmp_path / 'str2'}"]) == 0
    assert len(calls) == 2 and calls[0]["spill_dir"] == tmp_path
    assert "batch_rows" not in calls[0] and calls[1]["batch_rows"] == 50
    out = capsys.readouterr().out.splitlines()
    n = len([p for p in (tmp_path / "mem").rglob("*") if p.is_file()])
    assert len(out) == 3 * n and out[:n] == [l.replace("/str/", "/mem/") for l in out[n:2 * n]]
    assert_same_build_files(tmp_path / "mem", tmp_path / "str")
    assert_same_build_files(tmp_path / "mem", tmp_path / "str2")
    assert not list(tmp_path.glob(".cqia-build-spill-*"))
    assert main(["build", "--config", str(spec), "--set", "streaming=maybe", "--set", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "`streaming` must be true, false or null" in capsys.readouterr().err
    assert main(["build", "--config", str(spec), "--set", "batch_rows=0", "--set", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "`batch_rows` must be a positive integer" in capsys.readouterr().err


def test_cli_streams_by_itself_above_the_threshold(tmp_path, capsys, monkeypatch):
    from conftest import parquet_shards

    parquet_shards(load_frame("bundled"), tmp_path / "shards", 2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_YAML, encoding="utf-8")
    calls = []
    real = S.run_build_streaming
    monkeypatch.setattr(cli.subsets, "run_build_streaming", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(cli, "STREAM_ABOVE_BYTES", 1000)  # the shards are larger than this
    args = ["build", "--config", str(spec), "--input", str(tmp_path / "shards")]
    assert main([*args, "--set", f"out_dir={tmp_path / 'auto'}"]) == 0
    assert len(calls) == 1 and "note: streaming (the input's parquet files exceed" in capsys.readouterr().err
    assert main([*args, "--no-streaming", "--set", f"out_dir={tmp_path / 'mem'}"]) == 0
    assert len(calls) == 1  # --no-streaming: in memory
    assert_same_build_files(tmp_path / "mem", tmp_path / "auto")
    monkeypatch.setattr(cli, "STREAM_ABOVE_BYTES", 1 << 40)
    assert main([*args, "--set", f"out_dir={tmp_path / 'small'}"]) == 0
    assert len(calls) == 1
