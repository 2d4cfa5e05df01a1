"""The subset sweep (cqia_nb.eval.sweep): recipe checks, equal token budgets, the held-out loss,
the statistics (intervals, best, within noise, seed vs between spread), the results store, resuming
(in process, and after a SIGKILL of the command), and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import sigkill_when

from cqia_nb.eval import sweep as S
from cqia_nb.eval.results import read_results, validate_rows

ROOT = Path(__file__).resolve().parents[2]
TINY_RECIPE = ROOT / "recipes" / "sweep-cpu-tiny.yaml"
#: a sweep of seconds: two small groups, two seeds, a tiny base and budget, one question per benchmark subject
FAST = ["subsets=[group.nlp_tasks, group.human_value]", "seeds=[0, 1]", "budget_tokens=500", "base.steps=4",
        "train={tiny_vocab_size: 600, tiny_hidden_size: 32, max_length: 96, per_device_train_batch_size: 4}",
        "eval.mc_limit=1", "eval.belle_limit=2", "eval.max_new_tokens=4", "eval.probes=1"]


def fast_config(*more: str) -> S.SweepConfig:
    return S.SweepConfig.from_yaml(TINY_RECIPE, [*FAST, *more])


# ----------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("over, match", [
    (["seedz=3"], r"unknown key\(s\) 'seedz' \(did you mean 'seeds'\?\)"),
    (["subsets=[group.exams]"], "a list of at least two subset names"),
    (["subsets=everything"], "'groups', 'configs' or a list"),
    (["subsets=[group.exams, group.exams]"], "names repeat"),
    (["seeds=[1, 1]"], "seeds repeat"),
    (["seeds=[-1, 2]"], "non-negative integers"),
    (["budget_tokens=0"], "budget_tokens: must be a positive integer"),
    (["validation=0"], r"validation: the held-out share of every subset, in \(0, 1\)"),
    (["train={seed: 3}"], r"\['seed'\] are set by the sweep"),
    (["base.text=html"], "base.text: 'plain' or 'chat'"),
    (["base.stepz=3"], r"base: unknown key\(s\) 'stepz'"),
    (["eval.mc=[mmlu]"], r"eval.mc: unknown benchmark\(s\) \['mmlu'\]"),
    (["eval.heldout=false", "eval.benchmarks=null"], "nothing to evaluate"),
    (["eval.repetition_penalty=0.5"], "repetition_penalty"),
    (["profile=no-such"], "profile: PROFILE 'no-such': no such profile"),
    (["train={epochs: 2}"], "train: .*num_train_epochs"),
])
def test_bad_settings_fail_before_any_work(over, match):
    with pytest.raises(S.SweepError, match=match):
        S.SweepConfig.from_yaml(TINY_RECIPE, over)


def test_overrides_reach_nested_settings_and_a_count_of_seeds():
    c = S.SweepConfig.from_yaml(TINY_RECIPE, ["seeds=4", "base.steps=7", "eval.judge=overlap", "eval.shots=1"])
    assert c.seeds == (0, 1, 2, 3) and c.base.steps == 7 and c.eval.shots == 1
    assert c.resolve(c.eval.benchmarks) == (ROOT / "data" / "benchmarks-mini").resolve() or \
        c.resolve(c.eval.benchmarks).resolve() == (ROOT / "data" / "benchmarks-mini").resolve()
    assert S.sweep_recipe("cpu-tiny") == TINY_RECIPE
    with pytest.raises(FileNotFoundError, match="cpu-tiny"):
        S.sweep_recipe("no-such-sweep")


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("sweep-*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load_and_state_cost_for_every_profile(path):
    c = S.SweepConfig.from_yaml(path)
    assert c.train_config().max_length >= 8            # the profile resolves to a training recipe
    assert c.profile in c.expected, "the recipe states time and memory for its own profile"
    for name in c.expected:
        cost = S.expected_cost(c, name)
        assert cost["s_per_run"] > 0 and cost["peak_memory_gb"] and cost["hardware"] and cost["source"]
    table = S.cost_table(c)
    assert table.height == len(c.expected)


@pytest.mark.parametrize("gpu", ["yi-6b-qlora", "qwen2.5-7b-qlora"])
def test_one_setting_moves_the_sweep_to_a_gpu_recipe(gpu):
    c = S.SweepConfig.from_yaml(TINY_RECIPE, [f"profile={gpu}"])
    tc = c.train_config(seed=1, max_steps=-1, epochs=1, data="bundled", output_dir="runs/x")
    assert tc.method == "qlora" and tc.base_model != "tiny" and tc.seed == 1 and tc.max_steps == -1
    cost = S.expected_cost(c)
    assert cost["hardware"].endswith("GPU") and cost["train_s_per_run"] == pytest.approx(
        c.budget_tokens / c.expected[gpu]["tokens_per_s"])


# ----------------------------------------------------------------------------------- data and budget

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The fast sweep's data and base, built once for the module (the bundled set, filtered here)."""
    out = tmp_path_factory.mktemp("sweep")
    cfg = fast_config()
    data = S.prepare_data(cfg, out, source="bundled", filter_dir=out / "no-filter-output")
    base = S.prepare_base(cfg, data)
    return cfg, data, base, out


