"""Blind pairwise A/B widget: driven through its click handlers; every click on disk; resume;
seeded hidden order; escaping of untrusted text; win rate with a Wilson interval."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import polars as pl
import pytest

from cqia_nb.core.decisions import read_votes, win_rate, x_is_a
from cqia_nb.core.jsonl import LogLineWarning as ReviewLogWarning
from cqia_nb.eval.human import pair_answers, pair_frames, win_rate_row
from cqia_nb.eval.results import append_results, read_results
from cqia_nb.ui.pairwise import PairwiseQueue

X, Y = "Yi-6B+CQIA", "Yi-6B"


def items(n: int = 6) -> pl.DataFrame:
    return pair_answers([f"问题 {i}" for i in range(n)], [f"X 的回答 {i}" for i in range(n)],
                        [f"Y 的回答 {i}" for i in range(n)], ids=[f"belle:{i}" for i in range(n)])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_every_click_is_on_disk_with_the_hidden_mapping(tmp_path):
    log = tmp_path / "votes" / "ab.jsonl"
    q = PairwiseQueue(items(4), log, X, Y, seed=7, rater="tester")
    c = q.controls
    shown = q.current
    assert set(shown) == {"item_id", "prompt", "answer_a", "answer_b"}
    c["note"].value = "A 更完整"
    c["a"].click()
    saved = lines(log)
    assert len(saved) == 1 and saved[0]["item_id"] == "belle:0" and saved[0]["choice"] == "A"
    winner = saved[0]["winner"]
    # the winner is the model whose answer was shown as A
    assert (winner == X) == shown["answer_a"].startswith("X ") and saved[0]["model_a"] == winner
    assert saved[0]["note"] == "A 更完整" and saved[0]["rater"] == "tester" and c["note"].value == ""
    c["tie"].click()
    c["b"].click()
    saved = lines(log)
    assert [s["choice"] for s in saved] == ["A", "tie", "B"] and saved[1]["winner"] == "tie"
    assert saved[2]["winner"] == saved[2]["model_b"]
    assert q.index == 3 and "3 rated" in q.progress_text
    assert not list(log.parent.glob(".*.tmp"))  # atomic writes leave no temp files behind


def test_rater_never_sees_model_names(tmp_path):
    q = PairwiseQueue(items(3), tmp_path / "ab.jsonl", X, Y, seed=0)
    for _ in range(3):
        html, text = q.html, q.progress_text + q.status_text
        assert X not in html and Y not in html and X not in text and Y not in text
        q.decide("A")
    assert X not in q.html and Y not in q.status_text


def test_order_is_seeded_per_item_stable_and_balanced(tmp_path):
    ids = [f"belle:{i}" for i in range(400)]
    flips = [x_is_a(3, i) for i in ids]
    assert 150 < sum(flips) < 250  # about half each way
    assert flips != [x_is_a(4, i) for i in ids]  # another seed, another order
    fr = items(10)
    a = PairwiseQueue(fr, tmp_path / "a.jsonl", X, Y, seed=3)
    b = PairwiseQueue(fr.reverse(), tmp_path / "b.jsonl", X, Y, seed=3)  # item order does not matter
    assert all(a.order(i) == b.order(i) for i in fr["item_id"])
    mapping = {i: a.order(i) for i in fr["item_id"]}
    assert {m for m in mapping.values()} == {(X, Y), (Y, X)}
    a.goto(2)
    cur = a.current
    first = "answer_x" if mapping[cur["item_id"]][0] == X else "answer_y"
    assert cur["answer_a"] == fr.filter(pl.col("item_id") == cur["item_id"])[first][0]


def test_reopen_resumes_at_first_unrated_and_latest_vote_wins(tmp_path):
    log = tmp_path / "ab.jsonl"
    q = PairwiseQueue(items(5), log, X, Y, seed=1)
    q.decide("A")
    q.decide("B")
    again = PairwiseQueue(items(5), log, X, Y, seed=1)
    assert again.index == 2 and again.counts()["undecided"] == 3
    again.goto(0)
    assert "this one: A better" in again.progress_text and "your vote: <b>A better</b>" in again.html
    again.decide("tie", note="on second thought")
    votes = read_votes(log, X, Y)
    assert votes.height == 2 and votes.filter(pl.col("item_id") == "belle:0")["choice"][0] == "tie"
    assert read_votes(log, latest=False).height == 3
    # a reopened queue with another seed keeps the stored mapping of earlier votes
    other = PairwiseQueue(items(5), log, X, Y, seed=99)
    assert other.counts()["tie"] == 1 and other.index == 2


def test_untrusted_text_is_escaped(tmp_path):
    evil = pair_answers(["<script>alert('p')</script>问题"], ['<img src=x onerror="alert(1)">'],
                        ["</pre><b onmouseover=alert(2)>B</b>"], ids=["<i>id</i>"])
    q = PairwiseQueue(evil, tmp_path / "ab.jsonl", X, Y)
    h = q.html
    assert "<script>" not in h and "<img" not in h and "<b onmouseover" not in h and "<i>id" not in h
    assert "&lt;script&gt;alert(&#x27;p&#x27;)&lt;/script&gt;" in h and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in h
    q.decide("B", note="<img src=y onerror=alert(3)>")
    q.goto(0)
    assert "<img src=y" not in q.html and "&lt;img src=y onerror=alert(3)&gt;" in q.html


def test_win_rate_with_ties_half_or_excluded_and_wilson_interval(tmp_path):
    log = tmp_path / "ab.jsonl"
    q = PairwiseQueue(items(10), log, X, Y, seed=5)
    # vote so that X wins 6, loses 2, ties 2, whatever the hidden order
    plan = [X] * 6 + [Y] * 2 + ["tie"] * 2
    for want in plan:
        a, _ = q.order(q.current["item_id"])
        q.decide("tie" if want == "tie" else ("A" if a == want else "B"))
    half = win_rate(log, X, Y)
    assert (half["wins"], half["losses"], half["ties"], half["n"]) == (6, 2, 2, 10)
    assert half["win_rate"] == pytest.approx(0.7)
    # Wilson 95 % for 7 of 10 (textbook value)
    assert half["ci_low"] == pytest.approx(0.3968, abs=1e-4) and half["ci_high"] == pytest.approx(0.8922, abs=1e-4)
    ex = win_rate(log, X, Y, ties="exclude")
    assert ex["n"] == 8 and ex["win_rate"] == pytest.approx(0.75) and ex["ci_low"] < 0.75 < ex["ci_high"]
    mirror = win_rate(log, Y, X)
    assert mirror["win_rate"] == pytest.approx(0.3) and q.win_rate()["win_rate"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="ties"):
        win_rate(log, X, Y, ties="double")
    append_results([win_rate_row(half, base_model=Y)], tmp_path / "results.jsonl")
    row = read_results(tmp_path / "results.jsonl").row(0, named=True)
    assert (row["benchmark"], row["subset"], row["metric"], row["n"]) == ("human_pairwise", f"vs {Y}", "win_rate", 10)
    assert row["value"] == pytest.approx(0.7) and "ties counted as half" in row["notes"]


def test_one_log_holds_several_comparisons(tmp_path):
    log = tmp_path / "ab.jsonl"
    PairwiseQueue(items(3), log, X, Y).decide("A")
    other = PairwiseQueue(items(3), log, X, "Qwen")
    assert other.index == 0 and other.counts()["undecided"] == 3  # a vote of X vs Y does not count here
    other.decide("tie")
    assert read_votes(log, X, Y).height == 1 and read_votes(log, "Qwen", X).height == 1
    assert win_rate(log, X, "Qwen")["ties"] == 1


def test_unreadable_lines_are_skipped_with_a_warning(tmp_path):
    log = tmp_path / "ab.jsonl"
    PairwiseQueue(items(2), log, X, Y).decide("A")
    with log.open("a", encoding="utf-8") as fh:
        fh.write('{"item_id": "belle:1", "choice": "A", "winner": "someone else", "model_a": "p", "model_b": "q"}\n')
        fh.write('{"item_id": "belle:1", "choi')
    with pytest.warns(ReviewLogWarning) as rec:
        votes = read_votes(log)
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 2 and "ab.jsonl:2: skipping unreadable pairwise vote: winner" in msgs[0]
    assert "ab.jsonl:3: skipping unreadable pairwise vote (torn last line)" in msgs[1]
    assert votes.height == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReviewLogWarning)
        q = PairwiseQueue(items(2), log, X, Y)
        assert q.index == 1
        q.decide("B")  # a new vote is never glued to the torn line
        assert read_votes(log, X, Y).height == 2


def test_bad_inputs_and_unwritable_folder(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        PairwiseQueue(pl.DataFrame({"item_id": ["a"], "prompt": ["p"]}), tmp_path / "x.jsonl", X, Y)
    with pytest.raises(ValueError, match="unique"):
        PairwiseQueue(pl.concat([items(2), items(2)]), tmp_path / "x.jsonl", X, Y)
    with pytest.raises(ValueError, match="different"):
        PairwiseQueue(items(2), tmp_path / "x.jsonl", X, X)
    with pytest.raises(ValueError, match="one answer of each model"):
        pair_answers(["p"], ["a", "b"], ["c"])
    q = PairwiseQueue(items(2), tmp_path / "x.jsonl", X, Y)
    with pytest.raises(ValueError, match="choice"):
        q.decide("C")
    gone = tmp_path / "gone"
    gone.mkdir()
    q = PairwiseQueue(items(2), gone / "ab.jsonl", X, Y)
    gone.rmdir()
    gone.write_text("a file where the folder was")  # unwritable even for root
    q.controls["a"].click()
    assert q.status_text.startswith("⚠ not saved") and q.index == 0 and q.counts()["undecided"] == 2


def test_pair_frames_matches_on_ids_and_refuses_gaps():
    x = pl.DataFrame({"item_id": ["a", "b", "c"], "question": ["qa", "qb", "qc"], "answer": ["xa", "xb", "xc"]})
    y = pl.DataFrame({"item_id": ["c", "a", "b"], "question": ["qc", "qa", "qb"], "answer": ["yc", "ya", "yb"]})
    fr = pair_frames(x, y)
    assert fr.rows() == [("a", "qa", "xa", "ya"), ("b", "qb", "xb", "yb"), ("c", "qc", "xc", "yc")]
    with pytest.raises(ValueError, match=r"1 item\(s\) lack an answer .*: b"):
        pair_frames(x, y.with_columns(pl.when(pl.col("item_id") == "b").then(None).otherwise(pl.col("answer"))
                                      .alias("answer")))
    with pytest.raises(ValueError, match=r"1 item\(s\) .*: d"):
        pair_frames(x, pl.concat([y, pl.DataFrame({"item_id": ["d"], "question": ["qd"], "answer": ["yd"]})]))
