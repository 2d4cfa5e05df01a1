"""MinHash signatures and LSH candidate pairs over character shingles (datasketch-compatible)."""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import polars as pl

from cqia_nb.core.hashing import WINDOW_BASE, fmix32, fmix64, window_hash

FIELD_SEP = "\x1f"
_U32_MAX = np.uint32(0xFFFFFFFF)
_BLOCK_SHINGLES = 8192        # columns of one (num_perm x shingles) block: fits in cache
_BATCH_CHARS = 1 << 20        # characters hashed at once (bounds memory: ~40 bytes a char)


def shingles(text: str, ngram: int = 5) -> list[str]:
    """The shingles of one text (reference definition, used to feed peers such as datasketch)."""
    if not text:
        return []
    if len(text) < ngram:
        return [text]
    return [text[i:i + ngram] for i in range(len(text) - ngram + 1)]


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


@dataclass
class MinHashConfig:
    """Parameters of near-duplicate detection (see the module docstring for the method).

    ngram: shingle length in characters. num_perm: signature length (permutations).
    threshold: Jaccard similarity at or above which two texts are near duplicates.
    bands, rows: LSH banding; None derives them from threshold (``optimal_bands_rows``), one
    given derives the other as ``num_perm // given``; bands*rows must be <= num_perm.
    weights: (false positive, false negative) weights of that derivation, as datasketch.
    seed: of the permutations (datasketch's default is 1).
    verify: "signature" (estimated Jaccard) or "exact" (exact shingle-set Jaccard).
    shingle_hash: "sha1" (datasketch's hash: identical signatures) or "fast" (the project's
    polynomial window hash: faster, different signatures).
    """

    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int | None = None
    rows: int | None = None
    seed: int = 1
    weights: tuple[float, float] = (0.5, 0.5)
    verify: Literal["signature", "exact"] = "signature"
    shingle_hash: Literal["sha1", "fast"] = "sha1"

    def __post_init__(self) -> None:
        self.weights = tuple(float(w) for w in self.weights)  # type: ignore[assignment]
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
        if self.shingle_hash not in ("fast", "sha1"):
            raise ValueError(f"shingle_hash must be 'sha1' or 'fast', got {self.shingle_hash!r}")
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


def _fast_fingerprints(c: np.ndarray, lay: _Layout, ngram: int) -> np.ndarray:
    """64-bit fingerprint of each shingle: the polynomial window hash of its code points
    (``cqia_nb.core.hashing.window_hash``, the one the rule filters and the contamination check
    use), then fmix64. A text shorter than ``ngram`` is one shingle: the hash of all its characters."""
    u = c.astype(np.uint64)
    fp = np.empty(lay.pos.size, dtype=np.uint64)
    full = lay.clen == ngram
    fp[full] = window_hash(u, ngram)[lay.pos[full]]
    for length in np.unique(lay.clen[~full]).tolist():
        sel = lay.clen == length
        fp[sel] = window_hash(u, int(length))[lay.pos[sel]]
    return fmix64(fp)


def _fingerprints(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit fingerprints of every shingle of every text, in order, and the count per text."""
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    lay = _layout(lens, ngram)
    if not lay.pos.size:
        return np.empty(0, np.uint64), lay.counts
    return _fast_fingerprints(_codepoints("".join(texts)), lay, ngram), lay.counts


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
    return (_fast_fingerprints(c, lay, ngram) >> np.uint64(32)).astype(np.uint32), lay.counts


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
        sig[i:j] = _signature_block(fmix32(h32), cnt, a, b)
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


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per LSH band of each signature row, shape (len(sig), bands): what an engine
    keeps per record instead of the signature (8 bytes a band, not 4 x rows). Equal bands give equal
    hashes, so ``candidate_pairs(band_hashes(sig, b, r), b, 1)`` finds the pairs of
    ``candidate_pairs(sig, b, r)`` (plus, with probability ~2**-64 a band, a collision, which
    verification then rejects like any candidate)."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds the signature length {sig.shape[1]}")
    out = np.empty((sig.shape[0], bands), dtype=np.uint64)
    base = np.uint64(WINDOW_BASE)
    with np.errstate(over="ignore"):
        for k in range(bands):
            h = np.full(sig.shape[0], k + 1, dtype=np.uint64)
            for r in range(k * rows, (k + 1) * rows):
                h = fmix64(h * base + sig[:, r].astype(np.uint64))
            out[:, k] = h
    return out


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


def similar_texts(texts: list[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Any]:
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
    pairs, sim, _, _ = similar_texts(_as_list(texts), config)
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
