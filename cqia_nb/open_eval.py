"""BELLE-EVAL open generation: a model answers every question, an LLM judge scores each answer 0–1.

::

    data = load_belle("../shared/benchmarks/belle_eval")          # eval_set.json + eval_prompt.json
    cfg = BelleEvalConfig(generation=GenerationSettings(max_new_tokens=512, batch_size=16, device="cuda"),
                          judge=JudgeConfig.belle_eval(base_url="http://127.0.0.1:8000/v1", model="judge"))
    res = run_belle_eval("runs/yi-6b-cqia/merged", data, cfg, out_dir="build/belle/yi-6b-cqia")
    res.summary                       # per class + overall + macro: n, scored, empty, failed, mean, CI
    append_results(res.results_rows("Yi-6B + CQIA", base_model="Yi-6B", train_subset="mix-groups"))

The data (LianjiaTech/BELLE ``eval/``; see the NOTICE beside the files)
    ``eval_set.json`` is JSON Lines of ``{"question", "std_answer", "class"}`` (``std_answer`` is
    empty where no reference exists: generation, brainstorming, most rewrite); a JSON array is
    accepted too. ``eval_prompt.json`` is JSON Lines of ``{"class", "prompt"}``: one judge
    instruction per class, each asking for ``得分:`` and a score in [0, 1]. Class names differ
    between the files ("open qa" vs "open QA", with a NO-BREAK SPACE in "closed qa"), so they are
    matched by :func:`normalize_class` (NFKC — which maps U+00A0 and the full-width space U+3000
    to a space —, whitespace runs collapsed, trimmed, case-folded). A class of the test set with
    no judge prompt fails at load time naming the class and line (``on_missing_prompt="record"``
    keeps going and records those questions as ``no_judge_prompt``); judge prompts without
    questions (translation, in the 1k set) are listed in ``BelleData.unused_prompts``.

The judge prompt
    Composed as BELLE's own scorer does (``eval/template_html/ChatGPT_Score.html.temp`` in
    LianjiaTech/BELLE): the class's judge instruction, the question, the reference answer (not for
    the reference-free classes generation, brainstorming and rewrite — decided by class, as
    upstream does), the model's answer, and a request for the score with a reason (see
    :func:`build_judge_prompt`). It goes through :func:`cqia_nb.judge.judge_prompts` with
    ``JudgeConfig.belle_eval()`` — the same backends (any OpenAI-compatible endpoint, or a local
    HF model), retries, timeouts and sqlite reply cache as the filtering judge.

Generation
    :func:`generate_answers` loads the model once (a full model or a LoRA/QLoRA adapter folder,
    safetensors, no remote code), applies its chat template (or ``chatml``/``qwen``/a Jinja
    source) and generates in batches (:func:`cqia_nb.train.generate_batch`; greedy by default).
    Every batch's answers are written to a sqlite cache (``<cache_dir>/generations.sqlite``)
    before the next batch starts, keyed by ``sha256(model fingerprint, question, settings that
    change the answer)`` (batch size and device are not part of the key), so a rerun — or a run
    that was killed — regenerates nothing that was already answered. A batch that fails (e.g.
    out of memory) is recorded as ``generation_error`` for its questions and not cached.

Nothing is dropped
    One row per question in ``BelleEvalResult.per_item`` with a ``status``: ``scored``;
    ``empty_answer`` — the model produced nothing but whitespace: scored **0 without asking the
    judge** (``empty_answers="zero"``, the default; ``"judge"`` sends them like any answer);
    ``generation_error``; ``no_judge_prompt``; ``not_judged`` (``judge=None``: generation only);
    or the judge's error kind (``timeout``, ``unparseable``, ``http_500``, ``endpoint_down`` …,
    see :mod:`cqia_nb.judge`). Means are over scored and empty answers; failures are counted
    in ``failed`` and left out of the mean (their judge replies are kept: a rerun retries
    transport failures, and a changed score pattern re-parses cached replies).

Scores
    :func:`summarize_scores` gives per-class means with seeded percentile-bootstrap CIs,
    ``overall`` (the mean over all scored questions) and ``macro`` (the mean of the class means,
    bootstrapped within classes).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import polars as pl

from cqia_nb.judge import JudgeConfig, judge_prompts

__all__ = [
    "BelleData",
    "BelleEvalConfig",
    "BelleEvalError",
    "BelleEvalResult",
    "GenerationSettings",
    "REFERENCE_FREE_CLASSES",
    "build_judge_prompt",
    "generate_answers",
    "judge_answers",
    "load_belle",
    "load_eval_set",
    "load_judge_prompts",
    "main",
    "model_identity",
    "normalize_class",
    "run_belle_eval",
    "sample_items",
    "summarize_scores",
]

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
}
SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "class": pl.String, "n": pl.Int64, "scored": pl.Int64, "empty": pl.Int64, "failed": pl.Int64,
    "mean": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}


class BelleEvalError(ValueError):
    """Data or settings that cannot work; the message names the file, line or field and the fix."""


# ----------------------------------------------------------------------------- data

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
    out = []
    for i, line in enumerate(text.split("\n"), start=1):  # "\n" only: text may hold U+2028
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line)))
        except json.JSONDecodeError as e:
            raise BelleEvalError(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno}); "
                                 "expected one {…} object per line") from None
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


# ----------------------------------------------------------------------------- generation

@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated. ``chat_template``: None (the tokenizer's own), ``"chatml"`` or
    ``"qwen"`` (:data:`cqia_nb.formatting.NAMED_TEMPLATES`; for base models without one) or a
    Jinja source. ``dtype``: None (the checkpoint's float32 load), ``"bfloat16"`` … for GPUs."""

    max_new_tokens: int = 512
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0
    system: str | None = None
    chat_template: str | None = None
    max_input_tokens: int | None = None
    device: str = "cpu"
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise BelleEvalError("max_new_tokens and batch_size must be >= 1")
        if self.do_sample and self.temperature <= 0:
            raise BelleEvalError("do_sample needs temperature > 0")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise BelleEvalError(f"dtype must be float32, bfloat16 or float16 (or None), got {self.dtype!r}")

    def key_fields(self) -> dict[str, Any]:
        """The settings that change an answer (and so the cache key): not batch size or device."""
        d = dataclasses.asdict(self)
        for k in ("batch_size", "device"):
            d.pop(k)
        if not self.do_sample:  # greedy: sampling knobs do not matter
            for k in ("temperature", "top_p", "seed"):
                d.pop(k)
        return d


