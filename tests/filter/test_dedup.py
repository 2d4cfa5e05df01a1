"""Tests of cqia_nb.filter.dedup: normalisation, exact and near duplicates, survivors, filters, peers."""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import cqia_nb.filter.dedup as dedup
from cqia_nb.core.text import normalize_texts as normalize_text
from cqia_nb.filter.dedup import CLUSTER_SCHEMA, NearDedup, exact_duplicates, near_duplicates
from cqia_nb.filter.framework import PipelineConfig, make_filter, run_pipeline
from cqia_nb.filter.minhash import (
    MinHashConfig,
    _shingle_hash32,
    candidate_pairs,
    connected_components,
    minhash_signatures,
    optimal_bands_rows,
    shingles,
    similar_pairs,
)

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "data" / "coig-cqia-mini"
MANIFEST = ROOT / "data" / "noise_manifest.jsonl"

CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
PUNCT = "，。、！？；："


# ----------------------------------------------------------------------------- helpers

def rec(line: int, instruction: str = "", output: str = "", *, input: str = "", file: str = "syn/a.jsonl",
        human_verified: bool | None = True) -> dict[str, Any]:
    return {"record_id": f"{file}:{line}", "source_file": file, "line": line, "instruction": instruction,
            "input": input, "output": output, "human_verified": human_verified}


def frame_of(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"record_id": pl.String, "source_file": pl.String, "line": pl.Int64,
                                      "instruction": pl.String, "input": pl.String, "output": pl.String,
                                      "human_verified": pl.Boolean})


