"""Interactive browser for COIG-CQIA frames (plain ipywidgets).

The core is pure and testable without a browser: :class:`BrowserQuery` describes a view,
:func:`filter_frame` applies it with polars expressions, :func:`page_of` slices one page and
:func:`render_page_html` / :func:`render_record_html` turn a page / one record into HTML.
:class:`DatasetBrowser` wires these to widgets; :func:`browse` builds one from almost anything.

All dataset text is untrusted: every value and every column name is HTML-escaped before it
reaches an ``ipywidgets.HTML`` (which sets ``innerHTML``, so ``<img onerror=...>`` would run).

A parquet path or folder and a polars LazyFrame are browsed lazily (a page reads only its row
groups, a filter scans until the page is full); the sources are in :mod:`cqia_nb.ui.lazy`.

Why this module is long: one widget with two paths (an in-memory frame, a lazy source) that share
every control, the query state and the rendering, plus ``browse()``'s readers for every input kind.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import ipywidgets as w
import polars as pl

from cqia_nb.core.jsonl import data_name, decompress, json_object
from cqia_nb.data.load import LoadConfig, load
from cqia_nb.data.schema import LFS_PREFIX
from cqia_nb.ui.lazy import LazyFrameSource, LazySource, MatchScan, ParquetSource, parquet_paths
from cqia_nb.ui.common import (
    Displayable,
    esc,
    render_page_html,
    render_record_html,
    to_text,
)

DEFAULT_FIELDS: tuple[str, ...] = ("instruction", "input", "output")
TASK_TYPE_COLUMNS: tuple[str, ...] = ("task_type_major", "task_type_minor")
PAGE_SIZES: tuple[int, ...] = (5, 10, 20, 50, 100)
ANY = "(any)"
#: Top of the length slider for a lazy source (its true maximum would take a pass over the text).
LAZY_LENGTH_MAX = 100_000


@dataclass(frozen=True)
class BrowserQuery:
    """One view of a frame: filters plus the page to show.

    ``text`` is a case-insensitive literal substring unless ``regex`` is set (then it is a
    polars/Rust regex used as written; prefix ``(?i)`` for case-insensitive). Empty
    ``configs`` and ``None`` filters mean "any". ``min_len``/``max_len`` are inclusive
    character counts of ``length_field``.
    """

    text: str = ""
    regex: bool = False
    fields: tuple[str, ...] = DEFAULT_FIELDS
    configs: tuple[str, ...] = ()
    task_type: str | None = None
    domain: str | None = None
    answer_from: str | None = None
    human_verified: bool | None = None
    length_field: str = "output"
    min_len: int | None = None
    max_len: int | None = None
    page: int = 0
    page_size: int = 10


_QUERY_FIELDS: frozenset[str] = frozenset(f.name for f in fields(BrowserQuery))
_FILTER_FIELDS: frozenset[str] = _QUERY_FIELDS - {"page", "page_size"}


def _regex_error_reason(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("error:"):
            return ln[len("error:"):].strip()
    return lines[0] if lines else type(err).__name__


def _invalid_regex(pattern: str, err: Exception) -> ValueError:
    return ValueError(
        f"invalid regular expression {pattern!r}: {_regex_error_reason(err)}. "
        "Fix the pattern, or untick 'regex' to search for the text literally.")


def _check_regex(pattern: str) -> None:
    # Python's `re` accepts a different syntax (look-arounds, backreferences) than the Rust
    # engine polars uses, so validate with polars itself on a one-row series.
    try:
        pl.Series([""], dtype=pl.String).str.contains(pattern)
    except pl.exceptions.PolarsError as e:
        raise _invalid_regex(pattern, e) from None


def _as_text(frame: pl.DataFrame, name: str) -> pl.Expr:
    col = pl.col(name)
    return col if frame.schema[name] == pl.String else col.cast(pl.String)


def _require(frame: pl.DataFrame, name: str, what: str) -> None:
    if name not in frame.columns:
        raise ValueError(
            f"cannot filter by {what}: column {name!r} is not in this frame "
            f"(columns: {', '.join(frame.columns)}); clear the {what} filter")


def _member(frame: pl.DataFrame, name: str, value: str) -> pl.Expr:
    """``value`` is an element of a list column, or equals a scalar column."""
    dtype = frame.schema[name]
    if isinstance(dtype, pl.List):
        col = pl.col(name) if dtype.inner == pl.String else pl.col(name).cast(pl.List(pl.String))
        return col.list.contains(pl.lit(value, dtype=pl.String)).fill_null(False)
    return (_as_text(frame, name) == value).fill_null(False)


def _bool_eq(frame: pl.DataFrame, name: str, value: bool) -> pl.Expr:
    if frame.schema[name] == pl.Boolean:
        return (pl.col(name) == value).fill_null(False)
    # A CSV round trip can leave "true"/"false" strings.
    return (pl.col(name).cast(pl.String).str.to_lowercase() == str(value).lower()).fill_null(False)


def _text_expr(frame: pl.DataFrame, query: BrowserQuery) -> pl.Expr:
    present = [f for f in query.fields if f in frame.columns]
    if not present:
        raise ValueError(
            f"none of the search fields {list(query.fields)} is a column of this frame "
            f"(columns: {', '.join(frame.columns)}); pick at least one field to search")
    if query.regex:
        _check_regex(query.text)
        pattern = query.text
    else:
        # (?i) on an escaped literal is as fast as a case-sensitive literal search in polars;
        # lower-casing the columns first is ~30x slower on the real data.
        pattern = "(?i)" + pl.escape_regex(query.text)
    return pl.any_horizontal(
        [_as_text(frame, f).str.contains(pattern).fill_null(False) for f in present])


def filter_expr(frame: pl.DataFrame | pl.Schema, query: BrowserQuery) -> pl.Expr | None:
    """The predicate of ``query``'s filters on a frame of ``frame``'s schema (None: no filter).

    ``frame`` may be a schema (a lazy source's). Raises ValueError for an invalid regex or a filter
    on a column the frame lacks.
    """
    if isinstance(frame, (pl.Schema, dict)):
        frame = pl.DataFrame(schema=frame)
    exprs: list[pl.Expr] = []
    if query.text:
        exprs.append(_text_expr(frame, query))
    if query.configs:
        _require(frame, "config", "config")
        exprs.append(_as_text(frame, "config").is_in(list(query.configs)).fill_null(False))
    if query.task_type is not None:
        present = [c for c in TASK_TYPE_COLUMNS if c in frame.columns]
        if not present:
            _require(frame, "task_type_major", "task type")
        exprs.append(pl.any_horizontal([_member(frame, c, query.task_type) for c in present]))
    if query.domain is not None:
        _require(frame, "domain", "domain")
        exprs.append(_member(frame, "domain", query.domain))
    if query.answer_from is not None:
        _require(frame, "answer_from", "answer_from")
        exprs.append((_as_text(frame, "answer_from") == query.answer_from).fill_null(False))
    if query.human_verified is not None:
        _require(frame, "human_verified", "human_verified")
        exprs.append(_bool_eq(frame, "human_verified", query.human_verified))
    if query.min_len is not None or query.max_len is not None:
        _require(frame, query.length_field, "length")
        n = _as_text(frame, query.length_field).str.len_chars().fill_null(0)
        if query.min_len is not None:
            exprs.append(n >= query.min_len)
        if query.max_len is not None:
            exprs.append(n <= query.max_len)
    return pl.all_horizontal(exprs) if exprs else None


def filter_frame(frame: pl.DataFrame, query: BrowserQuery) -> pl.DataFrame:
    """Rows of ``frame`` matching every filter of ``query`` (``page`` is ignored).

    Raises ValueError for an invalid regex or a filter on a column the frame lacks.
    """
    expr = filter_expr(frame, query)
    if expr is None:
        return frame
    try:
        return frame.filter(expr)
    except pl.exceptions.ComputeError as e:
        if query.text and query.regex:
            raise _invalid_regex(query.text, e) from None
        raise


def page_count(n_rows: int, page_size: int) -> int:
    """Number of pages for ``n_rows`` (at least 1, so an empty result is "page 1 of 1")."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    return max(1, math.ceil(n_rows / page_size))


def page_of(filtered: pl.DataFrame, query: BrowserQuery) -> pl.DataFrame:
    """The rows of page ``query.page`` (clamped to the first/last page)."""
    last = page_count(filtered.height, query.page_size) - 1
    page = min(max(query.page, 0), last)
    return filtered.slice(page * query.page_size, query.page_size)


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _normalise_changes(changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    for k in ("fields", "configs"):
        if k in out:
            out[k] = _tuple(out[k])
    for k in ("min_len", "max_len", "page", "page_size"):
        if k in out and out[k] is not None:
            out[k] = int(out[k])
    if "page_size" in out:
        page_count(0, out["page_size"])  # validates
    hv = out.get("human_verified")
    if isinstance(hv, str):
        if hv.lower() not in ("true", "false"):
            raise ValueError(f"human_verified must be True, False or None, got {hv!r}")
        out["human_verified"] = hv.lower() == "true"
    elif hv is not None:
        out["human_verified"] = bool(hv)
    return out


def _distinct(frame: pl.DataFrame, names: Sequence[str]) -> list[str]:
    """Sorted distinct non-null values of the given (list or scalar) columns."""
    parts = []
    for name in names:
        if name not in frame.columns:
            continue
        s = frame.get_column(name)
        if isinstance(s.dtype, pl.List):
            s = s.explode()
        parts.append(s.cast(pl.String).drop_nulls())
    if not parts:
        return []
    return pl.concat(parts).unique().sort().to_list()


class DatasetBrowser(Displayable):
    """Filter, page through and read records of a frame in a notebook.

    ``DatasetBrowser(df)`` as the last line of a cell displays it; ``.widget`` is the VBox.
    Drive it from code with :meth:`set_query`, :meth:`next_page`, :meth:`prev_page` and
    :meth:`select`; errors (such as an invalid regex) go to :attr:`status_text`, not raised.
    """

    def __init__(self, frame: pl.DataFrame | pl.LazyFrame | LazySource, page_size: int | None = None,
                 query: BrowserQuery | None = None) -> None:
        if isinstance(frame, pl.LazyFrame):
            frame = LazyFrameSource(frame, post=_unpack_task_type)
        if isinstance(frame, LazySource):
            # Lazy: only the schema and the row count now; each page reads the chunks it shows.
            self._source: LazySource | None = frame
            self._frame: pl.DataFrame = frame.empty()
        elif isinstance(frame, pl.DataFrame):
            self._source = None
            self._frame = frame
        else:
            raise TypeError(f"DatasetBrowser needs a polars DataFrame, got {type(frame).__name__}; "
                            "use cqia_nb.ui.browse() for other inputs")
        self._scan: MatchScan | None = None
        cols = self._frame.columns
        self._text_cols = [c for c in cols if self._frame.schema[c] == pl.String]
        # Default search fields: the three text fields, or every string column when absent.
        q = query or BrowserQuery()
        fields_ = tuple(f for f in q.fields if f in cols) or tuple(self._text_cols)
        length_field = next((c for c in (q.length_field, "output", *self._text_cols)
                             if c in self._text_cols), q.length_field)
        self._query = replace(q, fields=fields_, length_field=length_field,
                              page_size=page_size if page_size is not None else q.page_size)
        page_count(0, self._query.page_size)
        self._max_len: dict[str, int] = {}
        self._filtered = self._frame
        self._page = self._frame.head(0)
        self._error: str | None = None
        self._selected: int | None = None
        self._syncing = False
        self._build_controls()
        self._apply({}, force=True)

    # -- construction

    def _build_controls(self) -> None:
        cols = set(self._frame.columns)
        lay = w.Layout
        groups = {"config": ["config"], "task": TASK_TYPE_COLUMNS, "domain": ["domain"],
                  "answer_from": ["answer_from"]}
        values = (self._source.distinct(groups) if self._source is not None
                  else {k: _distinct(self._frame, v) for k, v in groups.items()})
        self._search = w.Text(description="search", placeholder="text (Enter to apply)",
                              continuous_update=False, layout=lay(width="320px"))
        self._regex = w.Checkbox(description="regex", indent=False, layout=lay(width="80px"))
        self._fields = w.SelectMultiple(options=self._text_cols, description="in fields",
                                        rows=min(4, max(1, len(self._text_cols))))
        self._config_values = values["config"]
        self._configs = w.SelectMultiple(options=self._config_values, description="config",
                                         rows=min(6, max(1, len(self._config_values))),
                                         tooltip="none selected = all")
        self._task_values = values["task"]
        self._task_type = w.Dropdown(options=[ANY, *self._task_values], description="task type")
        self._domain_values = values["domain"]
        self._domain = w.Dropdown(options=[ANY, *self._domain_values], description="domain")
        self._answer_values = values["answer_from"]
        self._answer_from = w.Dropdown(
            options=[ANY, *(v if v else "(empty)" for v in self._answer_values)], description="answer")
        self._human = w.Dropdown(options=[ANY, "True", "False"], description="verified")
        self._length_field = w.Dropdown(options=self._text_cols or [""], description="length of")
        self._length = w.IntRangeSlider(min=0, max=1, value=(0, 1), description="chars",
                                        continuous_update=False, layout=lay(width="420px"))
        self._page_size = w.Dropdown(
            options=sorted({*PAGE_SIZES, self._query.page_size}), description="per page",
            layout=lay(width="160px"))
        self._prev = w.Button(description="◀ Prev", layout=lay(width="80px"))
        self._next = w.Button(description="Next ▶", layout=lay(width="80px"))
        self._status = w.Label()
        # Lazy sources: how far a filter's scan has got, and a button to finish it (exact count).
        self._progress = w.IntProgress(min=0, max=max(1, self._source.n_chunks) if self._source else 1,
                                       description="scanned", layout=lay(width="300px"))
        self._count_all = w.Button(description="count all", layout=lay(width="100px"),
                                   tooltip="scan to the end for the exact number of matches")
        if self._source is None:
            self._progress.layout.display = "none"
            self._count_all.layout.display = "none"
        self._page_view = w.HTML()
        self._record = w.Dropdown(description="record", layout=lay(width="480px"))
        self._record_view = w.HTML()

        has_text = bool(self._text_cols)
        self._visible = {
            "search": has_text, "regex": has_text, "fields": has_text,
            "configs": "config" in cols,
            "task_type": any(c in cols for c in TASK_TYPE_COLUMNS),
            "domain": "domain" in cols, "answer_from": "answer_from" in cols,
            "human_verified": "human_verified" in cols,
            "length_field": has_text, "length": has_text,
        }
        ctl: dict[str, w.Widget] = {
            "search": self._search, "regex": self._regex, "fields": self._fields,
            "configs": self._configs, "task_type": self._task_type, "domain": self._domain,
            "answer_from": self._answer_from, "human_verified": self._human,
            "length_field": self._length_field, "length": self._length,
        }
        self._controls = ctl
        for name, widget in ctl.items():
            if not self._visible[name]:
                widget.layout.display = "none"

        def shown(*names: str) -> list[w.Widget]:
            return [ctl[n] for n in names if self._visible[n]]

        dropdowns = shown("task_type", "domain", "answer_from", "human_verified")
        rows: list[w.Widget] = []
        for group in (shown("search", "regex", "fields"),
                      shown("configs") + ([w.VBox(dropdowns)] if dropdowns else []),
                      shown("length_field", "length") + [self._page_size]):
            if group:
                rows.append(w.HBox(group))
        rows += [w.HBox([self._prev, self._next, self._status]), self._page_view,
                 self._record, self._record_view]
        if self._source is not None:
            rows.insert(len(rows) - 3, w.HBox([self._progress, self._count_all]))
        self.widget = w.VBox(rows)

        self._search.observe(lambda ch: self._on_control({"text": ch["new"]}), names="value")
        self._regex.observe(lambda ch: self._on_control({"regex": bool(ch["new"])}), names="value")
        self._fields.observe(lambda ch: self._on_control({"fields": tuple(ch["new"])}), names="value")
        self._configs.observe(lambda ch: self._on_control({"configs": tuple(ch["new"])}), names="value")
        self._task_type.observe(lambda ch: self._on_control(
            {"task_type": self._dropdown_value(self._task_type, self._task_values)}), names="index")
        self._domain.observe(lambda ch: self._on_control(
            {"domain": self._dropdown_value(self._domain, self._domain_values)}), names="index")
        self._answer_from.observe(lambda ch: self._on_control(
            {"answer_from": self._dropdown_value(self._answer_from, self._answer_values)}), names="index")
        self._human.observe(lambda ch: self._on_control(
            {"human_verified": {1: True, 2: False}.get(ch["new"])}), names="index")
        # A new length field has a new range: the old bounds would be meaningless.
        self._length_field.observe(lambda ch: self._on_control(
            {"length_field": ch["new"], "min_len": None, "max_len": None}), names="value")
        self._length.observe(self._on_length, names="value")
        self._page_size.observe(lambda ch: self._on_control({"page_size": int(ch["new"])}), names="value")
        self._prev.on_click(lambda _b: self.prev_page())
        self._next.on_click(lambda _b: self.next_page())
        self._count_all.on_click(lambda _b: self.count_all())
        self._record.observe(lambda ch: None if self._syncing or ch["new"] is None
                             else self.select(int(ch["new"])), names="value")

    @staticmethod
    def _dropdown_value(dd: w.Dropdown, values: list[str]) -> str | None:
        return None if not dd.index else values[dd.index - 1]

    def _on_control(self, changes: dict[str, Any]) -> None:
        if not self._syncing:
            self._apply(changes)

    def _on_length(self, change: dict[str, Any]) -> None:
        lo, hi = change["new"]
        self._on_control({"min_len": lo if lo > self._length.min else None,
                          "max_len": hi if hi < self._length.max else None})

    # -- state

    def _apply(self, changes: dict[str, Any], force: bool = False) -> None:
        old = self._query
        new = replace(old, **_normalise_changes(changes))
        refilter = force or any(getattr(new, k) != getattr(old, k) for k in _FILTER_FIELDS)
        if "page" not in changes and (refilter or new.page_size != old.page_size) and not force:
            new = replace(new, page=0)
        self._query = new
        if self._source is not None:
            self._apply_lazy(refilter)
        else:
            if refilter:
                try:
                    self._filtered = filter_frame(self._frame, self._query)
                    self._error = None
                except ValueError as e:
                    self._filtered = self._frame.head(0)
                    self._error = str(e)
            last = page_count(self._filtered.height, self._query.page_size) - 1
            if not 0 <= self._query.page <= last:
                self._query = replace(self._query, page=min(max(self._query.page, 0), last))
            self._page = page_of(self._filtered, self._query)
        self._render()

    def _apply_lazy(self, refilter: bool) -> None:
        """Lazy source: read only this page's chunks; a filter scans on just far enough to fill the page."""
        src = self._source
        assert src is not None
        q = self._query
        if refilter:
            self._error = None
            self._scan = None
            try:
                expr = filter_expr(self._frame, q)
                if expr is not None:
                    self._scan = MatchScan(src, expr, tuple(expr.meta.root_names()))
            except ValueError as e:
                self._error = str(e)
            self._progress.value = 0
        if self._error:
            self._query = replace(q, page=0)
            self._page = self._frame.head(0)
            return
        page = max(q.page, 0)
        if self._scan is None:
            last = page_count(src.height, q.page_size) - 1
            page = min(page, last)
            self._page = src.rows(page * q.page_size, q.page_size)
        else:
            self._scan.ensure((page + 1) * q.page_size, progress=self._on_progress)
            last = page_count(self._scan.found, q.page_size) - 1
            page = min(page, last)
            self._page = self._scan.rows(page * q.page_size, q.page_size)
        self._query = replace(q, page=page)

    def _on_progress(self, scanned: int) -> None:
        self._progress.value = scanned
        src = self._source
        if self._scan is not None and src is not None:
            self._status.value = (f"scanning… {scanned:,} of {src.n_chunks:,} {src.what}, "
                                  f"{self._scan.found:,} matching so far")

    def _render(self) -> None:
        if self._error:
            self._page_view.value = f'<p style="color:#b00">{esc(self._error)}</p>'
        else:
            self._page_view.value = render_page_html(self._page)
        self._sync_controls()
        if self._page.height:
            self.select(0)
        else:
            self._show_record(None)

    def _length_max(self, name: str) -> int:
        if name not in self._max_len and self._source is not None:
            # A full pass over a text column is most of the file: use a fixed range instead.
            self._max_len[name] = LAZY_LENGTH_MAX
        if name not in self._max_len:
            m = (self._frame.select(_as_text(self._frame, name).str.len_chars().max()).item()
                 if name in self._frame.columns else None)
            self._max_len[name] = max(1, int(m or 0))
        return self._max_len[name]

    @staticmethod
    def _sync_dropdown(dd: w.Dropdown, values: list[str], value: str | None,
                       empty: str | None = None) -> None:
        if value is None:
            dd.index = 0
            return
        if value not in values:
            # Set from code to a value the frame lacks: show it (it matches nothing).
            values.append(value)
            dd.options = [ANY, *((v if v or empty is None else empty) for v in values)]
        dd.index = values.index(value) + 1

    def _sync_controls(self) -> None:
        q = self._query
        self._syncing = True
        try:
            self._search.value = q.text
            self._regex.value = q.regex
            self._fields.value = tuple(f for f in q.fields if f in self._text_cols)
            missing = [c for c in q.configs if c not in self._config_values]
            if missing:
                self._config_values.extend(missing)
                self._configs.options = tuple(self._config_values)
            self._configs.value = q.configs
            self._sync_dropdown(self._task_type, self._task_values, q.task_type)
            self._sync_dropdown(self._domain, self._domain_values, q.domain)
            self._sync_dropdown(self._answer_from, self._answer_values, q.answer_from, empty="(empty)")
            self._human.index = {None: 0, True: 1, False: 2}[q.human_verified]
            if q.length_field in self._text_cols:
                self._length_field.value = q.length_field
                top = max(self._length_max(q.length_field), q.min_len or 0, q.max_len or 0)
                self._length.max = top
                lo = min(q.min_len or 0, top)
                hi = top if q.max_len is None else min(max(q.max_len, lo), top)
                self._length.value = (lo, hi)
            if q.page_size not in self._page_size.options:
                self._page_size.options = sorted({*self._page_size.options, q.page_size})
            self._page_size.value = q.page_size
            self._prev.disabled = q.page <= 0
            if self._source is not None:
                self._sync_lazy_status()
            elif self._error:
                n_pages = page_count(self._filtered.height, q.page_size)
                self._next.disabled = q.page >= n_pages - 1
                self._status.value = f"⚠ {self._error}"
            else:
                n_pages = page_count(self._filtered.height, q.page_size)
                self._next.disabled = q.page >= n_pages - 1
                n = self._filtered.height
                self._status.value = (f"page {q.page + 1} of {n_pages} · "
                                      f"{n:,} matching record{'' if n == 1 else 's'}")
            self._record.options = [(self._record_label(i, r), i)
                                    for i, r in enumerate(self._page.iter_rows(named=True))]
            self._record.disabled = self._page.height == 0
        finally:
            self._syncing = False

    def _sync_lazy_status(self) -> None:
        src, scan, q = self._source, self._scan, self._query
        assert src is not None
        read = len({i for i, _ in src.reads})
        if self._error:
            self._next.disabled = True
            self._count_all.disabled = True
            self._status.value = f"⚠ {self._error}"
            return
        if scan is None:
            n_pages = page_count(src.height, q.page_size)
            self._next.disabled = q.page >= n_pages - 1
            self._count_all.disabled = True
            self._progress.value = 0
            self._status.value = (f"page {q.page + 1} of {n_pages:,} · {src.height:,} records "
                                  f"(lazy: {read:,} of {src.n_chunks:,} {src.what} read so far)")
            return
        n = scan.found
        n_pages = page_count(n, q.page_size)
        self._progress.value = scan.scanned
        self._count_all.disabled = scan.done
        if scan.done:
            self._next.disabled = q.page >= n_pages - 1
            self._status.value = (f"page {q.page + 1} of {n_pages:,} · "
                                  f"{n:,} matching record{'' if n == 1 else 's'}")
        else:
            self._next.disabled = False
            self._status.value = (f"page {q.page + 1} · at least {n:,} matching records "
                                  f"(scanned {scan.scanned:,} of {src.n_chunks:,} {src.what}; "
                                  "'count all' for the exact number)")

    def count_all(self) -> int:
        """The exact number of records matching the current filters (a lazy source scans to its end)."""
        if self._source is None:
            return self._filtered.height
        if self._error:
            return 0
        if self._scan is None:
            return self._source.height
        self._scan.ensure(self._source.height + 1, progress=self._on_progress)
        self._sync_controls()
        return self._scan.found

    @staticmethod
    def _record_label(i: int, row: dict[str, Any]) -> str:
        key = row.get("record_id") or next((v for v in row.values() if isinstance(v, str) and v), "")
        return f"{i}: {to_text(key)[:70]}"

    def _show_record(self, i: int | None) -> None:
        self._selected = i
        self._record_view.value = render_record_html({} if i is None else self._page.row(i, named=True))

    # -- public API

    def set_query(self, **changes: Any) -> None:
        """Change filters (any :class:`BrowserQuery` field); resets to page 0 unless ``page`` is given."""
        unknown = sorted(set(changes) - _QUERY_FIELDS)
        if unknown:
            raise TypeError(f"unknown query field(s) {unknown}; valid: {sorted(_QUERY_FIELDS)}")
        self._apply(changes)

    def next_page(self) -> None:
        """Go to the next page (stays on the last one)."""
        self._apply({"page": self._query.page + 1})

    def prev_page(self) -> None:
        """Go to the previous page (stays on the first one)."""
        self._apply({"page": self._query.page - 1})

    def select(self, i: int) -> None:
        """Show record ``i`` (0-based index on the current page) in the record view."""
        if not 0 <= i < self._page.height:
            raise IndexError(f"record {i} is not on this page (rows 0..{self._page.height - 1})")
        if self._record.value != i:
            self._syncing = True
            try:
                self._record.value = i
            finally:
                self._syncing = False
        self._show_record(i)

    @property
    def lazy(self) -> bool:
        """True when the browser reads its source a chunk at a time (a parquet path, a LazyFrame)."""
        return self._source is not None

    @property
    def source(self) -> LazySource | None:
        """The lazy source (None for an in-memory frame)."""
        return self._source

    @property
    def frame(self) -> pl.DataFrame | pl.LazyFrame:
        """The frame being browsed (unfiltered); a LazyFrame for a lazy source (collecting it reads it all)."""
        return self._source.lazy() if self._source is not None else self._frame

    @property
    def query(self) -> BrowserQuery:
        """The current query (page clamped to the existing pages)."""
        return self._query

    @property
    def filtered(self) -> pl.DataFrame | pl.LazyFrame:
        """All rows matching the current filters; a LazyFrame for a lazy source."""
        if self._source is None:
            return self._filtered
        lf = self._source.lazy()
        if self._error:
            return lf.head(0)
        return lf if self._scan is None else lf.filter(self._scan.predicate)

    @property
    def page_frame(self) -> pl.DataFrame:
        """The rows of the current page."""
        return self._page

    @property
    def page_html(self) -> str:
        return self._page_view.value

    @property
    def record_html(self) -> str:
        return self._record_view.value

    @property
    def selected(self) -> int | None:
        return self._selected

    @property
    def status_text(self) -> str:
        return self._status.value

    @property
    def error(self) -> str | None:
        """The message of the last failed filter (shown in the status), else None."""
        return self._error

    @property
    def controls(self) -> dict[str, w.Widget]:
        """The filter widgets by name (hidden ones included), e.g. ``controls["configs"]``."""
        return dict(self._controls)

    @property
    def visible_controls(self) -> tuple[str, ...]:
        """Names of the filter controls shown (those whose column the frame has)."""
        return tuple(k for k, v in self._visible.items() if v)

    def __repr__(self) -> str:
        n = self._source.height if self._source is not None else self._frame.height
        return f"<DatasetBrowser {n:,} records{' (lazy)' if self._source else ''}: {self.status_text}>"


_SUPPORTED = ("polars DataFrame or LazyFrame, pandas DataFrame, datasets.Dataset, "
              "datasets.DatasetDict (with split=), list of dicts, or a path to a "
              ".parquet (read lazily), .jsonl/.json (JSON Lines; also .jsonl.gz, .jsonl.zst) or .csv file, "
              "a folder of parquet shards (read lazily), or a datasets save_to_disk folder")


#: Files ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` write at a folder's top.
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")


def _load_from_disk(path: Path) -> Any:
    """A folder written by ``save_to_disk`` (a Dataset or a DatasetDict), opened with ``datasets``."""
    if not any((path / n).is_file() for n in SAVED_DATASET_FILES):
        raise ValueError(f"{path} is a folder but not a saved Hugging Face dataset (no dataset_dict.json or "
                         "state.json) nor a folder of .parquet files: pass one of its files, a folder of "
                         "parquet shards, or a folder written by save_to_disk")
    import datasets

    return datasets.load_from_disk(str(path))


def _read_jsonl(path: Path) -> pl.DataFrame:
    with path.open("rb") as fh:
        if fh.read(len(LFS_PREFIX)) == LFS_PREFIX:
            raise ValueError(f"{path} is a Git LFS pointer, not data: run `git lfs pull` in its repository")
    raw = decompress(path.read_bytes(), path)
    first = next((l for l in raw.split(b"\n") if l.strip()), b"")
    head, _ = json_object(first)
    if head is not None and _FRAME_ONLY_KEYS & set(head):
        # A frame written with write_ndjson (our schema's columns, audit columns): not raw CQIA records.
        return pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
    frame = load(LoadConfig(source=str(path))).frame
    if frame.height == 0 and raw.strip():
        # Not CQIA records at all: the loader rejected every line, which it has already warned
        # about; show the file as it is instead.
        return pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
    return frame


#: Keys of our frames that raw CQIA records never have.
_FRAME_ONLY_KEYS = {"record_id", "source_file", "task_type_major", "task_type_minor"}


def _unpack_task_type(frame: Any) -> Any:
    """Raw CQIA records hold ``task_type: {major, minor}``; the schema has two list columns.

    Works on a DataFrame or a LazyFrame.
    """
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    dtype = schema.get("task_type")
    if not isinstance(dtype, pl.Struct) or any(c in schema for c in TASK_TYPE_COLUMNS):
        return frame
    names = {f.name for f in dtype.fields}
    return frame.with_columns(
        pl.col("task_type").struct.field(part).alias(f"task_type_{part}")
        for part in ("major", "minor") if part in names)


def _to_frame(obj: Any, split: str) -> pl.DataFrame | LazySource:
    if isinstance(obj, pl.LazyFrame):
        return LazyFrameSource(obj, post=_unpack_task_type)
    if isinstance(obj, (str, Path)):
        path = Path(obj).expanduser()
        lazy = _lazy_parquet(path)
        if lazy is not None:
            return lazy
    return _unpack_task_type(_to_frame_as_is(obj, split))


def _lazy_parquet(path: Path) -> ParquetSource | None:
    """A parquet file, or a folder of parquet shards (not a save_to_disk folder), opened lazily."""
    if path.is_file() and Path(data_name(path)).suffix.lower() == ".parquet" and data_name(path) == path.name:
        return ParquetSource([path], post=_unpack_task_type)
    if path.is_dir() and not any((path / n).is_file() for n in SAVED_DATASET_FILES):
        shards = parquet_paths(path)
        if shards:
            return ParquetSource(shards, post=_unpack_task_type)
    return None


def _to_frame_as_is(obj: Any, split: str) -> pl.DataFrame:
    if isinstance(obj, pl.DataFrame):
        return obj
    if isinstance(obj, pl.LazyFrame):
        return obj.collect()
    if isinstance(obj, (str, Path)):
        path = Path(obj).expanduser()
        if path.is_dir():
            return _to_frame_as_is(_load_from_disk(path), split)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file or folder")
        suffix = Path(data_name(path)).suffix.lower()
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            return pl.read_ndjson(path, infer_schema_length=None)
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=None)
        raise ValueError(f"{path}: unsupported file type {suffix or '(no suffix)'}; "
                         "use .parquet, .jsonl/.json (JSON Lines) or .csv")
    if isinstance(obj, list):
        if not all(isinstance(r, Mapping) for r in obj):
            bad = next(type(r).__name__ for r in obj if not isinstance(r, Mapping))
            raise TypeError(f"browse() takes a list of dicts; this list holds a {bad}")
        return pl.from_dicts(obj, infer_schema_length=None) if obj else pl.DataFrame()
    # Checked by module name so that pandas / datasets are imported only when given.
    module = type(obj).__module__.split(".", 1)[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            return pl.from_pandas(obj)
    if module == "datasets":
        import datasets

        if isinstance(obj, datasets.DatasetDict):
            if split not in obj:
                raise ValueError(f"split {split!r} not in this DatasetDict; pass split= one of {sorted(obj)}")
            obj = obj[split]
        if isinstance(obj, datasets.Dataset):
            try:
                return obj.to_polars()
            except (AttributeError, NotImplementedError):
                return pl.from_arrow(obj.with_format("arrow")[:])
    raise TypeError(f"browse() cannot show a {type(obj).__module__}.{type(obj).__qualname__}; "
                    f"supported: {_SUPPORTED}")


def browse(obj: Any, *, split: str = "train", page_size: int = 10, **query: Any) -> DatasetBrowser:
    """A :class:`DatasetBrowser` over ``obj`` (see ``_SUPPORTED``); ``query`` sets initial filters.

    Example: ``browse("dropped.parquet", text="广告", configs=("xhs",))``.

    A parquet file or folder of shards, and a polars LazyFrame, are browsed lazily: opening reads
    the footers (schema, row count) and the values of the small label columns, a page reads only
    the row groups it shows, and a filter scans row group by row group (only the columns it uses)
    until the page is full; "count all" finishes the scan for the exact number of matches.
    """
    unknown = sorted(set(query) - _QUERY_FIELDS)
    if unknown:
        raise TypeError(f"unknown query field(s) {unknown}; valid: {sorted(_QUERY_FIELDS)}")
    frame = _to_frame(obj, split)
    q = replace(BrowserQuery(), **_normalise_changes(query))
    return DatasetBrowser(frame, page_size=page_size, query=q)
