"""Confidence intervals, one definition each: bootstrap of a proportion, bootstrap of a mean, Wilson."""

from __future__ import annotations

import math
import zlib
from typing import Any, Sequence

import numpy as np


def bootstrap_ci(correct: int, n: int, *, replicates: int = 1000, ci: float = 0.95, seed: int = 0,
                 key: str = "") -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of an accuracy ``correct / n``.

    Resampling the n outcomes with replacement makes the resampled number correct
    Binomial(n, correct/n), drawn here directly. The generator is seeded by ``seed`` and ``key``
    (the group's name), so each group's interval is reproducible on its own.
    """
    if n <= 0:
        return None, None
    if replicates <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    draws = rng.binomial(n, correct / n, size=replicates) / n
    lo, hi = np.quantile(draws, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
                      strata: Sequence[Any] | None = None) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of ``values`` (``(None, None)`` when empty).

    With ``strata`` (one label per value) each resample draws within every stratum, and the
    statistic is the *mean of the stratum means* (a macro average). Seeded: the same inputs give
    the same interval.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return None, None
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    if strata is None:
        stats = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    else:
        labels = np.asarray(list(strata), dtype=object)
        if labels.size != v.size:
            raise ValueError(f"{labels.size} strata labels for {v.size} values")
        groups = [v[labels == g] for g in dict.fromkeys(labels.tolist())]
        stats = np.mean([g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1) for g in groups], axis=0)
    a = (1 - ci) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return float(lo), float(hi)


def wilson_interval(successes: float, n: float, ci: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval for a proportion ``successes / n`` (``(None, None)`` for n = 0).

    ``successes`` may be fractional (ties counted as half a win): the interval is then the usual
    approximation with the same formula."""
    if n <= 0:
        return None, None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