def zh_text(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(rng.choice(CJK))
        if rng.random() < 0.06:
            out.append(rng.choice(PUNCT))
    return "".join(out)


def mutate(rng: random.Random, text: str, k: int) -> str:
    """k characters replaced (by different CJK characters), far apart."""
    chars = list(text)
    step = len(chars) // (k + 1)
    for i in range(1, k + 1):
        p = i * step + rng.randrange(-5, 5)
        chars[p] = rng.choice([c for c in CJK[:50] if c != chars[p]])
    return "".join(chars)


def planted_frame(seed: int = 7, n_base: int = 40, n_dup: int = 10) -> tuple[pl.DataFrame, dict[str, str]]:
    """Unrelated 500-character texts; near copies with 2 characters replaced, a punctuation mark
    changed and spacing added; a moderately edited copy (Jaccard ~0.3) that is no duplicate."""
    rng = random.Random(seed)
    bases = [zh_text(rng, 500) for _ in range(n_base)]
    rows = [rec(i + 1, b[:40], b[40:]) for i, b in enumerate(bases)]
    planted: dict[str, str] = {}
    for k in range(n_dup):
        src = (7 * k) % n_base
        t = mutate(rng, bases[src], 2)
        t = t.replace("，", "。", 1)[:60] + "  " + t[60:].replace("。", "! ", 1)
        line = n_base + k + 1
        rows.append(rec(line, t[:40], t[40:], file="syn/b.jsonl"))
        planted[f"syn/b.jsonl:{line}"] = f"syn/a.jsonl:{src + 1}"
    far = mutate(rng, bases[1], 40)
    rows.append(rec(n_base + n_dup + 1, far[:40], far[40:], file="syn/c.jsonl"))
    return frame_of(rows), planted


def same_cluster(clusters: pl.DataFrame, a: str, b: str) -> bool:
    ids = dict(zip(clusters["record_id"].to_list(), clusters["cluster_id"].to_list()))
    return ids[a] == ids[b]


def check_invariants(clusters: pl.DataFrame, frame: pl.DataFrame) -> None:
    assert clusters.schema == pl.Schema(CLUSTER_SCHEMA)
    assert clusters["record_id"].to_list() == frame["record_id"].to_list()   # input row order
    per = clusters.group_by("cluster_id").agg(pl.len().alias("n"), pl.col("survivor").sum().alias("s"),
                                              pl.col("cluster_size").first().alias("size"),
                                              pl.col("record_id").filter(pl.col("survivor")).first().alias("sid"))
    assert (per["s"] == 1).all(), "exactly one survivor per cluster"
    assert (per["n"] == per["size"]).all()
    assert sorted(per["cluster_id"].to_list()) == list(range(per.height))
    j = clusters.join(per.select("cluster_id", "sid"), on="cluster_id")
    dup = j.filter(~pl.col("survivor"))
    assert (dup["duplicate_of"] == dup["sid"]).all()
    assert dup["similarity"].null_count() == 0
    surv = j.filter(pl.col("survivor"))
    assert surv["duplicate_of"].null_count() == surv.height and surv["similarity"].null_count() == surv.height


# ----------------------------------------------------------------------------- normalisation, exact

def test_normalisation_full_width_case_spacing_punctuation() -> None:
    assert normalize_text(["Ｈｅｌｌｏ，　Ｗｏｒｌｄ！", "hello,   world!", " hello world ", None, "  ，。 "]) == [
        "helloworld", "helloworld", "helloworld", "", ""]
    assert normalize_text(["你好，世界。", "你好 世界", "你好世界", "「你好」…世界"]) == ["你好世界"] * 4
    assert normalize_text(["１＋１＝２", "Ⅻ"]) == ["1+1=2", "xii"]   # symbols stay, NFKC applies


def test_exact_duplicates_after_normalisation() -> None:
    f = frame_of([
        rec(1, "什么是指令微调？", "指令微调是用指令和回答训练模型。"),
        rec(2, "什么是指令微调?", "指令微调 是用指令和回答训练模型 。"),        # half-width ?, spaces
        rec(3, "什么是ＡＩ？", "ＡＩ是人工智能"),
        rec(4, "什么是ai", "ai 是人工智能！"),                                  # full-width, case
        rec(5, "什么是指令微调？", "完全不同的回答。"),
    ])
    res = exact_duplicates(f)
    c = res.clusters
    check_invariants(c, f)
    assert same_cluster(c, "syn/a.jsonl:1", "syn/a.jsonl:2")
    assert same_cluster(c, "syn/a.jsonl:3", "syn/a.jsonl:4")
    assert not same_cluster(c, "syn/a.jsonl:1", "syn/a.jsonl:5")
    assert c.filter(~pl.col("survivor"))["record_id"].to_list() == ["syn/a.jsonl:2", "syn/a.jsonl:4"]
    assert c.filter(~pl.col("survivor"))["similarity"].to_list() == [1.0, 1.0]
    assert c["text_hash"][0] == c["text_hash"][1] != c["text_hash"][4]
    assert res.n_clusters == 2 and res.n_removed == 2
    assert res.pairs.rows() == [("syn/a.jsonl:1", "syn/a.jsonl:2", 1.0), ("syn/a.jsonl:3", "syn/a.jsonl:4", 1.0)]
    raw = exact_duplicates(f, normalize=False)
    assert raw.n_removed == 0


def test_fields_are_configurable_and_kept_apart() -> None:
    f = frame_of([rec(1, "同一个问题", "回答一"), rec(2, "同一个问题", "回答二"),
                  rec(3, "ab", "x", input=""), rec(4, "a", "x", input="b")])
    assert exact_duplicates(f).n_removed == 0
    only_instr = exact_duplicates(f, fields=("instruction",))
    assert only_instr.n_removed == 1 and same_cluster(only_instr.clusters, "syn/a.jsonl:1", "syn/a.jsonl:2")
    # text does not move between fields unnoticed
    assert not same_cluster(exact_duplicates(f).clusters, "syn/a.jsonl:3", "syn/a.jsonl:4")
    with pytest.raises(ValueError, match="not columns"):
        exact_duplicates(f, fields=("nope",))
    with pytest.raises(ValueError, match="not text"):
        exact_duplicates(f, fields=("line",))


# ----------------------------------------------------------------------------- near duplicates

@pytest.mark.parametrize("shingle_hash", ["sha1", "fast"])
def test_planted_near_duplicates_found_unrelated_not(shingle_hash: str) -> None:
    f, planted = planted_frame()
    res = near_duplicates(f, MinHashConfig(shingle_hash=shingle_hash))
    c = res.clusters
    check_invariants(c, f)
    for dup, orig in planted.items():
        assert same_cluster(c, dup, orig), f"{dup} (near copy of {orig}) not found"
    in_clusters = set(c.filter(pl.col("cluster_size") > 1)["record_id"].to_list())
    assert in_clusters == set(planted) | set(planted.values()), "unrelated texts were clustered"
    assert res.n_removed == len(planted)
    sims = c.filter(~pl.col("survivor"))["similarity"]
    assert sims.min() >= 0.8 and sims.max() < 1.0    # near, not exact
    assert res.stats["bands"] == 9 and res.stats["rows"] == 13
    # the same records are no exact duplicates
    assert exact_duplicates(f).n_removed == 0


def test_exact_verification_uses_true_jaccard() -> None:
    f, planted = planted_frame()
    res = near_duplicates(f, MinHashConfig(verify="exact"))
    keys = dict(zip(f["record_id"].to_list(), dedup.text_keys(f).to_list()))
    c = res.clusters.filter(~pl.col("survivor"))
    assert set(c["record_id"].to_list()) == set(planted)
    for rid, of, sim in c.select("record_id", "duplicate_of", "similarity").iter_rows():
        a, b = set(shingles(keys[rid])), set(shingles(keys[of]))
        assert sim == pytest.approx(len(a & b) / len(a | b))
    # and the signature estimate is close to it
    est = near_duplicates(f).clusters.filter(~pl.col("survivor")).sort("record_id")["similarity"].to_numpy()
    assert np.abs(est - c.sort("record_id")["similarity"].to_numpy()).max() < 0.1


def test_threshold_changes_what_is_found() -> None:
    f, planted = planted_frame()
    assert near_duplicates(f, MinHashConfig(threshold=0.99)).n_removed == 0
    loose = near_duplicates(f, MinHashConfig(threshold=0.2, verify="exact"))
    assert same_cluster(loose.clusters, "syn/c.jsonl:51", "syn/a.jsonl:2")   # the far copy, J ~ 0.3
    assert near_duplicates(f).clusters.filter(pl.col("record_id") == "syn/c.jsonl:51")["cluster_size"][0] == 1


def test_empty_null_and_short_texts() -> None:
    f = frame_of([
        rec(1, "", ""), rec(2, None, None, input=None), rec(3, " ，。 ", "  "),   # empty after normalising
        rec(4, "a", ""), rec(5, "ab", ""), rec(6, "你好", ""), rec(7, "你好！", ""),  # shorter than ngram
        rec(8, "一段足够长的文本内容", "回答"),
    ])
    for res in (exact_duplicates(f), near_duplicates(f), near_duplicates(f, MinHashConfig(verify="exact")),
                near_duplicates(f, MinHashConfig(shingle_hash="fast"))):
        check_invariants(res.clusters, f)
        c = res.clusters
        assert c.filter(pl.col("record_id").is_in(["syn/a.jsonl:1", "syn/a.jsonl:2", "syn/a.jsonl:3"]))[
            "cluster_size"].to_list() == [1, 1, 1], "empty texts are never duplicates"
        assert same_cluster(c, "syn/a.jsonl:6", "syn/a.jsonl:7")
        assert not same_cluster(c, "syn/a.jsonl:4", "syn/a.jsonl:5")
        assert res.n_removed == 1
    sig = minhash_signatures(["", "a", "a"])
    assert (sig[0] == 0xFFFFFFFF).all() and (sig[1] == sig[2]).all() and not (sig[1] == 0xFFFFFFFF).all()
    for fn in (exact_duplicates, near_duplicates):
        empty = fn(f.clear())
        assert empty.clusters.height == 0 and empty.clusters.schema == pl.Schema(CLUSTER_SCHEMA)
        assert fn(f.head(1)).clusters["survivor"].to_list() == [True]


def test_frame_without_provenance_and_bad_ids() -> None:
    f = pl.DataFrame({"instruction": ["同一个问题", "同一个问题"], "output": ["x", "x"]})
    res = near_duplicates(f, fields=("instruction", "output"))
    assert res.clusters["record_id"].to_list() == ["row:0", "row:1"]
    assert res.clusters["duplicate_of"].to_list() == [None, "row:0"]
    bad = frame_of([rec(1, "a"), rec(1, "b")])
    with pytest.raises(ValueError, match="unique"):
        exact_duplicates(bad)


# ----------------------------------------------------------------------------- survivors

def survivor_frame() -> pl.DataFrame:
    """One cluster (same instruction) of five; lines 9 and 10 test numeric, not string, order."""
    return frame_of([
        rec(10, "同一个问题", "长回答长回答", human_verified=False),   # longest (tie with line 9)
        rec(9, "同一个问题", "短回答长回答", human_verified=False),    # longest, earlier
        rec(11, "同一个问题", "短", human_verified=True),
        rec(12, "同一个问题", "中等回答", human_verified=True),
        rec(13, "同一个问题", "中等答案", human_verified=None),
    ])


@pytest.mark.parametrize("method", ["exact", "near"])
@pytest.mark.parametrize("keep, expected", [
    ("first", "syn/a.jsonl:9"),
    ("longest_output", "syn/a.jsonl:9"),                 # tie 6 = 6 chars: earlier line wins
    ("human_verified_then_longest", "syn/a.jsonl:12"),
])
def test_survivor_rules_and_tie_breaks(method: str, keep: str, expected: str) -> None:
    f = survivor_frame()
    run = exact_duplicates if method == "exact" else near_duplicates
    res = run(f, fields=("instruction",), keep=keep)
    c = res.clusters
    check_invariants(c, f)
    assert c.filter(pl.col("survivor"))["record_id"].to_list() == [expected]
    assert set(c["duplicate_of"].drop_nulls().to_list()) == {expected}
    # independent of the frame's row order
    shuffled = run(f.sample(fraction=1.0, shuffle=True, seed=3), fields=("instruction",), keep=keep).clusters
    assert shuffled.sort("record_id").drop("cluster_id").equals(c.sort("record_id").drop("cluster_id"))
    with pytest.raises(ValueError, match="survivor rule"):
        run(f, keep="shortest")


def test_order_falls_back_to_record_id() -> None:
    f = pl.DataFrame({"record_id": ["b", "a", "c"], "instruction": ["同一个问题"] * 3})
    c = exact_duplicates(f, fields=("instruction",)).clusters
    assert c.filter(pl.col("survivor"))["record_id"].to_list() == ["a"]


def test_row_order_does_not_change_near_clusters() -> None:
    f, _ = planted_frame()
    a = near_duplicates(f).clusters.sort("record_id")
    b = near_duplicates(f.reverse()).clusters.sort("record_id")
    assert a.equals(b)


# ----------------------------------------------------------------------------- determinism

_DETERMINISM_SCRIPT = """
import hashlib, json, sys
sys.path.insert(0, {tests!r})
from test_dedup import planted_frame
from cqia_nb.filter import dedup, minhash
f, _ = planted_frame(seed=11)
out = {{}}
for h in ("sha1", "fast"):
    cfg = minhash.MinHashConfig(shingle_hash=h)
    out[h] = dedup.near_duplicates(f, cfg).clusters.rows()
    out[h + "_sig"] = hashlib.sha256(minhash.minhash_signatures(dedup.text_keys(f), cfg).tobytes()).hexdigest()
out["exact"] = dedup.exact_duplicates(f).clusters.rows()
print(json.dumps(out))
"""


def test_deterministic_across_processes() -> None:
    code = _DETERMINISM_SCRIPT.format(tests=str(Path(__file__).parent))
    outs = []
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        outs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    assert sum(1 for r in outs[0]["sha1"] if not r[3]) == 10     # the planted copies were found


# ----------------------------------------------------------------------------- building blocks

def test_minhash_config_validation_and_lsh_params() -> None:
    assert MinHashConfig().lsh_params == (9, 13)
    assert MinHashConfig(bands=16).lsh_params == (16, 8)
    assert MinHashConfig(rows=4).lsh_params == (32, 4)
    assert MinHashConfig(bands=8, rows=16).lsh_params == (8, 16)
    assert MinHashConfig(threshold=0.5).lsh_params == (25, 5)
    assert MinHashConfig().resolved()["bands"] == 9
    for bad in ({"bands": 20, "rows": 13}, {"threshold": 0.0}, {"threshold": 1.5}, {"ngram": 0},
                {"num_perm": 2.5}, {"verify": "both"}, {"shingle_hash": "md5"}, {"weights": (0.7, 0.7)},
                {"seed": -1}, {"bands": 0}):
        with pytest.raises(ValueError):
            MinHashConfig(**bad)


def test_near_dedup_filter_exposes_every_config_field() -> None:
    import dataclasses

    cfg_fields = {f.name for f in dataclasses.fields(MinHashConfig)}
    flt_fields = {f.name for f in dataclasses.fields(NearDedup)}
    assert cfg_fields <= flt_fields
    assert flt_fields - cfg_fields == {"fields", "survivor", "normalize", "answer_min_similarity",
                                       "short_answer_threshold"}
    assert NearDedup().config == MinHashConfig()
    assert NearDedup(threshold=0.9, fields=["output"]).config.threshold == 0.9


def test_connected_components_matches_python_union_find() -> None:
    rng = np.random.default_rng(5)
    n = 300
    i, j = rng.integers(0, n, 250), rng.integers(0, n, 250)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [find(x) for x in range(n)]
    assert connected_components(n, i, j).tolist() == expected
    # a long path in an adversarial order
    perm = rng.permutation(1000)
    lab = connected_components(1000, perm[:-1], perm[1:])
    assert (lab == 0).all()
    assert connected_components(3, np.array([], int), np.array([], int)).tolist() == [0, 1, 2]


def test_candidate_pairs_by_band() -> None:
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 3, 4], [5, 5, 5, 5], [1, 2, 3, 4]], dtype=np.uint32)
    assert candidate_pairs(sig, 2, 2).tolist() == [[0, 1], [0, 2], [0, 4], [1, 4], [2, 4]]
    assert candidate_pairs(sig, 1, 2).tolist() == [[0, 1], [0, 4], [1, 4]]
    assert candidate_pairs(sig, 2, 2, valid=np.array([1, 0, 1, 1, 0], bool)).tolist() == [[0, 2]]
    with pytest.raises(ValueError):
        candidate_pairs(sig, 3, 2)


