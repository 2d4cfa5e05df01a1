"""Tests of the review queue (cqia_nb.ui.review): saving, resuming, crashes, labels, pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from cqia_nb.core.decisions import LABEL_SCHEMA, export_labels
from cqia_nb.core.decisions import read_decisions as read_log
from cqia_nb.core.jsonl import LogLineWarning as ReviewLogWarning
from cqia_nb.filter.framework import PipelineConfig, run_pipeline
from cqia_nb.ui.review import ReviewQueue

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"


def make_frame(n: int = 6) -> pl.DataFrame:
    return pl.DataFrame({
        "record_id": [f"r{i}" for i in range(n)],
        "config": ["zhihu"] * n,
        "instruction": [f"问题 {i}" for i in range(n)],
        "input": [""] * n,
        "output": [f"回答 {i}" if i != 2 else f"{SCRIPT} 回答 2" for i in range(n)],
        "score": [0.1 * i for i in range(n)],
    })


def lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


@pytest.fixture(autouse=True)
def _user(monkeypatch):
    monkeypatch.setenv("USER", "tester")


def test_every_decision_is_on_disk_when_decide_returns(tmp_path):
    path = tmp_path / "review" / "log.jsonl"  # the folder is created
    q = ReviewQueue(make_frame(), path)
    assert q.index == 0 and not path.exists()
    q.decide("keep")
    got = lines(path)
    assert [(e["record_id"], e["decision"]) for e in got] == [("r0", "keep")]
    assert got[0]["reviewer"] == "tester" and got[0]["note"] == ""
    assert datetime.fromisoformat(got[0]["timestamp"]).tzinfo is not None
    assert "edited_output" not in got[0]
    q.decide("drop", note="广告 in the answer")
    assert [(e["record_id"], e["decision"], e["note"]) for e in lines(path)] == [
        ("r0", "keep", ""), ("r1", "drop", "广告 in the answer")]
    q.decide("edit", edited_output="改好的回答")
    got = lines(path)
    assert len(got) == 3 and got[2]["record_id"] == "r2" and got[2]["edited_output"] == "改好的回答"
    assert q.index == 3
    assert q.progress_text.startswith("record 4 of 6 · 3 decided (1 keep, 1 drop, 1 edit)")
    # no temp files left behind after clean saves
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == ["log.jsonl"]


def test_bad_decisions_write_nothing(tmp_path):
    path = tmp_path / "log.jsonl"
    q = ReviewQueue(make_frame(), path)
    with pytest.raises(ValueError, match="decision must be"):
        q.decide("maybe")
    with pytest.raises(ValueError, match="edited_output"):
        q.decide("edit")
    with pytest.raises(ValueError, match="only for 'edit'"):
        q.decide("keep", edited_output="x")
    assert not path.exists() and q.index == 0
    with pytest.raises(ValueError, match="unique"):
        ReviewQueue(pl.concat([make_frame(), make_frame().head(1)]), path)
    with pytest.raises(ValueError, match="record_id"):
        ReviewQueue(make_frame().drop("record_id"), path)


def test_reopen_restores_decisions_and_resumes_at_first_undecided(tmp_path):
    path = tmp_path / "log.jsonl"
    q = ReviewQueue(make_frame(), path)
    q.decide("keep")            # r0, moves to r1
    q.decide("drop", note="x")  # r1, moves to r2
    q.goto(4)
    q.decide("keep")            # r4, moves to r5
    q.goto(1)
    q.decide("keep", note="changed my mind")  # r1 again: latest wins
    q2 = ReviewQueue(make_frame(), path)
    assert q2.index == 2 and q2.current["record_id"] == "r2"
    assert {k: v["decision"] for k, v in q2.decisions.items()} == {"r0": "keep", "r1": "keep", "r4": "keep"}
    assert q2.decisions["r1"]["note"] == "changed my mind"
    assert q2.counts() == {"keep": 3, "drop": 0, "edit": 0, "undecided": 3}
    q2.decide("drop")
    assert q2.index == 3        # next undecided after r2
    q2.decide("drop")
    assert q2.index == 5        # r4 is decided: skipped
    q2.decide("keep")
    assert q2.index == 5 and q2.progress_text.endswith("all decided")
    q3 = ReviewQueue(make_frame(), path)
    assert q3.index == 0        # everything decided: start at the top


def test_navigation(tmp_path):
    q = ReviewQueue(make_frame(3), tmp_path / "log.jsonl")
    q.prev()
    assert q.index == 0
    q.next(); q.next(); q.next()
    assert q.index == 2 and q.current["record_id"] == "r2"
    assert q.controls["next"].disabled and not q.controls["prev"].disabled
    with pytest.raises(IndexError):
        q.goto(3)
    empty = ReviewQueue(make_frame().head(0), tmp_path / "e.jsonl")
    assert empty.current is None and "empty" in empty.progress_text
    with pytest.raises(IndexError):
        empty.decide("keep")


CHILD = textwrap.dedent("""
    import os, signal, sys
    import polars as pl
    from cqia_nb.ui.review import ReviewQueue
    frame = pl.read_parquet(sys.argv[1])
    q = ReviewQueue(frame, sys.argv[2])
    kill_at, mode = int(sys.argv[3]), sys.argv[4]
    if mode == "during":  # die inside the save: after the temp file is written, before os.replace
        real = os.replace
        calls = [0]
        def replace(a, b):
            calls[0] += 1
            if calls[0] > kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)
        os.replace = replace
    for i in range(frame.height):
        if mode == "between" and i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        q.decide("drop" if i % 2 else "keep", note=f"note {i}")
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("mode", ["between", "during"])
def test_sigkill_loses_nothing_that_was_saved(tmp_path, mode):
    frame = make_frame(8)
    src = tmp_path / "queue.parquet"
    frame.write_parquet(src)
    path = tmp_path / "log.jsonl"
    child = tmp_path / "child.py"
    child.write_text(CHILD, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "USER": "tester"}
    proc = subprocess.run([sys.executable, str(child), str(src), str(path), "3", mode], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    got = lines(path)  # exactly the three decisions saved before the kill, intact
    assert [(e["record_id"], e["decision"], e["note"]) for e in got] == [
        ("r0", "keep", "note 0"), ("r1", "drop", "note 1"), ("r2", "keep", "note 2")]
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == (1 if mode == "during" else 0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ReviewLogWarning)  # nothing unreadable
        q = ReviewQueue(frame, path)
    assert q.index == 3
    assert sorted(q.decisions) == ["r0", "r1", "r2"]
    q.decide("keep")
    assert len(lines(path)) == 4


def test_torn_trailing_line_is_reported_and_ignored(tmp_path):
    path = tmp_path / "log.jsonl"
    good = [{"record_id": "r0", "decision": "keep", "note": ""},
            {"record_id": "r1", "decision": "drop", "note": "ad"}]
    path.write_text("".join(json.dumps(e) + "\n" for e in good) + '{"record_id": "r2", "deci', encoding="utf-8")
    with pytest.warns(ReviewLogWarning, match=rf"{path.name}:3: .*torn last line"):
        q = ReviewQueue(make_frame(), path)
    assert sorted(q.decisions) == ["r0", "r1"] and q.index == 2
    q.decide("keep")  # appended on a new line, the torn line left as it was
    raw = path.read_text(encoding="utf-8").splitlines()
    assert raw[2] == '{"record_id": "r2", "deci' and json.loads(raw[3])["record_id"] == "r2"
    with pytest.warns(ReviewLogWarning, match=rf"{path.name}:3: "):
        labels = export_labels(path)
    assert labels["record_id"].to_list() == ["r0", "r1", "r2"]


def test_two_queues_on_one_log_keep_both_writers_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    a, b = ReviewQueue(make_frame(), path), ReviewQueue(make_frame(), path)
    a.decide("keep")
    b.goto(3)
    b.decide("drop")
    a.decide("drop")
    assert [(e["record_id"], e["decision"]) for e in lines(path)] == [("r0", "keep"), ("r3", "drop"), ("r1", "drop")]
    assert sorted(ReviewQueue(make_frame(), path).decisions) == ["r0", "r1", "r3"]


def test_other_unreadable_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"record_id": "r0", "decision": "keep"}\n[1, 2]\n{"record_id": "r1", "decision": "nope"}\n'
                     b'\xff\xfe\n\n{"record_id": "r3", "decision": "edit"}\n')
    with pytest.warns(ReviewLogWarning) as rec:
        entries = read_log(path)
    msgs = [str(r.message) for r in rec]
    assert [m.split(": ", 1)[0] for m in msgs] == [f"{path}:2", f"{path}:3", f"{path}:4", f"{path}:6"]
    assert [e["record_id"] for e in entries] == ["r0"]
    assert read_log(tmp_path / "missing.jsonl") == []


