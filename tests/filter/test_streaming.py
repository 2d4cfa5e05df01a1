"""The streaming engine (issue 13): the outputs of ``run_streaming`` are those of
``write_outputs(run_pipeline(...))`` — same kept records in the same order, same dropped records
with the same reasons, same steps table — on the bundled and the real data, for any batch size."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest

import cqia_nb.filter as F
from cqia_nb import cli
from cqia_nb.filter import streaming
from cqia_nb.filter.framework import Filter, register
from cqia_nb.filter.outputs import write_outputs
from cqia_nb.filter.streaming import Source, open_source, run_streaming

from conftest import assert_frames_identical, assert_same_output_files, load_frame, parquet_shards, sigkill_when

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = ROOT / "recipes" / "filter-default.yaml"


@pytest.fixture(scope="module")
def recipe() -> F.PipelineConfig:
    return F.PipelineConfig.from_yaml(DEFAULT_RECIPE)


@pytest.mark.parametrize("batch_rows", [50, None])
def test_bundled_streaming_equals_in_memory(tmp_path, recipe, batch_rows):
    frame = load_frame("bundled")
    write_outputs(F.run_pipeline(frame, recipe), tmp_path / "mem")
    res = run_streaming(Source(frame=frame), recipe, tmp_path / "stream", batch_rows=batch_rows)
    assert_same_output_files(tmp_path / "mem", tmp_path / "stream")
    assert res.n_in == frame.height and res.n_kept + res.n_dropped == frame.height
    assert res.n_dropped > 0 and res.in_memory_steps == []
    # the keys are what grows with the input: every step that sees all records reports its size
    assert set(res.index_bytes) == {"short_answer", "placeholder_answer", "exact_dedup", "near_dedup"}
    assert sorted(p.name for p in (tmp_path / "stream").iterdir()) == sorted(res.paths)  # spill removed


@pytest.mark.slow  # test_killed_cli_run_resumes checks the real data through the CLI in the default suite
def test_real_data_from_parquet_shards(tmp_path, recipe, real_data):
    frame = load_frame(str(real_data))
    write_outputs(F.run_pipeline(frame, recipe), tmp_path / "mem")
    src = open_source(parquet_shards(frame, tmp_path / "shards", 3, row_group_size=97))
    assert len(src.files) == 3
    res = run_streaming(src, recipe, tmp_path / "stream", batch_rows=1000, spill_dir=tmp_path)
    assert_same_output_files(tmp_path / "mem", tmp_path / "stream")
    assert res.n_dropped > 250  # the real copy has exact and near duplicates
    assert res.index_bytes["near_dedup"] < 200  # bytes a record on disk, see README


@register
@dataclasses.dataclass
class _AboveMedianLength(Filter):
    """Test-only: needs every record (the median) and has no stream protocol."""

    name: ClassVar[str] = "test_above_median_length"
    field: str = "output"

    def required_columns(self) -> tuple[str, ...]:
        return (self.field,)

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        n = frame[self.field].str.len_chars().cast(pl.Float64)
        return n / n.median()

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= 3.0


def test_step_without_protocol_reads_its_records_and_says_so(tmp_path):
    frame = load_frame("bundled")
    config = F.PipelineConfig.from_dict({"steps": [{"filter": "url"}, {"filter": "test_above_median_length"},
                                                   {"filter": "exact_dedup"}]})
    write_outputs(F.run_pipeline(frame, config), tmp_path / "mem")
    res = run_streaming(Source(frame=frame), config, tmp_path / "stream", batch_rows=64)
    assert_same_output_files(tmp_path / "mem", tmp_path / "stream")
    assert res.in_memory_steps == ["test_above_median_length"]
    assert res.steps["dropped"][1] > 0


def test_cli_streams_parquet_shards_when_asked_or_large(tmp_path, monkeypatch, capsys):
    frame = load_frame("bundled")
    shards = parquet_shards(frame, tmp_path / "shards", 2, row_group_size=97)
    args = ["filter", "--config", str(DEFAULT_RECIPE), "--set", f"input={shards}"]
    assert cli.main([*args, "--set", f"out_dir={tmp_path / 'mem'}"]) == 0
    assert "streaming:" not in capsys.readouterr().out
    assert cli.main([*args, "--set", f"out_dir={tmp_path / 'flag'}", "--streaming"]) == 0
    assert "near_dedup kept" in capsys.readouterr().out
    monkeypatch.setattr(cli, "STREAM_ABOVE_BYTES", 1000)  # the shards are larger: streams by itself
    assert cli.main([*args, "--set", f"out_dir={tmp_path / 'auto'}"]) == 0
    assert "near_dedup kept" in capsys.readouterr().out
    assert cli.main([*args, "--set", f"out_dir={tmp_path / 'off'}", "--no-streaming"]) == 0
    assert "streaming:" not in capsys.readouterr().out
    for d in ("flag", "auto", "off"):
        assert_same_output_files(tmp_path / "mem", tmp_path / d)


def test_streaming_needs_record_ids_for_dedup(tmp_path, recipe):
    frame = load_frame("bundled").drop("record_id")
    with pytest.raises(ValueError, match="record_id"):
        run_streaming(Source(frame=frame), recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parquet_source_reads_row_groups_and_drops_audit_columns(tmp_path):
    frame = load_frame("bundled").head(300)
    frame.with_columns(pl.lit(1).alias("step")).write_parquet(tmp_path / "x.parquet", row_group_size=100)
    src = open_source(tmp_path / "x.parquet")
    parts = list(src.batches(rows=64))
    assert max(p.height for p in parts) <= 64 and sum(p.height for p in parts) == 300
    assert_frames_identical(pl.concat(parts), frame, "batches")
    assert src.empty().columns == frame.columns
    assert streaming.parquet_files(tmp_path / "nothing-here") is None


def test_a_stopped_run_resumes_after_its_finished_stages(tmp_path, recipe, monkeypatch):
    frame = load_frame("bundled")
    write_outputs(F.run_pipeline(frame, recipe), tmp_path / "mem")
    near = type(dict(recipe.build())["near_dedup"])

    def boom(self, keys, reread=None):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # the last stage fails: the run stops, its finished stages stay
        m.setattr(near, "stream_decide", boom)
        with pytest.raises(OSError):
            run_streaming(Source(frame=frame), recipe, tmp_path / "stream", batch_rows=100)
    spill = [p for p in (tmp_path / "stream").iterdir() if p.name.startswith(".cqia-spill.")]
    assert len(spill) == 1 and len(list(spill[0].glob("stage-*.json"))) == len(F.framework.segments(recipe.build())) - 1
    (spill[0] / "stage-0005.parquet").write_bytes(b"half written")  # what a kill leaves mid-stage
    calls = []
    url = type(dict(recipe.build())["url"])
    real_measure = url.measure
    monkeypatch.setattr(url, "measure", lambda self, f: calls.append(1) or real_measure(self, f))
    res = run_streaming(Source(frame=frame), recipe, tmp_path / "stream", batch_rows=100)
    assert res.resumed == len(F.framework.segments(recipe.build())) - 1 and calls == []  # stage 0 not run again
    assert_same_output_files(tmp_path / "mem", tmp_path / "stream")
    assert not any(p.name.startswith(".cqia-spill.") for p in (tmp_path / "stream").iterdir())
    # another recipe on the same input does not take the first one's stages
    other = F.PipelineConfig.from_dict({"steps": [{"filter": "url"}, {"filter": "exact_dedup"}]})
    assert run_streaming(Source(frame=frame), other, tmp_path / "other").resumed == 0


@pytest.mark.realdata
def test_killed_cli_run_resumes(tmp_path, real_data):
    shards = parquet_shards(load_frame(str(real_data)), tmp_path / "shards", 2, row_group_size=97)
    cmd = [sys.executable, "-m", "cqia_nb.cli", "filter", "--config", str(DEFAULT_RECIPE), "--set", f"input={shards}",
           "--set", f"out_dir={tmp_path / 'out'}", "--streaming"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sigkill_when(proc, lambda: any((tmp_path / "out").glob(".cqia-spill.*/stage-0001.json")))
    assert not (tmp_path / "out" / "kept.parquet").exists()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed after the" in done.stdout
    assert cli.main(["filter", "--config", str(DEFAULT_RECIPE), "--set", f"input={shards}",
                     "--set", f"out_dir={tmp_path / 'mem'}", "--no-streaming"]) == 0
    assert_same_output_files(tmp_path / "mem", tmp_path / "out")


def test_near_dedup_buckets_grouped_elsewhere_decide_the_same(recipe):
    """A cluster engine groups the LSH buckets itself (``band_rows`` -> group by -> ``bucket_pairs``)
    and hands the candidate pairs to ``stream_decide``: the same records are dropped."""
    from cqia_nb.filter.dedup import band_rows, bucket_pairs
    from cqia_nb.filter.framework import decisions

    frame = load_frame("bundled")
    flt = dict(recipe.build())["near_dedup"]
    bands = flt.lsh_params[0]
    keys = pl.concat([flt.stream_keys(frame.slice(o, 100)) for o in range(0, frame.height, 100)])
    rows = band_rows(keys, bands)
    buckets = rows.group_by(["_band", "_bh"])
    candidates = pl.concat([bucket_pairs(g) for _, g in buckets])
    assert candidates.height > 0
    # any partition of whole buckets gives the same pairs as one bucket at a time
    parts = rows.with_columns((pl.col("_bh").hash(0) % 7).alias("_part")).partition_by("_part")
    by_part = pl.concat([bucket_pairs(p) for p in parts]).unique().sort("_ha", "_hb")
    assert by_part.equals(candidates.unique().sort("_ha", "_hb"))
    assert bucket_pairs(rows).equals(by_part)
    batches = lambda: (frame.slice(o, 100) for o in range(0, frame.height, 100))  # noqa: E731
    alone = decisions(flt, keys, batches)
    assert alone.height > 0
    assert decisions(flt, keys.drop([f"_b{b}" for b in range(bands)]), batches, candidates=candidates).equals(alone)
    # without the buckets' pairs nothing is a near duplicate: the candidates are what decides
    none = candidates.clear()
    assert decisions(flt, keys, batches, candidates=none).height < alone.height
