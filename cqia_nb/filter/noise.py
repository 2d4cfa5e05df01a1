"""Noise benchmark: inject known noise into clean records, run filters, score what they caught.

::

    from cqia_nb.filter.noise import NoiseConfig, inject_noise, score_filters, caught_by_kind
    noisy = inject_noise(clean, NoiseConfig(rate=0.02, seed=0))
    result = run_pipeline(noisy, PipelineConfig.from_yaml("recipes/….yaml"))
    score_filters(result, noisy, clean)   # precision / recall per step, per noise kind, overall
    caught_by_kind(result, noisy, clean)  # kind x step counts (clean: credit noise a transform repaired)

``inject_noise`` returns the clean records unchanged (``noise_kind`` null) followed by noisy
variants, one per (kind, k): a copy of a sampled clean record with one kind of noise applied,
``record_id = "<source record_id>#noise-<kind>-<k>"``, ``noise_of`` = the source's record_id and
``noise_detail`` = what was done (the inserted text, the edits ...). Everything is drawn from
``random.Random`` seeded with strings derived from ``NoiseConfig.seed`` (never from ``hash()``),
so the same input and config give the same bytes on every machine and Python process.

Noise kinds (``NOISE_KINDS``) and what they do to a copy of the record:

=======================  ==========================================================================
ad                       insert a Chinese call to action (加微信xxx领取优惠, 扫码关注公众号 …)
url                      insert a link (always with ``http://`` or ``https://``)
email                    insert an e-mail address
phone                    insert a mobile, landline or 400 number
qq_wechat                insert a QQ number or WeChat id
exact_duplicate          identical copy
near_duplicate           1–3 small edits (punctuation swap, deleted/inserted/doubled character)
traditional_chars        instruction, input and output converted to traditional characters
garbage_chars            a span replaced by mojibake, or a run of random symbols inserted
truncated                the answer cut at 40–80 % of its length, ending mid-sentence
repetition               a phrase of the answer repeated 8–20 times
html                     ``<p>``/``<br/>``/``&nbsp;``/``<div …>`` remnants inserted
empty_output             the answer replaced by "" or invisible characters
answer_repeats_question  the answer replaced by the question
short_answer             the answer cut to its first 2–4 visible characters (open requests —
                         explain, write, introduce, why, how; no options or blanks — answered
                         with 30+ characters: "explain X" answered "X是一")
placeholder              the answer replaced by a placeholder: 无, 略, 。, 同上, 见上 (same sources)
repeated_tail            one of the answer's sentences (or its last 2–3 sentences) appended 3–6 times
near_dup_subst           1–2 % of the characters (at least one) replaced by other common characters
=======================  ==========================================================================

Scoring rule (``score_filters``, ``caught_by_kind``)
----------------------------------------------------
The positives are the noisy records. A noisy record is *caught* when it is in ``result.dropped``
(by the step that dropped it). For the duplicate kinds (exact_duplicate, near_duplicate, near_dup_subst) removing
*either* member of the pair removes the duplication, and which one a dedup step keeps is its
survivor policy's business: a dropped clean original is credited to its first (in frame order)
duplicate copy that was *not* dropped, which then counts as caught by the step that dropped the
original. If every copy was dropped too, the dropped original is a false positive (the content is
gone entirely). Every other dropped clean record is a false positive of the step that dropped it.
So each dropped record is exactly one TP or one FP, and the TP of a step are the positives it
caught: ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``, ``fn = n_positive - tp``.

Noise a transform undoes (``REPAIRABLE_KINDS``: traditional_chars, which the default recipe
converts to simplified instead of dropping) is caught too when the scorers are given the clean
frame (``score_filters(result, noisy, clean)``): a noisy record the pipeline *kept*, that a
transform step changed, and whose text now equals its clean source's (or the source as OpenCC
t2s writes it, see ``repaired``) counts as caught by that transform step, via "repaired". A
record the transform merely changed, or left alone, is still a miss. Without ``clean`` only
drops count.

Two consequences worth knowing: steps run in order, so a step's recall counts only what earlier
steps left for it (use ``caught_by_kind`` for the per-step view, or run a filter alone to measure
it in isolation); and every noisy variant is also a near duplicate of its source, so a dedup step
may drop the clean source instead of the noisy variant (a false positive plus a miss). Use
``NoiseConfig(replace_sources=True)`` to take the sources of the non-duplicate kinds out of the
frame when benchmarking a recipe that deduplicates.

Why this module is long: it holds one maker per noise kind (18 kinds, each a few dozen lines of
templates and edits) next to the scoring that relies on their names and on which kinds are
duplicates; split apart, the kind list, the makers and the duplicate rule would have to be kept in
step across modules.
"""

from __future__ import annotations

import random
import re
import string
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import polars as pl

from cqia_nb.filter.rules.traditional import convert_texts

