"""Two-process DDP against one process on the tiny model: tokens/s and the loss curves (not a test).

The same launches as ``tests/train/test_processes.py`` (its ``_launch`` and ``--set`` list, imported):
one process with 8 examples per step against ``accelerate launch --config_file recipes/accelerate/cpu.yaml``
(two CPU processes, gloo) with 4 + 4, so the global batch and the data order are the same. Runs alternate
(one, two, one, two, ...); the first pair is a discarded warm-up (it also builds the cached tiny base).

* tokens/s: the last ``tokens_per_s`` of ``metrics.jsonl`` — the global non-padding tokens seen
  (both processes') over the time since ``on_train_begin`` in rank 0; start-up, model building and
  saving the adapter at the end are not in it. ``wall s`` is the whole launch, start-up included.
* loss: the largest |loss one - loss two| over the logged steps of each pair.

    .venv/bin/python benchmarks/bench_ddp.py [--reps 3] [--steps 20] [--json out.json]

On a machine with fewer than 4 free cores the two processes (one torch thread each, as in the tests)
compete with each other and with anything else running: the script prints the CPU count and the load
average before and after, which bound what the 2-process figure can show.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "train"))

import test_processes as tp  # noqa: E402  (the tests' launch command and settings)

from cqia_nb.train.trainer import read_metrics  # noqa: E402


def run(kind: str, out: Path, steps: int) -> dict:
    per_device = "8" if kind == "one" else "4"
    cmd = [*tp._launch(kind), "train", "--config", "recipes/train-cpu-tiny.yaml", *tp.STEPS,
           "--set", f"max_steps={steps}", "--set", f"save_steps={steps}", "--set", f"output_dir={out}",
           "--set", f"per_device_train_batch_size={per_device}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{r.stderr[-3000:]}")
    rows = [m for m in read_metrics(out) if "loss" in m]
    return {"wall_s": wall, "tokens_per_s": rows[-1]["tokens_per_s"], "tokens": rows[-1]["tokens"],
            "losses": {m["step"]: m["loss"] for m in rows}, "cmd": cmd}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    load0 = os.getloadavg()
    print(f"CPUs: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))}); load average before: "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    pairs = []
    with tempfile.TemporaryDirectory(prefix="cqia-bench-ddp-") as tmp:
        for rep in range(args.reps + 1):
            one = run("one", Path(tmp) / f"one-{rep}", args.steps)
            two = run("accelerate", Path(tmp) / f"two-{rep}", args.steps)
            assert one["tokens"] == two["tokens"], (one["tokens"], two["tokens"])
            diff = max(abs(one["losses"][s] - two["losses"][s]) for s in one["losses"])
            tag = "warm-up" if rep == 0 else f"rep {rep}"
            print(f"{tag:>8}: one {one['tokens_per_s']:8.0f} tok/s ({one['wall_s']:5.1f} s wall) · two "
                  f"{two['tokens_per_s']:8.0f} tok/s ({two['wall_s']:5.1f} s wall) · ratio "
                  f"{two['tokens_per_s'] / one['tokens_per_s']:.2f} · max |Δloss| {diff:.2e}", flush=True)
            if rep:
                pairs.append((one, two, diff))
    load1 = os.getloadavg()
    ones = [p[0]["tokens_per_s"] for p in pairs]
    twos = [p[1]["tokens_per_s"] for p in pairs]
    ratios = [b / a for a, b in zip(ones, twos)]
    summary = {
        "cpus": os.cpu_count(), "load_before": load0, "load_after": load1, "steps": args.steps,
        "tokens_per_run": pairs[0][0]["tokens"] if pairs else None, "reps": len(pairs),
        "one_tokens_per_s": {"median": statistics.median(ones), "min": min(ones), "max": max(ones)},
        "two_tokens_per_s": {"median": statistics.median(twos), "min": min(twos), "max": max(twos)},
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "one_wall_s_median": statistics.median(p[0]["wall_s"] for p in pairs),
        "two_wall_s_median": statistics.median(p[1]["wall_s"] for p in pairs),
        "max_loss_diff": max(p[2] for p in pairs),
        "commands": {"one": " ".join(pairs[0][0]["cmd"]), "two": " ".join(pairs[0][1]["cmd"])},
    }
    print(f"\n{args.steps} steps of global batch 8 ({summary['tokens_per_run']:,} tokens), {len(pairs)} reps:")
    print(f"  one process      {summary['one_tokens_per_s']['median']:8.0f} tok/s "
          f"(range {min(ones):.0f}–{max(ones):.0f})")
    print(f"  two processes    {summary['two_tokens_per_s']['median']:8.0f} tok/s "
          f"(range {min(twos):.0f}–{max(twos):.0f})")
    print(f"  ratio two/one    {summary['ratio']['median']:.2f} (range {min(ratios):.2f}–{max(ratios):.2f})")
    print(f"  max |loss one - loss two| over every step of every pair: {summary['max_loss_diff']:.2e}")
    print(f"  load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