def test_subsets_are_split_once_and_written(prepared):
    cfg, data, base, out = prepared
    assert data.names == ["group.nlp_tasks", "group.human_value"]
    train_users = {c[0]["content"] for s in data.names for c in data.train[s]}
    val_users = {c[0]["content"] for s in data.names for c in data.validation[s]}
    assert train_users and val_users and not train_users & val_users     # no held-out prompt is trained on
    for s in data.names:
        n = len(data.validation[s]) / (len(data.train[s]) + len(data.validation[s]))
        assert 0.15 < n < 0.35                                              # validation: 0.25 of every subset
        assert (out / "data" / s / "train.jsonl").read_text(encoding="utf-8").count("\n") == len(data.train[s])
    # the base pretrained on the train split only, as plain text (no chat markers)
    texts = S.pretrain_texts(data.pretrain)
    assert len(texts) == data.pretrain.height and not any("<|im_start|>" in t for t in texts)
    assert all(c in " ".join(texts) for c in ("\n",))
    assert Path(base).is_dir() and (Path(base) / "model.safetensors").is_file()


def test_groups_leave_out_small_subsets_and_say_why(tmp_path):
    cfg = fast_config("subsets=groups", "min_train_records=40")
    data = S.prepare_data(cfg, tmp_path, source="bundled", filter_dir=tmp_path / "none")
    assert len(data.names) >= 2 and all(len(data.train[s]) >= 40 for s in data.names)
    assert "group.law" in data.skipped and "min_train_records 40" in data.skipped["group.law"]
    with pytest.raises(S.SweepError, match="unknown or empty"):
        S.prepare_data(fast_config("subsets=[group.exams, group.atlantis]"), tmp_path, source="bundled",
                       filter_dir=tmp_path / "none")


def test_every_run_gets_the_same_token_budget(prepared):
    from cqia_nb.train.data import encode_conversation, load_tokenizer

    cfg, data, base, _ = prepared
    tok = load_tokenizer(base)
    budget, max_len = 6000, 96
    sizes = {}
    for s in data.names:
        picked, total = S.budget_sample(data.train[s], tok, budget, seed=0, max_length=max_len)
        lengths = [len(encode_conversation(tok, c, max_len)["input_ids"]) for c in picked]
        assert total == sum(lengths) <= budget
        assert budget - total < min(len(encode_conversation(tok, c, max_len)["input_ids"]) for c in data.train[s])
        sizes[s] = (len(picked), total, sum(len(encode_conversation(tok, c, max_len)["input_ids"])
                                            for c in data.train[s]))
        again, _ = S.budget_sample(data.train[s], tok, budget, seed=0, max_length=max_len)
        other, _ = S.budget_sample(data.train[s], tok, budget, seed=1, max_length=max_len)
        assert again == picked and other != picked                        # seeded order
    # nlp_tasks' short answers: the subset is repeated to fill the budget
    n, total, subset_tokens = sizes["group.nlp_tasks"]
    assert total > subset_tokens and n > len(data.train["group.nlp_tasks"])


def test_heldout_loss_is_the_training_loss_and_does_not_depend_on_batching(prepared):
    import torch

    from cqia_nb.eval.heldout import example_losses, heldout_loss
    from cqia_nb.models.loading import load_for_inference
    from cqia_nb.train.data import encode_conversation

    _, data, base, _ = prepared
    model, tok = load_for_inference(base)
    convs = data.validation["group.human_value"][:5]
    one = encode_conversation(tok, convs[0], 96)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([one["input_ids"]]), labels=torch.tensor([one["labels"]])).loss.item()
    s, n = example_losses(model, tok, convs[:1], max_length=96)[0]
    assert s / n == pytest.approx(ref, rel=1e-5)
    a = heldout_loss(model, tok, convs, max_length=96, batch_size=1)
    b = heldout_loss(model, tok, convs, max_length=96, batch_size=4)
    assert a.loss == pytest.approx(b.loss, rel=1e-5) and a.tokens == b.tokens and a.examples == 5
    per = example_losses(model, tok, convs, max_length=96)
    assert a.loss == pytest.approx(sum(x for x, _ in per) / sum(k for _, k in per))  # token-weighted


