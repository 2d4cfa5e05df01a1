"""BELLE-EVAL open generation: data loading with tolerant class matching, batched cached
generation on the tiny model (resume after an interruption), judging through the shared judge
against the stub server on 127.0.0.1 (tests/judge_stub.py), recorded failures, bootstrap CIs,
the CLI, and one real-data test on ../shared/benchmarks/belle_eval."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import REAL_BENCHMARKS
from judge_stub import serve, server, stub  # noqa: F401  (fixtures)

import cqia_nb.eval.belle as oe
import cqia_nb.eval.belle.cli  # noqa: F401  (oe.cli below; not imported by the package itself)
from cqia_nb.core.generation import generate_batch
from cqia_nb.eval.belle.data import BelleEvalError, load_belle, normalize_class, sample_items
from cqia_nb.eval.belle.generate import GenerationSettings, generate_answers
from cqia_nb.eval.belle.run import BelleEvalConfig, run_belle_eval
from cqia_nb.eval.belle.score import build_judge_prompt, judge_answers, summarize_scores
from cqia_nb.eval.results import read_results
from cqia_nb.models.judge import JudgeConfig
from cqia_nb.models.loading import load_for_inference

NBSP = "\u00a0"
PROMPTS = [
    {"class": "open QA", "prompt": "你需要通过参考标准答案，来对模型回答给出分数。请按照\"得分:\"这样的形式输出分数。"},
    {"class": f"closed{NBSP}QA", "prompt": "你需要参考标准答案打分。请按照\"得分:\"这样的形式输出分数。"},
    {"class": "generation", "prompt": "你需要研究评价标准来对模型回答给出分数。请按照\"得分:\"这样的形式输出分数。"},
    {"class": "translation", "prompt": "假设你是一个语言学家。请按照\"得分:\"这样的形式输出分数。"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def make_belle(folder: Path, items, prompts=PROMPTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "eval_set.json", items)
    write_jsonl(folder / "eval_prompt.json", prompts)
    return folder


ITEMS = [
    {"question": "中国的首都是哪里？[[belle:0.9]]", "std_answer": "北京。", "class": "open qa"},
    {"question": "根据上文，作者几岁？[[belle:0.4]]", "std_answer": "十岁。", "class": f"closed{NBSP}qa"},
    {"question": "写一首关于秋天的诗。[[belle:0.6]]", "std_answer": "", "class": "generation"},
    {"question": "太阳从哪边升起？[[garbage]]", "std_answer": "东边。", "class": " Open\u3000QA "},
]


def judge_cfg(stub, tmp_path, **kw) -> JudgeConfig:
    base = dict(base_url=stub.url, model="stub-judge", api_key="sk-test", timeout_s=2.0, max_retries=1,
                backoff_s=0.01, concurrency=2, cache_path=str(tmp_path / "judge.sqlite"))
    base.update(kw)
    return JudgeConfig.belle_eval(**base)


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    import torch

    import cqia_nb.models as models

    torch.set_num_threads(1)
    fr = pl.DataFrame({"instruction": ["请写一首诗", "什么是机器学习？", "中国的首都是哪里？"] * 4, "input": [""] * 12,
                       "output": ["春眠不觉晓，处处闻啼鸟。", "机器学习是一种方法。", "北京。"] * 4})
    return models.build_tiny_model(fr, models.TinyModelConfig(tokenizer_vocab_size=400))


# ----------------------------------------------------------------------------- data

def test_normalize_class_is_tolerant_of_case_and_spaces():
    keys = {normalize_class(s) for s in (f"closed{NBSP}QA", "closed qa", " Closed\u3000qa ", "ＣＬＯＳＥＤ  QA", "closed\tqa")}
    assert keys == {"closed qa"}
    assert normalize_class("open qa") != normalize_class("closed qa")


def test_load_matches_classes_across_files_and_lists_unused_prompts(tmp_path):
    d = load_belle(make_belle(tmp_path / "b", ITEMS))
    assert d.items.height == 4 and d.items["item_id"].to_list() == [f"eval_set.json:{i}" for i in range(1, 5)]
    assert d.classes == ["open qa", "closed qa", "generation"]
    assert d.items["class_raw"][1] == f"closed{NBSP}qa"  # kept as written
    assert d.missing_prompts == [] and d.unused_prompts == ["translation"]
    assert d.prompt_names["closed qa"] == f"closed{NBSP}QA"
    # a JSON array is read too; the eval-set file alone finds eval_prompt.json beside it
    arr = tmp_path / "arr"
    arr.mkdir()
    (arr / "eval_set.json").write_text(json.dumps(ITEMS, ensure_ascii=False), encoding="utf-8")
    write_jsonl(arr / "eval_prompt.json", PROMPTS)
    assert load_belle(arr / "eval_set.json").items["question"].to_list() == d.items["question"].to_list()


def test_class_without_judge_prompt_is_an_error_naming_it_or_a_recorded_failure(tmp_path, stub):
    items = ITEMS + [{"question": "把这段话改写得更正式。[[belle:1]]", "std_answer": "", "class": "Rewrite"}]
    folder = make_belle(tmp_path / "b", items)
    with pytest.raises(BelleEvalError, match=r"'Rewrite' \(1 question\(s\), first at .*eval_set.json:5\)"):
        load_belle(folder)
    d = load_belle(folder, on_missing_prompt="record")
    assert d.missing_prompts == ["rewrite"]
    answers = pl.DataFrame({"item_id": d.items["item_id"], "answer": ["回答 [[belle:0.5]]"] * 5, "empty": [False] * 5,
                            "gen_error": [None] * 5, "gen_error_message": [None] * 5})
    scores = judge_answers(d.items, answers, d.prompts, judge_cfg(stub, tmp_path))
    assert scores.height == 5 and scores["status"][4] == "no_judge_prompt"
    assert "Rewrite" in scores["judge_error_message"][4]
    assert stub.total == 4  # the recorded one was not sent


@pytest.mark.parametrize("content, message", [
    ('{"question": "q", "std_answer": "", "class": "open qa"}\n{"question": ', r"eval_set.json:2: not valid JSON"),
    ('{"std_answer": "", "class": "open qa"}\n', r"eval_set.json:1: field 'question' must be a non-empty string"),
    ('{"question": "q", "class": 3}\n', r"eval_set.json:1: field 'class'"),
    ('["not", "objects"]', r"eval_set.json:1: expected a JSON object"),
])
def test_bad_eval_set_lines_are_named(tmp_path, content, message):
    folder = make_belle(tmp_path / "b", ITEMS)
    (folder / "eval_set.json").write_text(content, encoding="utf-8")
    with pytest.raises(BelleEvalError, match=message):
        load_belle(folder)


def test_duplicate_judge_prompts_after_normalisation_are_an_error(tmp_path):
    folder = make_belle(tmp_path / "b", ITEMS, PROMPTS + [{"class": "Open QA ", "prompt": "again"}])
    with pytest.raises(BelleEvalError, match=r"eval_prompt.json:5: a second judge prompt .* first is on line 1"):
        load_belle(folder)


def test_sample_is_seeded_and_stratified():
    items = pl.DataFrame({"item_id": [f"s:{i}" for i in range(100)], "line": list(range(1, 101)),
                          "class": ["a"] * 60 + ["b"] * 30 + ["c"] * 10, "class_raw": ["x"] * 100,
                          "question": [f"q{i}" for i in range(100)], "std_answer": [""] * 100},
                         schema=oe.ITEM_SCHEMA)
    s = sample_items(items, 10, seed=1)
    assert dict(s.group_by("class", maintain_order=True).len().iter_rows()) == {"a": 6, "b": 3, "c": 1}
    assert s["line"].is_sorted() and s.equals(sample_items(items, 10, seed=1))
    assert not s.equals(sample_items(items, 10, seed=2))
    small = sample_items(items, 3, seed=0)
    assert sorted(small["class"].to_list()) == ["a", "b", "c"]  # at least one per class when n allows
    assert sample_items(items, None).height == 100 and sample_items(items, 500).height == 100
    with pytest.raises(BelleEvalError, match="positive"):
        sample_items(items, 0)


# ----------------------------------------------------------------------------- judge prompt + judging

def test_judge_prompt_composition_with_and_without_reference():
    with_ref = build_judge_prompt("打分说明。", "问题？", "标准", "模型的回答")
    assert with_ref == "打分说明。 问题？ 标准回答:标准  模型回答：' 模型的回答'。请针对模型回答给出得分，顺便给出理由："
    free = build_judge_prompt("打分说明。", "写诗", "", "一首诗", reference_free=True)
    assert "标准回答" not in free and free.startswith("打分说明。 写诗") and "一首诗" in free


def test_judging_records_every_outcome_and_sends_no_empty_answers(stub, tmp_path):
    d = load_belle(make_belle(tmp_path / "b", ITEMS + [
        {"question": "迟到的问题 [[slow]]", "std_answer": "x", "class": "open qa"},
        {"question": "空回答的问题 [[belle:1]]", "std_answer": "x", "class": "open qa"},
        {"question": "生成失败的问题 [[belle:1]]", "std_answer": "x", "class": "open qa"},
    ]))
    ids = d.items["item_id"].to_list()
    answers = pl.DataFrame({"item_id": ids, "answer": ["答"] * 5 + ["  \n"] + [None],
                            "empty": [False] * 5 + [True, None], "gen_error": [None] * 6 + ["generation_error"],
                            "gen_error_message": [None] * 6 + ["RuntimeError: CUDA out of memory"]})
    c = judge_cfg(stub, tmp_path, timeout_s=0.3, max_retries=0)
    scores = judge_answers(d.items, answers, d.prompts, c)
    assert scores["item_id"].to_list() == ids
    assert scores["status"].to_list() == ["scored", "scored", "scored", "unparseable", "timeout", "empty_answer",
                                          "generation_error"]
    assert scores["score"].to_list()[:3] == [0.9, 0.4, 0.6] and scores["score"][5] == 0.0
    assert scores["score"][3] is None and scores["raw_reply"][3].startswith("I think")
    assert "out of memory" in scores["judge_error_message"][6]
    assert stub.total == 5  # the empty answer and the failed generation were not sent
    sent = {p.split("[[")[1].split("]]")[0]: p for p in stub.prompts}
    assert "标准回答:北京。" in sent["belle:0.9"] and "标准回答:十岁。" in sent["belle:0.4"]
    assert "标准回答" not in sent["belle:0.6"]  # generation: reference-free, as upstream
    # judging empty answers instead is a choice
    stub.reset()
    again = judge_answers(d.items, answers, d.prompts, c, empty_answers="judge")
    assert again["status"][5] == "scored" and again["score"][5] == 1.0 and stub.total == 2  # rest cached


def test_summary_counts_every_question_and_bootstraps_seeded():
    per = pl.DataFrame({"class": ["a"] * 4 + ["b"] * 3,
                        "status": ["scored", "scored", "empty_answer", "timeout", "scored", "scored", "unparseable"],
                        "score": [1.0, 0.5, 0.0, None, 0.2, 0.4, None]})
    s = summarize_scores(per, n_boot=500, seed=3)
    rows = {r["class"]: r for r in s.iter_rows(named=True)}
    assert list(rows) == ["a", "b", "overall", "macro"]
    assert (rows["a"]["n"], rows["a"]["scored"], rows["a"]["empty"], rows["a"]["failed"]) == (4, 2, 1, 1)
    assert rows["a"]["mean"] == pytest.approx(0.5) and rows["b"]["mean"] == pytest.approx(0.3)
    assert rows["overall"]["n"] == 7 and rows["overall"]["failed"] == 2
    assert rows["overall"]["mean"] == pytest.approx(2.1 / 5)
    assert rows["macro"]["mean"] == pytest.approx(0.4)
    for r in rows.values():
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
    assert s.equals(summarize_scores(per, n_boot=500, seed=3))
    assert not s.equals(summarize_scores(per, n_boot=500, seed=4))


def test_overlap_f1_is_bigram_f1_and_ignores_whitespace():
    assert oe.overlap_f1("一共有八个", "一共有八个") == pytest.approx(1.0)
    assert oe.overlap_f1("今天天气", "明日下雨") == 0.0
    # answer bigrams 一共 共有 有八 (3), reference 一共 共有 有九 九个 (4): 2 common -> P 2/3, R 1/2
    assert oe.overlap_f1("一共 有八", "一共有九个") == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_overlap_scoring_records_every_item():
    items = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "class": ["math"] * 4,
                          "question": ["q"] * 4, "std_answer": ["一共有八个", "一共有八个", "", "x"]})
    answers = pl.DataFrame({"item_id": ["a", "b", "c"], "answer": ["一共有八个", "  ", "有答案"]})
    s = oe.overlap_scores(items, answers)
    assert s["status"].to_list() == ["scored", "empty_answer", "no_reference", "generation_error"]
    assert s["score"].to_list()[:2] == [pytest.approx(1.0), 0.0]
    assert s["score"].null_count() == 2


# ----------------------------------------------------------------------------- generation

def test_batched_generation_equals_one_at_a_time(tiny_model):
    from cqia_nb.core.generation import generate_batch
    from cqia_nb.models.loading import load_for_inference as _load_for_inference
    from cqia_nb.train.trainer import generate

    model, tok = _load_for_inference(tiny_model)
    qs = ["请写一首诗", "什么是机器学习？请详细说明它的原理和应用。", "你好", "中国的首都是哪里？"]
    one = generate_batch(model, tok, qs, max_new_tokens=6, batch_size=1)
    four = generate_batch(model, tok, qs, max_new_tokens=6, batch_size=4)
    assert one == four and all(r["new_tokens"] == 6 and r["finish"] == "length" for r in one)
    assert [r["answer"] for r in one] == generate(tiny_model, qs, max_new_tokens=6, batch_size=3)


def _count_generate(monkeypatch, fail_on_call: int | None = None, exc: BaseException | None = None):
    import cqia_nb.eval.belle.generate as gen

    real = generate_batch
    seen = {"calls": 0, "prompts": 0}

    def counting(model, tok, prompts, **kw):
        seen["calls"] += 1
        if fail_on_call is not None and seen["calls"] == fail_on_call:
            raise exc
        seen["prompts"] += len(prompts)
        return real(model, tok, prompts, **kw)

    monkeypatch.setattr(gen, "generate_batch", counting)
    return seen


def test_generation_is_cached_per_batch_and_resumes_after_an_interruption(tiny_model, tmp_path, monkeypatch):
    qs = [f"问题{i}：请回答。" for i in range(7)]
    settings = GenerationSettings(max_new_tokens=4, batch_size=3)
    cache = tmp_path / "gen.sqlite"
    seen = _count_generate(monkeypatch, fail_on_call=2, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):  # the run is killed during its second batch
        generate_answers(tiny_model, qs, settings=settings, cache_path=cache)
    assert seen["prompts"] == 3
    seen = _count_generate(monkeypatch)
    res = generate_answers(tiny_model, qs, settings=settings, cache_path=cache)
    assert seen["prompts"] == 4 and res["cached"].sum() == 3  # only the unanswered four
    seen = _count_generate(monkeypatch)
    again = generate_answers(tiny_model, qs, settings=GenerationSettings(max_new_tokens=4, batch_size=5),
                             cache_path=cache)
    assert seen["calls"] == 0 and again["cached"].all()  # batch size is not part of the key
    assert again["answer"].to_list() == res["answer"].to_list()
    seen = _count_generate(monkeypatch)
    generate_answers(tiny_model, qs[:2], settings=GenerationSettings(max_new_tokens=5), cache_path=cache)
    assert seen["prompts"] == 2  # other settings: new answers


def test_failed_batch_is_recorded_not_cached(tiny_model, tmp_path, monkeypatch):
    qs = ["一", "二二", "三三三", "四四四四"]
    cache = tmp_path / "gen.sqlite"
    _count_generate(monkeypatch, fail_on_call=1, exc=RuntimeError("CUDA out of memory (simulated)"))
    res = generate_answers(tiny_model, qs, settings=GenerationSettings(max_new_tokens=3, batch_size=2),
                           cache_path=cache)
    assert res["gen_error"].to_list() == ["generation_error"] * 2 + [None] * 2
    assert "out of memory" in res["gen_error_message"][0] and res["answer"][0] is None
    seen = _count_generate(monkeypatch)
    again = generate_answers(tiny_model, qs, settings=GenerationSettings(max_new_tokens=3, batch_size=2),
                             cache_path=cache)
    assert seen["prompts"] == 2 and again["gen_error"].null_count() == 4


def test_base_model_without_chat_template_is_a_clear_error(tiny_model, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((bare / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(BelleEvalError, match="no chat template.*chat_template='chatml'"):
        generate_answers(bare, ["你好"], settings=GenerationSettings(max_new_tokens=2), cache=False)
    res = generate_answers(bare, ["你好"], settings=GenerationSettings(max_new_tokens=2, chat_template="chatml"),
                           cache=False)
    assert res["new_tokens"][0] == 2


# ----------------------------------------------------------------------------- end to end

def _force_eos_first(monkeypatch):
    """Make every generation stop at once: the model's first token is its eos (an empty answer)."""
    import torch

    import cqia_nb.eval.belle.generate as gen

    real = load_for_inference

    def load(*a, **kw):
        model, tok = real(*a, **kw)
        eos = torch.tensor([tok.convert_tokens_to_ids("<|im_end|>")])
        model.lm_head.register_forward_hook(lambda mod, inp, out: out.index_fill(-1, eos, 1e4))
        return model, tok

    monkeypatch.setattr(gen, "load_for_inference", load)


