"""The LLM judge against a stub OpenAI-compatible server on 127.0.0.1, and the local backend.

The stub (``tests/judge_stub.py``, shared with the BELLE-EVAL tests) reads a marker in the judged
text — ``[[good:8]]``, ``[[garbage]]``, ``[[e500]]``, ``[[flaky:2]]`` (two 500s, then a score),
``[[r429]]`` (one 429 with Retry-After, then a score), ``[[slow]]`` (answers after the client's
timeout), ``[[badjson]]`` — and counts every request.
"""

from __future__ import annotations

import json
import socket
import time
import warnings

import polars as pl
import pytest
from judge_stub import serve, server, stub  # noqa: F401  (fixtures)

import cqia_nb.models.judge as judge
from cqia_nb.filter.framework import PipelineConfig, StepConfig, make_filter, run_pipeline
from cqia_nb.models.judge import JudgeConfig, judge_frame, judge_prompts, parse_score

SECRET = "sk-test-DO-NOT-LEAK-1234567890"


def cfg(stub, tmp_path, **kw) -> JudgeConfig:
    base = dict(base_url=stub.url, model="stub-judge", api_key=SECRET, timeout_s=2.0, max_retries=2,
                backoff_s=0.01, concurrency=3, cache_path=str(tmp_path / "judge.sqlite"))
    base.update(kw)
    return JudgeConfig(**base)


def frame_of(marks: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"record_id": [f"j.jsonl:{i}" for i in range(1, len(marks) + 1)],
                         "instruction": [f"请回答问题 {m}" for m in marks], "input": [""] * len(marks),
                         "output": ["这是一个回答。"] * len(marks)})


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- parsing

def test_parse_score_default_and_belle():
    assert parse_score("分数: 8\n理由：准确") == (8.0, "理由：准确", None)
    assert parse_score("分数：10。很好")[0] == 10.0
    assert parse_score("我给 7 分") == (None, None, "unparseable")
    assert parse_score("分数: 42")[2] == "out_of_range"
    belle = JudgeConfig.belle_eval()
    assert belle.score_range == (0.0, 1.0) and belle.prompt_template == "{prompt}"
    p = (belle.score_pattern, belle.score_range)
    assert parse_score("理由很充分。得分: 0.85", *p)[0] == 0.85
    assert parse_score("得分：1", *p)[0] == 1.0
    assert parse_score("得分: 3", *p)[2] == "unparseable"


# ----------------------------------------------------------------------------- openai backend

def test_scores_parsed_and_key_only_in_bearer_header(stub, tmp_path):
    c = cfg(stub, tmp_path)
    res = judge_frame(frame_of(["[[good:8]]", "[[good:3]]"]), c)
    assert res["record_id"].to_list() == ["j.jsonl:1", "j.jsonl:2"]
    assert res["score"].to_list() == [8.0, 3.0]
    assert res["error"].null_count() == 2 and res["attempts"].to_list() == [1, 1]
    assert res["reason"][0].startswith("回答准确")
    assert stub.auth == [f"Bearer {SECRET}"] * 2
    assert SECRET not in repr(c) and SECRET not in str(c.to_dict()) and c.to_dict()["api_key_set"]
    assert SECRET not in str(res.rows())