def test_export_labels_latest_per_record(tmp_path):
    path = tmp_path / "log.jsonl"
    q = ReviewQueue(make_frame(), path)
    q.decide("keep")
    q.decide("edit", edited_output="新回答", note="typo")
    q.goto(0)
    q.decide("drop", note="on second thought")
    labels = export_labels(path)
    assert labels.schema == pl.Schema(LABEL_SCHEMA)
    assert labels.select("record_id", "decision", "edited_output", "note").rows() == [
        ("r0", "drop", None, "on second thought"), ("r1", "edit", "新回答", "typo")]
    assert labels["line"].to_list() == [3, 2] and labels["reviewer"].to_list() == ["tester", "tester"]
    assert q.export_labels().equals(labels)
    assert export_labels(tmp_path / "none.jsonl").height == 0


def test_review_labels_filter_in_run_pipeline(tmp_path):
    path = tmp_path / "log.jsonl"
    frame = make_frame()
    q = ReviewQueue(frame, path)
    q.decide("drop", note="spam")               # r0
    q.decide("keep")                            # r1
    q.decide("edit", edited_output="修正后的回答")  # r2
    q.goto(4)
    q.decide("drop", note="")                   # r4
    cfg = PipelineConfig.from_dict({"steps": [{"transform": "review_edits", "path": str(path)},
                                              {"filter": "review_labels", "path": str(path)}]})
    res = run_pipeline(frame, cfg)
    assert res.reconciles()
    assert res.dropped["record_id"].to_list() == ["r0", "r4"]
    assert res.dropped["value"].to_list() == [1.0, 1.0]
    assert res.dropped["detail"].to_list() == ["spam", ""]
    assert res.kept["record_id"].to_list() == ["r1", "r2", "r3", "r5"]
    assert res.kept.filter(pl.col("record_id") == "r2")["output"].item() == "修正后的回答"
    assert res.steps["changed"].to_list() == [1, 0]
    assert res.measured["review_labels"]["value"].to_list() == [1.0, 0.0, 0.0, None, 1.0, None]
    with pytest.raises(ValueError, match="not found"):
        run_pipeline(frame, PipelineConfig.from_dict({"steps": [{"filter": "review_labels",
                                                                  "path": str(tmp_path / "nope.jsonl")}]}))
    res = run_pipeline(frame, PipelineConfig.from_dict({"steps": [{"filter": "review_labels", "missing_ok": True,
                                                                    "path": str(tmp_path / "nope.jsonl")}]}))
    assert res.dropped.height == 0


