"""Rule filtering on the real COIG-CQIA copy: our polars/numpy pipeline vs Data-Juicer.

    .venv/bin/python benchmarks/bench_rules.py --data ../shared/coig-cqia --reps 5 --dj-reps 3 \\
        --dj-python build/dj-venv/bin/python

Data-Juicer lives in its own venv (it lazily installs missing packages, CUDA torch included):

    python3 -m venv build/dj-venv
    build/dj-venv/bin/pip install torch==2.13.0
    build/dj-venv/bin/pip install torch==2.13.0 aiohttp py-data-juicer==1.6.1

Without it (or when it fails to run offline) the comparison falls back to a plain per-record
Python implementation of the same ops, and the report says so.

What is timed, each repetition in a fresh subprocess (peak RSS = that process's maximum):
  start-up  imports + building the steps (ours: recipe parse + filter construction, OpenCC;
            Data-Juicer: ``import data_juicer`` + ``load_ops``), reported separately;
  process   the steps on all 17,971 records already in memory (ours: a polars frame;
            Data-Juicer: a ``NestedDataset`` built from the same records, then ``op.run`` per op
            as its executor does, ``num_proc=1`` on every op: no auto parallelism, one process).
Median over repetitions, run interleaved (ours, Data-Juicer, ours, ...) so that both see the
same machine load; records/s = 17,971 / process seconds.

Pipelines compared ("equivalent ops", every op on instruction+input+output joined):
  ours                              Data-Juicer 1.6.1
  traditional (convert: true)       chinese_convert_mapper (t2s)
  length                            text_length_filter
  special_chars                     special_characters_filter (its default 0.25: drops ~14 %,
                                    so its later ops see fewer records: in its favour)
  html                              clean_html_mapper (rewrites instead of dropping)
  url                               clean_links_mapper
  email                             clean_email_mapper
  flagged_words (our list)          flagged_words_filter (our list as its local asset, zh)
  char_repetition                   character_repetition_filter
  ngram_repetition                  word_repetition_filter (zh, no tokenizer model)
Our full default recipe (recipes/filter-default.yaml, 19 steps) is timed too.

``--calibrate`` instead runs each step of the default recipe alone on all real records and
prints what it would drop, per source config (the numbers quoted in the recipe's comments).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_FIELDS = ("instruction", "input", "output")
ALL = "instruction+input+output"

EQUIVALENT = {"name": "equivalent-ops", "steps": [
    {"filter": "traditional", "convert": True, "field": ALL},
    {"filter": "length", "field": ALL, "min_chars": 1, "max_chars": 50000},
    {"filter": "special_chars", "field": ALL, "max_ratio": 0.25},
    {"filter": "html", "field": ALL},
    {"filter": "url", "field": ALL},
    {"filter": "email", "field": ALL},
    {"filter": "flagged_words", "field": ALL, "max_ratio": 0.04},
    {"filter": "char_repetition", "field": ALL, "rep_len": 10, "max_ratio": 0.5},
    {"filter": "ngram_repetition", "field": ALL, "rep_len": 10, "max_ratio": 0.6},
]}


def dj_process(words_dir: str) -> list[dict]:
    return [
        {"chinese_convert_mapper": {"mode": "t2s"}},
        {"text_length_filter": {"min_len": 1, "max_len": 50000}},
        {"special_characters_filter": {"min_ratio": 0.0, "max_ratio": 0.25}},
        {"clean_html_mapper": {}},
        {"clean_links_mapper": {}},
        {"clean_email_mapper": {}},
        {"flagged_words_filter": {"lang": "zh", "tokenization": False, "max_ratio": 0.04,
                                  "flagged_words_dir": words_dir, "use_words_aug": False}},
        {"character_repetition_filter": {"rep_len": 10, "max_ratio": 0.5}},
        {"word_repetition_filter": {"lang": "zh", "tokenization": False, "rep_len": 10, "max_ratio": 0.6}},
    ]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- workers

def worker_ours(parquet: str, recipe: str) -> dict:
    t0 = time.perf_counter()
    import polars as pl

    sys.path.insert(0, str(ROOT))
    from cqia_nb.filter.framework import PipelineConfig, run_pipeline

    if recipe.endswith(".json"):
        cfg = PipelineConfig.from_dict(json.loads(Path(recipe).read_text()), recipe)
    else:
        cfg = PipelineConfig.from_yaml(recipe)
    cfg.build()  # construction (OpenCC, regex checks) is start-up
    frame = pl.read_parquet(parquet)
    t1 = time.perf_counter()
    res = run_pipeline(frame, cfg)
    t2 = time.perf_counter()
    return {"startup_s": t1 - t0, "process_s": t2 - t1, "n_in": frame.height, "n_kept": res.kept.height,
            "peak_rss_mib": peak_rss_mib(), "steps": dict(zip(res.steps["name"], res.steps["seconds"]))}


def worker_dj(records_jsonl: str, words_dir: str) -> dict:
    t0 = time.perf_counter()
    from data_juicer.core.data import NestedDataset
    from data_juicer.ops import load_ops

    process = dj_process(words_dir)
    for p in process:
        for k in p:
            p[k]["num_proc"] = 1
    ops = load_ops(process)
    recs = [json.loads(line) for line in open(records_jsonl, encoding="utf-8")]
    t1 = time.perf_counter()
    ds = NestedDataset.from_list(recs)
    per_op = {}
    for op in ops:
        a = time.perf_counter()
        ds = op.run(ds)
        per_op[op._name] = time.perf_counter() - a
    t2 = time.perf_counter()
    return {"startup_s": t1 - t0, "process_s": t2 - t1, "n_in": len(recs), "n_kept": len(ds),
            "peak_rss_mib": peak_rss_mib(), "steps": per_op}


def worker_python(records_jsonl: str, words_file: str) -> dict:
    """The same ops written the obvious way: one Python loop per op over the records."""
    t0 = time.perf_counter()
    import re
    import unicodedata
    from collections import Counter

    import opencc

    conv = opencc.OpenCC("t2s")
    words = [w.strip() for w in open(words_file, encoding="utf-8") if w.strip() and not w.startswith("#")]
    html = re.compile(r"</?(?:p|br|div|span|a|img|li|ul|ol|table|tr|td|strong|em|b|i)(?:\s[^<>]*)?/?>|&\w+;", re.I)
    url = re.compile(r"(?:https?|ftp)://\S+|www\.\S+")
    email = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
    recs = [json.loads(line) for line in open(records_jsonl, encoding="utf-8")]
    t1 = time.perf_counter()

    def special_ratio(t):
        vis = [c for c in t if not c.isspace()]
        if not vis:
            return 0.0
        bad = sum(1 for c in vis if unicodedata.category(c)[0] not in "LMNP" and not c.isascii())
        return bad / len(vis)

    def char_rep(t, n=10):
        grams = Counter(t[i:i + n] for i in range(len(t) - n + 1))
        if not grams:
            return 0.0
        freq = sorted(grams.values(), reverse=True)
        k = min(int(len(freq) ** 0.5), sum(1 for f in freq if f > 1))
        return sum(freq[:k]) / sum(freq)

    def word_rep(t, n=10):
        toks = re.findall(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+", t.lower())
        grams = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
        total = sum(grams.values())
        return sum(f for f in grams.values() if f > 1) / total if total else 0.0

    kept = []
    for r in recs:
        t = conv.convert(r["text"])
        if not 1 <= len(t) <= 50000 or special_ratio(t) > 0.25:
            continue
        if html.search(t) or url.search(t) or email.search(t):
            continue
        if sum(len(w) * t.count(w) for w in words) / max(len(t), 1) > 0.04:
            continue
        if char_rep(t) > 0.5 or word_rep(t) > 0.6:
            continue
        kept.append(r)
    t2 = time.perf_counter()
    return {"startup_s": t1 - t0, "process_s": t2 - t1, "n_in": len(recs), "n_kept": len(kept),
            "peak_rss_mib": peak_rss_mib(), "steps": {}}


# ----------------------------------------------------------------------------- driver

def run_worker(python: str, args: list[str], timeout: float = 1800) -> dict | None:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    try:
        p = subprocess.run([python, str(Path(__file__).resolve()), *args], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"  worker failed: {e}", file=sys.stderr)
        return None
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        print(f"  worker failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-3:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def summarize(name: str, runs: list[dict]) -> dict:
    proc = statistics.median(r["process_s"] for r in runs)
    return {"tool": name, "reps": len(runs), "startup_s": statistics.median(r["startup_s"] for r in runs),
            "process_s": proc, "records_per_s": runs[0]["n_in"] / proc, "kept": runs[0]["n_kept"],
            "n_in": runs[0]["n_in"], "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "all_process_s": [round(r["process_s"], 2) for r in runs]}


def load_real(data: Path):
    import shutil
    import warnings

    sys.path.insert(0, str(ROOT))
    from cqia_nb.data.load import LoadConfig, load

    cache = tempfile.mkdtemp(prefix="bench-rules-cache-")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(LoadConfig(source=str(data), cache_dir=cache)).frame
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def calibrate(data: Path) -> None:
    import polars as pl

    from cqia_nb.filter.framework import PipelineConfig, Transform

    frame = load_real(data)
    cfg = PipelineConfig.from_yaml(ROOT / "recipes" / "filter-default.yaml")
    print(f"{frame.height} real records; each step of the default recipe alone on all of them\n")
    print(f"{'step':26} {'drops':>6} {'share':>7}  by config")
    for name, step in cfg.build():
        t = time.perf_counter()
        if isinstance(step, Transform):
            r = step.apply(frame)
            mask, what = r.changed, "changed"
        else:
            mask, what = ~step.apply(frame).keep, "drops"
        by = (frame.filter(mask).group_by("config").len().sort("len", descending=True)
              .select(pl.format("{} {}", "config", "len"))).to_series().to_list()
        print(f"{name:26} {int(mask.sum()):>6} {mask.mean():>7.2%}  {', '.join(by) or '-'}"
              f"{'  (' + what + ')' if what != 'drops' else ''}  [{time.perf_counter() - t:.2f} s]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"))
    ap.add_argument("--reps", type=int, default=5, help="repetitions of our pipelines")
    ap.add_argument("--dj-reps", type=int, default=3, help="repetitions of Data-Juicer (about a minute each)")
    ap.add_argument("--dj-python", default=str(ROOT / "build" / "dj-venv" / "bin" / "python"))
    ap.add_argument("--calibrate", action="store_true", help="per-step drops on the real data, then exit")
    ap.add_argument("--worker", choices=("ours", "dj", "python"), help=argparse.SUPPRESS)
    ap.add_argument("--in", dest="inp", help=argparse.SUPPRESS)
    ap.add_argument("--aux", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        fn = {"ours": worker_ours, "dj": worker_dj, "python": worker_python}[args.worker]
        print(json.dumps(fn(args.inp, args.aux)))
        return 0
    data = Path(args.data)
    if not (data / "README.md").is_file():
        print(f"real data not found at {data}; pass --data", file=sys.stderr)
        return 2
    if args.calibrate:
        calibrate(data)
        return 0

    frame = load_real(data)
    work = Path(tempfile.mkdtemp(prefix="bench-rules-"))  # outside the repository: never copy the data in
    parquet = work / "records.parquet"
    frame.write_parquet(parquet)
    records = work / "records.jsonl"
    with open(records, "w", encoding="utf-8") as f:
        for r in frame.select("record_id", *N_FIELDS).iter_rows(named=True):
            r["text"] = "\n".join(r[k] or "" for k in N_FIELDS)
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    words_file = ROOT / "cqia_nb" / "resources" / "flagged_words_zh.txt"
    words = [w.strip() for w in words_file.read_text(encoding="utf-8").splitlines() if w.strip() and not w.startswith("#")]
    (work / "words").mkdir()
    (work / "words" / "flagged_words.json").write_text(json.dumps({"zh": words}, ensure_ascii=False), encoding="utf-8")
    eq = work / "equivalent.json"
    eq.write_text(json.dumps(EQUIVALENT))
    print(f"{frame.height} records, {sum(frame[c].str.len_chars().sum() for c in N_FIELDS):,} characters; "
          f"scratch files in {work} (removed at the end)\n", flush=True)

    # Interleaved (ours, ours, Data-Juicer, ours, ...) so that both see the same machine load.
    pipelines = {"ours: equivalent ops": str(eq),
                 "ours: default recipe (19 steps)": str(ROOT / "recipes" / "filter-default.yaml")}
    runs: dict[str, list[dict]] = {name: [] for name in pipelines}
    dj_runs: list[dict] = []
    dj_ok = Path(args.dj_python).is_file()
    for rep in range(max(args.reps, args.dj_reps)):
        if rep < args.reps:
            for name, recipe in pipelines.items():
                r = run_worker(sys.executable, ["--worker", "ours", "--in", str(parquet), "--aux", recipe])
                if r:
                    runs[name].append(r)
        if dj_ok and rep < args.dj_reps:
            r = run_worker(args.dj_python, ["--worker", "dj", "--in", str(records), "--aux", str(work / "words")])
            if r:
                dj_runs.append(r)
            elif not dj_runs:
                dj_ok = False  # it does not run here: stop trying
        print(f"  repetition {rep + 1} done", flush=True)
    results = []
    for name, rs in runs.items():
        if rs:
            results.append(summarize(name, rs))
            slow = sorted(rs[-1]["steps"].items(), key=lambda kv: -kv[1])[:5]
            print(f"{name}: slowest steps (last run) " + ", ".join(f"{k} {v:.2f}s" for k, v in slow))
    baseline = None
    if dj_runs:
        baseline = summarize("Data-Juicer 1.6.1 (same ops, np=1)", dj_runs)
        slow = sorted(dj_runs[-1]["steps"].items(), key=lambda kv: -kv[1])[:5]
        print("Data-Juicer: slowest ops (last run) " + ", ".join(f"{k} {v:.2f}s" for k, v in slow))
    if baseline is None:
        print("Data-Juicer not runnable here: falling back to a plain per-record Python implementation "
              "of the same ops", file=sys.stderr)
        py_runs = [r for r in (run_worker(sys.executable, ["--worker", "python", "--in", str(records),
                                                           "--aux", str(words_file)])
                               for _ in range(args.dj_reps)) if r]
        baseline = summarize("per-record Python (same ops; Data-Juicer unavailable)", py_runs)
    results.append(baseline)

    print(f"\n{'pipeline':42} {'reps':>4} {'start-up s':>10} {'process s':>10} {'records/s':>10} "
          f"{'kept':>6} {'peak MiB':>9} {'vs baseline':>11}")
    for r in results:
        ratio = r["records_per_s"] / baseline["records_per_s"]
        print(f"{r['tool']:42} {r['reps']:>4} {r['startup_s']:>10.2f} {r['process_s']:>10.2f} "
              f"{r['records_per_s']:>10,.0f} {r['kept']:>6} {r['peak_rss_mib']:>9.0f} {ratio:>10.1f}x")
    eqr = next(r for r in results if r["tool"].startswith("ours: equivalent"))
    print(f"\nspeed-up on the equivalent ops (records/s, medians): "
          f"{eqr['records_per_s'] / baseline['records_per_s']:.1f}x (target >= 10x)")
    out = Path(tempfile.gettempdir()) / "bench_rules_results.json"
    out.write_text(json.dumps(results, indent=2))
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # the copies of the real records
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