# ------------------------------------------------------------------------------------ statistics

def _fake_result(losses: dict[str, dict[int, dict[str, float]]], accuracy: float = 0.25) -> S.SweepResult:
    """A SweepResult from held-out losses[train_subset][seed][eval_subset], no training."""
    names = list(losses)
    cfg = S.SweepConfig.from_yaml(TINY_RECIPE, [f"subsets={json.dumps(names)}", "seeds=[0, 1, 2]"])
    val = {s: [[{"role": "user", "content": "问"}, {"role": "assistant", "content": "答" * (3 + i)}]]
           for i, s in enumerate(names)}
    data = S.SweepData(train=val, validation=val, pretrain=pl.DataFrame(), origin="test")
    base = {"heldout": {s: {"loss": 5.0, "tokens": 10, "examples": 1} for s in names},
            "probes": [{"subset": s, "prompt": "问", "reference": "答", "answer": "呃"} for s in names], "belle": None}
    runs = []
    for tr, by_seed in losses.items():
        for seed, ev in by_seed.items():
            runs.append({"run": f"{tr}/seed{seed}", "train_subset": tr, "seed": seed,
                         "train": {"steps": 3, "conversations": 9, "tokens": 1000, "epochs": 1.5, "seconds": 1.0},
                         "heldout": {e: {"loss": v, "tokens": 10, "examples": 1} for e, v in ev.items()},
                         "mc": {"ceval": {"accuracy": accuracy, "ci_low": 0.1, "ci_high": 0.4, "n": 18}},
                         "belle": {"metric": "overlap_f1", "value": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n": 20,
                                   "answer_chars": 10.0 + len(tr)},
                         "probes": [{**p, "answer": tr[:2] * (seed + 1)} for p in base["probes"]],
                         "eval_seconds": 0.5, "wall_seconds": 1.5})
    return S.SweepResult(cfg, Path("."), data, "tiny-pretrained", base, runs)


def test_matrix_ranking_and_noise_on_known_numbers():
    # a and b tuned on themselves lower their own loss far beyond the seed noise; c and d are
    # indistinguishable from each other (same means, overlapping seeds)
    noise = {0: -0.01, 1: 0.0, 2: 0.01}
    losses = {
        "a": {s: {"a": 3.0 + n, "b": 4.5 + n} for s, n in noise.items()},
        "b": {s: {"a": 4.4 + n, "b": 3.5 + n} for s, n in noise.items()},
        "c": {s: {"a": 4.0 + 5 * n, "b": 4.0 - 5 * n} for s, n in noise.items()},
        "d": {s: {"a": 4.01 + 5 * n, "b": 4.0 + 5 * n} for s, n in noise.items()},
    }
    res = _fake_result(losses)
    m = res.matrix()
    cell = {(r["train_subset"], r["eval_subset"]): r for r in m.iter_rows(named=True)}
    assert cell["a", "a"]["best"] and cell["b", "b"]["best"]
    assert cell["a", "a"]["change"] == pytest.approx(-2.0) and cell["a", "a"]["seeds"] == 3
    lo, hi = cell["a", "a"]["ci_low"], cell["a", "a"]["ci_high"]
    assert lo < 3.0 < hi and hi - lo == pytest.approx(2 * 4.302653 * 0.01 / np.sqrt(3), rel=1e-4)
    assert not cell["c", "a"]["within_noise"] and not cell["b", "a"]["within_noise"]
    # the ranking by the mean over held-out splits: c and d overlap each other, not the best
    r = res.ranking("heldout:mean")
    assert r["rank"].to_list() == [1, 2, 3, 4]
    assert r["train_subset"].to_list()[:2] == ["a", "b"] or r["train_subset"].to_list()[:2] == ["b", "a"]
    row = {x["train_subset"]: x for x in r.iter_rows(named=True)}
    assert "d" in row["c"]["within_noise_of"] and "c" in row["d"]["within_noise_of"]
    assert row["a"]["within_noise_of"] == "" or row["a"]["within_noise_of"] == "b"
    # seed spread vs between-subset spread
    nz = {x["metric"]: x for x in res.noise().iter_rows(named=True)}
    own = nz["heldout:own_drop"]
    assert own["seed_sd"] == pytest.approx(0.01, rel=1e-6) and own["between_over_seed"] > 10
    assert res.ranking("heldout:own_drop")["train_subset"].to_list()[:2] in (["a", "b"], ["b", "a"])  # high first
    assert nz["mc:ceval"]["between_sd"] == 0 and nz["mc:ceval"]["separable_pairs"] == "0/6"
    # drops of each run on its own subset
    d = res.drops()
    assert d.filter(pl.col("train_subset") == "a")["drop"].to_list() == pytest.approx([2.01, 2.0, 1.99])
    # answers: base and one column per training subset, first seed
    a = res.answers()
    assert a.columns == ["subset", "prompt", "reference", "base", "a", "b", "c", "d"] and a["a"][0] == "a"
    style = res.answer_style()
    assert style["model"].to_list() == ["base", "a", "b", "c", "d"]