def test_run_end_to_end_on_the_tiny_model_and_stub_judge(tiny_model, stub, tmp_path):
    d = load_belle(make_belle(tmp_path / "b", ITEMS))
    cfg = BelleEvalConfig(generation=GenerationSettings(max_new_tokens=4, batch_size=2),
                          judge=judge_cfg(stub, tmp_path), cache_path=str(tmp_path / "gen.sqlite"), n_boot=200)
    res = run_belle_eval(tiny_model, d, cfg, out_dir=tmp_path / "out")
    assert res.per_item.height == 4 and res.counts() == {"scored": 3, "unparseable": 1}
    assert res.per_item["score"].to_list()[:3] == [0.9, 0.4, 0.6]
    s = {r["class"]: r for r in res.summary.iter_rows(named=True)}
    assert s["open qa"]["n"] == 2 and s["open qa"]["failed"] == 1 and s["open qa"]["mean"] == pytest.approx(0.9)
    assert s["overall"]["mean"] == pytest.approx((0.9 + 0.4 + 0.6) / 3)
    out = tmp_path / "out"
    assert pl.read_ndjson(out / "per_item.jsonl").height == 4 and pl.read_csv(out / "summary.csv").height == 5
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["counts"] == {"scored": 3, "unparseable": 1} and "sk-test" not in (out / "run.json").read_text()
    rows = res.results_rows("tiny", base_model="tiny-base", train_subset="mix")
    assert {r["subset"] for r in rows} == {"open qa", "closed qa", "generation", "overall", "macro"}
    from cqia_nb.eval.results import append_results

    append_results(rows, tmp_path / "results.jsonl")
    stored = read_results(tmp_path / "results.jsonl")
    assert stored.height == 5 and set(stored["benchmark"]) == {"belle_eval"} and not stored["external"].any()
    # a rerun makes no judge request for scored answers and generates nothing
    stub.reset()
    again = run_belle_eval(tiny_model, d, cfg)
    assert again.per_item["gen_key"].to_list() == res.per_item["gen_key"].to_list()
    assert again.per_item["cached"].all() and stub.per_mark["[[belle:0.9]]"] == 0
    assert again.summary.equals(res.summary)


