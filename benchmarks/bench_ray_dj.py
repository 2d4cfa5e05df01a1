"""Rule filters on a Ray cluster, like for like: Data-Juicer 1.6.1's Ray executor against
`cqia-nb filter --engine ray` (issue 13).

    bash benchmarks/dj/build_dj_ray_env.sh /work/dj-ray-venv   # once: Data-Juicer 1.6.1, ray[data] 2.52.0, pandas<3
    PYTHONPATH=. .venv/bin/python benchmarks/bench_ray_dj.py --dj-venv /work/dj-ray-venv \\
        --sizes 100000,300000 --reps 100000:3,300000:2 --data-dir /tmp/cqia-scale-data --out /tmp/bench_ray_dj.json

Ops: bench_rules_fair.py's (imported, see its docstring): t2s on every record, text length,
special characters, links and e-mails removed with Data-Juicer's regexes, flagged words, character
10-gram repetition, word 10-gram repetition; where the two definitions differ the thresholds drop
nothing, so both sides must keep the same ids with the same texts. Ours: the same steps as a recipe
(written to the work folder), the two bench transforms declared per-record so that they run on the
workers. Data-Juicer: its ops with num_proc 2 (the cluster's CPUs), auto_op_parallelism off.

Input: bench_scale.py's parquet shards ``<data-dir>/n<N>/shards`` (its generator, not rerun here),
reduced once to ``record_id`` + ``text`` (instruction\\ninput\\noutput, as bench_rules_fair.py)
under ``--work`` with the same row groups; both sides read those files.

Each run: a fresh local cluster of bench_scale.py's shape (``Cluster``: a head and a second node,
1 CPU and ``--ray-object-store-mib`` each, on 127.0.0.1, in a session of its own, killed by that
session at the end; never ``ray stop``), started with the side's own Ray (ours 2.60 from
``--python``, Data-Juicer's pinned 2.52.0 from its venv), then one driver process as a user runs it:
  ours  python -c "register the bench transforms; cqia_nb.cli.main(['filter', ..., '--engine', 'ray',
        '--address', ADDR])" -> kept.parquet/.jsonl, dropped.parquet/.jsonl, steps.csv, pipeline.json
  dj    dj-python dj-process --config CFG (executor_type: ray, ray_address: ADDR) -> kept records as
        JSON Lines (its exporter; it writes no dropped records)
measured with bench_scale.measure (imported): wall seconds of the driver (start-up, connecting,
reading, the ops, writing; the cluster's start is not in it), records/s = input records / wall,
CPU seconds of every process (driver and cluster, sampled from /proc), peak sum of RSS. Sides
alternate within a repetition (ours, dj; then dj, ours); the load average is recorded before each
run. The kept ids and texts are compared afterwards (sorted by id: Data-Juicer's output order is
Ray's). Linux only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rules_fair as fair  # noqa: E402  (the ops, both sides)
from bench_scale import Cluster, _env, measure  # noqa: E402  (cluster and measurement)

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": "/dev/null", "UV_OFFLINE": "1", "UV_NO_CONFIG": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}  # as dj-python sets them


def text_input(data_dir: Path, work: Path, n: int) -> Path:
    """``work/n<N>/text/part-*.parquet``: record_id + text of bench_scale's shards (made once)."""
    src, dst = data_dir / f"n{n}" / "shards", work / f"n{n}" / "text"
    if not src.is_dir():
        raise SystemExit(f"no {src}: generate it with benchmarks/bench_scale.py --sizes {n} --data-dir {data_dir}")
    if dst.is_dir() and len(list(dst.glob("*.parquet"))) == len(list(src.glob("*.parquet"))):
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.parquet")):
        rg = pq.ParquetFile(f).metadata.row_group(0).num_rows
        text = pl.concat_str([pl.col(c).fill_null("") for c in ("instruction", "input", "output")], separator="\n")
        pl.read_parquet(f).select("record_id", text.alias("text")).write_parquet(dst / f.name, row_group_size=rg)
    return dst


def digests(ids: list[str], texts: list[str]) -> tuple[str, str]:
    """(ids, ids + texts) digests of the kept records, sorted by id."""
    pairs = sorted(zip(ids, texts))
    a, b = hashlib.sha256(), hashlib.sha256()
    for i, t in pairs:
        a.update(f"{i}\n".encode()), b.update(f"{i}\t{t}\n".encode())
    return a.hexdigest()[:16], b.hexdigest()[:16]


