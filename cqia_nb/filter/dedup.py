"""Deduplication: exact (normalised text) and near (MinHash-LSH over character n-grams).

Both methods return a :class:`DedupResult` whose ``clusters`` frame has one row per input
record (``CLUSTER_SCHEMA``: record_id, cluster_id, cluster_size, survivor, duplicate_of,
similarity, text_hash), and both are registered as pipeline filters: ``exact_dedup`` and
``near_dedup`` (they see the frame that earlier steps kept, drop every non-survivor, measure its
similarity to the survivor and explain the drop as ``duplicate_of=<record_id>``).

Text of a record
    The ``fields`` (default instruction, input, output; nulls read as "") are each normalised and
    joined with U+001F (a control character that normalisation never produces, so text cannot
    move between fields unnoticed). Normalisation (``normalize=True``, the default), in order:
    Unicode NFKC (full-width letters, digits, punctuation and the ideographic space become their
    ASCII forms), lowercase, then every run of whitespace and/or Unicode punctuation (categories
    P*: ``，。、！？“”「」…`` and ASCII ``.,!?"'()``...) is collapsed to nothing: Chinese does not
    separate words by spaces, so a stray space, a full-width instead of a half-width comma or a
    dropped full stop must not make two texts different (``"你好， 世界！"`` and ``"你好世界"`` are
    the same text; in Latin script ``"a b"`` and ``"ab"`` are too, a negligible cost). Symbols
    (``+ = ~ ¥``, emoji) are content and stay. A record whose normalised
    text is empty is never a duplicate (it is a singleton: length filters deal with it).

Exact duplicates
    Records with the same normalised text (grouped by the text itself with polars, so there are
    no hash collisions); ``text_hash`` is a stable BLAKE2b-64 of it, for display and joins.

Near duplicates (:class:`MinHashConfig`)
    Shingles are the character n-grams of the text (``ngram``, default 5; Chinese has no word
    spaces); a non-empty text shorter than ``ngram`` is one shingle, itself. Each shingle gets a
    32-bit hash: ``shingle_hash="sha1"`` (default) is datasketch's ``sha1_hash32`` (first four
    bytes of the SHA-1 of the UTF-8 shingle, little-endian), computed for all shingles at once by
    a SHA-1 written in numpy; ``"fast"`` (the polynomial window hash of ``cqia_nb.core.hashing``
    over the code points + the MurmurHash3 64-bit finaliser, high 32 bits) is faster but, being a different
    hash, agrees with datasketch only statistically: pairs near the threshold come and go with
    sampling noise, as they do between two seeds of the same method.
    The signature is datasketch's default ``affine32`` scheme, so the default reproduces
    ``datasketch.MinHash(num_perm, seed)`` bit for bit: h' = fmix32(h), then for each of
    ``num_perm`` permutations ``a_k*h' + b_k mod 2**32`` (a_k odd; a, b drawn from
    ``numpy.random.RandomState(seed)`` the way datasketch does) and the minimum per record
    (one (num_perm x shingles) matrix operation per block of records, ``np.minimum.reduceat``).
    LSH: the first ``bands * rows`` signature columns are cut into ``bands`` bands of ``rows``;
    records whose band is identical in any band are candidates. ``bands``/``rows`` default to
    datasketch's optimum for ``threshold`` (minimising the weighted false-positive and
    false-negative areas; 0.8 / 128 -> 9 bands x 13 rows). Candidates are verified:
    ``verify="signature"`` keeps pairs whose estimated Jaccard (share of the ``num_perm``
    signature values that agree) is >= threshold; ``verify="exact"`` uses the exact Jaccard of
    the two shingle sets (64-bit shingle fingerprints) instead. Clusters are the connected
    components of the verified pairs (union-find), so a member can be less similar to the
    survivor than the threshold through a chain; its ``similarity`` says so. Identical texts are
    signed once. Everything is integer arithmetic on fixed seeds: identical results in every
    process (no use of Python's salted ``hash()``).

Survivor (``keep``; the filters call it ``survivor`` because ``keep`` is the filter's method)
    ``"first"``: the earliest record in dataset order; ``"longest_output"``: most characters in
    ``output``; ``"human_verified_then_longest"``: human-verified records first, then the longest
    output. Ties always go to dataset order: (source_file, line) when the frame has them, else
    record_id, so the result does not depend on the frame's row order.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import polars as pl

from cqia_nb.core.text import normalize_expr
from cqia_nb.filter.framework import Filter, register
from cqia_nb.core.hashing import digests128
from cqia_nb.filter.minhash import (
    FIELD_SEP,
    MinHashConfig,
    _agreement,
    _ShingleSets,
    _signatures,
    band_hashes,
    candidate_pairs,
    connected_components,
    similar_texts,
)

#: dedup compares text with whitespace and punctuation removed (``cqia_nb.core.text.normalize_expr``)
DEDUP_SEPARATOR = ""
DEFAULT_FIELDS: tuple[str, ...] = ("instruction", "input", "output")
KEEP_RULES: tuple[str, ...] = ("first", "longest_output", "human_verified_then_longest")
#: One row per input record, in the input's row order.
CLUSTER_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "cluster_id": pl.Int64,      # 0.. numbered by each cluster's earliest record (dataset order)
    "cluster_size": pl.Int64,    # 1 for a record with no duplicate
    "survivor": pl.Boolean,      # the one record of its cluster that is kept
    "duplicate_of": pl.String,   # record_id of the survivor (null for survivors)
    "similarity": pl.Float64,    # to the survivor (1.0 exact; null for survivors)
    "text_hash": pl.String,      # BLAKE2b-64 (hex) of the normalised text
}
PAIR_SCHEMA: dict[str, pl.DataType] = {"record_a": pl.String, "record_b": pl.String,
                                       "similarity": pl.Float64}






def _check_fields(frame: pl.DataFrame, fields: Sequence[str]) -> tuple[str, ...]:
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    if not fields:
        raise ValueError("fields: name at least one text column (e.g. instruction, input, output)")
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise ValueError(f"fields {missing} are not columns of the frame; it has {frame.columns}")
    bad = [f for f in fields if frame.schema[f] not in (pl.String, pl.Null)]
    if bad:
        raise ValueError(f"fields {bad} are not text columns ({[str(frame.schema[f]) for f in bad]})")
    return fields


def text_keys(frame: pl.DataFrame, fields: Sequence[str] = DEFAULT_FIELDS,
              normalize: bool = True) -> pl.Series:
    """The text each record is compared by: its fields, normalised, joined with U+001F."""
    fields = _check_fields(frame, fields)
    exprs = [normalize_expr(pl.col(f), DEDUP_SEPARATOR) if normalize else pl.col(f).cast(pl.String).fill_null("")
             for f in fields]
    return frame.select(pl.concat_str(exprs, separator=FIELD_SEP).alias("text")).to_series()


def _text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


@dataclass
class DedupResult:
    """Clusters (one row per input record, ``CLUSTER_SCHEMA``), the verified pairs (edges of
    the similarity graph, by record_id; for copies of one text, one edge from each copy to its
    first copy), and the parameters and counts of the run."""

    clusters: pl.DataFrame
    pairs: pl.DataFrame
    method: Literal["exact", "near"]
    keep: str
    fields: tuple[str, ...]
    config: MinHashConfig | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def duplicates(self) -> pl.DataFrame:
        """Only records in clusters of two or more, survivors first within each cluster."""
        return (self.clusters.filter(pl.col("cluster_size") > 1)
                .sort(["cluster_id", "survivor"], descending=[False, True], maintain_order=True))

    @property
    def n_clusters(self) -> int:
        """Clusters with at least one duplicate."""
        return self.clusters.filter(pl.col("cluster_size") > 1)["cluster_id"].n_unique()

    @property
    def n_removed(self) -> int:
        return int((~self.clusters["survivor"]).sum())

    def summary(self) -> str:
        params = f", {self.config.resolved()}" if self.config is not None else ""
        return (f"{self.method} dedup of {self.clusters.height:,} records on {'+'.join(self.fields)}: "
                f"{self.n_clusters:,} duplicate clusters, {self.n_removed:,} records removed "
                f"(survivor rule {self.keep!r}{params}; {self.stats.get('seconds', 0):.2f} s)")

    def examples(self, frame: pl.DataFrame, n: int = 5, width: int = 60,
                 columns: Sequence[str] = ("instruction", "output")) -> pl.DataFrame:
        """The ``n`` largest duplicate clusters with a text preview, for notebooks."""
        top = (self.duplicates.group_by("cluster_id").agg(pl.len().alias("k"))
               .sort(["k", "cluster_id"], descending=[True, False]).head(n)["cluster_id"])
        dup = self.duplicates.filter(pl.col("cluster_id").is_in(top.implode()))
        cols = [c for c in columns if c in frame.columns]
        preview = frame.select("record_id", *[
            pl.col(c).cast(pl.String).str.replace_all(r"\s+", " ").str.slice(0, width).alias(c) for c in cols])
        return dup.join(preview, on="record_id", how="left").sort(
            ["cluster_size", "cluster_id", "survivor"], descending=[True, False, True], maintain_order=True)


def _check_keep(keep: str) -> None:
    if keep not in KEEP_RULES:
        raise ValueError(f"survivor rule must be one of {KEEP_RULES}, got {keep!r}")


def _base(frame: pl.DataFrame, fields: Sequence[str], normalize: bool) -> tuple[pl.DataFrame, list[str]]:
    """Per record: _row, record_id, _order (dataset order), _out_len, _hv, _tid (text id; -1 for
    an empty text), text_hash; and the distinct non-empty texts in order of first appearance."""
    fields = _check_fields(frame, fields)
    n = frame.height
    cols: list[pl.Expr | pl.Series] = [pl.int_range(pl.len(), dtype=pl.Int64).alias("_row")]
    if "record_id" in frame.columns:
        cols.append(pl.col("record_id").cast(pl.String))
    else:
        cols.append(pl.format("row:{}", pl.int_range(pl.len())).alias("record_id"))
    cols.append(pl.col("output").cast(pl.String).str.len_chars().fill_null(0).cast(pl.Int64).alias("_out_len")
                if "output" in frame.columns else pl.lit(0, dtype=pl.Int64).alias("_out_len"))
    cols.append(pl.col("human_verified").cast(pl.Boolean).fill_null(False).alias("_hv")
                if "human_verified" in frame.columns else pl.lit(False).alias("_hv"))
    order_by = ["source_file", "line"] if {"source_file", "line"} <= set(frame.columns) else []
    base = frame.select(*cols, *[pl.col(c) for c in order_by], text_keys(frame, fields, normalize))
    if base["record_id"].null_count() or base["record_id"].n_unique() != n:
        raise ValueError("record_id must be unique and non-null to deduplicate "
                         "(the loader's frame is; a frame without record_id gets row numbers)")
    base = (base.sort([*order_by, "record_id"], nulls_last=True, maintain_order=True)
            .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_order"))
            .drop(order_by))
    empty = pl.col("text").str.len_chars() == len(fields) - 1  # only the separators left
    base = base.with_columns(empty.alias("_empty"))
    firsts = (base.filter(~pl.col("_empty")).unique("text", keep="first", maintain_order=True)
              .select("text", pl.int_range(pl.len(), dtype=pl.Int64).alias("_tid")))
    base = base.join(firsts, on="text", how="left").with_columns(pl.col("_tid").fill_null(-1))
    texts = firsts["text"].to_list()
    hashes = pl.Series("text_hash", [_text_hash(t) for t in texts], dtype=pl.String)
    th = firsts.select("_tid").with_columns(hashes)
    base = (base.join(th, on="_tid", how="left")
            .with_columns(pl.when(pl.col("_empty")).then(pl.lit(_text_hash(FIELD_SEP * (len(fields) - 1))))
                          .otherwise(pl.col("text_hash")).alias("text_hash"))
            .drop("text").sort("_row"))
    return base, texts


def _assemble(base: pl.DataFrame, comp: np.ndarray, keep: str, simfn: Any) -> pl.DataFrame:
    """Clusters frame from component labels (one per row of ``base``, in _row order)."""
    _check_keep(keep)
    b = base.with_columns(pl.Series("_comp", comp, dtype=pl.Int64))
    keys, desc = {"first": (["_order"], [False]),
                  "longest_output": (["_out_len", "_order"], [True, False]),
                  "human_verified_then_longest": (["_hv", "_out_len", "_order"], [True, True, False])}[keep]
    surv = (b.sort(["_comp", *keys], descending=[False, *desc])
            .group_by("_comp", maintain_order=True)
            .agg(pl.col("_row").first().alias("_srow"), pl.col("record_id").first().alias("_sid"),
                 pl.col("_tid").first().alias("_stid"), pl.col("_order").min().alias("_first"),
                 pl.len().cast(pl.Int64).alias("cluster_size"))
            .sort("_first").with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("cluster_id")))
    b = b.join(surv, on="_comp", how="left").sort("_row")
    is_surv = (b["_row"] == b["_srow"]).to_numpy()
    tid, stid = b["_tid"].to_numpy(), b["_stid"].to_numpy()
    sim = np.full(b.height, np.nan)
    dup = np.flatnonzero(~is_surv)
    same = tid[dup] == stid[dup]
    sim[dup[same]] = 1.0
    other = dup[~same]
    if other.size:
        sim[other] = simfn(tid[other], stid[other])
    return b.select(
        "record_id", "cluster_id", "cluster_size",
        pl.Series("survivor", is_surv, dtype=pl.Boolean),
        pl.when(pl.Series(is_surv)).then(None).otherwise(pl.col("_sid")).alias("duplicate_of"),
        pl.Series("similarity", sim, dtype=pl.Float64).fill_nan(None),
        "text_hash",
    ).cast(CLUSTER_SCHEMA)  # type: ignore[arg-type]


def _copy_pairs(base: pl.DataFrame) -> pl.DataFrame:
    """Edges from each later copy of a text to its first copy (similarity 1.0)."""
    nonempty = base.filter(pl.col("_tid") >= 0)
    first = (nonempty.sort("_order").group_by("_tid", maintain_order=True)
             .agg(pl.col("record_id").first().alias("record_a")))
    return (nonempty.join(first, on="_tid").filter(pl.col("record_id") != pl.col("record_a"))
            .sort("_order").select("record_a", pl.col("record_id").alias("record_b"),
                                   pl.lit(1.0).alias("similarity")).cast(PAIR_SCHEMA))  # type: ignore[arg-type]


def _components_from_texts(base: pl.DataFrame, n_texts: int, ti: np.ndarray, tj: np.ndarray) -> np.ndarray:
    """Record components: records share one when their texts are connected; empties alone."""
    tcomp = connected_components(n_texts, ti, tj)
    tid = base["_tid"].to_numpy()
    rows = base["_row"].to_numpy()
    # offset text labels past the row numbers so an empty record's own label never collides
    lab = rows.astype(np.int64).copy()
    has = tid >= 0
    lab[has] = tcomp[tid[has]] + base.height
    return lab


def exact_duplicates(frame: pl.DataFrame, fields: Sequence[str] = DEFAULT_FIELDS, keep: str = "first",
                     normalize: bool = True) -> DedupResult:
    """Clusters of records with the same normalised text (see the module docstring)."""
    _check_keep(keep)
    t0 = time.perf_counter()
    base, texts = _base(frame, fields, normalize)
    none = np.empty(0, np.int64)
    comp = _components_from_texts(base, len(texts), none, none)
    clusters = _assemble(base, comp, keep, lambda i, j: np.ones(len(i)))
    stats = {"records": frame.height, "distinct_texts": len(texts),
             "empty_texts": int((base["_tid"] < 0).sum()), "seconds": time.perf_counter() - t0}
    return DedupResult(clusters, _copy_pairs(base), "exact", keep, _check_fields(frame, fields), None, stats)


def answer_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the character bigram sets of two (normalised) answers (1.0 when equal;
    a one-character answer is its own bigram)."""
    if a == b:
        return 1.0
    if min(len(a), len(b)) < 2:
        return 0.0
    x = {a[i:i + 2] for i in range(len(a) - 1)}
    y = {b[i:i + 2] for i in range(len(b) - 1)}
    return len(x & y) / len(x | y)