def test_overlap_run_needs_no_judge_and_stores_its_own_metric(tiny_model, tmp_path):
    d = load_belle(make_belle(tmp_path / "b", ITEMS))
    cfg = BelleEvalConfig(generation=GenerationSettings(max_new_tokens=4, batch_size=2), judge=None,
                          scorer="overlap", cache_path=str(tmp_path / "gen.sqlite"), n_boot=200)
    res = run_belle_eval(tiny_model, d, cfg)
    assert res.per_item.height == len(ITEMS)
    pi = res.per_item
    no_ref = pi.filter(pl.col("std_answer").fill_null("").str.strip_chars() == "")
    assert no_ref.height and set(no_ref["status"].to_list()) == {"no_reference"}  # ITEMS has one
    rest = pi.filter(pl.col("std_answer").fill_null("").str.strip_chars() != "")
    assert set(rest["status"].to_list()) <= {"scored", "empty_answer"}
    want = [oe.overlap_f1(a, r) if a.strip() else 0.0
            for a, r in zip(rest["answer"].to_list(), rest["std_answer"].to_list())]
    assert rest["score"].to_list() == pytest.approx(want)
    rows = res.results_rows("tiny")
    assert rows and {r["metric"] for r in rows} == {"overlap_f1"} and "not a judge" in rows[0]["notes"]
    with pytest.raises(BelleEvalError, match="scorer"):
        BelleEvalConfig(scorer="gpt")


