"""Human review of a queue of records (e.g. borderline filter scores), saved after every click.

::

    q = ReviewQueue(borderline, "review/judge-borderline.jsonl")   # reopen later: it resumes
    q                                   # the widget; or drive it from code:
    q.decide("drop", note="ad at the end"); q.decide("keep"); q.prev(); q.next()
    labels = export_labels("review/judge-borderline.jsonl")        # latest decision per record

and in a recipe, to apply the labels (records labelled drop are dropped, the rest kept)::

    - filter: review_labels
      path: review/judge-borderline.jsonl

(``import cqia_nb.ui.review`` first if ``review_labels`` is not found: it registers the filter.)

The log
-------
One JSON object per line and per decision: ``record_id``, ``decision`` ("keep" | "drop" |
"edit"), ``edited_output`` (only for "edit"), ``note``, ``timestamp`` (UTC, ISO 8601),
``reviewer`` (``$USER``). Nothing is ever rewritten: a changed mind is a new line, and the
*last line* for a record_id wins (file order, not timestamps: clocks differ between machines).

Every decision is saved before ``decide`` returns: the file is copied with the new line to a
temporary file in the same folder, flushed and fsynced, and moved over the log with
``os.replace`` (then the folder is fsynced). At any instant the log on disk is the previous
complete log or the new complete log, never a half-written one, so killing the process (or the
kernel) between or during saves loses at most the decision being saved. Each save re-reads the
file under an advisory lock (``fcntl.flock`` on ``<log>.lock`` where available), so two queues
on the same log, in two notebooks, do not overwrite each other's lines.

Lines that cannot be read (a torn line from a copy made mid-write, a hand edit) are skipped with
a :class:`ReviewLogWarning` naming the file and line, never an exception; they are left in the
file as they are.

Keyboard use
------------
ipywidgets cannot catch keys globally, so the widget has a *command box*: click it (or Tab to
it) and type a letter and Enter — ``k`` keep, ``d`` drop, ``e`` edit (saves the text in the edit
box), ``n`` next, ``p`` previous — optionally followed by a note: ``d ad in the answer`` drops
with the note "ad in the answer". The box clears itself after each command, ready for the next
one. (ipywidgets sends the box's text on Enter *or* when the box loses focus, so a letter left in
it acts when you click elsewhere.) The buttons show the same letters in their labels and
tooltips; the Edit button and ``e`` save the text of the edit box, which starts as the answer.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as w
import polars as pl

from cqia_nb.core.decisions import DECISIONS, append_decision, current_user, export_labels, read_decisions
from cqia_nb.ui.common import Displayable, esc, render_record_html

COMMANDS = {"k": "keep", "d": "drop", "e": "edit", "n": "next", "p": "prev"}


class QueueCursor:
    """Moving through a queue of item ids, shared by :class:`ReviewQueue` and the pairwise queue.

    Needs ``_ids`` (item ids in order), ``_index``, ``_message``, ``_done`` (ids decided),
    ``_show()`` and the ``_view`` / ``_status`` widgets; ``_noun`` names an item in errors."""

    _noun = "item"

    def first_undecided(self, start: int = 0) -> int | None:
        """Index of the first undecided item at or after ``start``, wrapping to the beginning."""
        n = len(self._ids)
        for j in range(n):
            i = (start + j) % n
            if self._ids[i] not in self._done:
                return i
        return None

    def next(self) -> None:
        """Next item (stays on the last)."""
        self.goto(min(self._index + 1, max(len(self._ids) - 1, 0)))

    def prev(self) -> None:
        """Previous item (stays on the first)."""
        self.goto(max(self._index - 1, 0))

    def goto(self, i: int) -> None:
        if not self._ids:
            return
        if not 0 <= i < len(self._ids):
            raise IndexError(f"no {self._noun} {i} in a queue of {len(self._ids)}")
        self._index = i
        self._message = ""
        self._show()

    @property
    def html(self) -> str:
        """The HTML of the current item's view (escaped)."""
        return self._view.value

    @property
    def status_text(self) -> str:
        return self._status.value


