"""Issue 14: answers abnormal for their kind of request (short, placeholder, looping tail), the
near-dedup answer check, the four injector kinds, the benchmark targets and the real-data review."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import polars as pl
import pytest

from cqia_nb import data
from cqia_nb.filter import PipelineConfig, dedup, noise, run_pipeline
from cqia_nb.filter.framework import StepConfig, make_filter
from cqia_nb.filter.minhash import MinHashConfig
from cqia_nb.filter.rules import closed_request, tail_repeats

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "filter-default.yaml"
REVIEW = ROOT / "data" / "reviews" / "issue14-noise-review.csv"
NEW_KINDS = ("short_answer", "placeholder", "repeated_tail", "near_dup_subst")
LONG = "这个问题要从历史、经济和文化三个方面来看。首先，历史上它经历了多次变革；其次，经济发展带来了新的需求；最后，文化交流让它更加多元。"


def _rows(config: str, task: str, n: int, instruction: str, output: str, start: int = 0) -> list[dict]:
    return [{"record_id": f"{config}/f.jsonl:{start + i}", "config": config, "task_type_major": [task],
             "instruction": f"{instruction}（{i}）", "input": "", "output": output + "。" * (i % 3)}
            for i in range(n)]


def frame(*extra: dict) -> pl.DataFrame:
    """zhihu: 30 open questions answered at length; exam: 30 multiple-choice items answered with
    an explanation; finance: 30 yes/no intent checks answered "是"/"不是"; plus ``extra``."""
    rows = (_rows("zhihu", "问答", 30, "为什么城市会不断扩张？", LONG)
            + _rows("exam", "试题", 30, "下列说法正确的是（ ） A. 甲 B. 乙 C. 丙 D. 丁", "A。" + LONG)
            + _rows("finance", "知识问答", 30, "用户表达的是退款意图吗？", "是"))
    return pl.DataFrame([*rows, *extra])


def dropped(name: str, f: pl.DataFrame, **params) -> set[str]:
    m = make_filter(name, **params).apply(f)
    return set(f.filter(~m.keep)["record_id"].to_list())


# ----------------------------------------------------------------------------- short_answer

def test_short_answer_keeps_a_one_letter_exam_answer_and_drops_three_chars_to_zhihu():
    f = frame({"record_id": "exam/x:1", "config": "exam", "task_type_major": ["试题"],
               "instruction": "下列说法正确的是（ ） A. 甲 B. 乙 C. 丙 D. 丁", "input": "", "output": "A"},
              {"record_id": "zhihu/x:1", "config": "zhihu", "task_type_major": ["问答"],
               "instruction": "如何评价这部电影？", "input": "", "output": "还行吧"},
              {"record_id": "finance/x:1", "config": "finance", "task_type_major": ["知识问答"],
               "instruction": "用户表达的是退款意图吗？", "input": "", "output": "不是"})
    assert dropped("short_answer", f) == {"zhihu/x:1"}
    values = dict(zip(f["record_id"], make_filter("short_answer").measure(f)))
    assert values["exam/x:1"] is None            # multiple choice: a closed request
    assert values["zhihu/x:1"] < -2.0            # far below its group's log length
    assert abs(values["finance/x:1"]) < 2.0      # short answers are normal in this group


def test_short_answer_statistics_come_from_the_group_not_one_global_threshold():
    # the same 6-character answer: an outlier among 100-character answers, normal among labels
    zhihu = {"record_id": "zhihu/x:2", "config": "zhihu", "task_type_major": ["问答"],
             "instruction": "谈谈你对远程办公的看法", "input": "", "output": "挺好的挺好"}
    label = {**zhihu, "record_id": "finance/x:2", "config": "finance", "task_type_major": ["知识问答"],
             "instruction": "谈谈这句话的意图"}
    assert dropped("short_answer", frame(zhihu, label)) == {"zhihu/x:2"}
    # a long answer is never "cut to a few characters"
    assert dropped("short_answer", frame({**zhihu, "output": "挺好" * 8}), max_chars=10) == set()


def test_group_statistics_span_every_batch_of_the_pipeline():
    # the zhihu group's short answers come first: a batch of 7 holding only them would learn "short
    # is normal" and keep them; the whole group's statistics (long answers) drop them
    shorts = [{"record_id": f"zhihu/s:{i}", "config": "zhihu", "task_type_major": ["问答"],
               "instruction": f"如何评价这部电影？（{i}）", "input": "", "output": "还行吧"} for i in range(7)]
    f = pl.concat([pl.DataFrame(shorts), frame()], how="diagonal_relaxed")
    cfg = PipelineConfig(steps=[StepConfig("short_answer"), StepConfig("placeholder_answer")])
    small = run_pipeline(f, cfg, batch_rows=7)
    whole = run_pipeline(f, cfg, batch_rows=10**12, batch_bytes=10**15)
    assert set(small.dropped["record_id"]) == set(whole.dropped["record_id"]) >= {s["record_id"] for s in shorts}
    for step in ("short_answer", "placeholder_answer"):
        assert small.measured[step].equals(whole.measured[step])


def test_closed_request_wording():
    f = pl.DataFrame({"instruction": ["下列哪项正确？A. 甲 B. 乙", "3+5等于", "请解释为什么天空是蓝色的",
                                      "北宋时期谁发明了活字印刷？", "谁是你心中最伟大的作家？请说明理由。"],
                      "input": [""] * 5})
    assert closed_request(f).to_list() == [True, True, False, True, False]


# ----------------------------------------------------------------------------- placeholder_answer

def test_placeholder_answer():
    base = {"config": "zhihu", "task_type_major": ["问答"], "input": ""}
    f = frame({**base, "record_id": "p:1", "instruction": "如何学好数学？", "output": "略"},
              {**base, "record_id": "p:2", "instruction": "如何学好数学？", "output": "同上。"},
              {**base, "record_id": "p:3", "instruction": "如何学好数学？", "output": "无"},
              {**base, "record_id": "p:4", "instruction": "请抽取文中的人名", "output": "无"},
              {**base, "record_id": "p:5", "config": "finance", "task_type_major": ["知识问答"],
               "instruction": "这句话有退款意图吗？", "output": "无"})
    # 无 to an extraction (closed) request and in a group of short answers is an answer
    assert dropped("placeholder_answer", f) == {"p:1", "p:2", "p:3"}


# ----------------------------------------------------------------------------- repeated_tail

def test_repeated_tail():
    s = "希望这个回答能够帮助到你。"
    assert tail_repeats("正文内容在这里。" + s * 3) == (3, len(s))
    assert tail_repeats("第一段。\n" + "这一段会被重复很多次的内容！\n" * 4)[0] == 4
    assert tail_repeats("两句话一组的段落在这里，第一句。第二句也在这里出现了。" * 3)[0] == 3
    assert tail_repeats("床前明月光，疑是地上霜。举头望明月，低头思故乡。")[0] == 1
    assert tail_repeats("好。好。好。好。") == (1, 0)  # units under 8 visible characters do not count
    f = pl.DataFrame({"record_id": ["a", "b", "c"], "output": [
        "正文。" + s * 3, "正文。" + s * 2, "1. 第一步先准备好材料。\n2. 第二步开始动手制作。\n3. 第三步检查一下结果。"]})
    assert dropped("repeated_tail", f) == {"a"}
    assert dropped("repeated_tail", f, min_repeats=2) == {"a", "b"}


# ----------------------------------------------------------------------------- near dedup answer check

def test_near_dedup_answer_check_keeps_shared_prompts_with_different_answers():
    rng = random.Random(0)  # a passage without repeats: its shingles dominate the whole text
    passage = "阅读下面的文字，完成下列小题。" + "".join(rng.choice(LONG) for _ in range(400))
    f = pl.DataFrame({"record_id": ["q:1", "q:2", "q:3"], "instruction": [passage] * 3, "input": ["", "", ""],
                      "output": ["第一小题的答案是作者借景抒情，表达了思乡之情。",
                                 "第二小题考查修辞手法：文中运用了比喻和拟人。",
                                 "第一小题的答案是作者借景抒情，表达了思乡之情！"]})
    cfg = MinHashConfig(threshold=0.7)
    assert dedup.near_duplicates(f, cfg).n_removed == 2                 # the shared passage dominates
    res = dedup.near_duplicates(f, cfg, answer_min_similarity=0.7)
    assert res.n_removed == 1 and res.clusters.filter(~pl.col("survivor") & (pl.col("cluster_size") > 1))["record_id"].to_list() == ["q:3"]
    assert dedup.answer_similarity("abcdef", "abcdef") == 1.0 and dedup.answer_similarity("ab", "cd") == 0.0


# ----------------------------------------------------------------------------- injector kinds

@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    return pl.DataFrame(_rows("zhihu", "问答", 40, "请介绍一下城市扩张的原因", LONG))


def test_injector_new_kinds(clean):
    noisy = noise.inject_noise(clean, noise.NoiseConfig(kinds=NEW_KINDS, rate=0.1, seed=3))
    assert noise.noise_counts(noisy) == {k: 4 for k in NEW_KINDS}
    src = dict(zip(clean["record_id"], clean["output"]))
    for r in noisy.filter(pl.col("noise_kind").is_not_null()).iter_rows(named=True):
        out, orig = r["output"], src[r["noise_of"]]
        if r["noise_kind"] == "short_answer":
            assert 2 <= len(out.rstrip("。")) <= 4 and orig.startswith(out.rstrip("。"))
        elif r["noise_kind"] == "placeholder":
            assert out in noise.PLACEHOLDER_ANSWERS
        elif r["noise_kind"] == "repeated_tail":
            assert out.startswith(orig.rstrip()) and tail_repeats(out)[0] >= 3
        else:
            changed = sum(a != b for c in ("instruction", "output")
                          for a, b in zip(r[c], clean.filter(pl.col("record_id") == r["noise_of"])[c].item()))
            n = len(r["instruction"]) + len(r["output"])
            assert 1 <= changed <= max(1, round(0.02 * n)) + 1 and len(out) == len(orig)
    assert "near_dup_subst" in noise.DUPLICATE_KINDS


def test_short_answer_kind_only_on_open_requests():
    f = pl.DataFrame([
        {"record_id": "a", "instruction": "下列正确的是 A. 甲 B. 乙", "input": "", "output": "A。" + LONG},
        {"record_id": "b", "instruction": "请解释城市扩张的原因", "input": "", "output": LONG}])
    noisy = noise.inject_noise(f, noise.NoiseConfig(kinds=("short_answer",), counts={"short_answer": 1}))
    assert noisy.filter(pl.col("noise_kind") == "short_answer")["noise_of"].to_list() == ["b"]


# ----------------------------------------------------------------------------- the benchmark targets

def _benchmark(frame_: pl.DataFrame, rate: float, seed: int) -> tuple[dict[str, float], float, float]:
    config = PipelineConfig.from_yaml(RECIPE)
    kept = run_pipeline(frame_, config).kept
    noisy = noise.inject_noise(kept, noise.NoiseConfig(kinds=NEW_KINDS, rate=rate, seed=seed))
    drops, pos = noise.attribute_drops(run_pipeline(noisy, config), noisy)
    recall = dict(pos.group_by("noise_kind").agg(pl.col("caught_step").is_not_null().mean()).iter_rows())
    n_clean = noisy.height - pos.height
    return recall, float(pos["caught_step"].is_not_null().mean()), 1 - (drops["outcome"] == "fp").sum() / n_clean


def test_benchmark_bundled_clean_kept_and_overall_recall():
    # the bundled set is small (472 kept records, 24 noisy per kind here): per-kind recall moves by
    # 1/24 with the seed, so this tier checks the overall recall and the clean records kept
    recall, overall, kept = _benchmark(data.load(source="bundled").frame, 0.05, 3)
    assert kept >= 0.97
    assert overall >= 0.95, recall
    assert recall["repeated_tail"] >= 0.95 and recall["placeholder"] >= 0.95


@pytest.mark.slow
def test_benchmark_real_data_targets(real_data):
    recall, overall, kept = _benchmark(data.load(source=str(real_data)).frame, 0.02, 0)
    assert kept >= 0.97
    assert overall >= 0.95
    assert min(recall.values()) >= 0.95, recall


# ----------------------------------------------------------------------------- the review on real data

def _review() -> list[dict]:
    with REVIEW.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_review_file_shape_and_reviewed_precision():
    rows = _review()
    assert rows and set(rows[0]) == {"record_id", "rule", "verdict", "note"}
    assert {r["verdict"] for r in rows} <= {"noise", "clean"}
    assert all(r["note"] and len(r["note"]) <= 120 for r in rows)   # a reason, never the record text
    final = [r for r in rows if r["rule"] == "near_dedup"]
    assert len(final) == 30
    assert sum(r["verdict"] == "noise" for r in final) / len(final) >= 0.9


def test_review_ids_exist_in_the_real_data(real_data):
    ids = set(data.load(source=str(real_data)).frame["record_id"].to_list())
    missing = [r["record_id"] for r in _review() if r["record_id"] not in ids]
    assert not missing


def test_drops_are_audited_with_value_and_reason():
    f = frame({"record_id": "zhihu/x:9", "config": "zhihu", "task_type_major": ["问答"],
               "instruction": "如何评价这部电影？", "input": "", "output": "还行吧"},
              {"record_id": "zhihu/x:10", "config": "zhihu", "task_type_major": ["问答"],
               "instruction": "如何学好数学？", "input": "", "output": "略"},
              {"record_id": "zhihu/x:11", "config": "zhihu", "task_type_major": ["问答"],
               "instruction": "如何学好数学？", "input": "", "output": LONG + "多做练习题才是关键。" * 3})
    res = run_pipeline(f, PipelineConfig.from_dict({"steps": [
        # "略" is also a short answer: placeholder_answer first so that each rule shows its drop
        {"filter": "placeholder_answer"}, {"filter": "repeated_tail"}, {"filter": "short_answer"}]}))
    d = res.dropped.sort("record_id")
    assert d["record_id"].to_list() == ["zhihu/x:10", "zhihu/x:11", "zhihu/x:9"]
    assert d["step_name"].to_list() == ["placeholder_answer", "repeated_tail", "short_answer"]
    assert d["value"].null_count() == 0 and d["detail"].null_count() == 0
    assert res.steps.filter(pl.col("name") == "short_answer")["dropped"].item() == 1
