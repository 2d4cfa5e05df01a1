"""cqia_nb.build: spec validation, subsets on the bundled data, mixtures, budgets, split, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import cqia_nb.build as S
from cqia_nb.data.load import load
from cqia_nb.data.schema import CONFIGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return S.add_derived(load(source="bundled").frame)


def spec(**d) -> S.BuildSpec:
    return S.BuildSpec.from_dict({"name": "t", "seed": 3, **d})


@pytest.fixture(scope="module")
def built() -> S.Build:
    return S.run_build(spec(builtin=["configs", "groups"], split={"validation": 0.1}, mixtures=[
        {"name": "mix", "parts": [{"subset": "group.social_media", "ratio": 0.5},
                                  {"subset": "group.exams", "ratio": 0.3},
                                  {"subset": "group.law", "ratio": 0.2}], "size": 100},
        {"name": "tok", "parts": [{"subset": "group.medical", "tokens": 4000},
                                  {"subset": "group.ruozhiba", "tokens": 3000}]}]))


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("d, match", [
    ({"mixtures": [{"name": "m", "parts": [{"subset": "group.exams", "ratio": 0.5},
                                           {"subset": "group.law", "ratio": 0.4}]}]},
     r"ratios sum to 0\.9 \(0\.5 \+ 0\.4\); they must sum to 1"),
    ({"mixtures": [{"name": "m", "parts": [{"subset": "group.exam", "ratio": 1}]}]},
     r"unknown subset 'group\.exam'; known subsets: config\.chinese_traditional, .*group\.exams"),
    ({"subsets": [{"name": "a", "configs": ["zhihuu"]}]}, r"subsets\[0\] \(a\): unknown config\(s\) \['zhihuu'\]"),
    ({"subsets": [{"name": "a", "groups": ["medicine"]}]}, r"unknown group\(s\) \['medicine'\]; groups: social_media"),
    ({"subsets": [{"name": "a"}]}, r"subsets\[0\] \(a\): no criteria"),
    ({"subsets": [{"name": "a", "configz": ["zhihu"]}]}, r"unknown key\(s\) 'configz' \(did you mean 'configs'\?\); valid keys: "),
    ({"subsets": [{"name": "a b", "configs": ["zhihu"]}]}, r"`name` must be letters"),
    ({"subsets": [{"name": "a", "where": "output_chars >"}]}, r"cannot parse `where: output_chars >`"),
    ({"subsets": [{"name": "a", "where": "1=1; drop table x"}]}, r"remove the ';'"),
    ({"subsets": [{"name": "config.zhihu", "configs": ["zhihu"]}]}, r"are built-in names"),
    ({"mixtures": [{"name": "m", "parts": [{"subset": "group.exams", "ratio": 0.5},
                                           {"subset": "group.law", "tokens": 100}]}]}, r"mix of `ratio` and `tokens`"),
    ({"mixtures": [{"name": "m", "parts": [{"subset": "group.exams", "tokens": 100}], "size": 3}]},
     r"`size`/`total_tokens` go with ratio parts"),
    ({"split": {"validation": 1.5}}, r"`validation` must be a fraction"),
    ({"format": {"template": "llama9"}}, r"unknown template 'llama9'"),
    ({"exports": ["csv"]}, r"unknown export format\(s\) \['csv'\]"),
    ({"builtin": ["everything"]}, r"builtin: unknown 'everything'"),
])
def test_spec_errors_say_what_to_change(d, match):
    with pytest.raises(S.SpecError, match=match):
        spec(**d)


def test_yaml_errors_and_the_shipped_recipes(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nsubsets:\n  - name: a\n   configs: [zhihu]\n", encoding="utf-8")
    with pytest.raises(S.SpecError, match="not valid YAML at line"):
        S.BuildSpec.from_yaml(p)
    with pytest.raises(FileNotFoundError):
        S.BuildSpec.from_yaml(tmp_path / "none.yaml")
    for recipe in sorted((ROOT / "recipes").glob("subsets-*.yaml")):
        s = S.BuildSpec.from_yaml(recipe)
        assert s.mixtures and s.seed is not None


def test_data_dependent_errors_name_the_entry():
    with pytest.raises(S.SpecError, match=r"subsets\[0\] \(none\): subset 'none' selects no records"):
        S.run_build(spec(subsets=[{"name": "none", "where": "output_chars > 100000000"}]))
    with pytest.raises(S.SpecError, match=r"budget of 10,000,000 tokens but the subset holds [\d,]+ tokens in 21 records"):
        S.run_build(spec(mixtures=[{"name": "m", "parts": [{"subset": "group.law", "tokens": 10_000_000}]}]))
    with pytest.raises(S.SpecError, match=r"needs 500 records but the subset has 21"):
        S.run_build(spec(mixtures=[{"name": "m", "parts": [{"subset": "group.law", "ratio": 1}], "size": 500}]))
    with pytest.raises(S.SpecError, match=r"`where` uses unknown column\(s\) \['nope'\]"):
        S.run_build(spec(subsets=[{"name": "w", "where": "nope > 1"}]))
    with pytest.raises(S.SpecError, match=r"gives Int64, not true/false"):
        S.run_build(spec(subsets=[{"name": "w", "where": "output_chars + 1"}]))
    with pytest.raises(S.SpecError, match="no seed"):
        S.run_build(S.BuildSpec.from_dict({"name": "t", "builtin": ["configs"]}))


# ----------------------------------------------------------------------------- subsets

def test_config_subsets_hold_exactly_their_config(frame):
    specs = S.builtin_subsets()
    for c in CONFIGS:
        got = S.select(frame, specs[f"config.{c}"])
        assert got["record_id"].to_list() == frame.filter(pl.col("config") == c)["record_id"].to_list(), c
        assert got.height > 0


def test_group_subsets_follow_the_card(frame):
    specs = S.builtin_subsets()
    files = {g: set(S.select(frame, specs[f"group.{g}"])["source_file"]) for g in S.GROUPS}
    assert files["medical"] == {"wiki/baobao.jsonl", "wiki/bkmy_symptom.jsonl"}
    assert files["encyclopedia"] == {"wiki/10why_final.jsonl", "wiki/digital_wiki.jsonl", "wikihow/wikihow.jsonl"}
    assert files["law"] == {"exam/law_gee_exam_clean_v2.jsonl"}
    assert files["exams"] == {"exam/coig_exam_sampled_clean_v3.jsonl", "exam/kaoyan.jsonl", "logi_qa/logi-qa.jsonl"}
    assert {f.split("/")[0] for f in files["social_media"]} == {"zhihu", "douban", "xhs", "segmentfault"}
    assert files["nlp_tasks"] == {"coig_pc/coig_pc_core_sample.jsonl"}
    assert files["traditional_culture"] == {f for f in frame["source_file"] if f.startswith("chinese_traditional/")}
    assert files["ruozhiba"] == {"ruozhiba/ruozhiba_ruozhiba.jsonl"}
    # the groups partition the data
    ids = [i for g in S.GROUPS for i in S.select(frame, specs[f"group.{g}"])["record_id"].to_list()]
    assert sorted(ids) == sorted(frame["record_id"].to_list())


def test_quality_tier_task_type_domain_and_where(frame):
    assert S.quality_tier("zhihu/zhihu_score8.0-8.5_clean_v3.jsonl") == "8.0-8.5"
    assert S.quality_tier("zhihu/zhihu_score9.0-10_clean_v10.jsonl") == "9.0-10"
    assert S.quality_tier("zhihu/zhihu_expansion.jsonl") is None
    top = S.select(frame, S.SubsetSpec.from_dict({"name": "t", "configs": ["zhihu"], "quality_tier": ["8.5-9.0"]}, "x"))
    assert set(top["source_file"]) == {"zhihu/zhihu_score8.5-9.0_clean_v4.jsonl"}
    dom = frame["domain"].explode().drop_nulls().value_counts(sort=True)["domain"][0]
    d = S.select(frame, S.SubsetSpec.from_dict({"name": "d", "domain": [dom]}, "x"))
    assert d.height == frame.filter(pl.col("domain").list.contains(dom)).height > 0
    major = frame["task_type_major"].explode().drop_nulls()[0]
    t = S.select(frame, S.SubsetSpec.from_dict({"name": "m", "task_type_major": [major, "不存在"]}, "x"))
    assert t.height == frame.filter(pl.col("task_type_major").list.contains(major)).height > 0
    w = S.select(frame, S.SubsetSpec.from_dict(
        {"name": "w", "groups": ["social_media"], "where": "human_verified AND output_chars >= 200"}, "x"))
    want = frame.filter(pl.col("group") == "social_media", pl.col("human_verified"),
                        pl.col("output").str.len_chars() >= 200)
    assert w["record_id"].to_list() == want["record_id"].to_list() and w.height > 0
    # source criteria are a union, exclude_files removes
    u = S.select(frame, S.SubsetSpec.from_dict({"name": "u", "configs": ["xhs"], "files": ["wiki/baobao*"],
                                                 "exclude_files": ["xhs/*"]}, "x"))
    assert set(u["source_file"]) == {"wiki/baobao.jsonl"}


def test_where_is_not_python():
    with pytest.raises(S.SpecError, match="cannot parse"):
        S.SubsetSpec.from_dict({"name": "x", "where": "__import__('os').system('true')"}, "x")
    with pytest.raises(S.SpecError):
        S.SubsetSpec.from_dict({"name": "x", "where": "read_csv('/etc/passwd') IS NOT NULL"}, "x")


# ----------------------------------------------------------------------------- mixtures

def test_mixture_ratios_are_honoured(built):
    t = built.targets["mix"]
    counts = dict(t.frame.group_by("subset").len().iter_rows())
    assert sum(counts.values()) == 100
    for sub, r in (("group.social_media", 0.5), ("group.exams", 0.3), ("group.law", 0.2)):
        assert abs(counts[sub] - r * 100) < 1
    assert t.frame["record_id"].n_unique() == 100  # no upsampling needed
    # rows are shuffled, not grouped by part
    assert t.frame["subset"].to_list() != sorted(t.frame["subset"].to_list())


def test_default_size_is_the_largest_without_upsampling(frame):
    b = S.run_build(spec(mixtures=[{"name": "m", "parts": [{"subset": "group.law", "ratio": 0.5},
                                                           {"subset": "group.exams", "ratio": 0.5}]}]))
    counts = dict(b.targets["m"].frame.group_by("subset").len().iter_rows())
    n_law = frame.filter(pl.col("group") == "law").height
    assert counts == {"group.law": n_law, "group.exams": n_law}


def test_upsampling_only_when_allowed():
    parts = [{"subset": "group.law", "ratio": 1}]
    b = S.run_build(spec(mixtures=[{"name": "m", "parts": parts, "size": 50, "allow_upsample": True}]))
    f = b.targets["m"].frame
    assert f.height == 50 and f["record_id"].n_unique() == 21
    assert f.select("record_id", "sample").is_unique().all()
    assert b.targets["m"].parts[0].upsampled == 29


def test_token_budget_is_respected(built):
    t = built.targets["tok"]
    for p, budget in zip(t.parts, (4000, 3000)):
        part = t.frame.filter(pl.col("subset") == p.subset)
        tokens = int(part["n_tokens"].sum())
        assert tokens == p.tokens <= budget
        assert tokens >= budget - 2 * int(built.base["n_tokens"].max())
        assert part["record_id"].n_unique() == part.height  # within the data: no repeats


def test_ratios_of_a_token_total():
    b = S.run_build(spec(mixtures=[{"name": "m", "total_tokens": 9000,
                                    "parts": [{"subset": "group.law", "ratio": 0.25},
                                              {"subset": "group.exams", "ratio": 0.75}]}]))
    t = b.targets["m"]
    assert [p.target for p in t.parts] == ["2,250 tokens", "6,750 tokens"]
    for p, budget in zip(t.parts, (2250, 6750)):
        assert int(t.frame.filter(pl.col("subset") == p.subset)["n_tokens"].sum()) <= budget
    assert int(t.frame["n_tokens"].sum()) > 9000 - 4 * int(b.base["n_tokens"].max())


def test_token_budget_upsampling():
    b = S.run_build(spec(mixtures=[{"name": "m", "parts": [{"subset": "group.law", "tokens": 20000}],
                                    "allow_upsample": True}]))
    f = b.targets["m"].frame
    assert int(f["n_tokens"].sum()) <= 20000 and f.height > 21
    assert set(f["record_id"]) == set(b.base.filter(pl.col("group") == "law")["record_id"])


# ----------------------------------------------------------------------------- split

def test_split_is_disjoint_and_stratified(built):
    frac = 0.1
    split_of: dict[str, str] = {}
    for t in built.targets.values():
        for rid, s in t.frame.select("record_id", "split").iter_rows():
            assert split_of.setdefault(rid, s) == s, f"{rid} in two splits"
    assert built.base["split"].value_counts().filter(pl.col("split") == "validation")["count"][0] == round(
        frac * built.base.height)
    for name, t in built.targets.items():
        if t.kind != "subset":
            continue
        sc = t.split_counts()
        n_files = t.frame["source_file"].n_unique()
        assert abs(sc["validation"] - frac * t.frame.height) <= n_files, name
    for f, g in built.base.group_by("source_file"):
        v = int((g["split"] == "validation").sum())
        assert abs(v - frac * g.height) < 1
    # mixture parts: each part's validation share follows its subset's
    mix = built.targets["mix"].frame
    for sub, g in mix.group_by("subset"):
        share = built.targets[sub[0]].split_counts()["validation"] / built.targets[sub[0]].frame.height
        assert abs(int((g["split"] == "validation").sum()) - share * g.height) <= 1


def test_split_changes_with_the_seed_only(frame):
    a = S.assign_split(frame, 0.2, seed=1)
    assert a.equals(S.assign_split(frame, 0.2, seed=1))
    assert not a.equals(S.assign_split(frame, 0.2, seed=2))
    assert S.assign_split(frame, 0.0, seed=1)["split"].unique().to_list() == ["train"]


# ----------------------------------------------------------------------------- determinism

SPEC_YAML = """\
name: det
seed: 5
builtin: [config.zhihu, group.exams]
mixtures:
  - name: m
    parts: [{subset: group.social_media, ratio: 0.6}, {subset: group.exams, ratio: 0.4}]
    size: 60
