"""Tests for the bundled synthetic miniature data/coig-cqia-mini/ and its noise manifest.

The detectors below are deliberately independent of data/make_bundled.py: they check the
written files, not the generator's own idea of what it wrote.
"""
from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
MINI = DATA / "coig-cqia-mini"
MANIFEST = DATA / "noise_manifest.jsonl"

CONFIGS = ["chinese_traditional", "coig_pc", "douban", "exam", "finance", "human_value", "logi_qa",
           "ruozhiba", "segmentfault", "wiki", "wikihow", "xhs", "zhihu"]
FIELDS = ["instruction", "input", "output", "task_type", "domain", "metadata", "answer_from",
          "human_verified", "copyright"]
KINDS = {"ad", "url", "email", "phone", "qq_wechat", "exact_duplicate", "near_duplicate",
         "traditional_chars", "truncated_answer", "html_remnant", "empty_output", "repetition",
         "garbage_chars", "answer_repeats_question", "html_injection"}
DUP_KINDS = {"exact_duplicate", "near_duplicate"}

# characters that only occur in traditional script (never in simplified text)
TRAD_ONLY = set("這個問題應該麼處說會時們來對為發經過還沒關開學國東長見車門間後實現樣點頭書電話語認識讓給"
                "邊動種體從業務機場錢買賣寫讀愛覺聽難觀熱風飛鳥魚馬龍樂習親當總數無舊顯術歷變號圖")
URL_RE = re.compile(r"https?://|www\.", re.I)
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
MOBILE_RE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
LANDLINE_RE = re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)")
QQ_WX_RE = re.compile(r"(?:QQ|qq|扣扣|微信|VX|vx|WX|wx)(?:号|群)?\s*[:：]?\s*[A-Za-z0-9_-]{5,}")
AD_WORDS = ["加微信", "优惠券", "点击购买", "点击链接", "限时特价", "立即抢购", "扫码", "立减", "免费领取",
            "量大从优", "欢迎咨询"]
TAG_RE = re.compile(r"<[A-Za-z/!][^>]*>|&nbsp;|&[a-z]+;")
HTML_REMNANTS = ["<p>", "</p>", "<br/>", "<br>", "&nbsp;", "<div class="]
INJECTIONS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]
GARBAGE = ["锟斤拷", "é”", "ï¿½", "â€", "\ufffd", "Ã", "¤", "¶"]
REPEAT_RE = re.compile(r"(\S.{1,19}?)\1{5,}")  # a unit of 2-20 chars, 6+ times in a row
CJK_RE = re.compile(r"[\u4e00-\u9fff]")
COMPLETE_END = set("。！？!?.…）)」』”\"】》~`}]；;")


# ----------------------------------------------------------------------------- helpers
def data_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl"))


def read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw, path
    return raw.decode("utf-8").split("\n")[:-1]


_CACHE: dict = {}


def corpus():
    """{file: [(line text, record)]} for the committed miniature."""
    if not _CACHE:
        for f in data_files(MINI):
            _CACHE[f] = [(ln, json.loads(ln)) for ln in read_lines(MINI / f)]
    return _CACHE


def manifest():
    return [json.loads(ln) for ln in read_lines(MANIFEST)]


def text_of(r) -> str:
    return "\n".join((r["instruction"], r["input"], r["output"]))


def ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def looks_complete(out: str) -> bool:
    s = out.rstrip()
    return bool(s) and (s[-1] in COMPLETE_END or s.rsplit("\n", 1)[-1].startswith("#"))


def has_ad(t):
    return any(w in t for w in AD_WORDS)


def has_phone(t):
    return bool(MOBILE_RE.search(t) or LANDLINE_RE.search(t))


def has_tags(t):
    return bool(TAG_RE.search(t))


def n_trad(t):
    return len(TRAD_ONLY & set(t))


def noisy_keys():
    return {(m["file"], m["line"]) for m in manifest()}


def clean_records():
    noisy = noisy_keys()
    for f, rows in corpus().items():
        for i, (ln, r) in enumerate(rows, 1):
            if (f, i) not in noisy:
                yield f, i, ln, r


