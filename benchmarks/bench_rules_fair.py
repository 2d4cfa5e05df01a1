"""Rule filtering, like for like: our pipeline vs Data-Juicer 1.6.1.

    bash benchmarks/dj/build_dj_env.sh                  # once: Data-Juicer in build/dj-venv, pinned, offline-guarded
    .venv/bin/python benchmarks/bench_rules_fair.py [--reps 5] [--threads 1,2] [--data ../shared/coig-cqia]

Design (what the old benchmarks/bench_rules.py did not hold equal, and how it is held here):
* same input, same timed region: both sides start from the same parquet file on disk
  (record_id + text, text = instruction\\ninput\\noutput of the 17,971 real records) and stop
  with the kept record ids in a Python list. Ours: pl.read_parquet -> run_pipeline -> ids.
  Data-Juicer: pyarrow.parquet.read_table -> NestedDataset (in memory, no HF cache) -> op.run
  per op, as its executor does -> ids. Imports and op construction (OpenCC, word lists) are
  start-up, reported apart.
* same ops on the same records: every op reads the one `text` column; where the two
  definitions agree (text length in code points, character 10-gram repetition) the real
  thresholds are used and the dropped ids must agree; where they differ (special characters,
  flagged words, word repetition) both thresholds are set so that nothing is dropped, so that
  every later op still sees the same records on both sides; rewrites are compared with
  rewrites: t2s conversion of every record on both sides (ours: rules.convert_texts on all
  texts, not the default "convert only traditional records"), links and e-mails removed with
  Data-Juicer's own regexes on both sides (ours: the package's ``regex_clean`` transform, polars
  str.replace_all on the texts its proven prefilter passes, see cqia_nb.filter.rules.clean;
  Data-Juicer has no detect-and-drop filter for them). The final kept ids AND the final texts
  are compared.
* same threads: N = 1 or 2. Both processes pinned with taskset to N cores; OMP_NUM_THREADS,
  NUMEXPR_*, MKL/OPENBLAS, RAYON_NUM_THREADS and POLARS_MAX_THREADS = N; Data-Juicer ops get
  num_proc = N with auto_op_parallelism: false (otherwise it ignores num_proc); ours
  run_pipeline(threads=N) (N batches at once).
* repetitions interleaved (ours, DJ, ours, DJ ...), each in a fresh interpreter; medians.
* per op: wall seconds on both sides; CPU seconds per op for Data-Juicer (getrusage around each
  op.run, its children included once reaped) and, at 1 thread, for ours (process CPU inside each
  step's methods).
* the limit (``scan_limit``): 8 ops each reading every byte of the text once at the speed of a
  plain vectorised scan; a side's fraction of the limit = limit CPU-s / its CPU-s; cores busy =
  CPU-s / (wall x N).
* ``--recipe`` (default on): our whole default recipe (recipes/filter-default.yaml) timed the
  same way on the same records (instruction/input/output columns), no Data-Juicer counterpart.
"""

from __future__ import annotations

import argparse
import hashlib
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
WORK = ROOT / "build" / "bench-rules-fair"
DJ_PY = ROOT / "build" / "dj-venv" / "bin" / "dj-python"

# Data-Juicer 1.6.1's default patterns (ops/mapper/clean_links_mapper.py, clean_email_mapper.py)
DJ_LINK = (r"(?i)\b((?:[a-z][\w-]+:(?:\/{1,3}|[a-z0-9%])|www\d{0,3}[.]|[a-z0-9.\-]+[.][a-z]{2,4}\/)"
           r"(?:[^\s()<>]+|\(([^\s()<>]+|(\([^\s()<>]+\)))*\))+(?:\(([^\s()<>]+|(\([^\s()<>]+\)))*\)|"
           r"[^\s`!()\[\]{};:\'\".,<>?«»“”‘’]))")
DJ_EMAIL = r"[A-Za-z0-9.\-+_]+@[a-z0-9.\-+_]+\.[a-z]+"

OURS_STEPS = [
    {"transform": "bench_convert_all", "field": "text"},
    {"filter": "length", "field": "text", "min_chars": 1, "max_chars": 50000},
    {"filter": "special_chars", "field": "text", "max_ratio": 1.0},
    {"transform": "regex_clean", "label": "links", "field": "text", "pattern": "dj_links"},
    {"transform": "regex_clean", "label": "email", "field": "text", "pattern": "dj_email"},
    {"filter": "flagged_words", "field": "text", "mode": "ratio", "max_ratio": 1.0},
    {"filter": "char_repetition", "field": "text", "rep_len": 10, "max_ratio": 0.5},
    {"filter": "ngram_repetition", "field": "text", "rep_len": 10, "max_ratio": 1.0},
]


