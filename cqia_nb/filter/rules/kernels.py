"""Vectorised kernels over the code points of many texts: character classes, n-gram counts, word tokens."""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import polars as pl

from cqia_nb.core.hashing import splitmix64, window_hash


_LAST = threading.local()


def codepoints(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """All texts' code points concatenated (uint32) and each text's length in code points, both
    read-only.

    Meant for one batch (``cqia_nb.filter.framework.measure_batched``): the arrays are 4 bytes a
    character of the batch, not of the input. The last result of each thread is kept and returned
    again when the next call's texts are equal (``Series.equals``, cheap when the strings share
    their buffers): consecutive filters on the same column of a batch (``char_repetition`` then
    ``ngram_repetition``) decode it once."""
    texts = texts.cast(pl.String).fill_null("")
    last = getattr(_LAST, "value", None)
    if last is not None and last[0].len() == texts.len() and last[0].equals(texts):
        return last[1], last[2]
    lengths = texts.str.len_chars().cast(pl.Int64).to_numpy()
    if texts.len() == 0 or not lengths.any():
        cps = np.zeros(0, np.uint32)
    else:
        # polars joins the texts into one string (no Python list of str objects), which is
        # decoded once and re-encoded as UTF-32: two C loops over the batch's text
        joined = texts.str.join("").item()
        cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    cps.flags.writeable = False
    if lengths.flags.writeable:
        lengths.flags.writeable = False
    _LAST.value = (texts, cps, lengths)
    return cps, lengths


@lru_cache(maxsize=32)
def _bmp_class_table(pattern: str) -> np.ndarray:
    """Which BMP code points match the one-character regex class ``pattern``: evaluated with
    polars' own engine once, so the table and the regex agree by construction."""
    chars = [chr(c) if not 0xD800 <= c <= 0xDFFF else "\ufffd" for c in range(0x10000)]
    table = pl.Series(chars).str.contains(f"^(?:{pattern})$").to_numpy().copy()
    table[0xD800:0xE000] = False  # surrogates never occur in valid UTF-8
    return table


def class_mask(cps: np.ndarray, pattern: str) -> np.ndarray:
    """Boolean per code point: does the character match the one-character class ``pattern``."""
    table = _bmp_class_table(pattern)
    if len(cps) == 0 or cps.max() < 0x10000:
        return table[cps]
    out = table[np.minimum(cps, 0xFFFF)]  # astral positions are overwritten below
    astral = np.flatnonzero(cps > 0xFFFF)
    # astral characters (emoji, extension B): ask the regex for the few distinct ones; indexing
    # only their positions keeps the work and memory off the (BMP) bulk of the text
    uniq, inv = np.unique(cps[astral], return_inverse=True)
    hit = pl.Series([chr(int(c)) for c in uniq]).str.contains(f"^(?:{pattern})$").to_numpy()
    out[astral] = hit[inv]
    return out


@lru_cache(maxsize=16)
def _bmp_codes_table(patterns: tuple[str, ...]) -> np.ndarray:
    """Bit k set where the BMP code point matches ``patterns[k]`` (``_bmp_class_table`` each)."""
    out = np.zeros(0x10000, dtype=np.uint8)
    for k, p in enumerate(patterns):
        out |= _bmp_class_table(p).astype(np.uint8) << np.uint8(k)
    return out


def class_codes(cps: np.ndarray, patterns: tuple[str, ...]) -> np.ndarray:
    """uint8 per code point, bit k set where the character matches the one-character class
    ``patterns[k]`` (at most 8): ``class_mask`` of several classes in one table lookup."""
    if not 1 <= len(patterns) <= 8:
        raise ValueError("class_codes takes 1 to 8 patterns")
    table = _bmp_codes_table(tuple(patterns))
    out = np.take(table, cps, mode="clip")  # astral code points read the last entry: overwritten below
    if len(cps) == 0 or cps.max() < 0x10000:
        return out
    astral = np.flatnonzero(cps > 0xFFFF)
    uniq, inv = np.unique(cps[astral], return_inverse=True)
    chars = pl.Series([chr(int(c)) for c in uniq])
    bits = np.zeros(len(uniq), dtype=np.uint8)
    for k, p in enumerate(patterns):
        bits |= chars.str.contains(f"^(?:{p})$").to_numpy().astype(np.uint8) << np.uint8(k)
    out[astral] = bits[inv]
    return out


def class_counts(cps: np.ndarray, lengths: np.ndarray, patterns: tuple[str, ...]) -> list[np.ndarray]:
    """Per text, the number of characters matching each one-character class of ``patterns``:
    ``[per_text_sum(class_mask(cps, p), lengths) for p in patterns]`` from one table lookup, each
    count one ``np.add.reduceat`` over the texts' slices (empty texts: 0)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = class_codes(cps, patterns)
    nonempty = lengths > 0
    starts = (np.cumsum(lengths) - lengths)[nonempty]  # increasing: each slice ends where the next starts
    out = []
    for k in range(len(patterns)):
        counts = np.zeros(len(lengths), dtype=np.int64)
        if len(starts):
            counts[nonempty] = np.add.reduceat((codes & np.uint8(1 << k)) != 0, starts, dtype=np.int64)
        out.append(counts)
    return out


def per_text_sum(mask: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-text count of True in ``mask`` (code points of all texts concatenated)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    # int32 prefix sums (half the memory traffic of int64) whenever they cannot overflow
    cs = np.empty(len(mask) + 1, dtype=np.int32 if len(mask) < 2**31 else np.int64)
    cs[0] = 0
    np.cumsum(mask, dtype=cs.dtype, out=cs[1:])
    ends = np.cumsum(lengths)
    return (cs[ends] - cs[ends - lengths]).astype(np.int64)


#: Minimum bits for the document index in n-gram keys (``ngram_keys``): 15 bits, up to 32,768
#: documents per call, so the hash keeps 49 bits whatever the batch size (the bits one call on
#: the 17,971 real records used before batching): a record's keys, hence its value, do not
#: depend on the batch it is in. More documents in one call take more bits, as before.
MIN_DOC_BITS = 15


def _window_keys(tokens: np.ndarray, lengths: np.ndarray, n: int,
                 min_doc_bits: int = MIN_DOC_BITS) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The packed key of every window start (``doc << (64 - doc_bits) | hash >> doc_bits``, in
    text order, so grouped by document), the mask of the windows that lie inside their document
    (None: all do) and ``doc_bits``. See ``ngram_keys``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n_docs = len(lengths)
    doc_bits = max(1, min_doc_bits, int(max(n_docs - 1, 0)).bit_length())
    if doc_bits > 32:
        raise ValueError("more than 2**32 records in one call")
    m = int(lengths.sum()) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64), None, doc_bits
    with np.errstate(over="ignore"):  # one odd multiply spreads small ids (code points) over 64 bits
        t = np.multiply(tokens, np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
    h = window_hash(t, n)
    del t
    shift = np.uint64(64 - doc_bits)
    h >>= np.uint64(doc_bits)
    h |= np.repeat(np.arange(n_docs, dtype=np.uint64) << shift, lengths)[:m]
    # windows that run past the end of their document: the last n-1 starts of each
    ends = np.cumsum(lengths)
    starts = ends - lengths
    bad = (ends[:, None] - np.arange(1, n, dtype=np.int64)[None, :])
    bad = bad[(bad >= starts[:, None]) & (bad < m)]
    valid = None
    if len(bad):
        valid = np.ones(m, dtype=bool)
        valid[bad] = False
    return h, valid, doc_bits


def ngram_keys(tokens: np.ndarray, lengths: np.ndarray, n: int,
               min_doc_bits: int = MIN_DOC_BITS) -> tuple[np.ndarray, int]:
    """Sorted n-gram keys of all documents: ``doc << (64 - doc_bits) | hash >> doc_bits``.

    ``tokens`` are the uint64 ids of all documents' tokens concatenated, ``lengths`` the tokens
    per document. n-grams are 64-bit polynomial hashes of the mixed ids, truncated to
    ``64 - doc_bits`` bits (49 bits for 18k records): two different n-grams of one text collide
    with probability ~ m²/2⁵⁰ for m n-grams, negligible for a ratio. Sorting the packed keys
    (numpy, one array) groups equal n-grams of each document; it is ~10x faster than a polars
    group-by on (doc, hash) here.
    """
    h, valid, doc_bits = _window_keys(tokens, lengths, n, min_doc_bits)
    keys = h if valid is None else h[valid]
    _sort_doc_major(keys, 64 - doc_bits)
    return keys, doc_bits


#: Odd multipliers of the bucket hashes of ``_maybe_repeated`` (one per round; golden ratio, splitmix).
_BUCKET_MULTS = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9)


def _maybe_repeated(keys: np.ndarray, cuts: np.ndarray, mult: int, chunk: int = 1 << 15,
                    load_bits: int = 3) -> np.ndarray:
    """Boolean mask over ``keys``: True for every key that occurs more than once (and for some
    that do not); False only for keys that occur once. ``cuts`` are indices where ``keys`` may be
    split so that equal keys never lie on both sides of a cut (document starts).

    Per piece of about ``chunk`` keys (cut at ``cuts``): every key writes its index into the
    bucket ``(key * mult) >> (64 - b)`` of a table 2**``load_bits`` times the piece's size (last
    write wins); a key whose bucket holds another index shares its bucket with another key, and so
    does every key of that bucket. Two equal keys share their bucket, so both are marked. A piece
    fits in the CPU cache (~1 MB of table), and the scatter/gather passes cost a fraction of
    sorting all keys: the exact duplicates are then found by sorting the few marked keys."""
    n = len(keys)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    cuts = np.asarray(cuts, dtype=np.int64)
    cuts = cuts[(cuts > 0) & (cuts < n)]
    if len(cuts):
        pick = np.unique(cuts[np.minimum(np.searchsorted(cuts, np.arange(chunk, n, chunk)), len(cuts) - 1)])
    else:
        pick = cuts
    bounds = [0, *pick.tolist(), n]
    mult64 = np.uint64(mult)
    top = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))

    def table_bits(size: int) -> int:  # a piece of one long text: a table twice its size, not 8x
        return max(8, (size - 1).bit_length() + (load_bits if size <= 1 << 20 else 1))

    owner = np.empty(1 << table_bits(top), dtype=np.int32)
    flag = np.zeros(len(owner), dtype=bool)
    ar = np.arange(top, dtype=np.int32)
    buf, got, neq = np.empty(top, dtype=np.uint64), np.empty(top, dtype=np.int32), np.empty(top, dtype=bool)
    with np.errstate(over="ignore"):
        for a, b in zip(bounds[:-1], bounds[1:]):
            size = b - a
            if size < 2:
                continue
            bucket = buf[:size]  # (key * mult) >> (64 - bits), in place, then read as indices
            np.multiply(keys[a:b], mult64, out=bucket)
            np.right_shift(bucket, np.uint64(64 - table_bits(size)), out=bucket)
            bucket = bucket.view(np.int64)  # the same bits: indices below 2**bits
            idx = ar[:size]
            owner[bucket] = idx
            np.not_equal(np.take(owner, bucket, out=got[:size], mode="clip"), idx, out=neq[:size])
            lost = bucket[neq[:size]]
            if len(lost) == 0:
                continue
            flag[lost] = True
            np.take(flag, bucket, out=out[a:b], mode="clip")
            flag[lost] = False
    return out


def _sort_doc_major(keys: np.ndarray, shift: int) -> None:
    """Sort packed keys in place. numpy's stable sort (a merge sort for 64-bit integers) is ~1.5x
    faster than its default sort and ~1.3x faster than sorting document-aligned pieces here: the
    keys arrive grouped by document (the high bits). Equal keys are interchangeable, so any sort
    gives the same array."""
    keys.sort(kind="stable")


def ngram_runs(tokens: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct n-grams per document as (doc index, frequency) arrays, one entry per distinct n-gram."""
    keys, doc_bits = ngram_keys(tokens, lengths, n)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    counts = np.diff(np.concatenate((starts, [len(keys)])))
    docs = (keys[starts] >> np.uint64(64 - doc_bits)).astype(np.int64)
    return docs, counts


