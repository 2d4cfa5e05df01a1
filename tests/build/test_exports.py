"""cqia_nb.build.exports: every format reloads to the same records; deterministic bytes; the card; the CLI."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import cqia_nb.build as S
import cqia_nb.build.exports as E
from cqia_nb.cli import main
from cqia_nb.data.load import load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build() -> S.Build:
    return S.run_build(S.BuildSpec.from_dict({
        "name": "ex", "seed": 11, "builtin": ["config.xhs", "group.law"], "split": {"validation": 0.2},
        "format": {"system": "你是一个乐于助人的助手。"},
        "mixtures": [{"name": "mix", "parts": [{"subset": "group.law", "ratio": 0.5},
                                               {"subset": "config.xhs", "ratio": 0.5}], "size": 80,
                      "allow_upsample": True}]}))


@pytest.fixture(scope="module")
def out(build, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    d = tmp_path_factory.mktemp("export")
    return d, E.export_all(build, d)


def _expected_messages(frame: pl.DataFrame, system: str | None) -> list[list[dict]]:
    out = []
    for r in frame.iter_rows(named=True):
        user = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
        m = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
        out.append(m)
    return out


def test_jsonl_and_parquet_round_trip(build, out):
    d, _ = out
    for name, t in build.targets.items():
        want = E.record_frame(t.frame)
        pq = pl.read_parquet(d / "parquet" / f"{name}.parquet")
        assert pq.equals(want), name
        parts = [E.read_jsonl(d / "jsonl" / name / f"{s}.jsonl", schema=want.schema) for s in ("train", "validation")]
        assert pl.concat(parts).equals(pl.concat([want.filter(pl.col("split") == s) for s in ("train", "validation")]))
        assert "messages" not in pq.columns and {"record_id", "subset", "split", "sample", "n_tokens"} <= set(pq.columns)


def test_hf_datasetdict_round_trip(build, out):
    import datasets

    d, _ = out
    for name, t in build.targets.items():
        dd = datasets.load_from_disk(str(d / "hf" / name))
        assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "validation"}
        for s in ("train", "validation"):
            got = pl.from_arrow(dd[s].data.table)
            assert got.equals(t.frame.filter(pl.col("split") == s)), (name, s)
        assert dd["train"][0]["messages"][0]["role"] == "system"


def test_trl_and_llamafactory_round_trip(build, out):
    d, _ = out
    system = build.format.config.system
    info = json.loads((d / "llamafactory" / "dataset_info.json").read_text(encoding="utf-8"))
    for name, t in build.targets.items():
        for s in ("train", "validation"):
            part = t.frame.filter(pl.col("split") == s)
            msgs = _expected_messages(part, system)
            trl = [json.loads(l) for l in (d / "trl" / name / f"{s}.jsonl").read_text(encoding="utf-8").split("\n") if l]
            assert trl == [{"messages": m} for m in msgs]
            suffix = "" if s == "train" else "_validation"
            a = info[f"{name}_alpaca{suffix}"]
            assert a["formatting"] == "alpaca" and a["columns"] == {
                "prompt": "instruction", "query": "input", "response": "output", "system": "system"}
            alpaca = E.read_llamafactory(d / "llamafactory" / a["file_name"])
            assert alpaca == [{"instruction": r["instruction"], "input": r["input"], "output": r["output"],
                               "system": system} for r in part.iter_rows(named=True)]
            g = info[f"{name}_sharegpt{suffix}"]
            assert g["formatting"] == "sharegpt" and g["columns"] == {"messages": "conversations", "system": "system"}
            assert g["tags"] == {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}
            share = E.read_llamafactory(d / "llamafactory" / g["file_name"])
            role = {"user": "human", "assistant": "gpt"}
            assert share == [{"conversations": [{"from": role[x["role"]], "value": x["content"]} for x in m[1:]],
                              "system": system} for m in msgs]
    assert len(info) == 4 * len(build.targets)


def test_bytes_are_deterministic_and_hashes_are_listed(build, out, tmp_path):
    d, hashes = out
    again = E.export_all(build, tmp_path / "again")
    assert again == hashes
    files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    assert files == sorted(hashes)
    for rel, h in hashes.items():
        assert hashlib.sha256((d / rel).read_bytes()).hexdigest() == h
    card = (d / "README.md").read_text(encoding="utf-8")
    for rel, h in hashes.items():
        if rel != "README.md":
            assert f"{h}  {rel}" in card


def test_card_states_sources_spec_seed_tokens(build, out):
    d, _ = out
    card = (d / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "config_name: mix" in card and "path: jsonl/mix/validation.jsonl" in card
    assert "input: `bundled` (bundled), 636 records" in card
    assert "Seed 11." in card and "name: ex" in card and "## Filters applied" in card
    row = next(l for l in card.splitlines() if l.startswith("| group.law |"))
    t = build.targets["group.law"]
    assert f"| {t.frame.height:,} |" in row and f"{int(t.frame['n_tokens'].sum()):,}" in row
    assert "Mixture `mix` parts:" in card and "Not run (no `contamination:` in the spec)" in card
    meta = json.loads((d / "build.json").read_text(encoding="utf-8"))
    assert meta["seed"] == 11 and meta["targets"]["mix"]["train"] + meta["targets"]["mix"]["validation"] == 80


def test_line_separators_are_escaped(tmp_path):
    f = pl.DataFrame({"record_id": ["a", "b"], "split": ["train", "train"],
                      "instruction": ["第一行\u2028第二行", "x\u0085y"], "input": ["", ""], "output": ["好\u2029", "z"]})
    f = f.with_columns(pl.concat_list(pl.struct(pl.lit("user").alias("role"), pl.col("instruction").alias("content")))
                       .alias("messages"))
    (p,) = E.export_jsonl(f, "t", tmp_path)
    raw = p.read_text(encoding="utf-8")
    assert "\u2028" not in raw and "\\u2028" in raw and len(raw.splitlines()) == 2
    assert [json.loads(l)["instruction"] for l in raw.splitlines()] == f["instruction"].to_list()


def test_card_reads_filter_steps(tmp_path):
    from cqia_nb.filter.framework import PipelineConfig, run_pipeline
    from cqia_nb.filter.outputs import write_outputs

    frame = load(source="bundled").frame
    res = run_pipeline(frame, PipelineConfig.from_dict({"steps": [{"filter": "length", "field": "output",
                                                                   "min_chars": 30}]}))
    write_outputs(res, tmp_path / "filtered")
    b = S.run_build(S.BuildSpec.from_dict({"name": "f", "seed": 1, "builtin": ["config.zhihu"]}),
                    input=str(tmp_path / "filtered"))
    assert b.input.kind == "filter-output" and b.base.height == res.kept.height
    card = E.card_text(b, {})
    assert "From `steps.csv` of the filter output folder" in card
    assert f"| 1 | length | length | filter | 636 | {res.kept.height:,} | {res.dropped.height:,} |" in card


# ----------------------------------------------------------------------------- CLI

SPEC = """\
name: cli
seed: 2
builtin: [config.ruozhiba]
mixtures:
  - name: m
    parts: [{subset: group.law, tokens: 2000}, {subset: config.ruozhiba, tokens: 2000}]
