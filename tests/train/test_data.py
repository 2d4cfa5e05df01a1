"""cqia_nb.train.data: the training loader's contract — every row read is used or dropped, every
dropped or truncated conversation is reported with its reason and location; strict stops at the first."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from cqia_nb.train.config import TrainConfig, TrainConfigError
from cqia_nb.train.data import (
    Conversations,
    TrainDataError,
    build_datasets,
    data_report,
    load_conversations,
    load_tokenizer,
    tiny_base_model,
)

GOOD = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"}]}


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l, ensure_ascii=False)) + "\n" for l in lines),
                    encoding="utf-8")
    return path


@pytest.fixture
def messy(tmp_path) -> Path:
    return write_jsonl(tmp_path / "messy.jsonl", [
        GOOD,                                                                                   # 1 used
        {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": None}]},  # 2 null
        {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": ""}]},    # 3 empty
        {"messages": [{"role": "user", "content": "问"}]},                                          # 4 no turn
        {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": 5}]},     # 5 not a string
        '{"messages": [',                                                                      # 6 not JSON
        {"instruction": "问", "input": None, "output": "答"},                                  # 7 used (null input)
        {"instruction": "问", "output": None},                                                 # 8 null output
        {"text": "预训练文本"},                                                                 # 9 unknown shape
        "",                                                                                    # 10 blank: not a row
        {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]},  # 11 used
    ])


def test_every_row_is_used_or_dropped_with_reason_and_line(messy):
    cfg = TrainConfig.from_dict({"data": str(messy)})
    convs = load_conversations(cfg)
    acc = convs.account
    assert isinstance(convs, Conversations) and len(convs) == 3 == len(convs.where)
    assert acc.read == 10 and acc.dropped == 7 and acc.read == len(convs) + acc.dropped
    reasons = {i.line: i.reason for i in acc.issues}
    assert reasons == {
        2: "no assistant text (assistant content empty or null)",
        3: "no assistant text (assistant content empty or null)",
        4: "no assistant text (no assistant turn)",
        5: "messages[1].content: expected a string, got a number 5",
        6: reasons[6],
        8: "no assistant text (output null)",
        9: "no messages and no instruction/output (keys: text)",
    }
    assert reasons[6].startswith("not valid JSON")
    assert all(i.action == "dropped" and i.file == str(messy) and i.unit == "line" for i in acc.issues)
    assert str(acc.issues[0]) == f"{messy}:2: dropped: no assistant text (assistant content empty or null)"
    assert sorted(w[1] for w in convs.where) == [1, 7, 11]


def test_strict_policy_stops_at_the_first_problem(messy):
    cfg = TrainConfig.from_dict({"data": str(messy), "policy": "strict"})
    with pytest.raises(TrainDataError, match=rf"data: {messy}:2: dropped: no assistant text .*policy: strict"):
        load_conversations(cfg)
    with pytest.raises(TrainConfigError, match="policy: must be collect .* or strict"):
        TrainConfig.from_dict({"policy": "lenient"})


def test_parquet_rows_gzip_files_and_max_records(tmp_path):
    rows = [GOOD, {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": ""}]}, GOOD]
    pq = tmp_path / "d.parquet"
    pl.DataFrame(rows).write_parquet(pq)
    convs = load_conversations(TrainConfig.from_dict({"data": str(pq)}))
    (issue,) = convs.account.issues
    assert (issue.file, issue.line, issue.unit, issue.where) == (str(pq), 2, "row", f"{pq} row 2")
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress((json.dumps(GOOD, ensure_ascii=False) + "\n").encode() * 5))
    capped = load_conversations(TrainConfig.from_dict({"data": str(gz), "max_records": 2}))
    acc = capped.account
    assert len(capped) == 2 and acc.read == 5 and acc.dropped == 3 and acc.read == len(capped) + acc.dropped
    assert {i.reason for i in acc.issues} == {"beyond max_records (2, after the seeded shuffle)"}
    wrong = write_jsonl(tmp_path / "g.jsonl", [])
    wrong.write_bytes(gzip.compress(b"{}\n"))
    with pytest.raises(TrainConfigError, match=r"gzip-compressed bytes \(magic 1f 8b\): name the file .jsonl.gz"):
        load_conversations(TrainConfig.from_dict({"data": str(wrong)}))


def test_bundled_records_without_answers_are_counted():
    convs = load_conversations(TrainConfig.from_dict({"data": "bundled"}))
    acc = convs.account
    assert acc.read == len(convs) + acc.dropped and acc.dropped >= 1
    assert all(i.reason.startswith("no assistant text") and i.unit == "line" and ".jsonl" in i.file
               for i in acc.issues)


def test_truncated_and_label_less_conversations_are_reported(tmp_path):
    long_answer = "很长的回答。" * 40
    late = {"messages": [{"role": "user", "content": "很长的问题，" * 40}, {"role": "assistant", "content": "答"}]}
    data = write_jsonl(tmp_path / "t.jsonl", [GOOD, {"messages": [GOOD["messages"][0],
                                                                  {"role": "assistant", "content": long_answer}]},
                                              late])
    cfg = TrainConfig.from_dict({"data": str(data), "max_length": 48, "tiny_vocab_size": 600})
    convs = load_conversations(cfg)
    tok = load_tokenizer(tiny_base_model(cfg, convs), cfg.chat_template)
    train, val = build_datasets(cfg, tok, convs)
    report = data_report(cfg, convs)
    acc = convs.account
    assert val is None and len(train) == 2 == acc.used and acc.read == 3 == acc.used + acc.dropped
    by_line = {i.line: i for i in acc.issues}
    assert by_line[2].action == "truncated" and by_line[2].reason.startswith("cut at max_length 48: ")
    assert by_line[3].action == "dropped" and by_line[3].reason.startswith("no assistant token within max_length 48")
    assert report.reconciles() and report.truncated == 1 and report.dropped == 1
    assert report.summary() == (f"train data {data}: 3 read = 2 used + 1 dropped (no assistant token within "
                                "max_length 48: 1); 1 of the used truncated at max_length 48")
    assert report.issues.columns == ["split", "file", "line", "unit", "action", "reason"]
    assert sorted(json.loads(l)["where"] for l in report.jsonl().splitlines()) == [f"{data}:2", f"{data}:3"]
    with pytest.raises(TrainDataError, match=r"t\.jsonl:[23]: (truncated: cut|dropped: no assistant token)"):
        build_datasets(cfg.replace(policy="strict"), tok, load_conversations(cfg))
