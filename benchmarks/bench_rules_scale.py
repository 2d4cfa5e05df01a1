"""How each rule step and the default recipe scale with the input: time and peak memory at 1x,
10x, 50x the real COIG-CQIA copy (issue 17).

    .venv/bin/python benchmarks/bench_rules_scale.py --scales 1,10 --reps 1:2,10:2
    .venv/bin/python benchmarks/bench_rules_scale.py --scales 1,10,50 --reps 1:2,10:2,50:1 \\
        --steps recipe,special_chars,ngram_repetition --baseline /tmp/cqia-main
    .venv/bin/python benchmarks/bench_rules_scale.py --engine streaming --scales 1,10,50 \
        --reps 1:2,10:1,50:1 --steps rules,recipe     # the streaming engine (issue 13), outputs written

Data: the real copy (``--data``, default ../shared/coig-cqia) and K-1 replicas of it, generated
into a temporary folder (removed at the end; never committed, never under the repo). Replica r
of a record gets the record_id ``<id>#r<r>``, its own text buffers (the Arrow file of Kx is K
times 1x's) and an edit:
  cipher (default)  its instruction, input and output with the CJK ideographs U+4E00-U+9FFF
                    put through a fixed permutation per replica (characters OpenCC changes
                    among themselves, the others among themselves); every other character
                    stays. Lengths, character classes, repeats, punctuation, URLs and digits are
                    the original's, so the rule steps do the same work per record, while the
                    replicas are neither exact nor near duplicates of each other: the data
                    looks like a K-times larger corpus with the real one's statistics (only
                    Chinese word lists, e.g. flagged words and ad phrases, match less).
  edit              `` <r>`` appended to the instruction: unique records that near dedup sees
                    as K-record clusters, so its candidate pairs grow as K squared (by
                    construction of the data, not of a larger corpus).

Each (step, scale, repetition) runs in a fresh process that
  1. imports cqia_nb from the checkout under test (``--baseline DIR``: also from that checkout,
     e.g. ``git worktree add /tmp/cqia-main main``; runs are interleaved new, baseline, new, ...),
  2. reads the Arrow file fully into memory (pyarrow, not memory-mapped),
  3. warms up on the first 300 records (lookup tables, OpenCC, regexes: fixed costs),
  4. resets the peak-RSS counter (``/proc/self/clear_refs``) and times ``run_pipeline`` of the
     step alone with its parameters in recipes/filter-default.yaml (``recipe``: all 19 steps;
     ``rules``: the 17 before the two dedup steps).
Reported: wall and CPU seconds of that call (median over repetitions), peak RSS during it
(VmHWM: the frame + interpreter + everything the step allocates; max over repetitions) and
working memory = peak RSS - the loaded frame's Arrow size (its buffers' bytes). Ratios: time at Kx / (K x time at 1x),
1.00 is linear (target <= 1.2); working memory at Kx / at 1x (target for the recipe <= 1.5,
apart from the dedup index: its bytes per record are printed). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import yaml

from cqia_nb.data.load import LoadConfig, load
from cqia_nb.filter.framework import PipelineConfig, run_pipeline
from cqia_nb.filter.rules.kernels import class_mask, codepoints
from cqia_nb.filter.rules.traditional import changeable_chars

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "filter-default.yaml"
DEDUP = ("exact_dedup", "near_dedup")
TEXT = ("instruction", "input", "output")


def recipe_steps() -> list[dict]:
    return yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["steps"]


def step_names() -> list[str]:
    return PipelineConfig.from_dict({"steps": recipe_steps()}).step_names()


def config_for(step: str) -> dict:
    """The one-step recipe of ``step`` (its default-recipe parameters), the whole recipe
    (``recipe``) or the recipe without its dedup steps (``rules``)."""
    steps = recipe_steps()
    if step == "recipe":
        return {"name": "recipe", "steps": steps}
    if step == "rules":
        return {"name": "rules", "steps": [s for s in steps if s["filter"] not in DEDUP]}
    return {"name": step, "steps": [steps[step_names().index(step)]]}


# ----------------------------------------------------------------------------- data

def _han_tables(k: int, seed: int = 17) -> list[np.ndarray]:
    """For replicas 1..k-1: a BMP code point table that permutes the ideographs of the CJK Unified
    Ideographs block (U+4E00-U+9FFF, those the filters' regex engine calls Han), characters OpenCC's t2s changes among themselves and the others among
    themselves, and leaves every other code point as it is."""
    changeable = np.array([ord(c) for c in changeable_chars("t2s")], dtype=np.int64)
    block = np.arange(0x4E00, 0xA000)
    block = block[class_mask(block.astype(np.uint32), r"\p{Han}")]  # assigned ideographs only
    classes = [block[np.isin(block, changeable)], block[~np.isin(block, changeable)]]
    rng = np.random.default_rng(seed)
    tables = []
    for _ in range(1, k):
        t = np.arange(0x10000, dtype=np.uint32)
        for cls in classes:
            t[cls] = rng.permutation(cls)
        tables.append(t)
    return tables


def _encipher(col: pl.Series, table: np.ndarray) -> pl.Series:
    """Every text of ``col`` with its BMP code points mapped through ``table`` (nulls stay)."""
    cps, lengths = codepoints(col)
    cps = cps.copy()
    bmp = cps < 0x10000
    cps[bmp] = table[cps[bmp]]
    joined = cps.tobytes().decode("utf-32-le")
    ends = np.cumsum(lengths).tolist()
    parts = [joined[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    return pl.Series(col.name, parts, dtype=pl.String).zip_with(col.is_not_null(), col)


def _replica(base: pl.DataFrame, r: int, how: str, table: np.ndarray | None) -> pl.DataFrame:
    """Replica ``r`` of ``base``: new record ids, new text buffers, and its edit (see the docstring)."""
    others = [c for c, t in base.schema.items() if t == pl.String and c not in ("record_id", *TEXT)]
    # concat_str builds new strings: each replica gets its own buffers, as a real K-times larger
    # input has (columns left as they are would share the original's, understating memory)
    cols = [(pl.col("record_id") + f"#r{r}").alias("record_id"),
            *[pl.concat_str([pl.col(c), pl.lit("")]).alias(c) for c in others]]
    if how == "edit":
        cols += [(pl.col("instruction") + f" {r}").alias("instruction"),
                 *[pl.concat_str([pl.col(c), pl.lit("")]).alias(c) for c in TEXT if c != "instruction"]]
        return base.with_columns(cols)
    return base.with_columns(cols).with_columns([_encipher(base[c], table) for c in TEXT])


def build_data(real: Path, out: Path, scales: list[int], how: str) -> dict[int, Path]:
    """x{K}.arrow in ``out`` for each K: the real copy and K-1 replicas (see the docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = load(LoadConfig(source=str(real), cache=False)).frame
    tables = _han_tables(max(scales)) if how == "cipher" else [None] * max(scales)
    paths = {}
    for k in scales:
        frame = pl.concat([base, *[_replica(base, r, how, tables[r - 1]) for r in range(1, k)]], rechunk=True)
        assert frame["record_id"].n_unique() == frame.height
        paths[k] = out / f"x{k}.arrow"
        frame.write_ipc(paths[k], compression="uncompressed")
        frame.write_parquet(paths[k].with_suffix(".parquet"), row_group_size=8192)  # the streaming engine's input
        print(f"data x{k} ({how}): {frame.height:,} records, {paths[k].stat().st_size / 2**20:.0f} MiB Arrow file, "
              f"{frame['instruction'].n_unique():,} distinct instructions", flush=True)
        del frame
        gc.collect()
    return paths


# ----------------------------------------------------------------------------- child

def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(data: str, step: str, engine: str = "memory") -> None:
    """One timed run (in a fresh process); prints a JSON line."""
    import cqia_nb

    if engine == "streaming":
        return child_streaming(data, step)
    with pa.OSFile(data) as f:  # read into memory (not memory-mapped: every page is resident)
        table = pa.ipc.open_file(f).read_all()
    arrow_bytes = table.get_total_buffer_size()
    frame = pl.from_arrow(table)  # zero-copy: the frame is the table's buffers
    del table
    cfg = PipelineConfig.from_dict(config_for(step), step)
    run_pipeline(frame.head(300), cfg)  # warm-up: lookup tables, OpenCC, regexes
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    c0, t0 = time.process_time(), time.perf_counter()
    res = run_pipeline(frame, cfg)
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": sec, "cpu": cpu, "peak": _status("VmHWM"), "frame": arrow_bytes,
                      "records": frame.height, "kept": res.kept.height, "module": cqia_nb.__file__}))


