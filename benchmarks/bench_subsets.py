"""Subsets, mixture, tokens, contamination and every export on the real COIG-CQIA, per phase.

    .venv/bin/python benchmarks/bench_subsets.py [--data ../shared/coig-cqia] [--benchmarks ../shared/benchmarks]
                                                 [--spec recipes/subsets-paper.yaml] [--reps 3] [--json out.json]

What one run does (the spec's work, ``recipes/subsets-paper.yaml`` by default: the 13 per-config
and 10 card-group subsets, two narrower subsets and one 9-part mixture; empty built-ins skipped):

* ``load``            the real copy through ``cqia_nb.build.load_input`` (the loader's cache);
* ``evals``           read every evaluation file under --benchmarks (C-Eval, CMMLU, SafetyBench,
                      BELLE-EVAL; 16,658 items) -- ``contamination.load_eval_sets``;
* ``index``           hash their 13-grams once -- ``contamination.build_index``;
* ``tokenizer``       train (cold) or load (warm) the tiny BPE -- ``formatting.load_tokenizer``;
* ``contamination``   13-gram overlap of all training records -- ``contamination.check``;
* ``format``          messages, chatml rendering, token counts (batched; cached on disk by text
                      hash after the first run), truncation policy;
* ``subsets`` / ``mixtures``  selection, the stratified split, the mixture draw;
* ``jsonl`` ``parquet`` ``hf`` ``trl`` ``llamafactory`` ``manifest+card+hashes``  every export
                      of every target (``exports.export_all``), SHA-256 of every file.

Each repetition runs in a fresh process (peak RSS is that process's ``ru_maxrss``; "wall" is
the child's whole life: interpreter start, imports, all phases). The first repetition runs with
empty caches (a new ``CQIA_CACHE_DIR``: the loader parses the JSON, the tiny tokenizer is
trained, every text is tokenised); the following ones reuse that cache (the steady state of a
notebook or CLI re-run). Reported: cold, and the median of the warm runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHASES = ("load", "evals", "index", "tokenizer", "contamination", "format", "subsets", "mixtures",
          "jsonl", "parquet", "hf", "trl", "llamafactory", "manifest+card+hashes")


def child(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    warnings.simplefilter("ignore")
    import cqia_nb.build as S
    import cqia_nb.build.contamination as C
    import cqia_nb.build.exports as E
    import cqia_nb.build.formatting as F

    t_imports = time.perf_counter() - t_start
    ph: dict[str, float] = {}
    spec = S.BuildSpec.from_yaml(args.spec)
    t = time.perf_counter()
    data = S.load_input(args.data)
    ph["load"] = time.perf_counter() - t
    t = time.perf_counter()
    evals = C.load_eval_sets(args.benchmarks)
    ph["evals"] = time.perf_counter() - t
    t = time.perf_counter()
    cs = spec.contamination or S.ContaminationSpec()
    index = C.build_index(evals, cs.n, cs.max_item_frequency)
    ph["index"] = time.perf_counter() - t
    t = time.perf_counter()
    tok = F.load_tokenizer(spec.format.tokenizer, data.frame)
    ph["tokenizer"] = time.perf_counter() - t
    if spec.contamination is None:
        spec.contamination = cs
    build = S.run_build(spec, input=args.data, tokenizer=tok, evals=index, data=data)
    for k in ("contamination", "format", "subsets", "mixtures"):
        ph[k] = build.timings.get(k, 0.0)
    out = Path(args.out)
    hashes = E.export_all(build, out, timings=ph)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = build.summary()
    print(json.dumps({
        "phases": ph, "imports": t_imports, "wall": time.perf_counter() - t_start,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "files": len(hashes), "bytes": size, "records": data.frame.height,
        "targets": summary.height, "rows": int(summary["rows"].sum()), "tokens": int(build.base["n_tokens"].sum()),
        "skipped": list(build.skipped), "contamination": build.contamination_note,
        "mixture": {t.name: t.frame.height for t in build.targets.values() if t.kind == "mixture"},
        "truncation": build.format.report.summary(),
    }))


def run_child(args: argparse.Namespace, cache: Path, out: Path) -> dict:
    env = {**os.environ, "CQIA_CACHE_DIR": str(cache), "TOKENIZERS_PARALLELISM": "true"}
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([sys.executable, __file__, "--child", "--data", args.data, "--benchmarks", args.benchmarks,
                        "--spec", args.spec, "--out", str(out)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"child failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"))
    ap.add_argument("--benchmarks", default=str(ROOT.parent / "shared" / "benchmarks"))
    ap.add_argument("--spec", default=str(ROOT / "recipes" / "subsets-paper.yaml"))
    ap.add_argument("--reps", type=int, default=3, help="warm repetitions after the cold one")
    ap.add_argument("--json", help="write all measurements here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    for p in (args.data, args.benchmarks, args.spec):
        if not Path(p).exists():
            raise SystemExit(f"{p} not found")
    tmp = Path(tempfile.mkdtemp(prefix="bench-subsets-"))
    try:
        runs = [run_child(args, tmp / "cache", tmp / "out")]
        for _ in range(args.reps):
            runs.append(run_child(args, tmp / "cache", tmp / "out"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cold, warm = runs[0], runs[1:]
    print(f"real data: {cold['records']:,} records -> {cold['targets']} outputs ({cold['rows']:,} rows, "
          f"{cold['tokens']:,} tokens), {cold['files']} files, {cold['bytes'] / 2**20:.0f} MiB; "
          f"mixture rows {cold['mixture']}; skipped (empty) {cold['skipped']}")
    print(f"contamination: {cold['contamination']}")
    print(f"truncation: {cold['truncation']}")
    print(f"nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; {len(warm)} warm runs (median, min-max)")
    print(f"{'phase':22} {'cold s':>8} {'warm s':>8}   warm range")
    for k in PHASES:
        w = [r["phases"].get(k, 0.0) for r in warm]
        rng = f"{min(w):.2f}-{max(w):.2f}" if w else ""
        print(f"{k:22} {cold['phases'].get(k, 0.0):8.2f} {statistics.median(w) if w else 0:8.2f}   {rng}")
    tot_c = sum(cold["phases"].values())
    tot_w = [sum(r["phases"].values()) for r in warm]
    print(f"{'phases total':22} {tot_c:8.2f} {statistics.median(tot_w) if tot_w else 0:8.2f}   "
          f"{min(tot_w):.2f}-{max(tot_w):.2f}" if tot_w else "")
    print(f"{'imports':22} {cold['imports']:8.2f} {statistics.median(r['imports'] for r in warm) if warm else 0:8.2f}")
    print(f"{'process wall':22} {cold['wall']:8.2f} {statistics.median(r['wall'] for r in warm) if warm else 0:8.2f}")
    print(f"{'peak RSS MiB':22} {cold['rss_mib']:8.0f} {max(r['rss_mib'] for r in warm) if warm else 0:8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cold": cold, "warm": warm}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