def test_one_seed_has_no_interval_and_is_never_called_distinguishable():
    res = _fake_result({"a": {0: {"a": 3.0, "b": 4.0}}, "b": {0: {"a": 4.0, "b": 3.0}}})
    m = res.matrix()
    assert m["ci_low"].null_count() == m.height and m["within_noise"].all()
    assert res.noise().filter(pl.col("metric") == "heldout:own_drop")["separable_pairs"][0] == "0/1"


def test_results_rows_fit_the_store_with_intervals():
    res = _fake_result({"a": {s: {"a": 3.0 + s / 10, "b": 4.0} for s in range(3)},
                        "b": {s: {"a": 4.0, "b": 3.0 - s / 10} for s in range(3)}})
    rows = validate_rows(res.results_rows())
    held = [r for r in rows if r["benchmark"] == S.BENCHMARK]
    assert {r["subset"] for r in held} == {"a", "b", "mean", "own_drop"}
    drop = next(r for r in held if r["subset"] == "own_drop" and r["model"] == "sweep-cpu-tiny/a")
    assert drop["metric"] == "loss_drop" and drop["value"] == pytest.approx(1.9)
    one = next(r for r in held if r["model"] == "sweep-cpu-tiny/a" and r["subset"] == "a")
    assert one["n"] == 3 and one["ci_low"] < one["value"] < one["ci_high"] and one["train_subset"] == "a"
    assert any(r["benchmark"] == "ceval" and r["metric"] == "accuracy" and r["shots"] == 0 for r in rows)
    assert any(r["benchmark"] == "belle_eval" and r["metric"] == "overlap_f1" for r in rows)
    # a t interval around an accuracy near 0 is clipped to [0, 1] (the store refuses a negative fraction)
    low = _fake_result({"a": {s: {"a": 3.0, "b": 4.0} for s in range(3)}, "b": {s: {"a": 4.0, "b": 3.0} for s in range(3)}})
    for i, r in enumerate(low.runs):
        r["mc"]["ceval"]["accuracy"] = [0.0, 0.02, 0.0][i % 3]
    acc = [r for r in validate_rows(low.results_rows()) if r["benchmark"] == "ceval"]
    assert acc and all(r["ci_low"] == 0.0 and r["ci_high"] > r["value"] for r in acc)


# ----------------------------------------------------------------------------- running and resuming

def test_sweep_runs_resumes_and_reruns_only_what_changed(prepared, tmp_path):
    cfg, data, base, _ = prepared
    out = tmp_path / "sweep"
    first = S.run_sweep(cfg, out, data=data, base=base, log=None, stop_after=1)
    assert first.trained == ["group.nlp_tasks/seed0"] and len(first.pending) == 3 and not first.skipped
    done = (out / "runs" / "group.nlp_tasks" / "seed0" / S.RESULT_FILE).read_text(encoding="utf-8")
    res = S.run_sweep(cfg, out, data=data, base=base, log=None)
    assert res.skipped == ["group.nlp_tasks/seed0"] and len(res.trained) == 3 and not res.pending
    assert (out / "runs" / "group.nlp_tasks" / "seed0" / S.RESULT_FILE).read_text(encoding="utf-8") == done
    # every run: the budget, a loss on every held-out split, the benchmarks, the probes
    for r in res.runs:
        assert 0 < r["train"]["tokens"] <= cfg.budget_tokens and r["train"]["steps"] >= 1
        assert set(r["heldout"]) == set(data.names)
        assert set(r["mc"]) == {"ceval", "cmmlu", "safetybench"} and r["belle"]["n"] == 2
        assert len(r["probes"]) == len(data.names)
    assert res.matrix().height == 4 and res.ranking().height == 2
    stored = read_results(res.store)
    assert res.store == out / "results-mini.jsonl"                     # the mini benchmarks' own store
    assert {"sweep-cpu-tiny/group.nlp_tasks", "sweep-cpu-tiny/base",
            "sweep-cpu-tiny/group.nlp_tasks/seed1"} <= set(stored["model"].to_list())
    agg = stored.filter((pl.col("model") == "sweep-cpu-tiny/group.human_value") & (pl.col("subset") == "own_drop"))
    assert agg.height == 1 and agg["n"][0] == 2 and agg["ci_low"][0] is not None
    # nothing left: a third call trains nothing
    again = S.run_sweep(cfg, out, data=data, base=base, log=None)
    assert again.trained == [] and len(again.skipped) == 4
    # a changed budget changes every run's fingerprint: all are run again
    changed = S.SweepConfig.from_yaml(TINY_RECIPE, [*FAST, "budget_tokens=400"])
    redo = S.run_sweep(changed, out, data=data, base=base, log=None, stop_after=1)
    assert redo.trained == ["group.nlp_tasks/seed0"] and not redo.skipped