def ngram_repeats(tokens: np.ndarray, lengths: np.ndarray, n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The repeated n-grams only: (doc index, frequency) of every n-gram seen more than once in
    its document, plus per document the number of n-grams and of distinct n-grams. The keys are
    those of ``ngram_keys``; the keys that may repeat are picked by two rounds of
    ``_maybe_repeated`` (~10 % of the keys of real text: most n-grams of a text are unique), and
    only those are sorted: equal neighbours of the sorted candidates are exactly the equal
    neighbours of all sorted keys, so the result is that of sorting every key."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = np.maximum(lengths - n + 1, 0)
    h, valid, doc_bits = _window_keys(tokens, lengths, n)
    empty = np.zeros(0, dtype=np.int64)
    if len(h) < 2:
        return empty, empty, total, total.copy()
    shift = np.uint64(64 - doc_bits)
    starts = np.cumsum(lengths) - lengths
    maybe = _maybe_repeated(h, starts, _BUCKET_MULTS[0])
    if valid is not None:
        maybe &= valid
    keys = h[maybe]
    del h, maybe, valid
    if len(keys) > 1:  # second round, on the candidates (grouped by document as well)
        docs = keys >> shift
        keys = keys[_maybe_repeated(keys, np.flatnonzero(docs[1:] != docs[:-1]) + 1, _BUCKET_MULTS[1])]
        del docs
    if len(keys) < 2:
        return empty, empty, total, total.copy()
    keys.sort(kind="stable")  # see _sort_doc_major
    return _repeat_runs(keys, shift, total)


def _repeat_runs(keys: np.ndarray, shift: np.uint64, total: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From sorted (document << shift | n-gram) keys: each repeated key's document and count, and
    per document its n-gram total and distinct count (``ngram_repeats``' result)."""
    empty = np.zeros(0, dtype=np.int64)
    idx = np.flatnonzero(keys[1:] == keys[:-1])      # i where key i repeats at i + 1
    if len(idx) == 0:
        return empty, empty, total, total.copy()
    distinct = total - np.bincount((keys[idx] >> shift).astype(np.int64), minlength=len(total))
    brk = np.flatnonzero(np.diff(idx) != 1)
    first = idx[np.concatenate(([0], brk + 1))]
    last = idx[np.concatenate((brk, [len(idx) - 1]))]
    return (keys[first] >> shift).astype(np.int64), last - first + 2, total, distinct


def ngram_repeats_sorted(tokens: np.ndarray, lengths: np.ndarray, n: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``ngram_repeats`` by sorting every key (``ngram_keys``): the plain version, kept as the
    tests' reference for the candidate rounds."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = np.maximum(lengths - n + 1, 0)
    keys, doc_bits = ngram_keys(tokens, lengths, n)
    empty = np.zeros(0, dtype=np.int64)
    if len(keys) < 2:
        return empty, empty, total, total.copy()
    shift = np.uint64(64 - doc_bits)
    return _repeat_runs(keys, shift, total)


@lru_cache(maxsize=1)
def bmp_tables() -> tuple[np.ndarray, np.ndarray]:
    """Token class (0 skip, 1 Han, 2 word character) and lower-case code point for the BMP."""
    import unicodedata

    cls = np.zeros(0x10000, dtype=np.uint8)
    lower = np.arange(0x10000, dtype=np.uint32)
    for cp in range(0x10000):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat[0] in "LNM":
            cls[cp] = 2
        lo = ch.lower()
        if len(lo) == 1:
            lower[cp] = ord(lo)
    for a, b in _HAN_RANGES:
        cls[a:min(b, 0xFFFF) + 1] = 1
    return cls, lower


@lru_cache(maxsize=1)
def word_table() -> np.ndarray:
    """BMP code points that are letters, digits or CJK (Unicode L*, N*)."""
    import unicodedata

    t = np.array([unicodedata.category(chr(cp))[0] in "LN" for cp in range(0x10000)], dtype=bool)
    for a, b in _HAN_RANGES:
        t[a:min(b, 0xFFFF) + 1] = True
    return t


_HAN_RANGES = ((0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3400, 0x4DBF),
               (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


def word_tokens(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """"Word-ish" token ids of each text (see ``TOKEN``): each CJK character is a token, each
    run of other letters/digits/marks one token (lower-cased); the rest separates tokens.
    Returns (uint64 ids of all texts concatenated, tokens per text). Pure numpy."""
    cps, lengths = codepoints(texts)
    if len(cps) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(len(lengths), dtype=np.int64)
    cls_t, low_t = bmp_tables()
    idx = cps.astype(np.intp)  # once for both lookups
    cls, low = np.take(cls_t, idx, mode="clip"), np.take(low_t, idx, mode="clip")
    if cps.max() >= 0x10000:  # astral characters: class 0 (1 in CJK extension B..), lower-case = itself
        astral = np.flatnonzero(cps > 0xFFFF)
        a = cps[astral]
        cls[astral] = ((a >= 0x20000) & (a <= 0x3FFFF)).astype(np.uint8)
        low[astral] = a
    word = cls == 2
    doc_start = np.zeros(len(cps), dtype=bool)
    doc_start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    run_start = word & (doc_start | np.concatenate(([False], ~word[:-1])))
    # word runs, computed on the word characters only (a minority in Chinese text)
    w = np.flatnonzero(word)
    take = (cls == 1) | run_start
    ids = low[take].astype(np.uint64)  # only the tokens' first characters: no uint64 per character
    if len(w):
        ws = run_start[w]                       # run starts, in word-character space
        wpos = np.arange(len(w), dtype=np.int64)
        offset = (wpos - np.maximum.accumulate(np.where(ws, wpos, 0))).astype(np.uint64)
        with np.errstate(over="ignore"):
            contrib = splitmix64(low[w].astype(np.uint64) * np.uint64(0x10001) + offset * np.uint64(0x9E3779B1))
            run_ids = np.add.reduceat(contrib, np.flatnonzero(ws))
        ids[run_start[take]] = run_ids | np.uint64(1 << 63)  # word ids apart from code points
    counts = per_text_sum(take, lengths)
    return ids, counts
