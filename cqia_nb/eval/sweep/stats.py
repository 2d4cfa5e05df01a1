"""A sweep's numbers: per training subset the mean over seeds with a Student-t interval, the
train × eval matrix, the ranking, "within noise" marks, the seed spread against the between-subset
spread, the answers, and the rows for the results store."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from cqia_nb.core.intervals import t_interval
from cqia_nb.core.results_schema import FRACTION_METRICS
from cqia_nb.eval.sweep.config import BENCHMARK, SweepConfig, SweepError
from cqia_nb.eval.sweep.data import SweepData

# ------------------------------------------------------------------------------------------- the sweep

@dataclass
class SweepResult:
    """A sweep's runs (finished ones: their ``result.json`` contents), the base's evaluation and
    what this call did. The statistics are methods; every frame is plain polars."""

    config: SweepConfig
    out_dir: Path
    data: SweepData
    base_model: str
    base: dict[str, Any]
    runs: list[dict[str, Any]]
    trained: list[str] = field(default_factory=list)      # run ids trained by this call
    skipped: list[str] = field(default_factory=list)      # run ids found finished
    pending: list[str] = field(default_factory=list)      # run ids not run (stop_after)
    seconds: dict[str, float] = field(default_factory=dict)
    store: Path | None = None

    # ---- frames
    def run_table(self) -> pl.DataFrame:
        """One row per run: subset, seed, steps, tokens, epochs over its subset, seconds (wall clock of
        training, evaluation and the whole run; ``cpu_s``: the process's CPU time for the run, close to
        the wall time an idle core would take when the machine is shared)."""
        return pl.DataFrame([{"train_subset": r["train_subset"], "seed": r["seed"], "steps": r["train"]["steps"],
                              "conversations": r["train"]["conversations"], "tokens": r["train"]["tokens"],
                              "epochs": round(r["train"]["epochs"], 2), "train_s": round(r["train"]["seconds"], 1),
                              "eval_s": round(r["eval_seconds"], 1), "wall_s": round(r["wall_seconds"], 1),
                              "cpu_s": round(r.get("cpu_seconds", float("nan")), 1)}
                             for r in self.runs])

    def heldout(self) -> pl.DataFrame:
        """Long frame: train_subset, seed, eval_subset, loss, base_loss, change (loss - base_loss)."""
        rows = []
        base = {s: v["loss"] for s, v in self.base["heldout"].items()}
        for r in self.runs:
            for s, v in r["heldout"].items():
                rows.append({"train_subset": r["train_subset"], "seed": r["seed"], "eval_subset": s,
                             "loss": v["loss"], "base_loss": base.get(s), "change": v["loss"] - base[s]})
        schema = {"train_subset": pl.String, "seed": pl.Int64, "eval_subset": pl.String, "loss": pl.Float64,
                  "base_loss": pl.Float64, "change": pl.Float64}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def scores(self) -> pl.DataFrame:
        """Long frame of every per-run score: train_subset, seed, metric, value. Metrics:
        ``heldout:<subset>``, ``heldout:mean`` (the mean over all subsets' held-out losses: the
        generalist's number), ``heldout:own_drop`` (the base's loss on the run's own subset minus the
        run's: how much tuning lowered it), ``mc:<benchmark>`` and
        ``belle:<metric>``."""
        rows = []
        for r in self.runs:
            key = {"train_subset": r["train_subset"], "seed": r["seed"]}
            hl = r["heldout"]
            for s, v in hl.items():
                rows.append({**key, "metric": f"heldout:{s}", "value": v["loss"]})
            if hl:
                rows.append({**key, "metric": "heldout:mean", "value": float(np.mean([v["loss"] for v in hl.values()]))})
                if r["train_subset"] in hl:
                    before = self.base["heldout"][r["train_subset"]]["loss"]
                    rows.append({**key, "metric": "heldout:own_drop", "value": before - hl[r["train_subset"]]["loss"]})
            for b, v in r["mc"].items():
                rows.append({**key, "metric": f"mc:{b}", "value": v["accuracy"]})
            if r.get("belle"):
                rows.append({**key, "metric": f"belle:{r['belle']['metric']}", "value": r["belle"]["value"]})
        return pl.DataFrame(rows, schema={"train_subset": pl.String, "seed": pl.Int64, "metric": pl.String,
                                          "value": pl.Float64}, orient="row")

    def summary(self, ci: float = 0.95) -> pl.DataFrame:
        """Per (train subset, metric): seeds, mean, sd and the Student-t interval over seeds."""
        return summarize(self.scores(), ci)

    def matrix(self, ci: float = 0.95) -> pl.DataFrame:
        """Train × eval held-out loss: mean over seeds, interval, the base's loss, the mean change
        and, per eval subset, ``best`` (lowest mean) and ``within_noise`` (interval overlaps the best's)."""
        h = self.heldout()
        s = summarize(h.rename({"eval_subset": "metric", "loss": "value"}).select("train_subset", "seed", "metric",
                                                                                  "value"), ci)
        base = h.group_by("eval_subset").agg(pl.col("base_loss").first())
        s = s.rename({"metric": "eval_subset"}).join(base, on="eval_subset", how="left")
        s = s.with_columns((pl.col("mean") - pl.col("base_loss")).alias("change"))
        return _mark_best(s, "eval_subset", lower_is_better=True)

    def ranking(self, metric: str = "heldout:mean", ci: float = 0.95) -> pl.DataFrame:
        """Training subsets ranked by ``metric`` (lower is better for losses, higher for scores),
        with the interval, ``within_noise`` of the best, and the subsets each one cannot be told from."""
        s = self.summary(ci).filter(pl.col("metric") == metric)
        if s.height == 0:
            raise SweepError(f"ranking: no scores for {metric!r}; metrics: {sorted(set(self.scores()['metric']))}")
        lower = lower_is_better(metric)
        s = _mark_best(s, "metric", lower_is_better=lower).sort("mean", descending=not lower)
        s = s.with_columns(pl.int_range(1, s.height + 1).alias("rank"))
        ivals = list(zip(s["train_subset"], s["ci_low"], s["ci_high"]))
        ties = []
        for name, lo, hi in ivals:
            ties.append(", ".join(o for o, olo, ohi in ivals if o != name and _overlap(lo, hi, olo, ohi)))
        return s.with_columns(pl.Series("within_noise_of", ties, dtype=pl.String)).select(
            "rank", "train_subset", "seeds", "mean", "sd", "ci_low", "ci_high", "best", "within_noise",
            "within_noise_of")

    def noise(self, ci: float = 0.95) -> pl.DataFrame:
        """Per metric: the seed-to-seed spread (pooled within-subset sd), the spread of the subset
        means (their sd, and max - min) and their ratio; ``separable`` pairs are those whose
        intervals do not overlap, out of all pairs of training subsets."""
        s = self.summary(ci)
        rows = []
        for metric, part in s.group_by("metric", maintain_order=True):
            within = math.sqrt(float(np.mean(np.square(part["sd"].fill_null(0).to_numpy())))) if part.height else None
            means = part["mean"].to_numpy()
            between = float(np.std(means, ddof=1)) if part.height > 1 else None
            iv = list(zip(part["ci_low"], part["ci_high"]))
            pairs = [(a, b) for i, a in enumerate(iv) for b in iv[i + 1:]]
            sep = sum(1 for a, b in pairs if not _overlap(a[0], a[1], b[0], b[1]))
            rows.append({"metric": metric[0] if isinstance(metric, tuple) else metric, "subsets": part.height,
                         "seed_sd": within, "between_sd": between,
                         "range": float(means.max() - means.min()) if part.height else None,
                         "between_over_seed": (between / within) if between is not None and within else None,
                         "separable_pairs": f"{sep}/{len(pairs)}"})
        return pl.DataFrame(rows, schema={"metric": pl.String, "subsets": pl.Int64, "seed_sd": pl.Float64,
                                          "between_sd": pl.Float64, "range": pl.Float64,
                                          "between_over_seed": pl.Float64, "separable_pairs": pl.String},
                            orient="row")

    def drops(self) -> pl.DataFrame:
        """Per run: its own subset's held-out loss before (the base) and after, and the drop."""
        h = self.heldout().filter(pl.col("train_subset") == pl.col("eval_subset"))
        return h.select("train_subset", "seed", pl.col("base_loss").alias("before"), pl.col("loss").alias("after"),
                        (pl.col("base_loss") - pl.col("loss")).alias("drop")).sort("train_subset", "seed")

    def answers(self, seed: int | None = None) -> pl.DataFrame:
        """The probe prompts (rows) answered by the base and by each training subset's run of
        ``seed`` (default: the first seed), beside the reference answer."""
        seed = self.config.seeds[0] if seed is None else seed
        probes = self.base.get("probes") or []
        cols: dict[str, list[str]] = {"subset": [p["subset"] for p in probes], "prompt": [p["prompt"] for p in probes],
                                      "reference": [p["reference"] for p in probes],
                                      "base": [p["answer"] for p in probes]}
        for r in self.runs:
            if r["seed"] == seed and r.get("probes"):
                cols[r["train_subset"]] = [p["answer"] for p in r["probes"]]
        return pl.DataFrame(cols)

    def answer_style(self) -> pl.DataFrame:
        """How the answers look: per model (base, each training subset over its seeds), the mean
        answer length in characters on the probes and on BELLE-EVAL, beside each subset's own
        reference answers (``reference_chars``: mean length of its held-out answers)."""
        ref = {s: float(np.mean([len(next((m["content"] for m in c if m["role"] == "assistant"), "")) for c in convs]))
               for s, convs in self.data.validation.items()}
        rows = [{"model": "base", "probe_chars": _mean_len(self.base.get("probes")),
                 "belle_chars": (self.base.get("belle") or {}).get("answer_chars"), "reference_chars": None}]
        for s in self.data.names:
            rs = [r for r in self.runs if r["train_subset"] == s]
            if not rs:
                continue
            bc = [r["belle"]["answer_chars"] for r in rs if r.get("belle") and r["belle"].get("answer_chars") is not None]
            rows.append({"model": s, "probe_chars": float(np.mean([_mean_len(r.get("probes")) for r in rs])),
                         "belle_chars": float(np.mean(bc)) if bc else None, "reference_chars": ref.get(s)})
        return pl.DataFrame(rows, schema={"model": pl.String, "probe_chars": pl.Float64, "belle_chars": pl.Float64,
                                          "reference_chars": pl.Float64}, orient="row")

    # ---- the results store
    def results_rows(self, ci: float = 0.95) -> list[dict[str, Any]]:
        """Rows per training subset (model ``<sweep>/<subset>``): the mean over seeds with the
        t-interval (n = seeds) for every held-out loss and benchmark score."""
        rows = []
        for r in self.summary(ci).iter_rows(named=True):
            kind, _, sub = r["metric"].partition(":")
            if kind == "heldout":
                bench, subset, metric = BENCHMARK, sub, "loss_drop" if sub == "own_drop" else "loss"
            elif kind == "mc":
                bench, subset, metric = sub, "overall", "accuracy"
            else:
                bench, subset, metric = "belle_eval", "overall", sub
            lo, hi = r["ci_low"], r["ci_high"]
            if metric in FRACTION_METRICS and lo is not None:  # a t interval knows no bounds; a fraction does
                lo, hi = max(0.0, lo), min(1.0, hi)
            rows.append({"model": f"{self.config.name}/{r['train_subset']}", "benchmark": bench, "subset": subset,
                         "metric": metric, "value": r["mean"], "ci_low": lo, "ci_high": hi,
                         "n": r["seeds"], "shots": self.config.eval.shots if kind == "mc" else None,
                         "base_model": self.base_model, "train_subset": r["train_subset"],
                         "notes": f"mean of {r['seeds']} seeds, {int(ci * 100)}% t interval over seeds; "
                                  f"budget {self.config.budget_tokens} tokens; profile {self.config.profile}"})
        return rows


def _mean_len(probes: Sequence[Mapping[str, Any]] | None) -> float | None:
    if not probes:
        return None
    return float(np.mean([len(p["answer"]) for p in probes]))


def lower_is_better(metric: str) -> bool:
    """Held-out losses rank low-first; drops, accuracies and scores high-first."""
    return metric.startswith("heldout:") and not metric.endswith("_drop")


def _overlap(lo1: float | None, hi1: float | None, lo2: float | None, hi2: float | None) -> bool:
    """Whether two intervals overlap; a missing interval (one seed) overlaps everything: unknown noise."""
    if None in (lo1, hi1, lo2, hi2):
        return True
    return lo1 <= hi2 and lo2 <= hi1


def summarize(scores: pl.DataFrame, ci: float = 0.95) -> pl.DataFrame:
    """Per (train_subset, metric) of a long ``scores`` frame: seeds, mean, sd, ci_low, ci_high
    (Student t over seeds; null with one seed)."""
    rows = []
    for (subset, metric), part in scores.group_by(["train_subset", "metric"], maintain_order=True):
        v = part["value"].to_numpy()
        lo, hi = t_interval(v, ci)
        rows.append({"train_subset": subset, "metric": metric, "seeds": int(v.size), "mean": float(v.mean()),
                     "sd": float(v.std(ddof=1)) if v.size > 1 else None, "ci_low": lo, "ci_high": hi})
    return pl.DataFrame(rows, schema={"train_subset": pl.String, "metric": pl.String, "seeds": pl.Int64,
                                      "mean": pl.Float64, "sd": pl.Float64, "ci_low": pl.Float64,
                                      "ci_high": pl.Float64}, orient="row")


def _mark_best(s: pl.DataFrame, by: str, lower_is_better: bool) -> pl.DataFrame:
    """Add ``best`` (the best mean within each ``by`` group) and ``within_noise`` (the row's
    interval overlaps the best's; the best itself is true)."""
    best, noise = [], []
    groups = {k: part for k, part in s.group_by(by, maintain_order=True)}
    lookup = {}
    for k, part in groups.items():
        pick = part.sort("mean", descending=not lower_is_better).row(0, named=True)
        lookup[k[0] if isinstance(k, tuple) else k] = pick
    for r in s.iter_rows(named=True):
        b = lookup[r[by]]
        is_best = r["train_subset"] == b["train_subset"]
        best.append(is_best)
        noise.append(is_best or _overlap(r["ci_low"], r["ci_high"], b["ci_low"], b["ci_high"]))
    return s.with_columns(pl.Series("best", best, dtype=pl.Boolean), pl.Series("within_noise", noise, dtype=pl.Boolean))