def run_once(side: str, n: int, inp: Path, out: Path, a: argparse.Namespace, words: Path) -> dict:
    python = a.python if side == "ours" else str(Path(a.dj_venv) / "bin" / "python")
    cluster = Cluster(python, nodes=2, store_mib=a.ray_object_store_mib)
    try:
        if side == "ours":
            recipe = out / "recipe.yaml"
            recipe.write_text(yaml.safe_dump({"name": "fair", "steps": fair.OURS_STEPS}, allow_unicode=True))
            argv = ["filter", "--config", str(recipe), "--set", f"input={inp}", "--set", f"out_dir={out / 'out'}",
                    "--engine", "ray", "--address", cluster.address]
            cmd = [python, "-c", f"import sys; sys.path.insert(0, {str(BENCH)!r}); import bench_rules_fair as f; "
                   f"f.register_transforms(per_record=True); from cqia_nb.cli import main; sys.exit(main({argv!r}))"]
        else:
            cfg = out / "dj.yaml"
            cfg.write_text(yaml.safe_dump({
                "project_name": "bench-ray-dj", "executor_type": "ray", "ray_address": cluster.address,
                "dataset_path": str(inp), "export_path": str(out / "out" / "kept.jsonl"), "work_dir": str(out / "work"),
                "process": fair.dj_steps(str(words), 2)}, allow_unicode=True))
            cmd = [str(Path(a.dj_venv) / "bin" / "dj-python"), str(Path(a.dj_venv) / "bin" / "dj-process"),
                   "--config", str(cfg)]
        m = measure(cmd, out, _env(), a.timeout, a.max_rss_gib, cluster, out)
    finally:
        cluster.stop()
    r = {"side": side, "records": n, "load_before": m["load_before"], "returncode": m["returncode"],
         "wall": m["wall"], "cpu": m["cpu_sampled"], "peak": m["tree_peak"], "pss_peak": m["pss_peak"],
         "cluster_idle_rss": m["cluster_idle_rss"], "driver_cpu": m["ru"].ru_utime + m["ru"].ru_stime}
    if m["killed"] or m["returncode"]:
        r["failed"] = m["killed"] or m["stderr"][-3000:]
        return r
    if side == "ours":
        kept = pl.read_parquet(out / "out" / "kept.parquet", columns=["record_id", "text"])
    else:
        kept = pl.concat([pl.read_ndjson(f, schema={"record_id": pl.String, "text": pl.String})
                          for f in sorted((out / "out" / "kept.jsonl").rglob("*.json*"))])
    r["kept"] = kept.height
    r["ids_digest"], r["digest"] = digests(kept["record_id"].to_list(), kept["text"].to_list())
    r["rps"] = n / r["wall"]
    shutil.rmtree(out / "out")  # the outputs (GBs at 300k); the logs and configs stay in ``out``
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dj-venv", required=True, help="built by benchmarks/dj/build_dj_ray_env.sh")
    ap.add_argument("--python", default=sys.executable, help="our interpreter, with ray[data] (cqia-notebooks[ray])")
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--reps", default="3", help="N, or SIZE:N,...")
    ap.add_argument("--sides", default="ours,dj")
    ap.add_argument("--data-dir", default="/tmp/cqia-scale-data", help="bench_scale.py's --data-dir")
    ap.add_argument("--work", default="/tmp/cqia-ray-dj", help="derived inputs and the runs' outputs (outside the repo)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"), help="for the flagged-word list")
    ap.add_argument("--ray-object-store-mib", type=int, default=1024, help="per node, as bench_scale.py")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--max-rss-gib", type=float, default=12.0)
    ap.add_argument("--out", help="every run and the summary (JSON)")
    a = ap.parse_args()
    os.environ.update(OFFLINE)  # both sides' clusters and drivers: nothing installed or downloaded at run time
    sizes = [int(x) for x in a.sizes.split(",")]
    reps = ({n: int(a.reps) for n in sizes} if ":" not in a.reps
            else {n: 1 for n in sizes} | {int(k): int(v) for k, v in (x.split(":") for x in a.reps.split(","))})
    work = Path(a.work).resolve()
    if work.is_relative_to(ROOT):
        ap.error("--work must be outside the repo")
    _, words = fair.prepare(a.data)
    res: dict = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count(), "runs": [], "summary": {}}
    print(f"load average {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    for n in sizes:
        inp = text_input(Path(a.data_dir), work, n)
        for rep in range(reps[n]):
            sides = a.sides.split(",")
            for side in sides if rep % 2 == 0 else sides[::-1]:
                out = Path(tempfile.mkdtemp(prefix=f"{side}-{n}-", dir=work))
                r = run_once(side, n, inp, out, a, words) | {"rep": rep, "dir": str(out)}
                res["runs"].append(r)
                print(f"{side:5s} {n:>8,} rep {rep}: " + (
                    f"wall {r['wall']:6.1f} s  {r['rps']:6,.0f} rec/s  cpu {r['cpu']:6.1f} s  peak "
                    f"{r['peak'] / 2**20:6,.0f} MiB  kept {r['kept']}  ids {r['ids_digest']} texts {r['digest']}"
                    if "failed" not in r else "FAILED " + r["failed"][-1500:]) + f"  (load {r['load_before']:.1f})",
                    flush=True)
                if a.out:
                    Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    print(f"\nload average at the end {os.getloadavg()}\n")
    print("| side | records | reps | wall s (median) | records/s | CPU s (median) | peak RSS MiB | kept | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        for side in a.sides.split(","):
            ok = [r for r in res["runs"] if r["side"] == side and r["records"] == n and "failed" not in r]
            if not ok:
                continue
            s = {"reps": len(ok), "wall": statistics.median(r["wall"] for r in ok),
                 "cpu": statistics.median(r["cpu"] for r in ok), "peak": max(r["peak"] for r in ok),
                 "kept": sorted({r["kept"] for r in ok}), "digests": sorted({(r["ids_digest"], r["digest"]) for r in ok}),
                 "walls": [round(r["wall"], 1) for r in ok], "loads": [round(r["load_before"], 1) for r in ok]}
            res["summary"][f"{side}@{n}"] = s
            print(f"| {side} | {n:,} | {s['reps']} | {s['wall']:.1f} {s['walls']} | {n / s['wall']:,.0f} | "
                  f"{s['cpu']:.1f} | {s['peak'] / 2**20:,.0f} | {s['kept']} | {s['loads']} |")
        o, d = res["summary"].get(f"ours@{n}"), res["summary"].get(f"dj@{n}")
        if o and d:
            print(f"{n:,}: wall DJ/ours {d['wall'] / o['wall']:.2f}x, CPU s DJ/ours {d['cpu'] / o['cpu']:.2f}x; "
                  f"same kept ids: {o['digests'][0][0] == d['digests'][0][0]}; same texts: "
                  f"{o['digests'][0][1] == d['digests'][0][1]}")
    res["load_avg_end"] = os.getloadavg()
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