def model_identity(model: str | Path) -> str:
    """A stable id for caches: the weights fingerprint of a folder (for an adapter, of the adapter
    and of its base), or ``hub:<name>``."""
    from cqia_nb.models import model_fingerprint

    p = Path(model).expanduser()
    cfg = p / "adapter_config.json"
    if cfg.is_file():
        base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path", "")
        return f"adapter:{model_fingerprint(p)}+{model_fingerprint(base)}"
    return model_fingerprint(p if p.is_dir() else str(model))


def _gen_key(model_id: str, question: str, settings: GenerationSettings) -> str:
    payload = {"v": GENERATION_VERSION, "model": model_id, "question": question, "settings": settings.key_fields()}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _resolve_template(tok, template: str | None, model: str | Path) -> str | None:
    """The Jinja source to pass to apply_chat_template, or None for the tokenizer's own."""
    from cqia_nb.formatting import NAMED_TEMPLATES

    if template is None:
        if not getattr(tok, "chat_template", None):
            raise BelleEvalError(f"the tokenizer of {str(model)!r} has no chat template (a base model?); set "
                                 "GenerationSettings(chat_template='chatml') (Yi's template) or give a Jinja source")
        return None
    if template in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[template]
    if "{{" in template or "{%" in template:
        return template
    raise BelleEvalError(f"chat_template {template!r} is neither a named template ({', '.join(NAMED_TEMPLATES)}) "
                         "nor a Jinja source")


