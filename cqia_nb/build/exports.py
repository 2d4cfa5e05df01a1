"""Write a build's outputs in the formats trainers read, each reloadable to the same records.

One call per format, all from the same target frame (``subsets.TARGET_COLUMNS``: record fields,
``subset``, ``split``, ``sample``, ``messages``, ``n_tokens``, ``truncated``):

==================  =================================================================================
``export_jsonl``    ``jsonl/<target>/{train,validation}.jsonl``: the record columns (all but
                    ``messages``, which is derived), one object per line
``export_parquet``  ``parquet/<target>.parquet``: the same columns, both splits (``split`` column)
``export_hf``       ``hf/<target>/``: ``datasets.DatasetDict`` (train/validation) via ``save_to_disk``,
                    all columns including ``messages``; reload with ``datasets.load_from_disk``
``export_trl``      ``trl/<target>/{train,validation}.jsonl``: ``{"messages": [{role, content}]}``
                    (TRL's conversational format for ``SFTTrainer``)
``export_llamafactory``  ``llamafactory/<target>.{alpaca,sharegpt}.{train,validation}.json`` and
                    ``llamafactory/dataset_info.json`` (entries ``<target>_alpaca``,
                    ``<target>_alpaca_validation``, ``<target>_sharegpt``, ...): alpaca records
                    ``{instruction, input, output[, system]}``, sharegpt records
                    ``{conversations: [{from: human|gpt, value}][, system]}``
``write_card``      ``README.md``: a dataset card (sources, filters with counts, contamination,
                    spec, seed, token statistics, file hashes) with ``configs:`` front matter
==================  =================================================================================

Bytes are deterministic: JSON with a fixed key order (the column order), ``ensure_ascii=False``,
compact separators, ``\\n`` line ends; U+2028, U+2029 and U+0085 are written as ``\\u`` escapes
so that no line-splitting reader (Python's ``str.splitlines``) can break a record; Parquet without
timestamps; HF datasets with a content-derived fingerprint instead of a random one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from cqia_nb.build.formatting import token_stats
from cqia_nb.core.atomic import staged_folder

SPLITS = ("train", "validation")
_LINE_BREAKS = ("\u2028", "\u2029", "\u0085")
MANIFEST = "build.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _splits(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """(split, rows) for the splits present, train first; a frame without ``split`` is all train."""
    if "split" not in frame.columns:
        return [("train", frame)]
    out = []
    for s in SPLITS:
        part = frame.filter(pl.col("split") == s)
        if part.height or s == "train":
            out.append((s, part))
    others = sorted(set(frame["split"].unique().to_list()) - set(SPLITS))
    if others:
        raise ValueError(f"unknown split value(s) {others}; splits are {SPLITS}")
    return out


def json_lines(frame: pl.DataFrame) -> list[str]:
    """One compact JSON object per row, keys in column order (see the module docstring)."""
    if frame.height == 0:
        return []
    s = frame.select(pl.struct(pl.all()).struct.json_encode().alias("j")).to_series()
    for ch in _LINE_BREAKS:
        s = s.str.replace_all(ch, f"\\u{ord(ch):04x}", literal=True)
    return s.to_list()


def _write_lines(path: Path, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
    return path


def _write_json_array(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        if not lines:
            f.write("[]\n")
        else:
            f.write("[\n")
            f.write(",\n".join(lines))
            f.write("\n]\n")
    return path


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8", newline="\n")
    return path


def export_jsonl(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir) / "jsonl" / name
    return [_write_lines(out / f"{s}.jsonl", json_lines(record_frame(part))) for s, part in _splits(frame)]


def read_jsonl(path: str | Path, schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """A file written by ``export_jsonl`` (or ``export_trl``), with the given or inferred schema."""
    p = Path(path)
    if p.stat().st_size == 0:
        return pl.DataFrame(schema=schema)
    return pl.read_ndjson(p, schema=schema)


def export_parquet(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    path = Path(out_dir) / "parquet" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    record_frame(frame).write_parquet(path, compression="zstd", statistics=False)
    return [path]


def _fingerprint(name: str, split: str, part: pl.DataFrame) -> str:
    """A content-derived ``datasets`` fingerprint (its default is random, which would change the
    bytes of state.json on every run): SHA-256 of the rows' ids, repeat numbers, token counts and
    text lengths (a cache key for ``datasets``, not a checksum: the card lists the files' SHA-256)."""
    h = hashlib.sha256(f"{name}\x1f{split}\x1f{part.height}\x1f".encode())
    cols = [c for c in ("record_id", "sample", "n_tokens", "truncated") if c in part.columns]
    key = part.select(pl.concat_str([pl.col(c).cast(pl.String) for c in cols]
                                    + [pl.col(c).str.len_bytes().cast(pl.String)
                                       for c in ("instruction", "input", "output") if c in part.columns],
                                    separator="\x1f").str.join("\n")).item() if part.height and cols else ""
    h.update((key or "").encode("utf-8"))
    return h.hexdigest()[:16]


def record_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The columns of the jsonl and parquet exports: everything but ``messages`` (derived from
    instruction/input/output and the build's system prompt; the hf and trl exports carry it)."""
    return frame.drop([c for c in ("messages",) if c in frame.columns])


def export_hf(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    """``DatasetDict`` saved with ``save_to_disk`` (one shard per split, deterministic bytes)."""
    import datasets
    from datasets.table import InMemoryTable

    path = Path(out_dir) / "hf" / name
    splits = {}
    for s, part in _splits(frame):
        fp = _fingerprint(name, s, part)
        splits[s] = datasets.Dataset(InMemoryTable(part.to_arrow()), split=datasets.NamedSplit(s), fingerprint=fp)
    dd = datasets.DatasetDict(splits)
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        if path.exists():
            shutil.rmtree(path)
        dd.save_to_disk(str(path), num_shards={s: 1 for s in splits})
    finally:
        if was:
            datasets.enable_progress_bars()
    return sorted(p for p in path.rglob("*") if p.is_file())


def read_hf(path: str | Path) -> dict[str, pl.DataFrame]:
    """``datasets.load_from_disk`` -> {split: polars frame}."""
    import datasets

    dd = datasets.load_from_disk(str(path))
    return {s: pl.from_arrow(dd[s].data.table) for s in dd}  # type: ignore[misc]


def trl_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("messages")


def export_trl(frame: pl.DataFrame, name: str, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir) / "trl" / name
    return [_write_lines(out / f"{s}.jsonl", json_lines(trl_frame(part))) for s, part in _splits(frame)]


def _system_of(frame: pl.DataFrame) -> pl.Expr | None:
    """The system prompt column from ``messages`` when the build set one."""
    if frame.height == 0:
        return None
    first = frame["messages"].list.first().struct.field("role")
    if (first == "system").any():
        return (pl.col("messages").list.first().struct.field("content")).alias("system")
    return None


def alpaca_frame(frame: pl.DataFrame) -> pl.DataFrame:
    cols: list[pl.Expr] = [pl.col("instruction").fill_null(""), pl.col("input").fill_null(""),
                           pl.col("output").fill_null("")]
    sys_expr = _system_of(frame)
    if sys_expr is not None:
        cols.append(sys_expr)
    return frame.select(cols)


def sharegpt_frame(frame: pl.DataFrame) -> pl.DataFrame:
    conv = (pl.col("messages").list.eval(
        pl.struct(pl.element().struct.field("role").replace_strict({"user": "human", "assistant": "gpt",
                                                                    "system": "system"}).alias("from"),
                  pl.element().struct.field("content").alias("value")))
        .list.filter(pl.element().struct.field("from") != "system").alias("conversations"))
    cols = [conv]
    sys_expr = _system_of(frame)
    if sys_expr is not None:
        cols.append(sys_expr)
    return frame.select(cols)


def llamafactory_entries(name: str, splits: Iterable[str], system: bool) -> dict[str, Any]:
    """``dataset_info.json`` entries for one target (alpaca and sharegpt, per split)."""
    out: dict[str, Any] = {}
    for s in splits:
        suffix = "" if s == "train" else f"_{s}"
        alpaca_cols = {"prompt": "instruction", "query": "input", "response": "output"}
        share_cols = {"messages": "conversations"}
        if system:
            alpaca_cols["system"] = "system"
            share_cols["system"] = "system"
        out[f"{name}_alpaca{suffix}"] = {"file_name": f"{name}.alpaca.{s}.json", "formatting": "alpaca",
                                         "columns": alpaca_cols}
        out[f"{name}_sharegpt{suffix}"] = {"file_name": f"{name}.sharegpt.{s}.json", "formatting": "sharegpt",
                                           "columns": share_cols,
                                           "tags": {"role_tag": "from", "content_tag": "value",
                                                    "user_tag": "human", "assistant_tag": "gpt"}}
    return out


def export_llamafactory(targets: dict[str, pl.DataFrame], out_dir: str | Path) -> list[Path]:
    """Alpaca and sharegpt files for every target and one ``dataset_info.json`` naming them all."""
    out = Path(out_dir) / "llamafactory"
    paths: list[Path] = []
    info: dict[str, Any] = {}
    for name, frame in targets.items():
        present = []
        system = _system_of(frame) is not None
        for s, part in _splits(frame):
            present.append(s)
            paths.append(_write_json_array(out / f"{name}.alpaca.{s}.json", json_lines(alpaca_frame(part))))
            paths.append(_write_json_array(out / f"{name}.sharegpt.{s}.json", json_lines(sharegpt_frame(part))))
        info.update(llamafactory_entries(name, present, system))
    paths.append(_write_json(out / "dataset_info.json", info))
    return paths


def read_llamafactory(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        s = "" if v is None else (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else
                                  f"{v:.4g}" if isinstance(v, float) else str(v))
        return s.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _definition(t: Any) -> str:
    spec = t.spec
    if t.kind == "mixture":
        parts = ", ".join(f"{p.subset} {p.ratio:g}" if p.ratio is not None else f"{p.subset} {p.tokens:,} tok"
                          for p in spec.parts)
        extra = (f"size {spec.size:,}" if spec.size else f"total_tokens {spec.total_tokens:,}" if spec.total_tokens
                 else "")
        return f"mixture: {parts}" + (f"; {extra}" if extra else "") + ("; upsampling allowed" if spec.allow_upsample else "")
    d = spec.as_dict()
    d.pop("name", None)
    d.pop("description", None)
    return "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in d.items())


def card_text(build: Any, files: dict[str, str]) -> str:
    """The dataset card of a build (``files``: relative path -> SHA-256 of every other output)."""
    import yaml

    spec = build.spec
    lines: list[str] = []
    configs = []
    for name, t in build.targets.items():
        df = [{"split": s, "path": f"jsonl/{name}/{s}.jsonl"} for s, _ in _splits(t.frame)]
        configs.append({"config_name": name, "data_files": df})
    front = {"language": ["zh"], "pretty_name": f"COIG-CQIA rebuild: {spec.name}",
             "task_categories": ["text-generation"], "tags": ["instruction-tuning", "sft", "coig-cqia"],
             "configs": configs}
    lines += ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).rstrip("\n"), "---", ""]
    lines += [f"# COIG-CQIA subsets and mixtures: `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += ["Rebuilt from COIG-CQIA (m-a-p/COIG-CQIA, arXiv 2403.18058) by cqia-notebooks "
              "(`cqia-nb build`). The upstream dataset card states no licence; check the licence of each source "
              "before redistributing. Evaluation benchmarks are not included.", ""]
    # sources
    inp = build.input
    lines += ["## Sources", "", f"- input: `{inp.source}` ({inp.kind}), {inp.frame.height:,} records"]
    if inp.kind != "filter-output":
        lines.append(f"- loading: {inp.problems:,} problems, {inp.rejected:,} records not loaded")
    lines.append("")
    per_config = inp.frame.group_by("config").agg(pl.len().alias("records"),
                                                  pl.col("source_file").n_unique().alias("files")).sort("config")
    lines += [_md_table(["config", "files", "records"],
                        [[r["config"], int(r["files"]), int(r["records"])] for r in per_config.iter_rows(named=True)]), ""]
    # filters
    lines += ["## Filters applied", ""]
    if inp.steps is not None and inp.steps.height:
        cols = [c for c in ("step", "name", "filter", "kind", "records_in", "kept", "dropped", "changed")
                if c in inp.steps.columns]
        lines += [f"From `steps.csv` of the filter output folder (`{inp.source}`):", "",
                  _md_table(cols, [[(int(v) if isinstance(v, int) else v) for v in r]
                                   for r in inp.steps.select(cols).iter_rows()]), ""]
    else:
        lines += ["None: the input was loaded as it is (no `steps.csv`).", ""]
    # contamination
    lines += ["## Contamination check", ""]
    if build.contamination is not None:
        rep = build.contamination
        lines += [f"Character/word {rep.n}-gram overlap with the evaluation sets (cqia_nb.build.contamination): "
                  f"{build.contamination_note}.", "", rep.index_summary + ".", ""]
        cols = ["eval_set", "items", "items_unchecked", "items_contaminated", "contaminated_share", "ngrams",
                "overlap_ngrams", "training_records"]
        lines += [_md_table(cols, [list(r) for r in rep.eval_sets.select(cols).iter_rows()]), ""]
    else:
        lines += [f"Not run{': ' + build.contamination_note if build.contamination_note else ' (no `contamination:` in the spec)'}.", ""]
    if build.removed is not None and build.removed.height:
        lines += [f"{build.removed.height:,} records removed before building subsets:", "",
                  _md_table(["record_id", "reason"], [[r, x] for r, x in build.removed.select("record_id", "reason")
                                                      .head(50).iter_rows()]), ""]
        if build.removed.height > 50:
            lines += [f"... and {build.removed.height - 50:,} more (see build.json).", ""]
    # formatting
    f = build.format
    fc = f.config
    lines += ["## Formatting", "",
              f"- messages: user = instruction (+ \"\\n\" + input when present), assistant = output; "
              f"system prompt: {json.dumps(fc.system, ensure_ascii=False) if fc.system is not None else 'none'}",
              f"- template: `{fc.template or 'the tokenizer’s own'}`; tokenizer: `{fc.tokenizer}`; "
              f"n_tokens = tokens of the rendered conversation",
              f"- truncation: {f.report.summary()}", ""]
    if f.dropped.height:
        lines += [f"{f.dropped.height:,} records dropped by the length policy (first 20):", "",
                  _md_table(["record_id", "reason"], [list(r) for r in f.dropped.select("record_id", "reason")
                                                      .head(20).iter_rows()]), ""]
    # split + targets
    lines += ["## Outputs", "",
              f"Seed {build.seed}. Validation share {spec.validation:g}, one assignment per record for the whole "
              "build (no record is in two splits), stratified by source file; mixtures draw each part from its "
              "train and validation records in proportion.", ""]
    rows = []
    for name, t in build.targets.items():
        sc = t.split_counts()
        st = token_stats(t.frame["n_tokens"])
        rows.append([name, t.kind, _definition(t), t.frame.height, sc["train"], sc["validation"],
                     t.frame["record_id"].n_unique(), st["tokens"], st["mean"], st["p50"], st["p95"], st["max"]])
    lines += [_md_table(["name", "kind", "definition", "rows", "train", "validation", "distinct", "tokens",
                         "mean", "p50", "p95", "max"], rows), ""]
    for name, t in build.targets.items():
        if t.kind == "mixture":
            lines += [f"Mixture `{name}` parts:", "",
                      _md_table(["subset", "target", "available records", "available tokens", "rows", "distinct",
                                 "tokens", "upsampled"],
                                [[p.subset, p.target, p.available_records, p.available_tokens, p.records, p.distinct,
                                  p.tokens, p.upsampled] for p in t.parts]), ""]
    if build.skipped:
        lines += ["Built-in subsets not written (empty on this input): "
                  + ", ".join(f"`{k}`" for k in build.skipped) + ".", ""]
    lines += ["Formats: `jsonl/<name>/<split>.jsonl` (all columns), `parquet/<name>.parquet`, "
              "`hf/<name>` (`datasets.load_from_disk`), `trl/<name>/<split>.jsonl` (`messages`), "
              "`llamafactory/` (alpaca and sharegpt files + `dataset_info.json`).", ""]
    # spec
    lines += ["## Spec", "", "```yaml", yaml.safe_dump(spec.as_dict(), allow_unicode=True, sort_keys=False).rstrip("\n"),
              "```", "", "Reproduce:", "", "```bash",
              f"cqia-nb build --config {Path(spec.path).as_posix() if spec.path else 'SPEC'} --set seed={build.seed} "
              f"--set input={inp.source} --set out_dir=OUT_DIR", "```", ""]
    lines += ["## Files", "", "SHA-256 of every file of this build except this card:", "", "```"]
    lines += [f"{h}  {p}" for p, h in sorted(files.items())]
    lines += ["```", ""]
    return "\n".join(lines)


def write_card(build: Any, out_dir: str | Path, files: dict[str, str]) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(card_text(build, files), encoding="utf-8", newline="\n")
    return path


def manifest(build: Any) -> dict[str, Any]:
    """What ``build.json`` holds: spec, seed, input, per-target counts, reports."""

    out: dict[str, Any] = {
        "spec": build.spec.as_dict(), "seed": build.seed,
        "input": {"source": build.input.source, "kind": build.input.kind, "records": build.input.frame.height},
        "truncation": build.format.report.as_dict(),
        "dropped_by_length": build.format.dropped.select("record_id", "reason").to_dicts(),
        "targets": {name: {"kind": t.kind, **t.split_counts(), "distinct": t.frame["record_id"].n_unique(),
                           "tokens": token_stats(t.frame["n_tokens"]),
                           **({"parts": [p.__dict__ for p in t.parts]} if t.parts else {})}
                    for name, t in build.targets.items()},
        "skipped": build.skipped,
        "contamination": None,
    }
    if build.contamination is not None:
        out["contamination"] = {"summary": build.contamination_note, "params": build.contamination.params,
                                "eval_sets": build.contamination.eval_sets.to_dicts(),
                                "removed": (build.removed.select("record_id", "reason").to_dicts()
                                            if build.removed is not None else [])}
    elif build.contamination_note:
        out["contamination"] = {"summary": build.contamination_note}
    return out


def export_all(build: Any, out_dir: str | Path, formats: Iterable[str] | None = None,
               timings: dict[str, float] | None = None) -> dict[str, str]:
    """Write every format of the spec (or ``formats``) for every target; returns
    {path relative to out_dir: SHA-256} for all files written, the card included.
    ``timings`` (optional) receives seconds per format.

    The build is written to a temporary folder beside ``out_dir`` and renamed to ``out_dir`` when
    complete: a failure (a full disk, say) leaves ``out_dir`` as it was, and a previous build there
    is replaced whole. A folder holding anything but a previous build is refused."""
    final = Path(out_dir)
    if final.is_dir() and any(final.iterdir()) and not (final / MANIFEST).is_file():
        raise ValueError(f"{final}: not empty and not a previous build (no {MANIFEST}); export_all replaces "
                         "the folder whole: choose a new folder")
    with staged_folder(final) as out:
        return _export_into(build, out, formats, timings)


def _export_into(build: Any, out: Path, formats: Iterable[str] | None,
                 timings: dict[str, float] | None) -> dict[str, str]:
    import time

    formats = tuple(formats or build.spec.exports)
    written: list[Path] = []
    frames = {name: t.frame for name, t in build.targets.items()}
    timings = timings if timings is not None else {}
    per_target = {"jsonl": export_jsonl, "parquet": export_parquet, "hf": export_hf, "trl": export_trl}
    for fmt, fn in per_target.items():
        if fmt in formats:
            t = time.perf_counter()
            for name, frame in frames.items():
                written += fn(frame, name, out)
            timings[fmt] = time.perf_counter() - t
    if "llamafactory" in formats:
        t = time.perf_counter()
        written += export_llamafactory(frames, out)
        timings["llamafactory"] = time.perf_counter() - t
    t = time.perf_counter()
    written.append(_write_json(out / MANIFEST, manifest(build)))
    hashes = {p.relative_to(out).as_posix(): sha256_file(p) for p in written}
    if "card" in formats:
        card = write_card(build, out, hashes)
        hashes[card.relative_to(out).as_posix()] = sha256_file(card)
    timings["manifest+card+hashes"] = time.perf_counter() - t
    return dict(sorted(hashes.items()))