class ReviewQueue(QueueCursor, Displayable):
    """Review the records of ``frame`` one at a time; every decision is saved to ``path``.

    columns: the columns shown (default: all); record_id is always shown. note: show a note box.
    reviewer: recorded with each decision (default ``$USER``).

    Reopening with the same ``path`` restores the decisions and starts at the first undecided
    record. Usable without a browser: :meth:`decide`, :meth:`next`, :meth:`prev`,
    :meth:`goto`, :attr:`current`, :attr:`progress_text`; ``.widget`` is the VBox.
    """

    def __init__(self, frame: pl.DataFrame, path: str | Path, columns: Sequence[str] | None = None,
                 note: bool = True, reviewer: str | None = None) -> None:
        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        if not isinstance(frame, pl.DataFrame):
            raise TypeError(f"ReviewQueue needs a polars DataFrame, got {type(frame).__name__}")
        if "record_id" not in frame.columns:
            raise ValueError(f"the queue needs a record_id column; the frame has {frame.columns}")
        ids = frame["record_id"].cast(pl.String)
        if ids.null_count() or ids.n_unique() != frame.height:
            raise ValueError("record_id must be unique and non-null: decisions are saved by record_id")
        if columns is not None:
            columns = [columns] if isinstance(columns, str) else list(columns)
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"columns {missing} are not in the frame (columns: {frame.columns})")
            columns = ["record_id", *[c for c in columns if c != "record_id"]]
        self._frame = frame
        self._ids: list[str] = ids.to_list()
        self._columns = columns
        self._note_enabled = note
        self.path = Path(path)
        self.reviewer = reviewer or current_user()
        self._decisions: dict[str, dict[str, Any]] = {}
        for e in read_decisions(self.path):
            self._decisions[e["record_id"]] = e
        self._index = self.first_undecided() if self._ids else 0
        if self._index is None:
            self._index = 0
        self._message = ""
        self._build()
        self._show()

    # -- state

    @property
    def frame(self) -> pl.DataFrame:
        return self._frame

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def index(self) -> int:
        """0-based position of the current record in the queue."""
        return self._index

    @property
    def current(self) -> dict[str, Any] | None:
        """The current record (all its columns), or None for an empty queue."""
        if not self._ids:
            return None
        return self._frame.row(self._index, named=True)

    @property
    def current_decision(self) -> dict[str, Any] | None:
        """The latest saved decision for the current record, or None."""
        return self._decisions.get(self._ids[self._index]) if self._ids else None

    @property
    def decisions(self) -> dict[str, dict[str, Any]]:
        """Latest decision per record_id of the log (records outside this queue included)."""
        return dict(self._decisions)

    def decided(self, record_id: str) -> bool:
        return record_id in self._decisions

    _noun = "record"

    @property
    def _done(self) -> dict:
        return self._decisions

    def counts(self) -> dict[str, int]:
        """Decisions on this queue's records: keep/drop/edit/undecided."""
        out = {d: 0 for d in DECISIONS}
        for rid in self._ids:
            e = self._decisions.get(rid)
            if e is not None:
                out[e["decision"]] += 1
        out["undecided"] = len(self._ids) - sum(out[d] for d in DECISIONS)
        return out

    @property
    def progress_text(self) -> str:
        """e.g. "record 3 of 20 · 5 decided (2 keep, 2 drop, 1 edit) · this one: drop"."""
        if not self._ids:
            return "empty queue: no records to review"
        c = self.counts()
        done = len(self._ids) - c["undecided"]
        cur = self.current_decision
        state = f"this one: {cur['decision']}" if cur else "this one: undecided"
        tail = " · all decided" if c["undecided"] == 0 else ""
        return (f"record {self._index + 1} of {len(self._ids)} · {done} decided "
                f"({c['keep']} keep, {c['drop']} drop, {c['edit']} edit) · {state}{tail}")

    # -- actions

    def decide(self, decision: str, note: str = "", edited_output: str | None = None) -> dict[str, Any]:
        """Save a decision for the current record (keep / drop / edit) and move on to the next
        undecided record (forward, then from the start; it stays when none is left).
        Returns the saved entry. ``edit`` needs ``edited_output``."""
        if not self._ids:
            raise IndexError("empty queue: nothing to decide")
        decision = str(decision).strip().lower()
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        if decision == "edit":
            if not isinstance(edited_output, str):
                raise ValueError("an edit needs edited_output (the corrected answer text)")
        elif edited_output is not None:
            raise ValueError(f"edited_output is only for 'edit', not {decision!r}")
        entry: dict[str, Any] = {"record_id": self._ids[self._index], "decision": decision}
        if decision == "edit":
            entry["edited_output"] = edited_output
        entry.update(note=str(note or ""), timestamp=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                     reviewer=self.reviewer)
        append_decision(self.path, entry)  # saved before the state changes
        self._decisions[entry["record_id"]] = entry
        nxt = self.first_undecided(self._index + 1)
        if nxt is not None:
            self._index = nxt
        self._message = f"saved: {decision} {entry['record_id']}"
        self._show()
        return entry

    def command(self, text: str) -> str:
        """Run a command-box line (``k``, ``d note``, ``e``, ``n``, ``p``); returns the message."""
        text = (text or "").strip()
        if not text:
            return ""
        key, _, rest = text.partition(" ")
        action = COMMANDS.get(key.lower())
        if action is None:
            self._message = f"unknown command {key!r}: type k (keep), d (drop), e (edit), n (next) or p (prev)"
        elif action == "next":
            self.next()
        elif action == "prev":
            self.prev()
        else:
            note = rest.strip() or (self._note.value if self._note_enabled else "")
            self._decide_from_widget(action, note)
        self._status.value = self._message
        return self._message

    def export_labels(self) -> pl.DataFrame:
        """:func:`export_labels` of this queue's log."""
        return export_labels(self.path)

    # -- widget

    def _build(self) -> None:
        lay = w.Layout
        self._progress = w.Label()
        self._view = w.HTML()
        hint = "type {k} + Enter in the command box"
        self._keep = w.Button(description="Keep (k)", button_style="success",
                              tooltip="keep this record — " + hint.format(k="k"), layout=lay(width="110px"))
        self._drop = w.Button(description="Drop (d)", button_style="danger",
                              tooltip="drop this record — " + hint.format(k="d"), layout=lay(width="110px"))
        self._edit_btn = w.Button(description="Save edit (e)", button_style="warning",
                                  tooltip="save the text of the edit box as the corrected answer — "
                                          + hint.format(k="e"), layout=lay(width="130px"))
        self._prev_btn = w.Button(description="◀ Prev (p)", tooltip="previous record — " + hint.format(k="p"),
                                  layout=lay(width="100px"))
        self._next_btn = w.Button(description="Next (n) ▶", tooltip="next record — " + hint.format(k="n"),
                                  layout=lay(width="100px"))
        self._cmd = w.Text(placeholder="k / d / e / n / p + Enter (e.g. 'd ad text')",
                           description="command", continuous_update=False, layout=lay(width="380px"))
        self._note = w.Text(placeholder="optional note, saved with the decision", description="note",
                            layout=lay(width="520px", display=None if self._note_enabled else "none"))
        self._editor = w.Textarea(description="edit output", layout=lay(width="95%", height="140px"))
        self._status = w.Label()
        self._keep.on_click(lambda _b: self._click("keep"))
        self._drop.on_click(lambda _b: self._click("drop"))
        self._edit_btn.on_click(lambda _b: self._click("edit"))
        self._prev_btn.on_click(lambda _b: self.prev())
        self._next_btn.on_click(lambda _b: self.next())
        self._cmd.observe(self._on_command, names="value")
        rows: list[w.Widget] = [
            self._progress,
            w.HBox([self._keep, self._drop, self._edit_btn, self._prev_btn, self._next_btn]),
            self._cmd,
        ]
        if self._note_enabled:
            rows.append(self._note)
        rows += [self._status, self._view, self._editor]
        self.widget = w.VBox(rows)

    def _on_command(self, change: dict[str, Any]) -> None:
        text = change["new"]
        if not text:
            return
        self.command(text)
        self._cmd.value = ""

    def _click(self, action: str) -> None:
        self._decide_from_widget(action, self._note.value if self._note_enabled else "")
        self._status.value = self._message

    def _decide_from_widget(self, action: str, note: str) -> None:
        try:
            if action == "edit":
                original = (self.current or {}).get("output")
                if self._editor.value == (original or ""):
                    self._message = "the text is unchanged: correct the answer in the edit box, then save the edit"
                    return
                self.decide("edit", note=note, edited_output=self._editor.value)
            else:
                self.decide(action, note=note)
        except (OSError, ValueError, IndexError) as e:  # e.g. a read-only folder: say so, don't lose the widget
            self._message = f"⚠ not saved: {type(e).__name__}: {e}"
            return
        self._note.value = ""

    def _row_html(self) -> str:
        row = self.current
        if row is None:
            return '<p style="color:#666"><i>no records to review</i></p>'
        if self._columns is not None:
            row = {c: row[c] for c in self._columns}
        dec = self.current_decision
        head = ""
        if dec is not None:
            color = {"keep": "#2a7", "drop": "#c33", "edit": "#c80"}[dec["decision"]]
            note = f" — {esc(dec.get('note') or '')}" if dec.get("note") else ""
            who = esc(f"{dec.get('reviewer', '?')} at {dec.get('timestamp', '?')}")
            head = (f'<div style="margin:4px 0"><b style="color:{color}">{esc(dec["decision"])}</b>{note} '
                    f'<span style="color:#999;font-size:11px">({who})</span></div>')
            if dec["decision"] == "edit":
                head += ("<div style=\"font-size:12px\">edited output:</div>"
                         f"<pre style=\"white-space:pre-wrap;margin:0;font-size:12px;background:#fff8e6\">"
                         f"{esc(dec.get('edited_output') or '')}</pre>")
        return head + render_record_html(row)

    def _show(self) -> None:
        if not hasattr(self, "widget"):
            return
        self._progress.value = self.progress_text
        self._view.value = self._row_html()
        row = self.current
        dec = self.current_decision
        if dec is not None and dec["decision"] == "edit":
            self._editor.value = dec.get("edited_output") or ""
        else:
            self._editor.value = "" if row is None else str(row.get("output") or "")
        empty = row is None
        for b in (self._keep, self._drop, self._edit_btn, self._prev_btn, self._next_btn):
            b.disabled = empty
        self._prev_btn.disabled = empty or self._index == 0
        self._next_btn.disabled = empty or self._index >= len(self._ids) - 1
        self._editor.disabled = empty or "output" not in self._frame.columns
        self._status.value = self._message

    @property
    def controls(self) -> dict[str, w.Widget]:
        """The widgets by name (for tests and custom layouts)."""
        return {"keep": self._keep, "drop": self._drop, "edit": self._edit_btn, "prev": self._prev_btn,
                "next": self._next_btn, "command": self._cmd, "note": self._note, "editor": self._editor,
                "progress": self._progress, "view": self._view, "status": self._status}

    def __repr__(self) -> str:
        return f"<ReviewQueue {self.path}: {self.progress_text}>"