def test_api_key_from_env_and_never_in_error_messages(stub, tmp_path, monkeypatch):
    monkeypatch.delenv("CQIA_JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    c = cfg(stub, tmp_path, api_key=None, max_retries=0)
    res = judge_frame(frame_of(["[[e500]]", "[[good:6]]"]), c)
    assert stub.auth == [f"Bearer {SECRET}"] * 2
    assert res["error"].to_list() == ["http_500", None]
    assert SECRET not in str(res.rows()) and SECRET not in repr(c)


def test_retries_500s_then_succeeds_and_honours_retry_after(stub, tmp_path):
    c = cfg(stub, tmp_path, max_retries=3)
    res = judge_frame(frame_of(["[[flaky:2]]", "[[r429]]", "[[e500]]"]), c)
    rows = {r["record_id"]: r for r in res.iter_rows(named=True)}
    assert (rows["j.jsonl:1"]["score"], rows["j.jsonl:1"]["attempts"]) == (8.0, 3)
    assert (rows["j.jsonl:2"]["score"], rows["j.jsonl:2"]["attempts"]) == (7.0, 2)
    assert (rows["j.jsonl:3"]["error"], rows["j.jsonl:3"]["attempts"]) == ("http_500", 4)
    assert stub.per_mark["[[flaky:2]]"] == 3 and stub.per_mark["[[r429]]"] == 2 and stub.per_mark["[[e500]]"] == 4
    t = stub.times["[[r429]]"]
    assert t[1] - t[0] >= 0.29  # waited what Retry-After said, not the 0.01 s backoff
    assert "HTTP 500" in rows["j.jsonl:3"]["error_message"]


def test_timeout_is_recorded_not_raised(stub, tmp_path):
    c = cfg(stub, tmp_path, timeout_s=0.3, max_retries=1)
    t0 = time.monotonic()
    res = judge_frame(frame_of(["[[slow]]", "[[good:9]]"]), c)
    assert time.monotonic() - t0 < 2.5
    assert res["error"].to_list() == ["timeout", None]
    assert res["attempts"].to_list() == [2, 1] and stub.per_mark["[[slow]]"] == 2
    assert res["score"].to_list() == [None, 9.0]


def test_garbage_and_bad_responses_are_recorded(stub, tmp_path):
    res = judge_frame(frame_of(["[[garbage]]", "[[badjson]]", "[[good:42]]"]), cfg(stub, tmp_path))
    assert res["error"].to_list() == ["unparseable", "bad_response", "out_of_range"]
    assert res["raw_reply"][0] == "I think this answer is pretty good overall!"
    assert res["score"].null_count() == 3
    assert res["attempts"].to_list() == [1, 1, 1]  # not retried: temperature 0 would say the same


def test_cache_means_a_rerun_makes_zero_requests(stub, tmp_path):
    fr = frame_of(["[[good:8]]", "[[good:4]]", "[[garbage]]", "[[e500]]"])
    c = cfg(stub, tmp_path, max_retries=0)
    first = judge_frame(fr, c)
    sent = stub.total
    assert sent == 4 and not first["cached"].any()
    stub.reset()
    second = judge_frame(fr, c)
    assert stub.per_mark["[[good:8]]"] == stub.per_mark["[[good:4]]"] == stub.per_mark["[[garbage]]"] == 0
    assert stub.per_mark["[[e500]]"] == 1  # transport failures are retried on a rerun, not cached
    assert second["cached"].to_list() == [True, True, True, False]
    assert second["score"].to_list()[:2] == [8.0, 4.0] and second["attempts"].to_list()[:3] == [0, 0, 0]
    # a new score regex re-parses the stored replies: still no request
    stub.reset()
    loose = cfg(stub, tmp_path, max_retries=0, score_pattern=r"(good)|分数: (\d+)")
    judge_frame(fr[:3], loose)
    assert stub.total == 0


def test_down_endpoint_gives_recorded_failures(tmp_path):
    port = free_port()
    c = JudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.01, concurrency=1,
                    give_up_after=2, cache_path=str(tmp_path / "j.sqlite"), timeout_s=1)
    before = judge.STATS["requests"]
    res = judge_frame(frame_of(["[[good:8]]"] * 5), c)
    assert res.height == 5
    assert res["error"].to_list() == ["connection_refused"] * 2 + ["endpoint_down"] * 3
    assert res["attempts"].to_list() == [2, 2, 0, 0, 0]
    assert judge.STATS["requests"] - before == 4
    summary = judge.summarize(res)
    assert dict(zip(summary["outcome"], summary["records"])) == {"connection_refused": 2, "endpoint_down": 3}


def test_judge_prompts_for_belle_style_items(stub, tmp_path):
    c = JudgeConfig.belle_eval(base_url=stub.url, api_key=SECRET, backoff_s=0.01,
                                                 cache_path=str(tmp_path / "b.sqlite"))
    res = judge_prompts(["问题与标准答案…… [[garbage]]", "请打分 [[good:1]]"], c, ids=["a", "b"])
    assert res["record_id"].to_list() == ["a", "b"]
    assert res["error"].to_list()[0] == "unparseable"


# ----------------------------------------------------------------------------- filter

