"""Scale curve of `cqia-nb filter` (issue 13): records/s and peak memory at 100k, 300k and 1M
records for the in-memory, streaming and Ray engines.

    .venv/bin/python benchmarks/bench_scale.py --engines inmemory,streaming,ray \\
        --sizes 100000,300000,1000000 --reps 100000:2,300000:2,1000000:1 \\
        --data-dir /tmp/cqia-scale-data --out /tmp/bench_scale.json

Data: the real copy (``--data``, default ../shared/coig-cqia, 17,971 records), then replicas made
by benchmarks/bench_rules_scale.py's generator (imported; see its docstring): record_ids
``<id>#r<r>``, instruction/input/output through a per-replica permutation of the CJK ideographs,
so replicas are neither exact nor near duplicates of each other while the real data's own
duplicates repeat inside each replica (dedup stays realistic); the last replica is truncated to
the exact size. Written replica by replica (memory: one shard + one replica) as Parquet shards
``n<N>/shards/part-*.parquet`` (``--shard-rows`` records, even row groups of <= ``--row-group``)
under ``--data-dir`` (kept, reused; default a new /tmp folder, removed at the end; never the repo).

Each (size, repetition, engine) is a fresh process running the CLI as a user would (repo root,
PYTHONPATH=this checkout; the wall time includes start-up, reading and writing the outputs):
  inmemory   python -m cqia_nb.cli filter --config recipes/filter-default.yaml
                 --set input=n<N>/shards --set out_dir=OUT
  streaming  the same + --streaming
  ray        the same + --engine ray --address 127.0.0.1:PORT: a cluster started once in a session of
             its own, a head and a second node (``ray start``, 1 CPU each), stopped at the end by
             killing that session's processes (``ray stop`` would stop everyone's Ray)
  ray-local  the same + --engine ray (the driver's own ray.init)
Engines are interleaved within a repetition; each run has a session of its own, whose processes are
killed after it; a run that fails (not at a limit) runs once more. Measured: wall seconds; records/s
= input records / wall; CPU seconds (user + system of the CLI and the children it reaped, from
wait4; ray: the CPU every process below used during the run, sampled); peak memory:
  inmemory, streaming  peak RSS of the CLI process (ru_maxrss from wait4, the kernel's high-water mark);
  ray, ray-local       peak over time of the SUM of the RSS of the driver with its descendants and its
                       session, and of every process of the cluster (gcs_server, raylet, workers,
                       agents: the cluster's session), sampled every 0.2 s from /proc; the idle
                       cluster is included (also given alone).
Also sampled for every engine: the peak sums of RSS (``tree_peak``) and of PSS (RSS counts shared
pages, e.g. Ray's object store, once per process; PSS splits them among their users) over the
same processes. Input size: Parquet and Arrow bytes. Ratios: records/s at each size / at the
smallest (target >= 0.8; CPU seconds a record too, steadier on a busy machine); peak RSS at each
size / at the smallest (streaming: ~1.0 apart from the dedup index, the bytes a record the dedup
steps keep as the streaming run prints them; the peak's growth per extra record is printed either
way); ray wall / inmemory wall at the same size (target <= 1.5). Linux only (/proc, wait4).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rules_scale import _han_tables, _replica  # noqa: E402  (the shared replica generator)

from cqia_nb.data.load import LoadConfig, load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "filter-default.yaml"
ENGINES = {"inmemory": [], "streaming": ["--streaming"], "ray": ["--engine", "ray"], "ray-local": ["--engine", "ray"]}
TICK = os.sysconf("SC_CLK_TCK")


def generate(real: Path, root: Path, n: int, shard_rows: int, row_group: int) -> dict:
    """n<N>/shards/ in ``root``: ``n`` records (the real copy, then replicas), written replica by
    replica; reused when a previous invocation wrote it with the same layout."""
    manifest = (d := root / f"n{n}") / "manifest.json"
    m = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if (m.get("shard_rows"), m.get("row_group_max")) == (shard_rows, row_group):
        print(f"data n={n:,}: reused {d} (generated in {m['seconds']:.0f} s)", flush=True)
        return m
    shutil.rmtree(d, ignore_errors=True)
    (d / "shards").mkdir(parents=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = load(LoadConfig(source=str(real), cache=False)).frame
    k = math.ceil(n / base.height)
    tables, schema = _han_tables(k), base.to_arrow().schema
    per_group = math.ceil(shard_rows / math.ceil(shard_rows / row_group))  # even row groups of <= row_group
    pending: list[pa.Table] = []
    have = done = shards = arrow_bytes = 0
    for r in range(k):
        take = min(base.height, n - done - have)
        frame = base if r == 0 else _replica(base, r, "cipher", tables[r - 1])
        pending.append(frame.head(take).to_arrow().cast(schema))
        have += take
        while have >= shard_rows or (r == k - 1 and have):
            buf = pa.concat_tables(pending)
            part, rest = buf.slice(0, shard_rows), buf.slice(shard_rows)
            pq.write_table(part, d / "shards" / f"part-{shards:05d}.parquet", row_group_size=per_group)
            arrow_bytes, shards, done, have = arrow_bytes + part.nbytes, shards + 1, done + part.num_rows, rest.num_rows
            pending = [rest] if have else []
    assert done == n, (done, n)
    m = {"records": n, "shards": shards, "shard_rows": shard_rows, "row_group_max": row_group,
         "row_group_rows": per_group, "replicas": k, "arrow_bytes": arrow_bytes,
         "parquet_bytes": sum(p.stat().st_size for p in (d / "shards").glob("*.parquet")),
         "seconds": time.perf_counter() - t0}
    manifest.write_text(json.dumps(m, indent=1))
    print(f"data n={n:,}: {shards} shards, {k} replicas, {m['parquet_bytes'] / 2**20:,.0f} MiB Parquet, "
          f"{arrow_bytes / 2**20:,.0f} MiB Arrow, generated in {m['seconds']:.1f} s", flush=True)
    return m


def _procs() -> dict[int, tuple[int, int]]:
    """Every live process but this one: pid -> (parent pid, session id); zombies left out."""
    out = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if st[0] != b"Z" and int(d) != os.getpid():
            out[int(d)] = (int(st[1]), int(st[3]))
    return out


def _tree(procs: dict[int, tuple[int, int]], roots: set[int]) -> set[int]:
    """``roots`` (those alive) and all their descendants."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in procs.items():
        children[ppid].append(pid)
    seen: set[int] = set()
    stack = [r for r in roots if r in procs]
    while stack:
        if (p := stack.pop()) not in seen:
            seen.add(p)
            stack.extend(children[p])
    return seen