def generate_answers(model: str | Path, questions: Sequence[str], ids: Sequence[str] | None = None,
                     settings: GenerationSettings = GenerationSettings(), cache: bool = True,
                     cache_path: str | Path | None = None, progress: bool = False) -> pl.DataFrame:
    """One answer per question (:data:`ANSWER_SCHEMA`, in order). Cached answers are reused
    without loading the model; the rest are generated batch by batch, each batch cached as soon
    as it is done. ``empty`` marks answers that are empty or whitespace."""
    from cqia_nb.quality import KVStore, default_cache_path

    questions = list(questions)
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(questions))]
    if len(ids) != len(questions):
        raise BelleEvalError(f"{len(ids)} ids for {len(questions)} questions")
    model_id = model_identity(model)
    keys = [_gen_key(model_id, q, settings) for q in questions]
    rows: list[dict[str, Any]] = [{"item_id": i, "gen_key": k, "cached": False} for i, k in zip(ids, keys)]
    store = KVStore(cache_path or default_cache_path("generations.sqlite")) if cache else None
    try:
        hits = store.get_many(keys) if store is not None else {}
        todo = []
        for i, k in enumerate(keys):
            h = hits.get(k)
            if isinstance(h, dict) and isinstance(h.get("answer"), str):
                rows[i].update(answer=h["answer"], finish=h.get("finish"), new_tokens=h.get("new_tokens"), cached=True)
            else:
                todo.append(i)
        if todo:
            _generate_into(rows, todo, questions, keys, model, settings, store, progress)
    finally:
        if store is not None:
            store.close()
    for r in rows:
        a = r.get("answer")
        r["empty"] = None if a is None else not a.strip()
    return pl.DataFrame(rows, schema=ANSWER_SCHEMA)


def _generate_into(rows, todo, questions, keys, model, settings: GenerationSettings, store, progress) -> None:
    import torch
    from tqdm.auto import tqdm

    from cqia_nb.train import _load_for_inference, _torch_dtype, generate_batch

    dtype = _torch_dtype(settings.dtype) if settings.dtype else None
    try:
        lm, tok = _load_for_inference(model, dtype=dtype, device=settings.device)
    except OSError as e:
        raise BelleEvalError(f"could not load the model {str(model)!r} ({e}); pass a local folder with safetensors "
                             "weights (a full model or a LoRA/QLoRA adapter folder)") from e
    template = _resolve_template(tok, settings.chat_template, model)
    # similar lengths share a batch; every batch is cached before the next one starts
    todo = sorted(todo, key=lambda i: len(questions[i]))
    bar = tqdm(total=len(todo), desc="generate", unit="q", disable=not progress)
    step = settings.batch_size
    for b in range(0, len(todo), step):
        idx = todo[b:b + step]
        try:
            outs = generate_batch(lm, tok, [questions[i] for i in idx], max_new_tokens=settings.max_new_tokens,
                                  system=settings.system, batch_size=step, do_sample=settings.do_sample,
                                  temperature=settings.temperature, top_p=settings.top_p,
                                  repetition_penalty=settings.repetition_penalty, seed=settings.seed + b,
                                  chat_template=template, max_input_tokens=settings.max_input_tokens)
        except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory: recorded, not cached; a rerun retries
            for i in idx:
                rows[i].update(gen_error="generation_error", gen_error_message=f"{type(e).__name__}: {e}"[:500])
            if settings.device.startswith("cuda"):
                torch.cuda.empty_cache()
            bar.update(len(idx))
            continue
        for i, o in zip(idx, outs):
            rows[i].update(answer=o["answer"], finish=o["finish"], new_tokens=o["new_tokens"])
        if store is not None:
            store.put_many({keys[i]: {"answer": o["answer"], "finish": o["finish"], "new_tokens": o["new_tokens"],
                                      "time": time.time()} for i, o in zip(idx, outs)})
        bar.update(len(idx))
    bar.close()