#: Pairs with an answer shorter than this (normalised characters: labels) also need whole-text
#: similarity >= ``short_answer_threshold``: one template filled with different inputs shares them.
SHORT_ANSWER = 20


def _answers_agree(texts: list[str], pairs: np.ndarray, sim: np.ndarray, fields: tuple[str, ...],
                   answer_field: str, min_similarity: float, short_threshold: float) -> np.ndarray:
    """Mask over ``pairs`` (text ids): the two texts' ``answer_field`` parts are similar enough;
    pairs with a short answer also need whole-text similarity >= ``short_threshold`` (an equal
    label says little: one classification template with different inputs shares it)."""
    k = fields.index(answer_field)
    part = [t.split(FIELD_SEP)[k] for t in texts]
    ok = np.zeros(len(pairs), dtype=bool)
    for n, (i, j) in enumerate(pairs.tolist()):
        short = min(len(part[i]), len(part[j])) < SHORT_ANSWER
        ok[n] = (answer_similarity(part[i], part[j]) >= min_similarity
                 and (not short or sim[n] >= short_threshold))
    return ok


def near_duplicates(frame: pl.DataFrame, config: MinHashConfig | None = None,
                    fields: Sequence[str] = DEFAULT_FIELDS, keep: str = "first",
                    normalize: bool = True, answer_min_similarity: float | None = None,
                    answer_field: str = "output", short_answer_threshold: float = 0.8) -> DedupResult:
    """Clusters of near-duplicate records by MinHash-LSH (see the module docstring).

    ``answer_min_similarity``: a pair found on the whole text also needs similar answers
    (``answer_similarity`` of the ``answer_field`` parts >= this), so records that share a long
    prompt — sub-questions on one reading passage, one classification template filled with
    different texts — but answer differently are not duplicates. Pairs whose answer is short
    (under ``SHORT_ANSWER`` characters: labels) also need whole-text similarity >=
    ``short_answer_threshold``. None: whole text only.
    """
    config = config or MinHashConfig()
    _check_keep(keep)
    t0 = time.perf_counter()
    base, texts = _base(frame, fields, normalize)
    pairs, sim, stats, simfn = similar_texts(texts, config)
    if answer_min_similarity is not None and answer_field in _check_fields(frame, fields) and len(pairs):
        ok = _answers_agree(texts, pairs, sim, _check_fields(frame, fields), answer_field,
                            answer_min_similarity, short_answer_threshold)
        stats["pairs_without_similar_answers"] = int((~ok).sum())
        pairs, sim = pairs[ok], sim[ok]
    comp = _components_from_texts(base, len(texts), pairs[:, 0], pairs[:, 1])
    clusters = _assemble(base, comp, keep, simfn)
    rep = (base.filter(pl.col("_tid") >= 0).sort("_order").unique("_tid", keep="first", maintain_order=True)
           .sort("_tid")["record_id"])
    text_pairs = pl.DataFrame({"record_a": rep.gather(pairs[:, 0]), "record_b": rep.gather(pairs[:, 1]),
                               "similarity": sim}, schema=PAIR_SCHEMA)
    all_pairs = pl.concat([_copy_pairs(base), text_pairs])
    stats = {"records": frame.height, "distinct_texts": len(texts),
             "empty_texts": int((base["_tid"] < 0).sum()), **stats, "seconds": time.perf_counter() - t0}
    return DedupResult(clusters, all_pairs, "near", keep, _check_fields(frame, fields), config, stats)


