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
    (:func:`cqia_nb.review.append_lines`: temp file + fsync + ``os.replace`` under a lock, so a
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

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Sequence

import ipywidgets as w
import polars as pl

from cqia_nb.review import QueueCursor, _reviewer, append_lines, read_log
from cqia_nb.widgets import _PRE, Displayable, _esc

__all__ = [
    "CHOICES",
    "PairwiseQueue",
    "VOTE_SCHEMA",
    "pair_answers",
    "pair_frames",
    "read_votes",
    "win_rate",
    "win_rate_row",
]

CHOICES: tuple[str, ...] = ("A", "B", "tie")
VOTE_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String, "choice": pl.String, "winner": pl.String, "model_a": pl.String, "model_b": pl.String,
    "note": pl.String, "timestamp": pl.String, "rater": pl.String, "line": pl.Int64,
}
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "prompt", "answer_x", "answer_y")


def pair_answers(prompts: Sequence[str], answers_x: Sequence[str], answers_y: Sequence[str],
                 ids: Sequence[str] | None = None) -> pl.DataFrame:
    """The items frame of a :class:`PairwiseQueue`: item_id, prompt, answer_x, answer_y."""
    n = len(prompts)
    if not (len(answers_x) == len(answers_y) == n):
        raise ValueError(f"{n} prompts, {len(answers_x)} answers of X, {len(answers_y)} of Y: give one answer "
                         "of each model per prompt")
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
    return pl.DataFrame({"item_id": ids, "prompt": list(prompts), "answer_x": list(answers_x),
                         "answer_y": list(answers_y)}, schema={c: pl.String for c in ITEM_COLUMNS})


def pair_frames(x: pl.DataFrame, y: pl.DataFrame, id_col: str = "item_id", prompt_col: str = "question",
                answer_col: str = "answer") -> pl.DataFrame:
    """Items from two models' answer frames (e.g. two ``BelleEvalResult.per_item``), matched on
    ``id_col``, in ``x``'s order. Items missing from either side, or without an answer (a failed
    generation), are an error listing them: a comparison never silently shrinks."""
    for name, fr in (("x", x), ("y", y)):
        miss = [c for c in (id_col, prompt_col, answer_col) if c not in fr.columns]
        if miss:
            raise ValueError(f"frame {name} lacks column(s) {miss}; it has {fr.columns}")
    j = x.select(pl.col(id_col).cast(pl.String).alias("item_id"), pl.col(prompt_col).alias("prompt"),
                 pl.col(answer_col).alias("answer_x")).join(
        y.select(pl.col(id_col).cast(pl.String).alias("item_id"), pl.col(answer_col).alias("answer_y")),
        on="item_id", how="full", coalesce=True, maintain_order="left")
    bad = j.filter(pl.col("answer_x").is_null() | pl.col("answer_y").is_null() | pl.col("prompt").is_null())
    if bad.height:
        ids = bad["item_id"].to_list()
        raise ValueError(f"{len(ids)} item(s) lack an answer from one of the models (or are in one frame only): "
                         f"{', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}; filter both frames to the same "
                         "answered items first")
    return j.select(list(ITEM_COLUMNS)).cast({c: pl.String for c in ITEM_COLUMNS})


def x_is_a(seed: int, item_id: str) -> bool:
    """Whether model X is shown as "A" for this item (a seeded, per-item coin)."""
    return hashlib.sha256(f"cqia-pairwise\x00{seed}\x00{item_id}".encode("utf-8")).digest()[0] & 1 == 0


