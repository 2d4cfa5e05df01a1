"""Near-duplicate detection on the real COIG-CQIA: cqia_nb.filter.dedup vs datasketch MinHash + MinHashLSH.

    .venv/bin/python benchmarks/bench_dedup.py [--data ../shared/coig-cqia] [--reps 3] [--json out.json]

Needs ``datasketch`` (``.venv/bin/pip install datasketch==2.0.0``; a peer for comparison only).
Both tools get identical parameters: the same texts (each record's instruction, input and output,
normalised by ``cqia_nb.filter.dedup.text_keys``), the same character 5-gram shingles
(``cqia_nb.filter.minhash.shingles``), num_perm 128, seed 1, threshold 0.8 -> the same 9 bands x 13 rows
(asserted), candidates verified by estimated Jaccard >= threshold, clusters = connected
components. Timed, median of ``--reps`` runs, everything imported first:

* ``cqia_nb``: ``near_duplicates(frame)`` end to end, from the loaded frame (normalisation,
  shingling, signatures, LSH, verification, clusters and survivors included);
* ``datasketch``: from the already normalised texts (normalisation is not charged to it):
  ``MinHash.update_batch`` per record, ``MinHashLSH`` insertion session, one ``query`` per record,
  ``MinHash.jaccard`` verification, union-find in Python.

Also timed: ours with ``shingle_hash="fast"`` (a cheaper, different shingle hash).

Agreement on duplicate pairs (over all records, i < j, from ``similar_pairs`` on the same texts):
Jaccard of the two pair sets and recall of datasketch's pairs. The default (``shingle_hash="sha1"``,
datasketch's own hash) must give bit-identical signatures and equal pair sets; ``"fast"`` agrees only
statistically, and its disagreement is compared with the noise floor of MinHash itself (the same
method with seed 2 instead of 1). Then the near-duplicate clusters of the real data, with
examples, and the peak memory of a fresh process running ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from cqia_nb.filter.minhash import minhash_signatures, similar_pairs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NUM_PERM, SEED, THRESHOLD, NGRAM = 128, 1, 0.8, 5


def load_frame(root: Path):
    from cqia_nb.data.load import LoadConfig, load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(LoadConfig(source=str(root), cache=False)).frame


def datasketch_run(texts: list[str]) -> tuple[set[tuple[int, int]], np.ndarray, np.ndarray, tuple[int, int]]:
    """The datasketch workflow: pairs, component labels, signatures, (bands, rows)."""
    from datasketch import MinHash, MinHashLSH

    from cqia_nb.filter.minhash import shingles

    minhashes: list[MinHash | None] = []
    for t in texts:
        sh = shingles(t, NGRAM)
        if not sh:                      # empty text: not indexed (as in cqia_nb)
            minhashes.append(None)
            continue
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch([s.encode("utf-8") for s in sh])
        minhashes.append(m)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            if m is not None:
                session.insert(i, m)
    pairs: set[tuple[int, int]] = set()
    for i, m in enumerate(minhashes):
        if m is None:
            continue
        for j in lsh.query(m):
            if j > i and m.jaccard(minhashes[j]) >= THRESHOLD:
                pairs.add((i, j))
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in sorted(pairs):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    labels = np.array([find(i) for i in range(len(texts))])
    empty = np.full(NUM_PERM, 0xFFFFFFFF, dtype=np.uint32)
    sig = np.stack([empty if m is None else m.hashvalues for m in minhashes])
    return pairs, labels, sig, (lsh.b, lsh.r)


def pair_set(df) -> set[tuple[int, int]]:
    return set(zip(df["i"].to_list(), df["j"].to_list()))


def agreement(ours: set, peer: set) -> dict[str, float]:
    union = ours | peer
    return {"jaccard": len(ours & peer) / len(union) if union else 1.0,
            "recall_of_datasketch": len(ours & peer) / len(peer) if peer else 1.0,
            "precision_vs_datasketch": len(ours & peer) / len(ours) if ours else 1.0,
            "ours": len(ours), "datasketch": len(peer), "only_ours": len(ours - peer),
            "only_datasketch": len(peer - ours)}


def same_partition_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of records whose cluster (as a set of records) is the same under both labelings."""
    import polars as pl

    df = pl.DataFrame({"a": a, "b": b})
    df = df.with_columns(pl.len().over("a").alias("na"), pl.len().over("b").alias("nb"),
                         pl.len().over(["a", "b"]).alias("nab"))
    return float(((df["na"] == df["nab"]) & (df["nb"] == df["nab"])).mean())


