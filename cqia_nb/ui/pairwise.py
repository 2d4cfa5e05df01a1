"""Blind pairwise human evaluation: which of two models answered the same prompt better?

::

    items = pair_answers(prompts, answers_x, answers_y, ids=ids)        # or pair_frames(res_x.per_item, res_y.per_item)
    q = PairwiseQueue(items, "review/yi6b-vs-cqia.jsonl", model_x="Yi-6B", model_y="Yi-6B+CQIA", seed=0)
    q                                   # the widget: "A better" / "Tie" / "B better", optional note
    q.decide("A"); q.decide("tie", note="both wrong")                   # or from code
    stats = win_rate("review/yi6b-vs-cqia.jsonl", "Yi-6B+CQIA", "Yi-6B")  # with a Wilson interval
    append_results([win_rate_row(stats, base_model="Yi-6B")])           # into the results store

Blindness
    For each item the two answers are shown as "A" and "B" in an order drawn from
    ``sha256(seed, item_id)``: independent of the item order and of other items, the same on
    every reopening, roughly half of the items each way. The widget never shows model names; the
    log records which model was A and which B, so results need no mapping kept elsewhere.

The log
    One JSON line per click, written with the review log's atomic writer
    (:func:`cqia_nb.core.jsonl.append_lines`: temp file + fsync + ``os.replace`` under a lock, so a
    killed kernel loses at most the click being saved): ``item_id``, ``choice`` ("A" | "B" |
    "tie"), ``winner`` (the model's name or "tie"), ``model_a``, ``model_b``, ``note``,
    ``timestamp``, ``rater``. A changed mind is a new line; the last line for an item and model
    pair wins. Reopening the queue on the same file restores the votes and starts at the first
    undecided item. One file can hold several comparisons: votes are kept per model pair.

Win rate
    :func:`win_rate` counts wins, losses and ties of X against Y. ``ties="half"`` (the default)
    counts a tie as half a win for each side: rate = (wins + ties/2) / n over all n votes;
    ``ties="exclude"`` leaves ties out: rate = wins / (wins + losses). The interval is Wilson's
    score interval (for ``"half"``, with the fractional count of wins: the usual approximation).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import ipywidgets as w
import polars as pl

from cqia_nb.core.decisions import CHOICES, ITEM_COLUMNS, current_user, read_votes, win_rate, x_is_a
from cqia_nb.core.jsonl import append_lines
from cqia_nb.ui.common import PRE_STYLE, Displayable, esc
from cqia_nb.ui.review import QueueCursor


class PairwiseQueue(QueueCursor, Displayable):
    """Rate ``items`` (item_id, prompt, answer_x, answer_y; see :func:`pair_answers`) blind:
    answers shown as A/B in a seeded per-item order; every click saved to ``path``.

    Usable without a browser: :meth:`decide`, :meth:`next`, :meth:`prev`, :meth:`goto`,
    :attr:`current` (what the rater sees: item_id, prompt, answer_a, answer_b — no model names),
    :attr:`progress_text`, :meth:`win_rate`; ``.widget`` is the VBox.
    """

    def __init__(self, items: pl.DataFrame, path: str | Path, model_x: str, model_y: str, seed: int = 0,
                 rater: str | None = None, note: bool = True) -> None:
        if not isinstance(items, pl.DataFrame):
            raise TypeError(f"PairwiseQueue needs a polars DataFrame, got {type(items).__name__}")
        missing = [c for c in ITEM_COLUMNS if c not in items.columns]
        if missing:
            raise ValueError(f"items need columns {list(ITEM_COLUMNS)}; missing {missing} (build them with "
                             "pair_answers(prompts, answers_x, answers_y, ids))")
        ids = items["item_id"].cast(pl.String)
        if ids.null_count() or ids.n_unique() != items.height:
            raise ValueError("item_id must be unique and non-null: votes are saved by item_id")
        if not model_x or not model_y or model_x == model_y:
            raise ValueError(f"model_x and model_y must be two different names, got {model_x!r} and {model_y!r}")
        if "tie" in (model_x, model_y):
            raise ValueError("'tie' cannot be a model name (it is a vote)")
        self._items = items.with_columns(ids.alias("item_id"))
        self._ids: list[str] = self._items["item_id"].to_list()
        self.model_x, self.model_y, self.seed = model_x, model_y, seed
        self.path = Path(path)
        self.rater = rater or current_user()
        self._note_enabled = note
        self._votes: dict[str, dict[str, Any]] = {r["item_id"]: r for r in
                                                  read_votes(self.path, model_x, model_y).iter_rows(named=True)}
        self._index = self.first_undecided() or 0
        self._message = ""
        self._build()
        self._show()

    # -- state

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def index(self) -> int:
        return self._index

    def order(self, item_id: str) -> tuple[str, str]:
        """(model shown as A, model shown as B) for an item — for analysis, never shown."""
        return (self.model_x, self.model_y) if x_is_a(self.seed, item_id) else (self.model_y, self.model_x)

    @property
    def current(self) -> dict[str, Any] | None:
        """What the rater sees for the current item: item_id, prompt, answer_a, answer_b."""
        if not self._ids:
            return None
        row = self._items.row(self._index, named=True)
        a, _ = self.order(row["item_id"])
        first, second = ("answer_x", "answer_y") if a == self.model_x else ("answer_y", "answer_x")
        return {"item_id": row["item_id"], "prompt": row["prompt"], "answer_a": row[first], "answer_b": row[second]}

    @property
    def current_vote(self) -> dict[str, Any] | None:
        return self._votes.get(self._ids[self._index]) if self._ids else None

    @property
    def _done(self) -> dict:
        return self._votes

    def counts(self) -> dict[str, int]:
        """Votes on this queue's items: wins of X, wins of Y, ties, undecided."""
        out = {self.model_x: 0, self.model_y: 0, "tie": 0}
        for rid in self._ids:
            v = self._votes.get(rid)
            if v is not None:
                out[v["winner"]] += 1
        out["undecided"] = len(self._ids) - sum(out[k] for k in (self.model_x, self.model_y, "tie"))
        return out

    @property
    def progress_text(self) -> str:
        """e.g. "item 3 of 20 · 5 rated · this one: A" (no model names: the rater stays blind)."""
        if not self._ids:
            return "no items to rate"
        done = len(self._ids) - self.counts()["undecided"]
        v = self.current_vote
        state = f"this one: {'tie' if v['choice'] == 'tie' else v['choice'] + ' better'}" if v else \
            "this one: not rated"
        tail = " · all rated" if done == len(self._ids) else ""
        return f"item {self._index + 1} of {len(self._ids)} · {done} rated · {state}{tail}"

    # -- actions

    def decide(self, choice: str, note: str = "") -> dict[str, Any]:
        """Save a vote for the current item ("A", "B" or "tie") and move to the next unrated one."""
        if not self._ids:
            raise IndexError("no items: nothing to rate")
        c = str(choice).strip()
        c = "tie" if c.lower() == "tie" else c.upper()
        if c not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        rid = self._ids[self._index]
        a, b = self.order(rid)
        entry = {"item_id": rid, "choice": c, "winner": {"A": a, "B": b, "tie": "tie"}[c], "model_a": a,
                 "model_b": b, "note": str(note or ""),
                 "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "rater": self.rater}
        append_lines(self.path, [entry])  # on disk before the state changes
        self._votes[rid] = entry
        nxt = self.first_undecided(self._index + 1)
        if nxt is not None:
            self._index = nxt
        self._message = f"saved: {'tie' if c == 'tie' else c + ' better'} for {rid}"
        self._show()
        return entry

    def votes(self) -> pl.DataFrame:
        """The latest vote per item of this pair (:func:`read_votes` of the log)."""
        return read_votes(self.path, self.model_x, self.model_y)

    def win_rate(self, ties: Literal["half", "exclude"] = "half", ci: float = 0.95) -> dict[str, Any]:
        """:func:`win_rate` of X against Y on this log."""
        return win_rate(self.votes(), self.model_x, self.model_y, ties=ties, ci=ci)

    # -- widget

    def _build(self) -> None:
        lay = w.Layout
        self._progress = w.Label()
        self._view = w.HTML()
        self._a = w.Button(description="A better", button_style="info", tooltip="answer A is better",
                           layout=lay(width="110px"))
        self._tie = w.Button(description="Tie", tooltip="equally good (or equally bad)", layout=lay(width="80px"))
        self._b = w.Button(description="B better", button_style="info", tooltip="answer B is better",
                           layout=lay(width="110px"))
        self._prev_btn = w.Button(description="◀ Prev", layout=lay(width="90px"))
        self._next_btn = w.Button(description="Next ▶", layout=lay(width="90px"))
        self._note = w.Text(placeholder="optional note, saved with the vote", description="note",
                            layout=lay(width="520px", display=None if self._note_enabled else "none"))
        self._status = w.Label()
        self._a.on_click(lambda _b: self._click("A"))
        self._tie.on_click(lambda _b: self._click("tie"))
        self._b.on_click(lambda _b: self._click("B"))
        self._prev_btn.on_click(lambda _b: self.prev())
        self._next_btn.on_click(lambda _b: self.next())
        rows: list[w.Widget] = [self._progress, w.HBox([self._a, self._tie, self._b, self._prev_btn, self._next_btn])]
        if self._note_enabled:
            rows.append(self._note)
        rows += [self._status, self._view]
        self.widget = w.VBox(rows)

    def _click(self, choice: str) -> None:
        try:
            self.decide(choice, note=self._note.value if self._note_enabled else "")
        except (OSError, ValueError, IndexError) as e:  # a read-only folder: say so, keep the widget
            self._message = f"⚠ not saved: {type(e).__name__}: {e}"
        else:
            self._note.value = ""
        self._status.value = self._message

    def _item_html(self) -> str:
        cur = self.current
        if cur is None:
            return '<p style="color:#666"><i>no items to rate</i></p>'
        box = 'style="flex:1;min-width:0;border:1px solid #ccc;border-radius:4px;padding:6px"'
        v = self.current_vote
        head = ""
        if v is not None:  # the rater's own earlier vote, as A/B/tie only
            label = "tie" if v["choice"] == "tie" else f"{v['choice']} better"
            note = f" — {esc(v['note'])}" if v.get("note") else ""
            head = f'<div style="margin:4px 0">your vote: <b>{esc(label)}</b>{note}</div>'
        return (f"{head}<div style=\"font-size:12px;color:#666\">item {esc(cur['item_id'])}</div>"
                f"<div style=\"margin:4px 0\"><b>Prompt</b><pre {PRE_STYLE}>{esc(cur['prompt'] or '')}</pre></div>"
                f"<div style=\"display:flex;gap:8px\">"
                f"<div {box}><b>A</b><pre {PRE_STYLE}>{esc(cur['answer_a'] or '')}</pre></div>"
                f"<div {box}><b>B</b><pre {PRE_STYLE}>{esc(cur['answer_b'] or '')}</pre></div></div>")

    def _show(self) -> None:
        if not hasattr(self, "widget"):
            return
        self._progress.value = self.progress_text
        self._view.value = self._item_html()
        empty = not self._ids
        for btn in (self._a, self._tie, self._b):
            btn.disabled = empty
        self._prev_btn.disabled = empty or self._index == 0
        self._next_btn.disabled = empty or self._index >= len(self._ids) - 1
        self._status.value = self._message

    @property
    def controls(self) -> dict[str, w.Widget]:
        """The widgets by name (for tests and custom layouts)."""
        return {"a": self._a, "tie": self._tie, "b": self._b, "prev": self._prev_btn, "next": self._next_btn,
                "note": self._note, "progress": self._progress, "view": self._view, "status": self._status}

    def __repr__(self) -> str:
        return f"<PairwiseQueue {self.path}: {self.progress_text}>"