def test_vectorised_sha1_matches_hashlib() -> None:
    rng = random.Random(1)
    alphabet = "abcXYZ 0123，。你好世界中文字符😀𠀀é\u3000ÿ\x00\n"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    for n in (1, 2, 5, 13, 14, 20):   # 14+ 4-byte characters need two SHA-1 blocks (hashlib path)
        got, counts = _shingle_hash32(texts, n, "sha1")
        ref = [struct.unpack("<I", hashlib.sha1(s.encode()).digest()[:4])[0]
               for t in texts for s in shingles(t, n)]
        assert got.tolist() == ref
        assert counts.tolist() == [len(shingles(t, n)) for t in texts]


def test_optimal_bands_rows_known_values() -> None:
    # values of datasketch 2.0.0's _optimal_param
    assert optimal_bands_rows(0.8, 128) == (9, 13)
    assert optimal_bands_rows(0.5, 128) == (25, 5)
    assert optimal_bands_rows(0.9, 128) == (5, 25)
    assert optimal_bands_rows(0.8, 256) == (17, 15)
    assert optimal_bands_rows(0.8, 128, (0.3, 0.7)) == (11, 11)


# ----------------------------------------------------------------------------- pipeline

def pipeline_frame() -> pl.DataFrame:
    f, _ = planted_frame(n_base=20, n_dup=6)
    extra = [rec(100, "什么是指令微调？", "指令微调是训练方法。", file="syn/d.jsonl"),
             rec(101, "什么是指令微调?", "指令微调 是训练方法 。", file="syn/d.jsonl"),
             rec(102, "什么是指令微调?", "指令微调是训练方法", file="syn/d.jsonl")]
    return pl.concat([f, frame_of(extra)])


