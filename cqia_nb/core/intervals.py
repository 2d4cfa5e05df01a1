"""Confidence intervals, one definition each: bootstrap of a proportion, bootstrap of a mean, Wilson, Student t."""

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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t cumulative distribution function with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def t_interval(values: Sequence[float] | np.ndarray, ci: float = 0.95) -> tuple[float | None, float | None]:
    """Student-t confidence interval of the mean of a few values (e.g. one number per seed):
    ``mean ± t_{(1+ci)/2, n-1} · s / √n``. ``(None, None)`` for fewer than two values (no spread
    to measure). With 3 seeds the t multiplier is 4.30: a wide interval, honestly so."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return None, None
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    m = float(v.mean())
    half = t_quantile(1 - (1 - ci) / 2, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m - half, m + half
