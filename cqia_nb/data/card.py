"""Read the dataset card's tables and reconcile them with what a copy actually holds.

The card (``README.md`` of m-a-p/COIG-CQIA) states counts per category in ``<details>`` tables;
a copy may differ (files absent, Git LFS pointers, different versions). Reproducing the card is a
measurement: ``compare_with_card`` says, per category, what matches and why what differs does.
"""

from __future__ import annotations

import fnmatch
import re
from importlib import resources
from pathlib import Path

import polars as pl

_GROUP = re.compile(r"<summary>\s*<b>(.*?)</b>\s*</summary>(.*?)</details>", re.S)
CARD_SCHEMA = {"group": pl.String, "category": pl.String, "card_count": pl.Int64,
               "source": pl.String, "construction": pl.String}


def parse_card_tables(readme: str | Path) -> pl.DataFrame:
    """One row per category of the card's tables (total rows left out)."""
    text = Path(readme).read_text(encoding="utf-8")
    rows = []
    for group, body in _GROUP.findall(text):
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or not re.fullmatch(r"[\d,]+", cells[1]):
                continue  # header, separator, or the **总量** total row
            rows.append((group.strip(), cells[0], int(cells[1].replace(",", "")),
                         cells[2] if len(cells) > 2 else "", cells[3] if len(cells) > 3 else ""))
    return pl.DataFrame(rows, schema=CARD_SCHEMA, orient="row")


def card_file_map() -> dict[str, list[str]]:
    """Our mapping of card categories to file globs (``resources/card_file_map.yaml``)."""
    import yaml

    text = resources.files("cqia_nb").joinpath("resources/card_file_map.yaml").read_text(encoding="utf-8")
    return {str(k): list(v) for k, v in yaml.safe_load(text).items()}


def compare_with_card(card: pl.DataFrame, files: pl.DataFrame,
                      mapping: dict[str, list[str]] | None = None) -> pl.DataFrame:
    """Card count vs loaded records per category, with the reason for every difference.

    ``files`` is ``LoadResult.files``. Files that no category claims get rows of their own
    (category = their config, no card count), so every loaded record appears once.
    """
    mapping = mapping if mapping is not None else card_file_map()
    frows = files.to_dicts()
    claimed: set[str] = set()
    rows = []
    for r in card.iter_rows(named=True):
        globs = mapping.get(r["category"], [])
        hit = [f for f in frows if any(fnmatch.fnmatchcase(f["file"], g) for g in globs)]
        claimed.update(f["file"] for f in hit)
        copy = sum(f["loaded"] for f in hit)
        lfs = [f["file"] for f in hit if f["status"] == "lfs-pointer"]
        bad = [f["file"] for f in hit if f["status"] not in ("ok", "lfs-pointer")]
        diff = copy - r["card_count"]
        absent = [g for g in globs if not any(c in g for c in "*?[") and g not in {f["file"] for f in hit}]
        if not globs:
            why = "no file mapping for this category (add it to card_file_map.yaml)"
        elif not hit:
            why = f"file absent from this copy ({', '.join(globs)})"
        elif lfs and copy == 0:
            why = f"Git LFS pointer only ({', '.join(lfs)}): run `git lfs pull`"
        elif diff == 0:
            why = "matches"
        else:
            parts = [f"copy holds {abs(diff):,} {'fewer' if diff < 0 else 'more'} records than the card"]
            if absent:
                parts.append(f"absent: {', '.join(absent)}")
            if lfs:
                parts.append(f"LFS pointer not loaded: {', '.join(lfs)}")
            if bad:
                parts.append(f"unreadable: {', '.join(bad)}")
            why = "; ".join(parts)
        rows.append((r["group"], r["category"], r["card_count"], copy, diff, len(hit),
                     ", ".join(f["file"] for f in hit), why))
    for f in frows:
        if f["file"] not in claimed and f["loaded"]:
            rows.append(("(not on the card)", f["config"], None, f["loaded"], None, 1, f["file"],
                         "in the copy, in none of the card's tables"))
    schema = {"group": pl.String, "category": pl.String, "card_count": pl.Int64, "copy_count": pl.Int64,
              "difference": pl.Int64, "files": pl.Int64, "file_list": pl.String, "explanation": pl.String}
    out = pl.DataFrame(rows, schema=schema, orient="row")
    # Files outside any category, aggregated per config (ruozhiba on the real card).
    extra = out.filter(pl.col("group") == "(not on the card)")
    if extra.height:
        extra = extra.group_by("group", "category").agg(
            pl.col("card_count").first(), pl.col("copy_count").sum(), pl.col("difference").first(),
            pl.col("files").sum(), pl.col("file_list").str.join(", "), pl.col("explanation").first()
        ).sort("category")
        out = pl.concat([out.filter(pl.col("group") != "(not on the card)"), extra.select(out.columns)])
    return out


def card_summary(comparison: pl.DataFrame) -> str:
    """Two lines: card total vs copy total, and how many categories match."""
    card_total = int(comparison["card_count"].sum() or 0)
    copy_total = int(comparison["copy_count"].sum() or 0)
    on_card = comparison.filter(pl.col("card_count").is_not_null())
    matched = int((on_card["explanation"] == "matches").sum())
    return (f"card: {card_total:,} records in {on_card.height} categories; this copy: {copy_total:,} records\n"
            f"{matched} categories match, {on_card.height - matched} differ "
            f"({(comparison['card_count'].is_null()).sum()} extra group(s) not on the card)")