def test_judge_filter_drops_low_scores_and_keeps_failures(stub, tmp_path):
    fr = frame_of(["[[good:9]]", "[[good:2]]", "[[e500]]", "[[garbage]]"])
    params = {"min_score": 6, "base_url": stub.url, "model": "stub-judge", "max_retries": 0,
              "cache_path": str(tmp_path / "f.sqlite"), "options": {"api_key": SECRET, "backoff_s": 0.01}}
    flt = make_filter("judge", **params)
    with pytest.warns(UserWarning, match=r"2 of 4 record\(s\) could not be judged \(http_500 1, unparseable 1\)"):
        m = flt.apply(fr)
    assert m.keep.to_list() == [True, False, True, True]
    assert m.value.to_list() == [9.0, 2.0, None, None]
    assert m.detail.to_list()[2:] == ["http_500", "unparseable"]
    assert flt.last_results["attempts"].to_list() == [1, 1, 1, 1]
    assert SECRET not in repr(flt)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = run_pipeline(fr, PipelineConfig(steps=[StepConfig("judge", params)]))
    assert out.kept["record_id"].to_list() == ["j.jsonl:1", "j.jsonl:3", "j.jsonl:4"]
    assert out.dropped["record_id"].to_list() == ["j.jsonl:2"] and out.dropped["value"].to_list() == [2.0]


# ----------------------------------------------------------------------------- scores from token probabilities

def test_score_distribution_follows_multi_token_paths():
    ten = judge.score_candidates((1, 10))
    assert list(ten) == [str(k) for k in range(1, 11)]
    belle = judge.score_candidates((0.0, 1.0))
    assert belle["0.3"] == 0.3 and belle["1"] == 1.0 and judge.score_candidates((0.0, 5.5)) == {}
    tops = {(): [("1", 0.5), ("9", 0.25), ("好", 0.25)], ("1",): [("0", 0.2), ("分", 0.8)]}
    dist = judge.score_distribution(ten, lambda path: tops.get(path))
    assert dist == pytest.approx({1.0: 0.4, 10.0: 0.1, 9.0: 0.25})
    score, mass = judge.expected_score(dist)
    assert mass == pytest.approx(0.75) and score == pytest.approx((0.4 + 1.0 + 2.25) / 0.75)
    # the continuation after "1" unknown (an OpenAI reply that wrote "9"): the "1" counts as 1
    assert judge.score_distribution(ten, lambda path: tops[()] if not path else None) == \
        pytest.approx({1.0: 0.5, 9.0: 0.25})
    # 0–1 in tenths: "0" "." "6"; a leading space before the number is allowed
    btops = {(): [(" 0", 0.5), (" 1", 0.5)], ("0",): [(".", 1.0)], ("0", "."): [("6", 1.0)]}
    assert judge.score_distribution(belle, lambda path: btops.get(path)) == pytest.approx({0.6: 0.5, 1.0: 0.5})


def test_logprob_replies_are_scored_from_probabilities_and_text_otherwise(stub, tmp_path):
    fr = frame_of(["[[lp:seven]]", "[[lp:ten]]", "[[lp:bare]]", "[[good:8]]", "[[garbage]]"])
    res = judge_frame(fr, cfg(stub, tmp_path))
    assert all(b["logprobs"] is True and b["top_logprobs"] == 20 for b in stub.bodies)
    assert res["score"].to_list()[:4] == pytest.approx([6.7, 6.2, 4.0, 8.0])
    assert res["score_source"].to_list() == ["logprobs", "logprobs", "logprobs", "text", None]
    assert res["score_mass"].to_list()[:3] == pytest.approx([1.0, 1.0, 0.5]) and res["score_mass"][3] is None
    assert res["error"].to_list() == [None] * 4 + ["unparseable"]
    assert json.loads(res["score_probs"][1]) == pytest.approx({"1": 0.4, "9": 0.2, "10": 0.4})
    # a rerun reads the stored token probabilities: no request, same scores
    stub.reset()
    again = judge_frame(fr, cfg(stub, tmp_path))
    assert stub.total == 0 and again["cached"].all()
    assert again["score"].to_list()[:4] == pytest.approx([6.7, 6.2, 4.0, 8.0])
    # logprobs=False: the request does not ask for them, the text is parsed
    stub.reset()
    text = judge_frame(fr, cfg(stub, tmp_path, logprobs=False))
    assert not any("logprobs" in b for b in stub.bodies) and stub.total == 5
    assert text["score"].to_list()[:2] == [7.0, 10.0] and text["error"][2] == "unparseable"
    assert text["score_source"].to_list()[:2] == ["text", "text"]


