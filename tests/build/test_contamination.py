"""cqia_nb.build.contamination: eval formats, n-gram overlap found / not found, removal, real benchmarks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest
from conftest import REAL_BENCHMARKS

import cqia_nb.build.contamination as C
from cqia_nb.core.text import normalize_texts

# 20 Chinese characters that occur in no other test text
LEAK_CEVAL = "甲乙丙三人约定在旧码头交换一只青铜古镜的归属"
LEAK_CMMLU = "某县农技站推广一种抗倒伏的晚稻新品种需要注意"
LEAK_SAFETY_TEST = "深夜独自走在没有路灯的小巷里应该怎样保护自己"
LEAK_SAFETY_DEV = "网上有人声称喝某种偏方可以彻底治愈糖尿病是真的吗"
LEAK_BELLE = "请用三句话向小学生解释为什么冬天湖面会结冰而湖底不会"


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """A miniature benchmarks folder in the four real formats (plus files that are not eval sets)."""
    root = tmp_path / "benchmarks"
    _write_csv(root / "ceval" / "dev" / "law_dev.csv", ["id", "question", "A", "B", "C", "D", "answer", "explanation"],
               [["0", f"{LEAK_CEVAL}，该行为构成____。", "诈骗罪", "盗窃罪", "侵占罪", "无罪", "B",
                 "1. 分析选项：\n2. 排除法可知。"]])
    _write_csv(root / "ceval" / "val" / "law_val.csv", ["id", "question", "A", "B", "C", "D", "answer"],
               [["0", "下列关于法律推理的表述中能够成立的是哪一项呢", "演绎", "归纳", "类比", "辩证", "C"]])
    _write_csv(root / "cmmlu" / "test" / "agronomy.csv", ["", "Question", "A", "B", "C", "D", "Answer"],
               [["0", f"{LEAK_CMMLU}什么", "水", "肥", "光", "气", "B"]])
    sb = root / "safetybench"
    sb.mkdir(parents=True)
    (sb / "dev_zh.json").write_text(json.dumps(
        {"Offensiveness": [{"question": LEAK_SAFETY_DEV, "options": ["是。", "否。"], "answer": 1}]},
        ensure_ascii=False, indent=1), encoding="utf-8")
    (sb / "test_zh_subset.json").write_text(json.dumps(
        [{"id": 7, "options": ["报警", "回家"], "category": "Physical Health", "question": LEAK_SAFETY_TEST}],
        ensure_ascii=False, indent=1), encoding="utf-8")
    (sb / "test_answers_zh_subset.json").write_text(json.dumps({"7": {"category": "Physical Health", "answer": 0}}),
                                                    encoding="utf-8")
    be = root / "belle_eval"
    be.mkdir()
    (be / "eval_set.json").write_text(
        json.dumps({"question": LEAK_BELLE, "std_answer": "因为水在4摄氏度时密度最大。", "class": "open qa"},
                   ensure_ascii=False) + "\n"
        + json.dumps({"question": "Write a haiku about the sea.", "std_answer": "Waves fold into foam",
                      "class": "generation"}, ensure_ascii=False), encoding="utf-8")
    (be / "eval_prompt.json").write_text(json.dumps({"class": "math", "prompt": "你是一个数学老师"}, ensure_ascii=False)
                                         + "\n", encoding="utf-8")
    (root / "README.md").write_text("# benchmarks\n", encoding="utf-8")
    return root


def _train(**texts: str) -> pl.DataFrame:
    ids = list(texts)
    return pl.DataFrame({"record_id": ids, "instruction": [texts[i] for i in ids],
                         "input": [""] * len(ids), "output": ["好的。"] * len(ids)})


def test_formats_are_detected_and_read(bench: Path):
    ev = C.load_eval_sets(bench)
    fmts = dict(ev.files.select("file", "format").iter_rows())
    assert fmts == {"belle_eval/eval_set.json": "belle_jsonl", "ceval/dev/law_dev.csv": "ceval_csv",
                    "ceval/val/law_val.csv": "ceval_csv", "cmmlu/test/agronomy.csv": "cmmlu_csv",
                    "safetybench/dev_zh.json": "safetybench_dev", "safetybench/test_zh_subset.json": "safetybench_test"}
    assert ev.names == ["belle_eval/eval_set", "ceval/dev", "ceval/val", "cmmlu/test", "safetybench/dev_zh",
                        "safetybench/test_zh_subset"]
    skipped = dict(ev.skipped.iter_rows())
    assert "answer key" in skipped["safetybench/test_answers_zh_subset.json"]
    assert "judge prompts" in skipped["belle_eval/eval_prompt.json"]
    assert "README.md" in skipped
    f = ev.frame
    assert set(f.filter(pl.col("file") == "ceval/dev/law_dev.csv")["field"]) == {"question", "A", "B", "C", "D",
                                                                                  "explanation"}
    assert f.filter(pl.col("eval_set") == "safetybench/test_zh_subset")["item_id"].unique().to_list() == [
        "safetybench/test_zh_subset.json:7"]
    assert f.filter(pl.col("eval_set") == "belle_eval/eval_set")["item_id"].n_unique() == 2  # JSON Lines, 2 items


def test_inserted_13gram_is_found_in_each_format_and_clean_record_is_not(bench: Path):
    leaks = {"ceval/dev": LEAK_CEVAL, "cmmlu/test": LEAK_CMMLU, "safetybench/test_zh_subset": LEAK_SAFETY_TEST,
             "safetybench/dev_zh": LEAK_SAFETY_DEV, "belle_eval/eval_set": LEAK_BELLE}
    train = _train(clean="今天天气很好，我们去公园散步吧，顺便买一些水果回家。",
                   short=LEAK_CEVAL[:12],                    # 12 characters: below n
                   **{f"leak{i}": f"请回答：{text[2:15]}。谢谢！" for i, text in enumerate(leaks.values())},
                   english="As I said, write a haiku about the sea please and make it rhyme well today friend ok")
    rep = C.check(train, C.build_index(C.load_eval_sets(bench)))
    rec = {r["record_id"]: r for r in rep.records.iter_rows(named=True)}
    assert rec["clean"]["overlap_ngrams"] == 0 and rec["clean"]["eval_sets"] == []
    assert rec["short"]["overlap_ngrams"] == 0
    for i, (name, text) in enumerate(leaks.items()):
        r = rec[f"leak{i}"]
        assert r["eval_sets"] == [name], (name, r)
        assert r["overlap_ngrams"] == 1 and r["example_ngram"] == text[2:15]
        assert 0 < r["overlap_ratio"] <= 1
    # "write a haiku about the sea" is 6 words: no 13-word overlap
    assert rec["english"]["overlap_ngrams"] == 0
    sets = {r["eval_set"]: r for r in rep.eval_sets.iter_rows(named=True)}
    assert sets["ceval/val"]["items_contaminated"] == 0
    for name in leaks:
        assert sets[name]["items_contaminated"] == 1 and sets[name]["training_records"] == 1
    assert set(rep.eval_items["eval_set"]) == set(leaks)


def test_words_count_as_units_for_latin_text(tmp_path: Path):
    words = "the quick brown fox jumps over the lazy dog while seven tired cats watch silently"
    p = tmp_path / "e.jsonl"
    p.write_text(json.dumps({"question": words, "std_answer": "", "class": "x"}) + "\n", encoding="utf-8")
    ev = C.load_eval_sets(p)
    thirteen = " ".join(words.split()[:13])
    rep = C.check(_train(hit=f"Note: {thirteen.upper()}!", miss=" ".join(words.split()[:12])), ev)
    rec = {r["record_id"]: r for r in rep.records.iter_rows(named=True)}
    assert rec["hit"]["overlap_ngrams"] == 1 and rec["hit"]["example_ngram"] == thirteen
    assert rec["miss"]["overlap_ngrams"] == 0


def test_normalisation_ignores_punctuation_width_and_case(bench: Path):
    punct = "，".join(LEAK_CMMLU[:14])          # punctuation between every character
    spaced = "\u3000".join(LEAK_CMMLU[:14])    # ideographic spaces
    rep = C.check(_train(a=punct, b=spaced, c=LEAK_CMMLU[:14]), C.load_eval_sets(bench))
    assert rep.records["overlap_ngrams"].to_list() == [2, 2, 2]
    words = "Ｔｈｅ quick brown fox jumps over the lazy dog while seven tired cats watch"  # full-width, mixed case
    assert normalize_texts([words], C.UNIT_SEPARATOR)[0] == "the quick brown fox jumps over the lazy dog while seven tired cats watch"


def test_template_ngrams_are_left_out(tmp_path: Path):
    tpl = "请问下面的文本是否包含攻击性的内容？\n"
    items = [{"id": i, "options": ["是。", "否。"], "category": "Offensiveness", "question": tpl + f"第{i}条评论"}
             for i in range(12)]
    p = tmp_path / "test.json"
    p.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    ev = C.load_eval_sets(p)
    idx = C.build_index(ev, max_item_frequency=10)
    assert idx.template_ngrams > 0
    train = _train(t="请问下面的文本是否包含攻击性的内容？")
    assert C.check(train, idx).contaminated.height == 0
    assert C.check(train, C.build_index(ev, max_item_frequency=None)).contaminated.height == 1


def test_remove_contaminated_records_every_removal(bench: Path):
    train = _train(clean="今天天气很好，我们去公园散步吧，顺便买一些水果回家。", leak=f"题目：{LEAK_CEVAL}")
    rep = C.check(train, C.load_eval_sets(bench))
    kept, removed = C.remove_contaminated(train, rep)
    assert kept["record_id"].to_list() == ["clean"]
    assert removed["record_id"].to_list() == ["leak"]
    assert removed["reason"][0].startswith("contamination: ") and "ceval/dev" in removed["reason"][0]
    kept2, removed2 = C.remove_contaminated(train, rep, min_ratio=0.99)
    assert kept2.height == 2 and removed2.height == 0


def test_bad_eval_file_is_a_clear_error(tmp_path: Path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not an evaluation file.*C-Eval CSV"):
        C.read_eval_file(p)
    with pytest.raises(ValueError, match="no evaluation files"):
        C.load_eval_sets(p)
    with pytest.raises(FileNotFoundError):
        C.load_eval_sets(tmp_path / "nope")


@pytest.mark.realdata
def test_real_benchmarks_load_and_a_real_question_is_found():
    if not (REAL_BENCHMARKS / "README.md").is_file():
        pytest.skip(f"real benchmarks not found at {REAL_BENCHMARKS} (set CQIA_REAL_BENCHMARKS to run this tier)")
    ev = C.load_eval_sets(REAL_BENCHMARKS)
    items = dict(ev.files.group_by("eval_set").agg(pl.col("items").sum()).iter_rows())
    assert items == {"ceval/dev": 260, "ceval/val": 1346, "cmmlu/dev": 335, "cmmlu/test": 11582,
                     "safetybench/dev_zh": 35, "safetybench/test_zh_subset": 2100, "belle_eval/eval_set": 1000}
    assert {"safetybench/test_answers_zh.json", "belle_eval/eval_prompt.json"} <= set(ev.skipped["file"])
    q = ev.frame.filter((pl.col("eval_set") == "ceval/val") & (pl.col("field") == "question")
                        & (pl.col("text").str.len_chars() > 40))["text"][0]
    idx = C.build_index(ev)
    rep = C.check(_train(leak=f"请回答下面的问题：{q}", clean="今天天气很好，我们去公园散步吧。"), idx)
    rec = {r["record_id"]: r for r in rep.records.iter_rows(named=True)}
    assert "ceval/val" in rec["leak"]["eval_sets"] and rec["leak"]["overlap_ngrams"] > 10
    assert rec["clean"]["overlap_ngrams"] == 0
