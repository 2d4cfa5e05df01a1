"""The two human-decision logs: review decisions (notebook 02) and blind pairwise votes (notebook 05).
Widgets write them, pipeline stages read them; both formats are defined here once."""

from __future__ import annotations

import getpass
import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import polars as pl

from cqia_nb.core.intervals import wilson_interval
from cqia_nb.core.jsonl import append_lines, json_object, read_log

DECISIONS: tuple[str, ...] = ("keep", "drop", "edit")
LABEL_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String, "decision": pl.String, "edited_output": pl.String, "note": pl.String,
    "timestamp": pl.String, "reviewer": pl.String, "line": pl.Int64,
}


def current_user() -> str:
    """Who is deciding: ``$USER`` (or ``$USERNAME``), else the login name, else "unknown"."""
    user = os.environ.get("USER") or os.environ.get("USERNAME")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"


def parse_decision(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(entry, "") or (None, why)."""
    obj, why = json_object(raw)
    if obj is None:
        return None, why
    if not isinstance(obj.get("record_id"), str) or not obj["record_id"]:
        return None, "no record_id"
    if obj.get("decision") not in DECISIONS:
        return None, f"decision {obj.get('decision')!r} is not one of {DECISIONS}"
    if obj["decision"] == "edit" and not isinstance(obj.get("edited_output"), str):
        return None, "an edit without edited_output"
    return obj, ""


def read_decisions(path: str | Path, warn: bool = True) -> list[dict[str, Any]]:
    """Every readable review decision of a log, in file order (unreadable lines are skipped with a
    :class:`cqia_nb.core.jsonl.LogLineWarning` naming file and line)."""
    return read_log(path, parse_decision, "review decision", warn=warn)


def append_decision(path: str | Path, entry: dict[str, Any]) -> None:
    """Add one decision line to the log atomically (temp file + fsync + os.replace)."""
    append_lines(path, [entry])


def export_labels(path: str | Path, warn: bool = True) -> pl.DataFrame:
    """The latest decision per record_id of a review log (``LABEL_SCHEMA``; ``line`` is where
    it is in the log), in the order records were first decided."""
    entries = read_decisions(path, warn=warn)
    latest: dict[str, dict[str, Any]] = {}
    for e in entries:
        latest[e["record_id"]] = e  # dict keeps first-insertion order, value is the last line
    rows = [{c: e.get(c) for c in LABEL_SCHEMA} for e in latest.values()]
    for r in rows:
        r["note"] = r["note"] if isinstance(r["note"], str) else ("" if r["note"] is None else str(r["note"]))
        for c in ("timestamp", "reviewer"):
            r[c] = None if r[c] is None else str(r[c])
    return pl.DataFrame(rows, schema=LABEL_SCHEMA)


CHOICES: tuple[str, ...] = ("A", "B", "tie")
VOTE_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String, "choice": pl.String, "winner": pl.String, "model_a": pl.String, "model_b": pl.String,
    "note": pl.String, "timestamp": pl.String, "rater": pl.String, "line": pl.Int64,
}
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "prompt", "answer_x", "answer_y")


def x_is_a(seed: int, item_id: str) -> bool:
    """Whether model X is shown as "A" for this item (a seeded, per-item coin)."""
    return hashlib.sha256(f"cqia-pairwise\x00{seed}\x00{item_id}".encode("utf-8")).digest()[0] & 1 == 0


def parse_vote(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(vote, "") or (None, why)."""
    obj, why = json_object(raw)
    if obj is None:
        return None, why
    for k in ("item_id", "model_a", "model_b"):
        if not isinstance(obj.get(k), str) or not obj[k]:
            return None, f"no {k}"
    if obj.get("choice") not in CHOICES:
        return None, f"choice {obj.get('choice')!r} is not one of {CHOICES}"
    expect = {"A": obj["model_a"], "B": obj["model_b"], "tie": "tie"}[obj["choice"]]
    if obj.get("winner") != expect:
        return None, f"winner {obj.get('winner')!r} does not match choice {obj['choice']!r} (expected {expect!r})"
    return obj, ""


def vote_pair(a: str, b: str) -> frozenset[str]:
    """The unordered pair of two models (votes count whichever was shown as A)."""
    return frozenset((a, b))


def read_votes(path: str | Path, model_x: str | None = None, model_y: str | None = None,
               latest: bool = True, warn: bool = True) -> pl.DataFrame:
    """Votes of a log (:data:`VOTE_SCHEMA`), latest per item and model pair unless ``latest``
    is False; only the X-vs-Y pair when both are given. Unreadable lines are skipped with a
    warning naming file and line (:class:`cqia_nb.core.jsonl.LogLineWarning`)."""
    entries = read_log(path, parse_vote, "pairwise vote", warn=warn)
    if model_x is not None and model_y is not None:
        entries = [e for e in entries if vote_pair(e["model_a"], e["model_b"]) == vote_pair(model_x, model_y)]
    if latest:
        by: dict[tuple, dict[str, Any]] = {}
        for e in entries:
            by[(e["item_id"], vote_pair(e["model_a"], e["model_b"]))] = e
        entries = list(by.values())
    rows = [{c: (None if e.get(c) is None else (e[c] if c == "line" else str(e[c]))) for c in VOTE_SCHEMA}
            for e in entries]
    return pl.DataFrame(rows, schema=VOTE_SCHEMA)


def win_rate(votes: pl.DataFrame | str | Path, model_x: str, model_y: str,
             ties: Literal["half", "exclude"] = "half", ci: float = 0.95) -> dict[str, Any]:
    """Win rate of ``model_x`` against ``model_y`` with a Wilson interval (ties count as half a win, or
    are left out with ``ties='exclude'``). ``votes``: a log path or :func:`read_votes` output."""
    if ties not in ("half", "exclude"):
        raise ValueError(f"ties must be 'half' or 'exclude', got {ties!r}")
    if not isinstance(votes, pl.DataFrame):
        votes = read_votes(votes, model_x, model_y)
    pair = vote_pair(model_x, model_y)
    v = [r for r in votes.iter_rows(named=True) if vote_pair(r["model_a"], r["model_b"]) == pair]
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