# ----------------------------------------------------------------------------- stream protocol
# What an engine that never holds every record keeps per record (``stream_keys``): record_id, the
# dataset-order keys (source_file, line), output length, human_verified, a 16-byte digest of the
# normalised text and, for near dedup, one 8-byte hash per LSH band: 60-100 bytes a record with the
# record_id, not the text (the in-memory path groups the texts themselves). ``stream_decide``
# rebuilds what ``_base`` builds from those keys and decides with the same functions.

def _stream_keys(batch: pl.DataFrame, fields: tuple[str, ...], normalize: bool) -> tuple[pl.DataFrame, pl.Series]:
    """The keys every dedup shares for one batch, and the batch's normalised texts."""
    text = text_keys(batch, fields, normalize)
    empty = (text.str.len_chars() == len(fields) - 1).to_numpy()
    digest = pl.Series("_h", digests128(text.to_list()), dtype=pl.Binary)
    if "record_id" not in batch.columns:
        raise ValueError("record_id is needed to deduplicate in batches (the loader's frame has it)")
    order_by = [pl.col(c) for c in ("source_file", "line") if {"source_file", "line"} <= set(batch.columns)]
    keys = batch.select(
        pl.col("record_id").cast(pl.String), *order_by,
        (pl.col("output").cast(pl.String).str.len_chars().fill_null(0).cast(pl.Int64)
         if "output" in batch.columns else pl.lit(0, dtype=pl.Int64)).alias("_out_len"),
        (pl.col("human_verified").cast(pl.Boolean).fill_null(False)
         if "human_verified" in batch.columns else pl.lit(False)).alias("_hv"),
    ).with_columns(digest.zip_with(pl.Series(~empty), pl.Series("_h", [None] * batch.height, dtype=pl.Binary)))
    return keys, text


