"""BELLE-EVAL files: the question set and the per-class judge prompts, read with every problem named."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from cqia_nb.core.jsonl import json_lines

GENERATION_VERSION = "1"
EVAL_SET_FILE = "eval_set.json"
PROMPT_FILE = "eval_prompt.json"
BENCHMARK = "belle_eval"
#: classes judged without the reference answer, as in BELLE's scorer
REFERENCE_FREE_CLASSES: tuple[str, ...] = ("generation", "brainstorming", "rewrite")
ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String, "line": pl.Int64, "class": pl.String, "class_raw": pl.String,
    "question": pl.String, "std_answer": pl.String,
}
ANSWER_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String, "answer": pl.String, "empty": pl.Boolean, "finish": pl.String,
    "new_tokens": pl.Int64, "cached": pl.Boolean, "gen_error": pl.String, "gen_error_message": pl.String,
    "gen_key": pl.String,
}
SCORE_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String, "status": pl.String, "score": pl.Float64, "reason": pl.String,
    "raw_reply": pl.String, "judge_error_message": pl.String, "attempts": pl.Int64, "judge_cached": pl.Boolean,
    "score_source": pl.String,
}
SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "class": pl.String, "n": pl.Int64, "scored": pl.Int64, "empty": pl.Int64, "failed": pl.Int64,
    "mean": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}


class BelleEvalError(ValueError):
    """Data or settings that cannot work; the message names the file, line or field and the fix."""


def normalize_class(name: str) -> str:
    """The matching key of a class name: NFKC (U+00A0 and U+3000 become spaces, full-width
    letters ASCII), whitespace runs collapsed to one space, trimmed, case-folded."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", str(name))).strip().casefold()


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """``(line, object)`` for each record of a JSON Lines file (or of a JSON array: position)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BelleEvalError(f"{path}: file not found") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BelleEvalError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); convert it with "
                             f"`iconv -f GB18030 -t UTF-8`") from None
    if text.lstrip().startswith("["):
        try:
            arr = json.loads(text)
        except json.JSONDecodeError as e:
            raise BelleEvalError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        return [(i, obj) for i, obj in enumerate(arr, start=1)]
    out = json_lines(text, path, BelleEvalError, "; expected one {…} object per line")
    if not out:
        raise BelleEvalError(f"{path}: no records")
    return out


def _field(obj: Any, name: str, path: Path, line: int, required: bool = True) -> str:
    if not isinstance(obj, dict):
        raise BelleEvalError(f"{path}:{line}: expected a JSON object, got {type(obj).__name__}")
    v = obj.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v.strip()):
        raise BelleEvalError(f"{path}:{line}: field {name!r} must be a non-empty string, got {v!r}")
    return v


def load_eval_set(path: str | Path) -> pl.DataFrame:
    """The questions of a BELLE-EVAL set (:data:`ITEM_SCHEMA`): ``item_id`` = ``<file>:<line>``,
    ``class`` = the normalised class, ``class_raw`` as written, ``std_answer`` ("" when absent)."""
    p = Path(path)
    rows = []
    for line, obj in _read_records(p):
        cls = _field(obj, "class", p, line)
        rows.append({"item_id": f"{p.name}:{line}", "line": line, "class": normalize_class(cls), "class_raw": cls,
                     "question": _field(obj, "question", p, line),
                     "std_answer": _field(obj, "std_answer", p, line, required=False)})
    return pl.DataFrame(rows, schema=ITEM_SCHEMA)


def load_judge_prompts(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{class key: {"class": name as written, "prompt": …, "line": …}}``; two prompts for one
    class (after normalisation) are an error naming both lines."""
    p = Path(path)
    out: dict[str, dict[str, Any]] = {}
    for line, obj in _read_records(p):
        cls = _field(obj, "class", p, line)
        key = normalize_class(cls)
        if key in out:
            raise BelleEvalError(f"{p}:{line}: a second judge prompt for class {cls!r} (the first is on line "
                                 f"{out[key]['line']}); keep one")
        out[key] = {"class": cls, "prompt": _field(obj, "prompt", p, line), "line": line}
    return out


