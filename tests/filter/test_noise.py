"""Tests of the noise benchmark (cqia_nb.filter.noise): injection and scoring."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest

from cqia_nb.filter.framework import Filter, PipelineConfig, PipelineResult, register, run_pipeline
from cqia_nb.filter.noise import (
    NOISE_KINDS,
    S2T,
    NoiseConfig,
    caught_by_kind,
    inject_noise,
    noise_counts,
    score_filters,
)

ROOT = Path(__file__).resolve().parents[2]
TEXT = ("instruction", "input", "output")


def make_clean(n: int = 40) -> pl.DataFrame:
    rows = []
    for i in range(n):
        rows.append({
            "record_id": f"wiki/f.jsonl:{i + 1}", "config": "wiki", "source_file": "wiki/f.jsonl",
            "line": i + 1, "instruction": f"请介绍一下第{i}个国家的经济发展情况？",
            "input": "" if i % 3 else "这是补充说明。",
            "output": (f"第{i}个国家的经济发展很快，这个问题们经常讨论。近年来工业和服务业都有明显进步，"
                       "人们的生活水平不断提高。专家认为，未来还会继续增长。"),
            "task_type_major": ["问答"], "task_type_minor": [], "domain": ["经济"], "metadata": "",
            "answer_from": "human", "human_verified": True, "copyright": "", "extra": "",
        })
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    return make_clean()


@pytest.fixture(scope="module")
def noisy(clean: pl.DataFrame) -> pl.DataFrame:
    return inject_noise(clean, NoiseConfig(rate=0.1, seed=7))


# ----------------------------------------------------------------------------- injection

def test_same_seed_same_bytes_other_seed_differs(clean):
    a = inject_noise(clean, NoiseConfig(rate=0.1, seed=7)).write_ndjson()
    b = inject_noise(clean, NoiseConfig(rate=0.1, seed=7)).write_ndjson()
    c = inject_noise(clean, NoiseConfig(rate=0.1, seed=8)).write_ndjson()
    assert a == b
    assert a != c


def test_same_bytes_across_processes_and_hash_seeds(tmp_path, clean):
    # Nothing may depend on hash() (randomised per process for str).
    src = tmp_path / "clean.parquet"
    clean.write_parquet(src)
    code = ("import hashlib, sys, polars as pl; from cqia_nb.filter.noise import NoiseConfig, inject_noise; "
            "f = inject_noise(pl.read_parquet(sys.argv[1]), NoiseConfig(rate=0.1, seed=7)); "
            "print(hashlib.sha256(f.write_ndjson().encode()).hexdigest())")
    digests = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code, str(src)], env=env, capture_output=True,
                             text=True, check=True, timeout=120)
        digests.add(out.stdout.strip())
    here = hashlib.sha256(inject_noise(clean, NoiseConfig(rate=0.1, seed=7)).write_ndjson().encode()).hexdigest()
    assert digests == {here}


def test_requested_counts_per_kind(clean, noisy):
    assert noise_counts(noisy) == {k: 4 for k in NOISE_KINDS}  # round(0.1 * 40)
    assert noisy.height == clean.height + 4 * len(NOISE_KINDS)
    f = inject_noise(clean, NoiseConfig(kinds=("url", "html"), rate=0.01, counts={"html": 7}))
    assert noise_counts(f) == {"url": 1, "html": 7}  # at least 1 for rate > 0; counts override
    # more than there are records: every record is used before any is used twice
    g = inject_noise(clean, NoiseConfig(kinds=("email",), counts={"email": 50}))
    src = g.filter(pl.col("noise_kind") == "email")["noise_of"]
    assert src.len() == 50 and src.head(40).n_unique() == 40


def test_record_ids_unique_named_and_clean_part_unchanged(clean, noisy):
    assert noisy["record_id"].n_unique() == noisy.height
    noise = noisy.filter(pl.col("noise_kind").is_not_null())
    for kind in NOISE_KINDS:
        part = noise.filter(pl.col("noise_kind") == kind)
        expected = [f"{src}#noise-{kind}-{k}" for k, src in enumerate(part["noise_of"].to_list())]
        assert part["record_id"].to_list() == expected
    assert set(noise["noise_of"].to_list()) <= set(clean["record_id"].to_list())
    head = noisy.head(clean.height)
    assert head.drop("noise_kind", "noise_of", "noise_detail").equals(clean)
    assert head["noise_kind"].null_count() == clean.height
    # provenance columns of the copies are the source's
    src = clean.rename({c: f"src_{c}" for c in clean.columns})
    j = noise.join(src, left_on="noise_of", right_on="src_record_id")
    for c in ("config", "source_file", "line", "domain", "human_verified"):
        assert (j[c] == j[f"src_{c}"]).all(), c


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


CHECKS = {
    "ad": lambda r, s: re.search(r"加微信|扫码关注|关注公众号|限时秒杀|诚招代理|淘宝搜索|私信小编|进群领取", r["output"]),
    "url": lambda r, s: "http://" in r["output"] or "https://" in r["output"],
    "email": lambda r, s: re.search(r"[A-Za-z0-9._]+@[A-Za-z0-9-]+\.[a-z]{2,}", r["output"]),
    "phone": lambda r, s: re.search(r"1[3-9]\d[- ]?\d{4}[- ]?\d{4}|0\d{2,3}-[2-9]\d{7}|400-\d{3}-\d{4}", r["output"]),
    "qq_wechat": lambda r, s: re.search(r"QQ(群)?：[1-9]\d{5,9}|微信号：[a-z]\w{5,}|vx：[a-z]\w{5,}", r["output"]),
    "exact_duplicate": lambda r, s: all(r[c] == s[c] for c in TEXT),
    "near_duplicate": lambda r, s: 1 <= sum(_levenshtein(r[c], s[c]) for c in TEXT) <= 4,
    "traditional_chars": lambda r, s: (any(ch in S2T.values() for ch in r["output"])
                                       and not any(ch in S2T for c in TEXT for ch in r[c])),
    "garbage_chars": lambda r, s: r["output"] != s["output"] and (
        re.search(r"[\u0080-\u00ff\ufffd□■◆◇▲△●○★☆※¤§¶†‡€™œž]", r["output"])
        or r["noise_detail"].startswith("mojibake")),
    "truncated": lambda r, s: (len(r["output"]) < len(s["output"]) and s["output"].startswith(r["output"].rstrip("的"))
                               and r["output"][-1] not in "。！？，.!?"),
    "repetition": lambda r, s: re.search(r"(.{2,17})\1{7,}", r["output"], re.S),
    "html": lambda r, s: re.search(r"<p>|<br/>|&nbsp;|<div ", r["output"]),
    "empty_output": lambda r, s: r["output"].strip(" \n\u200b\u3000") == "",
    "answer_repeats_question": lambda r, s: r["output"] in (s["instruction"], s["instruction"][:-1] + "。"),
    "short_answer": lambda r, s: 2 <= len(r["output"].rstrip("。")) <= 4 and s["output"].startswith(r["output"].rstrip("。")),
    "placeholder": lambda r, s: r["output"] in ("无", "略", "。", "同上", "见上"),
    "repeated_tail": lambda r, s: r["output"].startswith(s["output"].rstrip()) and re.search(r"(.{8,})\1\1\Z", r["output"], re.S),
    "near_dup_subst": lambda r, s: 1 <= sum(a != b for c in TEXT for a, b in zip(r[c], s[c])) <= 3
                                   and all(len(r[c]) == len(s[c]) for c in TEXT),
}


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_every_kind_is_really_present(kind, clean, noisy):
    by_id = {r["record_id"]: r for r in clean.iter_rows(named=True)}
    part = noisy.filter(pl.col("noise_kind") == kind)
    assert part.height == 4
    for r in part.iter_rows(named=True):
        s = by_id[r["noise_of"]]
        assert CHECKS[kind](r, s), (kind, r["output"], r["noise_detail"])
        if kind != "exact_duplicate":
            assert any(r[c] != s[c] for c in TEXT), (kind, "variant equals its source")
        assert r["noise_detail"]


def test_duplicate_kinds_do_not_share_sources(noisy):
    exact = set(noisy.filter(pl.col("noise_kind") == "exact_duplicate")["noise_of"].to_list())
    near = set(noisy.filter(pl.col("noise_kind") == "near_duplicate")["noise_of"].to_list())
    subst = set(noisy.filter(pl.col("noise_kind") == "near_dup_subst")["noise_of"].to_list())
    assert exact and near and subst and not exact & near and not subst & (exact | near)


def test_replace_sources(clean):
    f = inject_noise(clean, NoiseConfig(kinds=("url", "exact_duplicate", "html"), rate=0.1, replace_sources=True))
    noise = f.filter(pl.col("noise_kind").is_not_null())
    srcs = noise["noise_of"].to_list()
    assert len(set(srcs)) == len(srcs) == 12          # drawn without overlap
    present = set(f["record_id"].to_list())
    for kind, src in zip(noise["noise_kind"].to_list(), srcs):
        assert (src in present) == (kind == "exact_duplicate")
    assert f.height == clean.height - 8 + 12
    with pytest.raises(ValueError, match="replace_sources"):
        inject_noise(clean, NoiseConfig(rate=0.5, replace_sources=True))


def test_shuffle_keeps_the_records(clean):
    a = inject_noise(clean, NoiseConfig(rate=0.05, seed=3))
    b = inject_noise(clean, NoiseConfig(rate=0.05, seed=3, shuffle=True))
    assert a["record_id"].to_list() != b["record_id"].to_list()
    assert a.sort("record_id").equals(b.sort("record_id"))


def test_opencc_backend_when_available(clean):
    pytest.importorskip("opencc")
    f = inject_noise(clean, NoiseConfig(kinds=("traditional_chars",), counts={"traditional_chars": 2},
                                        traditional_backend="opencc"))
    out = f.filter(pl.col("noise_kind") == "traditional_chars")["output"].to_list()
    assert all("這" in o and "們" in o for o in out)


def test_bad_config_and_input(clean, noisy):
    with pytest.raises(ValueError, match="unknown noise kind"):
        NoiseConfig(kinds=("urls",))
    with pytest.raises(ValueError, match="rate"):
        NoiseConfig(rate=2)
    with pytest.raises(ValueError, match="already"):
        inject_noise(noisy)
    with pytest.raises(ValueError, match="unique"):
        inject_noise(pl.concat([clean, clean.head(1)]))
    with pytest.raises(ValueError, match="column"):
        inject_noise(clean.drop("output"))


# ----------------------------------------------------------------------------- scoring

def _hand_made() -> tuple[PipelineResult, pl.DataFrame]:
    """6 clean records c1..c6 and 6 noisy ones; two steps, drops chosen by hand:

    url   drops u1 (noisy: TP) and c2 (clean, source of the url variant u2: FP)
    dedup drops e1 (exact copy: TP), c4 (original of e2, e2 kept: TP credited to e2),
          n1 (near copy: TP) and c5 (original of n1, n1 dropped too: FP)
    kept: c1 c3 c6 u2 e2 t1
    """
    rows = [(f"c{i}", None, None) for i in range(1, 7)] + [
        ("u1", "url", "c1"), ("u2", "url", "c2"), ("e1", "exact_duplicate", "c3"),
        ("e2", "exact_duplicate", "c4"), ("n1", "near_duplicate", "c5"), ("t1", "truncated", "c6")]
    noisy = pl.DataFrame(rows, schema={"record_id": pl.String, "noise_kind": pl.String, "noise_of": pl.String},
                         orient="row").with_columns(pl.lit("text").alias("output"))
    drops = [("u1", 1, "url", "url"), ("c2", 1, "url", "url"), ("e1", 2, "dedup", "exact_dedup"),
             ("c4", 2, "dedup", "exact_dedup"), ("n1", 2, "dedup", "exact_dedup"), ("c5", 2, "dedup", "exact_dedup")]
    dropped = noisy.join(pl.DataFrame(drops, schema=["record_id", "step", "step_name", "filter"], orient="row"),
                         on="record_id", maintain_order="right").with_columns(
        pl.lit(1.0).alias("value"), pl.lit(None, dtype=pl.String).alias("detail"))
    kept = noisy.filter(~pl.col("record_id").is_in(dropped["record_id"].implode()))
    steps = pl.DataFrame([(1, "url", "url", "filter", 12, 10, 2, 0), (2, "dedup", "exact_dedup", "filter", 10, 6, 4, 0)],
                         schema=["step", "name", "filter", "kind", "records_in", "kept", "dropped", "changed"],
                         orient="row")
    res = PipelineResult(kept, dropped, steps)
    assert res.reconciles()
    return res, noisy


def _row(score: pl.DataFrame, step: str, kind: str) -> dict:
    r = score.filter((pl.col("step") == step) & (pl.col("noise_kind") == kind))
    assert r.height == 1, (step, kind)
    return r.row(0, named=True)


def test_score_filters_by_hand():
    res, noisy = _hand_made()
    s = score_filters(res, noisy)
    expect = {  # (step, kind): n_positive, tp, fp, fn, precision, recall
        ("url", "(all)"): (6, 1, 1, 5, 1 / 2, 1 / 6),
        ("dedup", "(all)"): (6, 3, 1, 3, 3 / 4, 3 / 6),
        ("(all)", "(all)"): (6, 4, 2, 2, 4 / 6, 4 / 6),
        ("url", "url"): (2, 1, 1, 1, 1 / 2, 1 / 2),
        ("dedup", "exact_duplicate"): (2, 2, 1, 0, 2 / 3, 1.0),
        ("dedup", "near_duplicate"): (1, 1, 1, 0, 1 / 2, 1.0),
        ("dedup", "truncated"): (1, 0, 1, 1, 0.0, 0.0),
        ("(all)", "truncated"): (1, 0, 2, 1, 0.0, 0.0),
        ("(all)", "exact_duplicate"): (2, 2, 2, 0, 0.5, 1.0),
    }
    for (step, kind), (npos, tp, fp, fn, p, r) in expect.items():
        row = _row(s, step, kind)
        assert (row["n_positive"], row["tp"], row["fp"], row["fn"]) == (npos, tp, fp, fn), (step, kind, row)
        assert row["precision"] == pytest.approx(p) and row["recall"] == pytest.approx(r), (step, kind, row)
    assert s["step"].unique(maintain_order=True).to_list() == ["url", "dedup", "(all)"]
    assert s.filter(pl.col("step") == "dedup")["filter"].unique().to_list() == ["exact_dedup"]
    # auditable: tp + fn == n_positive everywhere
    assert (s["tp"] + s["fn"] == s["n_positive"]).all()


def test_caught_by_kind_by_hand():
    res, noisy = _hand_made()
    t = caught_by_kind(res, noisy)
    assert t.columns == ["noise_kind", "n", "url", "dedup", "not_caught"]
    assert t.rows() == [
        ("url", 2, 1, 0, 1),
        ("exact_duplicate", 2, 0, 2, 0),
        ("near_duplicate", 1, 0, 1, 0),
        ("truncated", 1, 0, 0, 1),
        ("(clean)", 6, 1, 1, 4),
    ]


def test_no_positives_and_no_drops_give_null_not_errors():
    res, noisy = _hand_made()
    clean_only = noisy.with_columns(pl.lit(None, dtype=pl.String).alias("noise_kind"),
                                    pl.lit(None, dtype=pl.String).alias("noise_of"))
    res2 = PipelineResult(res.kept.with_columns(pl.lit(None, dtype=pl.String).alias("noise_kind")),
                          res.dropped, res.steps)
    s = score_filters(res2, clean_only)
    assert s["noise_kind"].unique().to_list() == ["(all)"]
    overall = _row(s, "(all)", "(all)")
    assert (overall["n_positive"], overall["tp"], overall["fp"], overall["fn"]) == (0, 0, 6, 0)
    assert overall["recall"] is None and overall["precision"] == 0.0
    # nothing dropped at all: precision null, recall 0
    nothing = PipelineResult(noisy, noisy.clear().with_columns(
        pl.lit(None, dtype=pl.Int64).alias("step"), pl.lit(None, dtype=pl.String).alias("step_name")),
        pl.DataFrame([(1, "url", "url", "filter", 12, 12, 0, 0)],
                     schema=["step", "name", "filter", "kind", "records_in", "kept", "dropped", "changed"],
                     orient="row"))
    s = score_filters(nothing, noisy)
    row = _row(s, "url", "(all)")
    assert row["precision"] is None and row["recall"] == 0.0 and row["fn"] == 6
    assert caught_by_kind(nothing, noisy)["not_caught"].to_list() == [2, 2, 1, 1, 6]


def test_result_of_another_frame_is_refused():
    res, noisy = _hand_made()
    with pytest.raises(ValueError, match="one-to-one"):
        score_filters(res, noisy.head(10))
    with pytest.raises(ValueError, match="noise_kind"):
        score_filters(res, noisy.drop("noise_kind"))


@register
@dataclass
class _HttpFilter(Filter):
    """Test-only: drops outputs containing http."""

    name: ClassVar[str] = "_test_noise_http"

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return frame["output"].str.contains("http", literal=True).cast(pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        return values < 0.5


def test_end_to_end_with_run_pipeline(clean):
    noisy = inject_noise(clean, NoiseConfig(kinds=("url", "html"), rate=0.1, seed=1))
    res = run_pipeline(noisy, PipelineConfig.from_dict({"steps": [{"filter": "_test_noise_http", "label": "http"}]}))
    s = score_filters(res, noisy)
    url = _row(s, "http", "url")
    assert (url["tp"], url["fn"], url["fp"], url["recall"], url["precision"]) == (4, 0, 0, 1.0, 1.0)
    html = _row(s, "http", "html")
    assert (html["tp"], html["fn"], html["recall"]) == (0, 4, 0.0)
    assert caught_by_kind(res, noisy).filter(pl.col("noise_kind") == "url")["http"].item() == 4


def test_score_auc_is_the_chance_a_clean_record_outscores_a_noisy_one():
    from cqia_nb.filter.noise import score_auc

    noisy = pl.DataFrame({"noise_kind": [None, None, None, "url", "url", "ad"]}, schema={"noise_kind": pl.String})
    # clean 5, 3, 2 vs url 1, 3 and ad 9: pairs won (ties half): url 3 + 1.5 of 6, ad 0 of 3
    res = score_auc(noisy, [5.0, 3.0, 2.0, 1.0, 3.0, 9.0])
    assert res["by_kind"] == {"url": pytest.approx(4.5 / 6), "ad": 0.0}
    assert res["auc"] == pytest.approx(4.5 / 9) and (res["n_clean"], res["n_noisy"], res["unscored"]) == (3, 3, 0)
    # a score where low means clean, and unscored records left out
    flipped = score_auc(noisy, [-5.0, None, -2.0, -1.0, float("nan"), -9.0], higher_is_clean=False)
    # clean 5, 2 vs url 1 and ad 9 after the flip: 2 of 4 pairs
    assert flipped["auc"] == pytest.approx(2 / 4) and flipped["unscored"] == 2
    sk = pytest.importorskip("sklearn.metrics")
    rng = __import__("random").Random(0)
    kinds = [None] * 30 + ["url"] * 20
    scores = [float(rng.randint(0, 6)) for _ in kinds]  # many ties
    want = sk.roc_auc_score([k is None for k in kinds], scores)
    assert score_auc(pl.DataFrame({"noise_kind": kinds}, schema={"noise_kind": pl.String}), scores)["auc"] == \
        pytest.approx(want)
    with pytest.raises(ValueError, match="one score per row"):
        score_auc(noisy, [1.0])
