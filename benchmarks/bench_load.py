"""Load + validate the real COIG-CQIA copy: cqia_nb.data vs datasets.load_dataset("json").

    .venv/bin/python benchmarks/bench_load.py [--data ../shared/coig-cqia] [--reps 5] [--scale 10]

Cold = a fresh, empty cache folder for both tools (each writes its own cache); warm = the same
call again on the filled cache. Both tools are imported before timing. Same record count asserted.
Then linearity: a synthetic copy with every file repeated ``--scale`` times (≈180k records) must
load and validate in ≤ scale × the time of the original; peak RSS of each run is reported from a
fresh subprocess so one run's memory does not hide another's.
"""

from __future__ import annotations

import argparse
import json
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


def data_files(root: Path) -> list[str]:
    """The real data files (Git LFS pointers excluded: `datasets` would fail on them)."""
    return [str(p) for p in sorted(root.glob("*/*.jsonl"))
            if not p.read_bytes()[:40].startswith(b"version https://git-lfs")]


def time_ours(root: Path, cache: Path | None) -> tuple[float, int]:
    """One load; ``cache=None`` parses and validates without touching any cache."""
    from cqia_nb.data.load import LoadConfig, load

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = load(LoadConfig(source=str(root), cache=cache is not None, cache_dir=str(cache) if cache else None))
    return time.perf_counter() - t, res.n_loaded


def time_datasets(files: list[str], cache: Path) -> tuple[float, int]:
    import datasets

    t = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(cache))
    n = ds.num_rows
    return time.perf_counter() - t, n


def peak_rss_mb(code: str) -> float:
    """Peak RSS (MiB) of a fresh interpreter running ``code``."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
    wrapped = code + ("\nprint([l.split()[1] for l in open('/proc/self/status') "
                      "if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def scaled_copy(src: Path, dst: Path, scale: int) -> None:
    """Every data file repeated ``scale`` times (real content, same layout)."""
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    root = Path(args.data)
    if not root.is_dir():
        sys.exit(f"{root}: not found; pass --data PATH to a COIG-CQIA clone")
    files = data_files(root)
    import datasets  # noqa: F401  (import cost is not what we measure)

    import cqia_nb.data as data  # noqa: F401

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    rows: dict[str, list[float]] = {k: [] for k in ("ours_cold", "ours_warm", "ds_cold", "ds_warm")}
    n_ours = n_ds = 0
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            t, n_ours = time_ours(root, Path(a)); rows["ours_cold"].append(t)
            t, _ = time_ours(root, Path(a)); rows["ours_warm"].append(t)
            t, n_ds = time_datasets(files, Path(b)); rows["ds_cold"].append(t)
            t, _ = time_datasets(files, Path(b)); rows["ds_warm"].append(t)
    assert n_ours == n_ds, f"record counts differ: ours {n_ours}, datasets {n_ds}"
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"records: {n_ours:,} (both tools), {len(files)} data files, {args.reps} repetitions, medians:")
    print(f"{'':14}{'cqia_nb':>10}{'datasets':>10}{'ratio':>8}  target")
    print(f"{'cold (s)':14}{med['ours_cold']:10.3f}{med['ds_cold']:10.3f}"
          f"{med['ours_cold'] / med['ds_cold']:8.2f}  <= 1.5")
    print(f"{'warm (s)':14}{med['ours_warm']:10.4f}{med['ds_warm']:10.4f}"
          f"{med['ours_warm'] / med['ds_warm']:8.2f}  <= 2.0")

    with tempfile.TemporaryDirectory() as big, tempfile.TemporaryDirectory() as c1, \
            tempfile.TemporaryDirectory() as c2:
        scaled_copy(root, Path(big), args.scale)
        # Parse + validate alone (no cache I/O: disk write speed is not what scales here) ...
        base = [time_ours(root, None)[0] for _ in range(args.reps)]
        scaled, n_big = [], 0
        for _ in range(max(2, args.reps // 2)):
            t, n_big = time_ours(Path(big), None)
            scaled.append(t)
        ratio = statistics.median(scaled) / statistics.median(base)
        # ... and a cold load that also writes the cache.
        base_c = statistics.median(time_ours(root, Path(tempfile.mkdtemp(dir=c1)))[0] for _ in range(args.reps))
        big_c = statistics.median(time_ours(Path(big), Path(tempfile.mkdtemp(dir=c2)))[0] for _ in range(2))
        rss_small = peak_rss_mb(f"from cqia_nb.data import load; load(source={str(root)!r}, cache=False)")
        rss_big = peak_rss_mb(f"from cqia_nb.data import load; load(source={big!r}, cache=False)")
        rss_ds = peak_rss_mb("import datasets, json; datasets.disable_progress_bars(); "
                             f"datasets.load_dataset('json', data_files=json.loads({json.dumps(json.dumps(files))}), "
                             f"split='train', cache_dir={c1!r})")
    print(f"linearity: {n_ours:,} -> {n_big:,} records ({args.scale}x): load+validate "
          f"{statistics.median(base):.3f} s -> {statistics.median(scaled):.3f} s = {ratio:.1f}x (target <= {args.scale}x); "
          f"cold with cache write {base_c:.3f} s -> {big_c:.3f} s = {big_c / base_c:.1f}x")
    print(f"peak RSS: cqia_nb {rss_small:.0f} MiB ({n_ours:,} records), {rss_big:.0f} MiB ({n_big:,}); "
          f"datasets {rss_ds:.0f} MiB ({n_ds:,})")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": med, "linearity": ratio, "rss_mb": {
            "ours": rss_small, "ours_scaled": rss_big, "datasets": rss_ds}}, indent=2))


if __name__ == "__main__":
    main()