def dj_steps(words_dir: str, n: int) -> list[dict]:
    common = {"auto_op_parallelism": False, "num_proc": n}
    steps = [
        {"chinese_convert_mapper": {"mode": "t2s"}},
        {"text_length_filter": {"min_len": 1, "max_len": 50000}},
        {"special_characters_filter": {"min_ratio": 0.0, "max_ratio": 1.0}},
        {"clean_links_mapper": {}},
        {"clean_email_mapper": {}},
        {"flagged_words_filter": {"lang": "zh", "tokenization": False, "max_ratio": 1.0,
                                  "flagged_words_dir": words_dir, "use_words_aug": False}},
        {"character_repetition_filter": {"rep_len": 10, "max_ratio": 0.5}},
        {"word_repetition_filter": {"lang": "zh", "tokenization": False, "rep_len": 10, "max_ratio": 1.0}},
    ]
    for s in steps:
        for v in s.values():
            v.update(common)
    return steps


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _digest(ids: list[str], texts: list[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(f"{i}\t{t}\n".encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- workers

def register_transforms(per_record: bool = False) -> None:
    """Register the bench transform (bench_convert_all) with the framework, once per process.
    Defined in a function, not at module level, so that cloudpickle ships it by value to Ray
    workers that cannot import this file (benchmarks/bench_ray_dj.py). ``per_record``: declare it
    per-record (it is), so that run_pipeline batches it and the Ray engine runs it on its workers;
    this benchmark leaves it a whole-frame step, as it measured it. Links and e-mails use the
    package's ``regex_clean`` (per-record already)."""
    sys.path.insert(0, str(ROOT))
    import dataclasses

    import cqia_nb.filter.framework as F
    from cqia_nb.filter.rules import traditional as rules

    if "bench_convert_all" in F.FILTERS:
        F.FILTERS["bench_convert_all"].per_record = per_record
        return

    @F.register
    @dataclasses.dataclass
    class ConvertAll(F.Transform):
        """t2s on every record (what chinese_convert_mapper does), one OpenCC call."""
        name = "bench_convert_all"
        field: str = "text"
        config: str = "t2s"

        def required_columns(self):
            return (self.field,)

        def transform(self, frame):
            before = frame[self.field]
            after = rules.convert_texts(before, self.config)
            return F.Rewritten(frame.with_columns(after.alias(self.field)), (before != after).fill_null(False))

    ConvertAll.per_record = per_record


def worker_ours(parquet: str, _aux: str) -> dict:
    t0 = time.perf_counter()
    register_transforms()
    import polars as pl

    import cqia_nb.filter.framework as F
    from cqia_nb.filter.rules import clean

    # links and e-mails: the package's regex_clean with Data-Juicer's own patterns (checked
    # verbatim here) and their proven prefilters (cqia_nb.filter.rules.clean)
    assert clean.DJ_LINK == DJ_LINK and clean.DJ_EMAIL == DJ_EMAIL, "the package's copies of Data-Juicer's patterns differ"
    n = int(os.environ.get("BENCH_THREADS", "1"))
    cfg = F.PipelineConfig.from_dict({"name": "fair", "steps": json.loads(json.dumps(OURS_STEPS))})
    cpu_by_class = _instrument({type(f) for _, f in cfg.build()}) if n == 1 else None
    t1, c1 = time.perf_counter(), _cpu()
    frame = pl.read_parquet(parquet)
    res = F.run_pipeline(frame, cfg, threads=n)
    ids = res.kept["record_id"].to_list()
    t2, c2 = time.perf_counter(), _cpu()
    texts = res.kept["text"].to_list()
    steps = dict(zip(res.steps["name"], res.steps["seconds"]))
    step_cpu = None
    if cpu_by_class is not None:  # CPU seconds per step (1 thread: one step runs at a time)
        step_cpu = {name: cpu_by_class.get(_step_key(f), 0.0) for name, f in cfg.build()}
    return {"startup_s": t1 - t0, "process_s": t2 - t1, "cpu_s": c2 - c1, "n_in": frame.height, "n_kept": len(ids),
            "digest": _digest(ids, texts), "ids_digest": _digest(ids, [""] * len(ids)), "steps": steps,
            "steps_cpu": step_cpu, "text_bytes": int(frame["text"].str.len_bytes().sum()),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "kept_path": _dump(ids, texts, "ours")}


def _step_key(step) -> str:
    return type(step).__name__ + repr(sorted(step.params().items()))


def _instrument(classes) -> dict[str, float]:
    """Add the process CPU seconds spent in each step's measure/keep/details/transform to the
    returned dict (by class and parameters); meaningful with one thread, where one step runs at a time."""
    import functools

    acc: dict[str, float] = {}
    for cls in classes:
        for meth in ("measure", "keep", "details", "transform"):
            f = cls.__dict__.get(meth)
            if f is None:
                continue

            def wrapped(self, *a, __f=f, **kw):
                c = time.process_time()
                try:
                    return __f(self, *a, **kw)
                finally:
                    k = _step_key(self)
                    acc[k] = acc.get(k, 0.0) + time.process_time() - c

            setattr(cls, meth, functools.wraps(f)(wrapped))
    return acc


def worker_recipe(parquet: str, _aux: str) -> dict:
    """Our whole default recipe (recipes/filter-default.yaml, 26 steps incl. exact and near dedup) on the
    real records (instruction/input/output columns), same timed region; no Data-Juicer counterpart."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import polars as pl

    import cqia_nb.filter.framework as F

    n = int(os.environ.get("BENCH_THREADS", "1"))
    cfg = F.PipelineConfig.from_yaml(ROOT / "recipes" / "filter-default.yaml")
    cfg.build()
    t1, c1 = time.perf_counter(), _cpu()
    frame = pl.read_parquet(parquet)
    res = F.run_pipeline(frame, cfg, threads=n)
    ids = res.kept["record_id"].to_list()
    t2, c2 = time.perf_counter(), _cpu()
    return {"startup_s": t1 - t0, "process_s": t2 - t1, "cpu_s": c2 - c1, "n_in": frame.height, "n_kept": len(ids),
            "digest": _digest(ids, [""] * len(ids)), "ids_digest": _digest(ids, [""] * len(ids)),
            "steps": dict(zip(res.steps["name"], res.steps["seconds"])), "steps_cpu": None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def worker_dj(parquet: str, words_dir: str) -> dict:
    t0 = time.perf_counter()
    import datasets
    import pyarrow.parquet as pq
    from data_juicer.core.data import NestedDataset
    from data_juicer.ops import load_ops

    datasets.disable_progress_bars()
    n = int(os.environ.get("BENCH_THREADS", "1"))
    ops = load_ops(dj_steps(words_dir, n))
    t1, c1 = time.perf_counter(), _cpu()
    table = pq.read_table(parquet)
    ds = NestedDataset(datasets.Dataset(datasets.table.InMemoryTable(table)))
    n_in = len(ds)
    per_op, per_op_cpu = {}, {}
    for op in ops:
        a, ca = time.perf_counter(), _cpu()
        ds = op.run(ds)
        per_op[op._name] = time.perf_counter() - a
        per_op_cpu[op._name] = _cpu() - ca  # children's CPU counts once they are reaped
    ids = ds["record_id"]
    ids = list(ids)
    t2, c2 = time.perf_counter(), _cpu()
    texts = list(ds["text"])
    return {"startup_s": t1 - t0, "process_s": t2 - t1, "cpu_s": c2 - c1, "n_in": n_in, "n_kept": len(ids),
            "digest": _digest(ids, texts), "ids_digest": _digest(ids, [""] * len(ids)), "steps": per_op,
            "steps_cpu": per_op_cpu, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "kept_path": _dump(ids, texts, "dj")}


def _dump(ids, texts, who) -> str:
    p = WORK / f"kept-{who}.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        for i, t in zip(ids, texts):
            f.write(json.dumps({"record_id": i, "text": t}, ensure_ascii=False) + "\n")
    return str(p)


# ----------------------------------------------------------------------------- driver

def thread_env(n: int) -> dict:
    v = str(n)
    return {"OMP_NUM_THREADS": v, "NUMEXPR_NUM_THREADS": v, "NUMEXPR_MAX_THREADS": v, "MKL_NUM_THREADS": v,
            "OPENBLAS_NUM_THREADS": v, "RAYON_NUM_THREADS": v, "POLARS_MAX_THREADS": v, "BENCH_THREADS": v,
            "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run_worker(python: str, who: str, n: int, parquet: Path, words: Path) -> dict | None:
    cores = ",".join(str(i) for i in range(n))
    cmd = ["taskset", "-c", cores, python, str(Path(__file__).resolve()), "--worker", who,
           "--in", str(parquet), "--aux", str(words)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **thread_env(n)},
                       cwd=tempfile.gettempdir(), timeout=1800)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode or not lines:
        print(f"  {who} failed (rc {p.returncode}): {p.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def prepare(source: str) -> tuple[Path, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    parquet = WORK / "records.parquet"
    if not parquet.exists() or not (WORK / "records-full.parquet").exists():
        import warnings

        import polars as pl

        sys.path.insert(0, str(ROOT))
        import cqia_nb.data as data

        warnings.simplefilter("ignore")
        with tempfile.TemporaryDirectory() as c:
            f = data.load(data.LoadConfig(source=source, cache_dir=c)).frame
        f.select("record_id", pl.concat_str([pl.col(c).fill_null("") for c in ("instruction", "input", "output")],
                                            separator="\n").alias("text")).write_parquet(parquet)
        f.write_parquet(WORK / "records-full.parquet")  # the default recipe's input (worker_recipe)
    words = WORK / "words"
    words.mkdir(exist_ok=True)
    src = ROOT / "cqia_nb" / "resources" / "flagged_words_zh.txt"
    ws = [w.strip() for w in src.read_text(encoding="utf-8").splitlines() if w.strip() and not w.startswith("#")]
    (words / "flagged_words.json").write_text(json.dumps({"zh": ws}, ensure_ascii=False), encoding="utf-8")
    return parquet, words


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dj-python", default=str(DJ_PY), help="build it with benchmarks/dj/build_dj_env.sh")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"), help="the real COIG-CQIA copy")
    ap.add_argument("--json", default=str(WORK / "bench_rules_fair.json"))
    ap.add_argument("--recipe", action=argparse.BooleanOptionalAction, default=True,
                    help="also time our whole default recipe (no Data-Juicer counterpart)")
    ap.add_argument("--worker", choices=("ours", "dj", "recipe"), help=argparse.SUPPRESS)
    ap.add_argument("--in", dest="inp", help=argparse.SUPPRESS)
    ap.add_argument("--aux", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps({"ours": worker_ours, "dj": worker_dj, "recipe": worker_recipe}[args.worker](args.inp, args.aux)))
        return 0
    if not Path(args.dj_python).exists():
        print(f"no Data-Juicer at {args.dj_python}: build it with `bash benchmarks/dj/build_dj_env.sh` "
              "(or pass --dj-python)", file=sys.stderr)
        return 2
    if not Path(args.data).is_dir():
        print(f"no COIG-CQIA copy at {args.data}: pass --data", file=sys.stderr)
        return 2
    parquet, words = prepare(args.data)
    limit = scan_limit(parquet)
    out = {"load_avg_start": os.getloadavg(), "limit": limit, "runs": []}
    summary = {}
    for n in map(int, args.threads.split(",")):
        runs: dict[str, list[dict]] = {"ours": [], "dj": [], "recipe": []}
        for rep in range(args.reps):
            order = ["ours", "dj"] if rep % 2 == 0 else ["dj", "ours"]
            if args.recipe:
                order.append("recipe")
            for who in order:
                inp = WORK / "records-full.parquet" if who == "recipe" else parquet
                r = run_worker(args.dj_python if who == "dj" else sys.executable, who, n, inp, words)
                if r:
                    r.update(who=who, threads=n, rep=rep, load_avg=os.getloadavg()[0])
                    runs[who].append(r)
                    out["runs"].append(r)
            print(f"  {n} thread(s): repetition {rep + 1} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        for who, rs in runs.items():
            if not rs:
                continue
            proc = statistics.median(r["process_s"] for r in rs)
            summary[f"{who}-{n}"] = {
                "reps": len(rs), "process_s": proc, "records_per_s": rs[0]["n_in"] / proc,
                "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                "startup_s": statistics.median(r["startup_s"] for r in rs), "kept": rs[0]["n_kept"],
                "digest": rs[0]["digest"], "ids_digest": rs[0]["ids_digest"],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                "all_process_s": [round(r["process_s"], 2) for r in rs],
                "steps_median": {k: round(statistics.median(r["steps"][k] for r in rs), 3) for k in rs[0]["steps"]},
                "steps_cpu_median": ({k: round(statistics.median(r["steps_cpu"][k] for r in rs), 3)
                                      for k in rs[0]["steps_cpu"]} if rs[0].get("steps_cpu") else None),
                "load_avg": [round(r["load_avg"], 1) for r in rs]}
    out["summary"] = summary
    out["load_avg_end"] = os.getloadavg()
    Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"\n{'side':10}{'thr':>4}{'reps':>5}{'process s':>10}{'cpu s':>8}{'records/s':>10}{'kept':>7}"
          f"{'start s':>8}{'peak MiB':>9}  digest(ids+texts)  runs")
    for k, s in summary.items():
        who, n = k.split("-")
        print(f"{who:10}{n:>4}{s['reps']:>5}{s['process_s']:>10.2f}{s['cpu_s']:>8.2f}{s['records_per_s']:>10,.0f}"
              f"{s['kept']:>7}{s['startup_s']:>8.2f}{s['peak_rss_mib']:>9.0f}  {s['digest']}  {s['all_process_s']}")
    for k, s in summary.items():
        print(f"{k} steps, wall s: " + ", ".join(f"{a} {b:.2f}" for a, b in s["steps_median"].items()))
        if s["steps_cpu_median"]:
            print(f"{k} steps, CPU s: " + ", ".join(f"{a} {b:.2f}" for a, b in s["steps_cpu_median"].items()))
    print(f"\nlimit: {limit['ops']} ops x {limit['bytes'] / 1e6:.1f} MB of text, each byte read once at the plain scan "
          f"rate ({limit['bytes_per_s'] / 1e9:.2f} GB/s on one core) = {limit['cpu_s']:.3f} CPU-s")
    for k, s in summary.items():
        who, n = k.split("-")
        frac = limit["cpu_s"] / s["cpu_s"] if who != "recipe" else None
        print(f"{k}: cores busy {s['cpu_s'] / (s['process_s'] * int(n)):.0%} of {n}"
              + (f"; fraction of the limit {frac:.1%}" if frac else "") + f"; load average {s['load_avg']}")
    for n in args.threads.split(","):
        o, d = summary.get(f"ours-{n}"), summary.get(f"dj-{n}")
        if o and d:
            print(f"{n} thread(s): ours/DJ records/s = {o['records_per_s'] / d['records_per_s']:.1f}x "
                  f"(CPU s: {d['cpu_s'] / o['cpu_s']:.1f}x); "
                  f"same kept ids: {o['ids_digest'] == d['ids_digest']}; same kept texts: {o['digest'] == d['digest']}")
        r = summary.get(f"recipe-{n}")
        if r and d:
            print(f"{n} thread(s): our whole default recipe ({r['kept']} kept) {r['records_per_s']:,.0f} records/s, "
                  f"{r['records_per_s'] / d['records_per_s']:.1f}x Data-Juicer's like-for-like rate "
                  f"(CPU s: {d['cpu_s'] / r['cpu_s']:.1f}x)")
    return 0


def scan_limit(parquet: Path) -> dict:
    """The physical floor of the like-for-like ops: each of the 8 ops must read every byte of the
    text once. One plain vectorised pass over all the UTF-8 bytes (count a byte value, numpy, one
    core, best of 7) gives the rate; limit CPU-s = 8 x bytes / rate. Fraction of the limit = limit
    CPU-s / a side's CPU-s (a regex, a hash or a dictionary lookup costs more than a scan, so
    100 % is not reachable; the figure says how far from memory speed each side is)."""
    import numpy as np
    import polars as pl

    raw = pl.read_parquet(parquet, columns=["text"])["text"].str.join("").cast(pl.Binary).item()
    buf = np.frombuffer(raw, dtype=np.uint8)
    best = float("inf")
    for _ in range(7):
        c = time.perf_counter()
        np.count_nonzero(buf == 0x0A)
        best = min(best, time.perf_counter() - c)
    ops = len(OURS_STEPS)
    return {"ops": ops, "bytes": len(buf), "bytes_per_s": len(buf) / best, "cpu_s": ops * best}


if __name__ == "__main__":
    sys.exit(main())
