"""C-Eval and CMMLU: one CSV per subject (the two layouts differ only in their columns)."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

from cqia_nb.core.text import decode_utf8
from cqia_nb.eval.mc.questions import LETTERS, MCBenchmark, Problems, Question, find_beside

_CEVAL_SPLIT_SUFFIX = re.compile(r"_(val|dev|test)$")


def read_ceval_mapping(path: str | Path) -> dict[str, tuple[str, str]]:
    """subject -> (Chinese name, category) from C-Eval's ``subject_mapping.json``."""
    p = Path(path)
    try:
        obj = json.loads(decode_utf8(p.read_bytes(), p))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}:{e.lineno}: malformed JSON ({e.msg}); expected C-Eval's subject_mapping.json") from e
    out = {}
    for k, v in obj.items() if isinstance(obj, dict) else []:
        if not (isinstance(v, list) and len(v) >= 3 and all(isinstance(x, str) for x in v[:3])):
            raise ValueError(f"{p}: entry {k!r} is {v!r}, expected [English name, Chinese name, category]")
        out[k] = (v[1], v[2])
    if not out:
        raise ValueError(f"{p}: no subjects; expected {{subject: [English name, Chinese name, category]}}")
    return out


def read_cmmlu_categories(path: str | Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """subject -> (Chinese name, categories) from CMMLU's ``categories.py``.

    The file is parsed, not run: its top-level assignments ``name_en2zh``, ``subcategories`` and
    ``categories`` must be literals (``ast.literal_eval``); anything else is an error.
    """
    p = Path(path)
    try:
        tree = ast.parse(decode_utf8(p.read_bytes(), p), filename=str(p))
    except SyntaxError as e:
        raise ValueError(f"{p}:{e.lineno}: not valid Python ({e.msg}); expected CMMLU's categories.py") from e
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("name_en2zh", "subcategories", "categories"):
                try:
                    found[name] = ast.literal_eval(node.value)
                except ValueError as e:
                    raise ValueError(f"{p}:{node.lineno}: {name} is not a plain literal ({e}); "
                                     "categories.py is parsed, never executed") from e
    missing = [n for n in ("name_en2zh", "subcategories", "categories") if n not in found]
    if missing:
        raise ValueError(f"{p}: no {', '.join(missing)} dict; expected CMMLU's src/categories.py")
    sub_to_cat: dict[str, list[str]] = {}
    for cat, subs in found["categories"].items():
        for s in subs:
            sub_to_cat.setdefault(s, []).append(cat)
    out = {}
    for subject, zh in found["name_en2zh"].items():
        cats: list[str] = []
        for sc in found["subcategories"].get(subject, []):
            cats.extend(c for c in sub_to_cat.get(sc, []) if c not in cats)
        # upstream order: the discipline first, "China specific" (a cross-cut) after it
        cats.sort(key=lambda c: c == "China specific")
        out[subject] = (zh, tuple(cats) or ("Other",))
    return out


_CSV_LAYOUT = {
    # benchmark: (id column, question column, answer column, example header)
    "ceval": ("id", "question", "answer", "id,question,A,B,C,D,answer[,explanation]"),
    "cmmlu": ("", "Question", "Answer", ",Question,A,B,C,D,Answer"),
}


def _csv_subject(name: str, path: Path) -> str:
    stem = path.stem
    return _CEVAL_SPLIT_SUFFIX.sub("", stem) if name == "ceval" else stem


def _read_csv(name: str, path: Path, rel: str, subject: str, zh: str, cats: tuple[str, ...], role: str,
              problems: Problems, limit: int | None) -> list[Question]:
    id_col, q_col, a_col, example = _CSV_LAYOUT[name]
    try:
        raw = path.read_bytes()
    except OSError as e:
        problems.add(rel, None, "", "file", "-", f"cannot read ({e})")
        return []
    if not raw.strip():
        problems.add(rel, None, "", "file", "-", f"empty file; expected a CSV with header {example}")
        return []
    try:
        text = decode_utf8(raw, path)
    except ValueError as e:
        problems.add(rel, None, "", "file", "-", str(e))
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    out: list[Question] = []
    try:
        header = next(reader)
    except csv.Error as e:
        problems.add(rel, 1, "", "file", "header", f"unreadable CSV header ({e})")
        return []
    need = [q_col, "A", "B", "C", "D", a_col]
    if any(c not in header for c in need) or (name == "cmmlu" and header[:1] != [""]) \
            or (name == "ceval" and id_col not in header):
        problems.add(rel, 1, "", "file", "header",
                     f"header is {','.join(header)!r}; a {name} file needs {example}")
        return []
    col = {c: header.index(c) for c in set(need) | {id_col}}
    seen = 0
    ids_seen: dict[str, int] = {}
    while True:
        if limit is not None and seen >= limit:
            break
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.add(rel, start, "", role, "-", f"malformed CSV from this line on ({e}); the rest of the "
                         "file could not be read: fix the quoting")
            break
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line holds no question
        end = reader.line_num
        seen += 1
        rid = row[col[id_col]].strip() if len(row) > col[id_col] else ""
        item = rid or f"line {start}"
        if len(row) != len(header):
            span = f" (the row runs to line {end}: an unbalanced quote?)" if end > start else ""
            problems.add(rel, start, item, role, "-",
                         f"{len(row)} fields, the header has {len(header)} ({','.join(header)}){span}")
            continue
        ans = row[col[a_col]].strip()
        if len(ans) != 1 or ans not in LETTERS:
            msg = ("no answer (C-Eval test answers are not public: evaluate the val split)" if not ans
                   else f"answer {row[col[a_col]]!r} is not one of A, B, C, D")
            problems.add(rel, start, item, role, a_col, msg)
            continue
        q = row[col[q_col]]
        if not q.strip():
            problems.add(rel, start, item, role, q_col, "empty question")
            continue
        if item in ids_seen:
            problems.add(rel, start, item, role, id_col or "(index)",
                         f"duplicate id {item!r} (first on line {ids_seen[item]}); ids must be unique in a file")
            continue
        ids_seen[item] = start
        out.append(Question(id=f"{rel}:{item}", benchmark=name, subject=subject, subject_zh=zh, category=cats[0],
                            question=q, options=tuple(row[col[c]] for c in "ABCD"), answer=LETTERS.index(ans),
                            file=rel, line=start, categories=cats))
    return out


def _csv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv"
                  and not p.name.startswith("."))


