"""Rewriting rules: remove every match of a regex (Data-Juicer's ``clean_links_mapper`` /
``clean_email_mapper`` patterns ship here), with an optional prefilter that spares the regex
the texts it cannot match."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import polars as pl

from cqia_nb.filter.framework import Rewritten, Transform, register
from cqia_nb.filter.rules.common import FieldSpec, check_regex, parse_fields

#: The start of a link in Data-Juicer 1.6.1's ``clean_links_mapper`` pattern (a scheme
#: ``name:`` + ``/`` or an alphanumeric, ``www.``/``www1.``, or ``host.tld/``).
DJ_LINK_HEAD = r"(?:[a-z][\w-]+:(?:\/{1,3}|[a-z0-9%])|www\d{0,3}[.]|[a-z0-9.\-]+[.][a-z]{2,4}\/)"
#: Data-Juicer 1.6.1's default link pattern (``ops/mapper/clean_links_mapper.py``), verbatim:
#: a Unicode ``\b``, then ``DJ_LINK_HEAD``, then the rest of the URL.
DJ_LINK = (r"(?i)\b(" + DJ_LINK_HEAD +
           r"(?:[^\s()<>]+|\(([^\s()<>]+|(\([^\s()<>]+\)))*\))+(?:\(([^\s()<>]+|(\([^\s()<>]+\)))*\)|"
           r"[^\s`!()\[\]{};:\'\".,<>?«»“”‘’]))")
#: A necessary condition of ``DJ_LINK``: every match of ``DJ_LINK`` begins with a match of
#: ``DJ_LINK_HEAD`` under the same ``(?i)`` flag, so a text without a match of this pattern has no
#: match of ``DJ_LINK`` either. Without the Unicode ``\b`` the regex engine keeps its fast DFA on
#: non-ASCII text, which ``DJ_LINK`` (``\b`` on Chinese text) cannot.
DJ_LINK_PREFILTER = "(?i)" + DJ_LINK_HEAD
#: Data-Juicer 1.6.1's default e-mail pattern (``ops/mapper/clean_email_mapper.py``), verbatim.
DJ_EMAIL = r"[A-Za-z0-9.\-+_]+@[a-z0-9.\-+_]+\.[a-z]+"
#: A necessary condition of ``DJ_EMAIL``: the literal ``@`` of every match.
DJ_EMAIL_PREFILTER = "@"


def replace_all(texts: pl.Series, pattern: str, replacement: str = "",
                prefilter: str | None = None) -> tuple[pl.Series, pl.Series]:
    """``texts.str.replace_all(pattern, replacement)`` and the changed mask (nulls stay null and
    unchanged). With ``prefilter`` (a regex that every text with a match of ``pattern`` also
    matches) only the texts that match ``prefilter`` are searched for ``pattern``; the others
    cannot change, so the result is the same."""
    texts = texts.cast(pl.String)
    if prefilter is None:
        after = texts.str.replace_all(pattern, replacement)
        return after, (texts != after).fill_null(False)
    cand = np.flatnonzero(texts.str.contains(prefilter).fill_null(False).to_numpy())
    changed = np.zeros(texts.len(), dtype=bool)
    if len(cand) == 0:
        return texts, pl.Series(texts.name, changed)
    before = texts.gather(cand)
    rewritten = before.str.replace_all(pattern, replacement)
    diff = (before != rewritten).fill_null(False).to_numpy()
    if not diff.any():
        return texts, pl.Series(texts.name, changed)
    idx = cand[diff]
    changed[idx] = True
    after = texts.clone().scatter(idx, rewritten.filter(pl.Series(diff)))
    return after, pl.Series(texts.name, changed)


@register
@dataclasses.dataclass
class RegexCleanTransform(Transform):
    """Remove (or replace by ``replacement``) every match of ``pattern`` in each of ``field``'s
    columns; drops nothing, counts the records changed. What Data-Juicer's cleaning mappers do:
    ``pattern: dj_links`` / ``dj_email`` stand for its default patterns (``DJ_LINK``, ``DJ_EMAIL``),
    with their proven prefilters. ``prefilter`` (optional, for your own ``pattern``): a regex that
    every text with a match of ``pattern`` also matches (e.g. a literal that every match contains);
    texts without it are not searched. A wrong prefilter leaves matches in place, so only give one
    that is a necessary condition of ``pattern``.
    """

    name = "regex_clean"
    per_record = True
    description = "remove every match of a regex"
    field: FieldSpec = "output"
    pattern: str = "dj_links"
    replacement: str = ""
    prefilter: str | None = None

    PRESETS: ClassVar[dict[str, tuple[str, str]]] = {"dj_links": (DJ_LINK, DJ_LINK_PREFILTER), "dj_email": (DJ_EMAIL, DJ_EMAIL_PREFILTER)}

    def __post_init__(self) -> None:
        self._fields = parse_fields(self.field)
        self.field = "+".join(self._fields)
        if self.pattern in self.PRESETS:
            if self.prefilter is not None:
                raise ValueError(f"pattern {self.pattern!r} is a preset with its own prefilter; give no prefilter")
            self._pattern, self._prefilter = self.PRESETS[self.pattern]
        else:
            self._pattern = check_regex(self.pattern)
            self._prefilter = None if self.prefilter is None else check_regex(self.prefilter, "prefilter")

    def required_columns(self) -> tuple[str, ...]:
        return self._fields

    def transform(self, frame: pl.DataFrame) -> Rewritten:
        cols, changed = [], np.zeros(frame.height, dtype=bool)
        for f in self._fields:
            after, ch = replace_all(frame[f], self._pattern, self.replacement, self._prefilter)
            cols.append(after.alias(f))
            changed |= ch.to_numpy()
        return Rewritten(frame.with_columns(cols), pl.Series("changed", changed))
