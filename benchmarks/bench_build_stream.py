"""Peak memory of `cqia-nb build` in memory vs `--streaming` on a large input (issue 13).

    .venv/bin/python benchmarks/bench_build_stream.py --input /tmp/cqia-scale-data/n100000/shards \\
        [--config recipes/subsets-paper.yaml] [--modes inmemory,streaming] [--out /tmp/bench_build_stream.json]

INPUT: anything `cqia-nb build` reads; a folder of parquet shards such as benchmarks/bench_scale.py
writes (the real copy replicated, ciphered, unique ids). Each mode is a fresh process running the CLI
as a user would (`python -m cqia_nb.cli build --config SPEC --set input=INPUT --set out_dir=OUT`, plus
`--streaming` or `--no-streaming`) with an empty cache folder of its own (CQIA_CACHE_DIR: the tiny
tokenizer is trained and every token counted in each run). Measured: wall and CPU seconds and the peak
RSS of the CLI (ru_maxrss from wait4). The two output folders are compared file by file (the SHA-256
lines the CLI prints), and must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--config", default="recipes/subsets-paper.yaml")
    ap.add_argument("--modes", default="inmemory,streaming")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-build-stream-"))
    results = []
    try:
        for mode in args.modes.split(","):
            r = _measured(mode, args.config, args.input, work)
            print(f"{mode}: wall {r['wall_s']} s, CPU {r['cpu_s']} s, peak RSS {r['peak_rss_mib']:,} MiB, "
                  f"{len(r['hashes'])} files", flush=True)
            results.append(r)
        if len(results) > 1:
            same = all(r["hashes"] == results[0]["hashes"] for r in results[1:])
            print("output folders identical file by file:", same)
            if not same:
                raise SystemExit("the output folders differ")
        if args.out:
            Path(args.out).write_text(json.dumps([{k: v for k, v in r.items() if k != "hashes"} for r in results],
                                                 indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measured(mode: str, config: str, source: str, work: Path) -> dict:
    """``run`` with the child's rusage: wait4 on the process itself (Popen would reap it first)."""
    out = work / f"out-{mode}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CQIA_CACHE_DIR": str(work / f"cache-{mode}")}
    cmd = [sys.executable, "-m", "cqia_nb.cli", "build", "--config", config, "--set", f"input={source}",
           "--set", f"out_dir={out}", "--streaming" if mode == "streaming" else "--no-streaming"]
    t = time.perf_counter()
    log = work / f"{mode}.out"
    with open(log, "w") as fo, open(work / f"{mode}.err", "w") as fe:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fo, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{mode} failed ({p.returncode}):\n{(work / f'{mode}.err').read_text()[-3000:]}")
    lines = log.read_text().splitlines()
    hashes = {line.split("  ", 1)[1].replace(str(out), ""): line.split("  ", 1)[0] for line in lines}
    return {"mode": mode, "input": source, "wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "peak_rss_mib": round(ru.ru_maxrss / 1024), "files": len(hashes), "hashes": hashes}


if __name__ == "__main__":
    main()