# ----------------------------------------------------------------------------- judging

#: BELLE's scorer composition (eval/template_html/ChatGPT_Score.html.temp): with and without reference
JUDGE_INPUT = "{prompt} {question} 标准回答:{std_answer}  模型回答：' {answer}'。请针对模型回答给出得分，顺便给出理由："
JUDGE_INPUT_REFERENCE_FREE = "{prompt} {question}  模型回答： '{answer}'。请针对模型回答给出得分，顺便给出理由："


def build_judge_prompt(judge_prompt: str, question: str, std_answer: str, answer: str,
                       reference_free: bool = False) -> str:
    """The text sent to the judge for one answer (BELLE's own composition)."""
    template = JUDGE_INPUT_REFERENCE_FREE if reference_free else JUDGE_INPUT
    return template.format(prompt=judge_prompt, question=question, std_answer=std_answer, answer=answer)


def overlap_f1(answer: str, reference: str) -> float:
    """Character-bigram F1 of ``answer`` against ``reference`` (whitespace ignored; 0–1).

    The offline stand-in for a judge (``BelleEvalConfig(scorer="overlap")``): deterministic and
    free, so a laptop run and the tests get numbers, but it rewards copying the reference's wording
    and knows nothing of correctness; never compare it with GPT-4 judge scores."""
    from collections import Counter

    def grams(t: str) -> Counter:
        t = "".join(t.split())
        return Counter(t[i:i + 2] for i in range(len(t) - 1)) if len(t) > 1 else Counter(t)

    a, r = grams(answer), grams(reference)
    common = sum((a & r).values())
    if not common:
        return 0.0
    p, q = common / sum(a.values()), common / sum(r.values())
    return 2 * p * q / (p + q)


def overlap_scores(items: pl.DataFrame, answers: pl.DataFrame) -> pl.DataFrame:
    """:data:`SCORE_SCHEMA` rows scored with :func:`overlap_f1` against each item's ``std_answer``
    (empty answers 0, missing answers and items without a reference recorded as failures)."""
    ans = {r["item_id"]: r for r in answers.iter_rows(named=True)}
    rows: list[dict[str, Any]] = []
    for it in items.iter_rows(named=True):
        a = ans.get(it["item_id"])
        answer = None if a is None else a.get("answer")
        row: dict[str, Any] = {"item_id": it["item_id"], "attempts": 0, "judge_cached": False}
        if answer is None:
            row.update(status=(a or {}).get("gen_error") or "generation_error",
                       judge_error_message=(a or {}).get("gen_error_message") or "no answer for this item")
        elif not answer.strip():
            row.update(status="empty_answer", score=0.0, reason="empty answer: scored 0")
        elif not (it.get("std_answer") or "").strip():
            row.update(status="no_reference", judge_error_message="overlap scoring needs a std_answer")
        else:
            row.update(status="scored", score=overlap_f1(answer, it["std_answer"]),
                       reason="character-bigram F1 with the reference answer (offline stand-in for a judge)")
        rows.append(row)
    return pl.DataFrame(rows, schema=SCORE_SCHEMA)