NOISE_KINDS: tuple[str, ...] = (
    "ad", "url", "email", "phone", "qq_wechat", "exact_duplicate", "near_duplicate",
    "traditional_chars", "garbage_chars", "truncated", "repetition", "html", "empty_output",
    "answer_repeats_question", "short_answer", "placeholder", "repeated_tail", "near_dup_subst",
)
#: Kinds whose noisy record duplicates its source (either member dropped counts as caught).
DUPLICATE_KINDS: frozenset[str] = frozenset({"exact_duplicate", "near_duplicate", "near_dup_subst"})
NOISE_COLUMNS: dict[str, pl.DataType] = {
    "noise_kind": pl.String, "noise_of": pl.String, "noise_detail": pl.String,
}
ALL = "(all)"
CLEAN = "(clean)"
_TEXT_FIELDS = ("instruction", "input", "output")
# 428 common simplified characters and the traditional form used in Taiwan (one-to-one; each
# pair checked against OpenCC: t2s(trad) == simp). Ambiguous ones (面/麵, 干/幹/乾) are left out.
_SIMP = (
    "们这个来说时为会对国过发后学还么经没现开动关点种样从长东车问间题实头见让认几气电无业给机进应书体条门将总语边员级处报数与"
    "华义区结记决战变万张务师听难观场强产运压带资类论设话许号觉计该传转讲识达备写亲爱选风钱买卖乐飞马鸟鱼龙图园团层确脑医药声"
    "单双顺须顾领颜页饭馆闻际陈险随宝宁网维组织细终绝统线练红约纪纸丽严两丰临举习乡争亚亿仅价众优伤余侧债储儿党兰兴养内册农军"
    "减刘则刚创别剧劳势劝办协卫历厅县参叶吗响围坏块坚复够夺奋妇妈孙宽宫寻导尔尽岁币帮广庆库废异弹归录彻忆态怀恶惊惯愿戏户扩扫"
    "扬护担择拥据换损摄敌斗断旧显术杀杂权极构标树桥检欢欧毕汇汉沟济浅测浓涨温湾满灭灯灵烟热爷牵状独猎环画畅疗监盖盘础礼离积称"
    "穷竞笔简粮紧纳纵络绍继续综绿编罗职联肃胜脏节艺获虽补装规视览触誉订讨训议讯访证评诉词试诗诚询详误请诸读调谈谢谁贝负财责败"
    "货质购贯费贴贸赛赞赵趋跃践轮软轻载较辅辆输辞迁远违连迟适递释里针钟铁银销锁错键镇闭闲队阳阴阶陆隐雾静韩顶项预频额饮饰饱驾"
    "验骑鲜鸡麦黄齐龄"
)
_TRAD = (
    "們這個來說時為會對國過發後學還麼經沒現開動關點種樣從長東車問間題實頭見讓認幾氣電無業給機進應書體條門將總語邊員級處報數與"
    "華義區結記決戰變萬張務師聽難觀場強產運壓帶資類論設話許號覺計該傳轉講識達備寫親愛選風錢買賣樂飛馬鳥魚龍圖園團層確腦醫藥聲"
    "單雙順須顧領顏頁飯館聞際陳險隨寶寧網維組織細終絕統線練紅約紀紙麗嚴兩豐臨舉習鄉爭亞億僅價眾優傷餘側債儲兒黨蘭興養內冊農軍"
    "減劉則剛創別劇勞勢勸辦協衛歷廳縣參葉嗎響圍壞塊堅復夠奪奮婦媽孫寬宮尋導爾盡歲幣幫廣慶庫廢異彈歸錄徹憶態懷惡驚慣願戲戶擴掃"
    "揚護擔擇擁據換損攝敵鬥斷舊顯術殺雜權極構標樹橋檢歡歐畢匯漢溝濟淺測濃漲溫灣滿滅燈靈煙熱爺牽狀獨獵環畫暢療監蓋盤礎禮離積稱"
    "窮競筆簡糧緊納縱絡紹繼續綜綠編羅職聯肅勝髒節藝獲雖補裝規視覽觸譽訂討訓議訊訪證評訴詞試詩誠詢詳誤請諸讀調談謝誰貝負財責敗"
    "貨質購貫費貼貿賽贊趙趨躍踐輪軟輕載較輔輛輸辭遷遠違連遲適遞釋裡針鐘鐵銀銷鎖錯鍵鎮閉閒隊陽陰階陸隱霧靜韓頂項預頻額飲飾飽駕"
    "驗騎鮮雞麥黃齊齡"
)


assert len(_SIMP) == len(_TRAD) == len(set(_SIMP))


S2T: dict[str, str] = dict(zip(_SIMP, _TRAD))
_S2T_TABLE = str.maketrans(S2T)
# Appended when a text has none of the mapped characters, so every variant really changed.
_TRAD_FILLER = "這個問題們說過了，請參考之前的說明。"


def to_traditional(text: str, backend: Literal["builtin", "opencc"] = "builtin") -> str:
    """Simplified -> traditional characters: the built-in map (same output everywhere) or
    OpenCC ``s2t`` (fuller, phrase-aware, output depends on the installed OpenCC version)."""
    if backend == "opencc":
        return _opencc_s2t().convert(text)
    if backend != "builtin":
        raise ValueError(f"backend must be 'builtin' or 'opencc', got {backend!r}")
    return text.translate(_S2T_TABLE)


_OPENCC = None


def _opencc_s2t():
    global _OPENCC
    if _OPENCC is None:
        try:
            import opencc
        except ImportError as e:
            raise ValueError("traditional_backend='opencc' needs the opencc package; "
                             "use the default 'builtin'") from e
        _OPENCC = opencc.OpenCC("s2t")
    return _OPENCC


@dataclass(frozen=True)
class NoiseConfig:
    """What to inject.

    kinds: noise kinds (``NOISE_KINDS`` by default), in this order.
    rate: noisy records per kind as a share of the clean records (``round(rate * n)``, at least
        1 when rate > 0); ``counts`` overrides it per kind (``{"url": 5}``).
    seed: everything random derives from it (and the kind), so the output is reproducible.
    field: the text column the insertion kinds (ad, url, email, phone, qq_wechat,
        garbage_chars, repetition, html) write into.
    traditional_backend: "builtin" (reproducible everywhere) or "opencc".
    replace_sources: remove the clean source of every non-duplicate variant from the output (the
        sources of all kinds are then drawn without overlap), so that a dedup step does not see
        the variant and its source as a near-duplicate pair.
    shuffle: interleave noisy and clean records (seeded) instead of appending the noise.
    """

    kinds: tuple[str, ...] = NOISE_KINDS
    rate: float = 0.02
    seed: int = 0
    counts: Mapping[str, int] | None = None
    field: str = "output"
    traditional_backend: Literal["builtin", "opencc"] = "builtin"
    replace_sources: bool = False
    shuffle: bool = False

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        unknown = [k for k in kinds if k not in NOISE_KINDS]
        if unknown:
            raise ValueError(f"unknown noise kind(s) {unknown}; known: {', '.join(NOISE_KINDS)}")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"noise kinds listed twice: {kinds}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be between 0 and 1, got {self.rate}")
        for k, n in (self.counts or {}).items():
            if k not in NOISE_KINDS:
                raise ValueError(f"counts: unknown noise kind {k!r}")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"counts[{k!r}] must be a non-negative int, got {n!r}")
        if self.field not in _TEXT_FIELDS:
            raise ValueError(f"field must be one of {_TEXT_FIELDS}, got {self.field!r}")
        if self.traditional_backend not in ("builtin", "opencc"):
            raise ValueError(f"traditional_backend must be 'builtin' or 'opencc', got {self.traditional_backend!r}")

    def count(self, kind: str, n_clean: int) -> int:
        """How many noisy records of ``kind`` for ``n_clean`` clean records."""
        if self.counts is not None and kind in self.counts:
            return int(self.counts[kind])
        if n_clean == 0 or self.rate == 0:
            return 0
        return max(1, round(self.rate * n_clean))


