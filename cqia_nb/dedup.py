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
    a SHA-1 written in numpy; ``"fnv"`` (FNV-1a over the UTF-32 code points + the MurmurHash3
    64-bit finaliser, high 32 bits) makes the whole run about 3x faster but, being a different
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

import functools
import hashlib
import struct
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import polars as pl

from cqia_nb.filters import Filter, register

__all__ = [
    "CLUSTER_SCHEMA", "DEFAULT_FIELDS", "KEEP_RULES", "DedupResult", "ExactDedup", "MinHashConfig",
    "NearDedup", "candidate_pairs", "connected_components", "exact_duplicates",
    "minhash_signatures", "near_duplicates", "normalize_expr", "normalize_text",
    "optimal_bands_rows", "shingles", "similar_pairs", "text_keys",
]

DEFAULT_FIELDS: tuple[str, ...] = ("instruction", "input", "output")
KEEP_RULES: tuple[str, ...] = ("first", "longest_output", "human_verified_then_longest")
FIELD_SEP = "\x1f"
_PUNCT_OR_SPACE = r"[\s\p{P}]+"

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

_U32_MAX = np.uint32(0xFFFFFFFF)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_BLOCK_SHINGLES = 8192        # columns of one (num_perm x shingles) block: fits in cache
_BATCH_CHARS = 1 << 20        # characters hashed at once (bounds memory: ~40 bytes a char)


# ----------------------------------------------------------------------------- text

def normalize_expr(expr: pl.Expr) -> pl.Expr:
    """The normalisation of the module docstring as a polars expression (nulls become "")."""
    return (expr.cast(pl.String).fill_null("").str.normalize("NFKC").str.to_lowercase()
            .str.replace_all(_PUNCT_OR_SPACE, ""))


def normalize_text(values: Sequence[str | None] | pl.Series) -> list[str]:
    """Normalise strings (convenience for notebooks and tests)."""
    s = values if isinstance(values, pl.Series) else pl.Series("t", list(values), dtype=pl.String)
    return s.to_frame("t").select(normalize_expr(pl.col("t"))).to_series().to_list()


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
    exprs = [normalize_expr(pl.col(f)) if normalize else pl.col(f).cast(pl.String).fill_null("")
             for f in fields]
    return frame.select(pl.concat_str(exprs, separator=FIELD_SEP).alias("text")).to_series()


def _text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def shingles(text: str, ngram: int = 5) -> list[str]:
    """The shingles of one text (reference definition, used to feed peers such as datasketch)."""
    if not text:
        return []
    if len(text) < ngram:
        return [text]
    return [text[i:i + ngram] for i in range(len(text) - ngram + 1)]


# ----------------------------------------------------------------------------- config