def card_map() -> dict:
    from cqia_nb.data.card import card_file_map

    return card_file_map()


def parse_card(text: str):
    """-> (front matter dict, {group: [(category, count)]}, {group: total})"""
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, "no YAML front matter"
    front = yaml.safe_load(m.group(1))
    groups, totals, group = {}, {}, None
    for ln in text[m.end():].splitlines():
        g = re.match(r"<summary><b>(.+?)</b></summary>", ln)
        if g:
            group = g.group(1)
            groups[group] = []
            continue
        row = re.match(r"\|\s*(.+?)\s*\|\s*(\*\*)?(\d+)(\*\*)?\s*\|", ln)
        if row and group:
            if row.group(1) == "**总量**":
                totals[group] = int(row.group(3))
            else:
                groups[group].append((row.group(1), int(row.group(3))))
    return front, groups, totals


# ----------------------------------------------------------------------------- reproducibility
def test_generator_reproduces_committed_files_byte_for_byte(tmp_path):
    out = tmp_path / "coig-cqia-mini"
    res = subprocess.run([sys.executable, str(DATA / "make_bundled.py"), str(out)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    want = sorted(p.relative_to(MINI).as_posix() for p in MINI.rglob("*") if p.is_file())
    assert got == want, f"missing: {set(want) - set(got)}, extra: {set(got) - set(want)}"
    for rel in want:
        assert (out / rel).read_bytes() == (MINI / rel).read_bytes(), rel
    assert (tmp_path / "noise_manifest.jsonl").read_bytes() == MANIFEST.read_bytes()


def test_layout_has_the_13_configs_and_no_manifest_inside():
    dirs = sorted(p.name for p in MINI.iterdir() if p.is_dir())
    assert dirs == CONFIGS
    assert sorted(p.name for p in MINI.iterdir() if p.is_file()) == ["README.md"]
    for c in CONFIGS:
        files = list((MINI / c).iterdir())
        assert 1 <= len(files) <= 4 and all(p.suffix == ".jsonl" for p in files), c
    assert not list(MINI.rglob("noise_manifest*"))


def test_file_names_exist_in_the_real_layout():
    real_names = {
        "chinese_traditional/chengyu.jsonl", "chinese_traditional/poem.jsonl",
        "chinese_traditional/trad-multi-choice-100.jsonl", "chinese_traditional/trad-multi-choice-100-2.jsonl",
        "chinese_traditional/trad-multi-choice-40.jsonl", "chinese_traditional/translate_classical_chinese.jsonl",
        "coig_pc/coig_pc_core_sample.jsonl", "exam/coig_exam_sampled_clean_v3.jsonl", "exam/kaoyan.jsonl",
        "exam/law_gee_exam_clean_v2.jsonl", "finance/finance_coig_pc.jsonl", "finance/mba_baike.jsonl",
        "human_value/100poison.jsonl", "human_value/coig_human_value_multi_choice.jsonl", "logi_qa/logi-qa.jsonl",
        "ruozhiba/ruozhiba_ruozhiba.jsonl", "segmentfault/segmentfault_upvote5_clean.jsonl",
        "wiki/10why_final.jsonl", "wiki/51zyzy.jsonl", "wiki/agriculture.jsonl", "wiki/baobao.jsonl",
        "wiki/bkmy_medicine.jsonl", "wiki/bkmy_symptom.jsonl", "wiki/digital_wiki.jsonl", "wiki/zgbk.jsonl",
        "wikihow/wikihow.jsonl", "xhs/xhs.jsonl", "zhihu/zhihu_expansion.jsonl",
        "zhihu/zhihu_score8.0-8.5_clean_v3.jsonl", "zhihu/zhihu_score8.5-9.0_clean_v4.jsonl",
        "zhihu/zhihu_score9.0-10_clean_v10.jsonl"}
    douban = re.compile(r"douban/(book_introduce|book_reviews|movie_reviews|movie_recommendation2?|"
                        r"tv_recommendation2?|tv_reviews|(movie|tv)(_anime|_documentary)?_synopsis_more_prompt)\.jsonl")
    for f in data_files(MINI):
        assert f in real_names or douban.fullmatch(f), f


# ----------------------------------------------------------------------------- schema
def test_every_record_has_exactly_the_schema():
    for f, rows in corpus().items():
        for i, (ln, r) in enumerate(rows, 1):
            where = f"{f}:{i}"
            assert list(r) == FIELDS, where
            for k in ("instruction", "input", "output", "metadata", "copyright"):
                assert isinstance(r[k], str), where
            assert r["instruction"].strip(), where
            tt = r["task_type"]
            assert isinstance(tt, dict) and list(tt) == ["major", "minor"], where
            for k in ("major", "minor"):
                assert isinstance(tt[k], list) and tt[k] and all(isinstance(x, str) and x for x in tt[k]), where
            assert isinstance(r["domain"], list) and r["domain"] and all(isinstance(x, str) for x in r["domain"]), where
            assert r["answer_from"] in ("human", "llm", "expert", ""), where
            assert type(r["human_verified"]) is bool, where
            assert ln == json.dumps(r, ensure_ascii=False), where  # compact, unescaped, fixed key order


def test_sizes():
    per_config = Counter(f.split("/")[0] for f, rows in corpus().items() for _ in rows)
    assert set(per_config) == set(CONFIGS)
    assert all(n >= 30 for n in per_config.values()), per_config
    total = sum(per_config.values())
    assert 600 <= total <= 900, total
    assert sum((MINI / f).stat().st_size for f in corpus()) < 1_000_000
    zhihu = [len(r["output"]) for f, i, ln, r in clean_records() if f.startswith("zhihu/")]
    assert min(zhihu) >= 450 and max(zhihu) >= 800  # long answers
    lengths = [len(r["output"]) for f, i, ln, r in clean_records()]
    assert min(lengths) <= 5 and max(lengths) >= 800  # realistic spread


def test_metadata_conventions():
    rows = [r for rs in corpus().values() for _, r in rs]
    assert Counter(r["metadata"] for r in rows)["暂无元数据信息"] > len(rows) / 2
    assert Counter(r["copyright"] for r in rows)["暂无版权及作者信息"] > len(rows) * 0.9
    for _, r in corpus()["exam/law_gee_exam_clean_v2.jsonl"]:
        assert re.fullmatch(r"year:\d{4}, type:(非法学|法学)", r["metadata"])
    for _, r in corpus()["zhihu/zhihu_score8.0-8.5_clean_v3.jsonl"]:
        assert re.fullmatch(r"qid:\d+, aid:\d+, tag:\[.+\]", r["metadata"])


# ----------------------------------------------------------------------------- manifest
def _check(kind, r, orig_line, line):
    t, out, q = text_of(r), r["output"], r["instruction"]
    if kind == "ad":
        return has_ad(t)
    if kind == "url":
        return bool(URL_RE.search(t))
    if kind == "email":
        return bool(EMAIL_RE.search(t))
    if kind == "phone":
        return has_phone(t)
    if kind == "qq_wechat":
        return bool(QQ_WX_RE.search(t))
    if kind == "exact_duplicate":
        return line == orig_line
    if kind == "near_duplicate":
        return line != orig_line and ratio(line, orig_line) >= 0.9
    if kind == "traditional_chars":
        return n_trad(t) >= 5
    if kind == "truncated_answer":
        return len(out) >= 40 and not looks_complete(out) and bool(CJK_RE.match(out[-1]))
    if kind == "html_remnant":
        return any(h in out for h in HTML_REMNANTS)
    if kind == "empty_output":
        return out.strip() == ""
    if kind == "repetition":
        return bool(REPEAT_RE.search(out))
    if kind == "garbage_chars":
        return any(g in t for g in GARBAGE)
    if kind == "answer_repeats_question":
        return bool(out) and ratio(out, q) >= 0.9
    if kind == "html_injection":
        return any(x in t for x in INJECTIONS)
    raise AssertionError(f"unknown kind {kind}")


def test_manifest_entries_point_at_records_that_show_their_noise():
    c = corpus()
    ms = manifest()
    assert ms == sorted(ms, key=lambda m: (m["file"], m["line"]))
    assert len({(m["file"], m["line"]) for m in ms}) == len(ms)
    for m in ms:
        assert set(m) <= {"file", "line", "kinds", "of"} and m["kinds"], m
        assert set(m["kinds"]) <= KINDS, m
        assert m["file"] in c and 1 <= m["line"] <= len(c[m["file"]]), m
        line, r = c[m["file"]][m["line"] - 1]
        orig_line = None
        if DUP_KINDS & set(m["kinds"]):
            of = m["of"]
            assert (of["file"], of["line"]) not in noisy_keys(), "a duplicate's original must be clean"
            orig_line = c[of["file"]][of["line"] - 1][0]
        else:
            assert "of" not in m, m
        for k in m["kinds"]:
            assert _check(k, r, orig_line, line), (m, k)


def test_each_noise_kind_is_used_several_times_over_several_configs():
    ms = manifest()
    counts = Counter(k for m in ms for k in m["kinds"])
    assert set(counts) == KINDS
    assert all(n >= 3 for n in counts.values()), counts
    configs = {m["file"].split("/")[0] for m in ms}
    assert len(configs) >= 12
    total = sum(len(v) for v in corpus().values())
    assert 0.06 <= len(ms) / total <= 0.08, len(ms) / total
    # duplicates in the same file and across files; injections show both payloads
    dups = [m for m in ms if "exact_duplicate" in m["kinds"]]
    assert any(m["of"]["file"] == m["file"] for m in dups) and any(m["of"]["file"] != m["file"] for m in dups)
    inj = [text_of(corpus()[m["file"]][m["line"] - 1][1]) for m in ms if "html_injection" in m["kinds"]]
    assert all(sum(x in t for t in inj) >= 2 for x in INJECTIONS)


def test_clean_records_carry_no_noise():
    seen = {}
    for f, i, ln, r in clean_records():
        where = f"{f}:{i}"
        t, out = text_of(r), r["output"]
        assert not URL_RE.search(t), where
        assert not EMAIL_RE.search(t), where
        assert not has_phone(t), where
        assert not QQ_WX_RE.search(t), where
        assert not has_ad(t), where
        assert not has_tags(t), where
        assert not any(g in t for g in GARBAGE), where
        assert n_trad(t) == 0, where
        assert not REPEAT_RE.search(out), where
        assert out.strip(), where
        if len(out) >= 60:
            assert looks_complete(out), where
        q = r["instruction"]
        m = difflib.SequenceMatcher(None, out, q, autojunk=False)
        assert m.real_quick_ratio() < 0.6 or m.ratio() < 0.6, where
        assert ln not in seen, f"{where} duplicates {seen.get(ln)}"
        seen[ln] = where


def _shingles(s, n=5):
    s = re.sub(r"\s+", "", s)
    return {s[i:i + n] for i in range(max(1, len(s) - n + 1))}


def test_clean_records_of_one_config_are_not_near_duplicates():
    by_config = {}
    for f, i, ln, r in clean_records():
        by_config.setdefault(f.split("/")[0], []).append((f"{f}:{i}", _shingles(text_of(r))))
    worst = (0.0, None)
    for rows in by_config.values():
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                sa, sb = rows[a][1], rows[b][1]
                j = len(sa & sb) / len(sa | sb)
                if j > worst[0]:
                    worst = (j, (rows[a][0], rows[b][0]))
    assert worst[0] < 0.6, worst


# ----------------------------------------------------------------------------- card
def _file_counts(root: Path) -> dict:
    return {f: len(read_lines(root / f)) for f in data_files(root)}


def test_card_front_matter_lists_the_13_configs_in_hf_form():
    text = (MINI / "README.md").read_text(encoding="utf-8")
    front, _, _ = parse_card(text)
    assert [c["config_name"] for c in front["configs"]] == CONFIGS
    for c in front["configs"]:
        assert c["data_files"] == [{"split": "train", "path": f"{c['config_name']}/*"}]
    assert front["language"] == ["zh"]
    assert front["license"] == "apache-2.0"
    for c in CONFIGS:
        assert f'- config_name: "{c}"\n  data_files:\n  - split: train\n    path: {c}/*\n' in text
    assert "不是真实的 COIG-CQIA 数据" in text and "Apache-2.0" in text


def test_card_counts_equal_file_counts_except_the_two_documented_mismatches():
    text = (MINI / "README.md").read_text(encoding="utf-8")
    _, groups, totals = parse_card(text)
    cmap = card_map()
    cats = [c for rows in groups.values() for c, _ in rows]
    assert sorted(cats) == sorted(cmap), "card categories and card_file_map.yaml disagree"
    counts = _file_counts(MINI)
    mismatches = {}
    for group, rows in groups.items():
        assert totals[group] == sum(n for _, n in rows), group
        for cat, shown in rows:
            actual = sum(n for f, n in counts.items() if any(fnmatch(f, g) for g in cmap[cat]))
            if shown != actual:
                mismatches[cat] = (shown, actual)
    assert set(mismatches) == {"豆瓣", "中国大百科全书"}, mismatches
    assert mismatches["豆瓣"][0] == mismatches["豆瓣"][1] + 5
    assert mismatches["中国大百科全书"][1] == 0 and mismatches["中国大百科全书"][0] > 0
    assert not (MINI / "wiki" / "zgbk.jsonl").exists()
    assert "wiki/zgbk.jsonl" in text and "多出 5 条" in text
    # every data file except ruozhiba is on the card, exactly once
    for f in counts:
        hits = [c for c, gs in cmap.items() if any(fnmatch(f, g) for g in gs)]
        assert len(hits) == (0 if f.startswith("ruozhiba/") else 1), (f, hits)


def test_card_groups_and_categories_follow_the_real_card():
    expected = {
        "社交媒体&论坛": ["知乎", "豆瓣", "小红书", "Segmentfault"],
        "通用百科": ["百科文章", "中国大百科全书", "wikiHow中文"],
        "通用NLP任务": ["COIG-PC-Core"],
        "考试&试题": ["高考&中考", "研究生入学考试", "逻辑推理题"],
        "人类价值观": ["100poison", "COIG-human-value"],
        "中国传统文化": ["中华传统文化试题", "成语释义", "古诗词撰写", "文言文互译"],
        "金融&经管领域": ["MBA百科", "金融NLP任务"],
        "医疗领域": ["医疗百科", "医疗文章"],
        "法律领域": ["法律研究生入学考试"],
    }
    _, groups, _ = parse_card((MINI / "README.md").read_text(encoding="utf-8"))
    assert {g: [c for c, _ in rows] for g, rows in groups.items()} == expected
    text = (MINI / "README.md").read_text(encoding="utf-8")
    assert text.count("<details>") == text.count("</details>") == len(expected)
    assert text.count("| 类别          | 数量 | 来源 | 构造方式                     |") == len(expected)


@pytest.mark.realdata
def test_card_file_map_fits_the_real_layout(real_data):  # fixture from conftest.py (skips if absent)
    cmap = card_map()
    _, groups, _ = parse_card((real_data / "README.md").read_text(encoding="utf-8"))
    assert sorted(c for rows in groups.values() for c, _ in rows) == sorted(cmap)
    files = [f for f in data_files(real_data) if "/" in f]  # COIG-CQIA-full.jsonl sits at the root
    for f in files:
        hits = [c for c, gs in cmap.items() if any(fnmatch(f, g) for g in gs)]
        assert len(hits) == (0 if f.startswith("ruozhiba/") else 1), (f, hits)
    absent = {"中国大百科全书", "COIG-PC-Core"}  # their files have no blob in the real copy (NOTICE.md)
    for cat, globs in cmap.items():
        if cat not in absent:
            assert any(fnmatch(f, g) for f in files for g in globs), cat