def noise_counts(noisy: pl.DataFrame) -> dict[str, int]:
    """Noisy records per kind in a frame from ``inject_noise`` (kinds in NOISE_KINDS order)."""
    vc = noisy.filter(pl.col("noise_kind").is_not_null()).group_by("noise_kind").len()
    got = dict(zip(vc["noise_kind"].to_list(), vc["len"].to_list()))
    return {k: got[k] for k in _kind_order(got)}


def _kind_order(kinds) -> list[str]:
    kinds = set(kinds)
    return [k for k in NOISE_KINDS if k in kinds] + sorted(k for k in kinds if k not in NOISE_KINDS)


_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ALNUM = _LOWER + "0123456789"
_BOUNDARY = "。！？!?\n"
_PUNCT = "，。！？、；：,.!?;:"
_PUNCT_SWAP = {"，": "、", "、": "，", "。": "！", "！": "。", "？": "。", "；": "，", "：": "，",
               ",": "，", ".": "。", "!": "！", "?": "？", ";": "；", ":": "："}
_FILLERS = "的了呢吧啊 "


def _word(rng: random.Random, lo: int, hi: int, alphabet: str = _LOWER) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _digits(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def _wechat_id(rng: random.Random) -> str:
    return rng.choice(_LOWER) + _word(rng, 5, 9, _ALNUM + "_")


def _insert(text: str, snippet: str, rng: random.Random) -> str:
    """``snippet`` at the end (60 %), the start (20 %) or after a sentence boundary."""
    r = rng.random()
    cuts = [i + 1 for i, ch in enumerate(text[:-1]) if ch in _BOUNDARY]
    if text and r < 0.6:
        sep = "" if text[-1] in _BOUNDARY or text[-1].isspace() else "\n"
        return text + sep + snippet
    if not text or r < 0.8 or not cuts:
        return snippet + ("\n" if text else "") + text
    at = rng.choice(cuts)
    return text[:at] + snippet + text[at:]


def _phone(rng: random.Random) -> str:
    style = rng.randrange(6)
    mobile = "1" + rng.choice("3456789") + _digits(rng, 9)
    if style == 0:
        return mobile
    if style == 1:
        return f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}"
    if style == 2:
        return f"{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}"
    if style == 3:
        return f"+86 {mobile}"
    if style == 4:
        return f"0{rng.choice(['10', '21', '20', '755', '571', '28'])}-{_digits(rng, 8, '23456789')}"
    return f"400-{_digits(rng, 3)}-{_digits(rng, 4)}"


_AD_TEMPLATES = (
    "加微信{wx}领取优惠！", "扫码关注公众号「{name}」，免费领取全套资料。",
    "关注公众号{name}，回复“资料”即可免费领取。", "限时秒杀！点击链接领取优惠券，下单立减{n}元。",
    "诚招代理，加盟热线：400-{d3}-{d4}。", "淘宝搜索：{shop}旗舰店，全场包邮到家。",
    "私信小编领取{name}独家学习资料包。", "进群领取新人红包，加V：{wx}。",
)
_AD_NAMES = ("学习帮", "干货君", "成长营", "好物推荐官", "考研资料库", "理财小课堂")
_URL_TEMPLATES = (
    "详情请访问 https://www.{dom}.com/{path} 。", "原文链接：http://{dom}.cn/{path}",
    "更多内容见 https://{dom}.net/p/{n}", "下载地址：http://www.{dom}.top/download?id={n}",
)
_EMAIL_TEMPLATES = ("联系邮箱：{addr}", "投稿请发送至{addr}。", "有问题可发邮件到 {addr} 。")
_PHONE_TEMPLATES = ("咨询电话：{p}。", "有需要请致电{p}。", "热线{p}，欢迎来电。")
_QQ_TEMPLATES = ("详情咨询QQ：{qq}。", "交流请加QQ群：{qq}。", "微信号：{wx}，备注“学习”。", "vx：{wx}，同号。")
_SYMBOLS = "�□■◆◇▲△●○★☆※¤§¶†‡ÃÂâ€™œž¿¬±µ"
_PLACEHOLDERS: dict[str, Callable[[random.Random], Any]] = {
    "wx": _wechat_id, "name": lambda r: r.choice(_AD_NAMES), "n": lambda r: r.randint(5, 99999),
    "d3": lambda r: _digits(r, 3), "d4": lambda r: _digits(r, 4), "shop": lambda r: _word(r, 3, 6),
    "dom": lambda r: _word(r, 5, 9),
    "path": lambda r: "/".join(_word(r, 2, 6, _ALNUM) for _ in range(r.randint(1, 2))),
    "addr": lambda r: f"{_word(r, 4, 8, _ALNUM)}@" + r.choice(
        ["qq.com", "163.com", _word(r, 4, 7) + ".cn", _word(r, 4, 7) + ".com"]),
    "p": _phone, "qq": lambda r: _digits(r, r.randint(6, 10), "123456789"),
}


def _fill(template: str, rng: random.Random) -> str:
    """The template with each placeholder it uses drawn in order of appearance."""
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    return template.format(**{f: _PLACEHOLDERS[f](rng) for f in names})


Row = dict[str, Any]
Maker = Callable[[Row, random.Random, NoiseConfig], tuple[Row, str]]