@functools.lru_cache(maxsize=256)
def optimal_bands_rows(threshold: float, num_perm: int,
                       weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows) minimising ``w_fp * FP + w_fn * FN`` like datasketch's ``_optimal_param``.

    FP = integral over s in [0, threshold] of 1-(1-s**r)**b, FN = integral over [threshold, 1]
    of (1-s**r)**b. The integrands are polynomials of degree b*r <= num_perm, so Gauss-Legendre
    with num_perm//2 + 1 nodes integrates them exactly (datasketch uses scipy's quad).
    Same search order and strict ``<`` as datasketch, so ties resolve the same way.
    """
    n = num_perm // 2 + 2
    x, w = np.polynomial.legendre.leggauss(n)
    s_fp = (x + 1) * threshold / 2          # nodes on [0, t]
    s_fn = threshold + (x + 1) * (1 - threshold) / 2
    wf, wn = w * threshold / 2, w * (1 - threshold) / 2
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        r = np.arange(1, num_perm // b + 1, dtype=np.float64)[:, None]
        fp = ((1 - (1 - s_fp[None, :] ** r) ** b) * wf).sum(axis=1)
        fn = (((1 - s_fn[None, :] ** r) ** b) * wn).sum(axis=1)
        err = fp * weights[0] + fn * weights[1]
        i = int(np.argmin(err))
        if err[i] < best:
            best, opt = float(err[i]), (b, i + 1)
    return opt


@dataclass(frozen=True)
class MinHashConfig:
    """Parameters of near-duplicate detection (see the module docstring for the method).

    ngram: shingle length in characters. num_perm: signature length (permutations).
    threshold: Jaccard similarity at or above which two texts are near duplicates.
    bands, rows: LSH banding; None derives them from threshold (``optimal_bands_rows``), one
    given derives the other as ``num_perm // given``; bands*rows must be <= num_perm.
    weights: (false positive, false negative) weights of that derivation, as datasketch.
    seed: of the permutations (datasketch's default is 1).
    verify: "signature" (estimated Jaccard) or "exact" (exact shingle-set Jaccard).
    shingle_hash: "sha1" (datasketch's hash: identical signatures) or "fnv" (faster, different).
    """

    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int | None = None
    rows: int | None = None
    seed: int = 1
    weights: tuple[float, float] = (0.5, 0.5)
    verify: Literal["signature", "exact"] = "signature"
    shingle_hash: Literal["sha1", "fnv"] = "sha1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        for name in ("ngram", "num_perm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}")
        for name in ("bands", "rows"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands}*{self.rows} = {self.bands * self.rows} "
                             f"exceeds num_perm = {self.num_perm}")
        for name in ("bands", "rows"):
            v = getattr(self, name)
            if v is not None and v > self.num_perm:
                raise ValueError(f"{name} = {v} exceeds num_perm = {self.num_perm}")
        if len(self.weights) != 2 or any(w < 0 for w in self.weights) or abs(sum(self.weights) - 1) > 1e-9:
            raise ValueError(f"weights must be two non-negative numbers summing to 1, got {self.weights!r}")
        if self.verify not in ("signature", "exact"):
            raise ValueError(f"verify must be 'signature' or 'exact', got {self.verify!r}")
        if self.shingle_hash not in ("fnv", "sha1"):
            raise ValueError(f"shingle_hash must be 'fnv' or 'sha1', got {self.shingle_hash!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")

    @property
    def lsh_params(self) -> tuple[int, int]:
        """The (bands, rows) actually used."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        if self.bands is not None:
            return self.bands, self.num_perm // self.bands
        if self.rows is not None:
            return self.num_perm // self.rows, self.rows
        return optimal_bands_rows(float(self.threshold), self.num_perm, self.weights)

    def resolved(self) -> dict[str, Any]:
        """Every parameter with bands and rows filled in (for notebooks and reports)."""
        b, r = self.lsh_params
        return {"ngram": self.ngram, "num_perm": self.num_perm, "threshold": self.threshold,
                "bands": b, "rows": r, "seed": self.seed, "weights": self.weights,
                "verify": self.verify, "shingle_hash": self.shingle_hash}

    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) uint32 arrays, drawn exactly as datasketch's affine32 scheme draws them."""
        return _permutations(self.num_perm, self.seed)


@functools.lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


# ----------------------------------------------------------------------------- signatures

def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array (shared with contamination)."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h.copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _counts(lens: np.ndarray, ngram: int) -> np.ndarray:
    """Shingles per text: len-ngram+1, 1 for a non-empty text shorter than ngram, 0 if empty."""
    return np.where(lens >= ngram, lens - ngram + 1, (lens > 0).astype(np.int64))


@dataclass
class _Layout:
    """Where the shingles of a batch of texts are in their concatenation (code point indices)."""

    counts: np.ndarray   # shingles per text
    pos: np.ndarray      # start of each shingle
    clen: np.ndarray     # its length in code points (ngram; the text length if shorter)
    first: np.ndarray    # index of each text's first shingle
    short: np.ndarray    # texts shorter than ngram (one shingle: themselves)


def _layout(lens: np.ndarray, ngram: int) -> _Layout:
    counts = _counts(lens, ngram)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    pos = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - first, counts)
    short = np.flatnonzero((lens > 0) & (lens < ngram))
    clen = np.full(pos.size, ngram, dtype=np.int64)
    clen[first[short]] = lens[short]
    return _Layout(counts, pos, clen, first, short)


