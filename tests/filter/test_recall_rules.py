"""Issue 14, "nothing missed": the rules for garbled text (mojibake, symbol runs) and unfinished
answers, each with the noise it must catch and real-looking clean records it must keep; and the
benchmark's credit for noise a transform repairs (traditional characters converted back)."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest

from cqia_nb.filter import PipelineConfig, noise, run_pipeline
from cqia_nb.filter.framework import make_filter
from cqia_nb.filter.rules import gbk_mojibake_chars, names_no_choice, unclosed_pair

PROSE = "博物馆每周二至周日开放，上午九点开门，下午五点停止入场。周一闭馆，节假日另行通知。"


def frame(outputs, instructions=None, inputs=None) -> pl.DataFrame:
    n = len(outputs)
    return pl.DataFrame({
        "record_id": [f"t:{i}" for i in range(n)],
        "instruction": instructions or ["请介绍一下这家博物馆。"] * n,
        "input": inputs or [""] * n,
        "output": list(outputs),
    }, schema={"record_id": pl.String, "instruction": pl.String, "input": pl.String, "output": pl.String})


def kept(name: str, outputs, **kw) -> list[bool]:
    instructions = kw.pop("instructions", None)
    inputs = kw.pop("inputs", None)
    return make_filter(name, **kw).apply(frame(outputs, instructions, inputs)).keep.to_list()


def gbk(text: str) -> str:
    """``text`` as UTF-8 bytes read as GBK: what a wrong decoder shows."""
    return text.encode("utf-8").decode("gbk", errors="replace")


# ----------------------------------------------------------------------------- mojibake


def test_gbk_mojibake_is_found_by_its_hidden_text():
    moj = gbk("我个人喜欢阻尼感强一些的钢笔")
    assert "\ufffd" not in moj  # only the GBK check can see it
    assert gbk_mojibake_chars(moj) == 14
    assert gbk_mojibake_chars("本文" + moj + "。") == 14
    # real Chinese gives no run of 2: rare characters, traditional text, classical quotes
    for clean in ("北宋毕昇发明了活字印刷术，羁绊，共婵娟，飓风来袭。", "這個博物館每週二至週日開放。",
                  "但愿人长久，千里共婵娟。", "惊悚剧《飓风》的羁绊", "テレビアニメの放送が決定した"):
        assert gbk_mojibake_chars(clean) <= 1, clean


def test_mojibake_catches_short_spans_and_spares_real_text():
    noisy = [
        "那是" + gbk("那你也会质疑他们这样的做法") + "，他们会不会被抓。",  # GBK, ends in U+FFFD too
        "豆瓣简介：" + gbk("我个人喜欢阻尼感") + "的钢笔。",                   # GBK, no U+FFFD
        "导演：" + "德".encode().decode("latin-1") + " | 1981-09-17",          # one 3-byte character
        "Ren" + "é".encode().decode("latin-1") + " 饰演男主角。",             # one 2-byte character: Ã©
        "o" + "’".encode().decode("latin-1") + " dowd 饰",                   # C1 controls
    ]
    clean = [
        "导演：Christophe Ruggia | 1981-09-17，法国电影 café société。",
        "汉语拼音 zhì——滞，滞留：停止。",
        "评分：★★★★☆ 8.1 分。温度 25°C ± 2°C，面积 30㎡。",
        "但愿人长久，千里共婵娟。羁绊与飓风。",
    ]
    assert kept("mojibake", noisy) == [False] * len(noisy)
    assert kept("mojibake", clean) == [True] * len(clean)
    # the GBK check can be turned off; then only the regex part counts
    assert kept("mojibake", [noisy[1]], gbk_min_chars=0) == [True]
    with pytest.raises(ValueError):
        make_filter("mojibake", gbk_min_chars=-1)


def test_mojibake_detail_names_gbk():
    m = make_filter("mojibake").apply(frame(["豆瓣简介：" + gbk("我个人喜欢阻尼感") + "的钢笔。"]))
    assert m.detail.to_list() == ["GBK mojibake (UTF-8 read as GBK)"]


# ----------------------------------------------------------------------------- symbol runs


def test_symbol_run_catches_garbage_and_spares_decoration():
    noisy = [PROSE[:10] + "¤☆●†¬■œ△☆µ▲" + PROSE[10:], PROSE + "ž€□¤◆◆□â†", "◇Â★¤ž¤™œ¬†‡¿"]
    clean = [
        PROSE + "评分：★★★★☆",                        # ratings repeat two symbols
        "进度 ▓▓▓░░░░░░░░░ 30%",                       # bars
        "┏┈┈┈┈┈┈┈┈┓\n  今日穿搭\n┗┈┈┈┈┈┈┈┈┛",           # frames
        "╭◜◝╮ 好可爱 ╰◟◞╯ 🍔🍟🍕🌭🍿🧁🍩",               # kaomoji and emoji
        "法国甜点 crème brûlée，配 café au lait。",     # Latin-1 letters inside words
        "①②③④⑤⑥ 六个步骤，→ ← ↑ ↓ 方向键。",
    ]
    assert kept("symbol_run", noisy) == [False] * len(noisy)
    assert kept("symbol_run", clean) == [True] * len(clean)
    m = make_filter("symbol_run").apply(frame(noisy[:1]))
    assert m.value.to_list() == [10.0] and m.detail.to_list() == ["¤☆●†¬■œ△☆µ▲"]
    assert kept("symbol_run", ["分隔 ■◆▲●★ 线"], min_distinct=6) == [True]
    with pytest.raises(ValueError):
        make_filter("symbol_run", min_distinct=1)


# ----------------------------------------------------------------------------- unfinished answers


CUT = [
    PROSE + "另外，馆内设有餐厅和纪念品商店，",                       # continuing mark after a word
    "宋玉《登徒子好色赋》：“此郎亦可",                               # unclosed quote at the end
    "古诗：\n1、春眠不觉晓。\n——孟浩然《春",                         # unclosed title mark
    '{"公司": ["北辰医药", "东方',                                   # JSON cut inside a string
    "['大', '信', '息'",                                             # a Python list cut
    "可以这样写：\n```python\nfor i in range(3):\n    print(",         # code block never closed
    "这个问题的原因有很多，主要是因为天气和",                         # ends on 和
    "博物馆周一闭馆，节假日开放时间另行通知，因此",                   # ends on 因此
    PROSE + "\n大",                                                  # dangling last line
]
KEEP = [
    PROSE,
    "故选A",                                                         # a label
    "积极",                                                          # a one-word label
    "床前明月光\n疑是地上霜\n举头望明月\n低头思故乡",                  # a poem: no punctuation
    "步骤如下：\n1. 打开设置\n2. 选择网络\n3. 点击连接",                # a list
    "可以这样写：\n```python\nfor i in range(3):\n    print(i)\n```",  # code
    "function f() {\n  return 1;\n}",
    '{"公司": ["北辰医药"], "人物": []}',                              # complete JSON
    "[品牌]#雅诗兰黛# 小棕瓶真的好用",                                 # xhs tags, not JSON
    "因此答案为ABD",                                                  # exam verdict
    PROSE + "\n\n以上",                                               # sign-off
    PROSE + "规定“人民有居住及迁徙之自由。”\n\n自由",                  # a punchline echoing the line
    "这本书都会讲的（",                                               # an informal wry "（"
    PROSE + "答案为B。、",                                            # a stray mark after the verdict
    PROSE + "\n二、",                                                 # a list number left over
    "你说的对，\n我也这么想，\n就是这样，\n以后再说吧，",              # an author ending lines with commas
    "不",                                                            # a short answer
]


def test_unfinished_answer_catches_cuts():
    m = make_filter("unfinished_answer").apply(frame(CUT))
    assert m.keep.to_list() == [False] * len(CUT)
    assert all(d and d.split(":")[0] for d in m.detail.to_list())


def test_unfinished_answer_spares_complete_answers_without_a_full_stop():
    assert kept("unfinished_answer", KEEP) == [True] * len(KEEP)


def test_unfinished_answer_multiple_choice_must_name_a_choice():
    q = "下列属于法的特征的是（ ）\nA. 社会公益性\nB. 技术规范性\nC. 国家强制性\nD. 国家引导性"
    cut = "法是由国家强制力保证实施的社会规范，国家强制力是法的最后一道防线，这是法区别于其他社会规范的"
    named = ["法由国家强制力保证实施，其他社会规范则不然。故选C。",
             "法由国家强制力保证实施，而社会公益性并非法的特征，因此答案为c",
             "法由国家强制力保证实施，其他规范依靠舆论和内心，所以是国家强制性。",  # the option's text
             "①②说法错误，③④符合题意，材料体现了国家强制性之外的内容，排除。"]
    f = frame([cut, *named], instructions=[q] * 5)
    assert make_filter("unfinished_answer").apply(f).keep.to_list() == [False, True, True, True, True]
    assert make_filter("unfinished_answer", choice=False).apply(f).keep.to_list() == [True] * 5
    # not a choice question: an explanation without letters is fine
    assert names_no_choice("解释一下法的特征。", cut) is False
    assert names_no_choice(q, "太短了") is False


def test_unfinished_answer_checks_can_be_turned_off():
    for flag, i in (("continuing", 0), ("unclosed", 1), ("never_final", 6), ("dangling_line", 8)):
        assert kept("unfinished_answer", [CUT[i]], **{flag: False}) == [True], flag


def test_unclosed_pair():
    assert unclosed_pair("古诗：\n——孟浩然《春") == "unclosed 《"
    assert unclosed_pair("农业农村部：17种病虫害列入《") == "unclosed 《"
    assert unclosed_pair("故选D“") is None                     # a stray mark after a verdict
    assert unclosed_pair("他说：“好。”\n然后走了") is None      # the quote closed in its own sentence
    assert unclosed_pair('{"a": "x{y"}') is None                # brackets inside strings do not count
    assert unclosed_pair("```\ncode\n```") is None
    assert unclosed_pair("") is None


# ----------------------------------------------------------------------------- repaired noise


def _one_step(**kw) -> PipelineConfig:
    return PipelineConfig.from_dict({"steps": [{"filter": "traditional", "convert": True, **kw}]})


def test_traditional_noise_repaired_by_the_transform_counts_as_caught():
    clean = frame(["这个博物馆每周二至周日开放，周一闭馆，节假日另行通知。",
                   "北宋毕昇发明了活字印刷术，这是中国古代的四大发明之一。",
                   "请参考之前的说明，这个问题们已经说过了。"])
    noisy = noise.inject_noise(clean, noise.NoiseConfig(kinds=("traditional_chars",), counts={"traditional_chars": 2},
                                                        seed=0, replace_sources=True))
    res = run_pipeline(noisy, _one_step())
    assert res.dropped.height == 0
    # without the clean frame only drops count, as before
    assert noise.score_filters(res, noisy).filter(pl.col("step") == noise.ALL)["tp"].to_list()[-1] == 0
    _, pos = noise.attribute_drops(res, noisy, clean)
    assert pos["caught_step"].to_list() == ["traditional", "traditional"]
    assert pos["caught_via"].to_list() == ["repaired", "repaired"]
    s = noise.score_filters(res, noisy, clean)
    row = s.filter((pl.col("step") == "traditional") & (pl.col("noise_kind") == "traditional_chars"))
    assert row["tp"].item() == 2 and row["fp"].item() == 0 and row["recall"].item() == 1.0
    t = noise.caught_by_kind(res, noisy, clean)
    assert t.filter(pl.col("noise_kind") == "traditional_chars")["traditional"].item() == 2


def test_a_transform_that_did_not_undo_the_noise_is_not_credited():
    clean = frame(["这个博物馆每周二至周日开放，周一闭馆。"])
    noisy = noise.inject_noise(clean, noise.NoiseConfig(kinds=("traditional_chars",), counts={"traditional_chars": 1},
                                                        seed=0, replace_sources=True))
    # a threshold the noisy record does not reach: nothing is converted, nothing credited
    untouched = run_pipeline(noisy, _one_step(max_ratio=0.99))
    assert noise.repaired(untouched, noisy, clean) == {}
    # converted, but the text no longer matches its source (something else changed it too)
    res = run_pipeline(noisy, _one_step())
    changed = res.kept.with_columns(pl.col("output") + "多了一句。")
    res.kept = changed
    assert noise.repaired(res, noisy, clean) == {}


def test_repaired_allows_the_converters_own_change_of_the_source():
    # the clean source holds 於 (kept as written: under the transform's threshold on its own);
    # the converted noisy copy has 于 there: still repaired, the noise itself is gone
    clean = frame(["这个问题们说过，学习於书本。"])
    noisy = noise.inject_noise(clean, noise.NoiseConfig(kinds=("traditional_chars",), counts={"traditional_chars": 1},
                                                        seed=0, replace_sources=True))
    res = run_pipeline(noisy, _one_step())
    assert res.kept["output"].to_list() == ["这个问题们说过，学习于书本。"]
    assert list(noise.repaired(res, noisy, clean).values()) == ["traditional"]


# ----------------------------------------------------------------------------- the review on real data

REVIEW = Path(__file__).resolve().parents[2] / "data" / "reviews" / "issue14-recall-review.csv"


def _review() -> list[dict]:
    with REVIEW.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_recall_review_shape_and_precision():
    rows = _review()
    assert rows and set(rows[0]) == {"record_id", "rule", "verdict", "note"}
    assert {r["verdict"] for r in rows} <= {"noise", "clean"}
    assert all(r["note"] and len(r["note"]) <= 120 for r in rows)   # a reason, never the record text
    final = [r for r in rows if r["rule"] == "unfinished_answer"]
    assert len(final) >= 10
    assert sum(r["verdict"] == "noise" for r in final) / len(final) >= 0.9


@pytest.mark.realdata
def test_recall_review_covers_every_real_drop(real_data):
    """unfinished_answer drops few real records, so the review read all of them (not a sample); the
    new mojibake checks and symbol_run drop none beyond the three real U+FFFD records."""
    import warnings

    from cqia_nb import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = data.load(source=str(real_data)).frame
    dropped = frame.filter(~make_filter("unfinished_answer").apply(frame).keep)["record_id"].to_list()
    assert sorted(dropped) == sorted(r["record_id"] for r in _review() if r["rule"] == "unfinished_answer")
    assert make_filter("symbol_run").apply(frame).keep.all()
    moj = make_filter("mojibake").apply(frame)
    assert (~moj.keep).sum() == 3 and set(moj.detail.filter(~moj.keep).to_list()) == {"\ufffd"}
