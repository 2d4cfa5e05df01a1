"""Load + validate COIG-CQIA, like for like: cqia_nb.data vs datasets.load_dataset("json"), at 1x and
at 10x the real data, against the machine's limit (a plain read of the same bytes).

    .venv/bin/python benchmarks/bench_load.py [--data ../shared/coig-cqia] [--reps 3] [--scales 1,10]
                                              [--cores 2] [--ref OTHER_CHECKOUT] [--json out.json]

Same work, same resources, same timed region on both sides:
  * every measurement is a fresh interpreter with the library already imported (``import
    cqia_nb.data`` / ``import datasets``) before the clock starts; whatever a load imports lazily
    is inside the timed region, for both (``import datasets`` itself imports pandas, pyarrow.json
    and pyarrow.compute; a load of ours imports what it needs);
  * cold = a new, empty cache folder for that run; both tools parse every file and write their Arrow
    cache there. The data files are in the OS page cache (read just before, outside the clock);
  * warm = the same call again in that interpreter (median of 5 calls); warm (fresh) = a new interpreter on the filled
    cache (datasets' first call in a process pays its lazy set-up there);
  * peak RSS = VmHWM of the interpreter at the end of the cold load (imports included), shown
    beside the RSS after imports so that the load's own share can be read off;
  * CPU s = user + sys of the interpreter (all threads) during the cold load, because this machine is
    shared: wall times move with the load average, CPU seconds much less;
  * threads: ``--cores 2`` = the default pools of both tools (pyarrow and polars size them to the
    cores); ``--cores 1`` = pinned to CPU 0 with taskset and OMP_NUM_THREADS, POLARS_MAX_THREADS,
    RAYON_NUM_THREADS = 1 (Arrow sizes its pool from OMP_NUM_THREADS);
  * the limit: a plain ``open().read()`` of the same data files in a fresh interpreter. "% limit"
    = plain-read time / load time = the tool's bytes/s as a share of the plain read's;
  * the 10x copy (every non-LFS data file repeated 10 times, card copied: 179,710 records) is
    generated into a temporary folder (``--scaled-dir`` keeps it), never committed;
  * runs are interleaved in a rotating order so that all sides see the same machine load; medians
    over ``--reps``, every cold time listed. ``--ref`` adds another checkout of cqia_nb (say, main
    before a change) as a third side.
Both sides must load the same number of records (asserted). The data files given to datasets are the
non-LFS ``*/*.jsonl`` files; ours also reads the card and the four LFS pointer files (and reports
them as problems), a few kilobytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"cold": 1.2, "warm": 0.5}  # issue 15: ratio to datasets at most; peak RSS at most datasets'
WARM_REPS = 5


def data_files(root: Path) -> list[str]:
    """The real data files (Git LFS pointers excluded: `datasets` would fail on them)."""
    return [str(p) for p in sorted(root.glob("*/*.jsonl"))
            if not p.read_bytes()[:40].startswith(b"version https://git-lfs")]


def scaled_copy(src: Path, dst: Path, scale: int) -> None:
    """Every data file repeated ``scale`` times (real content, same layout), and the card."""
    for f in data_files(src):
        rel = Path(f).relative_to(src)
        (dst / rel.parent).mkdir(parents=True, exist_ok=True)
        raw = Path(f).read_bytes()
        if not raw.endswith(b"\n"):
            raw += b"\n"
        (dst / rel).write_bytes(raw * scale)
    card = src / "README.md"
    if card.exists():
        shutil.copy(card, dst / "README.md")


# ----------------------------------------------------------------------------- one measurement

def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k = line.split(":")[0]
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(line.split()[1]) // 1024
    return out


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(side: str, src: str, cache: str, phase: str) -> dict:
    """Runs in a fresh interpreter: import the side's library, then time one load (and, for a cold
    load, the same call again)."""
    import warnings

    warnings.simplefilter("ignore")
    files = data_files(Path(src))
    if side == "plain":
        t, c = time.perf_counter(), _cpu()
        n = 0
        for f in files:
            with open(f, "rb") as fh:
                n += len(fh.read())
        return {"cold_s": time.perf_counter() - t, "cold_cpu_s": _cpu() - c, "bytes": n}
    if side == "datasets":
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()

        def run() -> int:
            return datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache).num_rows
    else:
        import cqia_nb.data as data

        tree = os.environ["BENCH_TREE"]
        assert data.__file__.startswith(tree + os.sep), f"{data.__file__} is not under {tree}"

        def run() -> int:
            return data.load(data.LoadConfig(source=src, cache_dir=cache)).n_loaded
    res: dict = {"rss_after_import": _status()["VmRSS"]}
    for f in files:  # the data files in the page cache, as for every run (outside the clock)
        Path(f).read_bytes()
    key = "cold" if phase == "cold" else "warm_fresh"
    t, c = time.perf_counter(), _cpu()
    n = run()
    res.update({f"{key}_s": time.perf_counter() - t, f"{key}_cpu_s": _cpu() - c, "records": n})
    st = _status()
    res.update({f"{key}_peak_mib": st["VmHWM"]})
    if phase == "cold":  # warm: the same call again, WARM_REPS times (tens of ms: one call is noise)
        warm = []
        for _ in range(WARM_REPS):
            t = time.perf_counter()
            run()
            warm.append(time.perf_counter() - t)
        res["warm_s"] = statistics.median(warm)
    return res


def run_child(side: str, tree: Path | None, src: Path, cache: Path, phase: str, cores: int) -> dict:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if tree is not None:
        env.update(PYTHONPATH=str(tree), BENCH_TREE=str(tree))
    cmd = [sys.executable, __file__, "--child", side, str(src), str(cache), phase]
    if cores == 1:
        env.update(OMP_NUM_THREADS="1", POLARS_MAX_THREADS="1", RAYON_NUM_THREADS="1")
        cmd = ["taskset", "-c", "0", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, cwd=tree or ROOT)
    if p.returncode:
        raise RuntimeError(f"{side} {phase} on {src} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scales", default="1,10")
    ap.add_argument("--cores", default="2", help="comma-separated: 2 (default pools), 1 (pinned, 1 thread)")
    ap.add_argument("--ref", help="another checkout of cqia_nb to time as a third side (e.g. main)")
    ap.add_argument("--scaled-dir", help="where the scaled copies go (kept); default: a temporary folder")
    ap.add_argument("--json", help="also write every run and the medians here")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    root = Path(args.data)
    if not root.is_dir():
        sys.exit(f"{root}: not found; pass --data PATH to a COIG-CQIA clone")
    sides: dict[str, Path | None] = {"cqia_nb": ROOT, "datasets": None}
    if args.ref:
        sides["ref"] = Path(args.ref).resolve()
    names = list(sides)
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    scaled_base = Path(args.scaled_dir) if args.scaled_dir else tmp
    out: dict = {"load_avg_start": os.getloadavg(), "runs": [], "medians": {}}
    try:
        for cores in map(int, args.cores.split(",")):
            for scale in map(int, args.scales.split(",")):
                src = root
                if scale != 1:
                    src = scaled_base / f"x{scale}"
                    if not (src / "README.md").exists():
                        scaled_copy(root, src, scale)
                nbytes = sum(os.path.getsize(f) for f in data_files(src))
                rows: dict[str, list[dict]] = {s: [] for s in names + ["plain"]}
                for rep in range(args.reps):
                    for side in names[rep % len(names):] + names[:rep % len(names)] + ["plain"]:
                        cache = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=tmp))
                        try:
                            tree = sides.get(side)
                            r = run_child(side, tree, src, cache, "cold", cores)
                            if side != "plain":
                                r.update(run_child(side, tree, src, cache, "warm", cores))
                        finally:
                            shutil.rmtree(cache, ignore_errors=True)
                        r.update(side=side, scale=scale, cores=cores, rep=rep, load_avg=os.getloadavg()[0])
                        rows[side].append(r)
                        out["runs"].append(r)
                    print(f"  {cores} core(s), {scale}x: repetition {rep + 1}/{args.reps} done "
                          f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
                counts = {s: {r["records"] for r in rows[s]} for s in names}
                assert len(set().union(*counts.values())) == 1, f"record counts differ: {counts}"
                med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
                       for s, rs in rows.items()}
                out["medians"][f"{scale}x-{cores}c"] = med
                _print_table(med, rows, names, scale, cores, nbytes, len(data_files(src)), args.reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_avg_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def _print_table(med: dict, rows: dict, names: list[str], scale: int, cores: int, nbytes: int,
                 nfiles: int, reps: int) -> None:
    plain, ds = med["plain"]["cold_s"], med["datasets"]
    n = int(med["cqia_nb"]["records"])
    print(f"\n== {scale}x: {n:,} records, {nbytes / 2**20:.0f} MiB in {nfiles} data files; {cores} core(s); "
          f"{reps} reps, medians; limit = plain read {plain:.3f} s = {nbytes / plain / 2**20:.0f} MiB/s")
    print(f"{'':10}{'cold s':>8}{'CPU s':>7}{'x ds':>6}{'MiB/s':>7}{'%limit':>7}{'warm s':>8}{'x ds':>6}"
          f"{'fresh s':>8}{'x ds':>6}{'peak':>6}{'import':>7}  cold runs (s)")
    for s in names:
        r = med[s]
        print(f"{s:10}{r['cold_s']:8.3f}{r['cold_cpu_s']:7.2f}{r['cold_s'] / ds['cold_s']:6.2f}"
              f"{nbytes / r['cold_s'] / 2**20:7.1f}{100 * plain / r['cold_s']:6.1f}%"
              f"{r['warm_s']:8.4f}{r['warm_s'] / ds['warm_s']:6.2f}"
              f"{r['warm_fresh_s']:8.3f}{r['warm_fresh_s'] / ds['warm_fresh_s']:6.2f}"
              f"{r['cold_peak_mib']:6.0f}{r['rss_after_import']:7.0f}  "
              + " ".join(f"{x['cold_s']:.2f}" for x in rows[s]))
    ours = med["cqia_nb"]
    verdict = {"cold": ours["cold_s"] / ds["cold_s"], "warm": ours["warm_s"] / ds["warm_s"]}
    print("targets: " + "; ".join(f"{k} {v:.2f}x datasets (<= {TARGETS[k]}x: {'met' if v <= TARGETS[k] else 'NOT met'})"
                                  for k, v in verdict.items())
          + f"; peak RSS {ours['cold_peak_mib']:.0f} vs {ds['cold_peak_mib']:.0f} MiB "
            f"({'met' if ours['cold_peak_mib'] <= ds['cold_peak_mib'] else 'NOT met'})"
          + f"; CPU ratio {ours['cold_cpu_s'] / ds['cold_cpu_s']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