@pytest.mark.slow
def test_a_killed_sweep_continues_with_the_runs_it_had_not_finished(prepared, tmp_path):
    """SIGKILL the `cqia-nb sweep` command after its first finished run (training slowed down so the
    kill lands mid-sweep), run the command again, and compare with an uninterrupted sweep."""
    cfg, data, base, _ = prepared
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "cqia_nb.cli", "sweep", "--config", str(TINY_RECIPE), "--out", str(out),
            "--input", "bundled", "--filter-dir", str(tmp_path / "none"), *sum((["--set", s] for s in FAST), [])]
    env = {**os.environ, "CQIA_TRAIN_STEP_DELAY_S": "0.5"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "runs" / "group.nlp_tasks" / "seed0" / S.RESULT_FILE
    sigkill_when(proc, first.is_file)
    finished = sorted(p.parent.name + "/" + p.parent.parent.name for p in (out / "runs").glob("*/seed*/" + S.RESULT_FILE))
    assert 1 <= len(finished) < 4                                    # killed mid-sweep
    kept = first.read_text(encoding="utf-8")
    res = S.run_sweep(cfg, out, data=data, base=base, log=None)
    assert "group.nlp_tasks/seed0" in res.skipped and len(res.skipped) + len(res.trained) == 4 and res.trained
    assert first.read_text(encoding="utf-8") == kept
    ref = S.run_sweep(cfg, tmp_path / "uninterrupted", data=data, base=base, log=None)
    a = res.heldout().sort("train_subset", "seed", "eval_subset")["loss"].to_numpy()
    b = ref.heldout().sort("train_subset", "seed", "eval_subset")["loss"].to_numpy()
    assert np.allclose(a, b, atol=1e-5), (a, b)                      # the same numbers as without the kill


def test_cqia_nb_sweep_subcommand(prepared, tmp_path, capsys):
    """--config by name, --set overrides, --stop-after, then the same command continues the sweep."""
    from cqia_nb.cli import main

    out = tmp_path / "cli"
    args = ["sweep", "--config", "cpu-tiny", "--out", str(out), "--input", "bundled",
            "--filter-dir", str(tmp_path / "none"), "--no-store", *sum((["--set", s] for s in FAST), [])]
    assert main([*args, "--stop-after", "1"]) == 0
    text = capsys.readouterr().out
    assert "3 runs pending" in text and "## ranking" not in text
    code = main(args)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "## ranking" in text and "## seed-to-seed spread" in text and "3 runs trained, 1 finished before" in text
    assert not (out / "results-mini.jsonl").exists()                 # --no-store
    manifest = json.loads((out / S.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["config"]["budget_tokens"] == 500 and manifest["config"]["seeds"] == [0, 1]  # the --set values


@pytest.mark.parametrize("sets, message", [
    (["budget_tokens=-5"], "budget_tokens: must be a positive integer"),
    (["seedz=3"], "did you mean 'seeds'"),
    (["eval.judg=overlap"], "did you mean 'judge'"),
    (["train={epochs: 2}"], "num_train_epochs"),
])
def test_cqia_nb_sweep_refuses_bad_settings_before_any_work(tmp_path, capsys, sets, message):
    from cqia_nb.cli import main

    out = tmp_path / "never"
    assert main(["sweep", "--config", str(TINY_RECIPE), "--out", str(out),
                 *sum((["--set", s] for s in sets), [])]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