def child_streaming(data: str, step: str) -> None:
    """The streaming engine (``cqia_nb.filter.streaming``) over the parquet copy of ``data``,
    writing its outputs to a temporary folder: nothing is loaded first, so working memory = peak."""
    import cqia_nb
    from cqia_nb.filter.streaming import Source, run_streaming

    src = Source(files=[Path(data).with_suffix(".parquet")])
    cfg = PipelineConfig.from_dict(config_for(step), step)
    with tempfile.TemporaryDirectory(prefix="cqia-stream-") as out:
        run_pipeline(next(src.batches(300)), cfg)  # warm-up, as for the in-memory engine
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        c0, t0 = time.process_time(), time.perf_counter()
        res = run_streaming(src, cfg, out)
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": sec, "cpu": cpu, "peak": _status("VmHWM"), "frame": 0, "records": res.n_in,
                      "kept": res.n_kept, "module": cqia_nb.__file__, "index_bytes": res.index_bytes}))


def run_one(src: Path, data: Path, step: str, max_rss_gib: float, timeout: float, engine: str = "memory") -> dict:
    """One child run with cqia_nb imported from ``src``; killed past the memory or time limit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data), step, engine]
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, env=env, cwd=src)
        try:
            killed = _watch(p, max_rss_gib, timeout)
        finally:
            if p.poll() is None:  # interrupted, or over a limit: leave no child behind
                p.kill()
                p.wait()
        fo.seek(0), fe.seek(0)
        out, err = fo.read(), fe.read()
    if killed:
        return {"killed": killed}
    if p.returncode != 0:
        return {"error": (err.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    r = json.loads(out.strip().splitlines()[-1])
    r["working"] = r["peak"] - r["frame"]
    return r


def _watch(p: subprocess.Popen, max_rss_gib: float, timeout: float) -> str | None:
    """Wait for ``p`` to end; the reason to kill it when it passes the RSS or time limit."""
    t0 = time.time()
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                rss = next((int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:")), 0)
        except OSError:
            rss = 0
        if rss > max_rss_gib * 2**30:
            return f"RSS > {max_rss_gib} GiB"
        if time.time() - t0 > timeout:
            return f"over {timeout:.0f} s"
        time.sleep(0.05)
    return None


# ----------------------------------------------------------------------------- report

def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if "seconds" in r]
    if not ok:
        return {"failed": (runs[-1].get("killed") or runs[-1].get("error")) if runs else "not run"}
    return {"seconds": statistics.median(r["seconds"] for r in ok), "cpu": statistics.median(r["cpu"] for r in ok),
            "peak": max(r["peak"] for r in ok), "working": max(r["working"] for r in ok),
            "frame": ok[0]["frame"], "records": ok[0]["records"], "kept": ok[0]["kept"], "reps": len(ok)}


def table(res: dict, scales: list[int], impls: list[str]) -> str:
    mib = lambda x: f"{x / 2**20:,.0f}"
    big = [k for k in scales if k > 1]
    lines = ["| step | " + " | ".join(f"{k}x wall s (cpu s)" for k in scales) + " | "
             + " | ".join(f"{k}x time / linear, wall (cpu)" for k in big) + " | "
             + " | ".join(f"{k}x peak / working MiB" for k in scales) + " | "
             + " | ".join(f"{k}x working / 1x" for k in big) + " |"]
    lines.append("|" + " --- |" * (lines[0].count("|") - 1))
    steps = list(dict.fromkeys(key.split("@")[0].split(":", 1)[1] for key in res))
    for impl in impls:
        for step in steps:
            r = {k: res.get(f"{impl}:{step}@{k}") for k in scales}
            if not any(r.values()):
                continue
            one = r.get(1) or {}
            cells = [f"{x['seconds']:.2f} ({x['cpu']:.2f})" if x and "seconds" in x else (x or {}).get("failed", "-")
                     for x in r.values()]
            lin, mem, wr = [], [], []
            for k in big:
                x = r[k]
                ok = x and "seconds" in x and "seconds" in one
                lin.append(f"{x['seconds'] / (k * one['seconds']):.2f} ({x['cpu'] / (k * one['cpu']):.2f})" if ok else "-")
                wr.append(f"{x['working'] / one['working']:.2f}" if ok else "-")
            mem = [f"{mib(x['peak'])} / {mib(x['working'])}" if x and "peak" in x else "-" for x in r.values()]
            name = step if impl == "new" else f"{step} ({impl})"
            lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(lin) + " | " + " | ".join(mem)
                         + " | " + " | ".join(wr) + " |")
    return "\n".join(lines)


def dedup_bytes_per_record(res: dict, scales: list[int]) -> list[str]:
    """Dedup steps: extra working memory per extra record between the smallest and largest scale."""
    out = []
    lo, hi = scales[0], scales[-1]
    for step in DEDUP:
        a, b = res.get(f"new:{step}@{lo}"), res.get(f"new:{step}@{hi}")
        if a and b and "working" in a and "working" in b and b["records"] > a["records"]:
            per = (b["working"] - a["working"]) / (b["records"] - a["records"])
            out.append(f"{step}: {per:,.0f} bytes of working memory per record ({lo}x to {hi}x)")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], *sys.argv[4:5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"), help="the real COIG-CQIA copy")
    ap.add_argument("--scales", default="1,10,50")
    ap.add_argument("--reps", default="1:2,10:2,50:1", help="repetitions per scale, SCALE:N,...")
    ap.add_argument("--steps", default="all", help="comma-separated step names, 'rules' (the recipe without dedup), "
                    "'recipe'; all = every step, rules and recipe")
    ap.add_argument("--baseline", default=None, help="a checkout to compare with (e.g. a worktree of main)")
    ap.add_argument("--baseline-scales", default="1", help="scales the baseline runs at (it can be slow)")
    ap.add_argument("--max-rss-gib", type=float, default=18.0)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--out", default=None, help="write all runs as JSON here")
    ap.add_argument("--replicas", choices=("cipher", "edit"), default="cipher",
                    help="how replicas differ from the real records (see the module docstring)")
    ap.add_argument("--tmp", default=None, help="folder for the generated data (default: a new temp dir)")
    ap.add_argument("--engine", choices=("memory", "streaming"), default="memory",
                    help="memory: run_pipeline on the loaded frame; streaming: run_streaming over a parquet copy, "
                         "writing the outputs (issue 13)")
    a = ap.parse_args()
    # a SIGTERM unwinds like Ctrl-C: run_one kills its child, the temporary data is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scales = sorted(int(x) for x in a.scales.split(","))
    reps = {int(k): int(v) for k, v in (x.split(":") for x in a.reps.split(","))}
    steps = step_names() + ["rules", "recipe"] if a.steps == "all" else a.steps.split(",")
    unknown = [s for s in steps if s not in ("rules", "recipe") and s not in step_names()]
    if unknown:
        ap.error(f"unknown step(s) {unknown}; steps: {', '.join(step_names())}, rules, recipe")
    impls = {"new": ROOT}
    if a.baseline:
        impls["baseline"] = Path(a.baseline).resolve()
    base_scales = {int(x) for x in a.baseline_scales.split(",")}
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; implementations: "
          + ", ".join(f"{k}={v}" for k, v in impls.items()), flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cqia-scale-", dir=a.tmp) as tmp:
        data = build_data(Path(a.data), Path(tmp), scales, a.replicas)
        for step in steps:
            for k in scales:
                todo = [i for i in impls if i == "new" or k in base_scales]
                runs: dict[str, list] = {i: [] for i in todo}
                for _ in range(reps.get(k, 1)):  # interleaved: new, baseline, new, baseline ...
                    for i in todo:
                        if not runs[i] or "seconds" in runs[i][-1]:  # no repeat after a kill
                            runs[i].append(run_one(impls[i], data[k], step, a.max_rss_gib, a.timeout, a.engine))
                for i in todo:
                    s = results[f"{i}:{step}@{k}"] = {**summarise(runs[i]), "runs": runs[i]}
                    msg = (f"wall {s['seconds']:8.2f} s  cpu {s['cpu']:8.2f} s  peak {s['peak'] / 2**20:7.0f} MiB"
                           f"  working {s['working'] / 2**20:7.0f} MiB" if "seconds" in s else s["failed"])
                    print(f"{i:8s} {step:24s} {k:>3d}x  {msg}", flush=True)
                if a.out:
                    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}\n")
    print(table(results, scales, list(impls)))
    for line in dedup_bytes_per_record(results, scales):
        print(line)


if __name__ == "__main__":
    main()
