"""What the widgets share: escaping (dataset text is untrusted), styles, record views, the display mixin."""

from __future__ import annotations

import html
import json
from typing import Any, Mapping

import polars as pl

from cqia_nb.data.schema import SCHEMA

#: Columns of the loader's fixed schema, in display order (see ``cqia_nb.data.SCHEMA``).
SCHEMA_COLUMNS: tuple[str, ...] = tuple(SCHEMA)
PROVENANCE_COLUMNS: tuple[str, ...] = ("record_id", "config", "source_file", "line")
#: Fields shown in <pre> in the record view whatever their length.
LONG_TEXT_COLUMNS: frozenset[str] = frozenset({"instruction", "input", "output", "metadata", "extra"})
PREVIEW_CHARS = 80

def esc(value: Any) -> str:
    """HTML-escaped text (quotes too): every dataset value goes through this before any widget."""
    return html.escape(str(value), quote=True)


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(to_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _preview(value: Any, n: int = PREVIEW_CHARS) -> str:
    """First ``n`` characters on one line, escaped."""
    s = to_text(value)
    flat = " ".join(s[: n * 4].split())
    if len(flat) > n or len(s) > n * 4:
        flat = flat[:n].rstrip() + "…"
    return esc(flat)


_TABLE = 'style="border-collapse:collapse;font-size:12px;width:100%"'
_TH = 'style="text-align:left;border-bottom:1px solid #999;padding:2px 6px;white-space:nowrap"'
_TD = 'style="text-align:left;vertical-align:top;border-bottom:1px solid #ddd;padding:2px 6px"'
_TDN = 'style="text-align:right;vertical-align:top;border-bottom:1px solid #ddd;padding:2px 6px"'
PRE_STYLE = 'style="white-space:pre-wrap;margin:0;font-size:12px"'
_NULL = '<span style="color:#999">null</span>'


def render_page_html(page: pl.DataFrame) -> str:
    """A compact table of one page: ``#``, record_id, config, previews, lengths, extra columns.

    ``#`` is the row's index on the page (what :meth:`DatasetBrowser.select` takes).
    """
    if page.height == 0:
        return '<p style="color:#666"><i>no matching records</i></p>'
    cols = page.columns
    preview_cols = [c for c in ("record_id", "config", "instruction", "output") if c in cols]
    len_cols = [c for c in ("instruction", "output") if c in cols]
    extra_cols = [c for c in cols if c not in SCHEMA_COLUMNS]
    head = ["#", *preview_cols, *(f"len({c})" for c in len_cols), *extra_cols]
    out = [f"<div style=\"overflow-x:auto\"><table {_TABLE}><thead><tr>"]
    out.extend(f"<th {_TH}>{esc(h)}</th>" for h in head)
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(page.iter_rows(named=True)):
        cells = [f"<td {_TDN}>{i}</td>"]
        cells.extend(f"<td {_TD}>{_preview(row[c])}</td>" for c in preview_cols)
        cells.extend(f"<td {_TDN}>{len(row[c] or '')}</td>" for c in len_cols)
        cells.extend(f"<td {_TD}>{_preview(row[c])}</td>" for c in extra_cols)
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _pretty_extra(value: str) -> str:
    try:
        parsed = json.loads(value)
    except (ValueError, TypeError):
        return value
    return json.dumps(parsed, ensure_ascii=False, indent=2) if parsed else value


def _record_value_html(name: str, value: Any) -> str:
    if value is None:
        return _NULL
    if name == "extra" and isinstance(value, str) and value:
        value = _pretty_extra(value)
    text = to_text(value)
    if name in LONG_TEXT_COLUMNS or len(text) > PREVIEW_CHARS or "\n" in text:
        return f"<pre {PRE_STYLE}>{esc(text)}</pre>"
    return esc(text)


def render_record_html(row: Mapping[str, Any]) -> str:
    """Every field of one record (lists joined), provenance first; long text in ``<pre>``."""
    if not row:
        return '<p style="color:#666"><i>no record selected</i></p>'
    order = [c for c in SCHEMA_COLUMNS if c in row] + [c for c in row if c not in SCHEMA_COLUMNS]
    prov = [c for c in PROVENANCE_COLUMNS if c in row]
    out = ["<div>"]
    if prov:
        parts = " · ".join(f"{esc(c)}: <b>{esc(to_text(row[c]))}</b>" for c in prov)
        out.append(f'<div style="margin:4px 0;font-size:12px">{parts}</div>')
    out.append(f"<table {_TABLE}><tbody>")
    for c in order:
        v = row[c]
        label = esc(c)
        if isinstance(v, str) and c in LONG_TEXT_COLUMNS:
            label += f' <span style="color:#999;font-weight:normal">({len(v)} chars)</span>'
        out.append(f"<tr><th {_TH}>{label}</th><td {_TD}>{_record_value_html(c, v)}</td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class Displayable:
    """Mixin: an object with a ``.widget`` shows that widget when it ends a notebook cell."""

    widget: Any

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = repr(self)
        return bundle

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
