"""Rule filters: each catches its case and spares a clean twin; edge cases never crash."""

from __future__ import annotations

import polars as pl
import pytest

import cqia_nb.filter.rules as rules
from cqia_nb.filter.framework import Transform, make_filter
from conftest import ref_char_rep

CLEAN_Q = "请介绍一下这家博物馆的开放时间。"
CLEAN_A = "博物馆每周二至周日开放，上午九点开门，下午五点停止入场。周一闭馆，节假日另行通知。"


def frame(*outputs: str | None, instruction: str | None = CLEAN_Q, input: str | None = "") -> pl.DataFrame:
    n = len(outputs)
    return pl.DataFrame({
        "record_id": [f"t.jsonl:{i + 1}" for i in range(n)],
        "instruction": [instruction] * n, "input": [input] * n, "output": list(outputs),
    }, schema={"record_id": pl.String, "instruction": pl.String, "input": pl.String, "output": pl.String})


def kept(name: str, *outputs: str | None, **params) -> list[bool]:
    return make_filter(name, **params).apply(frame(*outputs)).keep.to_list()


# (filter, params, noisy output, clean twin)
CASES = [
    ("url", {}, "详见 http://x.cn 了解更多。", "详见官网了解更多。"),
    ("url", {}, "更多资料请访问 www.example-shop.com 查看。", "更多资料请到官网查看。"),
    ("url", {}, "下单请去 haoshop.cn 哦。", "下单请去官方商城哦。"),
    ("email", {}, "有问题请发邮件到 help@shop.cn 联系我们。", "有问题请在评论区联系我们。"),
    ("phone", {}, "预约电话13812345678，欢迎来电。", "预约请在小程序里完成，欢迎光临。"),
    ("phone", {}, "咨询热线 +86 139-1234-5678。", "咨询请到服务台。"),
    ("phone", {}, "座机：010-62345678。", "座机已经停用了。"),
    ("phone", {}, "全国客服400-123-4567。", "全国各地都有门店。"),
    ("qq_wechat", {}, "有问题加QQ：12345678 交流。", "有问题可以在群里交流。"),
    ("qq_wechat", {}, "加微信 abc_123456 领取资料。", "资料在附件里，可以直接领取。"),
    ("qq_wechat", {}, "vx：shop8888 私聊。", "有事私聊我。"),
    ("ads", {}, "想要同款的加微信，扫码领取优惠。", "同款在很多商店都能买到。"),
    ("ads", {}, "限时抢购，点击链接领取红包！", "这家店的服务很周到。"),
    ("html", {}, "这是第一段。<br/>这是第二段&nbsp;内容。", "这是第一段。\n这是第二段内容。"),
    ("html", {}, "<p>答案如下</p>", "答案如下"),
    ("html", {}, "示意图：![图片](http://img.x.cn/a.png)", "示意图见下文。"),
    ("html", {}, "参考[链接](https://example.com/page)。", "参考书末的链接列表。"),
    ("flagged_words", {}, "代开发票，刷单日结。", "按规定开具发票，按月结算。"),
    ("special_chars", {}, "🎉🎉🎉✨✨✨💖💖💖🌟🌟", "今天天气很好，适合出门散步！"),
    ("mojibake", {}, "作品以â€œæ‚¬ç–‘â€著称。", "作品以“悬疑”著称。"),
    ("mojibake", {}, "锟斤拷锟斤拷烫烫烫", "这是一段正常的文字。"),
    ("mojibake", {}, "中文测试\ufffd\ufffd内容", "中文测试内容"),
    ("mojibake", {}, "简介：" + "我个人喜欢阻尼感强一些的钢笔".encode().decode("gbk") + "钢笔。", "简介：我个人喜欢钢笔。"),
    ("symbol_run", {}, CLEAN_A + "◆€¤☆Â○◇§", CLEAN_A + "评分：★★★★☆"),
    ("char_repetition", {}, "啊" * 200 + CLEAN_A, CLEAN_A),
    ("ngram_repetition", {}, CLEAN_A * 5, CLEAN_A),
    ("consecutive_repeats", {}, CLEAN_A + "综上所述" * 10, CLEAN_A + "综上所述，开放时间以官网为准。"),
    ("non_chinese_ratio", {"field": "output"}, "The museum opens at nine every morning and closes at five in the afternoon.",
     "博物馆上午九点开门，下午五点闭馆，周一休息（Monday closed）。"),
    ("traditional", {}, "這個博物館每週二至週日開放，週一閉館。", "这个博物馆每周二至周日开放，周一闭馆。"),
    ("empty_output", {}, "   \u200b ", "有。"),
    ("empty_output", {}, "。。。", "0"),
    ("truncated", {}, CLEAN_A + "另外，馆内设有餐厅和纪念品商店，游客可以在参观之后", CLEAN_A + "另外，馆内设有餐厅和纪念品商店。"),
    ("truncated", {}, CLEAN_A + "另外馆内还有餐厅、纪念品商店和儿童活动区，", CLEAN_A + "另外馆内还有餐厅。"),
    ("unfinished_answer", {}, "开放时间以官网为准，节假日和", "开放时间以官网为准，节假日除外。"),
    ("unfinished_answer", {}, "出自李白《静夜", "出自李白《静夜思》"),
    ("length", {"min_chars": 5, "max_chars": 100}, "太短", "长度刚好合适的回答。"),
    ("length", {"min_chars": 1, "max_chars": 20}, "这个回答太长了" * 10, "长度合适。"),
]


