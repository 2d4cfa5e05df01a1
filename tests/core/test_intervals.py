"""Student-t quantiles and intervals (cqia_nb.core.intervals) against printed tables."""

from __future__ import annotations

import math

import pytest

from cqia_nb.core.intervals import t_cdf, t_interval, t_quantile


@pytest.mark.parametrize("df, q975, q995", [(1, 12.706, 63.657), (2, 4.303, 9.925), (4, 2.776, 4.604),
                                            (9, 2.262, 3.250), (29, 2.045, 2.756), (120, 1.980, 2.617)])
def test_t_quantiles_match_the_table(df, q975, q995):
    assert t_quantile(0.975, df) == pytest.approx(q975, abs=1e-3)
    assert t_quantile(0.995, df) == pytest.approx(q995, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-q975, abs=1e-3)


def test_t_cdf_is_symmetric_and_monotone():
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    assert t_cdf(-2.0, 5) == pytest.approx(0.0510, abs=1e-4)
    assert t_cdf(1.0, 7) + t_cdf(-1.0, 7) == pytest.approx(1.0)
    xs = [t_cdf(x, 2.5) for x in (-3, -1, 0, 0.5, 4)]
    assert xs == sorted(xs)


def test_t_interval_of_three_seeds():
    lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert lo == pytest.approx(2 - half, abs=1e-5) and hi == pytest.approx(2 + half, abs=1e-5)
    assert t_interval([5.0]) == (None, None)             # one seed: no spread to measure
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)     # identical seeds: a point
    lo90, hi90 = t_interval([1.0, 2.0, 3.0], ci=0.90)
    assert hi90 - lo90 < hi - lo
    with pytest.raises(ValueError):
        t_interval([1.0, 2.0], ci=95)
