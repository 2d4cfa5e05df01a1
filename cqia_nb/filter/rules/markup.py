"""Advertising and HTML left in the text."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import polars as pl

from cqia_nb.filter.framework import register
from cqia_nb.filter.rules.common import PatternFilter, series_of


@register
@dataclasses.dataclass
class AdsFilter(PatternFilter):
    """Advertising calls to action: "加微信/加V", "扫码关注/领取", "关注公众号", "点击链接领取",
    "【点击领取】", "私信领取", "免费领取 … 点击/扫码/链接" (both orders, within 20 characters),
    "限时抢购/秒杀/特价", "全场五折", "领券链接/下单返现", "招代理/加盟", "咨询热线: 1…", "厂家直销",
    "一对一跟单", "活动地址:", "进群领取", "淘宝搜索:".

    Value = number of matches; default ``max_count: 0``. The patterns are phrased as calls to
    action so that text that *talks about* promotions passes: on the real data, bare keywords
    ("免费领取", "客服电话", "买一送一", "全网最低价") hit douban reviews, ruozhiba answers
    ("拨打银行客服电话") and xhs shopping notes that CQIA accepted; these phrases hit 8 records
    (0.04 %), real ads in finance news and zhihu answers and xhs promotion notes.
    """

    name = "ads"
    description = "advertising calls to action"
    DEFAULT_PATTERNS = (
        r"(?i)加(?:我|本人|小编|客服)?(?:的)?(?:微信|v信|vx|wx|qq|扣扣|好友)",
        r"扫(?:码|描二维码|一扫|描下方二维码)(?:关注|领取|添加|进群|下单|购买|咨询|了解)",
        r"关注(?:我们的|我的|本)?(?:微信)?公众号",
        r"(?:点击|戳)(?:下方|以下|左下角|文末)?(?:链接|阅读原文)(?:立即|马上|即可)?(?:领取|购买|抢购|下单|报名|获取|查看)",
        r"【点击(?:领取|购买|报名|查看|下载)】",
        r"私信(?:我|小编|博主)?(?:领取|获取|咨询|下单)",
        r"免费(?:领取|咨询|试用|索取)[^。\n]{0,20}(?:点击|扫码|私信|添加|关注|链接|地址|热线|电话)"
        r"|(?:点击|扫码|私信|添加|关注|链接)[^。\n]{0,20}免费(?:领取|咨询|试用|索取)",
        r"限时(?:抢购|秒杀|免费领|特价)|全场[0-9一二三四五六七八九半]{1,2}折",
        r"(?:领取|领)(?:优惠券|红包)[^。\n]{0,10}(?:链接|点击|扫码|口令)|优惠券(?:链接|口令)|(?:下单|购买)(?:立减|返现|返利)",
        r"(?:招|诚招|火热招募)(?:代理|加盟|合伙人|代理商)|加盟(?:热线|电话)",
        r"(?i)(?:咨询|订购|预订|招商|客服)(?:热线|电话|微信|qq)\s*[:：]\s*[0-9A-Za-z]",
        r"厂家直销|包邮到家|一对一跟单|活动地址\s*[:：]",
        r"(?:进|入|拉你进)(?:群|粉丝群|交流群)(?:领取|了解|咨询)|进群(?:领|送)",
        r"(?:淘宝|天猫|拼多多|京东)(?:搜索|搜|店铺名?)\s*[:：]",
    )


_TAGS = ("a|abbr|article|audio|b|blockquote|body|br|button|center|code|dd|div|dl|dt|em|embed|figcaption|"
         "figure|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|label|li|link|meta|nav|"
         "ol|option|p|pre|script|section|select|small|source|span|strike|strong|style|sub|sup|table|"
         "tbody|td|textarea|tfoot|th|thead|title|tr|u|ul|video")
_ENTITIES = ("nbsp|amp|lt|gt|quot|apos|ensp|emsp|thinsp|mdash|ndash|hellip|ldquo|rdquo|lsquo|rsquo|"
             "middot|bull|times|divide|copy|reg|trade|deg|plusmn|laquo|raquo|yen|euro|pound|cent|sect")


@register
@dataclasses.dataclass
class HtmlFilter(PatternFilter):
    """HTML and markdown remnants of scraping: tags of HTML elements (``<p>``, ``</div>``,
    ``<br/>``, ``<img src=...>``, ``<a href=...>``; other ``<word>`` such as ``List<String>`` or
    ``a<b>c`` do not match), entities (``&nbsp;``, ``&amp;``, ``&#8203;``, ``&#x3000;``),
    markdown images ``![...](...)`` and links ``[text](target)``.

    Code: segmentfault answers legitimately contain ``<div>`` in fenced code blocks (```` ``` ````)
    and inline code (``<div>`` between backticks), which ``skip_code: true`` (default) removes
    before matching.
    Their prose also names tags ("用<button>触发事件", "<p>标签中") when the same text shows
    the code in a block, so with ``tags_in_code_texts: false`` (default) tags are not counted in a
    text that contains code at all; entities and markdown remnants still are. Default
    ``max_count: 0``. Real data at default: 6 records (douban synopses with ``<BR>&nbsp;``,
    finance news with ``&nbsp;``, zhihu answers with markdown links); counting tags in code
    texts too would add 9 segmentfault questions.
    """

    name = "html"
    description = "HTML tags, entities, markdown image/link remnants (outside code)"
    skip_code: bool = True
    tags_in_code_texts: bool = False
    TAG_PATTERN: ClassVar[str] = rf"(?i)</?(?:{_TAGS})(?:\s[^<>\n]{{0,300}})?/?>"
    DEFAULT_PATTERNS = (
        TAG_PATTERN,
        rf"(?i)&(?:{_ENTITIES}|#[0-9]{{2,6}}|#x[0-9a-f]{{2,5}});",
        r"!\[[^\]\n]{0,200}\]\([^)\n]{0,500}\)",
        r"\[[^\]\n]{1,200}\]\((?:https?://|www\.|/|\.{1,2}/|#)[^)\s]{0,500}\)",
    )

    def _has_code(self) -> pl.Expr:
        return self.text().str.contains(r"```|`[^`\n]{1,200}`")

    def _text_for_tags(self) -> pl.Expr:
        t = self.text(self.skip_code)
        if self.tags_in_code_texts:
            return t
        # in a text with code, hide tags from the match (entities, markdown still count)
        return pl.when(self._has_code()).then(t.str.replace_all(self.TAG_PATTERN, " ")).otherwise(t)

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return series_of(frame, self._text_for_tags().str.count_matches(self._regex))

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return series_of(frame, self._text_for_tags().str.extract(self._regex, 0).str.slice(0, 200), "detail")