def test_empty_generations_are_scored_zero_without_the_judge(tiny_model, stub, tmp_path, monkeypatch):
    _force_eos_first(monkeypatch)
    d = load_belle(make_belle(tmp_path / "b", ITEMS[:2]))
    cfg = BelleEvalConfig(generation=GenerationSettings(max_new_tokens=4), judge=judge_cfg(stub, tmp_path),
                          cache=False, n_boot=100)
    res = run_belle_eval(tiny_model, d, cfg)
    assert res.per_item["answer"].to_list() == ["", ""] and res.per_item["finish"].to_list() == ["stop", "stop"]
    assert res.per_item["empty"].all() and res.per_item["status"].to_list() == ["empty_answer"] * 2
    assert res.per_item["score"].to_list() == [0.0, 0.0] and stub.total == 0
    assert res.summary.filter(pl.col("class") == "overall")["empty"][0] == 2


def test_cli_main_runs_and_appends_results(tiny_model, stub, tmp_path, capsys, monkeypatch):
    folder = make_belle(tmp_path / "b", ITEMS)
    results = tmp_path / "results.jsonl"
    rc = oe.cli.main(["--model", str(tiny_model), "--data", str(folder), "--judge-url", stub.url, "--judge-model", "stub",
                  "--out", str(tmp_path / "out"), "--limit", "3", "--max-new-tokens", "3", "--results", str(results),
                  "--name", "tiny-cli"])
    out = capsys.readouterr().out
    assert rc == 0 and "overall" in out and "3 questions" in out
    assert read_results(results)["model"].unique().to_list() == ["tiny-cli"]
    assert oe.cli.main(["--model", str(tiny_model), "--data", str(tmp_path / "nowhere"), "--no-judge"]) == 2
    assert "no BELLE-EVAL set here" in capsys.readouterr().err
    monkeypatch.delenv("CQIA_JUDGE_URL", raising=False)
    assert oe.cli.main(["--model", str(tiny_model), "--data", str(folder)]) == 2
    assert "no judge: give --judge-url" in capsys.readouterr().err