def _session(procs: dict[int, tuple[int, int]], sid: int) -> set[int]:
    return {p for p, (_, s) in procs.items() if s == sid}


def _field(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file, in bytes (0 if gone)."""
    try:
        with open(path) as f:
            return next((int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":")), 0)
    except OSError:
        return 0


def _cpu(pid: int) -> float:
    """User + system seconds of ``pid`` so far (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().rsplit(b")", 1)[1].split()
        return (int(s[11]) + int(s[12])) / TICK  # utime, stime
    except OSError:
        return 0.0


class Cluster:
    """A local Ray cluster, a head and ``nodes``-1 more nodes with one CPU and ``store_mib`` of object
    store each, started by the ``ray`` next to ``python`` in a new session; its processes are that
    session's members (Ray's daemons and workers stay in it), and stop() kills those only."""

    def __init__(self, python: str, nodes: int, store_mib: int) -> None:
        ray = Path(python).parent / "ray"
        if not ray.exists():
            raise SystemExit(f"no `ray` next to {python}: install ray there or pass --ray-python")
        for attempt in (1, 2):  # a node may miss Ray's 30 s start-up deadline on a busy machine: once more
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.address = f"127.0.0.1:{s.getsockname()[1]}"
            self.tmp = tempfile.mkdtemp(prefix="raysc-", dir="/tmp")  # short: Ray's socket paths are limited
            common = [ray, "start", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                      "--object-store-memory", str(store_mib << 20)]
            cmds = [[*common, "--head", "--port", self.address.split(":")[1], "--temp-dir", self.tmp,
                     "--include-dashboard", "false"]] + [[*common, "--address", self.address]] * (nodes - 1)
            wait = (f"import ray, time; ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)"
                    f"\nwhile sum(n['Alive'] for n in ray.nodes()) < {nodes}: time.sleep(0.2)")  # every node up
            script = " && ".join(shlex.join(map(str, c)) for c in [*cmds, [python, "-c", wait]])
            p = subprocess.Popen(["bash", "-c", script], start_new_session=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=_env())
            self.sid = p.pid
            try:
                out = p.communicate(timeout=300)[0]
            except subprocess.TimeoutExpired:
                out = "not up after 300 s"
            if p.returncode == 0:
                return
            self.stop()
            print(f"starting the Ray cluster failed (attempt {attempt}):\n{out[-3000:]}", flush=True)
        raise SystemExit("could not start the Ray cluster")

    def pids(self, procs: dict[int, tuple[int, int]]) -> set[int]:
        return _session(procs, self.sid)  # the daemons and workers

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s, this cluster's processes only."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _kill(self.pids(_procs()), sig)
            deadline = time.time() + 10
            while self.pids(_procs()) and time.time() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _kill(pids: set[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(OSError):  # gone already
            os.kill(p, sig)


def _env() -> dict[str, str]:
    """This environment importing cqia_nb from this checkout, without RAY_ADDRESS, with Ray's token
    authentication off (its token, ~/.ray/auth_token, is shared by every cluster on the machine)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def measure(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float, max_rss: float,
            cluster: Cluster | None = None, out: Path | None = None) -> dict:
    """Run ``cmd`` in a session of its own and measure it (see the docstring): wall, ``ru`` (wait4's
    rusage: CPU and ru_maxrss of the process and the children it reaped), ``cpu_sampled`` (the CPU
    every process of its tree, its session and ``cluster`` used during the run, sampled every 0.2 s),
    the peak sums of RSS and PSS over those processes, the idle cluster's RSS; stdout and stderr
    (kept in ``out``, default a temporary folder). Killed past ``timeout`` s or ``max_rss`` GiB;
    whatever it leaves running in its session is killed afterwards."""
    with contextlib.ExitStack() as stack:
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="measure-")))
        ext0 = cluster.pids(_procs()) if cluster else set()  # the idle cluster
        idle, cpu0 = sum(_field(f"/proc/{p}/status", "VmRSS") for p in ext0), {p: _cpu(p) for p in ext0}
        cpu_last, tree_peak, pss_peak, killed, load = dict(cpu0), 0, 0, None, os.getloadavg()[0]
        with open(out / "stdout", "w+") as fo, open(out / "stderr", "w+") as fe:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=cwd, env=env, start_new_session=True)
            try:
                while not (w := os.wait4(p.pid, os.WNOHANG))[0]:
                    tree = _tree(procs := _procs(), {p.pid}) | _session(procs, p.pid)  # daemonised ones too
                    ext = (cluster.pids(procs) - tree) if cluster else set()
                    for q in tree | ext:  # CPU time only grows: a process gone since _procs() reads 0, ignored
                        cpu_last[q] = max(cpu_last.get(q, 0.0), _cpu(q))
                    tree_peak = max(tree_peak, sum(_field(f"/proc/{q}/status", "VmRSS") for q in tree | ext))
                    pss_peak = max(pss_peak, sum(_field(f"/proc/{q}/smaps_rollup", "Pss") for q in tree | ext))
                    if tree_peak > max_rss * 2**30 or time.perf_counter() - t0 > timeout:
                        killed = f"RSS > {max_rss} GiB" if tree_peak > max_rss * 2**30 else f"over {timeout:.0f} s"
                        _kill(tree, signal.SIGKILL)
                    time.sleep(0.2)
                wall, ru = time.perf_counter() - t0, w[2]
                p.returncode = os.waitstatus_to_exitcode(w[1])
            finally:
                if p.returncode is None:  # interrupted: leave no process behind
                    _kill(_tree(_procs(), {p.pid}), signal.SIGKILL)
                    p.wait()
                _kill(left := _session(_procs(), p.pid), signal.SIGKILL)  # what the run left running (Ray's)
            fo.seek(0), fe.seek(0)
            stdout, stderr = fo.read(), fe.read()
    sampled = sum(max(0.0, cpu_last[q] - cpu0.get(q, 0.0)) for q in cpu_last)  # Ray's workers are not reaped
    return {"returncode": p.returncode, "killed": killed, "wall": wall, "ru": ru, "cpu_sampled": sampled,
            "tree_peak": tree_peak, "pss_peak": pss_peak, "cluster_idle_rss": idle, "load_before": load,
            "left_running": len(left), "stdout": stdout, "stderr": stderr}


def run_cli(python: str, engine: str, data: Path, records: int, work: Path, timeout: float, max_rss: float,
            cluster: Cluster | None) -> dict:
    """One fresh `cqia-nb filter` process (see the docstring); its measures or why it failed."""
    out = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=work))
    extra = ENGINES[engine] + (["--address", cluster.address] if engine == "ray" and cluster else [])
    cmd = [python, "-m", "cqia_nb.cli", "filter", "--config", str(RECIPE), "--set", f"input={data}",
           "--set", f"out_dir={out / 'out'}", *extra]
    m = measure(cmd, ROOT, _env(), timeout, max_rss, cluster if engine == "ray" else None, out)
    ru, stdout, stderr, killed = m["ru"], m["stdout"], m["stderr"], m["killed"]
    res: dict = {"engine": engine, "records": records, "returncode": m["returncode"], "load_before": m["load_before"],
                 "killed": bool(killed), "left_running": m["left_running"]}
    if killed or m["returncode"]:
        res["failed"] = killed or (stderr.strip().splitlines() or [f"exit {m['returncode']}"])[-1][-300:]
        res["stderr_tail"] = stderr[-3000:]
    else:
        cpu = m["cpu_sampled"] if engine.startswith("ray") else ru.ru_utime + ru.ru_stime
        kept = re.findall(r"\d+ in, (\d+) kept", stdout)  # the summary line: N in, K kept, D dropped
        peak = m["tree_peak"] if engine.startswith("ray") else ru.ru_maxrss * 1024
        res.update(wall=m["wall"], rps=records / m["wall"], cpu=cpu, peak=peak,
                   tree_peak=m["tree_peak"], pss_peak=m["pss_peak"], kept=int(kept[-1]) if kept else None)
        if cluster and engine == "ray":
            res["cluster_idle_rss"] = m["cluster_idle_rss"]
        # a streaming run prints "streaming: STEP kept N bytes a record for its decision (spilled to disk)"
        index = {k: float(v) for k, v in re.findall(r"^streaming: (\S+) kept ([\d.]+) bytes a record", stdout, re.M)}
        res.update(streamed=bool(re.search(r"^streaming: ", stdout, re.M)), index_bytes=index,
                   dedup_bytes_per_record=sum(v for k, v in index.items() if "dedup" in k) if index else None)
    shutil.rmtree(out, ignore_errors=True)
    return res


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if "wall" in r]
    if not ok:
        return {"failed": runs[-1].get("failed", "?") if runs else "not run"}
    s = {"reps": len(ok), "kept": ok[0]["kept"], "streamed": any(r.get("streamed") for r in ok),
         "wall": statistics.median(r["wall"] for r in ok), "cpu": statistics.median(r["cpu"] for r in ok)} | {
        k: max(v) for k in ("peak", "tree_peak", "pss_peak", "cluster_idle_rss", "dedup_bytes_per_record")
        if (v := [r[k] for r in ok if r.get(k) is not None])}
    return s | {"rps": ok[0]["records"] / s["wall"]}


def report(res: dict, sizes: list[int], engines: list[str], data: dict[int, dict]) -> str:
    """The markdown table and the ratio lines (see the docstring)."""
    mib = lambda x: f"{x / 2**20:,.0f}"  # noqa: E731
    lo, hi = sizes[0], sizes[-1]
    lines = ["| engine | records | input Parquet / Arrow MiB | wall s | records/s | CPU s | peak RSS MiB | PSS sum "
             "MiB (idle cluster RSS) | kept | records/s / at smallest | peak / at smallest | dedup index B/record |",
             "|" + " --- |" * 12]
    for e in engines:
        for n in sizes:
            s, b = res.get(f"{e}@{n}", {}), res.get(f"{e}@{lo}", {})
            name = f"{e} (streamed!)" if e == "inmemory" and s.get("streamed") else e  # above the auto threshold
            head = f"| {name} | {n:,} | {mib(data[n]['parquet_bytes'])} / {mib(data[n]['arrow_bytes'])} |"
            if "wall" not in s:
                lines.append(f"{head} {s.get('failed', '-')} |" + " - |" * 8)
                continue
            pss = mib(s["pss_peak"]) + (f" ({mib(s['cluster_idle_rss'])})" if "cluster_idle_rss" in s else "")
            rel = f"{s['rps'] / b['rps']:.2f} | {s['peak'] / b['peak']:.2f}" if "wall" in b else "- | -"
            lines.append(f"{head} {s['wall']:.1f} | {s['rps']:,.0f} | {s['cpu']:.1f} | {mib(s['peak'])} | {pss} | "
                         f"{s['kept']} | {rel} | {s.get('dedup_bytes_per_record', '-')} |")
    lines.append("")
    for e in engines:
        a, b = res.get(f"{e}@{lo}", {}), res.get(f"{e}@{hi}", {})
        if "wall" in a and "wall" in b and hi > lo:
            lines.append(f"{e}: records/s at {hi:,} / at {lo:,}: {b['rps'] / a['rps']:.2f} (target >= 0.8; CPU s a "
                         f"record: {b['cpu'] * lo / (a['cpu'] * hi):.2f}x); peak RSS {b['peak'] / a['peak']:.2f}x, "
                         f"{(b['peak'] - a['peak']) / (hi - lo):,.0f} bytes per extra record")
    for e in ("ray", "ray-local"):
        for n in sizes:
            r, m = res.get(f"{e}@{n}", {}), res.get(f"inmemory@{n}", {})
            if "wall" in r and "wall" in m:
                lines.append(f"{e} wall / inmemory wall at {n:,}: {r['wall'] / m['wall']:.2f} (target <= 1.5)")
    kept = {n: {res[f"{e}@{n}"]["kept"] for e in engines if "wall" in res.get(f"{e}@{n}", {})} for n in sizes}
    lines += [f"WARNING: the engines disagree on the records kept at {n:,}: {k}" for n, k in kept.items() if len(k) > 1]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default="inmemory,streaming,ray", help=f"comma-separated, of {', '.join(ENGINES)}")
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--reps", default="100000:2,300000:2,1000000:1", help="N, or SIZE:N,... (1 for sizes not named)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"), help="the real COIG-CQIA copy")
    ap.add_argument("--data-dir", help="keep and reuse the generated data here, outside the repo (default: a new "
                    "folder under /tmp, removed at the end)")
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--row-group", type=int, default=8192, help="most rows per row group (split evenly)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter that runs the CLI")
    ap.add_argument("--ray-python", help="the interpreter for the ray engines, with ray installed (default --python)")
    ap.add_argument("--ray-object-store-mib", type=int, default=1024, help="per node (Ray spills beyond it)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--max-rss-gib", type=float, default=18.0, help="kill a run whose process tree passes this")
    ap.add_argument("--out", help="write every run and the summaries here (JSON)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: kill the cluster, remove temp data
    engines, sizes = a.engines.split(","), sorted(int(x) for x in a.sizes.split(","))
    if bad := [e for e in engines if e not in ENGINES]:
        ap.error(f"unknown engine(s) {bad}; engines: {', '.join(ENGINES)}")
    reps = ({n: int(a.reps) for n in sizes} if ":" not in a.reps
            else {n: 1 for n in sizes} | {int(k): int(v) for k, v in (x.split(":") for x in a.reps.split(","))})
    root = Path(a.data_dir or tempfile.mkdtemp(prefix="cqia-scale-", dir="/tmp")).resolve()
    if root.is_relative_to(ROOT):
        ap.error("--data-dir must be outside the repo (generated data is never committed)")
    (root / "runs").mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; data in {root}", flush=True)
    cluster, ray_py = None, a.ray_python or a.python
    results: dict = {"sizes": sizes, "engines": engines, "data": {}, "summary": {}, "runs": []}
    try:
        data = results["data"] = {n: generate(Path(a.data), root, n, a.shard_rows, a.row_group) for n in sizes}
        if "ray" in engines:
            cluster = Cluster(ray_py, nodes=2, store_mib=a.ray_object_store_mib)
            print(f"ray cluster at {cluster.address}, 2 nodes", flush=True)
        for n in sizes:
            runs: dict[str, list[dict]] = {e: [] for e in engines}
            for e in [e for _ in range(reps[n]) for e in engines]:
                if runs[e] and "failed" in runs[e][-1]:
                    continue  # no repeat after a failure
                for attempt in (1, 2):  # once more after a failed start (Ray missing its start-up deadline)
                    r = run_cli(ray_py if e.startswith("ray") else a.python, e, root / f"n{n}" / "shards", n,
                                root / "runs", a.timeout, a.max_rss_gib, cluster)
                    if "failed" not in r or r["killed"] or attempt == 2:
                        break
                    print(f"{e:10s} {n:>9,}  failed, once more: {r['failed']}", flush=True)
                runs[e].append(r)
                results["runs"].append(r)
                msg = (f"wall {r['wall']:7.1f} s  {r['rps']:8,.0f} rec/s  cpu {r['cpu']:7.1f} s  peak "
                       f"{r['peak'] / 2**20:7,.0f} MiB  kept {r['kept']}  (load {r['load_before']:.1f})"
                       if "wall" in r else r["failed"])
                print(f"{e:10s} {n:>9,}  {msg}", flush=True)
                results["summary"][f"{e}@{n}"] = summarise(runs[e])
                if a.out:
                    Path(a.out).write_text(json.dumps(results, indent=1))
    finally:
        if cluster:
            cluster.stop()
        if not a.data_dir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}\n")
    print(report(results["summary"], sizes, engines, results["data"]))


if __name__ == "__main__":
    main()
