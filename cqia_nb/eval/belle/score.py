"""Scoring answers: BELLE's judge prompts through an LLM judge, or the offline overlap F1."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import polars as pl

from cqia_nb.core.intervals import bootstrap_mean_ci
from cqia_nb.eval.belle.data import (
    REFERENCE_FREE_CLASSES,
    SCORE_SCHEMA,
    SUMMARY_SCHEMA,
    BelleEvalError,
    normalize_class,
)
from cqia_nb.models.judge import JudgeConfig, judge_prompts

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
                           attempts=r["attempts"], judge_cached=r["cached"], score_source=r["score_source"])
    return pl.DataFrame(rows, schema=SCORE_SCHEMA)


def summarize_scores(per_item: pl.DataFrame, ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
                     classes: Sequence[str] | None = None) -> pl.DataFrame:
    """Per class (``classes`` order, default first appearance), then ``overall`` and ``macro``:
    questions ``n``, ``scored`` (judged), ``empty`` (scored 0), ``failed`` (everything else),
    ``mean`` over scored + empty, bootstrap ``ci_low``/``ci_high`` (:data:`SUMMARY_SCHEMA`)."""

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
