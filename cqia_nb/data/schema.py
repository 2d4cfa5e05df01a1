"""The record schema every stage reads and writes, and the load errors."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

CONFIGS: tuple[str, ...] = (
    "chinese_traditional", "coig_pc", "douban", "exam", "finance", "human_value", "logi_qa",
    "ruozhiba", "segmentfault", "wiki", "wikihow", "xhs", "zhihu",
)
HUB_REPO = "m-a-p/COIG-CQIA"
# Record fields in file order, with what each must be.
RECORD_FIELDS: dict[str, str] = {
    "instruction": "str", "input": "str", "output": "str", "task_type": "task_type",
    "domain": "list[str]", "metadata": "str", "answer_from": "str", "human_verified": "bool",
    "copyright": "str",
}
#: The frame every stage reads and writes. Documented in the README.
SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,        # "<source_file>:<line>", stable across loads and machines
    "config": pl.String,           # HF config name (one of CONFIGS for the real data)
    "source_file": pl.String,      # path relative to the dataset root (or "hub:<repo>/<config>")
    "line": pl.Int64,              # 1-based line in source_file (row number for the hub)
    "instruction": pl.String,
    "input": pl.String,
    "output": pl.String,
    "task_type_major": pl.List(pl.String),
    "task_type_minor": pl.List(pl.String),
    "domain": pl.List(pl.String),
    "metadata": pl.String,
    "answer_from": pl.String,
    "human_verified": pl.Boolean,
    "copyright": pl.String,
    "extra": pl.String,            # JSON of keys outside the schema ("" when none): kept, not lost
}
ARROW_TYPES: dict[str, pa.DataType] = {
    "line": pa.int64(), "instruction": pa.large_string(), "input": pa.large_string(),
    "output": pa.large_string(), "task_type_major": pa.large_list(pa.large_string()),
    "task_type_minor": pa.large_list(pa.large_string()), "domain": pa.large_list(pa.large_string()),
    "metadata": pa.large_string(), "answer_from": pa.large_string(), "human_verified": pa.bool_(),
    "copyright": pa.large_string(), "extra": pa.large_string(),
}
PROBLEM_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String, "line": pl.Int64, "field": pl.String, "message": pl.String,
    "excerpt": pl.String,
}
FILE_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String, "config": pl.String, "status": pl.String, "bytes": pl.Int64,
    "records_read": pl.Int64, "loaded": pl.Int64, "rejected": pl.Int64, "normalized": pl.Int64,
    "sha256": pl.String,
}
#: Normalisations (missing or null optional fields loaded as empty values), one row per file and field.
NOTE_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String, "field": pl.String, "records": pl.Int64, "first_line": pl.Int64, "message": pl.String,
}
# Bump when parsing or validation changes so stale caches are never reused.
PARSER_VERSION = "5"  # 5: records cached with string views (memory-mapped without a copy)
LFS_PREFIX = b"version https://git-lfs.github.com/spec/"
DATA_SUFFIXES = (".jsonl", ".json")


class DataValidationError(ValueError):
    """Raised by the strict policy; carries the problems frame."""

    def __init__(self, message: str, problems: pl.DataFrame):
        super().__init__(message)
        self.problems = problems


class DataQualityWarning(UserWarning):
    """Issued by the default policy when some lines could not be loaded."""