def peak_rss_mb(code: str) -> float:
    wrapped = code + ("\nprint([l.split()[1] for l in open('/proc/self/status') "
                      "if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "coig-cqia"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    root = Path(args.data)
    if not root.is_dir():
        sys.exit(f"{root}: not found; pass --data PATH to a COIG-CQIA clone")
    try:
        import datasketch
    except ImportError:
        sys.exit("datasketch is not installed: .venv/bin/pip install datasketch==2.0.0")
    import polars as pl

    import cqia_nb.filter.dedup as dedup

    frame = load_frame(root)
    cfg = dedup.MinHashConfig(ngram=NGRAM, num_perm=NUM_PERM, threshold=THRESHOLD, seed=SEED)
    texts = dedup.text_keys(frame).to_list()
    n_chars = sum(map(len, texts))
    print(f"records: {frame.height:,} ({n_chars:,} characters of normalised text), datasketch "
          f"{datasketch.__version__}, polars {pl.__version__}, numpy {np.__version__}")

    fast_cfg = dedup.MinHashConfig(ngram=NGRAM, num_perm=NUM_PERM, threshold=THRESHOLD, seed=SEED,
                                  shingle_hash="fast")
    dedup.near_duplicates(frame.head(200), cfg)          # warm-up (imports, caches)
    dedup.near_duplicates(frame.head(200), fast_cfg)
    ours_t, fast_t, peer_t = [], [], []
    result = peer = None
    for _ in range(args.reps):
        t = time.perf_counter()
        result = dedup.near_duplicates(frame, cfg)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        dedup.near_duplicates(frame, fast_cfg)
        fast_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        peer = datasketch_run(texts)
        peer_t.append(time.perf_counter() - t)
    assert result is not None and peer is not None
    peer_pairs, peer_labels, peer_sig, peer_br = peer
    assert peer_br == cfg.lsh_params, f"LSH parameters differ: datasketch {peer_br}, ours {cfg.lsh_params}"
    med_o, med_f, med_p = (statistics.median(x) for x in (ours_t, fast_t, peer_t))
    print(f"\nnum_perm {NUM_PERM}, {NGRAM}-gram shingles, threshold {THRESHOLD} -> bands x rows "
          f"{peer_br[0]} x {peer_br[1]} (both); {args.reps} repetitions, median seconds:")
    print(f"  cqia_nb near_duplicates, default (sha1)  {med_o:8.3f}   runs {[round(x, 2) for x in ours_t]}")
    print(f"  cqia_nb near_duplicates, fast             {med_f:8.3f}   runs {[round(x, 2) for x in fast_t]}")
    print(f"  datasketch MinHash+MinHashLSH            {med_p:8.3f}   runs {[round(x, 2) for x in peer_t]}")
    print(f"  speed-up: default {med_p / med_o:.1f}x, fast {med_p / med_f:.1f}x (target >= 3x)")

    # agreement on pairs, over all records (identical texts included), same texts for both
    ours_pairs = pair_set(similar_pairs(texts, cfg))
    identical = bool(np.array_equal(minhash_signatures(texts, cfg), peer_sig))
    fast_pairs = pair_set(similar_pairs(texts, fast_cfg))
    seed2_pairs = pair_set(similar_pairs(texts, dedup.MinHashConfig(
        ngram=NGRAM, num_perm=NUM_PERM, threshold=THRESHOLD, seed=SEED + 1)))
    agr, agr_fast, agr_seed = (agreement(x, peer_pairs) for x in (ours_pairs, fast_pairs, seed2_pairs))
    part = same_partition_share(result.clusters["cluster_id"].to_numpy(), peer_labels)
    print(f"\nduplicate pairs (i < j over {frame.height:,} records): datasketch {agr['datasketch']:,}")
    for name, a in (("default (sha1)", agr), ("fast", agr_fast), ("noise floor: sha1, seed 2", agr_seed)):
        print(f"  {name:26} {a['ours']:5,} pairs: pair-set Jaccard {a['jaccard']:.4f}, recall of "
              f"datasketch's {a['recall_of_datasketch']:.4f}, precision {a['precision_vs_datasketch']:.4f} "
              f"(only ours {a['only_ours']}, only datasketch {a['only_datasketch']})")
    print(f"  default signatures bit-identical to datasketch's: {identical}; target agreement >= 0.99")
    print(f"  records whose near_duplicates cluster is the same set of records as with datasketch's "
          f"pairs: {part:.4f}")

    # what the real data holds
    dup = result.duplicates
    sizes = dup.group_by("cluster_id").agg(pl.len().alias("n")).sort(["n", "cluster_id"], descending=[True, False])
    hist = sizes.group_by("n").agg(pl.len().alias("clusters")).sort("n")
    exact = dedup.exact_duplicates(frame)
    print(f"\nreal data: {result.n_clusters} near-duplicate clusters holding {dup.height} records; "
          f"{result.n_removed} would be removed (survivor rule 'first'); exact duplicates after "
          f"normalisation: {exact.n_clusters} clusters, {exact.n_removed} removable")
    print("  cluster sizes: " + ", ".join(f"{r['clusters']}x{r['n']}" for r in hist.iter_rows(named=True)))
    per_config = (dup.join(frame.select("record_id", "config"), on="record_id")
                  .group_by("config").agg(pl.col("cluster_id").n_unique().alias("clusters"),
                                          pl.len().alias("records")).sort("records", descending=True))
    print("  by config: " + ", ".join(f"{r['config']} {r['clusters']} clusters/{r['records']} records"
                                      for r in per_config.iter_rows(named=True)))
    examples = []
    for cid in sizes["cluster_id"].head(3).to_list() + sizes.filter(pl.col("n") == 2)["cluster_id"].head(2).to_list():
        rows = dup.filter(pl.col("cluster_id") == cid)
        surv = rows.filter(pl.col("survivor"))["record_id"][0]
        others = rows.filter(~pl.col("survivor"))
        sims = others["similarity"]
        examples.append({"cluster_id": cid, "size": rows.height, "survivor": surv,
                         "duplicates": others["record_id"].head(3).to_list(),
                         "similarity_min": float(sims.min()), "similarity_max": float(sims.max())})
        print(f"  cluster {cid} ({rows.height} records): survivor {surv}; e.g. "
              f"{', '.join(others['record_id'].head(3).to_list())} "
              f"(similarity to survivor {sims.min():.3f}..{sims.max():.3f})")

    rss_load = peak_rss_mb(f"import warnings; warnings.simplefilter('ignore')\n"
                           f"from cqia_nb.data import load; f = load(source={str(root)!r}, cache=False).frame")
    rss_ours = peak_rss_mb(f"import warnings; warnings.simplefilter('ignore')\n"
                           f"from cqia_nb.data import load; from cqia_nb.filter.dedup import near_duplicates\n"
                           f"f = load(source={str(root)!r}, cache=False).frame; near_duplicates(f)")
    print(f"\npeak RSS of a fresh process: load only {rss_load:.0f} MiB, load + near_duplicates "
          f"{rss_ours:.0f} MiB (+{rss_ours - rss_load:.0f} MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "records": frame.height, "bands_rows": list(peer_br), "reps": args.reps,
            "seconds": {"ours": ours_t, "ours_fast": fast_t, "datasketch": peer_t},
            "median": {"ours": med_o, "ours_fast": med_f, "datasketch": med_p},
            "speedup": med_p / med_o, "speedup_fast": med_p / med_f, "agreement": agr,
            "agreement_fast": agr_fast, "agreement_seed2": agr_seed,
            "signatures_identical": identical, "same_partition_share": part,
            "near_clusters": result.n_clusters, "near_removed": result.n_removed,
            "exact_clusters": exact.n_clusters, "exact_removed": exact.n_removed, "examples": examples,
            "rss_mb": {"load": rss_load, "load_and_near": rss_ours}}, indent=2))


if __name__ == "__main__":
    main()
