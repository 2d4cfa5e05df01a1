"""SafetyBench: JSON, dev by category or test items with a separate answer key."""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any, Sequence

from cqia_nb.build.contamination import detect_format
from cqia_nb.core.text import decode_utf8
from cqia_nb.eval.mc.questions import MCBenchmark, Problems, Question

#: SafetyBench's seven categories with the Chinese names of its paper (display only).
SAFETYBENCH_CATEGORIES: dict[str, str] = {
    "Offensiveness": "攻击冒犯", "Unfairness and Bias": "偏见歧视", "Physical Health": "身体健康",
    "Mental Health": "心理健康", "Illegal Activities": "违法活动", "Ethics and Morality": "伦理道德",
    "Privacy and Property": "隐私财产",
}


def _json_item_offsets(text: str) -> list[int] | dict[str, list[int]]:
    """Character offsets of each item of a top-level list, or of each list item under each key of a
    top-level object (SafetyBench's two layouts); used to name items by line."""
    dec = json.JSONDecoder()
    n = len(text)

    def ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n\ufeff":
            i += 1
        return i

    def items(i: int) -> tuple[list[int], int]:
        offs: list[int] = []
        i = ws(i + 1)  # past '['
        while i < n and text[i] != "]":
            offs.append(i)
            _, i = dec.raw_decode(text, i)
            i = ws(i)
            if i < n and text[i] == ",":
                i = ws(i + 1)
        return offs, i + 1

    i = ws(0)
    if i < n and text[i] == "[":
        return items(i)[0]
    out: dict[str, list[int]] = {}
    if i < n and text[i] == "{":
        i = ws(i + 1)
        while i < n and text[i] != "}":
            key, i = dec.raw_decode(text, i)
            i = ws(ws(i) + 1)  # past ':'
            if i < n and text[i] == "[":
                out[str(key)], i = items(i)
            else:
                _, i = dec.raw_decode(text, i)
            i = ws(i)
            if i < n and text[i] == ",":
                i = ws(i + 1)
    return out


def _check_item(x: Any, has_answer: bool) -> str | None:
    """Why a SafetyBench item is unusable (field: message), or None."""
    if not isinstance(x, dict):
        return f"-: item is {type(x).__name__}, expected an object with question and options"
    if not isinstance(x.get("question"), str) or not x["question"].strip():
        return "question: missing or empty"
    opts = x.get("options")
    if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
        return f"options: {opts!r:.60} is not a list of strings"
    if not 2 <= len(opts) <= 4:
        return f"options: {len(opts)} options; SafetyBench questions have 2 to 4"
    if has_answer:
        a = x.get("answer")
        if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(opts):
            return f"answer: {a!r} is not an option index 0..{len(opts) - 1}"
    return None


