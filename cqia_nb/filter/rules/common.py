"""What the rule filters share: field specs, regex checks and the two base classes."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import polars as pl

from cqia_nb.filter.framework import Filter

TEXT_FIELDS = ("instruction", "input", "output")
ALL_TEXT = "instruction+input+output"
FieldSpec = str | tuple[str, ...]
#: Fenced code blocks (an unclosed fence runs to the end) and inline code spans.
FENCED_CODE = r"(?s)```.*?(?:```|\z)"
INLINE_CODE = r"`[^`\n]{1,200}`"


def parse_fields(spec: FieldSpec) -> tuple[str, ...]:
    """``"instruction+input"`` or ``["instruction", "input"]`` -> ("instruction", "input")."""
    parts = [p.strip() for p in spec.split("+")] if isinstance(spec, str) else [str(p).strip() for p in spec]
    if not parts or any(not p for p in parts):
        raise ValueError(f"field {spec!r}: name one column (e.g. 'output') or several joined by '+' "
                         "(e.g. 'instruction+input')")
    return tuple(parts)


def text_expr(spec: FieldSpec, strip_code: bool = False) -> pl.Expr:
    """The text of ``spec``'s columns (nulls as ""), joined by newlines; optionally without code."""
    cols = [pl.col(c).cast(pl.String).fill_null("") for c in parse_fields(spec)]
    e = cols[0] if len(cols) == 1 else pl.concat_str(cols, separator="\n")
    if strip_code:
        e = e.str.replace_all(FENCED_CODE, "\n").str.replace_all(INLINE_CODE, " ")
    return e


def _short(msg: str) -> str:
    lines = [l for l in str(msg).splitlines() if l.strip()]
    err = [l.strip() for l in lines if l.strip().startswith("error:")]
    return err[0] if err else (lines[0] if lines else str(msg))


def check_regex(pattern: str, what: str = "pattern") -> str:
    """Compile ``pattern`` with the engine the filters use; a clear ValueError otherwise."""
    if not isinstance(pattern, str) or pattern == "":
        raise ValueError(f"{what} {pattern!r}: give a non-empty regular expression")
    try:
        matches_empty = pl.select(pl.lit("").str.contains(pattern)).item()
    except pl.exceptions.PolarsError as e:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression ({_short(e)}). "
                         "Patterns use the Rust regex syntax of polars: no look-around, no back-references; "
                         "escape literal ( ) [ ] { } . + ? * | with a backslash") from None
    if matches_empty:
        raise ValueError(f"{what} {pattern!r} matches the empty string, so it would match every record; "
                         "make it require at least one character (e.g. '+' instead of '*')")
    return pattern


def escape_literal(word: str) -> str:
    return "".join("\\" + ch if ch in r"\.^$|?*+()[]{}-&~#" else ch for ch in word)


def fmt(template: str, *args: pl.Expr) -> pl.Expr:
    """``pl.format`` built from ``concat_str`` (polars 2.1's ``pl.format`` panics on some
    filtered string-view columns of empty strings); nulls render as "null"."""
    pieces = template.split("{}")
    if len(pieces) != len(args) + 1:
        raise ValueError("template placeholders and arguments differ")
    parts: list[pl.Expr] = []
    for text, arg in zip(pieces, [*args, None]):
        if text:
            parts.append(pl.lit(text, dtype=pl.String))
        if arg is not None:
            parts.append(arg.cast(pl.String).fill_null("null"))
    return pl.concat_str(parts)


def series_of(frame: pl.DataFrame, expr: pl.Expr, name: str = "value") -> pl.Series:
    return frame.select(expr.alias(name)).to_series()


def char_class(*ranges: tuple[int, int] | int) -> str:
    """A regex class body from code points / ranges (``\\x{...}`` escapes)."""
    out = []
    for r in ranges:
        a, b = (r, r) if isinstance(r, int) else r
        out.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
    return "".join(out)


@dataclasses.dataclass
class TextFilter(Filter):
    """A filter over one text (``field``); subclasses override the default field."""

    details_per_record = True
    per_record = True  # measured in batches (framework.measure_batched): every value is the record's own
    field: FieldSpec = ALL_TEXT

    def __post_init__(self) -> None:
        self._fields = parse_fields(self.field)
        self.field = "+".join(self._fields)

    def required_columns(self) -> tuple[str, ...]:
        return self._fields

    def text(self, strip_code: bool = False) -> pl.Expr:
        return text_expr(self._fields, strip_code)


@dataclasses.dataclass
class PatternFilter(TextFilter):
    """Counts regex matches; keeps records with at most ``max_count``; detail = first match.

    ``patterns`` adds user regexes (Rust syntax, checked when the recipe is built);
    ``replace_defaults: true`` uses only them. ``skip_code`` ignores fenced and inline code.
    """

    max_count: int = 0
    patterns: tuple[str, ...] = ()
    replace_defaults: bool = False
    skip_code: bool = False
    DEFAULT_PATTERNS: ClassVar[tuple[str, ...]] = ()
    threshold_fields: ClassVar[tuple[str, ...]] = ("max_count",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.patterns, str):
            self.patterns = (self.patterns,)
        self.patterns = tuple(self.patterns)
        for i, p in enumerate(self.patterns, start=1):
            check_regex(p, f"patterns[{i}]")
        pats = self.patterns if self.replace_defaults else (*self.DEFAULT_PATTERNS, *self.patterns)
        if not pats:
            raise ValueError("no patterns: give `patterns:` when `replace_defaults: true`")
        if self.max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {self.max_count}")
        self._regex = "|".join(f"(?:{p})" for p in pats)

    def ignore_regex(self) -> str | None:
        """Matches that also match this regex are not counted (allow-lists); None: count all."""
        return None

    def _matches(self) -> pl.Expr:
        m = self.text(self.skip_code).str.extract_all(self._regex)
        ign = self.ignore_regex()
        if ign is not None:
            m = m.list.eval(pl.element().filter(~pl.element().str.contains(ign)))
        return m

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        if self.ignore_regex() is None:
            return series_of(frame, self.text(self.skip_code).str.count_matches(self._regex))
        return series_of(frame, self._matches().list.len().fill_null(0))

    def keep(self, values: pl.Series) -> pl.Series:
        return values <= self.max_count

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        if self.ignore_regex() is None:
            first = self.text(self.skip_code).str.extract(self._regex, 0)
        else:
            first = self._matches().list.first()
        return series_of(frame, first.str.slice(0, 200), "detail")