@pytest.mark.parametrize("name,params,noisy,clean", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_catches_its_case_and_spares_the_clean_twin(name, params, noisy, clean):
    assert kept(name, noisy, clean, **params) == [False, True]


def test_pattern_filters_report_count_and_first_match():
    m = make_filter("url").apply(frame("见 http://a.cn 和 https://b.com/x 两处。"))
    assert m.value.to_list() == [2.0]
    assert m.detail.to_list() == ["http://a.cn"]
    m = make_filter("phone").apply(frame("电话13812345678或13987654321。"))
    assert m.value.to_list() == [2.0] and m.detail.to_list() == ["13812345678"]


def test_answer_repeats_question():
    q = "为什么秋天树叶会变黄并且掉落下来呢"
    f = frame(q, "树叶变黄是因为叶绿素分解，类胡萝卜素显现出来，天冷以后叶柄形成离层，叶子就掉了。",
              "A", instruction=q)
    assert make_filter("answer_repeats_question").apply(f).keep.to_list() == [False, True, True]
    # an option picked from the question's list is not a restatement
    opts = frame("金融诈骗", instruction="判断事件类型，从以下选项中选择：金融诈骗、企业融资、高管变动、股权质押、业绩预告")
    assert make_filter("answer_repeats_question").apply(opts).keep.to_list() == [True]


def test_phone_does_not_match_inside_longer_digit_runs():
    assert kept("phone", "订单号 213812345678901 已发货。", "身份证号码 110101199003071234") == [True, True]


def test_url_allows_reference_sites_and_code():
    sf = "参考 https://developer.mozilla.org/zh-CN/docs/Web 的说明。"
    code = "用法：\n```\nfetch('http://api.shop.cn/v1')\n```\n就可以了。"
    assert kept("url", sf, code) == [True, True]
    assert kept("url", sf, allow_domains=[]) == [False]


def test_html_excludes_code_blocks():
    code = "可以这样写：\n```html\n<div class=\"box\"><p>内容</p></div>\n```\n外层用 `<div>` 包起来。"
    prose_in_code_text = "用<button>触发事件：\n```\n<button>Click</button>\n```"
    assert kept("html", code, prose_in_code_text) == [True, True]
    assert kept("html", "外层<div>包起来</div>") == [False]


def test_email_ignores_module_paths():
    assert kept("email", "node_modules/.1.2.3@vue-loader/index.js 报错") == [True]


def test_flagged_words_user_lists(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("# comment\n神秘词\n", encoding="utf-8")
    f = frame("这里有神秘词。", "这里什么都没有。")
    assert make_filter("flagged_words", words_file=str(words), use_shipped=False).apply(f).keep.to_list() == [False, True]
    assert make_filter("flagged_words", words=["什么都没"], use_shipped=False,
                       mode="count").apply(f).keep.to_list() == [True, False]


def test_shipped_word_list_is_ours_and_small():
    words = rules.read_words(str(rules.shipped_words_file()))
    assert 30 <= len(words) <= 200
    assert "代开发票" in words


def test_traditional_convert_is_a_transform_that_changes_not_drops():
    from cqia_nb.filter.framework import PipelineConfig, run_pipeline

    step = make_filter("traditional", convert=True).as_step()
    assert isinstance(step, Transform)
    f = frame("這個博物館每週二至週日開放。", "北宋毕昇发明了活字印刷术。")
    res = run_pipeline(f, PipelineConfig.from_dict({"steps": [{"filter": "traditional", "convert": True}]}))
    assert res.kept.height == 2 and res.dropped.height == 0
    assert res.kept["output"].to_list() == ["这个博物馆每周二至周日开放。", "北宋毕昇发明了活字印刷术。"]
    assert res.steps["changed"].to_list() == [1]
    assert res.measured["traditional"]["changed"].to_list() == [True, False]


def test_transform_leaves_its_input_alone():
    f = frame("這個博物館每週開放。")
    before = f.clone()
    out = make_filter("traditional", convert=True).as_step().apply(f)
    assert f.equals(before) and out.frame["output"][0] == "这个博物馆每周开放。"


def test_single_string_where_a_list_is_expected():
    assert kept("url", "见 haoshop.cn 。", allow_domains="haoshop.cn") == [True]
    assert kept("ads", "暗号123", patterns="暗号[0-9]+") == [False]


def test_traditional_skips_japanese():
    assert kept("traditional", "テレビアニメの放送が決定したぞ！範囲は広い。") == [True]


def test_truncated_spares_lists_code_and_short_answers():
    lst = "步骤如下：\n1. 打开设置\n2. 选择网络\n3. 点击连接"
    code = "可以这样写：\n```\nfor i in range(3):\n    print(i)\n```"
    short = "故选A"
    assert kept("truncated", lst, code, short) == [True, True, True]


def test_consecutive_repeats_spares_laughter_and_tables():
    laugh = CLEAN_A + "哈哈哈哈哈哈哈哈哈哈哈哈哈哈"
    table = "| 名称 | 数量 |\n| --- | --- | --- | --- | --- | --- |\n| 苹果 | 3 |"
    emoji = CLEAN_A + "☘️☘️☘️☘️☘️☘️☘️☘️☘️☘️"
    assert kept("consecutive_repeats", laugh, table, emoji) == [True, True, True]


@pytest.mark.parametrize("name", sorted(set(c[0] for c in CASES) | {"answer_repeats_question"}))
def test_edge_cases_never_crash(name):
    """Empty strings, nulls, a 1 MB string, mixed scripts: one value per record, no exception."""
    big = ("混合文字 mixed Ελληνικά русский 日本語の文 한국어 😀 " * 30_000)[:1_000_000]
    f = pl.DataFrame({
        "record_id": ["a", "b", "c", "d", "e"],
        "instruction": ["", None, "问题", big, "Q"],
        "input": [None, None, "", "", "ключ"],
        "output": ["", None, big, "答", "مرحبا بالعالم こんにちは"],
    })
    flt = make_filter(name)
    if isinstance(flt, Transform):  # pragma: no cover - none in CASES
        return
    m = flt.apply(f)
    assert m.value.len() == 5 and m.keep.len() == 5 and m.keep.null_count() == 0
    if m.detail is not None:
        assert m.detail.len() == 5


def test_transform_edge_cases():
    f = pl.DataFrame({"instruction": ["", None, "這個"], "input": [None, "", ""], "output": [None, "", "測試" * 300_000]})
    out = make_filter("traditional", convert=True).as_step().apply(f)
    assert out.frame["output"].to_list()[:2] == [None, ""]
    assert out.frame["output"][2].startswith("测试") and out.changed.to_list() == [False, False, True]


def test_all_null_column_type():
    f = pl.DataFrame({"instruction": ["问"], "input": [None], "output": [None]})  # input, output: Null dtype
    for name in ("length", "url", "special_chars", "ngram_repetition", "truncated", "answer_repeats_question"):
        assert make_filter(name).apply(f).keep.len() == 1


@pytest.mark.parametrize("pattern", ["(?<=a)b", "([a-z]", "a{2,1}", "(a)\\1"])
def test_invalid_user_regex_fails_at_build_time(pattern):
    with pytest.raises(ValueError, match="not a valid regular expression"):
        make_filter("url", patterns=[pattern])


def test_empty_matching_regex_is_refused():
    with pytest.raises(ValueError, match="matches the empty string"):
        make_filter("ads", patterns=["x*"])


def test_user_patterns_add_to_defaults():
    f = frame("联系我：秘密暗号123", "普通文本。")
    assert make_filter("ads", patterns=["秘密暗号[0-9]+"]).apply(f).keep.to_list() == [False, True]
    with pytest.raises(ValueError, match="no patterns"):
        make_filter("ads", replace_defaults=True)


def test_field_spec():
    assert rules.parse_fields("instruction+input") == ("instruction", "input")
    assert rules.parse_fields(["output"]) == ("output",)
    with pytest.raises(ValueError, match="name one column"):
        rules.parse_fields("output+")
    f = frame("短", instruction="一个比较长的问题文本")
    assert make_filter("length", field="instruction+input", min_chars=5).apply(f).value.to_list() == [11.0]


def test_ngram_keys_separate_documents():
    """An n-gram split across two texts is not an n-gram of either."""
    import numpy as np

    docs, counts = rules.ngram_runs(np.array([1, 2, 1, 2], dtype=np.uint64), np.array([2, 2]), 2)
    assert sorted(zip(docs.tolist(), counts.tolist())) == [(0, 1), (1, 1)]
    ids, lengths = rules.word_tokens(pl.Series(["Hello World 你好", "", "abc"]))
    assert lengths.tolist() == [4, 0, 1]


def _ref_word_rep(t: str, n: int = 10) -> float:
    """Data-Juicer's word_repetition_filter over our tokens (CJK char / letter-digit runs)."""
    import re
    from collections import Counter

    toks = re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W_\u3400-\u4dbf\u4e00-\u9fff]+", t.lower())
    grams = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    total = sum(grams.values())
    return sum(f for f in grams.values() if f > 1) / total if total else 0.0


def test_repetition_measures_match_the_per_record_definitions():
    import random

    rng = random.Random(7)
    alphabet = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"
    texts = []
    for i in range(40):
        words = [rng.choice(alphabet) for _ in range(rng.randint(0, 300))]
        t = "".join(words)
        if i % 3 == 0:
            t = t + t[: rng.randint(0, len(t) + 1)]  # a partial copy: repeated n-grams
        if i % 5 == 0:
            t = t + " Hello world hello World 123 " * rng.randint(1, 4)
        texts.append(t)
    f = frame(*texts)
    got_c = make_filter("char_repetition").apply(f).value.to_list()
    got_w = make_filter("ngram_repetition").apply(f).value.to_list()
    for t, c, w in zip(texts, got_c, got_w):
        assert c == pytest.approx(ref_char_rep(t)), t[:30]
        assert w == pytest.approx(_ref_word_rep(t)), t[:30]