def _read_answers(path: Path) -> dict[str, int | None]:
    obj = json.loads(decode_utf8(path.read_bytes(), path))
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected {{\"<id>\": {{\"category\", \"answer\"}}}}, got a {type(obj).__name__}")
    out: dict[str, int | None] = {}
    for k, v in obj.items():
        a = v.get("answer") if isinstance(v, dict) else v
        out[str(k)] = a if isinstance(a, int) and not isinstance(a, bool) else None
    return out


def load_safetybench(data: Path, dev: Path | None, answers: Path | None, subjects: Sequence[str] | None,
                      limit: int | None) -> MCBenchmark:

    problems, notes = Problems(), []
    if data.is_dir():
        cands = sorted(p.name for p in data.glob("*.json"))
        raise ValueError(f"{data}: SafetyBench --data is a JSON file (one of: {', '.join(cands) or 'none here'})")
    if dev is None and (data.parent / "dev_zh.json").is_file():
        dev = data.parent / "dev_zh.json"
    ans = _read_answers(answers) if answers else None

    def read(path: Path, role: str) -> list[Question]:
        rel = path.name
        raw = path.read_bytes()
        if not raw.strip():
            problems.add(rel, None, "", "file", "-", "empty file; expected SafetyBench JSON")
            return []
        try:
            text = decode_utf8(raw, path)
            obj = json.loads(text)
        except ValueError as e:
            line = getattr(e, "lineno", None)
            problems.add(rel, line, "", "file", "-", f"malformed JSON ({getattr(e, 'msg', e)}); fix the file")
            return []
        fmt, note = detect_format(path)
        try:
            offs = _json_item_offsets(text)
        except (ValueError, IndexError):  # an unusual layout: items are still named by index
            offs = {}
        nl = [i for i, c in enumerate(text) if c == "\n"]

        def line_of(off: int | None) -> int | None:
            return bisect.bisect_right(nl, off - 1) + 1 if off is not None else None

        def off_at(key: str | None, i: int) -> int | None:
            lst = offs.get(key, []) if isinstance(offs, dict) else offs
            return lst[i] if i < len(lst) else None

        if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):   # dev layout
            entries = [(cat, i, x, off_at(cat, i)) for cat, xs in obj.items() for i, x in enumerate(xs)]
        elif isinstance(obj, list):                                                            # test layout
            entries = [(x.get("category") if isinstance(x, dict) else None, i, x, off_at(None, i))
                       for i, x in enumerate(obj)]
            if ans is None and obj and not any(isinstance(x, dict) and "answer" in x for x in obj):
                beside = sorted(p.name for p in path.parent.glob("test_answers_*.json"))
                hint = f" (beside it: {', '.join(beside)})" if beside else ""
                raise ValueError(f"{path}: a SafetyBench test file without answers; pass its answer key "
                                 f"(--answers FILE / answers=){hint}")
        else:
            problems.add(rel, None, "", "file", "-", f"not SafetyBench JSON ({note or fmt}); expected "
                         "{category: [{question, options, answer}]} or [{id, question, options, category}]")
            return []
        out: list[Question] = []
        seen: set[str] = set()
        rows_seen: dict[str, int] = {}
        for cat, i, x, off in entries:
            line = line_of(off)
            rid = str(x.get("id", f"{cat}/{i}")) if isinstance(x, dict) else f"{cat}/{i}"
            cat = str(cat) if cat is not None else ""
            if subjects and cat not in subjects:
                continue
            if limit is not None and role == "question":
                if rows_seen.get(cat, 0) >= limit:
                    continue
                rows_seen[cat] = rows_seen.get(cat, 0) + 1
            from_key = ans is not None and isinstance(obj, list)
            bad = _check_item(x, not from_key)
            if not bad and not cat:
                bad = "category: missing"
            if not bad and rid in seen:
                bad = f"id: duplicate id {rid!r}"
            answer = x.get("answer") if isinstance(x, dict) else None
            if not bad and from_key:
                if rid not in ans:
                    bad = f"answer: id {rid!r} is not in {answers.name}"
                elif ans[rid] is None or not 0 <= ans[rid] < len(x["options"]):
                    bad = f"answer: {answers.name} gives {ans[rid]!r}, not an option index 0..{len(x['options']) - 1}"
                else:
                    answer = ans[rid]
            if bad:
                fld, msg = bad.split(": ", 1)
                problems.add(rel, line, rid, role, fld, msg)
                continue
            seen.add(rid)
            if cat not in SAFETYBENCH_CATEGORIES:
                notes.append(f"{rel}:{rid}: category {cat!r} is not one of SafetyBench's seven")
            out.append(Question(id=f"{rel}:{rid}", benchmark="safetybench", subject=cat,
                                subject_zh=SAFETYBENCH_CATEGORIES.get(cat, cat), category=cat,
                                question=x["question"], options=tuple(x["options"]), answer=int(answer),
                                file=rel, line=line or 0, categories=(cat,)))
        return out

    questions = read(data, "question")
    if ans is not None:
        extra = len(set(ans) - {q.id.split(":", 1)[1] for q in questions})
        if extra and not subjects and limit is None:
            notes.append(f"{answers.name}: {extra} answers for ids not in {data.name} (ignored)")
    dev_q: dict[str, list[Question]] = {}
    if dev is not None and dev.is_file():
        for q in read(dev, "shot"):
            dev_q.setdefault(q.subject, []).append(q)
    subs = sorted({q.subject for q in questions})
    return MCBenchmark("safetybench", questions, dev_q, problems.frame(), {s: data for s in subs},
                       {s: dev for s in dev_q} if dev else {}, notes, str(data))
