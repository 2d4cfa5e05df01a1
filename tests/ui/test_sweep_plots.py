"""The sweep's figures: the heat map carries the numbers and the ★ / ≈ marks, the ranking splits
within-noise from distinguishable subsets, the seed figure shows every seed."""

from __future__ import annotations

import polars as pl
import pytest

from cqia_nb.ui.plots import save_figure
from cqia_nb.ui.sweep_plots import BEST_MARK, NOISE_MARK, sweep_heatmap, sweep_ranking, sweep_seeds


def _matrix() -> pl.DataFrame:
    rows = []
    # column "group.a": a is best, b overlaps it, c does not; column "group.b": b best alone
    spec = {("group.a", "group.a"): (3.0, 2.9, 3.1, True, True), ("group.b", "group.a"): (3.05, 2.95, 3.2, False, True),
            ("group.c", "group.a"): (4.0, 3.9, 4.1, False, False), ("group.a", "group.b"): (4.4, 4.3, 4.5, False, False),
            ("group.b", "group.b"): (3.5, 3.4, 3.6, True, True), ("group.c", "group.b"): (4.2, 4.1, 4.3, False, False)}
    for (tr, ev), (m, lo, hi, best, noise) in spec.items():
        rows.append({"train_subset": tr, "eval_subset": ev, "seeds": 3, "mean": m, "sd": 0.05, "ci_low": lo,
                     "ci_high": hi, "base_loss": 5.0, "change": m - 5.0, "best": best, "within_noise": noise})
    return pl.DataFrame(rows)


def test_heatmap_numbers_and_marks(tmp_path):
    fig = sweep_heatmap(_matrix(), order=["group.a", "group.b", "group.c"])
    h = fig.data[0]
    assert list(h.y) == ["a", "b", "c"] and list(h.x) == ["a", "b"]
    assert h.z[0][0] == pytest.approx(-2.0) and h.z[2][1] == pytest.approx(-0.8)
    assert h.text[0][0].endswith(BEST_MARK) and "±0.10" in h.text[0][0]
    assert h.text[1][0].endswith(NOISE_MARK) and not h.text[2][0].endswith((BEST_MARK, NOISE_MARK))
    assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert "3 seeds" in fig.layout.title.text
    loss = sweep_heatmap(_matrix(), value="mean")
    assert loss.data[0].z[0][0] == pytest.approx(3.0)
    with pytest.raises(ValueError):
        sweep_heatmap(_matrix(), value="drop")
    assert save_figure(fig, "sweep_heat", tmp_path).is_file()


def test_ranking_splits_noise_from_distinguishable():
    r = pl.DataFrame({"rank": [1, 2, 3], "train_subset": ["group.a", "group.b", "group.c"], "seeds": [3, 3, 3],
                      "mean": [3.0, 3.1, 4.0], "sd": [0.1] * 3, "ci_low": [2.8, 2.9, 3.8], "ci_high": [3.2, 3.3, 4.2],
                      "best": [True, False, False], "within_noise": [True, True, False],
                      "within_noise_of": ["group.b", "group.a", ""]})
    fig = sweep_ranking(r)
    by_name = {t.name: t for t in fig.data}
    noise = next(t for n, t in by_name.items() if n.startswith(NOISE_MARK))
    other = next(t for n, t in by_name.items() if n.startswith("distinguishable"))
    assert list(noise.y) == ["a", "b"] and list(other.y) == ["c"]
    assert list(noise.error_x.array) == pytest.approx([0.2, 0.2]) and BEST_MARK in noise.text[0]
    assert fig.layout.xaxis.title.text


def test_seed_figure_shows_every_seed():
    s = pl.DataFrame({"train_subset": ["group.a"] * 3 + ["group.b"] * 3, "seed": [0, 1, 2] * 2,
                      "metric": ["heldout:mean"] * 6, "value": [3.0, 3.1, 2.9, 4.0, 4.2, 3.8]})
    fig = sweep_seeds(s, "heldout:mean")
    bars, dots = fig.data
    assert list(bars.y) == pytest.approx([3.0, 4.0]) and len(dots.y) == 6
    with pytest.raises(ValueError, match="no scores"):
        sweep_seeds(s, "mc:ceval")