def _stream_base(keys: pl.DataFrame | pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``_base`` from the keys: _row, record_id, _order, _out_len, _hv, _tid (by the digest), text_hash
    (null: the text is not kept); plus _first, the record_id of each text's first record."""
    cols = ["record_id", "_out_len", "_hv", "_h"]
    lf = keys.lazy()
    names = lf.collect_schema().names()
    order_by = ["source_file", "line"] if {"source_file", "line"} <= set(names) else []
    base = lf.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"), *cols, *order_by).collect()
    if base["record_id"].null_count() or base["record_id"].n_unique() != base.height:
        raise ValueError("record_id must be unique and non-null to deduplicate "
                         "(the loader's frame is; a frame without record_id gets row numbers)")
    base = (base.sort([*order_by, "record_id"], nulls_last=True, maintain_order=True)
            .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_order")).drop(order_by))
    firsts = (base.filter(pl.col("_h").is_not_null()).unique("_h", keep="first", maintain_order=True)
              .select("_h", pl.int_range(pl.len(), dtype=pl.Int64).alias("_tid"), pl.col("_row").alias("_trow"),
                      pl.col("record_id").alias("_first")))
    return (base.join(firsts.drop("_first"), on="_h", how="left")
            .with_columns(pl.col("_tid").fill_null(-1), pl.lit(None, dtype=pl.String).alias("text_hash"))
            .drop("_h").sort("_row")), firsts


def _detail() -> pl.Expr:
    """A dedup drop's detail: ``duplicate_of=<record_id of the survivor>`` (null for survivors)."""
    return (pl.when(pl.col("duplicate_of").is_not_null())
            .then(pl.concat_str([pl.lit("duplicate_of="), pl.col("duplicate_of")])).alias("detail"))


def _decided(clusters: pl.DataFrame) -> pl.DataFrame:
    """record_id, value (similarity to the survivor), detail (duplicate_of=...), in record order."""
    return clusters.select("record_id", pl.col("similarity").alias("value"), _detail())


def _candidate_texts(keys: pl.DataFrame | pl.LazyFrame, trow: np.ndarray, bands: int) -> np.ndarray:
    """Text pairs (i < j, by text id) identical in some band: one band column read at a time."""
    lf = keys.lazy()
    codes = []
    for k in range(bands):
        col = lf.select(pl.col(f"_b{k}")).collect().to_series().to_numpy()[trow]
        codes.append(candidate_pairs(col[:, None], 1, 1))
    pairs = np.concatenate(codes) if codes else np.empty((0, 2), np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def band_rows(keys: pl.DataFrame, bands: int) -> pl.DataFrame:
    """Near dedup's keys as bucket rows: (``_band``, ``_bh`` its hash, ``_h`` the text digest), one per
    band of each distinct text (for a cluster engine's group-by on the bucket; ``bucket_pairs``)."""
    k = keys.filter(pl.col("_h").is_not_null()).unique("_h", keep="first", maintain_order=True)
    return pl.concat([k.select(pl.lit(b, dtype=pl.Int32).alias("_band"), pl.col(f"_b{b}").alias("_bh"), "_h")
                      for b in range(bands)], how="vertical")


def bucket_pairs(buckets: pl.DataFrame) -> pl.DataFrame:
    """Every pair of distinct texts (``_ha`` < ``_hb``, digests) that share an LSH bucket: the
    candidates ``candidate_pairs`` finds, from ``band_rows`` of any number of whole buckets
    (``_band``, ``_bh``; a cluster engine hands it one partition of the buckets at a time)."""
    g = buckets.select("_band", "_bh", "_h").unique()
    g = g.filter(pl.len().over("_band", "_bh") > 1)
    if g.height == 0:
        return pl.DataFrame(schema={"_ha": pl.Binary, "_hb": pl.Binary})
    pairs = (g.join(g, on=["_band", "_bh"], suffix="_b").filter(pl.col("_h") < pl.col("_h_b"))
             .select(pl.col("_h").alias("_ha"), pl.col("_h_b").alias("_hb")))
    return pairs.unique().sort("_ha", "_hb")


def _reread_texts(reread: Any, record_ids: pl.Series, fields: tuple[str, ...], normalize: bool) -> list[str]:
    """The normalised texts of ``record_ids`` (in that order), read again from the records."""
    if reread is None:
        raise ValueError("near dedup in batches needs the records again to verify candidates: pass reread")
    want = record_ids.cast(pl.String).implode()
    found: dict[str, str] = {}
    for batch in reread():
        sub = batch.filter(pl.col("record_id").cast(pl.String).is_in(want))
        if sub.height:
            found.update(zip(sub["record_id"].cast(pl.String).to_list(), text_keys(sub, fields, normalize).to_list()))
    missing = [r for r in record_ids.to_list() if r not in found]
    if missing:
        raise RuntimeError(f"near dedup: {len(missing)} records were not found again (e.g. {missing[:3]}); "
                           "the records must not change between the passes")
    return [found[r] for r in record_ids.to_list()]


class _DedupFilter(Filter):
    """Shared behaviour: measure = similarity to the survivor (null for survivors and records
    without duplicates), keep = no similarity, details = ``duplicate_of=<record_id>``."""

    def _run(self, frame: pl.DataFrame) -> DedupResult:
        raise NotImplementedError

    def result(self, frame: pl.DataFrame) -> DedupResult:
        """The DedupResult of this filter on ``frame`` (computed once per frame object)."""
        last = getattr(self, "_last", None)
        if last is not None and last[0] is frame:
            return last[1]
        res = self._run(frame)
        self._last = (frame, res)
        return res

    def required_columns(self) -> tuple[str, ...]:
        return tuple(self.fields)  # type: ignore[attr-defined]

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return self.result(frame).clusters["similarity"].alias("value")

    def keep(self, values: pl.Series) -> pl.Series:
        return values.is_null()

    def stream_keys(self, batch: pl.DataFrame) -> pl.DataFrame:
        return _stream_keys(batch, self.fields, self.normalize)[0]  # type: ignore[attr-defined]

    def stream_decide(self, keys: pl.DataFrame | pl.LazyFrame, reread: Any = None) -> pl.DataFrame:
        base, firsts = _stream_base(keys)
        none = np.empty(0, np.int64)
        comp = _components_from_texts(base, firsts.height, none, none)
        return _decided(_assemble(base, comp, self.survivor, lambda i, j: np.ones(len(i))))  # type: ignore[attr-defined]

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        return self.result(frame).clusters.select(_detail()).to_series()


def _fields_tuple(v: Any) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


@register
@dataclass
class ExactDedup(_DedupFilter):
    """Drop all but one record of each group with the same normalised text.

    fields: text columns compared (joined). survivor: "first" | "longest_output" |
    "human_verified_then_longest" (ties: dataset order). normalize: NFKC, lowercase,
    whitespace/punctuation runs to one space (False: compare the raw text).
    """

    name: ClassVar[str] = "exact_dedup"
    description: ClassVar[str] = "exact duplicates after normalisation (NFKC, lowercase, spaces/punctuation)"

    fields: tuple[str, ...] = DEFAULT_FIELDS
    survivor: str = "first"
    normalize: bool = True

    def __post_init__(self) -> None:
        self.fields = _fields_tuple(self.fields)
        _check_keep(self.survivor)

    def _run(self, frame: pl.DataFrame) -> DedupResult:
        return exact_duplicates(frame, self.fields, self.survivor, self.normalize)


@register
@dataclass
class NearDedup(_DedupFilter, MinHashConfig):
    """Drop all but one record of each cluster of near duplicates (MinHash-LSH, char n-grams).

    Parameters: the :class:`MinHashConfig` fields (ngram, num_perm, threshold, bands, rows, seed,
    weights, verify, shingle_hash; inherited, so defined once), plus fields, survivor and
    normalize as for ``exact_dedup``, and ``answer_min_similarity`` (``near_duplicates``): a pair
    also needs similar outputs (character-bigram Jaccard; with short answers the whole texts
    must also be at least ``short_answer_threshold`` similar).
    """

    name: ClassVar[str] = "near_dedup"
    description: ClassVar[str] = "near duplicates: MinHash-LSH over character n-grams, Jaccard >= threshold"

    fields: tuple[str, ...] = DEFAULT_FIELDS
    survivor: str = "first"
    normalize: bool = True
    answer_min_similarity: float | None = None
    short_answer_threshold: float = 0.8

    def __post_init__(self) -> None:
        MinHashConfig.__post_init__(self)  # validates the MinHash parameters
        if self.answer_min_similarity is not None and not 0 <= self.answer_min_similarity <= 1:
            raise ValueError(f"answer_min_similarity must be in [0, 1], got {self.answer_min_similarity}")
        self.fields = _fields_tuple(self.fields)
        _check_keep(self.survivor)

    @property
    def config(self) -> MinHashConfig:
        return MinHashConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MinHashConfig)})

    def stream_keys(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The shared keys plus ``_b0``.. ``_b{bands-1}``: the LSH band hashes of the text's signature."""
        keys, text = _stream_keys(batch, self.fields, self.normalize)
        bands, rows = self.lsh_params
        nonempty = keys["_h"].is_not_null().to_numpy()
        uniq, inv = np.unique(np.asarray(text.to_list(), dtype=object)[nonempty], return_inverse=True)
        bh = band_hashes(_signatures(uniq.tolist(), self.config)[0], bands, rows)
        full = np.zeros((batch.height, bands), dtype=np.uint64)
        full[nonempty] = bh[inv.ravel()]
        return keys.with_columns([pl.Series(f"_b{k}", full[:, k], dtype=pl.UInt64) for k in range(bands)])

    def stream_decide(self, keys: pl.DataFrame | pl.LazyFrame, reread: Any = None,
                      candidates: pl.DataFrame | None = None) -> pl.DataFrame:
        """Candidates from the band hashes, then (reading only the candidates' texts again) the
        verification, answer check, components and survivors of ``near_duplicates``.
        ``candidates`` (``_ha``, ``_hb`` digests: ``bucket_pairs`` of every bucket, as a cluster
        engine's group-by finds them) replaces the bucketing here; the keys then need no band columns."""
        base, firsts = _stream_base(keys)
        if candidates is None:
            pairs = _candidate_texts(keys, firsts["_trow"].to_numpy(), self.lsh_params[0])
        else:
            tid = firsts.select("_h", "_tid")
            ab = (candidates.join(tid.rename({"_h": "_ha", "_tid": "a"}), on="_ha")
                  .join(tid.rename({"_h": "_hb", "_tid": "b"}), on="_hb"))
            lo, hi = np.minimum(ab["a"].to_numpy(), ab["b"].to_numpy()), np.maximum(ab["a"].to_numpy(), ab["b"].to_numpy())
            pairs = np.unique(np.stack([lo, hi], axis=1).astype(np.int64), axis=0).reshape(-1, 2)
        cand = np.unique(pairs)
        texts = _reread_texts(reread, firsts["_first"].gather(cand), self.fields, self.normalize) if cand.size else []
        li, lj = np.searchsorted(cand, pairs[:, 0]), np.searchsorted(cand, pairs[:, 1])
        config = self.config
        if config.verify == "exact":
            local_sim: Any = _ShingleSets(texts, config.ngram).jaccard
        else:
            local_sim = functools.partial(_agreement, _signatures(texts, config)[0] if texts else
                                          np.empty((0, config.num_perm), np.uint32))
        sim = local_sim(li, lj)
        ok = sim >= config.threshold
        pairs, li, lj, sim = pairs[ok], li[ok], lj[ok], sim[ok]
        if self.answer_min_similarity is not None and "output" in self.fields and len(pairs):
            agree = _answers_agree(texts, np.stack([li, lj], axis=1), sim, self.fields, "output",
                                   self.answer_min_similarity, self.short_answer_threshold)
            pairs = pairs[agree]
        comp = _components_from_texts(base, firsts.height, pairs[:, 0], pairs[:, 1])
        simfn = lambda i, j: local_sim(np.searchsorted(cand, i), np.searchsorted(cand, j))  # noqa: E731
        return _decided(_assemble(base, comp, self.survivor, simfn))

    def _run(self, frame: pl.DataFrame) -> DedupResult:
        return near_duplicates(frame, self.config, self.fields, self.survivor, self.normalize,
                               self.answer_min_similarity, short_answer_threshold=self.short_answer_threshold)