"""


def test_cli_prints_one_hash_line_per_file(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["build", "--spec", str(spec), str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(lines) == len(files) > 10
    for line in lines:
        m = re.fullmatch(r"([0-9a-f]{64})  (.+)", line)
        assert m, line
        assert hashlib.sha256(Path(m.group(2)).read_bytes()).hexdigest() == m.group(1)
    assert {Path(l.split("  ", 1)[1]) for l in lines} == set(files)
    # a second build into the same folder needs --force
    assert main(["build", "--spec", str(spec), str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["build", "--spec", str(spec), "--force", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_cli_bad_input_exits_2_with_a_message(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "cqia_nb.cli", "build", *args], capture_output=True, text=True)

    r = run("--spec", str(spec), "--input", str(tmp_path / "nope"), str(tmp_path / "o1"))
    assert r.returncode == 2 and "no such file or folder" in r.stderr and r.stdout == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("tokens: 2000}]", "tokens: 2000}, {subset: group.nope, tokens: 5}]"), encoding="utf-8")
    r = run("--spec", str(bad), str(tmp_path / "o2"))
    assert r.returncode == 2 and "unknown subset 'group.nope'; known subsets:" in r.stderr
    r = run("--spec", str(tmp_path / "missing.yaml"), str(tmp_path / "o3"))
    assert r.returncode == 2 and "build spec not found" in r.stderr