def _parse_vote(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    for k in ("item_id", "model_a", "model_b"):
        if not isinstance(obj.get(k), str) or not obj[k]:
            return None, f"no {k}"
    if obj.get("choice") not in CHOICES:
        return None, f"choice {obj.get('choice')!r} is not one of {CHOICES}"
    expect = {"A": obj["model_a"], "B": obj["model_b"], "tie": "tie"}[obj["choice"]]
    if obj.get("winner") != expect:
        return None, f"winner {obj.get('winner')!r} does not match choice {obj['choice']!r} (expected {expect!r})"
    return obj, ""


def _pair(a: str, b: str) -> frozenset[str]:
    return frozenset((a, b))


def read_votes(path: str | Path, model_x: str | None = None, model_y: str | None = None,
               latest: bool = True, warn: bool = True) -> pl.DataFrame:
    """Votes of a log (:data:`VOTE_SCHEMA`), latest per item and model pair unless ``latest``
    is False; only the X-vs-Y pair when both are given. Unreadable lines are skipped with a
    warning naming file and line (:class:`cqia_nb.review.ReviewLogWarning`)."""
    entries = read_log(path, warn=warn, parse_line=_parse_vote, what="pairwise vote")
    if model_x is not None and model_y is not None:
        entries = [e for e in entries if _pair(e["model_a"], e["model_b"]) == _pair(model_x, model_y)]
    if latest:
        by: dict[tuple, dict[str, Any]] = {}
        for e in entries:
            by[(e["item_id"], _pair(e["model_a"], e["model_b"]))] = e
        entries = list(by.values())
    rows = [{c: (None if e.get(c) is None else (e[c] if c == "line" else str(e[c]))) for c in VOTE_SCHEMA}
            for e in entries]
    return pl.DataFrame(rows, schema=VOTE_SCHEMA)


def win_rate(votes: pl.DataFrame | str | Path, model_x: str, model_y: str,
             ties: Literal["half", "exclude"] = "half", ci: float = 0.95) -> dict[str, Any]:
    """Win rate of ``model_x`` against ``model_y`` with a Wilson interval (see the module text
    for how ties count). ``votes``: a log path or :func:`read_votes` output."""
    from cqia_nb.results import wilson_interval

    if ties not in ("half", "exclude"):
        raise ValueError(f"ties must be 'half' or 'exclude', got {ties!r}")
    if not isinstance(votes, pl.DataFrame):
        votes = read_votes(votes, model_x, model_y)
    pair = _pair(model_x, model_y)
    v = [r for r in votes.iter_rows(named=True) if _pair(r["model_a"], r["model_b"]) == pair]
    wins = sum(r["winner"] == model_x for r in v)
    losses = sum(r["winner"] == model_y for r in v)
    n_ties = sum(r["winner"] == "tie" for r in v)
    if ties == "half":
        n, k = wins + losses + n_ties, wins + n_ties / 2
    else:
        n, k = wins + losses, wins
    lo, hi = wilson_interval(k, n, ci)
    return {"model": model_x, "opponent": model_y, "wins": wins, "losses": losses, "ties": n_ties,
            "votes": wins + losses + n_ties, "n": n, "win_rate": k / n if n else None, "ci_low": lo, "ci_high": hi,
            "ties_counted": ties, "interval": f"Wilson {ci:.0%}"}


def win_rate_row(stats: dict[str, Any], base_model: str | None = None, train_subset: str | None = None,
                 notes: str = "") -> dict[str, Any]:
    """A :func:`win_rate` result as a row for :func:`cqia_nb.results.append_results`
    (benchmark ``human_pairwise``, subset ``vs <opponent>``, metric ``win_rate``)."""
    if stats["win_rate"] is None:
        raise ValueError(f"no votes for {stats['model']} vs {stats['opponent']}: nothing to store")
    how = (f"{stats['wins']} wins, {stats['losses']} losses, {stats['ties']} ties; ties counted "
           f"{'as half' if stats['ties_counted'] == 'half' else 'out'}; {stats['interval']}")
    return {"model": stats["model"], "benchmark": "human_pairwise", "subset": f"vs {stats['opponent']}",
            "metric": "win_rate", "value": stats["win_rate"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
            "n": stats["n"], "shots": None, "base_model": base_model, "train_subset": train_subset,
            "notes": "; ".join(x for x in (notes, how) if x)}


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
        self.rater = rater or _reviewer()
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
            note = f" — {_esc(v['note'])}" if v.get("note") else ""
            head = f'<div style="margin:4px 0">your vote: <b>{_esc(label)}</b>{note}</div>'
        return (f"{head}<div style=\"font-size:12px;color:#666\">item {_esc(cur['item_id'])}</div>"
                f"<div style=\"margin:4px 0\"><b>Prompt</b><pre {_PRE}>{_esc(cur['prompt'] or '')}</pre></div>"
                f"<div style=\"display:flex;gap:8px\">"
                f"<div {box}><b>A</b><pre {_PRE}>{_esc(cur['answer_a'] or '')}</pre></div>"
                f"<div {box}><b>B</b><pre {_PRE}>{_esc(cur['answer_b'] or '')}</pre></div></div>")

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
