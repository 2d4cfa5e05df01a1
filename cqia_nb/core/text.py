"""Text normalisation and decoding, one definition each.

``normalize_expr`` is what deduplication and the contamination check compare: NFKC, lower case,
and every run of whitespace and punctuation replaced by ``separator`` — ``""`` for dedup's
character shingles (punctuation and spacing never make two answers different), ``" "`` for the
contamination check's units (a run becomes one unit boundary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

PUNCT_OR_SPACE = r"[\s\p{P}]+"


def normalize_expr(expr: pl.Expr, separator: str = "") -> pl.Expr:
    """NFKC, lowercase, runs of whitespace/punctuation -> ``separator`` (stripped); nulls become ""."""
    out = (expr.cast(pl.String).fill_null("").str.normalize("NFKC").str.to_lowercase()
           .str.replace_all(PUNCT_OR_SPACE, separator, literal=False))
    return out.str.strip_chars(separator) if separator else out


def normalize_texts(values: Sequence[str | None] | pl.Series, separator: str = "") -> list[str]:
    """``normalize_expr`` applied to a list of strings (for notebooks and tests)."""
    s = values if isinstance(values, pl.Series) else pl.Series("t", list(values), dtype=pl.String)
    return s.to_frame("t").select(normalize_expr(pl.col("t"), separator)).to_series().to_list()


def decode_utf8(raw: bytes, path: str | Path) -> str:
    """UTF-8 text of a file's bytes (a leading BOM dropped), or a ValueError naming the file and the byte."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                         "re-encode the file as UTF-8") from e
