"""Contact details: phone numbers, e-mail addresses, URLs, QQ / WeChat ids."""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

import polars as pl

from cqia_nb.filter.framework import register
from cqia_nb.filter.rules.common import PatternFilter, escape_literal

# ASCII word boundary: CJK characters count as non-word, so "电话13812345678" matches.
_B = r"(?-u:\b)"
_MOBILE = r"1[3-9][0-9](?:[- ]?[0-9]{4}){2}"


@register
@dataclasses.dataclass
class PhoneFilter(PatternFilter):
    """Chinese phone numbers: mobiles ``1[3-9]x xxxx xxxx`` (spaces/dashes allowed, optional
    ``+86``/``86``/``0086``), landlines ``0xx(x)-xxxxxxx(x)`` or ``(0xx)xxxxxxxx``, and
    ``400``/``800`` service numbers. Digit runs must stand alone (a 15-digit id does not match).

    Default ``max_count: 0`` with ``skip_code: true``: a contact number in an instruction pair
    is an ad or personal data; digits in code (ids, file names) are not. Real data: 2 records
    (landlines in finance news).
    """

    name = "phone"
    description = "phone numbers (mobile, landline, 400/800)"
    skip_code: bool = True
    DEFAULT_PATTERNS = (
        rf"\+86[- ]?{_MOBILE}{_B}",
        rf"{_B}(?:00)?(?:86[- ]?)?{_MOBILE}{_B}",
        rf"{_B}0[1-9][0-9]{{1,2}}-[2-9][0-9]{{6,7}}{_B}",
        rf"[(（]0[1-9][0-9]{{1,2}}[)）][- ]?[2-9][0-9]{{6,7}}{_B}",
        rf"{_B}[48]00[- ]?[0-9]{{3}}[- ]?[0-9]{{4}}{_B}",
    )


@register
@dataclasses.dataclass
class EmailFilter(PatternFilter):
    """E-mail addresses (``name@host.tld``, TLD of 2+ letters, so ``pkg@1.2.3`` does not match;
    ``pkg@x.y/index.js``-style module paths, whose "TLD" is a file extension, are not counted).

    Default ``max_count: 0`` with ``skip_code: true`` (addresses in code samples are examples).
    Real data at default: 7 records (6 finance news items with "联系run@ebrun.com", a douban
    call for papers), all real contact addresses.
    """

    name = "email"
    description = "e-mail addresses"
    skip_code: bool = True
    DEFAULT_PATTERNS = (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}" + _B,)
    FILE_EXTENSIONS: ClassVar[str] = (
        "js|jsx|ts|tsx|vue|css|scss|less|html?|json|xml|ya?ml|md|py|java|go|rs|php|rb|sh|txt|png|jpe?g|gif|svg|map")

    def ignore_regex(self) -> str | None:
        return rf"(?i)\.(?:{self.FILE_EXTENSIONS})$"


_URL_STOP = r"\s<>\"'，。！？、；：（）【】《》「」“”‘’"
_TLDS = r"com|cn|net|org|top|xyz|cc|vip|info|shop|club|site|online|me|tv|io"


@register
@dataclasses.dataclass
class UrlFilter(PatternFilter):
    """URLs: ``http(s)://``/``ftp://`` links, ``www.`` hosts, and bare domains under common
    TLDs (``example.cn``, ``shop.xyz/a``) that stand alone (not ``obj.com.method``-like code).

    Default ``max_count: 0`` with ``skip_code: true``: links inside fenced or inline code in
    segmentfault answers (``require('http://...')``, config files) are part of the answer.
    ``allow_domains`` (hosts and their subdomains) are not counted: by default documentation
    and reference sites that good technical answers cite (github.com, developer.mozilla.org,
    stackoverflow.com, wikipedia.org, arxiv.org, doi.org, python.org, w3.org, gov.cn ...);
    set ``allow_domains: []`` to count every link (then 141 real records). Real data at
    default: 118 records (0.66 %),
    mostly finance news with source links, douban reviews linking to video/event pages,
    watermarks in exam texts ("书村网www.mcqyy.com") and pan.baidu.com shares in zhihu.
    """

    name = "url"
    description = "links and domains"
    skip_code: bool = True
    allow_domains: tuple[str, ...] = (
        "github.com", "gitee.com", "stackoverflow.com", "segmentfault.com", "developer.mozilla.org",
        "w3.org", "python.org", "nodejs.org", "npmjs.com", "jsfiddle.net", "codepen.io",
        "wikipedia.org", "arxiv.org", "doi.org", "gov.cn")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.allow_domains, str):
            self.allow_domains = (self.allow_domains,)
        self.allow_domains = tuple(d.strip().lower().lstrip(".") for d in self.allow_domains if d.strip())
        bad = [d for d in self.allow_domains if not re.fullmatch(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+", d)]
        if bad:
            raise ValueError(f"allow_domains {bad}: give host names such as 'github.com'")

    def ignore_regex(self) -> str | None:
        if not self.allow_domains:
            return None
        doms = "|".join(escape_literal(d) for d in self.allow_domains)
        return rf"(?i)^[^a-z0-9]*(?:[a-z]+://)?(?:[a-z0-9-]+\.)*(?:{doms})(?:[^a-z0-9.-]|\.[^a-z0-9]|\.?$)"

    DEFAULT_PATTERNS = (
        rf"(?i)(?:https?|ftp)://[^{_URL_STOP}]+",
        rf"(?i){_B}www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+[^{_URL_STOP}]*",
        rf"(?i)(?:^|[^A-Za-z0-9._/@-])[a-z0-9][a-z0-9-]{{0,62}}(?:\.[a-z0-9-]{{1,63}})*\.(?:{_TLDS})(?:\.cn)?"
        rf"(?:/[^{_URL_STOP}]*)?{_B}(?:[^.A-Za-z0-9(]|$)",
    )

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        d = super().details(frame, values)
        # the bare-domain pattern includes one boundary character on each side
        return d.str.strip_chars(" \t\n,;:!?()[]{}<>\"'，。！？、；：（）【】《》「」“”‘’") if d is not None else None


@register
@dataclasses.dataclass
class QQWechatFilter(PatternFilter):
    """QQ numbers and WeChat ids: ``QQ``/``扣扣``/``QQ群`` followed by 5–11 digits;
    ``微信``/``威信``/``薇信``/``V信`` followed by an id (letter + 5–19 of ``[-_A-Za-z0-9]``, or
    6–11 digits); ``vx``/``wx``/``wechat``/``weixin`` need a ``:``/``号`` before the id so that
    code like ``wxWidgets`` does not match.

    Default ``max_count: 0``: contact ids are ads or personal data. Real data: 4 records
    (finance news with "微信: …" ads).
    """

    name = "qq_wechat"
    description = "QQ numbers and WeChat ids"
    DEFAULT_PATTERNS = (
        rf"(?i)(?:qq|扣扣|企鹅)(?:号码|号|群号|群)?\s*[:：]?\s*[1-9][0-9]{{4,10}}{_B}",
        rf"(?:微信|威信|薇信|[Vv]信)(?:号|公众号|id|ID)?\s*[:：]?\s*(?:[A-Za-z][-_A-Za-z0-9]{{5,19}}|[0-9]{{6,11}}){_B}",
        rf"(?i){_B}(?:vx|wx|wechat|weixin)\s*(?:号|id)?\s*[:：]\s*[A-Za-z0-9][-_A-Za-z0-9]{{5,19}}{_B}",
    )
