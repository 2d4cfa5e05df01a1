"""Dataset card parsing and card-vs-copy reconciliation."""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl
import pytest

import cqia_nb.data as data
import cqia_nb.data.card as card

CARD = """---
configs:
- config_name: zhihu
  data_files: zhihu/*
---
<details>
<summary><b>社交媒体&论坛</b></summary>

| 类别 | 数量 | 来源 | 构造方式 |
| ---- | ---- | ---- | ---- |
| 知乎 | 3 | [link](https://www.zhihu.com/) | 筛选 |
| 豆瓣 | 1,200 | x | y |
| **总量** | **1203** | - | - |

</details>
"""


def test_parse_card_tables_skips_headers_and_totals(tmp_path: Path):
    (tmp_path / "README.md").write_text(CARD, encoding="utf-8")
    t = card.parse_card_tables(tmp_path / "README.md")
    assert t.select("group", "category", "card_count").rows() == [
        ("社交媒体&论坛", "知乎", 3), ("社交媒体&论坛", "豆瓣", 1200)]


def _files(rows):
    return pl.DataFrame(rows, schema=data.FILE_SCHEMA, orient="row")


def test_compare_explains_each_kind_of_difference():
    cardt = pl.DataFrame([("g", "A", 2, "", ""), ("g", "B", 5, "", ""), ("g", "C", 7, "", ""),
                          ("g", "D", 4, "", ""), ("g", "E", 1, "", "")], schema=card.CARD_SCHEMA, orient="row")
    files = _files([("a/x.jsonl", "a", "ok", 1, 2, 2, 0, 0, ""), ("b/x.jsonl", "b", "ok", 1, 3, 3, 0, 0, ""),
                    ("c/x.jsonl", "c", "lfs-pointer", 1, 0, 0, 0, 0, ""), ("r/x.jsonl", "r", "ok", 1, 9, 9, 0, 0, "")])
    mapping = {"A": ["a/*"], "B": ["b/x.jsonl", "b/gone.jsonl"], "C": ["c/x.jsonl"], "D": ["d/x.jsonl"]}
    out = {r["category"]: r for r in card.compare_with_card(cardt, files, mapping).iter_rows(named=True)}
    assert out["A"]["explanation"] == "matches"
    assert out["B"]["difference"] == -2 and "2 fewer" in out["B"]["explanation"]
    assert "absent: b/gone.jsonl" in out["B"]["explanation"]
    assert "Git LFS pointer only" in out["C"]["explanation"]
    assert "file absent from this copy" in out["D"]["explanation"]
    assert "no file mapping" in out["E"]["explanation"]
    assert out["r"]["group"] == "(not on the card)" and out["r"]["copy_count"] == 9


def test_every_card_category_has_a_mapping():
    readme = data.bundled_path() / "README.md"
    if not readme.exists():
        pytest.skip("bundled data not generated")
    cats = set(card.parse_card_tables(readme)["category"])
    assert cats <= set(card.card_file_map())


@pytest.mark.realdata
def test_real_card_reconciliation(real_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = data.load(source=str(real_data))
    cardt = card.parse_card_tables(real_data / "README.md")
    assert cardt.height == 22 and cardt["card_count"].sum() == 48_375  # the paper's total
    assert set(cardt["category"]) == set(card.card_file_map())
    cmp = {r["category"]: r for r in card.compare_with_card(cardt, res.files).iter_rows(named=True)}
    assert cmp["豆瓣"]["card_count"] == 3132 and cmp["豆瓣"]["copy_count"] == 3086
    assert "file absent" in cmp["中国大百科全书"]["explanation"]
    assert "Git LFS pointer only" in cmp["wikiHow中文"]["explanation"]
    assert "absent: zhihu/zhihu_score9.0-10_clean_v10.jsonl" in cmp["知乎"]["explanation"]
    assert cmp["ruozhiba"]["copy_count"] == 240 and cmp["ruozhiba"]["card_count"] is None
    total = sum(r["copy_count"] for r in cmp.values())
    assert total == res.n_loaded  # every loaded record sits in exactly one row