@dataclass
class BelleData:
    """Questions and judge prompts, matched by class."""

    items: pl.DataFrame
    prompts: dict[str, str]
    prompt_names: dict[str, str]
    eval_set_path: Path
    prompt_path: Path
    missing_prompts: list[str] = field(default_factory=list)
    unused_prompts: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Classes of the questions, in order of first appearance."""
        return list(dict.fromkeys(self.items["class"].to_list()))

    def class_counts(self) -> pl.DataFrame:
        return self.items.group_by("class", maintain_order=True).len("questions")


def load_belle(data: str | Path, prompts: str | Path | None = None,
               on_missing_prompt: Literal["error", "record"] = "error") -> BelleData:
    """Load a BELLE-EVAL folder (``eval_set.json`` + ``eval_prompt.json``) or an eval-set file
    (judge prompts from ``prompts``, else ``eval_prompt.json`` beside it)."""
    d = Path(data)
    if d.is_dir():
        set_path = d / EVAL_SET_FILE
        prompt_path = Path(prompts) if prompts is not None else d / PROMPT_FILE
    else:
        set_path = d
        prompt_path = Path(prompts) if prompts is not None else d.with_name(PROMPT_FILE)
    if not set_path.is_file():
        raise BelleEvalError(f"{set_path}: no BELLE-EVAL set here; pass the folder holding {EVAL_SET_FILE} "
                             f"and {PROMPT_FILE} (e.g. ../shared/benchmarks/belle_eval) or the set file itself")
    if not prompt_path.is_file():
        raise BelleEvalError(f"{prompt_path}: judge prompts not found; pass prompts= (the {PROMPT_FILE} file)")
    if on_missing_prompt not in ("error", "record"):
        raise BelleEvalError(f"on_missing_prompt must be 'error' or 'record', got {on_missing_prompt!r}")
    items = load_eval_set(set_path)
    jp = load_judge_prompts(prompt_path)
    missing = [c for c in dict.fromkeys(items["class"].to_list()) if c not in jp]
    if missing and on_missing_prompt == "error":
        parts = []
        for c in missing:
            first = items.filter(pl.col("class") == c).row(0, named=True)
            n = items.filter(pl.col("class") == c).height
            parts.append(f"{first['class_raw']!r} ({n} question(s), first at {set_path}:{first['line']})")
        raise BelleEvalError(f"no judge prompt in {prompt_path} for class(es) {', '.join(parts)}; classes there: "
                             f"{', '.join(repr(v['class']) for v in jp.values())}. Add a {{\"class\", \"prompt\"}} "
                             "line, or pass on_missing_prompt='record' to record those questions as no_judge_prompt")
    used = set(items["class"].to_list())
    return BelleData(items=items, prompts={k: v["prompt"] for k, v in jp.items()},
                     prompt_names={k: v["class"] for k, v in jp.items()}, eval_set_path=set_path,
                     prompt_path=prompt_path, missing_prompts=missing,
                     unused_prompts=[v["class"] for k, v in jp.items() if k not in used])


def sample_items(items: pl.DataFrame, n: int | None, seed: int = 0) -> pl.DataFrame:
    """A seeded sample of ``n`` questions stratified by class (proportional, largest remainder,
    at least one per class while ``n`` allows), in file order. ``None`` or ``n >= len``: all."""
    if n is None or n >= items.height:
        return items
    if n <= 0:
        raise BelleEvalError(f"limit must be a positive number of questions, got {n}")
    counts = items.group_by("class", maintain_order=True).len()
    classes, sizes = counts["class"].to_list(), counts["len"].to_list()
    total = sum(sizes)
    quota = [n * s / total for s in sizes]
    take = [int(q) for q in quota]
    if n >= len(classes):
        take = [max(1, t) for t in take]
    order = sorted(range(len(classes)), key=lambda i: (-(quota[i] - take[i]), i))  # largest remainder first
    i = 0
    while sum(take) < n:
        j = order[i % len(order)]
        if take[j] < sizes[j]:
            take[j] += 1
        i += 1
    floor = 1 if n >= len(classes) else 0
    while sum(take) > n:  # the at-least-one rule overshot: trim the class most over its quota
        j = max((k for k in range(len(take)) if take[k] > floor), key=lambda k: take[k] - quota[k])
        take[j] -= 1
    parts = [items.filter(pl.col("class") == c).sample(t, seed=seed + k, shuffle=False)
             for k, (c, t) in enumerate(zip(classes, take)) if t]
    return pl.concat(parts).sort("line")
