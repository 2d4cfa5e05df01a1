"""Latency of DatasetBrowser interactions on the real COIG-CQIA data (not a test).

Each interaction is timed from the method call until the HTML it changes is ready (the page
table; the record view for ``select``), over ``--reps`` repetitions after one warm-up call,
with values cycled so every call really changes the view. Target: p95 <= 200 ms.

    .venv/bin/python benchmarks/bench_widget.py [--root ../shared/coig-cqia] [--reps 30]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cqia_nb.ui.browser import DatasetBrowser  # noqa: E402

TARGET_MS = 200.0
LFS_PREFIX = "version https://git-lfs"
SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String, "config": pl.String, "source_file": pl.String, "line": pl.Int64,
    "instruction": pl.String, "input": pl.String, "output": pl.String,
    "task_type_major": pl.List(pl.String), "task_type_minor": pl.List(pl.String),
    "domain": pl.List(pl.String), "metadata": pl.String, "answer_from": pl.String,
    "human_verified": pl.Boolean, "copyright": pl.String, "extra": pl.String,
}
KNOWN = {"instruction", "input", "output", "task_type", "domain", "metadata", "answer_from",
         "human_verified", "copyright"}


def read_real_data_by_hand(root: Path) -> pl.DataFrame:
    """The schema frame built with json, for when cqia_nb.data is not importable."""
    rows = []
    for path in sorted(root.glob("*/*.jsonl")):
        text = path.read_text(encoding="utf-8")
        if text.startswith(LFS_PREFIX):
            continue
        rel = path.relative_to(root).as_posix()
        # Split on "\n" only: xhs.jsonl has raw U+2028 inside strings (see STACK-NOTES).
        for i, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            r = json.loads(line)
            tt = r.get("task_type") or {}
            extra = {k: v for k, v in r.items() if k not in KNOWN}
            rows.append({
                "record_id": f"{rel}:{i}", "config": path.parent.name, "source_file": rel, "line": i,
                "instruction": r.get("instruction", ""), "input": r.get("input", ""),
                "output": r.get("output", ""), "task_type_major": tt.get("major", []),
                "task_type_minor": tt.get("minor", []), "domain": r.get("domain", []),
                "metadata": r.get("metadata", ""), "answer_from": r.get("answer_from", ""),
                "human_verified": r.get("human_verified"), "copyright": r.get("copyright", ""),
                "extra": json.dumps(extra, ensure_ascii=False) if extra else "",
            })
    return pl.DataFrame(rows, schema=SCHEMA)


def load_frame(root: Path) -> tuple[pl.DataFrame, str]:
    try:
        from cqia_nb.data.load import LoadConfig, load
    except ImportError:
        return read_real_data_by_hand(root), "json (cqia_nb.data not importable)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader's known-problem warnings are not ours
        return load(LoadConfig(source=str(root))).frame, "cqia_nb.data.load"


def time_ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]  # nearest rank


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "coig-cqia")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    if args.reps < 20:
        ap.error("--reps must be at least 20")
    if not args.root.is_dir():
        print(f"{args.root}: not found; pass --root to a clone of m-a-p/COIG-CQIA", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    frame, how = load_frame(args.root)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = DatasetBrowser(frame, page_size=10)
    build_ms = (time.perf_counter() - t0) * 1000.0
    print(f"{frame.height:,} records from {args.root} via {how} in {load_s:.2f} s; "
          f"browser built in {build_ms:.0f} ms")

    reset = dict(text="", regex=False, configs=(), min_len=None, max_len=None)
    configs = [("zhihu",), ("xhs", "wiki"), ("exam",), ("douban", "finance", "logi_qa"), ()]
    texts = ["中国", "python", "如何", "医生", "电影", "the"]
    regexes = [r"\d{4}年", r"(?:北京|上海|广州)", r"[A-Za-z]+\s+[A-Za-z]+", r"第.章", r"^请"]
    ranges = [(100, 500), (0, 50), (1000, None), (200, 300), (None, 20)]

    def cycle(values: list, fn: Callable[[object], None]) -> Callable[[int], Callable[[], object]]:
        return lambda k: (lambda: (fn(values[k % len(values)]), b.page_html))

    def next_page(_: int) -> Callable[[], object]:
        if b.query.page >= math.ceil(b.filtered.height / b.query.page_size) - 1:
            b.set_query(page=0)  # untimed: start again from the first page
        return lambda: (b.next_page(), b.page_html)

    cases: list[tuple[str, Callable[[int], Callable[[], object]]]] = [
        ("config filter change", cycle(configs, lambda v: b.set_query(configs=v))),
        ("free-text search", cycle(texts, lambda v: b.set_query(text=v, regex=False))),
        ("regex search", cycle(regexes, lambda v: b.set_query(text=v, regex=True))),
        ("length-range change", cycle(ranges, lambda v: b.set_query(min_len=v[0], max_len=v[1]))),
        ("next page", next_page),
        ("record select", lambda k: (lambda: (b.select(k % b.page_frame.height), b.record_html))),
    ]
    results = []
    for name, make in cases:
        b.set_query(**reset)
        make(len(texts) * 7)()  # warm-up, not timed
        times = [time_ms(make(k)) for k in range(args.reps)]
        if b.error:
            raise SystemExit(f"{name}: the browser reported an error: {b.error}")
        results.append((name, statistics.median(times), p95(times), max(times)))

    print(f"\n{'interaction':<22} {'reps':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    print("-" * 57)
    for name, med, p, mx in results:
        print(f"{name:<22} {args.reps:>5} {med:>10.2f} {p:>8.2f} {mx:>8.2f}")
    worst = max(results, key=lambda r: r[2])
    ok = worst[2] <= TARGET_MS
    print(f"\nverdict: {'PASS' if ok else 'FAIL'} — slowest p95 is {worst[0]} at {worst[2]:.1f} ms "
          f"({'within' if ok else 'over'} the {TARGET_MS:.0f} ms target per interaction, "
          f"{frame.height:,} records)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