def _inserter(templates: Sequence[str]) -> Maker:
    def make(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
        snippet = _fill(rng.choice(templates), rng)
        row[cfg.field] = _insert(row[cfg.field] or "", snippet, rng)
        return row, snippet
    return make


def _exact_duplicate(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    return row, "identical copy"


def _edit_once(text: str, rng: random.Random) -> tuple[str, str]:
    puncts = [i for i, ch in enumerate(text) if ch in _PUNCT_SWAP]
    op = rng.randrange(4)
    if op == 0 and puncts:
        i = rng.choice(puncts)
        return text[:i] + _PUNCT_SWAP[text[i]] + text[i + 1:], f"{text[i]}→{_PUNCT_SWAP[text[i]]}@{i}"
    if op == 1 and len(text) >= 4:
        i = rng.randrange(len(text))
        return text[:i] + text[i + 1:], f"del {text[i]}@{i}"
    if op == 2 and text:
        i = rng.randrange(len(text))
        return text[:i + 1] + text[i] + text[i + 1:], f"dup {text[i]}@{i}"
    i = rng.randrange(len(text) + 1)
    ch = rng.choice(_FILLERS)
    return text[:i] + ch + text[i:], f"ins {ch!r}@{i}"


def _near_duplicate(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    name = "output" if len(row.get("output") or "") >= 4 else "instruction"
    before = row[name] or ""
    text, edits = before, []
    for _ in range(rng.randint(1, 3)):
        text, what = _edit_once(text, rng)
        edits.append(what)
    if text == before:  # two edits undid each other
        text, what = text + "。", "ins '。' at end"
        edits.append(what)
    row[name] = text
    return row, f"{name}: " + "; ".join(edits)


def _traditional(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    changed = []
    for name in _TEXT_FIELDS:
        v = row.get(name)
        if v:
            new = to_traditional(v, cfg.traditional_backend)
            if new != v:
                changed.append(name)
            row[name] = new
    if not changed:
        row["output"] = _insert(row.get("output") or "", _TRAD_FILLER, rng)
        return row, "no mapped characters: appended a traditional sentence"
    return row, "converted " + "+".join(changed)


def _mojibake(span: str, rng: random.Random) -> str:
    raw = span.encode("utf-8")
    if rng.random() < 0.5:
        return raw.decode("gbk", errors="replace")   # 浣犲ソ-style
    return raw.decode("latin-1")                      # ä½ å¥½-style (control bytes included)


def _garbage(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    text = row[cfg.field] or ""
    if len(text) >= 6 and rng.random() < 0.5:
        n = rng.randint(5, min(30, len(text)))
        i = rng.randrange(len(text) - n + 1)
        bad = _mojibake(text[i:i + n], rng)
        if bad != text[i:i + n]:
            row[cfg.field] = text[:i] + bad + text[i + n:]
            return row, f"mojibake of {n} chars at {i}"
    junk = "".join(rng.choice(_SYMBOLS) for _ in range(rng.randint(8, 30)))
    i = rng.randrange(len(text) + 1)
    row[cfg.field] = text[:i] + junk + text[i:]
    return row, f"{len(junk)} symbols at {i}"


_TRAILING = set(_PUNCT + "…~～—-）)]】」』”’\"' \t\n　")


def _truncated(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    text = row["output"] or ""
    n = len(text)
    cut = rng.randint(max(1, int(n * 0.4)), max(1, int(n * 0.8)))
    out = text[:cut]
    while len(out) > 1 and out[-1] in _TRAILING:
        out = out[:-1]
    if out[-1:] in _TRAILING or out == text:
        out = text[: max(1, n // 2)].rstrip() + "的"
    row["output"] = out
    return row, f"cut at {len(out)} of {n} chars"


def _repetition(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    text = row[cfg.field] or ""
    source = text or (row.get("instruction") or "") or "好的"
    clauses = [c for c in _split_clauses(source) if 2 <= len(c) <= 15]
    if clauses:
        phrase = rng.choice(clauses) + rng.choice("，。！")
    else:
        n = min(len(source), rng.randint(2, 6))
        i = rng.randrange(len(source) - n + 1)
        phrase = source[i:i + n]
    times = rng.randint(8, 20)
    row[cfg.field] = text + phrase * times
    return row, f"{phrase!r} x{times}"


def _split_clauses(text: str) -> list[str]:
    out, cur = [], []
    for ch in text:
        if ch in _PUNCT or ch.isspace():
            if cur:
                out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _html(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    text = row[cfg.field] or ""
    ops = []
    lines = text.split("\n")
    if rng.random() < 0.7 or len(lines) > 1:
        text = "".join(f"<p>{ln}</p>" for ln in lines)
        ops.append("<p>")
    cuts = [i + 1 for i, ch in enumerate(text) if ch in "，。！？"]
    for tag in ("<br/>", "&nbsp;"):
        if rng.random() < 0.6 and cuts:
            i = rng.choice(cuts)
            text = text[:i] + tag + text[i:]
            cuts = [c + len(tag) if c >= i else c for c in cuts]
            ops.append(tag)
    if rng.random() < 0.4 or not ops:
        text = f'<div class="rich_media_content"><span style="color:#333">{text}</span></div>'
        ops.append("<div>")
    row[cfg.field] = text
    return row, " ".join(ops)


_EMPTY_VALUES = ("", "", "", " ", "\n", "\u200b", "\u3000")


def _empty(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    v = rng.choice(_EMPTY_VALUES)
    row["output"] = v
    return row, f"output={v!r}"


def _repeats_question(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    q = row.get("instruction") or ""
    if rng.random() < 0.3 and q[-1:] in "？?":
        row["output"] = q[:-1] + "。"
        return row, "output = instruction with ？→。"
    row["output"] = q
    return row, "output = instruction"


_VISIBLE_CH = re.compile(r"[^\W_]")
#: What an answer holds when nobody wrote it.
PLACEHOLDER_ANSWERS = ("无", "略", "。", "同上", "见上")


def _short_answer(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    text = row["output"] or ""
    first = _VISIBLE_CH.search(text)
    start = first.start() if first else 0
    n = rng.randint(2, 4)
    out = text[start:start + n].strip() or text[:n]
    if rng.random() < 0.3:
        out += "。"
    row["output"] = out
    return row, f"answer cut to {len(out)} of {len(text)} chars"


def _placeholder(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    row["output"] = rng.choice(PLACEHOLDER_ANSWERS)
    return row, f"output={row['output']!r}"


_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?]?")


def _repeated_tail(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    text = (row["output"] or "").rstrip()
    sents = [m.group(0).strip() for m in _SENTENCE.finditer(text)]
    sents = [x for x in sents if len(_VISIBLE_CH.findall(x)) >= 8] or [text or "这个问题需要具体分析。"]
    times = rng.randint(3, 6)
    if rng.random() < 0.3 and len(sents) >= 2:  # a paragraph: the answer's last sentences
        k = rng.randint(2, min(3, len(sents)))
        unit, sep = "".join(sents[-k:]), "\n"
    else:
        unit, sep = rng.choice(sents), rng.choice(["", "\n"])
    if unit[-1:] not in "。！？!?":
        unit += "。"
    row["output"] = text + "".join(sep + unit for _ in range(times))
    return row, f"{len(unit)}-char unit appended x{times}"


def _near_dup_subst(row: Row, rng: random.Random, cfg: NoiseConfig) -> tuple[Row, str]:
    fields = [c for c in _TEXT_FIELDS if row.get(c)]
    pos = [(c, i) for c in fields for i, ch in enumerate(row[c]) if not ch.isspace()]
    if not pos:
        row["output"] = (row.get("output") or "") + "的"
        return row, "empty text: appended one character"
    share = rng.uniform(0.01, 0.02)
    n = max(1, round(share * len(pos)))
    texts = {c: list(row[c]) for c in fields}
    for c, i in sorted(rng.sample(pos, n)):
        old = texts[c][i]
        texts[c][i] = rng.choice([ch for ch in _SIMP[:200] if ch != old])
    for c in fields:
        row[c] = "".join(texts[c])
    return row, f"{n} of {len(pos)} chars substituted ({n / len(pos):.1%})"


MAKERS: dict[str, Maker] = {
    "ad": _inserter(_AD_TEMPLATES), "url": _inserter(_URL_TEMPLATES),
    "email": _inserter(_EMAIL_TEMPLATES), "phone": _inserter(_PHONE_TEMPLATES),
    "qq_wechat": _inserter(_QQ_TEMPLATES), "exact_duplicate": _exact_duplicate,
    "near_duplicate": _near_duplicate, "traditional_chars": _traditional,
    "garbage_chars": _garbage, "truncated": _truncated, "repetition": _repetition,
    "html": _html, "empty_output": _empty, "answer_repeats_question": _repeats_question,
    "short_answer": _short_answer, "placeholder": _placeholder, "repeated_tail": _repeated_tail,
    "near_dup_subst": _near_dup_subst,
}


def _visible(col: str) -> pl.Expr:
    """Characters that are not whitespace, punctuation or invisible format characters."""
    t = pl.col(col).cast(pl.String).fill_null("")
    return t.str.len_chars() - t.str.count_matches(r"[\s\p{P}\p{Cf}]")


#: An open-ended request (explain, write, introduce, why, how …): the short_answer and placeholder
#: kinds only apply to these (the issue defines them so), and never to multiple choice or blanks.
_OPEN_REQUEST = (r"解释|介绍|描述|写|谈谈|说说|讲讲|分析|论述|阐述|评价|看法|为什么|为何|如何|怎样|怎么|建议|总结|概括"
                 r"|讨论|说明|体验|感受|翻译|译为|释义|意思")


def _eligible(clean: pl.DataFrame) -> dict[str, list[int]]:
    """Per kind, the rows it can be applied to meaningfully (the others are only a fallback)."""
    v = clean.select(_visible("output").alias("o"), _visible("instruction").alias("q"),
                     (pl.col("instruction").cast(pl.String).fill_null("")
                      != pl.col("output").cast(pl.String).fill_null("")).alias("differ"),
                     # options ("A.", "B、") or a blank to fill: a short answer is right there
                     pl.concat_str([pl.col("instruction").cast(pl.String).fill_null(""),
                                    pl.col("input").cast(pl.String).fill_null("")], separator="\n")
                     .str.contains(r"(?:^|[\s（(:：])[A-Da-d][.．、:：)）]|_{2,}|（\s*）").alias("options"),
                     pl.col("instruction").cast(pl.String).fill_null("").str.contains(_OPEN_REQUEST).alias("asks"))
    v = v.with_columns((pl.col("asks") & ~pl.col("options")).alias("open"))
    m = v.select(
        (pl.col("o") >= 10).alias("truncated"),
        ((pl.col("q") >= 4) & pl.col("differ")).alias("answer_repeats_question"),
        (pl.col("o") >= 1).alias("empty_output"),
        ((pl.col("o") + pl.col("q")) >= 4).alias("near_duplicate"),
        ((pl.col("o") + pl.col("q")) >= 4).alias("near_dup_subst"),
        # an open request answered at length: cutting its answer to a few characters is noise
        ((pl.col("o") >= 30) & pl.col("open")).alias("short_answer"),
        ((pl.col("o") >= 30) & pl.col("open")).alias("placeholder"),
        (pl.col("o") >= 10).alias("repeated_tail"),
    )
    return {k: m[k].arg_true().to_list() for k in m.columns}


def _draw(pool: list[int], count: int, rng: random.Random) -> list[int]:
    """``count`` indices from ``pool``: without repeats while possible, then whole rounds again."""
    out: list[int] = []
    while len(out) < count:
        take = min(count - len(out), len(pool))
        out.extend(sorted(rng.sample(pool, take)))
    return out


def inject_noise(clean: pl.DataFrame, config: NoiseConfig | None = None) -> pl.DataFrame:
    """The clean records plus noisy variants (see the module docstring); reproducible.

    Columns: those of ``clean`` plus ``noise_kind`` (null for clean records), ``noise_of`` (the
    source's record_id, null for clean) and ``noise_detail``. Needs unique ``record_id`` and the
    ``instruction``/``input``/``output`` columns. Kinds are sampled independently (a clean record
    may be the source of several kinds) except that the two duplicate kinds avoid sharing a
    source while enough records remain; records a kind cannot apply to meaningfully (an empty
    answer to truncate) are skipped unless no other record is left.
    """
    cfg = config or NoiseConfig()
    missing = [c for c in ("record_id", *_TEXT_FIELDS) if c not in clean.columns]
    if missing:
        raise ValueError(f"inject_noise needs the column(s) {missing}; the frame has {clean.columns}")
    taken = [c for c in NOISE_COLUMNS if c in clean.columns]
    if taken:
        raise ValueError(f"the clean frame already has {taken}: is it already noisy? "
                         "pass the clean records only")
    if clean["record_id"].null_count() or clean["record_id"].n_unique() != clean.height:
        raise ValueError("record_id must be unique and non-null to name the noisy copies")
    n = clean.height
    rows = clean.select(pl.col(c).cast(pl.String) for c in _TEXT_FIELDS).to_dicts()  # makers touch text only
    rids: list[str] = clean["record_id"].cast(pl.String).to_list()
    all_idx = list(range(n))
    eligible = _eligible(clean)
    used: set[int] = set()       # sources already taken (replace_sources / duplicate kinds)
    dup_used: set[int] = set()
    noisy_rows: list[Row] = []
    src_idx: list[int] = []
    replaced: set[int] = set()
    for kind in cfg.kinds:
        count = cfg.count(kind, n)
        if count == 0:
            continue
        if n == 0:
            raise ValueError(f"cannot inject {count} {kind} records into an empty frame")
        rng = random.Random(f"cqia-noise/{cfg.seed}/{kind}")
        pool = eligible.get(kind, all_idx)
        if not pool:
            warnings.warn(f"noise kind {kind!r}: no record suits it; using any record", stacklevel=2)
            pool = all_idx
        avoid = used if cfg.replace_sources else (dup_used if kind in DUPLICATE_KINDS else set())
        free = [i for i in pool if i not in avoid]
        if cfg.replace_sources and len(free) < count:
            raise ValueError(f"replace_sources: {count} {kind} records requested but only {len(free)} "
                             "unused suitable records are left; lower rate/counts")
        picked = _draw(free if len(free) >= count else pool, count, rng)
        used.update(picked)
        if kind in DUPLICATE_KINDS:
            dup_used.update(picked)
        elif cfg.replace_sources:
            replaced.update(picked)
        make = MAKERS[kind]
        for k, i in enumerate(picked):
            row = dict(rows[i])
            row, detail = make(row, rng, cfg)
            row["record_id"] = f"{rids[i]}#noise-{kind}-{k}"
            row["noise_kind"], row["noise_of"], row["noise_detail"] = kind, rids[i], detail
            noisy_rows.append(row)
            src_idx.append(i)
    base = clean.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in NOISE_COLUMNS.items())
    if replaced:
        base = base.filter(~pl.Series([i in replaced for i in all_idx], dtype=pl.Boolean))
    out = base
    if noisy_rows:
        # the copies: the source rows, with new text, ids and noise columns (columnar: fast)
        new = {c: pl.Series(c, [r[c] for r in noisy_rows], dtype=pl.String)
               for c in ("record_id", *_TEXT_FIELDS, *NOISE_COLUMNS)}
        copies = clean[src_idx].with_columns(
            new[c].cast(clean.schema[c]) if c in clean.columns else new[c] for c in new)
        out = pl.concat([base, copies.select(base.columns)])
    if out["record_id"].n_unique() != out.height:  # a clean id that looks like "x#noise-url-0"
        raise ValueError("noisy record ids collide with clean record ids; rename the clean records")
    if cfg.shuffle and out.height > 1:
        order = list(range(out.height))
        random.Random(f"cqia-noise/{cfg.seed}/shuffle").shuffle(order)
        out = out[order]
    return out


def _step_key(dropped: pl.DataFrame) -> pl.Expr:
    if "step_name" in dropped.columns:
        return pl.col("step_name").cast(pl.String)
    if "step" in dropped.columns:
        return pl.col("step").cast(pl.String)
    raise ValueError("result.dropped has neither step_name nor step: not a PipelineResult.dropped frame")


def _steps_of(result: Any, dropped_steps: list[str], transforms: bool = False) -> list[tuple[str, str | None]]:
    """(step name, filter name) of the filter steps (and with ``transforms`` the transform steps)
    in pipeline order, then any others seen."""
    out: list[tuple[str, str | None]] = []
    steps = getattr(result, "steps", None)
    if isinstance(steps, pl.DataFrame) and steps.height and "name" in steps.columns:
        if "kind" in steps.columns and not transforms:
            steps = steps.filter(pl.col("kind").fill_null("filter") == "filter")
        filt = steps["filter"].to_list() if "filter" in steps.columns else [None] * steps.height
        out = list(zip([str(s) for s in steps["name"].to_list()], filt))
    known = {s for s, _ in out}
    out += [(s, None) for s in dict.fromkeys(dropped_steps) if s not in known]
    return out


#: Noise kinds a transform step can undo: the noisy record leaves the pipeline without its noise.
REPAIRABLE_KINDS: frozenset[str] = frozenset({"traditional_chars"})


def repaired(result: Any, noisy: pl.DataFrame, clean: pl.DataFrame,
             kinds: frozenset[str] | set[str] = REPAIRABLE_KINDS) -> dict[str, str]:
    """Noisy records of ``kinds`` that a transform step repaired: record_id -> the first transform
    step (pipeline order) that changed it, for the records the pipeline *kept*, that step changed,
    and whose instruction, input and output now equal their clean source's (``noise_of`` in
    ``clean``).

    "Equal" allows one thing: where the clean source itself holds characters the conversion maps
    (於, 乾, 鄴 in simplified text, below the transform's threshold on their own), the repaired text
    may hold the converted form. So a field counts as repaired when it equals the source or the
    source converted by OpenCC ``t2s`` (the ``to_simplified`` step's own change, not the noise);
    a record the transform did not change, or changed into anything else, is not repaired.
    """
    steps = getattr(result, "steps", None)
    measured = getattr(result, "measured", {}) or {}
    if not isinstance(steps, pl.DataFrame) or "kind" not in steps.columns:
        return {}
    order = [str(n) for n, k in zip(steps["name"].to_list(), steps["kind"].to_list()) if k == "transform"]
    changed_by: dict[str, str] = {}
    for step in order:
        m = measured.get(step)
        if m is None or "changed" not in m.columns:
            continue
        for rid in m.filter(pl.col("changed").fill_null(False))["record_id"].to_list():
            changed_by.setdefault(rid, step)
    cand = noisy.filter(pl.col("noise_kind").is_in(sorted(kinds)) & pl.col("record_id").is_in(list(changed_by)))
    kept = result.kept.filter(pl.col("record_id").is_in(cand["record_id"].to_list()))
    if kept.height == 0:
        return {}
    fields = [c for c in _TEXT_FIELDS if c in kept.columns and c in clean.columns]
    src = clean.select(pl.col("record_id").alias("noise_of"), *[pl.col(c).cast(pl.String).alias(f"{c}__src") for c in fields])
    j = (kept.select("record_id", *[pl.col(c).cast(pl.String) for c in fields])
         .join(cand.select("record_id", "noise_of"), on="record_id").join(src, on="noise_of", how="inner"))
    ok = pl.Series([True] * j.height)
    for c in fields:
        got, want = j[c].fill_null(""), j[f"{c}__src"].fill_null("")
        ok = ok & ((got == want) | (got == convert_texts(want, "t2s").fill_null("")))
    return {rid: changed_by[rid] for rid in j.filter(ok)["record_id"].to_list()}


def attribute_drops(result: Any, noisy: pl.DataFrame,
                    clean: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The accounting behind the scores (see the module docstring).

    Returns ``(drops, positives)``: ``drops`` has one row per dropped record (record_id, step,
    outcome "tp"/"fp", credited = the positive it counts for, credited_kind); ``positives`` has
    one row per noisy record (record_id, noise_kind, noise_of, caught_step, caught_via = "self" /
    "original" / "repaired" / null).

    ``clean``: the frame the noise was injected into (``inject_noise``'s input). With it, a noisy
    record of a kind a transform can undo (``REPAIRABLE_KINDS``) that no step dropped counts as
    caught by the transform step that changed it, via "repaired", when the pipeline kept it
    without its noise (``repaired``). Without ``clean`` only drops count, as before.
    """
    for c in ("record_id", "noise_kind", "noise_of"):
        if c not in noisy.columns:
            raise ValueError(f"noisy frame lacks {c!r}: pass the frame returned by inject_noise")
    dropped = result.dropped
    if "record_id" not in dropped.columns or "record_id" not in result.kept.columns:
        raise ValueError("result.kept and result.dropped need record_id to be scored")
    d = dropped.select(pl.col("record_id"), _step_key(dropped).alias("step"))
    ids = noisy["record_id"].to_list()
    id_set = set(ids)
    seen = d["record_id"].to_list() + result.kept["record_id"].to_list()
    stray = [r for r in seen if r not in id_set]
    if stray or len(seen) != len(ids) or len(set(seen)) != len(seen):
        raise ValueError(
            f"the result does not cover this noisy frame one-to-one ({len(seen)} records in "
            f"kept+dropped, {len(ids)} in the frame, {len(stray)} unknown ids such as "
            f"{stray[:3]}): score the result of run_pipeline(noisy, ...)")
    drop_step = dict(zip(d["record_id"].to_list(), d["step"].to_list()))
    kinds = noisy["noise_kind"].to_list()
    sources = noisy["noise_of"].to_list()
    kind_of = dict(zip(ids, kinds))
    # duplicate copies of each clean original, in frame order
    copies: dict[str, list[str]] = {}
    for rid, kind, src in zip(ids, kinds, sources):
        if kind in DUPLICATE_KINDS and src is not None:
            copies.setdefault(src, []).append(rid)
    caught: dict[str, tuple[str, str]] = {}  # positive -> (step, via)
    drow_outcome: list[str] = []
    drow_credit: list[str | None] = []
    for rid, step in zip(d["record_id"].to_list(), d["step"].to_list()):
        if kind_of.get(rid) is not None:
            caught[rid] = (step, "self")
            drow_outcome.append("tp")
            drow_credit.append(rid)
            continue
        kept_copies = [c for c in copies.get(rid, ()) if c not in drop_step]
        if kept_copies:
            caught[kept_copies[0]] = (step, "original")
            drow_outcome.append("tp")
            drow_credit.append(kept_copies[0])
        else:
            drow_outcome.append("fp")
            drow_credit.append(None)
    drops = d.with_columns(
        pl.Series("outcome", drow_outcome, dtype=pl.String),
        pl.Series("credited", drow_credit, dtype=pl.String),
        pl.Series("credited_kind", [kind_of.get(c) if c else None for c in drow_credit], dtype=pl.String))
    pos = noisy.filter(pl.col("noise_kind").is_not_null()).select("record_id", "noise_kind", "noise_of")
    pos_ids = pos["record_id"].to_list()
    if clean is not None:
        for rid, step in repaired(result, noisy, clean).items():
            caught.setdefault(rid, (step, "repaired"))
    positives = pos.with_columns(
        pl.Series("caught_step", [caught.get(r, (None, None))[0] for r in pos_ids], dtype=pl.String),
        pl.Series("caught_via", [caught.get(r, (None, None))[1] for r in pos_ids], dtype=pl.String))
    return drops, positives


SCORE_SCHEMA: dict[str, pl.DataType] = {
    "step": pl.String, "filter": pl.String, "noise_kind": pl.String, "n_positive": pl.Int64,
    "tp": pl.Int64, "fp": pl.Int64, "fn": pl.Int64, "precision": pl.Float64, "recall": pl.Float64,
}


def score_filters(result: Any, noisy: pl.DataFrame, clean: pl.DataFrame | None = None) -> pl.DataFrame:
    """Precision and recall of every filter step and of the whole pipeline, per noise kind.

    One row per (step, noise_kind), with ``step = "(all)"`` for the pipeline as a whole and
    ``noise_kind = "(all)"`` for all kinds together (the last row is the overall score):

    - n_positive: noisy records of that kind; tp: those the step caught (rule in the module
      docstring); fn = n_positive - tp.
    - fp: clean records the step dropped without credit. In a kind-specific row fp is the same
      number, so its precision is the step's precision if that kind were the only noise.
    - precision = tp / (tp + fp), recall = tp / n_positive; null (not NaN, no error) when the
      denominator is 0.

    With ``clean`` (the frame the noise was injected into), noise a transform repaired counts as
    caught by that transform (``repaired``; its rows then appear too, with fp 0).
    """
    drops, positives = attribute_drops(result, noisy, clean)
    steps = _steps_of(result, drops["step"].to_list(), transforms=clean is not None)
    kinds = _kind_order(positives["noise_kind"].to_list()) + [ALL]
    n_pos = {k: 0 for k in kinds}
    for k in positives["noise_kind"].to_list():
        n_pos[k] += 1
        n_pos[ALL] += 1
    tp: dict[tuple[str, str], int] = {}
    for k, s in zip(positives["noise_kind"].to_list(), positives["caught_step"].to_list()):
        if s is None:
            continue
        for key in ((s, k), (s, ALL), (ALL, k), (ALL, ALL)):
            tp[key] = tp.get(key, 0) + 1
    fp: dict[str, int] = {}
    for s, o in zip(drops["step"].to_list(), drops["outcome"].to_list()):
        if o == "fp":
            fp[s] = fp.get(s, 0) + 1
            fp[ALL] = fp.get(ALL, 0) + 1
    rows = []
    for step, filt in [*steps, (ALL, None)]:
        for k in kinds:
            t, f, npos = tp.get((step, k), 0), fp.get(step, 0), n_pos[k]
            rows.append((step, filt, k, npos, t, f, npos - t,
                         t / (t + f) if t + f else None, t / npos if npos else None))
    return pl.DataFrame(rows, schema=SCORE_SCHEMA, orient="row")


def caught_by_kind(result: Any, noisy: pl.DataFrame, clean: pl.DataFrame | None = None) -> pl.DataFrame:
    """Noise kind x filter step: how many noisy records of each kind each step caught.

    Rows: each noise kind present, then ``(clean)`` (its step columns are false positives).
    Columns: noise_kind, n (records), one count column per filter step (pipeline order), and
    not_caught (noisy records no step caught; for ``(clean)``: clean records not wrongly
    dropped). Each row's step columns plus not_caught sum to n. With ``clean``, transform steps
    get a column too, counting the noise they repaired (``repaired``).
    """
    drops, positives = attribute_drops(result, noisy, clean)
    steps = [s for s, _ in _steps_of(result, drops["step"].to_list(), transforms=clean is not None)]
    kinds = _kind_order(positives["noise_kind"].to_list())
    counts: dict[tuple[str, str], int] = {}
    for k, s in zip(positives["noise_kind"].to_list(), positives["caught_step"].to_list()):
        if s is not None:
            counts[(k, s)] = counts.get((k, s), 0) + 1
    for s, o in zip(drops["step"].to_list(), drops["outcome"].to_list()):
        if o == "fp":
            counts[(CLEAN, s)] = counts.get((CLEAN, s), 0) + 1
    n_of = {k: 0 for k in kinds}
    for k in positives["noise_kind"].to_list():
        n_of[k] += 1
    n_of[CLEAN] = noisy.height - positives.height
    data: dict[str, list[Any]] = {"noise_kind": [], "n": []}
    clash = [s for s in steps if s in ("noise_kind", "n", "not_caught")]
    if clash:
        raise ValueError(f"step name(s) {clash} clash with the table's columns; label the steps")
    for s in steps:
        data[s] = []
    data["not_caught"] = []
    for k in [*kinds, CLEAN]:
        data["noise_kind"].append(k)
        data["n"].append(n_of[k])
        got = 0
        for s in steps:
            c = counts.get((k, s), 0)
            data[s].append(c)
            got += c
        data["not_caught"].append(n_of[k] - got)
    return pl.DataFrame(data, schema={"noise_kind": pl.String, "n": pl.Int64,
                                      **{s: pl.Int64 for s in steps}, "not_caught": pl.Int64})


def score_auc(noisy: pl.DataFrame, scores: pl.Series | Sequence[float | None],
              higher_is_clean: bool = True) -> dict[str, Any]:
    """How well a per-record score separates clean from noisy records of ``inject_noise``'s frame:
    the ROC AUC (the chance that a random clean record scores above a random noisy one; ties count
    half; 0.5 is chance), overall and per noise kind. For a threshold-free look at a model score such
    as the judge's, where precision/recall would need a cut-off first.

    Records without a score (null / NaN) are left out and counted in ``unscored``. Returns
    ``{"auc", "n_clean", "n_noisy", "unscored", "by_kind": {kind: auc}}`` (auc None when a side is empty).
    """
    s = pl.Series("score", list(scores), dtype=pl.Float64)
    if s.len() != noisy.height:
        raise ValueError(f"{s.len()} scores for {noisy.height} records; pass one score per row of the noisy frame")
    frame = pl.DataFrame({"kind": noisy["noise_kind"], "score": s}).with_columns(pl.col("score").fill_nan(None))
    unscored = frame["score"].null_count()
    frame = frame.drop_nulls("score").with_columns(pl.col("score") * (1 if higher_is_clean else -1))
    clean = frame.filter(pl.col("kind").is_null())["score"]

    def auc(pos: pl.Series) -> float | None:
        if clean.len() == 0 or pos.len() == 0:
            return None
        # Mann–Whitney U from mid-ranks of the pooled scores (ties share their average rank)
        pooled = pl.concat([clean, pos]).rank("average")
        u = float(pooled[:clean.len()].sum()) - clean.len() * (clean.len() + 1) / 2
        return u / (clean.len() * pos.len())

    noisy_scores = frame.filter(pl.col("kind").is_not_null())
    by_kind = {k: auc(noisy_scores.filter(pl.col("kind") == k)["score"])
               for k in _kind_order(noisy_scores["kind"].unique().to_list())}
    return {"auc": auc(noisy_scores["score"]), "n_clean": clean.len(), "n_noisy": noisy_scores.height,
            "unscored": unscored, "by_kind": by_kind}
