"""Hashing, one definition each: content keys for caches, and the 64-bit mixing of n-gram hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def content_key(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts``: strings as UTF-8, bytes as they are, anything else as sorted JSON;
    each part is followed by a NUL so that ("ab", "c") and ("a", "bc") differ."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, bytes):
            h.update(p)
        elif isinstance(p, str):
            h.update(p.encode("utf-8"))
        else:
            h.update(json.dumps(p, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def file_sha256(path: Any, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h

def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser on a copy of a uint32 array (datasketch's ``affine32`` scheme applies it)."""
    h = h.copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a new uint64 array): spreads small ids (token ids, code points) over 64 bits."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


#: The base of the polynomial n-gram hash (the FNV prime: odd, so multiplication is invertible mod 2**64).
WINDOW_BASE = 0x100000001B3


def window_hash(u: np.ndarray, n: int) -> np.ndarray:
    """``h[i] = sum_k u[i+k] * B**(n-1-k) (mod 2**64)`` for every window of ``n`` consecutive uint64
    values, ``B = WINDOW_BASE``: the n-gram hash of the rule filters, the contamination check and the
    fast MinHash shingles. Equal windows give equal hashes; callers mix the result (``fmix64``) or pack
    it with a document id. Up to 8, Horner's rule in place on one buffer (2 passes per element of the
    window, no temporaries); beyond, windows of 1, 2, 4, 8 ... combined along the binary digits of n
    (~2 log2(n) passes)."""
    m = len(u) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    base = np.uint64(WINDOW_BASE)
    with np.errstate(over="ignore"):
        if n <= 8:
            h = u[:m].copy()
            for k in range(1, n):
                np.multiply(h, base, out=h)
                np.add(h, u[k:k + m], out=h)
            return h
        # each step a * B**k + b written into the product's own buffer: one new array a step
        pows = {1: u}
        size = 1
        while size * 2 <= n:
            prev = pows[size]
            cur = np.multiply(prev[:-size], np.uint64(pow(WINDOW_BASE, size, 1 << 64)))
            np.add(cur, prev[size:], out=cur)
            pows[size * 2] = cur
            size *= 2
        acc = pows[size]
        offset = size
        for b in sorted((k for k in pows if k < size and n & k), reverse=True):
            length = m + n - offset - b
            nxt = np.multiply(acc[:length], np.uint64(pow(WINDOW_BASE, b, 1 << 64)))
            np.add(nxt, pows[b][offset:offset + length], out=nxt)
            acc = nxt
            offset += b
        return acc[:m]


def digests128(texts: Any) -> list[bytes]:
    """BLAKE2b-128 of each string's UTF-8 (16 bytes each): the identity of a text where an engine
    keeps a key instead of the text (collisions: ~n**2 / 2**129, nil at any real size)."""
    return [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts]
