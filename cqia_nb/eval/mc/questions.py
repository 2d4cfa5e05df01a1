"""Multiple-choice questions as read from the benchmark files, and every problem met reading them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import polars as pl

LETTERS = "ABCD"
BENCHMARKS = ("ceval", "cmmlu", "safetybench")
#: One row per question (or file) that could not be evaluated, or per dev row unusable as a shot.
PROBLEM_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String, "line": pl.Int64, "item": pl.String, "role": pl.String,  # role: question / shot / file
    "field": pl.String, "message": pl.String,
}


@dataclass(frozen=True)
class Question:
    """One multiple-choice question. ``answer`` is the option index (0 = A)."""

    id: str                     # "<file>:<row id>", unique within a benchmark
    benchmark: str
    subject: str                # C-Eval / CMMLU subject key; SafetyBench category
    subject_zh: str             # the name the prompt uses
    category: str               # primary category
    question: str
    options: tuple[str, ...]
    answer: int
    file: str                   # as given (relative to the data folder)
    line: int                   # 1-based line of the row (JSON: of the item's opening brace)
    categories: tuple[str, ...] = ()   # every category the subject counts in (CMMLU: may be 2)

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]


@dataclass
class MCBenchmark:
    """Questions of one benchmark plus their few-shot pools and every problem met reading them."""

    name: str
    questions: list[Question]
    dev: dict[str, list[Question]]          # subject -> dev rows in file order (few-shot pool)
    problems: pl.DataFrame                  # PROBLEM_SCHEMA
    files: dict[str, Path]                  # subject -> evaluation file
    dev_files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data: str = ""

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self):
        return iter(self.questions)

    @property
    def n_excluded(self) -> int:
        """Questions read but not evaluable (each is a row of ``problems`` with role "question")."""
        return int((self.problems["role"] == "question").sum()) if self.problems.height else 0

    @property
    def n_read(self) -> int:
        return len(self.questions) + self.n_excluded

    @property
    def subjects(self) -> list[str]:
        return sorted({q.subject for q in self.questions})

    def frame(self) -> pl.DataFrame:
        """The questions as a polars frame (options as a list column)."""
        return pl.DataFrame(
            [{"id": q.id, "subject": q.subject, "subject_zh": q.subject_zh, "category": q.category,
              "question": q.question, "options": list(q.options), "answer": q.answer_letter,
              "file": q.file, "line": q.line} for q in self.questions],
            schema={"id": pl.String, "subject": pl.String, "subject_zh": pl.String, "category": pl.String,
                    "question": pl.String, "options": pl.List(pl.String), "answer": pl.String,
                    "file": pl.String, "line": pl.Int64})

    def summary(self) -> str:
        files_bad = int((self.problems["role"] == "file").sum()) if self.problems.height else 0
        return (f"{self.name}: {self.n_read} questions read in {len(self.files)} subjects, {len(self.questions)} "
                f"evaluable, {self.n_excluded} excluded (problems)"
                + (f", {files_bad} unreadable files" if files_bad else ""))


class Problems:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, file: str, line: int | None, item: str, role: str, fld: str, message: str) -> None:
        self.rows.append((file, line, item, role, fld, message))

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=PROBLEM_SCHEMA, orient="row")


def format_problems(problems: pl.DataFrame, limit: int | None = 20) -> str:
    """One ``file:line: item: message`` line per problem (the first ``limit``, then a count)."""
    lines = []
    rows = problems.iter_rows(named=True)
    for i, r in enumerate(rows):
        if limit is not None and i >= limit:
            lines.append(f"... and {problems.height - limit} more problems")
            break
        where = f"{r['file']}:{r['line']}" if r["line"] is not None else r["file"]
        item = f" {r['item']}" if r["item"] else ""
        lines.append(f"{where}:{item} [{r['role']}] {r['field']}: {r['message']}")
    return "\n".join(lines)


def find_beside(paths: Sequence[Path], name: str) -> Path | None:
    for p in paths:
        for d in (p if p.is_dir() else p.parent, (p if p.is_dir() else p.parent).parent):
            if (d / name).is_file():
                return d / name
    return None
