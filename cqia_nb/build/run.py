"""Running a build spec: input, subsets, mixtures, split, chat formatting, contamination check."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from cqia_nb.build import contamination as C
from cqia_nb.build import formatting
from cqia_nb.build.mixture import PartReport, assign_split, build_mixture
from cqia_nb.build.spec import BuildSpec, MixtureSpec, SpecError, SubsetSpec, builtin_subsets
from cqia_nb.build.subsets import add_derived, select
from cqia_nb.data.load import LoadConfig, load
from cqia_nb.data.schema import SCHEMA
from cqia_nb.core.parquet import parquet_files
from cqia_nb.filter.outputs import read_kept
from cqia_nb.filter.streaming import Source


@dataclass
class InputData:
    frame: pl.DataFrame
    source: str                       # as given
    kind: str                         # "bundled", "dataset", "filter-output"
    steps: pl.DataFrame | None = None  # steps.csv of a filter output folder
    files: pl.DataFrame | None = None  # LoadResult.files for a dataset folder
    problems: int = 0
    rejected: int = 0
    paths: list[Path] | None = None    # the parquet files of a parquet input


def parquet_input(source: str) -> InputData | None:
    """The parquet INPUT of a build, its records not read (``frame`` holds none): a filter output folder
    or its kept.parquet ("filter-output", with the folder's steps.csv), or a folder of parquet shards
    ("parquet"); None when ``source`` is not parquet. ``Source(files=...)`` reads the records."""
    p = Path(source).expanduser()
    files = parquet_files(p) if source != "bundled" else None
    if files is None:
        return None
    if p.suffix == ".parquet" or (p / "kept.parquet").is_file():
        folder = p.parent if p.suffix == ".parquet" else p
        steps_path = folder / "steps.csv"
        steps = pl.read_csv(steps_path) if steps_path.is_file() else None
        return InputData(pl.DataFrame(schema=SCHEMA), source, "filter-output", steps=steps, paths=files)
    return InputData(pl.DataFrame(schema=SCHEMA), source, "parquet", paths=files)


def check_records_file(empty: pl.DataFrame, where: str) -> None:
    missing = [c for c in SCHEMA if c not in empty.columns]
    if missing:
        raise ValueError(f"{where}: not a cqia-nb records file, missing column(s) {missing}")


def load_input(source: str) -> InputData:
    """INPUT of a build: "bundled", a COIG-CQIA folder/.jsonl, a filter output folder (with
    kept.parquet; its steps.csv is read for the card) or a folder of parquet shards."""

    p = Path(source).expanduser()
    data = parquet_input(source)
    if data is not None:
        if data.kind == "filter-output":
            data.frame = read_kept(p)
        else:
            src = Source(files=data.paths)
            check_records_file(src.empty(), source)
            data.frame = src.read_all()
        return data
    if source != "bundled" and not p.exists():
        raise FileNotFoundError(f"{source}: no such file or folder; INPUT is 'bundled', a COIG-CQIA folder or .jsonl "
                                "file, or a `cqia-nb filter` output folder (with kept.parquet)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # problems are counted and reported in the card
        res = load(LoadConfig(source=source))
    if res.n_loaded == 0:
        raise ValueError(f"{source}: no records could be loaded ({res.problems.height} problems; "
                         f"run `cqia-nb validate {source}`)")
    return InputData(res.frame, source, "bundled" if source == "bundled" else "dataset", files=res.files,
                     problems=res.problems.height, rejected=res.n_rejected)


@dataclass
class Target:
    """One output dataset: a subset or a mixture, with ``split`` per row."""

    name: str
    kind: str                          # "subset" or "mixture"
    frame: pl.DataFrame
    spec: SubsetSpec | MixtureSpec
    parts: list[PartReport] = field(default_factory=list)

    def split_counts(self) -> dict[str, int]:
        c = dict(self.frame.group_by("split").len().iter_rows())
        return {"train": int(c.get("train", 0)), "validation": int(c.get("validation", 0))}


@dataclass
class Build:
    spec: BuildSpec
    seed: int
    input: InputData
    targets: dict[str, Target]
    base: pl.DataFrame                 # formatted, derived columns, split (one row per record)
    skipped: dict[str, str]            # built-in subsets not built, and why
    format: Any = None                 # formatting.FormatResult (its frame dropped)
    contamination: Any = None          # contamination.ContaminationReport or None
    contamination_note: str = ""
    removed: pl.DataFrame | None = None  # records removed before subsets (contamination), with reason
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> pl.DataFrame:
        rows = []
        for t in self.targets.values():
            sc = t.split_counts()
            rows.append((t.name, t.kind, t.frame.height, sc["train"], sc["validation"],
                         t.frame["record_id"].n_unique(), int(t.frame["n_tokens"].sum())))
        return pl.DataFrame(rows, schema={"target": pl.String, "kind": pl.String, "rows": pl.Int64,
                                          "train": pl.Int64, "validation": pl.Int64, "distinct_records": pl.Int64,
                                          "tokens": pl.Int64}, orient="row")

    # what the exports read (``exports.export_all``); a streaming build reads its spill instead
    def empty_target(self, name: str) -> pl.DataFrame:
        """A target's columns (no rows), as its exported rows have them."""
        return self.targets[name].frame.clear()

    def feed_targets(self, writers: dict[str, Any]) -> None:
        """Each target's rows, in order, to ``writers[name].write`` (``exports.TargetWriter``)."""
        for name, w in writers.items():
            w.write(self.targets[name].frame)


#: Column order of every target frame (and of the exports that carry all columns).
TARGET_COLUMNS = ("record_id", "subset", "split", "sample", *[c for c in SCHEMA if c != "record_id"],
                  "quality_tier", "group", "messages", "n_tokens", "truncated")


def run_build(spec: BuildSpec, seed: int | None = None, input: str | None = None, tokenizer=None,
              evals: Any = None, data: InputData | None = None) -> Build:
    """Input -> contamination check (optional removal) -> formatting and token counts ->
    subsets -> split -> mixtures. The spec itself was validated when it was read.

    ``input`` overrides the spec's (default "bundled"); ``data`` passes an already loaded input;
    ``tokenizer`` an already loaded one (else ``format.tokenizer``); ``evals`` an
    ``EvalSets``/``EvalIndex`` instead of the spec's ``contamination.benchmarks`` folder.
    """
    import time

    seed = spec.seed if seed is None else seed
    if seed is None:
        raise SpecError(f"{spec.path or 'spec'}: no seed; pass --seed S or write `seed:` in the spec")
    source = input or spec.input or "bundled"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if data is None:
        data = load_input(source)
    frame = data.frame
    timings["load"] = time.perf_counter() - t0

    # contamination
    report, removed = None, None
    cs = spec.contamination
    t = time.perf_counter()
    index, note = eval_index(spec, evals)
    if index is not None:
        report = C.check(frame, index)
        note = report.summary()
        if cs.remove:  # type: ignore[union-attr]
            frame, removed = C.remove_contaminated(frame, report, cs.min_overlap, cs.min_ratio)  # type: ignore[union-attr]
            note += f"; {removed.height:,} records removed"
    if cs is not None and (cs.benchmarks or evals is not None):
        timings["contamination"] = time.perf_counter() - t

    # formatting
    t = time.perf_counter()
    fmt = formatting.format_records(frame, spec.format or formatting.FormatConfig(), tokenizer)
    base = add_derived(fmt.frame)
    timings["format"] = time.perf_counter() - t

    # subsets
    t = time.perf_counter()
    split = assign_split(base, spec.validation, seed)
    base = base.join(split, on="record_id", how="left", maintain_order="left")
    timings["split"] = time.perf_counter() - t
    targets, skipped = make_targets(spec, seed, base.height, lambda s: select(base, s), target_frame, timings)
    fmt_light = formatting.FormatResult(fmt.frame.clear(), fmt.dropped, fmt.report, fmt.config, fmt.tokenizer)
    return Build(spec, seed, data, targets, base, skipped, fmt_light, report, note, removed, timings)


def make_targets(spec: BuildSpec, seed: int, records: int, pick: Callable[[SubsetSpec], pl.DataFrame],
                 shape: Callable[[pl.DataFrame], pl.DataFrame], timings: dict[str, float]
                 ) -> tuple[dict[str, Target], dict[str, str]]:
    """The subsets and mixtures of ``spec`` from ``pick`` (a subset's records, with ``split``, in input
    order); ``shape`` gives a target frame its columns. Built-in subsets empty on this input are
    skipped (returned with the reason), a spec's own empty subset is an error."""
    import time

    t = time.perf_counter()
    targets: dict[str, Target] = {}
    skipped: dict[str, str] = {}
    made: dict[str, pl.DataFrame] = {}
    for name, s in spec.subset_specs().items():
        fr = pick(s)
        if fr.height == 0:
            if s.builtin:
                skipped[name] = f"no records in this input ({records:,} records)"
                continue
            raise SpecError(f"{s.entry}: subset {name!r} selects no records from this input "
                            f"({records:,} records); change its criteria or remove the entry")
        made[name] = fr
        targets[name] = Target(name, "subset", shape(fr.with_columns(pl.lit(name).alias("subset"),
                                                                     pl.lit(0, dtype=pl.Int64).alias("sample"))), s)
    # mixture parts may name built-ins the spec does not export
    all_specs = {**builtin_subsets(), **{s.name: s for s in spec.subsets}}
    for m in spec.mixtures:
        for p in m.parts:
            if p.subset not in made:
                made[p.subset] = pick(all_specs[p.subset])
    timings["subsets"] = timings.pop("split", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    for m in spec.mixtures:
        mix, parts = build_mixture(m, made, seed)
        targets[m.name] = Target(m.name, "mixture", shape(mix), m, parts)
    timings["mixtures"] = time.perf_counter() - t
    return targets, skipped


def eval_index(spec: BuildSpec, evals: Any = None) -> tuple[C.EvalIndex | None, str]:
    """The benchmark index of the spec's ``contamination:`` (None when there is none) and the note
    for the card when the check is skipped (no benchmarks where the spec says, ``if_missing: skip``)."""
    cs = spec.contamination
    if cs is None or not (cs.benchmarks or evals is not None):
        return None, ""
    if evals is None:
        bpath = spec.resolve_path(cs.benchmarks)  # type: ignore[arg-type]
        if not bpath.exists():
            if cs.if_missing == "error":
                raise FileNotFoundError(f"contamination: benchmarks not found at {bpath} "
                                        f"(from `benchmarks: {cs.benchmarks}` in {spec.path})")
            return None, f"skipped: no benchmarks at `{cs.benchmarks}` (resolved to {bpath.name}/ next to the spec)"
        evals = C.load_eval_sets(bpath)
    return (evals if isinstance(evals, C.EvalIndex) else C.build_index(evals, cs.n, cs.max_item_frequency)), ""


def target_frame(fr: pl.DataFrame) -> pl.DataFrame:
    return fr.select([c for c in TARGET_COLUMNS if c in fr.columns])
