"""The Ray engine (issue 13): ``cqia-nb filter --engine ray`` on a real two-node Ray cluster (the
``ray_cluster`` fixture) gives the local run's outputs: the same kept records in the same order, the
same dropped records with the same reasons, the same steps table; also when a worker is killed in the
middle of a job. Every comparison is against ``run_pipeline`` on the same records."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import polars as pl
import pytest

import cqia_nb.filter as F
from cqia_nb import cli
from cqia_nb.filter.framework import AUDIT_COLUMNS, PipelineConfig, PipelineResult, StepConfig
from cqia_nb.filter.outputs import write_outputs
from cqia_nb.filter.ray_engine import RayEngineError, ray_connection, run_ray
from cqia_nb.filter.streaming import open_source

from conftest import assert_frames_identical, assert_same_output_files, load_frame, parquet_shards
import ray_filters
from ray_filters import EveryNth, KillOnce

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = ROOT / "recipes" / "filter-default.yaml"


def assert_same_result(local: PipelineResult, ray: PipelineResult) -> None:
    """Same kept ids in the same order, same dropped (record_id + reasons), same step counts; then
    the frames themselves, column for column."""
    assert ray.kept["record_id"].to_list() == local.kept["record_id"].to_list(), "kept records or their order differ"
    reasons = ["record_id", *AUDIT_COLUMNS]
    assert set(ray.dropped.select(reasons).rows()) == set(local.dropped.select(reasons).rows()), "dropped reasons differ"
    assert_frames_identical(ray.steps.drop("seconds"), local.steps.drop("seconds"), "steps")
    assert_frames_identical(ray.kept, local.kept, "kept")
    assert_frames_identical(ray.dropped, local.dropped, "dropped")  # also the order: by step, then input order


@pytest.fixture
def test_filters():
    """The helper filters of tests/ray_filters.py, registered for one test and pickled by value (Ray
    workers see the driver's working directory on their path, not tests/)."""
    ray_pickle = pytest.importorskip("ray.cloudpickle", reason="ray is not installed: pip install -e '.[ray]'")
    saved = dict(F.FILTERS)
    for cls in (KillOnce, EveryNth):
        F.register(cls)
    ray_pickle.register_pickle_by_value(ray_filters)
    try:
        yield
    finally:
        ray_pickle.unregister_pickle_by_value(ray_filters)
        F.FILTERS.clear()
        F.FILTERS.update(saved)


def test_cli_bundled_ray_equals_local(ray_cluster, tmp_path, capsys):
    frame = load_frame("bundled")
    recipe = PipelineConfig.from_yaml(DEFAULT_RECIPE)
    local = F.run_pipeline(frame, recipe)
    write_outputs(local, tmp_path / "local")
    rc = cli.main(["filter", "--config", str(DEFAULT_RECIPE), "--engine", "ray", "--address", ray_cluster.address,
                   "--set", "input=bundled", "--set", f"out_dir={tmp_path / 'ray'}"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ray: 2 node(s)" in out and out.strip().splitlines()[-1] == local.summary()
    assert_same_output_files(tmp_path / "local", tmp_path / "ray")
    ray = PipelineResult(pl.read_parquet(tmp_path / "ray" / "kept.parquet"),
                         pl.read_parquet(tmp_path / "ray" / "dropped.parquet"),
                         pl.read_csv(tmp_path / "ray" / "steps.csv", schema=F.STEPS_SCHEMA))
    assert_same_result(local, ray)
    assert local.dropped.height > 0 and set(local.dropped["filter"]) >= {"exact_dedup", "near_dedup"}


def test_worker_killed_mid_job(ray_cluster, tmp_path, test_filters):
    """SIGKILL of the worker running one map task (its first attempt only): Ray runs the task again
    and the outputs are those of the local run, no record lost or counted twice."""
    frame = load_frame("bundled")
    marker = tmp_path / "killed"
    recipe = PipelineConfig.from_yaml(DEFAULT_RECIPE)
    recipe.steps.insert(1, StepConfig("test_ray_kill_once", {"record_id": frame["record_id"][frame.height // 2],
                                                             "marker": str(marker), "spare_pid": os.getpid()}))
    local = F.run_pipeline(frame, recipe)  # the kill spares this process
    assert not marker.exists()
    source = open_source(parquet_shards(frame, tmp_path / "shards", 3))  # Ray reads the parquet shards itself
    res = run_ray(source, recipe, address=ray_cluster.address)
    killed = int(marker.read_text())
    assert killed != os.getpid() and killed not in ray_cluster.processes()  # a worker of the cluster, dead
    assert res.nodes == 2 and res.result.reconciles()
    assert_same_result(local, res.result)


def test_step_without_stream_protocol_runs_on_driver(ray_cluster, test_filters):
    frame = load_frame("bundled")
    recipe = PipelineConfig.from_dict({"name": "mixed", "steps": [
        {"filter": "traditional", "convert": True}, {"filter": "url"}, {"filter": "test_ray_every_nth", "n": 7},
        {"filter": "exact_dedup"}]})
    res = run_ray(frame, recipe, address=ray_cluster.address)
    assert res.in_driver_steps == ["test_ray_every_nth"]
    assert_same_result(F.run_pipeline(frame, recipe), res.result)


def test_answer_rules_use_keys_from_the_stage_before(ray_cluster, monkeypatch):
    """The grouped answer rules decide from keys the stage before them computed (no pass of their
    own) and drop what the local run drops, on noisy records of their kinds."""
    from cqia_nb.filter import ray_engine
    from cqia_nb.filter.noise import NoiseConfig, inject_noise

    kinds = ("short_answer", "placeholder", "repeated_tail")
    frame = inject_noise(load_frame("bundled"), NoiseConfig(kinds=kinds, counts={k: 8 for k in kinds}, seed=3,
                                                            shuffle=True)).drop("noise_kind", "noise_of", "noise_detail")
    # placeholder_answer before short_answer, so that each drops its own kind; repeated_tail is per record
    recipe = PipelineConfig.from_dict({"name": "answers", "steps": [
        {"filter": f} for f in ("url", "placeholder_answer", "short_answer", "repeated_tail", "exact_dedup")]})
    given: dict[str, bool] = {}
    decide = ray_engine._decide

    def spy(ds, flt, *args, **kwargs):
        given[flt.name] = (args[3] if len(args) > 3 else kwargs.get("keys")) is not None
        return decide(ds, flt, *args, **kwargs)

    monkeypatch.setattr(ray_engine, "_decide", spy)
    res = run_ray(frame, recipe, address=ray_cluster.address)
    assert given == {"placeholder_answer": True, "short_answer": True, "exact_dedup": False}
    local = F.run_pipeline(frame, recipe)
    assert_same_result(local, res.result)
    dropped = dict(local.dropped["filter"].value_counts().rows())
    assert dropped.get("placeholder_answer", 0) >= 8 and dropped.get("short_answer", 0) >= 8


def test_a_decided_step_takes_the_per_record_steps_after_it():
    """On Ray a step that needs every record is applied in one pass with the per-record steps that
    follow it (the other engines' stages, ``segments``, keep them apart)."""
    from cqia_nb.filter.framework import segments
    from cqia_nb.filter.ray_engine import _stages

    built = PipelineConfig.from_yaml(DEFAULT_RECIPE).build()
    names = [[built[k][0] for k in st] for st in _stages(built)]
    assert names[1:] == [["short_answer"], ["placeholder_answer", "repeated_tail"], ["exact_dedup"], ["near_dedup"]]
    assert sum(names, []) == [n for n, _ in built] and len(segments(built)) == len(names) + 1
    mixed = PipelineConfig.from_dict({"name": "m", "steps": [
        {"filter": "exact_dedup"}, {"filter": "url"}, {"filter": "email"}, {"filter": "short_answer"},
        {"filter": "near_dedup"}, {"filter": "html"}]}).build()
    assert _stages(mixed) == [[0, 1, 2], [3], [4, 5]]


def test_block_bytes_balance_the_workers():
    """Parquet is read in ~4 blocks a CPU, within Ray's default block size and 8 MiB."""
    from cqia_nb.filter.ray_engine import BLOCK_BYTES_MAX, BLOCK_BYTES_MIN, _block_bytes

    assert _block_bytes(92_000_000, 2) == 2 * 92_000_000 // 8  # the 100k-record scale input: ~23 MB blocks
    assert _block_bytes(1_000, 2) == BLOCK_BYTES_MIN
    assert _block_bytes(10**12, 64) == BLOCK_BYTES_MAX
    assert _block_bytes(92_000_000, 0) == _block_bytes(92_000_000, 1)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_data_ray_equals_local(ray_cluster, real_data, tmp_path):
    frame = load_frame(str(real_data))
    recipe = PipelineConfig.from_yaml(DEFAULT_RECIPE)
    local = F.run_pipeline(frame, recipe)
    res = run_ray(open_source(parquet_shards(frame, tmp_path / "shards", 4)), recipe, address=ray_cluster.address)
    assert_same_result(local, res.result)
    assert res.result.dropped.height > 250  # the real copy has exact and near duplicates


# ----------------------------------------------------------------------------- errors (no cluster)

@pytest.mark.parametrize("args,expected", [
    (["--address", "127.0.0.1:1"], "address: a Ray cluster is for engine 'ray'; add --engine ray"),
    (["--engine", "ray", "--streaming"], "streaming is the local engine's way to bound memory"),
])
def test_cli_engine_flag_errors(tmp_path, capsys, args, expected):
    rc = cli.main(["filter", "--config", str(DEFAULT_RECIPE), *args, "--set", f"out_dir={tmp_path / 'out'}"])
    assert rc == 2 and expected in capsys.readouterr().err


def test_no_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RayEngineError, match=r"ray is not installed .*pip install 'cqia-notebooks\[ray\]'"):
        with ray_connection():
            pass


def test_no_cluster_at_address_fails_fast():
    pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
    from ray_cluster import free_port

    with pytest.raises(RayEngineError, match=r"no Ray cluster answers at 127\.0\.0\.1:\d+ .*`ray start --head"):
        with ray_connection(f"127.0.0.1:{free_port()}"):
            pass
