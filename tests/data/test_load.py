"""The data layer: schema, validation policy, error wording, cache, sources."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import polars as pl
import pytest
from conftest import jsonl, make_record

import cqia_nb.data as data
import cqia_nb.data.parse
from cqia_nb.data.load import LoadConfig, load
from cqia_nb.data.schema import DataQualityWarning, DataValidationError

LFS = (b"version https://git-lfs.github.com/spec/v1\n"
       b"oid sha256:0c609b053610df4b3506dc1fe9efdd69b2561eafd0365d24302634ade0d11e1d\nsize 69117801\n")


def quiet_load(**kw) -> data.LoadResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        return load(LoadConfig(**kw))


def layout(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "ds"
    for rel, raw in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(raw)
    return root


# ----------------------------------------------------------------------------- bundled

def test_bundled_covers_all_configs_and_schema(cache):
    res = load(LoadConfig(source="bundled", cache_dir=cache))
    assert set(res.frame["config"].unique()) == set(data.CONFIGS)
    assert dict(res.frame.schema) == data.SCHEMA
    assert res.problems.height == 0 and res.reconciles()
    assert res.frame["record_id"].n_unique() == res.frame.height
    first = res.frame.row(0, named=True)
    assert first["record_id"] == f"{first['source_file']}:{first['line']}"


def test_auto_source_reads_env(monkeypatch, tmp_path, cache):
    root = layout(tmp_path, {"zhihu/a.jsonl": jsonl([make_record()])})
    monkeypatch.setenv("CQIA_DATA", str(root))
    res = load(LoadConfig(cache_dir=cache))
    assert res.frame["source_file"].to_list() == ["zhihu/a.jsonl"]
    monkeypatch.delenv("CQIA_DATA")
    assert data.resolve_source("auto") == "bundled"


# ----------------------------------------------------------------------------- bad input

def test_crafted_bad_files_are_reported_with_file_line_field(tmp_path, cache):
    good = make_record()
    root = layout(tmp_path, {
        "zhihu/lfs.jsonl": LFS,
        "zhihu/empty.jsonl": b"",
        "zhihu/broken.jsonl": jsonl([good]) + b'{"instruction": "x", \n' + jsonl([good]),
        "zhihu/types.jsonl": jsonl([good, make_record(human_verified="true"), make_record(domain="医疗"),
                                    make_record(task_type={"major": "问答"})]),
        "zhihu/missing.jsonl": jsonl([{k: v for k, v in good.items() if k != "output"}]),
        "zhihu/gbk.jsonl": jsonl([good]) + json.dumps(make_record(output="中文回答"), ensure_ascii=False).encode("gbk") + b"\n",
        "zhihu/array.jsonl": b"[" + json.dumps(good, ensure_ascii=False).encode() + b"]\n",
        "zhihu/notobj.jsonl": b'["a", "b"]\n',
    })
    res = quiet_load(source=str(root), cache_dir=cache)
    p = {(r["file"], r["line"], r["field"]): r["message"] for r in res.problems.iter_rows(named=True)}
    assert "Git LFS pointer" in p[("zhihu/lfs.jsonl", 1, "-")] and "git lfs pull" in p[("zhihu/lfs.jsonl", 1, "-")]
    assert "69,117,801 bytes" in p[("zhihu/lfs.jsonl", 1, "-")]
    assert "empty file" in p[("zhihu/empty.jsonl", 1, "-")]
    assert "malformed JSON" in p[("zhihu/broken.jsonl", 2, "-")]
    assert "expected true or false, got string" in p[("zhihu/types.jsonl", 2, "human_verified")]
    assert "expected a list of strings" in p[("zhihu/types.jsonl", 3, "domain")]
    assert "expected a list of strings" in p[("zhihu/types.jsonl", 4, "task_type.major")]
    assert ("zhihu/types.jsonl", 4, "task_type.minor") not in p  # missing is normalised; major's type is not
    assert "no output text (missing)" in p[("zhihu/missing.jsonl", 1, "output")]
    gbk = p[("zhihu/gbk.jsonl", 2, "-")]
    assert "not UTF-8" in gbk and "GB18030" in gbk and "iconv" in gbk
    assert "JSON array, not JSON Lines" in p[("zhihu/array.jsonl", 1, "-")]
    assert "expected a JSON object per line" in p[("zhihu/notobj.jsonl", 1, "-")]
    # Counts reconcile: every record read is loaded or rejected; good lines of bad files load.
    assert res.reconciles()
    files = {r["file"]: r for r in res.files.iter_rows(named=True)}
    assert files["zhihu/broken.jsonl"]["loaded"] == 2 and files["zhihu/broken.jsonl"]["rejected"] == 1
    assert files["zhihu/types.jsonl"]["loaded"] == 1 and files["zhihu/types.jsonl"]["rejected"] == 3
    assert files["zhihu/lfs.jsonl"]["status"] == "lfs-pointer" and files["zhihu/empty.jsonl"]["status"] == "empty"
    assert res.n_loaded == 2 + 1 + 1  # broken, types, gbk: their good lines


def test_bom_crlf_blank_lines_and_u2028(tmp_path, cache):
    recs = [make_record(output="第一行\u2028仍是同一条记录"), make_record(instruction="第二条")]
    raw = b"\xef\xbb\xbf" + jsonl(recs[:1]).replace(b"\n", b"\r\n") + b"\r\n   \n" + jsonl(recs[1:])
    root = layout(tmp_path, {"xhs/x.jsonl": raw})
    res = load(LoadConfig(source=str(root), cache_dir=cache))
    assert res.problems.height == 0
    assert res.frame["line"].to_list() == [1, 4]  # blank lines keep the numbering of the file
    assert res.frame["output"][0] == "第一行\u2028仍是同一条记录"


def test_unknown_keys_are_kept_in_extra(tmp_path, cache):
    root = layout(tmp_path, {"wiki/w.jsonl": jsonl([make_record(score=9.5, task_type={"major": [], "minor": [], "x": 1})])})
    res = load(LoadConfig(source=str(root), cache_dir=cache))
    assert json.loads(res.frame["extra"][0]) == {"score": 9.5, "task_type": {"x": 1}}


def test_fast_and_careful_paths_agree(monkeypatch):
    raw = jsonl([make_record(instruction=f"问题{i}", domain=[], task_type={"major": ["问答"], "minor": []})
                 for i in range(50)])
    fast = data.parse_jsonl_bytes(raw)
    monkeypatch.setattr(cqia_nb.data.parse, "_parse_fast", lambda raw: None)
    slow = data.parse_jsonl_bytes(raw)
    assert fast.table.equals(slow.table)
    assert fast.records_read == slow.records_read == 50


def test_null_inside_lists_goes_to_careful_path():
    raw = jsonl([make_record(domain=[None])])
    res = data.parse_jsonl_bytes(raw)
    assert res.rejected == 1 and res.problems[0][1] == "domain"


def test_strict_policy_raises_with_locations(tmp_path, cache):
    root = layout(tmp_path, {"exam/e.jsonl": jsonl([make_record()]) + b"not json\n"})
    with pytest.raises(DataValidationError) as err:
        load(LoadConfig(source=str(root), policy="strict", cache_dir=cache))
    assert "exam/e.jsonl:2: -: malformed JSON" in str(err.value)
    assert err.value.problems.height == 1


def test_collect_policy_warns(tmp_path, cache):
    root = layout(tmp_path, {"exam/e.jsonl": b"nope\n"})
    with pytest.warns(DataQualityWarning, match="1 problem"):
        load(LoadConfig(source=str(root), cache_dir=cache))


def test_missing_path_and_unknown_config(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load(LoadConfig(source=str(tmp_path / "nope"), cache_dir=cache))
    root = layout(tmp_path, {"zhihu/a.jsonl": jsonl([make_record()])})
    with pytest.raises(ValueError, match="configs found: \\['zhihu'\\]"):
        load(LoadConfig(source=str(root), configs=("xhs",), cache_dir=cache))


# ----------------------------------------------------------------------------- layout

CARD = """---
configs:
- config_name: "zhihu"
  data_files:
  - split: train
    path: zhihu/*
- config_name: "finance"
- config_name: "finance"
  data_files:
  - split: train
    path: finance/*
---
# card
"""


def test_card_configs_drive_discovery_and_unclaimed_files_are_reported(tmp_path, cache):
    root = layout(tmp_path, {"README.md": CARD.encode(), "zhihu/a.jsonl": jsonl([make_record()]),
                             "finance/f.jsonl": jsonl([make_record()]), "FULL.jsonl": jsonl([make_record()]),
                             "other/o.jsonl": jsonl([make_record()]), "zhihu/notes.txt": b"hello"})
    assert data.read_card_configs(root) == {"zhihu": ["zhihu/*"], "finance": ["finance/*"]}
    res = quiet_load(source=str(root), cache_dir=cache)
    status = dict(res.files.select("file", "status").iter_rows())
    assert status == {"FULL.jsonl": "outside-configs", "finance/f.jsonl": "ok", "other/o.jsonl": "outside-configs",
                      "zhihu/a.jsonl": "ok", "zhihu/notes.txt": "unsupported"}
    assert res.n_loaded == 2 and res.problems.height == 3


def test_single_file_source(tmp_path, cache):
    root = layout(tmp_path, {"ruozhiba/r.jsonl": jsonl([make_record(), make_record()])})
    res = load(LoadConfig(source=str(root / "ruozhiba" / "r.jsonl"), cache_dir=cache))
    assert res.frame["config"].to_list() == ["ruozhiba", "ruozhiba"]
    assert res.frame["record_id"].to_list() == ["r.jsonl:1", "r.jsonl:2"]


def test_null_or_missing_optional_fields_load_as_empty_values_and_are_counted(tmp_path, cache):
    bare = {"instruction": "问题", "output": "回答"}  # what a user writes by hand: only the text
    root = layout(tmp_path, {"zhihu/a.jsonl": jsonl([
        make_record(input=None),
        bare,
        make_record(task_type=None, domain=None, human_verified=None),
        make_record(task_type={"major": None}),
        make_record(output=None),                       # no output text: rejected
        {k: v for k, v in make_record().items() if k != "instruction"},  # no instruction: rejected
        make_record(),
    ])})
    res = quiet_load(source=str(root), cache_dir=cache)
    assert res.n_loaded == 5 and res.n_rejected == 2 and res.reconciles()
    assert res.n_normalized == 4 and res.files["normalized"].to_list() == [4]
    rows = res.frame.sort("line").to_dicts()
    assert rows[0]["input"] == "" and rows[1]["task_type_major"] == [] and rows[1]["metadata"] == ""
    assert rows[1]["human_verified"] is False and rows[1]["answer_from"] == "" and rows[1]["extra"] == ""
    assert rows[2]["domain"] == [] and rows[2]["task_type_minor"] == [] and rows[3]["task_type_minor"] == []
    notes = {(r["field"], r["message"]): (r["records"], r["first_line"]) for r in res.notes.iter_rows(named=True)}
    assert notes[("input", 'null: loaded as ""')] == (1, 1)
    assert notes[("input", 'missing: loaded as ""')] == (1, 2)
    assert notes[("task_type", 'null: loaded as {"major": [], "minor": []}')] == (1, 3)
    assert notes[("task_type.minor", "missing: loaded as []")] == (1, 4)
    assert notes[("human_verified", "missing: loaded as false")] == (1, 2)
    p = {(r["line"], r["field"]): r["message"] for r in res.problems.iter_rows(named=True)}
    assert p == {(5, "output"): "no output text (null): a record needs its instruction and output; fix or remove this line",
                 (6, "instruction"): "no instruction text (missing): a record needs its instruction and output; "
                                     "fix or remove this line"}
    assert "4 normalised" in res.summary()
    assert data.format_notes(res.notes).splitlines()[0] == 'zhihu/a.jsonl: input: null: loaded as "" in 1 record(s) (first at line 1)'
    again = quiet_load(source=str(root), cache_dir=cache)  # the notes come back from the cache too
    assert again.from_cache and again.notes.equals(res.notes) and again.n_normalized == 4
    # Wrong types are still rejected: only null/missing is normalised.
    assert data.validate_record(make_record(input=3)) == [("input", "expected a string, got integer 3")]


def test_gzip_and_zstd_files_are_read_and_gzip_bytes_are_named(tmp_path, cache):
    import gzip

    recs = [make_record(instruction="压缩的问题")]
    files = {"zhihu/a.jsonl.gz": gzip.compress(jsonl(recs)), "zhihu/plain.jsonl": jsonl(recs),
             "zhihu/wrong.jsonl": gzip.compress(jsonl(recs)), "zhihu/bad.jsonl.gz": b"\x1f\x8bnot gzip"}
    try:
        import zstandard
    except ImportError:
        zstandard = None
    files["zhihu/z.jsonl.zst"] = (zstandard.ZstdCompressor().compress(jsonl(recs)) if zstandard
                                  else b"\x28\xb5\x2f\xfd")
    root = layout(tmp_path, files)
    res = quiet_load(source=str(root), cache_dir=cache)
    p = {r["file"]: r["message"] for r in res.problems.iter_rows(named=True)}
    assert p["zhihu/wrong.jsonl"] == ("gzip-compressed bytes (magic 1f 8b): name the file .jsonl.gz or "
                                      "decompress it")
    assert p["zhihu/bad.jsonl.gz"].startswith("not valid gzip data")
    loaded = set(res.frame["source_file"])
    assert {"zhihu/a.jsonl.gz", "zhihu/plain.jsonl"} <= loaded
    if zstandard is not None:
        assert "zhihu/z.jsonl.zst" in loaded
    else:
        assert "needs the zstandard package" in p["zhihu/z.jsonl.zst"]
    assert res.frame.filter(pl.col("source_file") == "zhihu/a.jsonl.gz")["instruction"].to_list() == ["压缩的问题"]
    status = dict(res.files.select("file", "status").iter_rows())
    assert status["zhihu/wrong.jsonl"] == "compressed" and status["zhihu/bad.jsonl.gz"] == "unreadable"
    assert res.reconciles()
    # A top-level compressed file is a config of its own (without a card), and a file on its own loads.
    solo = layout(tmp_path / "solo", {"xhs.jsonl.gz": gzip.compress(jsonl(recs))})
    assert data.discover_files(solo) == [("xhs", solo / "xhs.jsonl.gz")]
    assert load(LoadConfig(source=str(solo / "xhs.jsonl.gz"), cache_dir=cache)).n_loaded == 1


# ----------------------------------------------------------------------------- cache

def test_cache_hit_miss_and_damage(tmp_path, cache):
    root = layout(tmp_path, {"zhihu/a.jsonl": jsonl([make_record()])})
    first = load(LoadConfig(source=str(root), cache_dir=cache))
    second = load(LoadConfig(source=str(root), cache_dir=cache))
    assert not first.from_cache and second.from_cache
    assert second.frame.equals(first.frame)
    # Same bytes, new mtime (a fresh clone): hashed again, still a hit.
    f = root / "zhihu" / "a.jsonl"
    os.utime(f, ns=(1, 1))
    assert load(LoadConfig(source=str(root), cache_dir=cache)).from_cache
    # Changed content: never served stale.
    f.write_bytes(jsonl([make_record(output="新的回答")]))
    third = load(LoadConfig(source=str(root), cache_dir=cache))
    assert not third.from_cache and third.frame["output"][0] == "新的回答"
    # A damaged cache entry is rebuilt, not trusted.
    for p in Path(cache).glob("*.records.arrow"):
        p.write_bytes(b"garbage")
    fourth = load(LoadConfig(source=str(root), cache_dir=cache))
    assert fourth.frame["output"][0] == "新的回答"


def test_changed_bytes_with_restored_size_and_mtime_are_not_served_stale(tmp_path, cache):
    # A file rewritten in place (same size) whose mtime is then put back (cp -p, rsync -t, os.utime):
    # size and mtime match the stat index, inode and ctime do not.
    root = layout(tmp_path, {"zhihu/a.jsonl": jsonl([make_record(output="旧的回答")])})
    f = root / "zhihu" / "a.jsonl"
    first = load(LoadConfig(source=str(root), cache_dir=cache))
    st = f.stat()
    new = jsonl([make_record(output="新的回答")])
    assert len(new) == st.st_size
    f.write_bytes(new)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second = load(LoadConfig(source=str(root), cache_dir=cache))
    assert first.frame["output"][0] == "旧的回答" and second.frame["output"][0] == "新的回答"
    assert not second.from_cache


def test_fast_path_handles_records_longer_than_a_block_and_checks_utf8(monkeypatch):
    # One record of 1.2 MB in a file parsed in 256 KiB blocks: Arrow's reader says "straddling
    # object" and the file is parsed again in one block, still on the fast path.
    raw = jsonl([make_record(output="长" * 400_000)] + [make_record()] * 2000)
    calls = []
    real = cqia_nb.data.parse._read_json
    monkeypatch.setattr(cqia_nb.data.parse, "_read_json", lambda r, b: calls.append(b) or real(r, b))
    fast = data.parse_jsonl_bytes(raw)
    assert len(calls) == 2 and calls[1] == len(raw) + 1 and fast.records_read == 2001
    monkeypatch.setattr(cqia_nb.data.parse, "_parse_fast", lambda raw: None)
    assert data.parse_jsonl_bytes(raw).table.equals(fast.table)
    # Invalid UTF-8 inside a string (Arrow's reader would pass it through) goes to the careful path.
    monkeypatch.undo()
    bad = jsonl([make_record()]) + jsonl([make_record(output="x")]).replace(b'"x"', b'"x\xff"')
    res = data.parse_jsonl_bytes(bad)
    assert res.rejected == 1 and res.problems[0][0] == 2 and "not UTF-8: byte 0xff" in res.problems[0][2]


def test_cold_load_streams_into_the_cache_and_equals_a_load_without_it(tmp_path, cache):
    root = layout(tmp_path, {f"zhihu/{i}.jsonl": jsonl([make_record(instruction=f"问题{i}-{j}") for j in range(30)])
                             for i in range(4)} | {"zhihu/bad.jsonl": b"nope\n"})
    cold = quiet_load(source=str(root), cache_dir=cache)
    plain = quiet_load(source=str(root), cache=False)
    warm = quiet_load(source=str(root), cache_dir=cache)
    assert not cold.from_cache and warm.from_cache
    for name in ("frame", "problems", "files", "notes"):
        assert getattr(cold, name).equals(getattr(plain, name)) and getattr(warm, name).equals(getattr(plain, name))
    assert cold.frame["record_id"].to_list()[:2] == ["zhihu/0.jsonl:1", "zhihu/0.jsonl:2"]
    assert not [p for p in Path(cache).iterdir() if p.name.endswith(".tmp")]


def test_cache_write_failing_midway_warns_and_loads_everything(tmp_path, cache, monkeypatch):
    import cqia_nb.data.cache as C

    root = layout(tmp_path, {f"zhihu/{i}.jsonl": jsonl([make_record(instruction=f"问题{i}")]) for i in range(5)})
    calls = {"n": 0}
    real = C.RecordsWriter.write

    def full(self, chunk):
        calls["n"] += 1
        if calls["n"] == 3:  # after two files were streamed into the entry
            raise OSError(28, "No space left on device")
        return real(self, chunk)

    monkeypatch.setattr(C.RecordsWriter, "write", full)
    with pytest.warns(UserWarning, match="could not write the cache in .*No space left"):
        res = load(LoadConfig(source=str(root), cache_dir=cache))
    assert res.n_loaded == 5 and res.reconciles() and not res.from_cache
    assert res.frame.equals(load(LoadConfig(source=str(root), cache=False)).frame)
    assert not [p for p in Path(cache).iterdir() if p.name.endswith(".tmp")]  # nothing half-written
    monkeypatch.undo()
    assert not load(LoadConfig(source=str(root), cache_dir=cache)).from_cache  # no entry was left


def test_index_keys_and_card_memo_follow_the_files(tmp_path):
    from cqia_nb.data.cache import index_key

    real = tmp_path / "real"
    real.mkdir()
    (real / "a.jsonl").write_bytes(b"x")
    (tmp_path / "link").symlink_to(real)  # a folder symlink and a file symlink resolve like Path.resolve
    (real / "b.jsonl").symlink_to(real / "a.jsonl")
    dirs: dict = {}
    for f in (tmp_path / "link" / "a.jsonl", tmp_path / "link" / "b.jsonl", real / "a.jsonl"):
        assert index_key(f, dirs) == str(f.resolve())
    # The card is parsed once per version of the file: a rewritten card is read again.
    card = tmp_path / "ds" / "README.md"
    card.parent.mkdir()
    card.write_text('---\nconfigs:\n- config_name: "a"\n  data_files: "a/*"\n---\n')
    assert data.read_card_configs(card.parent) == {"a": ["a/*"]}
    card.write_text('---\nconfigs:\n- config_name: "b"\n  data_files: "b/*"\n---\n')  # same size
    assert data.read_card_configs(card.parent) == {"b": ["b/*"]}


# ----------------------------------------------------------------------------- streaming cache

def _cache_tmp_files(cache: str) -> list[Path]:
    return [p for p in Path(cache).iterdir() if p.name.endswith(".tmp")] if Path(cache).exists() else []


def _same_result(a: data.LoadResult, b: data.LoadResult) -> None:
    for name in ("frame", "problems", "files", "notes"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.schema == y.schema, name
        assert x.equals(y), name


def _cold_warm_plain(source: Path, cache: str) -> tuple[data.LoadResult, data.LoadResult, data.LoadResult]:
    """Load ``source`` cold into ``cache``, warm from it, and without a cache; check the three agree."""
    plain = quiet_load(source=str(source), cache=False)
    cold = quiet_load(source=str(source), cache_dir=cache)
    warm = quiet_load(source=str(source), cache_dir=cache)
    assert not cold.from_cache and warm.from_cache
    _same_result(cold, plain)
    _same_result(warm, plain)
    return cold, warm, plain


def test_cached_records_are_string_views_and_round_trip(tmp_path, cache):
    import shutil

    import pyarrow as pa

    # Strings inlined in the 16-byte view (<= 12 bytes), just over it, long, empty, multi-byte,
    # U+2028 and an emoji; lists with the same.
    texts = ["", "a", "abcdefghijkl", "abcdefghijklm", "长" * 5000, "第一行\u2028第二行", "😀" * 4, "x\ty\n\"z\""]
    recs = [make_record(instruction=f"问{i}" + t, input=t, output=t + "答", metadata=t,
                        domain=[t, "通用"] if t else [], task_type={"major": [t] if t else [], "minor": ["m", t]})
            for i, t in enumerate(texts)]
    root = layout(tmp_path, {"zhihu/a.jsonl": jsonl(recs[:4]), "xhs/b.jsonl": jsonl(recs[4:])})
    cold, warm, plain = _cold_warm_plain(root, cache)
    assert dict(plain.frame.schema) == dict(data.SCHEMA)
    # The entry holds string views (what polars maps without a copy), one batch per file.
    (records,) = Path(cache).glob("*.records.arrow")
    reader = pa.ipc.open_file(str(records))
    assert reader.schema.field("instruction").type == pa.string_view()
    assert reader.schema.field("domain").type.value_type == pa.string_view()
    assert reader.num_record_batches == 2
    got = {r["line"] + 100 * (r["config"] == "xhs"): r for r in warm.frame.to_dicts()}
    for i, t in enumerate(texts):
        r = got[i + 1 if i < 4 else 100 + i - 3]
        assert (r["input"], r["output"], r["metadata"]) == (t, t + "答", t)
        assert r["domain"] == ([t, "通用"] if t else []) and r["task_type_minor"] == ["m", t]
    # Both frames map the entry: they stay readable when the cache folder is removed under them.
    expected = plain.frame.to_dicts()
    shutil.rmtree(cache)
    assert cold.frame.to_dicts() == expected and warm.frame.to_dicts() == expected


def test_warm_load_reads_no_data_file(tmp_path, cache, monkeypatch):
    # The cold load remembered every file's hash in the stat index (computed on the hasher thread
    # while it streamed), so the next load is served from the stat index alone.
    root = layout(tmp_path, {f"zhihu/{i}.jsonl": jsonl([make_record(instruction=f"问题{i}")] * 3) for i in range(5)})
    cold = quiet_load(source=str(root), cache_dir=cache)
    real = Path.read_bytes

    def no_data(self):
        if self.suffix == ".jsonl":
            raise AssertionError(f"a warm load read {self}")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", no_data)
    warm = quiet_load(source=str(root), cache_dir=cache)
    assert warm.from_cache
    _same_result(warm, cold)
    index = json.loads((Path(cache) / "stat-index.json").read_text())
    assert sorted(index[str((root / "zhihu" / f"{i}.jsonl").resolve())][-1] for i in range(5)) == sorted(
        cold.files["sha256"].to_list())


def test_cache_is_invalidated_when_files_change_are_added_renamed_or_removed(tmp_path, cache):
    root = layout(tmp_path, {f"zhihu/{i}.jsonl": jsonl([make_record(instruction=f"问题{i}-{j}") for j in range(3)])
                             for i in range(3)})

    def check(expect_cached: bool) -> data.LoadResult:
        res = quiet_load(source=str(root), cache_dir=cache)
        assert res.from_cache is expect_cached
        _same_result(res, quiet_load(source=str(root), cache=False))
        return res

    check(False)
    check(True)
    f = root / "zhihu" / "1.jsonl"
    f.write_bytes(jsonl([make_record(instruction="改过的问题")]))  # other size
    assert check(False).frame.filter(pl.col("source_file") == "zhihu/1.jsonl")["instruction"].to_list() == ["改过的问题"]
    check(True)
    same_size = jsonl([make_record(instruction="改过的问吗")])  # same size, new bytes, new mtime
    assert len(same_size) == f.stat().st_size
    f.write_bytes(same_size)
    assert check(False).frame.filter(pl.col("source_file") == "zhihu/1.jsonl")["instruction"].to_list() == ["改过的问吗"]
    (root / "zhihu" / "3.jsonl").write_bytes(jsonl([make_record(instruction="新文件")]))
    assert check(False).n_loaded == 8
    check(True)
    (root / "zhihu" / "3.jsonl").rename(root / "zhihu" / "4.jsonl")
    assert "zhihu/4.jsonl" in check(False).frame["source_file"].to_list()
    (root / "zhihu" / "4.jsonl").unlink()
    assert check(True).n_loaded == 7  # the entry of these three files, as they are now
    assert not _cache_tmp_files(cache)


def test_bad_lines_in_large_files_are_reported_with_file_line_and_field_cold_and_warm(tmp_path, cache):
    # Files over 512 KiB are parsed in several blocks on the fast path; one bad line sends the file
    # to the careful path, which must still name the file, the line and the field.
    good = [make_record(instruction=f"问题{i}", output="回答" * 40) for i in range(3000)]
    big = jsonl(good[:1500]) + jsonl([make_record(human_verified="yes")]) + jsonl(good[1500:2500]) \
        + b'{"instruction": \n' + jsonl(good[2500:])
    utf8 = jsonl(good[:2000]) + jsonl([make_record(output="x")]).replace(b'"x"', b'"x\xff"') + jsonl(good[:10])
    assert len(big) > 1 << 20 and len(utf8) > 1 << 19
    root = layout(tmp_path, {"zhihu/big.jsonl": big, "zhihu/utf8.jsonl": utf8, "zhihu/ok.jsonl": jsonl(good[:5])})
    cold = quiet_load(source=str(root), cache_dir=cache)
    warm = quiet_load(source=str(root), cache_dir=cache)
    assert warm.from_cache
    _same_result(cold, quiet_load(source=str(root), cache=False))
    _same_result(warm, cold)
    where = [(r["file"], r["line"], r["field"]) for r in warm.problems.iter_rows(named=True)]
    assert where == [("zhihu/big.jsonl", 1501, "human_verified"), ("zhihu/big.jsonl", 2502, "-"),
                     ("zhihu/utf8.jsonl", 2001, "-")]
    msgs = warm.problems["message"].to_list()
    assert "expected true or false" in msgs[0] and "malformed JSON" in msgs[1] and "not UTF-8: byte 0xff" in msgs[2]
    files = {r["file"]: r for r in warm.files.iter_rows(named=True)}
    assert (files["zhihu/big.jsonl"]["loaded"], files["zhihu/big.jsonl"]["rejected"]) == (3000, 2)
    assert (files["zhihu/utf8.jsonl"]["loaded"], files["zhihu/utf8.jsonl"]["rejected"]) == (2010, 1)
    assert warm.reconciles() and warm.n_loaded == 3000 + 2010 + 5
    ids = set(warm.frame.filter(pl.col("source_file") == "zhihu/big.jsonl")["record_id"])
    assert "zhihu/big.jsonl:1500" in ids and "zhihu/big.jsonl:1501" not in ids and "zhihu/big.jsonl:3002" in ids
    with pytest.raises(DataValidationError, match="zhihu/big.jsonl.*1501"):
        load(LoadConfig(source=str(root), cache_dir=cache, policy="strict"))


def test_cache_write_failing_on_the_first_file_keeps_the_records_in_memory(tmp_path, cache, monkeypatch):
    import cqia_nb.data.cache as C

    root = layout(tmp_path, {f"zhihu/{i}.jsonl": jsonl([make_record(instruction=f"问题{i}")]) for i in range(4)})

    def full(self, chunk):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(C.RecordsWriter, "write", full)
    with pytest.warns(UserWarning, match="could not write the cache in .*No space left"):
        res = load(LoadConfig(source=str(root), cache_dir=cache))
    monkeypatch.undo()
    _same_result(res, load(LoadConfig(source=str(root), cache=False)))
    assert not _cache_tmp_files(cache) and not list(Path(cache).glob("*.arrow"))
    assert not load(LoadConfig(source=str(root), cache_dir=cache)).from_cache


def test_records_file_that_cannot_be_renamed_into_place_still_gives_the_frame(tmp_path, cache, monkeypatch):
    import cqia_nb.data.cache as C

    root = layout(tmp_path, {f"zhihu/{i}.jsonl": jsonl([make_record(instruction=f"问题{i}")] * 2) for i in range(3)})
    real = os.replace

    def refuse(src, dst, *a, **kw):
        if str(dst).endswith(".records.arrow"):
            raise PermissionError(13, "Permission denied")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(C.os, "replace", refuse)
    with pytest.warns(UserWarning, match="could not write the cache in .*Permission denied"):
        res = load(LoadConfig(source=str(root), cache_dir=cache))
    monkeypatch.undo()
    assert res.n_loaded == 6 and not res.from_cache
    _same_result(res, load(LoadConfig(source=str(root), cache=False)))
    assert not _cache_tmp_files(cache)  # the temporary records file is gone; the frame still reads
    assert res.frame["instruction"].to_list() == [f"问题{i}" for i in range(3) for _ in range(2)]
    assert not load(LoadConfig(source=str(root), cache_dir=cache)).from_cache


def test_strict_policy_applies_to_cached_loads(tmp_path, cache):
    root = layout(tmp_path, {"exam/e.jsonl": b"nope\n"})
    quiet_load(source=str(root), cache_dir=cache)
    with pytest.raises(DataValidationError):
        load(LoadConfig(source=str(root), cache_dir=cache, policy="strict"))


# ----------------------------------------------------------------------------- hub

class FakeDatasets:
    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def load_dataset(self, **kwargs):
        self.calls.append(kwargs)
        return list(self.rows)


def test_hub_arguments_and_validation(monkeypatch):
    import datasets

    fake = FakeDatasets([make_record(), make_record(output=None)])
    monkeypatch.setattr(datasets, "load_dataset", fake.load_dataset)
    res = quiet_load(source="hub", configs=("ruozhiba", "xhs"), hub_revision="abc123")
    assert fake.calls == [{"path": "m-a-p/COIG-CQIA", "name": "ruozhiba", "split": "train", "revision": "abc123"},
                          {"path": "m-a-p/COIG-CQIA", "name": "xhs", "split": "train", "revision": "abc123"}]
    assert res.n_loaded == 2 and res.n_rejected == 2 and res.reconciles()
    assert res.problems["file"][0] == "hub:m-a-p/COIG-CQIA/ruozhiba" and res.problems["line"][0] == 2
    assert res.frame["config"].to_list() == ["ruozhiba", "xhs"]


def test_hub_rows_with_none_for_missing_keys_load_normalised(monkeypatch):
    import datasets

    # `datasets` gives every row every column of the config, None where a record lacked the key.
    row = {**make_record(), "input": None, "domain": None, "metadata": None}
    fake = FakeDatasets([row, make_record(), {**make_record(), "instruction": None}])
    monkeypatch.setattr(datasets, "load_dataset", fake.load_dataset)
    res = quiet_load(source="hub", configs=("ruozhiba",))
    assert res.n_loaded == 2 and res.n_rejected == 1 and res.n_normalized == 1 and res.reconciles()
    assert res.frame["input"][0] == "" and res.frame["domain"].to_list()[0] == [] and res.frame["metadata"][0] == ""
    assert sorted(res.notes["field"]) == ["domain", "input", "metadata"]
    assert set(res.notes["message"]) == {'null: loaded as ""', "null: loaded as []"}
    assert res.problems["field"].to_list() == ["instruction"]


def test_hub_rejects_unknown_config_and_wraps_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown COIG-CQIA config 'zhihu2'"):
        data.hub_load_kwargs("zhihu2")
    import datasets

    def boom(**kw):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(RuntimeError, match="check your connection or clone the dataset"):
        load(LoadConfig(source="hub", configs=("xhs",)))


# ----------------------------------------------------------------------------- counts

def test_config_counts_include_configs_without_loadable_files(tmp_path, cache):
    root = layout(tmp_path, {"zhihu/a.jsonl": jsonl([make_record(), make_record(answer_from="llm")]),
                             "wikihow/w.jsonl": LFS})
    res = quiet_load(source=str(root), cache_dir=cache)
    counts = data.config_counts(res.frame, res.files)
    rows = {r["config"]: r for r in counts.iter_rows(named=True)}
    assert rows["wikihow"]["records"] == 0 and rows["wikihow"]["files_not_loaded"] == 1
    assert rows["zhihu"]["records"] == 2 and rows["zhihu"]["answer_llm"] == 1


# ----------------------------------------------------------------------------- real data tier

@pytest.mark.realdata
def test_real_copy_loads_completely(real_data, cache):
    res = quiet_load(source=str(real_data), cache_dir=cache)
    assert (res.files["status"] == "ok").sum() == 39
    assert res.n_loaded == 17_971 and res.n_rejected == 0 and res.reconciles()
    lfs = res.files.filter(pl.col("status") == "lfs-pointer")["file"].to_list()
    assert sorted(lfs) == ["COIG-CQIA-full.jsonl", "finance/mba_baike.jsonl", "wiki/bkmy_medicine.jsonl",
                           "wikihow/wikihow.jsonl"]
    assert res.problems.height == 4
    # U+2028 inside xhs strings must not split records.
    assert res.frame.filter(pl.col("config") == "xhs").height == 1508
    warm = quiet_load(source=str(real_data), cache_dir=cache)
    assert warm.from_cache and warm.frame.equals(res.frame)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_copy_streamed_cached_and_in_memory_loads_are_identical(real_data, tmp_path):
    # The cold load streams file by file into the cache and returns the mapped entry; without the
    # cache the per-file frames are concatenated in memory; the warm load maps the entry. Same result.
    cache = str(tmp_path / "cache")
    cold, warm, plain = _cold_warm_plain(real_data, cache)
    assert cold.frame["record_id"].is_unique().all() and cold.n_loaded == 17_971
    # File order, then line order, as the files table lists them.
    order = {f: i for i, f in enumerate(plain.files["file"].to_list())}
    keys = [(order[f], ln) for f, ln in zip(plain.frame["source_file"], plain.frame["line"])]
    assert keys == sorted(keys)