def test_filters_inside_run_pipeline_reconcile() -> None:
    f = pipeline_frame()
    cfg = PipelineConfig.from_dict({"steps": [
        {"filter": "exact_dedup", "label": "exact"},
        {"filter": "near_dedup", "fields": ["instruction", "input", "output"], "survivor": "longest_output"},
    ]}, "test")
    res = run_pipeline(f, cfg)
    assert res.kept.height + res.dropped.height == f.height
    assert res.reconciles()
    steps = res.steps.rows(named=True)
    assert [s["dropped"] for s in steps] == [2, 6]
    assert steps[1]["records_in"] == f.height - 2
    ex = res.dropped.filter(pl.col("step") == 1)
    assert ex["value"].to_list() == [1.0, 1.0]
    assert ex["detail"].to_list() == ["duplicate_of=syn/d.jsonl:100"] * 2
    near = res.dropped.filter(pl.col("step") == 2)
    assert (near["value"] >= 0.8).all()
    kept_ids = set(res.kept["record_id"].to_list())
    for rid, detail in near.select("record_id", "detail").iter_rows():
        assert detail.startswith("duplicate_of=") and detail[len("duplicate_of="):] in kept_ids
    # nothing left to find, and the measured values are on record
    assert exact_duplicates(res.kept).n_removed == 0
    assert near_duplicates(res.kept).n_removed == 0
    m = res.measured["near_dedup"]
    assert m["keep"].sum() == res.kept.height and m["value"].null_count() == res.kept.height