def test_html_is_escaped(tmp_path):
    q = ReviewQueue(make_frame(), tmp_path / "log.jsonl", columns=["instruction", "output"])
    q.goto(2)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in q.html and SCRIPT not in q.html
    assert "score" not in q.html and "r2" in q.html  # only the chosen columns (+ record_id)
    q.decide("drop", note=f"{SCRIPT} note")
    q.goto(2)
    assert "&lt;script&gt;" in q.html and SCRIPT not in q.html
    q.decide("edit", edited_output="<img src=x onerror=alert(1)> fixed")
    q.goto(2)
    assert "&lt;img src=x onerror=alert(1)&gt;" in q.html and "<img" not in q.html
    with pytest.raises(ValueError, match="not in the frame"):
        ReviewQueue(make_frame(), tmp_path / "x.jsonl", columns=["nope"])


def test_buttons_and_command_box(tmp_path):
    path = tmp_path / "log.jsonl"
    q = ReviewQueue(make_frame(), path)
    c = q.controls
    assert "(k)" in c["keep"].description and "k" in c["keep"].tooltip
    assert "(d)" in c["drop"].description and "(e)" in c["edit"].description
    c["note"].value = "from the note box"
    c["keep"].click()
    assert lines(path)[-1] == {**lines(path)[-1], "record_id": "r0", "decision": "keep", "note": "from the note box"}
    assert c["note"].value == ""                     # cleared after a saved decision
    c["command"].value = "d 广告 at the end"         # what Enter in the box sends
    assert c["command"].value == ""                  # cleared for the next command
    assert (lines(path)[-1]["record_id"], lines(path)[-1]["decision"], lines(path)[-1]["note"]) == (
        "r1", "drop", "广告 at the end")
    c["command"].value = "p"
    assert q.index == 1
    c["command"].value = "n"
    assert q.index == 2
    c["command"].value = "e"                         # unchanged text: not saved
    assert len(lines(path)) == 2 and "unchanged" in q.status_text
    c["editor"].value = "更好的回答"
    c["command"].value = "E"
    last = lines(path)[-1]
    assert (last["record_id"], last["decision"], last["edited_output"]) == ("r2", "edit", "更好的回答")
    c["command"].value = "x"
    assert "unknown command" in q.status_text and len(lines(path)) == 3
    q.goto(2)
    assert c["editor"].value == "更好的回答"         # an edited record shows its edit


def test_unwritable_folder_is_a_message_in_the_widget(unprivileged):
    # Root writes into read-only folders, and tests run as root on CI: the queue runs as `nobody`.
    folder = unprivileged.folder("ro")
    frame = unprivileged.home / "frame.parquet"
    make_frame().write_parquet(frame)
    script = textwrap.dedent(f"""
        import json, os
        import polars as pl
        from cqia_nb.ui.review import ReviewQueue
        folder = {str(folder)!r}
        q = ReviewQueue(pl.read_parquet({str(frame)!r}), os.path.join(folder, "log.jsonl"))
        os.chmod(folder, 0o500)
        writable = os.access(folder, os.W_OK)
        q.controls["keep"].click()
        print(json.dumps({{"writable": writable, "status": q.status_text, "index": q.index,
                          "decisions": len(q.decisions), "files": os.listdir(folder)}}))
    """)
    r = unprivileged.run([sys.executable, "-c", script])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["writable"] is False                      # the folder really is read-only for this user
    assert "not saved" in out["status"] and out["index"] == 0 and out["decisions"] == 0
    assert out["files"] == []                            # no temp file left behind