# ----------------------------------------------------------------------------- CLI: --config + --set

ROOT = Path(__file__).resolve().parents[2]


def _belle(args: list[str], capsys, out: Path | None = None, results: Path | None = None) -> tuple[int, list[str], str]:
    from cqia_nb.cli import main

    rc = main(["eval", "belle", *args])
    cap = capsys.readouterr()
    text = cap.out
    for path, word in ((out, "OUT"), (results, "RESULTS")):
        text = text.replace(str(path), word) if path is not None else text
    return rc, text.splitlines(), cap.err


def test_cli_belle_recipe_and_set_equal_the_old_flags(tiny_model, stub, tmp_path, capsys):
    folder = make_belle(tmp_path / "b", ITEMS)
    res_old, res_new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old = _belle(["--model", str(tiny_model), "--data", str(folder), "--judge-url", stub.url, "--judge-model", "stub",
                  "--out", str(tmp_path / "o1"), "--limit", "3", "--max-new-tokens", "3", "--results", str(res_old),
                  "--name", "tiny-cli"], capsys, tmp_path / "o1", res_old)
    recipe = tmp_path / "belle.yaml"
    recipe.write_text(f"model: {tiny_model}\ndata: {folder}\njudge: overlap\nmax_new_tokens: 8\nname: tiny-cli\n",
                      encoding="utf-8")
    new = _belle(["--config", str(recipe), "--set", f"judge={stub.url}", "--set", "judge_model=stub",
                  "--set", f"out={tmp_path / 'o2'}", "--set", "limit=3", "--set", "max_new_tokens=3",
                  "--set", f"results={res_new}"], capsys, tmp_path / "o2", res_new)
    assert old[0] == new[0] == 0 and old[1] == new[1] and "3 questions" in old[1][-2]
    assert (tmp_path / "o1" / "summary.csv").read_bytes() == (tmp_path / "o2" / "summary.csv").read_bytes()
    items = [pl.read_ndjson(tmp_path / o / "per_item.jsonl") for o in ("o1", "o2")]
    volatile = ["cached", "judge_cached", "attempts"]  # the second run finds both caches filled
    assert items[0].drop(volatile).equals(items[1].drop(volatile)) and items[1]["judge_cached"].all()
    strip = lambda df: df.drop("timestamp") if "timestamp" in df.columns else df  # noqa: E731
    assert strip(read_results(res_old)).equals(strip(read_results(res_new)))
    # the judge flags are the `judge` key: --overlap == judge: overlap, --no-judge == judge: none
    ov_flag = _belle(["--config", str(recipe), "--overlap", "--set", "limit=3", "--set", f"out={tmp_path / 'o3'}",
                      "--set", "no_results=true"], capsys, tmp_path / "o3")
    ov_key = _belle(["--config", str(recipe), "--set", "limit=3", "--set", f"out={tmp_path / 'o4'}", "--no-results"],
                    capsys, tmp_path / "o4")
    assert ov_flag[0] == 0 and ov_flag[1] == ov_key[1] and not any("results appended" in x for x in ov_flag[1])
    none = _belle(["--config", str(recipe), "--set", "judge=none", "--set", "limit=2", "--set",
                   f"out={tmp_path / 'o5'}"], capsys, tmp_path / "o5")
    assert none[0] == 0 and "not_judged 2" in none[1][-1]