def judge_answers(items: pl.DataFrame, answers: pl.DataFrame, prompts: dict[str, str],
                  judge: JudgeConfig | None = None, empty_answers: Literal["zero", "judge"] = "zero",
                  reference_free_classes: Sequence[str] = REFERENCE_FREE_CLASSES,
                  judge_model_path: str | None = None) -> pl.DataFrame:
    """Score each answer (:data:`SCORE_SCHEMA`, one row per item, in ``items`` order).

    ``items``: :data:`ITEM_SCHEMA` columns (at least item_id, class, question, std_answer);
    ``answers``: item_id, answer, empty, gen_error (from :func:`generate_answers`, or your own).
    ``judge`` None: nothing is judged (status ``not_judged``)."""
    if empty_answers not in ("zero", "judge"):
        raise BelleEvalError(f"empty_answers must be 'zero' or 'judge', got {empty_answers!r}")
    ans = {r["item_id"]: r for r in answers.iter_rows(named=True)}
    free = {normalize_class(c) for c in reference_free_classes}
    rows: list[dict[str, Any]] = []
    send: list[int] = []
    texts: list[str] = []
    for it in items.iter_rows(named=True):
        a = ans.get(it["item_id"])
        row: dict[str, Any] = {"item_id": it["item_id"], "attempts": 0, "judge_cached": False}
        answer = None if a is None else a.get("answer")
        if a is None or answer is None:
            why = (a or {}).get("gen_error_message") or "no answer for this item"
            row.update(status=(a or {}).get("gen_error") or "generation_error", judge_error_message=why)
        elif it["class"] not in prompts:
            row.update(status="no_judge_prompt",
                       judge_error_message=f"no judge prompt for class {it.get('class_raw') or it['class']!r}")
        elif empty_answers == "zero" and not answer.strip():
            row.update(status="empty_answer", score=0.0, reason="empty answer: scored 0 without asking the judge")
        elif judge is None:
            row.update(status="not_judged")
        else:
            send.append(len(rows))
            texts.append(build_judge_prompt(prompts[it["class"]], it["question"], it["std_answer"] or "",
                                            answer, reference_free=it["class"] in free))
        rows.append(row)
    if send:
        res = judge_prompts(texts, judge, ids=[rows[i]["item_id"] for i in send], model_path=judge_model_path)
        for i, r in zip(send, res.iter_rows(named=True)):
            rows[i].update(status=r["error"] or "scored", score=r["score"], reason=r["reason"],
                           raw_reply=r["raw_reply"], judge_error_message=r["error_message"],
                           attempts=r["attempts"], judge_cached=r["cached"])
    return pl.DataFrame(rows, schema=SCORE_SCHEMA)


# ----------------------------------------------------------------------------- scores

def summarize_scores(per_item: pl.DataFrame, ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
                     classes: Sequence[str] | None = None) -> pl.DataFrame:
    """Per class (``classes`` order, default first appearance), then ``overall`` and ``macro``:
    questions ``n``, ``scored`` (judged), ``empty`` (scored 0), ``failed`` (everything else),
    ``mean`` over scored + empty, bootstrap ``ci_low``/``ci_high`` (:data:`SUMMARY_SCHEMA`)."""
    from cqia_nb.results import bootstrap_mean_ci

    df = per_item.select("class", "status", "score")
    order = list(classes) if classes is not None else list(dict.fromkeys(df["class"].to_list()))
    rows = []
    counted = df.filter(pl.col("status").is_in(["scored", "empty_answer"]) & pl.col("score").is_not_null())
    for k, c in enumerate(order):
        part = df.filter(pl.col("class") == c)
        vals = counted.filter(pl.col("class") == c)["score"].to_numpy()
        lo, hi = bootstrap_mean_ci(vals, ci=ci, n_boot=n_boot, seed=seed + k)
        rows.append(_summary_row(c, part, vals, lo, hi))
    vals = counted["score"].to_numpy()
    lo, hi = bootstrap_mean_ci(vals, ci=ci, n_boot=n_boot, seed=seed)
    rows.append(_summary_row("overall", df, vals, lo, hi))
    present = [c for c in order if counted.filter(pl.col("class") == c).height]
    macro_src = counted.filter(pl.col("class").is_in(present))
    lo, hi = bootstrap_mean_ci(macro_src["score"].to_numpy(), ci=ci, n_boot=n_boot, seed=seed,
                               strata=macro_src["class"].to_list())
    means = [r["mean"] for r in rows[:len(order)] if r["mean"] is not None]
    macro = _summary_row("macro", df, vals, lo, hi)
    macro["mean"] = sum(means) / len(means) if means else None
    rows.append(macro)
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def _summary_row(name: str, part: pl.DataFrame, vals, lo, hi) -> dict[str, Any]:
    st = part["status"]
    scored, empty = int((st == "scored").sum()), int((st == "empty_answer").sum())
    return {"class": name, "n": part.height, "scored": scored, "empty": empty,
            "failed": part.height - scored - empty, "mean": float(vals.mean()) if len(vals) else None,
            "ci_low": lo, "ci_high": hi}


