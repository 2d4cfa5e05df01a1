"""Loading a benchmark from the files a user points at."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cqia_nb.eval.mc.csvbench import load_csv_benchmark
from cqia_nb.eval.mc.questions import BENCHMARKS, MCBenchmark
from cqia_nb.eval.mc.safetybench import load_safetybench


def load_benchmark(name: str, data_dir: str | Path, dev_dir: str | Path | None = None,
                   answers: str | Path | None = None, *, subjects: Sequence[str] | None = None,
                   limit: int | None = None, mapping: str | Path | None = None) -> MCBenchmark:
    """Read a benchmark's questions (and few-shot pool) from its upstream files.

    ``name``: "ceval", "cmmlu" or "safetybench". ``data_dir``: a folder of per-subject CSVs (or one
    CSV; a benchmark root with ``val/`` / ``test/`` works too), or SafetyBench's JSON file.
    ``dev_dir``: the few-shot pool (default: a ``dev`` folder beside ``data_dir``; SafetyBench:
    ``dev_zh.json`` beside the file). ``answers``: SafetyBench's answer key for a test file.
    ``subjects`` restricts to some subjects (SafetyBench: categories); ``limit`` keeps the first
    ``limit`` questions of each. ``mapping``: ``subject_mapping.json`` / ``categories.py`` when it is
    not beside the data. Bad rows never stop the read: see ``MCBenchmark.problems``.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    data = Path(data_dir).expanduser()
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such file or folder (e.g. ../shared/benchmarks/{name})")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    dev = Path(dev_dir).expanduser() if dev_dir is not None else None
    if dev is not None and not dev.exists():
        raise FileNotFoundError(f"{dev}: no such dev file or folder (the few-shot examples)")
    ans = Path(answers).expanduser() if answers is not None else None
    if ans is not None and name != "safetybench":
        raise ValueError("answers= is for SafetyBench test files; C-Eval and CMMLU CSVs carry their answers")
    if ans is not None and not ans.is_file():
        raise FileNotFoundError(f"{ans}: no such answers file (SafetyBench test_answers_zh*.json)")
    if name == "safetybench":
        return load_safetybench(data, dev, ans, subjects, limit)
    return load_csv_benchmark(name, data, dev, subjects, limit, Path(mapping) if mapping else None)


def standard_benchmarks(root: str | Path, limit: int | None = None,
                        names: Sequence[str] = BENCHMARKS) -> dict[str, MCBenchmark]:
    """The splits notebook 05 evaluates, from a folder laid out like ``../shared/benchmarks``
    (or ``data/benchmarks-mini``): C-Eval ``val/``, CMMLU ``test/`` (each with ``dev/`` beside as
    the few-shot pool) and SafetyBench ``test_zh*.json`` with its answers file (else ``dev_zh.json``).
    A benchmark whose folder is missing is an error naming it; pass ``names`` to choose."""
    base = Path(root).expanduser()
    out: dict[str, MCBenchmark] = {}
    for name in names:
        folder = base / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no {name} folder under {base}; pass names= without it, or point "
                                    "root at a folder holding ceval/, cmmlu/ and safetybench/")
        if name == "safetybench":
            tests = sorted(folder.glob("test_zh*.json"), key=lambda p: ("subset" not in p.name, p.name))
            tests = [p for p in tests if not p.name.startswith("test_answers")]
            answers = [folder / p.name.replace("test_", "test_answers_", 1) for p in tests]
            pick = next(((t, a) for t, a in zip(tests, answers) if a.is_file()), None)
            out[name] = (load_benchmark(name, pick[0], answers=pick[1], limit=limit) if pick
                         else load_benchmark(name, folder / "dev_zh.json", limit=limit))
        else:
            split = folder / ("val" if name == "ceval" else "test")
            out[name] = load_benchmark(name, split if split.is_dir() else folder, limit=limit)
    return out