def test_make_filter_errors_and_params() -> None:
    flt = make_filter("near_dedup", threshold=0.9, fields=["instruction"], verify="exact")
    assert flt.params()["fields"] == ("instruction",) and flt.config.verify == "exact"
    assert set(make_filter("exact_dedup").params()) == {"fields", "survivor", "normalize"}
    with pytest.raises(ValueError, match="survivor"):
        make_filter("exact_dedup", survivor="random")
    with pytest.raises(ValueError, match="bands"):
        make_filter("near_dedup", bands=100, rows=100)
    with pytest.raises(ValueError, match="no parameter"):
        make_filter("near_dedup", keep="first")
    bad_field = PipelineConfig.from_dict({"steps": [{"filter": "near_dedup", "fields": ["nope"]}]}, "t")
    with pytest.raises(ValueError, match="nope"):
        run_pipeline(pipeline_frame(), bad_field)
    # one filter object reused on different frames does not mix them up
    f = pipeline_frame()
    flt = make_filter("exact_dedup")
    v1 = flt.measure(f)
    v2 = flt.measure(f.head(20))
    assert v1.len() == f.height and v2.len() == 20 and v2.null_count() == 20
    assert flt.details(f, v1).drop_nulls().to_list() == ["duplicate_of=syn/d.jsonl:100"] * 2