split: {validation: 0.1}
exports: [jsonl, parquet, hf, llamafactory, trl, card]
"""


def _build(tmp: Path, out: str, seed: int, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    r = subprocess.run([sys.executable, "-m", "cqia_nb.cli", "build", "--spec", str(tmp / "spec.yaml"),
                        "--seed", str(seed), out], capture_output=True, text=True, env=env, cwd=tmp)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_byte_identical_across_processes_and_seed_sensitive(tmp_path: Path):
    (tmp_path / "spec.yaml").write_text(SPEC_YAML, encoding="utf-8")
    a = _build(tmp_path, "a", 5, "1")
    b = _build(tmp_path, "b", 5, "987")
    c = _build(tmp_path, "c", 6, "1")
    norm = lambda s, d: [l.replace(f"  {d}/", "  X/") for l in s.splitlines()]  # noqa: E731
    assert norm(a, "a") == norm(b, "b") and len(a.splitlines()) > 20
    ha, hc = dict(l.split("  ")[::-1] for l in norm(a, "a")), dict(l.split("  ")[::-1] for l in norm(c, "c"))
    assert ha.keys() == hc.keys()
    assert ha["X/jsonl/m/train.jsonl"] != hc["X/jsonl/m/train.jsonl"]
    assert ha["X/parquet/m.parquet"] != hc["X/parquet/m.parquet"]
    assert ha["X/jsonl/config.zhihu/validation.jsonl"] != hc["X/jsonl/config.zhihu/validation.jsonl"]


def test_rng_is_independent_of_python_hash():
    a = S.rng_for(1, "x").integers(0, 1 << 30, 4)
    assert np.array_equal(a, S.rng_for(1, "x").integers(0, 1 << 30, 4))
    assert not np.array_equal(a, S.rng_for(2, "x").integers(0, 1 << 30, 4))


@pytest.mark.realdata
def test_real_copy_groups_and_empty_builtins(real_data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 4 Git LFS pointers
        f = S.add_derived(load(source=str(real_data)).frame)
    specs = S.builtin_subsets()
    n = {g: S.select(f, specs[f"group.{g}"]).height for g in S.GROUPS}
    assert n["medical"] == 668 + 120 + 64          # bkmy_symptom, 51zyzy, baobao (bkmy_medicine is LFS)
    assert n["law"] == 2515 and n["ruozhiba"] == 240 and n["nlp_tasks"] == 0
    assert n["exams"] == 1964 + 377 + 421
    assert sum(n.values()) == f.height == 17971     # a partition of the real copy
    assert S.select(f, specs["config.wikihow"]).height == 0  # LFS pointer only
    tiers = f.group_by("quality_tier").len().drop_nulls("quality_tier")
    assert dict(tiers.iter_rows()) == {"8.0-8.5": 1481, "8.5-9.0": 1418}
