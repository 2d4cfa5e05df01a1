"""Seeded mixtures by ratio or token budget, and the stratified train/validation split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from cqia_nb.build.spec import MixtureSpec, SpecError


def rng_for(seed: int, *purpose: str) -> np.random.Generator:
    """A generator for one purpose: SHA-256 of (seed, purpose...), independent of PYTHONHASHSEED."""
    h = hashlib.sha256("\x1f".join([str(int(seed)), *purpose]).encode("utf-8")).digest()
    return np.random.default_rng(np.frombuffer(h, dtype=np.uint64))


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total`` with each within 1 of its quota (ties: earlier first)."""
    base = np.floor(quotas).astype(np.int64)
    rest = int(total - base.sum())
    if rest > 0:
        order = np.lexsort((np.arange(quotas.size), -(quotas - base)))
        base[order[:rest]] += 1
    return base


def assign_split(frame: pl.DataFrame, validation: float, seed: int, strata: str = "source_file") -> pl.DataFrame:
    """record_id -> split ("train" / "validation"), stratified by ``strata`` (module docstring)."""
    ids = frame.select("record_id", strata).unique("record_id", keep="first", maintain_order=True)
    if validation <= 0 or ids.height == 0:
        return ids.select("record_id", pl.lit("train").alias("split"))
    groups = ids.group_by(strata, maintain_order=True).agg(pl.col("record_id")).sort(strata)
    sizes = groups["record_id"].list.len().to_numpy()
    counts = _largest_remainder(sizes * validation, int(round(validation * ids.height)))
    val_ids: list[str] = []
    for (key, members), k in zip(groups.iter_rows(), counts.tolist()):
        if k:
            perm = rng_for(seed, "split", str(key)).permutation(len(members))[:k]
            val_ids.extend(members[i] for i in sorted(perm.tolist()))
    return ids.select("record_id").with_columns(
        pl.when(pl.col("record_id").is_in(val_ids)).then(pl.lit("validation")).otherwise(pl.lit("train"))
        .alias("split"))


@dataclass
class PartReport:
    subset: str
    available_records: int
    available_tokens: int
    target: str              # "N records" / "N tokens"
    records: int             # rows drawn
    distinct: int            # distinct records among them
    tokens: int
    upsampled: int           # rows drawn with replacement


def _fill(tokens: np.ndarray, order: np.ndarray, budget: int) -> tuple[list[int], int]:
    """First fit: walk ``order`` and take each record whose tokens still fit in the budget."""
    taken, used = [], 0
    for i, t in zip(order.tolist(), tokens[order].tolist()):
        if used + t <= budget:
            taken.append(i)
            used += t
            if used == budget:
                break
    return taken, used


def _draw_tokens(tokens: np.ndarray, budget: int, rng: np.random.Generator, allow_upsample: bool,
                 where: str) -> np.ndarray:
    """Records in a seeded random order, each taken if it still fits (total <= budget); past the
    subset's own tokens, further draws with replacement when ``allow_upsample``."""
    n = tokens.size
    total = int(tokens.sum())
    perm = rng.permutation(n)
    if budget <= total:
        taken, _ = _fill(tokens, perm, budget)
        return np.sort(np.array(taken, dtype=np.int64))
    if not allow_upsample:
        raise SpecError(f"{where}: budget of {budget:,} tokens but the subset holds {total:,} tokens in {n:,} records; "
                        "lower the budget or set `allow_upsample: true`")
    left = budget - total
    extra: list[int] = []
    smallest = int(tokens.min()) if n else 0
    while n and left >= smallest:
        draw = rng.integers(0, n, size=int(left / max(1.0, float(tokens.mean()))) + 16)
        got, used = _fill(tokens, draw, left)
        if not got:
            break
        extra.extend(got)
        left -= used
    return np.concatenate([np.arange(n), np.array(extra, dtype=np.int64)])


def _draw_records(n: int, count: int, rng: np.random.Generator, allow_upsample: bool, where: str) -> np.ndarray:
    if count <= n:
        return np.sort(rng.permutation(n)[:count])
    if not allow_upsample:
        raise SpecError(f"{where}: needs {count:,} records but the subset has {n:,}; lower `size`, change the "
                        "ratios, or set `allow_upsample: true`")
    return np.concatenate([np.arange(n), rng.integers(0, n, size=count - n)])