def test_result_views_for_notebooks() -> None:
    f, _ = planted_frame()
    res = near_duplicates(f)
    assert res.duplicates.height == 20 and res.duplicates["survivor"][0]
    ex = res.examples(f, n=2)
    assert ex["cluster_id"].n_unique() == 2 and {"instruction", "output"} <= set(ex.columns)
    assert "10 duplicate clusters" in res.summary() and "'bands': 9" in res.summary()
    assert res.pairs.height >= 10 and set(res.pairs.columns) == {"record_a", "record_b", "similarity"}


# ----------------------------------------------------------------------------- datasketch (peer)

def graded_texts() -> list[str]:
    """Copies of one text with graded edits: pair similarities spread around the threshold."""
    rng = random.Random(3)
    base = zh_text(rng, 300)
    out = [base]
    for k in range(1, 30):
        out.append(mutate(rng, base, 1 + k // 3))
    out += [zh_text(rng, rng.randint(0, 60)) for _ in range(30)] + ["", "短", "短句"]
    return out


def test_signatures_and_pairs_identical_to_datasketch() -> None:
    ds = pytest.importorskip("datasketch")
    f, _ = planted_frame()
    texts = dedup.text_keys(f).to_list() + graded_texts()
    cfg = MinHashConfig()
    sig = minhash_signatures(texts, cfg)
    mhs = []
    for i, t in enumerate(texts):
        m = ds.MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch([s.encode("utf-8") for s in shingles(t)])
        assert (m.hashvalues == sig[i]).all(), f"signature {i} differs"
        mhs.append(m)
    lsh = ds.MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    assert (lsh.b, lsh.r) == cfg.lsh_params
    for i, m in enumerate(mhs):
        if texts[i]:
            lsh.insert(i, m)
    expected = {(i, j) for i, m in enumerate(mhs) if texts[i] for j in lsh.query(m)
                if j > i and m.jaccard(mhs[j]) >= cfg.threshold}
    got = similar_pairs(texts, cfg)
    assert set(zip(got["i"].to_list(), got["j"].to_list())) == expected
    assert len(expected) > 20                    # graded edits give a non-trivial set


def test_optimal_params_match_datasketch() -> None:
    pytest.importorskip("datasketch")
    from datasketch.lsh import _optimal_param

    for t in (0.5, 0.7, 0.85, 0.95):
        for p in (32, 64, 128):
            assert optimal_bands_rows(t, p) == _optimal_param(t, p, 0.5, 0.5), (t, p)


# ----------------------------------------------------------------------------- data

def _manifest_pairs() -> list[tuple[str, Any, Any]]:
    if not MANIFEST.is_file() or not BUNDLED.is_dir():
        pytest.skip(f"bundled data not written yet ({BUNDLED}, {MANIFEST})")
    out = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        kinds = e.get("kinds") or [e.get("kind")]
        for kind in ("exact_duplicate", "near_duplicate"):
            if kind in kinds:
                out.append((kind, e, e.get("of")))
    if not out:
        pytest.skip("the manifest lists no duplicates")
    return out


def _rid(ref: Any, frame: pl.DataFrame) -> str:
    """A manifest reference (record_id, or {file, line}) as a record_id of the frame."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, dict):
        if "record_id" in ref:
            return ref["record_id"]
        file = ref.get("file") or ref.get("source_file")
        m = frame.filter(pl.col("source_file").str.ends_with(file) & (pl.col("line") == ref["line"]))
        assert m.height == 1, f"manifest reference {ref} matches {m.height} records"
        return m["record_id"][0]
    raise AssertionError(f"unknown manifest reference {ref!r}")


def test_bundled_manifest_duplicates_are_clustered() -> None:
    import warnings

    from cqia_nb.data.load import load

    entries = _manifest_pairs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(source="bundled", cache=False).frame
    near = near_duplicates(frame).clusters
    exact = exact_duplicates(frame).clusters
    missed = []
    for kind, e, of in entries:
        rid, orig = _rid(e.get("record_id", {"file": e.get("file"), "line": e.get("line")}), frame), _rid(of, frame)
        if not same_cluster(near, rid, orig) or (kind == "exact_duplicate" and not same_cluster(exact, rid, orig)):
            missed.append((kind, rid, orig))
    assert not missed, f"{len(missed)} of {len(entries)} manifest duplicates not clustered: {missed[:5]}"


@pytest.mark.slow
@pytest.mark.realdata
def test_real_data_near_duplicates(real_data: Path) -> None:
    import warnings

    from cqia_nb.data.load import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(source=str(real_data), cache=False).frame
    res = near_duplicates(frame)
    check_invariants(res.clusters, frame)
    assert res.n_clusters > 0 and res.stats["shingles"] > 1_000_000
    assert res.n_removed >= exact_duplicates(frame).n_removed