def test_belle_scores_from_logprobs(stub, tmp_path):
    c = JudgeConfig.belle_eval(base_url=stub.url, api_key=SECRET, backoff_s=0.01, cache=False)
    res = judge_prompts(["请打分 [[lp:belle]]", "请打分 [[belle:0.3]]"], c)
    assert res["score"].to_list() == pytest.approx([0.85, 0.3])
    assert res["score_source"].to_list() == ["logprobs", "text"]


# ----------------------------------------------------------------------------- local backend

def test_local_backend_scores_from_the_next_token_distribution(tmp_path):
    torch = pytest.importorskip("torch")
    import cqia_nb.models as models
    from cqia_nb.core.generation import chat_prompts
    from cqia_nb.models.loading import load_causal_lm

    fr = frame_of(["一", "二"]).with_columns(pl.Series("output", ["分数: 7 好", "分数: 9 很好"]))
    folder = models.build_tiny_model(fr, models.TinyModelConfig(tokenizer_vocab_size=400))
    # a short prompt: the tiny model reads 512 positions (the default prompt is 619 of its tokens)
    c = JudgeConfig(backend="local", model=str(folder), cache_path=str(tmp_path / "l.sqlite"),
                    prompt_template="{instruction}\n{output}\n请打 1 到 10 分。")
    before = judge.STATS["requests"]
    res = judge_frame(fr, c)
    assert judge.STATS["requests"] - before == 2 and res["error"].null_count() == 2
    assert res["score_source"].to_list() == ["logprobs", "logprobs"]
    # the same expectation computed here from full forward passes (no KV cache); "10" is "1" then "0" here
    # as for SmolLM2: P(10) = P("1") P("0" | "1"), and P(1) = P("1") - P(10)
    model, tok = load_causal_lm(str(folder))
    paths = {k: tuple(tok(str(k), add_special_tokens=False)["input_ids"]) for k in range(1, 11)}
    assert len(paths[10]) == 2  # "1" "0": the backend's second step, on the KV cache, is exercised
    for row, (ins, out) in zip(res.iter_rows(named=True), zip(fr["instruction"], fr["output"])):
        text = chat_prompts(tok, [judge.format_prompt(c.prompt_template, ins, "", out)], c.system_prompt)[0] + "分数: "
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) < model.config.max_position_embeddings  # no cut: the whole prompt is read

        def p_path(path: tuple[int, ...]) -> float:
            prob = 1.0
            for i, t in enumerate(path):
                with torch.no_grad():
                    prob *= float(torch.softmax(model(torch.tensor([ids + list(path[:i])])).logits[0, -1], -1)[t])
            return prob

        whole = {k: p_path(path) for k, path in paths.items()}
        # a score is its path minus the longer scores that go through it ("1" then "0" is a 10, not a 1)
        probs = {k: whole[k] - sum(whole[j] for j, pj in paths.items() if j != k and pj[:len(paths[k])] == paths[k])
                 for k in paths}
        mass = sum(probs.values())
        assert row["score_mass"] == pytest.approx(mass, rel=1e-4)
        assert row["score"] == pytest.approx(sum(k * v for k, v in probs.items()) / mass, rel=1e-4)
    assert judge_frame(fr, c)["cached"].all() and judge.STATS["requests"] - before == 2


def test_local_backend_with_tiny_model_records_unparseable(tmp_path):
    pytest.importorskip("torch")
    import cqia_nb.models as models

    fr = frame_of(["一", "二"])
    folder = models.build_tiny_model(fr, models.TinyModelConfig(tokenizer_vocab_size=400))
    # logprobs=False: generate and parse the text, which the tiny model never writes in the format
    c = JudgeConfig(backend="local", model=str(folder), max_tokens=6, cache_path=str(tmp_path / "l.sqlite"),
                    logprobs=False)
    before = judge.STATS["requests"]
    res = judge_frame(fr, c)
    assert res.height == 2 and judge.STATS["requests"] - before == 2
    assert res["error"].to_list() == ["unparseable", "unparseable"] and res["score_source"].null_count() == 2
    assert all(isinstance(r, str) for r in res["raw_reply"]) and res["attempts"].to_list() == [1, 1]
    again = judge_frame(fr, c)
    assert judge.STATS["requests"] - before == 2 and again["cached"].all()
    missing = judge_frame(fr, JudgeConfig(backend="local", model=str(tmp_path / "no-model"), cache=False))
    assert missing["error"].to_list() == ["model_unavailable"] * 2