def _pools(fr: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    if "split" not in fr.columns:
        return [("train", fr)]
    return [(name, fr.filter(pl.col("split") == name)) for name in ("train", "validation")]


def build_mixture(spec: MixtureSpec, subsets: dict[str, pl.DataFrame], seed: int
                  ) -> tuple[pl.DataFrame, list[PartReport]]:
    """Sample the parts of a mixture (``n_tokens`` is needed for token budgets); rows shuffled.

    Each part is drawn separately from its train and its validation records, in proportion to
    them (records, or tokens under a budget), so the mixture's validation split holds every part
    in the same share as the part's subset does: the split stays stratified by subset.
    """
    frames, reports = [], []
    parts = spec.parts
    sizes = []
    for i, p in enumerate(parts, start=1):
        fr = subsets.get(p.subset)
        if fr is None or fr.height == 0:
            raise SpecError(f"{spec.entry} part {i}: subset {p.subset!r} is empty on this input; "
                            "remove the part or change the subset")
        sizes.append(fr.height)
    mode = spec.mode
    counts = np.zeros(len(parts), dtype=np.int64)
    if mode == "ratio_tokens":
        ratios = np.array([p.ratio for p in parts], dtype=float)
        budgets = _largest_remainder(ratios * spec.total_tokens, int(spec.total_tokens))  # type: ignore[arg-type]
    if mode == "ratio_records":
        ratios = np.array([p.ratio for p in parts], dtype=float)
        size = spec.size if spec.size is not None else int(np.floor(min(np.array(sizes) / ratios) + 1e-9))
        counts = _largest_remainder(ratios * size, size)
    for i, p in enumerate(parts, start=1):
        fr = subsets[p.subset]
        where = f"{spec.entry} part {i} ({p.subset})"
        drawn_parts = []
        if mode in ("tokens", "ratio_tokens"):
            if "n_tokens" not in fr.columns:
                raise SpecError(f"{where}: token budgets need token counts (format the records first)")
            budget = int(p.tokens if mode == "tokens" else budgets[i - 1])  # type: ignore[arg-type]
            total = int(fr["n_tokens"].sum())
            if budget > total and not spec.allow_upsample:
                raise SpecError(f"{where}: budget of {budget:,} tokens but the subset holds {total:,} tokens in "
                                f"{fr.height:,} records; lower the budget or set `allow_upsample: true`")
            pools = [(n, q) for n, q in _pools(fr) if q.height]
            shares = np.array([int(q["n_tokens"].sum()) for _, q in pools], dtype=float)
            sub = _largest_remainder(budget * shares / shares.sum(), budget) if shares.sum() else np.zeros(len(pools), np.int64)
            for (name, q), b in zip(pools, sub.tolist()):
                rng = rng_for(seed, "mixture", spec.name, p.subset, name)
                idx = _draw_tokens(q["n_tokens"].to_numpy(), int(b), rng, spec.allow_upsample, where)
                drawn_parts.append((q, idx))
            target = f"{budget:,} tokens"
        else:
            c = int(counts[i - 1])
            if c > fr.height and not spec.allow_upsample:
                raise SpecError(f"{where}: needs {c:,} records but the subset has {fr.height:,}; lower `size`, "
                                "change the ratios, or set `allow_upsample: true`")
            pools = [(n, q) for n, q in _pools(fr) if q.height]
            sub = _largest_remainder(np.array([c * q.height / fr.height for _, q in pools]), c)
            for (name, q), k in zip(pools, sub.tolist()):
                rng = rng_for(seed, "mixture", spec.name, p.subset, name)
                drawn_parts.append((q, _draw_records(q.height, int(k), rng, spec.allow_upsample, where)))
            target = f"{c:,} records"
        pieces = []
        for q, idx in drawn_parts:
            rows = q.with_row_index("_i").with_columns(pl.col("_i").cast(pl.Int64))
            pieces.append(pl.DataFrame({"_i": pl.Series(idx, dtype=pl.Int64)})
                          .join(rows, on="_i", how="left", maintain_order="left").drop("_i"))
        drawn = pl.concat(pieces, how="vertical_relaxed").with_columns(
            pl.int_range(0, pl.len()).over("record_id").cast(pl.Int64).alias("sample"),
            pl.lit(p.subset).alias("subset"))
        tok = int(drawn["n_tokens"].sum()) if "n_tokens" in drawn.columns else 0
        reports.append(PartReport(p.subset, fr.height, int(fr["n_tokens"].sum()) if "n_tokens" in fr.columns else 0,
                                  target, drawn.height, drawn["record_id"].n_unique(), tok,
                                  int((drawn["sample"] > 0).sum())))
        frames.append(drawn)
    mix = pl.concat(frames, how="vertical_relaxed")
    order = rng_for(seed, "mixture-order", spec.name).permutation(mix.height)
    return mix[order.tolist()], reports
