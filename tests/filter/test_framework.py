"""The filter framework: recipes fail early and clearly, the audit trail reconciles, outputs
round-trip, the CLI prints its summary last; the default recipe on bundled and real data."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import polars as pl
import pytest

import cqia_nb.filter as F
from cqia_nb.cli import main
from cqia_nb.data.load import LoadConfig, bundled_path, load
from cqia_nb.data.schema import SCHEMA
from tests.conftest import jsonl, make_record

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = ROOT / "recipes" / "filter-default.yaml"
MANIFEST = ROOT / "data" / "noise_manifest.jsonl"


def write_recipe(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def records_frame(tmp_path: Path, records: list[dict]) -> pl.DataFrame:
    p = tmp_path / "in" / "x.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(jsonl(records))
    return load(LoadConfig(source=str(p), cache=False)).frame


SAMPLE = [
    make_record(),
    make_record(output="详见 http://x.cn"),
    make_record(output="加微信 abc_123456 领取资料"),
    make_record(output="   "),
    make_record(output="这是一个很好的回答，内容完整。", task_type={"major": ["问答"], "minor": []}, extra_key=1),
    make_record(instruction="這個問題怎麼回答？", output="這個問題應該這樣回答，謝謝。"),
]


# ----------------------------------------------------------------------------- recipe errors

@pytest.mark.parametrize("text,expected", [
    ("steps:\n  - filter: url\n  - filter: nosuchfilter\n", r"step 2 \(nosuchfilter\): unknown filter 'nosuchfilter'"),
    ("steps:\n  - filter: urls\n", r"step 1 \(urls\): unknown filter 'urls' \(did you mean url\?\)"),
    ("steps:\n  - filter: length\n    min_char: 3\n", r"step 1 \(length\): filter 'length' has no parameter\(s\) \['min_char'\]"),
    ("steps:\n  - filter: url\n  - max_count: 3\n", r"step 2 needs a 'filter:' key"),
    ("steps:\n  - filter: length\n    min_chars: lots\n", r"step 1 \(length\): .*'min_chars' expects int or null, got 'lots'"),
    ("steps:\n  - filter: url\n    patterns: ['(?<=x)y']\n", r"step 1 \(url\): .*not a valid regular expression"),
    ("steps:\n  - filter: url\n  - filter: length\n    min_chars: [1\n", r"not valid YAML at line \d+ \(in step 2\)"),
    ("steps: []\n", r"no steps"),
    ("- filter: url\n", r"a recipe is a mapping"),
    ("steps:\n  - transform: url\n", r"step 1 \(url\): 'url' is a filter, not a transform"),
])
def test_recipe_errors_name_the_step(tmp_path, text, expected):
    p = write_recipe(tmp_path, text)
    with pytest.raises(ValueError, match=expected):
        F.PipelineConfig.from_yaml(p).build()


def test_all_errors_reported_at_once(tmp_path):
    p = write_recipe(tmp_path, "steps:\n  - filter: nope\n  - filter: url\n  - filter: length\n    x: 1\n")
    with pytest.raises(ValueError) as e:
        F.PipelineConfig.from_yaml(p).build()
    assert "step 1 (nope)" in str(e.value) and "step 3 (length)" in str(e.value)


def test_bad_recipe_fails_before_any_work():
    calls = []

    @dataclasses.dataclass
    class Spy(F.Filter):
        name = "test_spy_filter"

        def measure(self, frame):
            calls.append(frame.height)
            return pl.Series([0.0] * frame.height)

        def keep(self, values):
            return values >= 0

    F.register(Spy)
    try:
        cfg = F.PipelineConfig.from_dict({"steps": [{"filter": "test_spy_filter"}, {"filter": "url", "bogus": 1}]})
        with pytest.raises(ValueError, match="step 2"):
            F.run_pipeline(pl.DataFrame({"output": ["a"], "instruction": ["b"], "input": [""]}), cfg)
        assert calls == []
        # a column the input lacks is found before the first step runs, too
        cfg = F.PipelineConfig.from_dict({"steps": [{"filter": "test_spy_filter"}, {"filter": "length", "field": "answer"}]})
        with pytest.raises(ValueError, match=r"step 2 \(length\): the input has no column\(s\) \['answer'\]"):
            F.run_pipeline(pl.DataFrame({"output": ["a"]}), cfg)
        assert calls == []
    finally:
        F.FILTERS.pop("test_spy_filter", None)


def test_default_recipe_builds_and_every_filter_is_documented():
    built = F.PipelineConfig.from_yaml(DEFAULT_RECIPE).build()
    assert len(built) >= 15
    for name, cls in F.available_filters().items():
        if cls.__module__.startswith("cqia_nb.filter.rules."):
            doc = (cls.__doc__ or "").lower()
            assert "default" in doc, f"{name}: the docstring must say why its default"


def test_duplicate_step_names_get_suffixes():
    cfg = F.PipelineConfig.from_dict({"steps": [{"filter": "length"}, {"filter": "length", "field": "instruction"}]})
    assert cfg.step_names() == ["length", "length#2"]


# ----------------------------------------------------------------------------- pipeline audit

def test_pipeline_reconciles_and_dropped_rows_carry_the_audit(tmp_path):
    frame = records_frame(tmp_path, SAMPLE)
    res = F.run_pipeline(frame, F.PipelineConfig.from_yaml(DEFAULT_RECIPE))
    assert res.kept.height + res.dropped.height == frame.height == len(SAMPLE)
    assert res.reconciles()
    s = res.steps
    assert (s["records_in"] == s["kept"] + s["dropped"]).all()
    assert s["records_in"][0] == frame.height and s["kept"][-1] == res.kept.height
    assert s["dropped"].sum() == res.dropped.height
    # each dropped record: where and why
    d = res.dropped.sort("record_id")
    assert set(F.AUDIT_COLUMNS) <= set(d.columns)
    assert d["step"].null_count() == 0 and d["filter"].null_count() == 0 and d["value"].null_count() == 0
    by_id = {r["record_id"]: r for r in d.iter_rows(named=True)}
    assert by_id["x.jsonl:2"]["filter"] == "url" and by_id["x.jsonl:2"]["detail"] == "http://x.cn"
    assert by_id["x.jsonl:3"]["filter"] == "qq_wechat"
    assert by_id["x.jsonl:4"]["filter"] == "empty_output"
    step_of = dict(zip(s["name"], s["step"]))
    assert by_id["x.jsonl:2"]["step"] == step_of["url"]
    # the traditional record was converted, not dropped, and counted
    assert "x.jsonl:6" in res.kept["record_id"].to_list()
    assert res.kept.filter(pl.col("record_id") == "x.jsonl:6")["output"][0] == "这个问题应该这样回答，谢谢。"
    assert s.filter(pl.col("kind") == "transform")["changed"].to_list() == [1]
    # measured values for every step, keyed by step name
    assert set(res.measured) == set(s["name"])


def test_pipeline_survives_bad_input():
    big = "很长的回答。" * 180_000  # ~1 MB
    frame = pl.DataFrame({
        "record_id": ["a", "b", "c", "d"],
        "instruction": [None, "", "问题 question вопрос", big],
        "input": [None, None, "", ""],
        "output": [None, "", "答案 answer ответ 答え 😀", big],
    })
    res = F.run_pipeline(frame, F.PipelineConfig.from_yaml(DEFAULT_RECIPE))
    assert res.reconciles() and res.kept.height + res.dropped.height == 4
    assert set(res.dropped["record_id"]) >= {"a", "b"}  # empty answers


def test_empty_strings_from_the_loader(tmp_path):
    """Loader frames (string views) with several empty answers: details of dropped rows work."""
    frame = records_frame(tmp_path, [make_record(output=""), make_record(output=""), make_record(output="好的。")])
    res = F.run_pipeline(frame, F.PipelineConfig.from_yaml(DEFAULT_RECIPE))
    assert res.dropped["filter"].to_list() == ["empty_output", "empty_output"]
    assert res.dropped["detail"].to_list() == ['0 visible chars: ""'] * 2


def test_frame_without_record_id_runs():
    frame = pl.DataFrame({"instruction": ["问"], "input": [""], "output": ["答"]})
    res = F.run_pipeline(frame, F.PipelineConfig.from_dict({"steps": [{"filter": "url"}]}))
    assert res.kept.height == 1 and res.measured == {}


# ----------------------------------------------------------------------------- outputs

def test_write_outputs_read_kept_round_trip(tmp_path):
    frame = records_frame(tmp_path, SAMPLE)
    res = F.run_pipeline(frame, F.PipelineConfig.from_yaml(DEFAULT_RECIPE))
    out = tmp_path / "out"
    paths = F.write_outputs(res, out)
    assert set(F.OUTPUT_FILES) <= {p.name for p in paths.values()}
    back = F.read_kept(out)
    assert back.equals(res.kept)
    assert F.read_kept(out / "kept.parquet").equals(res.kept)
    dropped = pl.read_parquet(out / "dropped.parquet")
    assert dropped.select(list(F.AUDIT_COLUMNS)).equals(res.dropped.select(list(F.AUDIT_COLUMNS)))
    steps = pl.read_csv(out / "steps.csv")
    assert steps["dropped"].to_list() == res.steps["dropped"].to_list()
    # kept.jsonl is COIG-CQIA layout: the loader reads it back to the same records
    lines = (out / "kept.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == res.kept.height
    first = json.loads(lines[0])
    assert list(first)[:9] == list(F.CQIA_FIELDS) and set(first["task_type"]) == {"major", "minor"}
    reread = load(LoadConfig(source=str(out / "kept.jsonl"), cache=False)).frame
    cols = [c for c in SCHEMA if c not in ("record_id", "config", "source_file", "line")]
    assert reread.select(cols).equals(res.kept.select(cols))
    assert any(json.loads(l).get("extra_key") == 1 for l in lines)  # extra keys survive
    # dropped.jsonl: same layout plus the audit fields
    dl = [json.loads(l) for l in (out / "dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(dl) == res.dropped.height
    assert all({"record_id", "step", "step_name", "filter", "value", "detail", "instruction"} <= set(r) for r in dl)


def test_read_kept_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no kept.parquet"):
        F.read_kept(tmp_path)
    pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "kept.parquet")
    with pytest.raises(ValueError, match="missing column"):
        F.read_kept(tmp_path)


# ----------------------------------------------------------------------------- CLI

def test_cli_filter_last_line_and_chaining(tmp_path, capsys, cache, monkeypatch):
    monkeypatch.setenv("CQIA_CACHE_DIR", cache)
    src = tmp_path / "in" / "x.jsonl"
    src.parent.mkdir()
    src.write_bytes(jsonl(SAMPLE))
    out = tmp_path / "out"
    assert main(["filter", "--config", str(DEFAULT_RECIPE), str(src), str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "6 in, 3 kept, 3 dropped"
    assert (out / "kept.parquet").is_file() and (out / "steps.csv").is_file()
    # the next stage starts from the folder (or its kept.parquet)
    out2 = tmp_path / "out2"
    assert main(["filter", "--config", str(DEFAULT_RECIPE), str(out), str(out2)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "3 in, 3 kept, 0 dropped"


def test_cli_filter_exit_2_on_bad_recipe_or_input(tmp_path, capsys):
    bad = write_recipe(tmp_path, "steps:\n  - filter: url\n    max_cont: 1\n")
    out = tmp_path / "out"
    assert main(["filter", "--config", str(bad), "bundled", str(out)]) == 2
    err = capsys.readouterr().err
    assert "step 1 (url)" in err and "max_cont" in err
    assert not out.exists()  # nothing written
    assert main(["filter", "--config", str(DEFAULT_RECIPE), str(tmp_path / "missing"), str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["filter", "--config", str(tmp_path / "nope.yaml"), "bundled", str(out)]) == 2
    assert "recipe not found" in capsys.readouterr().err
    broken = write_recipe(tmp_path, "steps:\n  - filter: url\n   bad indent: [\n")
    assert main(["filter", "--config", str(broken), "bundled", str(out)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bundled data

#: manifest kinds the rule recipe covers (duplicates belong to cqia_nb.filter.dedup)
RULE_KINDS = {"ad", "url", "email", "phone", "qq_wechat", "html_remnant", "html_injection",
              "traditional_chars", "truncated_answer", "empty_output", "repetition", "garbage_chars",
              "answer_repeats_question"}
RECALL_FLOOR = {"truncated_answer": 0.6, "repetition": 0.6}  # the ambiguous kinds; others 1.0


@pytest.mark.skipif(not MANIFEST.is_file() or not bundled_path().is_dir(), reason="bundled data not built")
def test_default_recipe_on_bundled_noise():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(LoadConfig(source="bundled")).frame
    manifest = [json.loads(l) for l in MANIFEST.read_text(encoding="utf-8").splitlines() if l.strip()]
    res = F.run_pipeline(frame, F.PipelineConfig.from_yaml(DEFAULT_RECIPE))
    assert res.reconciles()
    dropped = set(res.dropped["record_id"])
    changed = set().union(*(set(m.filter("changed")["record_id"]) for m in res.measured.values()
                            if "changed" in m.columns))
    per_kind: dict[str, list[bool]] = {}
    for entry in manifest:
        rid = f"{entry['file']}:{entry['line']}"
        for kind in entry["kinds"]:
            if kind in RULE_KINDS:
                caught = rid in changed if kind == "traditional_chars" else rid in dropped
                per_kind.setdefault(kind, []).append(caught)
    assert per_kind, "the manifest lists none of the kinds the rules cover"
    recall = {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}
    print("recall per kind:", {k: f"{sum(v)}/{len(v)}" for k, v in sorted(per_kind.items())})
    low = {k: r for k, r in recall.items() if r < RECALL_FLOOR.get(k, 1.0)}
    assert not low, f"recall below the floor: {low}"
    # each kind is also caught by its own rule when run alone (co-occurring noise such as an
    # ad next to a URL must not hide a weak rule)
    own = {"ad": ["ads"], "url": ["url"], "email": ["email"], "phone": ["phone"], "qq_wechat": ["qq_wechat"],
           "html_remnant": ["html"], "html_injection": ["html"], "traditional_chars": ["traditional"],
           "truncated_answer": ["truncated"], "empty_output": ["empty_output"],
           "repetition": ["consecutive_repeats", "ngram_repetition", "char_repetition"],
           "garbage_chars": ["mojibake", "special_chars"], "answer_repeats_question": ["answer_repeats_question"]}
    alone = {}
    for kind, names in own.items():
        ids = [f"{e['file']}:{e['line']}" for e in manifest if kind in e["kinds"]]
        if not ids:
            continue
        sub = frame.filter(pl.col("record_id").is_in(ids))
        hit = pl.Series([False] * sub.height)
        for n in names:
            hit = hit | ~F.make_filter(n).apply(sub).keep
        alone[kind] = hit.mean()
    print("recall of each kind's own rule:", alone)
    assert all(r >= RECALL_FLOOR.get(k, 1.0) for k, r in alone.items()), alone
    # and the clean records stay: at most 2 % of them dropped
    noisy = {f"{e['file']}:{e['line']}" for e in manifest}
    false_pos = dropped - noisy
    assert len(false_pos) <= 0.02 * (frame.height - len(noisy)), sorted(false_pos)


# ----------------------------------------------------------------------------- real data

@pytest.mark.realdata
def test_default_recipe_on_real_data(real_data, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(LoadConfig(source=str(real_data), cache_dir=cache)).frame
    assert frame.height == 17_971
    res = F.run_pipeline(frame, F.PipelineConfig.from_yaml(DEFAULT_RECIPE))
    assert res.reconciles()
    assert res.kept.height + res.dropped.height == frame.height
    share = res.kept.height / frame.height
    print(f"default recipe keeps {share:.2%} of the real records ({res.summary()})")
    assert share >= 0.95
    # special characters, our definition: >= 99 % of the real records pass at the default
    m = F.make_filter("special_chars").apply(frame)
    assert m.keep.mean() >= 0.99
    # code Q&A passes the non-Chinese filter at its default
    sf = frame.filter(pl.col("config") == "segmentfault")
    assert F.make_filter("non_chinese_ratio").apply(sf).keep.all()