def _resolve_csv_data(name: str, data: Path) -> Path:
    """The folder (or file) of evaluation CSVs: a benchmark root holding val/ or test/ is accepted."""
    if data.is_file():
        return data
    if _csv_files(data):
        return data
    for sub in (("val", "test") if name == "ceval" else ("test", "val")):
        if (data / sub).is_dir() and _csv_files(data / sub):
            return data / sub
    raise ValueError(f"{data}: no CSV files; point --data at a folder of {name} CSVs "
                     f"(e.g. ../shared/benchmarks/{name}/{'val' if name == 'ceval' else 'test'})")


def load_csv_benchmark(name: str, data: Path, dev: Path | None, subjects: Sequence[str] | None,
                        limit: int | None, mapping: Path | None) -> MCBenchmark:
    problems, notes = Problems(), []
    data = _resolve_csv_data(name, data)
    paths = [data] if data.is_file() else _csv_files(data)
    root = data.parent if data.is_file() else data
    if dev is None:
        # the dev folder beside the data; evaluating dev itself, its own rows (never a question's own)
        dev = root if root.name == "dev" else (root.parent / "dev" if (root.parent / "dev").is_dir() else None)
    map_name = "subject_mapping.json" if name == "ceval" else "categories.py"
    mpath = Path(mapping) if mapping else find_beside([root] + ([dev] if dev else []), map_name)
    meta: dict[str, tuple[str, tuple[str, ...]]] = {}
    if mpath is not None:
        if name == "ceval":
            meta = {k: (zh, (cat,)) for k, (zh, cat) in read_ceval_mapping(mpath).items()}
        else:
            meta = read_cmmlu_categories(mpath)
    else:
        notes.append(f"no {map_name} beside {root} or one folder up: subjects are named by their file and "
                     "counted in category 'unknown' (pass mapping= / put the upstream file there)")
    by_subject = {_csv_subject(name, p): p for p in paths}
    if subjects:
        unknown = sorted(set(subjects) - set(by_subject))
        if unknown:
            raise ValueError(f"subjects not found in {data}: {', '.join(unknown)}; available: "
                             f"{', '.join(sorted(by_subject))}")
        by_subject = {s: by_subject[s] for s in subjects}
    questions: list[Question] = []
    dev_q: dict[str, list[Question]] = {}
    dev_files: dict[str, Path] = {}
    for subject, p in sorted(by_subject.items()):
        if subject not in meta and mpath is not None:
            notes.append(f"{p.name}: subject {subject!r} is not in {mpath.name}; category 'unknown'")
        zh, cats = meta.get(subject, (subject, ("unknown",)))
        rel = p.relative_to(root).as_posix() if not data.is_file() else p.name
        questions += _read_csv(name, p, rel, subject, zh, cats, "question", problems, limit)
        if dev is not None:
            dp = dev / (f"{subject}_dev.csv" if name == "ceval" else f"{subject}.csv")
            if dp.is_file():
                dev_files[subject] = dp
                dev_q[subject] = _read_csv(name, dp, f"{dev.name}/{dp.name}", subject, zh, cats, "shot",
                                           problems, None)
    return MCBenchmark(name, questions, dev_q, problems.frame(), dict(sorted(by_subject.items())), dev_files,
                       notes, str(data))
