"""Blind pairwise human evaluation: pairing two models' answers, win rates with Wilson intervals."""

from __future__ import annotations

from typing import Any, Sequence

import polars as pl

from cqia_nb.core.decisions import ITEM_COLUMNS, win_rate  # noqa: F401  (win_rate: re-exported)


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


def win_rate_row(stats: dict[str, Any], base_model: str | None = None, train_subset: str | None = None,
                 notes: str = "") -> dict[str, Any]:
    """A :func:`win_rate` result as a row for :func:`cqia_nb.eval.results.append_results`
    (benchmark ``human_pairwise``, subset ``vs <opponent>``, metric ``win_rate``)."""
    if stats["win_rate"] is None:
        raise ValueError(f"no votes for {stats['model']} vs {stats['opponent']}: nothing to store")
    how = (f"{stats['wins']} wins, {stats['losses']} losses, {stats['ties']} ties; ties counted "
           f"{'as half' if stats['ties_counted'] == 'half' else 'out'}; {stats['interval']}")
    return {"model": stats["model"], "benchmark": "human_pairwise", "subset": f"vs {stats['opponent']}",
            "metric": "win_rate", "value": stats["win_rate"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
            "n": stats["n"], "shots": None, "base_model": base_model, "train_subset": train_subset,
            "notes": "; ".join(x for x in (notes, how) if x)}