# ----------------------------------------------------------------------------- the run

@dataclass
class BelleEvalConfig:
    """One BELLE-EVAL run. ``judge`` None: generate only (judge later with :func:`judge_answers`).
    ``judge_model_path``: the local judge model (``JudgeConfig.belle_eval(backend="local")``).
    ``limit``: a seeded class-stratified sample of that many questions (:func:`sample_items`).
    ``scorer="overlap"``: no judge; scores are :func:`overlap_f1` (metric ``overlap_f1``, not ``mean_score``)."""

    def __post_init__(self) -> None:
        if self.scorer not in ("judge", "overlap"):
            raise BelleEvalError(f"scorer must be 'judge' or 'overlap', got {self.scorer!r}")

    generation: GenerationSettings = field(default_factory=GenerationSettings)
    judge: JudgeConfig | None = field(default_factory=JudgeConfig.belle_eval)
    #: "judge": the LLM judge in ``judge``; "overlap": :func:`overlap_f1` against the reference, offline
    scorer: Literal["judge", "overlap"] = "judge"
    judge_model_path: str | None = None
    empty_answers: Literal["zero", "judge"] = "zero"
    reference_free_classes: tuple[str, ...] = REFERENCE_FREE_CLASSES
    limit: int | None = None
    seed: int = 0
    ci: float = 0.95
    n_boot: int = 2000
    cache: bool = True
    cache_path: str | None = None
    progress: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The settings for run records (the judge's API key left out)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("generation", "judge")}
        d["generation"] = dataclasses.asdict(self.generation)
        d["judge"] = None if self.judge is None else self.judge.to_dict()
        d["reference_free_classes"] = list(self.reference_free_classes)
        return d


@dataclass
class BelleEvalResult:
    """``per_item``: one row per question (items + answer + score columns); ``summary``: from
    :func:`summarize_scores`."""

    model: str
    model_id: str
    per_item: pl.DataFrame
    summary: pl.DataFrame
    config: BelleEvalConfig
    data: BelleData

    def counts(self) -> dict[str, int]:
        """Questions per status (every question is in exactly one)."""
        return dict(self.per_item.group_by("status").len().sort("status").iter_rows())

    def results_rows(self, model_name: str, base_model: str | None = None, train_subset: str | None = None,
                     notes: str = "") -> list[dict[str, Any]]:
        """Rows for :func:`cqia_nb.results.append_results`: per class, overall and macro
        (benchmark ``belle_eval``, metric ``mean_score``, n = questions with a score)."""
        judge = self.config.judge
        metric = "mean_score"
        if self.config.scorer == "overlap":
            jdesc, metric = "overlap F1 with the reference (offline stand-in, not a judge)", "overlap_f1"
        elif judge is None:
            jdesc = "no judge"
        elif judge.backend == "local":
            jdesc = f"judge local:{self.config.judge_model_path or judge.model}"
        else:
            jdesc = f"judge {judge.resolved_model()}"
        extra = f"{jdesc}; {self.per_item.height} questions; empty answers {self.config.empty_answers}"
        out = []
        for r in self.summary.iter_rows(named=True):
            if r["mean"] is None:
                continue
            out.append({"model": model_name, "benchmark": BENCHMARK, "subset": r["class"], "metric": metric,
                        "value": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                        "n": r["scored"] + r["empty"], "shots": None, "base_model": base_model,
                        "train_subset": train_subset,
                        "notes": "; ".join(x for x in (notes, extra, f"{r['failed']} failed") if x)})
        return out

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``per_item.jsonl``, ``summary.csv`` and ``run.json`` (settings and counts) in ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"per_item": out / "per_item.jsonl", "summary": out / "summary.csv", "run": out / "run.json"}
        self.per_item.write_ndjson(paths["per_item"])
        self.summary.write_csv(paths["summary"])
        paths["run"].write_text(json.dumps({
            "model": self.model, "model_id": self.model_id, "eval_set": str(self.data.eval_set_path),
            "judge_prompts": str(self.data.prompt_path), "config": self.config.to_dict(), "counts": self.counts(),
            "missing_prompts": self.data.missing_prompts, "unused_prompts": self.data.unused_prompts,
        }, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        return paths


def judge_from(spec: str | None, model: str | None = None, *, concurrency: int = 4, timeout_s: float = 60.0,
               device: str = "cpu") -> tuple[JudgeConfig | None, str | None]:
    """``(judge config, local judge path)`` from one setting: None / "none" / "overlap" (no LLM
    judge), an ``http(s)://…/v1`` OpenAI-compatible endpoint (``model``: its model name), or a local
    model folder (or "tiny")."""
    if spec is None or spec in ("none", "overlap"):
        return None, None
    if spec.startswith(("http://", "https://")):
        return JudgeConfig.belle_eval(base_url=spec, model=model, concurrency=concurrency, timeout_s=timeout_s), None
    if spec != "tiny" and not Path(spec).expanduser().exists():
        raise BelleEvalError(f"judge {spec!r}: not an http(s) URL and no such model folder; give an OpenAI-compatible "
                             "endpoint (…/v1), a local model folder, or 'overlap' for the offline stand-in")
    return JudgeConfig.belle_eval(backend="local", model=spec, device=device), spec


def run_belle_eval(model: str | Path, data: BelleData | str | Path, config: BelleEvalConfig = BelleEvalConfig(),
                   out_dir: str | Path | None = None) -> BelleEvalResult:
    """Generate (cached), judge (cached), summarise; write the outputs when ``out_dir`` is given."""
    if not isinstance(data, BelleData):
        data = load_belle(data)
    items = sample_items(data.items, config.limit, config.seed)
    answers = generate_answers(model, items["question"].to_list(), items["item_id"].to_list(), config.generation,
                               cache=config.cache, cache_path=config.cache_path, progress=config.progress)
    judge = config.judge
    if judge is not None and config.progress and not judge.progress:
        judge = dataclasses.replace(judge, progress=True)
    if config.scorer == "overlap":
        scores = overlap_scores(items, answers)
    else:
        scores = judge_answers(items, answers, data.prompts, judge, config.empty_answers,
                               config.reference_free_classes, config.judge_model_path)
    per_item = items.join(answers, on="item_id", how="left", maintain_order="left").join(
        scores, on="item_id", how="left", maintain_order="left")
    summary = summarize_scores(per_item, ci=config.ci, n_boot=config.n_boot, seed=config.seed,
                               classes=list(dict.fromkeys(items["class"].to_list())))
    res = BelleEvalResult(model=str(model), model_id=model_identity(model), per_item=per_item, summary=summary,
                          config=config, data=data)
    if out_dir is not None:
        res.write(out_dir)
    return res


# ----------------------------------------------------------------------------- CLI

def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``cqia-nb eval belle`` options (also ``python -m cqia_nb.open_eval``)."""
    p.add_argument("--model", required=True, metavar="PATH", help="a model folder or a LoRA/QLoRA adapter folder")
    p.add_argument("--data", required=True, metavar="DIR_OR_FILE",
                   help="a BELLE-EVAL folder (eval_set.json + eval_prompt.json) or an eval_set file")
    p.add_argument("--prompts", metavar="FILE", help="judge prompts (default: eval_prompt.json beside the set)")
    j = p.add_mutually_exclusive_group()
    j.add_argument("--judge-url", metavar="URL", help="an OpenAI-compatible endpoint (…/v1; default $CQIA_JUDGE_URL)")
    j.add_argument("--judge-local", metavar="PATH", help="judge with a local HF model instead")
    j.add_argument("--no-judge", action="store_true", help="generate (and cache) answers only")
    j.add_argument("--overlap", action="store_true",
                   help="score offline by character-bigram F1 with the reference (a stand-in, not a judge)")
    p.add_argument("--judge-model", metavar="NAME", help="the endpoint's model name (default $CQIA_JUDGE_MODEL)")
    p.add_argument("--judge-concurrency", type=int, default=4, metavar="N")
    p.add_argument("--judge-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--out", metavar="DIR", help="folder for per_item.jsonl, summary.csv, run.json "
                                                "(default build/belle_eval/<model folder>)")
    p.add_argument("--limit", type=int, metavar="N", help="a seeded, class-stratified sample of N questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--dtype", help="float32, bfloat16, float16 (default: as loaded)")
    p.add_argument("--chat-template", help="chatml / qwen / a Jinja file (default: the tokenizer's own)")
    p.add_argument("--system", help="a system prompt for every question")
    p.add_argument("--empty-answers", choices=("zero", "judge"), default="zero",
                   help="empty answers: score 0 without the judge (default) or judge them")
    p.add_argument("--name", help="model name in the results store (default: the model folder's name)")
    p.add_argument("--base-model", help="results store: the base this model was tuned from")
    p.add_argument("--train-subset", help="results store: the CQIA subset it was tuned on")
    p.add_argument("--results", metavar="PATH", help="results store to append to (default build/results/results.jsonl)")
    p.add_argument("--no-results", action="store_true", help="do not append to the results store")
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``cqia-nb eval belle``; prints the summary table. Exit 0, or 2 on bad input."""
    from cqia_nb.results import append_results

    template = args.chat_template
    if template and Path(template).is_file():
        template = Path(template).read_text(encoding="utf-8")
    gen = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=args.device,
                             dtype=args.dtype, chat_template=template, system=args.system, seed=args.seed)
    judge: JudgeConfig | None
    local = None
    if args.no_judge or args.overlap:
        judge = None
    else:
        import os

        url = args.judge_url or os.environ.get("CQIA_JUDGE_URL", "").strip()
        if not args.judge_local and not url:
            raise BelleEvalError("no judge: give --judge-url URL (or set $CQIA_JUDGE_URL), --judge-local PATH, "
                                 "--overlap for the offline stand-in, or --no-judge to generate answers only")
        judge, local = judge_from(args.judge_local or url, args.judge_model, concurrency=args.judge_concurrency,
                                  timeout_s=args.judge_timeout, device=args.device)
    cfg = BelleEvalConfig(generation=gen, judge=judge, judge_model_path=local, empty_answers=args.empty_answers,
                          limit=args.limit, seed=args.seed, progress=True,
                          scorer="overlap" if args.overlap else "judge")
    name = args.name or Path(args.model).name
    out = Path(args.out) if args.out else Path("build") / "belle_eval" / name
    res = run_belle_eval(args.model, load_belle(args.data, args.prompts), cfg, out_dir=out)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="MARKDOWN", float_precision=3):
        print(res.summary)
    counts = ", ".join(f"{k} {v}" for k, v in res.counts().items())
    print(f"{res.per_item.height} questions: {counts}; outputs in {out}")
    if (judge is not None or args.overlap) and not args.no_results:
        path = append_results(res.results_rows(name, base_model=args.base_model, train_subset=args.train_subset),
                              args.results)
        print(f"results appended to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cqia_nb.open_eval --model PATH --data DIR …`` (same options as ``cqia-nb eval belle``)."""
    ap = configure_parser(argparse.ArgumentParser(prog="python -m cqia_nb.open_eval",
                                                  description=__doc__.split("\n")[0]))
    args = ap.parse_args(argv)
    try:
        return run_cli(args)
    except (BelleEvalError, FileNotFoundError, ValueError) as e:
        print(f"belle eval: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