def test_cli_belle_unknown_keys_fail_with_a_hint(tiny_model, tmp_path, capsys, monkeypatch):
    folder = make_belle(tmp_path / "b", ITEMS)
    base = ["--model", str(tiny_model), "--data", str(folder)]
    rc, _, err = _belle([*base, "--set", "judg=overlap"], capsys)
    assert rc == 2 and "unknown key(s) 'judg' (did you mean 'judge'?)" in err
    rc, _, err = _belle([*base, "--set", "max_new_token=3", "--overlap"], capsys)
    assert rc == 2 and "'max_new_token' (did you mean 'max_new_tokens'?)" in err
    rc, _, err = _belle([*base, "--set", "dtype=float8", "--overlap"], capsys)
    assert rc == 2 and "dtype must be float32, bfloat16 or float16" in err
    monkeypatch.delenv("CQIA_JUDGE_URL", raising=False)
    rc, _, err = _belle(base, capsys)
    assert rc == 2 and "no judge: give --judge-url" in err and "judge: URL | PATH | overlap | none" in err
    assert not (tmp_path / "build").exists()


def test_eval_belle_recipe_runs_on_the_mini_set_with_the_tiny_model(tmp_path, capsys, monkeypatch):
    """recipes/eval-belle.yaml as shipped (outputs and results store moved into tmp_path)."""
    monkeypatch.chdir(ROOT)  # the recipe's paths are relative to the repository root
    results = tmp_path / "results.jsonl"
    rc, lines, err = _belle(["--config", str(ROOT / "recipes" / "eval-belle.yaml"), "--set", f"out={tmp_path / 'out'}",
                             "--set", f"results={results}", "--set", "n_boot=100"], capsys, tmp_path / "out")
    assert rc == 0, err
    assert lines[-2].startswith("20 questions: ") and lines[-2].endswith("; outputs in OUT")
    assert (tmp_path / "out" / "per_item.jsonl").is_file()
    rows = read_results(results)
    assert set(rows["metric"].to_list()) == {"overlap_f1"} and rows["model"].unique().to_list() == ["tiny"]
    cfg = oe.BelleRunConfig.from_yaml(ROOT / "recipes" / "eval-belle.yaml", ["judge=none", "device=cuda"])
    assert cfg.generation.device == "cuda" and not cfg.scored and cfg.out_dir == Path("build/belle_eval/tiny")