def _codepoints(joined: str) -> np.ndarray:
    return np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _fnv_fingerprints(c: np.ndarray, lay: _Layout, ngram: int) -> np.ndarray:
    """64-bit fingerprint of each shingle: FNV-1a over its code points, then fmix64."""
    c64 = c.astype(np.uint64)
    total = c64.size
    h = np.full(total, _FNV_OFFSET, dtype=np.uint64)
    short_pos, short_len = lay.pos[lay.first[lay.short]], lay.clen[lay.first[lay.short]]
    short_fp = np.empty(short_pos.size, np.uint64)
    for k in range(ngram):          # h[p] = FNV-1a of c[p], ..., c[p+k]
        m = total - k
        if m <= 0:
            break
        h[:m] ^= c64[k:]
        h[:m] *= _FNV_PRIME
        done = short_len == k + 1
        short_fp[done] = h[short_pos[done]]
    fp = h[lay.pos]
    fp[lay.first[lay.short]] = short_fp
    return fmix64(fp)


def _fingerprints(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit fingerprints of every shingle of every text, in order, and the count per text."""
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    lay = _layout(lens, ngram)
    if not lay.pos.size:
        return np.empty(0, np.uint64), lay.counts
    return _fnv_fingerprints(_codepoints("".join(texts)), lay, ngram), lay.counts


_SHA1_K = (np.uint32(0x5A827999), np.uint32(0x6ED9EBA1), np.uint32(0x8F1BBCDC), np.uint32(0xCA62C1D6))
_SHA1_H = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
_SHA1_CHUNK = 32768
# by bytes of the message left in a word (-1, 0..3, >= 4): what to keep, where the pad byte goes
_WORD_MASK = np.array([0, 0, 0xFF000000, 0xFFFF0000, 0xFFFFFF00, 0xFFFFFFFF], dtype=np.uint32)
_WORD_PAD = np.array([0, 0x80000000, 0x00800000, 0x00008000, 0x00000080, 0], dtype=np.uint32)


def _sha1_words(w: np.ndarray) -> np.ndarray:
    """First 4 digest bytes, read little-endian (datasketch's ``sha1_hash32``), of one-block
    SHA-1 messages given as their 16 big-endian message words, shape (16, m); ``w`` is consumed."""
    U = np.uint32
    m = w.shape[1]
    a, b, c, d, e = (np.full(m, h, dtype=U) for h in _SHA1_H)
    tmp, f, t2 = np.empty(m, U), np.empty(m, U), np.empty(m, U)
    for t in range(80):
        x = w[t % 16]
        if t >= 16:                 # schedule: w[t] = rotl1(w[t-3] ^ w[t-8] ^ w[t-14] ^ w[t-16])
            np.bitwise_xor(x, w[(t - 3) % 16], out=x)
            np.bitwise_xor(x, w[(t - 8) % 16], out=x)
            np.bitwise_xor(x, w[(t - 14) % 16], out=x)
            np.left_shift(x, U(1), out=t2)
            np.right_shift(x, U(31), out=x)
            np.bitwise_or(x, t2, out=x)
        if t < 20:                  # ch(b, c, d) = d ^ (b & (c ^ d))
            np.bitwise_xor(c, d, out=f)
            np.bitwise_and(f, b, out=f)
            np.bitwise_xor(f, d, out=f)
        elif 40 <= t < 60:          # maj(b, c, d) = (b & c) | (d & (b | c))
            np.bitwise_or(b, c, out=f)
            np.bitwise_and(f, d, out=f)
            np.bitwise_and(b, c, out=t2)
            np.bitwise_or(f, t2, out=f)
        else:                       # parity
            np.bitwise_xor(b, c, out=f)
            np.bitwise_xor(f, d, out=f)
        np.left_shift(a, U(5), out=tmp)     # tmp = rotl5(a) + f + e + k + w[t]
        np.right_shift(a, U(27), out=t2)
        np.bitwise_or(tmp, t2, out=tmp)
        np.add(tmp, f, out=tmp)
        np.add(tmp, e, out=tmp)
        np.add(tmp, x, out=tmp)
        np.add(tmp, _SHA1_K[t // 20], out=tmp)
        np.left_shift(b, U(30), out=t2)     # b = rotl30(b), then rotate the registers
        np.right_shift(b, U(2), out=b)
        np.bitwise_or(b, t2, out=b)
        a, b, c, d, e, tmp = tmp, a, b, c, d, e
    a += U(_SHA1_H[0])
    return a.byteswap()


def _sha1_hash32(c: np.ndarray, utf8: np.ndarray, lay: _Layout) -> np.ndarray:
    """``sha1_hash32`` of the UTF-8 bytes of every shingle, vectorised (SHA-1 in numpy)."""
    bl = (1 + (c >= 0x80).astype(np.int64) + (c >= 0x800) + (c >= 0x10000))
    boff = np.concatenate(([0], np.cumsum(bl)))
    if boff[-1] != utf8.size:       # cannot happen for valid text; be safe
        raise RuntimeError("UTF-8 length mismatch while hashing shingles")
    start = boff[lay.pos]
    blen = boff[lay.pos + lay.clen] - start
    out = np.empty(lay.pos.size, dtype=np.uint32)
    # be[i]: the 4 bytes utf8[i:i+4] read as a big-endian word (a strided view; zeros past the end)
    padded = np.zeros(utf8.size + 64, dtype=np.uint8)
    padded[:utf8.size] = utf8
    be = np.ndarray(shape=(utf8.size + 61,), dtype=">u4", buffer=padded, strides=(1,))
    one = np.flatnonzero(blen <= 55)          # one SHA-1 block (all of them for ngram <= 13)
    for s in range(0, one.size, _SHA1_CHUNK):
        sel = one[s:s + _SHA1_CHUNK]
        st, ln = start[sel], blen[sel]
        w = np.zeros((16, sel.size), dtype=np.uint32)
        for k in range(int(ln.max()) // 4 + 1):   # message words, the 0x80 pad byte, zeros
            r = np.clip(ln - 4 * k, -1, 4) + 1     # 0: past the end .. 5: four message bytes
            w[k] = (be[st + 4 * k] & _WORD_MASK[r]) | _WORD_PAD[r]
        w[15] = (ln * 8).astype(np.uint32)    # message length in bits
        out[sel] = _sha1_words(w)
    for k in np.flatnonzero(blen > 55).tolist():  # long shingles (ngram > 13): hashlib
        out[k] = struct.unpack("<I", hashlib.sha1(utf8[start[k]:start[k] + blen[k]].tobytes()).digest()[:4])[0]
    return out


def _batches(lens: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive [i, j) ranges of texts with about ``limit`` characters each (>= 1 text)."""
    cum = np.concatenate(([0], np.cumsum(lens)))
    out, i, n = [], 0, len(lens)
    while i < n:
        j = int(np.searchsorted(cum, cum[i] + limit, side="right")) - 1
        j = min(max(j, i + 1), n)
        out.append((i, j))
        i = j
    return out


def _shingle_hash32(texts: Sequence[str], ngram: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hash of every shingle of a batch of texts, in order, and the count per text."""
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    lay = _layout(lens, ngram)
    if not lay.pos.size:
        return np.empty(0, np.uint32), lay.counts
    joined = "".join(texts)
    c = _codepoints(joined)
    if method == "sha1":
        utf8 = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
        return _sha1_hash32(c, utf8, lay), lay.counts
    return (_fnv_fingerprints(c, lay, ngram) >> np.uint64(32)).astype(np.uint32), lay.counts


def _signature_block(x: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signatures (len(counts), num_perm) of texts whose fmix32'd shingle hashes are ``x``."""
    P = a.size
    sig = np.full((counts.size, P), _U32_MAX, dtype=np.uint32)
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return sig
    cum = np.concatenate(([0], np.cumsum(counts[nz])))
    buf = np.empty((P, _BLOCK_SHINGLES), dtype=np.uint32)
    a_col, b_col = a[:, None], b[:, None]
    i = 0
    while i < nz.size:
        j = int(np.searchsorted(cum, cum[i] + _BLOCK_SHINGLES, side="right")) - 1
        j = min(max(j, i + 1), nz.size)
        s0, s1 = int(cum[i]), int(cum[j])
        t = buf[:, :s1 - s0] if s1 - s0 <= _BLOCK_SHINGLES else np.empty((P, s1 - s0), np.uint32)
        np.multiply(a_col, x[None, s0:s1], out=t)
        np.add(t, b_col, out=t)
        sig[nz[i:j]] = np.minimum.reduceat(t, cum[i:j] - s0, axis=1).T
        i = j
    return sig


def _signatures(texts: Sequence[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    a, b = config.permutations()
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    sig = np.empty((len(texts), config.num_perm), dtype=np.uint32)
    counts = np.empty(len(texts), dtype=np.int64)
    for i, j in _batches(lens, _BATCH_CHARS):
        h32, cnt = _shingle_hash32(texts[i:j], config.ngram, config.shingle_hash)
        sig[i:j] = _signature_block(_fmix32(h32), cnt, a, b)
        counts[i:j] = cnt
    return sig, counts


def minhash_signatures(texts: Sequence[str] | pl.Series, config: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), uint32. An empty text's row is all
    0xFFFFFFFF (datasketch's empty MinHash). With ``shingle_hash="sha1"`` (default) each row
    equals ``datasketch.MinHash(num_perm, seed).hashvalues`` after ``update_batch`` with the
    UTF-8 shingles of the text."""
    texts = _as_list(texts)
    return _signatures(texts, config)[0]


def _as_list(texts: Sequence[str] | pl.Series) -> list[str]:
    if isinstance(texts, pl.Series):
        return texts.cast(pl.String).fill_null("").to_list()
    return ["" if t is None else t for t in texts]


# ----------------------------------------------------------------------------- LSH

def candidate_pairs(sig: np.ndarray, bands: int, rows: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Pairs (i, j), i < j, of rows of ``sig`` that are identical in at least one band.

    Shape (k, 2) int64, sorted, unique. Rows where ``valid`` is False take no part.
    Pairs within one bucket are all enumerated (as a datasketch query would return them).
    """
    m = sig.shape[0]
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds the signature length {sig.shape[1]}")
    idx = np.arange(m, dtype=np.int64) if valid is None else np.flatnonzero(valid).astype(np.int64)
    codes: list[np.ndarray] = []
    if idx.size >= 2:
        for band in range(bands):
            block = np.ascontiguousarray(sig[idx, band * rows:(band + 1) * rows])
            keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
            _, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
            inv = inv.ravel()
            members = np.flatnonzero(cnt[inv] > 1)
            if members.size == 0:
                continue
            g = inv[members]
            order = np.argsort(g, kind="stable")   # by bucket, then by row (ascending)
            g, mem = g[order], idx[members[order]]
            d = 1
            while d < g.size:
                same = g[d:] == g[:-d]
                if not same.any():
                    break
                codes.append(mem[:-d][same] * m + mem[d:][same])
                d += 1
    if not codes:
        return np.empty((0, 2), dtype=np.int64)
    u = np.unique(np.concatenate(codes))
    return np.stack([u // m, u % m], axis=1)


def _agreement(sig: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Estimated Jaccard of row pairs: share of equal signature values (datasketch's jaccard)."""
    out = np.empty(i.size, dtype=np.float64)
    P = np.float64(sig.shape[1])
    for s in range(0, i.size, chunk):
        e = s + chunk
        out[s:e] = np.count_nonzero(sig[i[s:e]] == sig[j[s:e]], axis=1).astype(np.float64) / P
    return out


class _ShingleSets:
    """Sorted unique 64-bit shingle fingerprints of texts, computed on demand (exact Jaccard)."""

    def __init__(self, texts: Sequence[str], ngram: int):
        self.texts, self.ngram, self.cache = texts, ngram, {}

    def get(self, i: int) -> np.ndarray:
        s = self.cache.get(i)
        if s is None:
            s = self.cache[i] = np.unique(_fingerprints([self.texts[i]], self.ngram)[0])
        return s

    def jaccard(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.empty(i.size, dtype=np.float64)
        for k, (x, y) in enumerate(zip(i.tolist(), j.tolist())):
            a, b = self.get(x), self.get(y)
            inter = np.intersect1d(a, b, assume_unique=True).size
            union = a.size + b.size - inter
            out[k] = inter / union if union else 0.0
        return out


def _similar(texts: list[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Any]:
    sig, counts = _signatures(texts, config)
    bands, rows = config.lsh_params
    cand = candidate_pairs(sig, bands, rows, valid=counts > 0)
    exact = _ShingleSets(texts, config.ngram) if config.verify == "exact" else None
    sim = (exact.jaccard(cand[:, 0], cand[:, 1]) if exact is not None
           else _agreement(sig, cand[:, 0], cand[:, 1]))
    ok = sim >= config.threshold
    stats = {"shingles": int(counts.sum()), "candidate_pairs": int(cand.shape[0]),
             "verified_pairs": int(ok.sum()), "bands": bands, "rows": rows}
    simfn = exact.jaccard if exact is not None else functools.partial(_agreement, sig)
    return cand[ok], sim[ok], stats, simfn


def similar_pairs(texts: Sequence[str] | pl.Series, config: MinHashConfig = MinHashConfig()) -> pl.DataFrame:
    """Verified near-duplicate pairs among ``texts`` (taken as they are, not normalised):
    columns i < j (positions) and similarity (estimated or exact Jaccard, >= threshold)."""
    pairs, sim, _, _ = _similar(_as_list(texts), config)
    return pl.DataFrame({"i": pairs[:, 0], "j": pairs[:, 1], "similarity": sim},
                        schema={"i": pl.Int64, "j": pl.Int64, "similarity": pl.Float64})


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` nodes given edges (i, j): the smallest node index of
    its component. Union-find by hooking roots onto smaller roots + pointer jumping, vectorised."""
    parent = np.arange(n, dtype=np.int64)
    u, v = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    while u.size:
        pu, pv = parent[u], parent[v]
        diff = pu != pv
        if not diff.any():
            break
        u, v, pu, pv = u[diff], v[diff], pu[diff], pv[diff]
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp
    return parent


# ----------------------------------------------------------------------------- results

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


def near_duplicates(frame: pl.DataFrame, config: MinHashConfig | None = None,
                    fields: Sequence[str] = DEFAULT_FIELDS, keep: str = "first",
                    normalize: bool = True) -> DedupResult:
    """Clusters of near-duplicate records by MinHash-LSH (see the module docstring)."""
    config = config or MinHashConfig()
    _check_keep(keep)
    t0 = time.perf_counter()
    base, texts = _base(frame, fields, normalize)
    pairs, sim, stats, simfn = _similar(texts, config)
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


# ----------------------------------------------------------------------------- filters

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

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        dup = self.result(frame).clusters["duplicate_of"]
        return (dup.to_frame("d")
                .select(pl.when(pl.col("d").is_not_null())
                        .then(pl.concat_str([pl.lit("duplicate_of="), pl.col("d")])).alias("detail"))
                .to_series())


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
class NearDedup(_DedupFilter):
    """Drop all but one record of each cluster of near duplicates (MinHash-LSH, char n-grams).

    The MinHashConfig fields (ngram, num_perm, threshold, bands, rows, seed, weights, verify,
    shingle_hash) plus fields, survivor and normalize as for ``exact_dedup``.
    """

    name: ClassVar[str] = "near_dedup"
    description: ClassVar[str] = "near duplicates: MinHash-LSH over character n-grams, Jaccard >= threshold"

    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int | None = None
    rows: int | None = None
    seed: int = 1
    weights: tuple[float, float] = (0.5, 0.5)
    verify: str = "signature"
    shingle_hash: str = "sha1"
    fields: tuple[str, ...] = DEFAULT_FIELDS
    survivor: str = "first"
    normalize: bool = True

    def __post_init__(self) -> None:
        self.fields = _fields_tuple(self.fields)
        self.weights = tuple(self.weights)  # type: ignore[assignment]
        _check_keep(self.survivor)
        self.config  # validates

    @property
    def config(self) -> MinHashConfig:
        return MinHashConfig(ngram=self.ngram, num_perm=self.num_perm, threshold=self.threshold,
                             bands=self.bands, rows=self.rows, seed=self.seed, weights=self.weights,
                             verify=self.verify, shingle_hash=self.shingle_hash)  # type: ignore[arg-type]

    def _run(self, frame: pl.DataFrame) -> DedupResult:
        return near_duplicates(frame, self.config, self.fields, self.survivor, self.normalize)
