"""Model-based scores on a sample of CQIA with the cpu-tiny model: build, train, score, rerun.

    .venv/bin/python benchmarks/bench_quality.py [--source bundled|../shared/coig-cqia] [--n 300]
        [--steps 40] [--batch-size 16] [--max-length 256]

Times (fresh cache folder): tiny tokenizer + model build, the LM steps, perplexity and IFD of
every sampled record at batch 1 vs --batch-size, and the cached rerun of both filters (which must
run zero forward passes). Prints the score distributions per config.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="bundled")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ["CQIA_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-quality-")

    import polars as pl

    import cqia_nb.filter.scores as quality
    import cqia_nb.models as models
    from cqia_nb.data.load import LoadConfig, load
    from cqia_nb.filter.framework import make_filter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(LoadConfig(source=args.source)).frame
    if frame.height > args.n:
        frame = frame.sample(args.n, seed=args.seed)
    print(f"{frame.height} records from {args.source}")

    t = time.perf_counter()
    base = models.build_tiny_model(frame)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    folder = models.train_tiny_lm(base, models.tiny_training_texts(frame), steps=args.steps)
    t_train = time.perf_counter() - t
    model, tok = models.load_causal_lm(folder)
    print(f"build {t_build:.1f} s, {args.steps} LM steps {t_train:.1f} s -> {folder.name}")

    for bs in (1, args.batch_size):
        t = time.perf_counter()
        ppl = quality.perplexity(frame, model, tok, max_length=args.max_length, batch_size=bs, progress=False)
        t_ppl = time.perf_counter() - t
        t = time.perf_counter()
        ifd = quality.ifd(frame, model, tok, max_length=args.max_length, batch_size=bs, progress=False)
        t_ifd = time.perf_counter() - t
        print(f"batch {bs:>3}: perplexity {t_ppl:.2f} s ({frame.height / t_ppl:.0f} rec/s), "
              f"ifd {t_ifd:.2f} s ({frame.height / t_ifd:.0f} rec/s)")

    scored = frame.select("record_id", "config").with_columns(ppl.alias("ppl"), ifd.alias("ifd"))
    print(scored.group_by("config").agg(
        pl.len().alias("n"), pl.col("ppl").median().round(1).alias("ppl_median"),
        pl.col("ifd").median().round(3).alias("ifd_median"),
        (pl.col("ifd") >= 1).mean().round(3).alias("ifd_ge_1_share")).sort("config"))

    for name, params in (("perplexity", {"model": str(folder), "max_length": args.max_length}),
                         ("ifd", {"model": str(folder), "max_length": args.max_length})):
        flt = make_filter(name, **params)
        t = time.perf_counter()
        flt.measure(frame)
        cold = time.perf_counter() - t
        b = quality.STATS["forward_batches"]
        t = time.perf_counter()
        flt.measure(frame)
        warm = time.perf_counter() - t
        assert quality.STATS["forward_batches"] == b, "cached rerun ran the model"
        print(f"filter {name}: first {cold:.2f} s, cached rerun {warm * 1000:.0f} ms (0 forward passes)")


if __name__ == "__main__":
    main()