# ----------------------------------------------------------------------------- real data

@pytest.mark.realdata
def test_real_belle_eval_files_parse_and_every_class_has_a_prompt():
    folder = REAL_BENCHMARKS / "belle_eval"
    if not (folder / "eval_set.json").is_file():
        pytest.skip(f"BELLE-EVAL not found at {folder} (set CQIA_REAL_BENCHMARKS to run this test)")
    d = load_belle(folder)
    counts = dict(d.class_counts().iter_rows())
    assert d.items.height == 1000 and sum(counts.values()) == 1000
    assert d.missing_prompts == [] and [normalize_class(c) for c in d.unused_prompts] == ["translation"]
    assert "closed qa" in counts and d.prompt_names["closed qa"] == f"closed{NBSP}QA"
    assert d.items.filter(pl.col("class") == "closed qa")["class_raw"][0] == f"closed{NBSP}qa"
    assert d.items["item_id"].n_unique() == 1000
    for it in d.items.iter_rows(named=True):  # every question gets a well-formed judge prompt
        p = build_judge_prompt(d.prompts[it["class"]], it["question"], it["std_answer"], "答",
                               reference_free=it["class"] in oe.REFERENCE_FREE_CLASSES)
        assert "得分" in p and it["question"] in p
    free = d.items.filter(pl.col("class").is_in(list(oe.REFERENCE_FREE_CLASSES)))
    assert (d.items.filter(pl.col("std_answer").str.strip_chars() == "")["class"].is_in(
        list(oe.REFERENCE_FREE_CLASSES))).all() and free.height > 0
    s = sample_items(d.items, 50, seed=0)
    assert s.height == 50 and s["class"].n_unique() == len(counts)


def test_judge_from_one_setting(tmp_path):
    assert oe.judge_from("overlap") == (None, None) and oe.judge_from(None) == (None, None)
    j, local = oe.judge_from("http://127.0.0.1:9/v1", "gpt-4", timeout_s=5)
    assert (j.backend, j.resolved_base_url(), j.resolved_model(), j.timeout_s, local) == \
        ("openai", "http://127.0.0.1:9/v1", "gpt-4", 5, None)
    assert j.score_range == (0.0, 1.0)  # BELLE-EVAL's 0-1 scale, not the filter judge's 1-10
    j, local = oe.judge_from(str(tmp_path))
    assert j.backend == "local" and local == str(tmp_path)
    with pytest.raises(BelleEvalError, match="no such model folder"):
        oe.judge_from(str(tmp_path / "missing"))
