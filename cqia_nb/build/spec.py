"""Declarative subsets and mixtures of COIG-CQIA, a seeded train/validation split, and the build.

The COIG-CQIA paper (arXiv 2403.18058) fine-tunes models on per-source subsets and on mixtures.
A *build spec* (``BuildSpec``, YAML in ``recipes/subsets-*.yaml``) says which, and ``run_build``
turns it into frames that :mod:`cqia_nb.build.exports` writes in every trainer's format.

Subsets (``SubsetSpec``)
    Built in: ``config.<name>`` for each of the 13 Hugging Face configs, and ``group.<name>`` for
    the dataset card's groups (``GROUPS``, the one place where the mapping lives). A spec entry
    combines criteria; *source* criteria (``configs``, ``groups``, ``files`` globs on
    ``source_file``) are OR-ed (the union of those sources), ``exclude_files`` removes files, and
    every other criterion narrows the selection (AND):

    * ``quality_tier``: zhihu score buckets parsed from the file names
      (``zhihu_score8.0-8.5_clean_v3.jsonl`` -> ``"8.0-8.5"``; records of other files have none);
    * ``task_type_major`` / ``task_type_minor`` / ``domain``: records having any of the values;
    * ``where``: a boolean SQL expression (``polars.sql_expr``: a parser, no Python ``eval``; only
      column names, literals, operators and SQL functions, no table access), e.g.
      ``"human_verified AND output_chars >= 200"`` or ``"array_contains(domain, '医学')"``.
      Columns: the record schema (:data:`cqia_nb.data.SCHEMA`) plus ``instruction_chars``,
      ``input_chars``, ``output_chars``, ``quality_tier``, ``group`` and ``n_tokens``.

Mixtures (``MixtureSpec``)
    Parts name subsets and take either a ``ratio`` (all parts; ratios sum to 1) of a total
    ``size`` in records (default: the largest mixture that needs no upsampling) or of a
    ``total_tokens`` budget, or a ``tokens`` budget each. A part is sampled without replacement up
    to its subset's size; beyond, with replacement only if ``allow_upsample: true`` (else an error
    says how much there is). Under a token budget the part walks its records in a seeded random
    order and takes each one whose ``n_tokens`` (the rendered conversation) still fits, so the
    part's total never exceeds its budget. Each part is drawn from its train and its validation
    records separately, in proportion, so a mixture's validation split holds every part in the
    share its subset does. Rows of a mixture are shuffled; ``subset`` says which part each came
    from, ``sample`` counts repeats of a record (0 for its first draw).

Order of a build (``run_build``)
    load the input -> contamination check against the evaluation sets (optionally removing the
    overlapping records, listed) -> messages, rendering, token counts and the length policy
    (:mod:`cqia_nb.build.formatting`) -> derived columns -> split -> subsets -> mixtures. Built-in
    subsets that are empty on an input (the real copy has no coig_pc; wikihow is an LFS pointer)
    are skipped and listed; an empty subset of the spec's own is an error naming its entry.

Split
    One train/validation assignment per record for the whole build, so that no record is in the
    validation split of one output and the train split of another. It is stratified by
    ``source_file`` (the finest provenance unit: every subset is a union of files or narrower), with
    the largest-remainder method so that the total is exactly ``round(validation * N)`` and each
    file's share is within one record of it. Repeated draws of a record follow it.

Determinism
    Every random choice comes from ``numpy.random.default_rng`` seeded with SHA-256 of
    ``(seed, purpose)`` (never Python's salted ``hash``); inputs are ordered as loaded (files by
    path, lines in order). Same spec, input and seed -> identical frames -> byte-identical files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl

from cqia_nb.build.formatting import FormatConfig, FormattingError
from cqia_nb.core.overrides import apply_overrides, read_yaml_mapping, unknown_keys_message
from cqia_nb.data.schema import CONFIGS


class SpecError(ValueError):
    """A build spec that cannot work; the message names the entry and what to change."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _str_tuple(v: Any, where: str, key: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise SpecError(f"{where}: `{key}` must be a string or a list of strings, got {v!r}")


def _check_keys(d: dict, known: set[str], where: str) -> None:
    unknown = set(d) - known
    if unknown:
        raise SpecError(f"{where}: {unknown_keys_message(unknown, known)}")


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(f"{where}: `name` must be letters, digits and _ . + - (it names files), got {name!r}")
    return name


@dataclass(frozen=True)
class Group:
    """A group of the dataset card: configs and/or source_file globs, minus excluded globs."""

    title: str                      # the card's heading
    configs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


#: The dataset card's groups (its ``<details>`` tables), mapped to configs and files. Medical and
#: law records live in the wiki and exam folders, so those groups are file globs and the
#: encyclopedia and exam groups exclude them; ruozhiba is in no table and is a group of its own.
#: Together the groups partition the data (every record of the 13 configs is in exactly one).
#: On hub data (source_file "hub:..."), file globs cannot match: medical and law are then empty.
MEDICAL_FILES = ("wiki/bkmy_*", "wiki/51zyzy*", "wiki/baobao*")
LAW_FILES = ("exam/law_gee_exam*",)
GROUPS: dict[str, Group] = {
    "social_media": Group("社交媒体&论坛", configs=("zhihu", "douban", "xhs", "segmentfault")),
    "encyclopedia": Group("通用百科", configs=("wiki", "wikihow"), exclude=MEDICAL_FILES),
    "nlp_tasks": Group("通用NLP任务", configs=("coig_pc",)),
    "exams": Group("考试&试题", configs=("exam", "logi_qa"), exclude=LAW_FILES),
    "human_value": Group("人类价值观", configs=("human_value",)),
    "traditional_culture": Group("中国传统文化", configs=("chinese_traditional",)),
    "finance": Group("金融&经管领域", configs=("finance",)),
    "medical": Group("医疗领域", files=MEDICAL_FILES),
    "law": Group("法律领域", files=LAW_FILES),
    "ruozhiba": Group("弱智吧 (not in the card's tables)", configs=("ruozhiba",)),
}


@dataclass(frozen=True)
class SubsetSpec:
    """Which records a subset holds (see the module docstring for how criteria combine)."""

    name: str
    configs: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    exclude_files: tuple[str, ...] = ()
    quality_tier: tuple[str, ...] = ()
    task_type_major: tuple[str, ...] = ()
    task_type_minor: tuple[str, ...] = ()
    domain: tuple[str, ...] = ()
    where: str | None = None
    description: str = ""
    builtin: bool = False
    entry: str = ""                 # where it was defined ("subsets[2]" or "built-in")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "SubsetSpec":
        if not isinstance(d, dict):
            raise SpecError(f"{where}: a subset is a mapping with `name:` and criteria, got {d!r}")
        known = {f.name for f in dc_fields(cls)} - {"builtin", "entry"}
        _check_keys(d, known, where)
        name = _check_name(d.get("name"), where)
        where = f"{where} ({name})"
        kw: dict[str, Any] = {"name": name, "entry": where}
        for key in ("configs", "groups", "files", "exclude_files", "quality_tier", "task_type_major",
                    "task_type_minor", "domain"):
            kw[key] = _str_tuple(d.get(key), where, key)
        bad = [c for c in kw["configs"] if c not in CONFIGS]
        if bad:
            raise SpecError(f"{where}: unknown config(s) {bad}; configs: {', '.join(CONFIGS)}")
        bad = [g for g in kw["groups"] if g not in GROUPS]
        if bad:
            raise SpecError(f"{where}: unknown group(s) {bad}; groups: {', '.join(GROUPS)}")
        bad = [t for t in kw["quality_tier"] if not re.fullmatch(r"\d+(\.\d+)?-\d+(\.\d+)?", t)]
        if bad:
            raise SpecError(f"{where}: quality_tier values look like \"8.0-8.5\" (from zhihu_score8.0-8.5_*.jsonl), "
                            f"got {bad}")
        w = d.get("where")
        if w is not None:
            if not isinstance(w, str) or not w.strip():
                raise SpecError(f"{where}: `where` must be a SQL boolean expression string, got {w!r}")
            where_expr(w, where)  # syntax check now; columns are checked against the data
            kw["where"] = w
        desc = d.get("description", "")
        if not isinstance(desc, str):
            raise SpecError(f"{where}: `description` must be a string")
        kw["description"] = desc
        spec = cls(**kw)
        if not spec.has_criteria():
            raise SpecError(f"{where}: no criteria; give at least one of configs, groups, files, quality_tier, "
                            "task_type_major, task_type_minor, domain, where")
        return spec

    def has_criteria(self) -> bool:
        return any((self.configs, self.groups, self.files, self.quality_tier, self.task_type_major,
                    self.task_type_minor, self.domain, self.where))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for f in dc_fields(self):
            v = getattr(self, f.name)
            if f.name in ("name", "builtin", "entry") or v in ((), None, ""):
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class PartSpec:
    subset: str
    ratio: float | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class MixtureSpec:
    name: str
    parts: tuple[PartSpec, ...]
    size: int | None = None
    total_tokens: int | None = None
    allow_upsample: bool = False
    description: str = ""
    entry: str = ""

    @property
    def mode(self) -> str:
        """"ratio_records", "ratio_tokens" or "tokens"."""
        if self.parts[0].tokens is not None:
            return "tokens"
        return "ratio_tokens" if self.total_tokens is not None else "ratio_records"

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "MixtureSpec":
        if not isinstance(d, dict):
            raise SpecError(f"{where}: a mixture is a mapping with `name:` and `parts:`, got {d!r}")
        _check_keys(d, {"name", "parts", "size", "total_tokens", "allow_upsample", "description"}, where)
        name = _check_name(d.get("name"), where)
        where = f"{where} ({name})"
        raw = d.get("parts")
        if not isinstance(raw, list) or not raw:
            raise SpecError(f"{where}: `parts:` must be a non-empty list of `- subset: NAME` with ratio or tokens")
        parts = []
        for i, p in enumerate(raw, start=1):
            pw = f"{where} part {i}"
            if not isinstance(p, dict) or "subset" not in p:
                raise SpecError(f"{pw}: write it as `- subset: NAME` with `ratio: R` or `tokens: N`, got {p!r}")
            _check_keys(p, {"subset", "ratio", "tokens"}, pw)
            if not isinstance(p["subset"], str):
                raise SpecError(f"{pw}: `subset` must be a subset name, got {p['subset']!r}")
            ratio, tokens = p.get("ratio"), p.get("tokens")
            if (ratio is None) == (tokens is None):
                raise SpecError(f"{pw} ({p['subset']}): give exactly one of `ratio` or `tokens`")
            if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0):
                raise SpecError(f"{pw} ({p['subset']}): `ratio` must be a number > 0, got {ratio!r}")
            if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0):
                raise SpecError(f"{pw} ({p['subset']}): `tokens` must be a positive integer, got {tokens!r}")
            parts.append(PartSpec(p["subset"], float(ratio) if ratio is not None else None, tokens))
        kinds = {p.ratio is not None for p in parts}
        if len(kinds) > 1:
            raise SpecError(f"{where}: mix of `ratio` and `tokens` parts; use ratios for all parts (with `size` "
                            "or `total_tokens`) or a `tokens` budget for each")
        names = [p.subset for p in parts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"{where}: subset(s) {dup} appear in more than one part; merge them")
        size, total_tokens = d.get("size"), d.get("total_tokens")
        for key, v in (("size", size), ("total_tokens", total_tokens)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise SpecError(f"{where}: `{key}` must be a positive integer, got {v!r}")
        if parts[0].ratio is not None:
            total = sum(p.ratio for p in parts)  # type: ignore[misc]
            if abs(total - 1.0) > 1e-6:
                terms = " + ".join(f"{p.ratio:g}" for p in parts)
                raise SpecError(f"{where}: ratios sum to {total:g} ({terms}); they must sum to 1")
            if size is not None and total_tokens is not None:
                raise SpecError(f"{where}: give `size` (records) or `total_tokens`, not both")
        elif size is not None or total_tokens is not None:
            raise SpecError(f"{where}: `size`/`total_tokens` go with ratio parts; `tokens` parts carry their own budget")
        up = d.get("allow_upsample", False)
        if not isinstance(up, bool):
            raise SpecError(f"{where}: `allow_upsample` must be true or false, got {up!r}")
        return cls(name, tuple(parts), size, total_tokens, up, str(d.get("description", "")), where)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "parts": [
            {"subset": p.subset, **({"ratio": p.ratio} if p.ratio is not None else {"tokens": p.tokens})}
            for p in self.parts]}
        for k in ("size", "total_tokens"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        out["allow_upsample"] = self.allow_upsample
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class ContaminationSpec:
    benchmarks: str | None = None      # a folder like ../shared/benchmarks, or a file
    n: int = 13
    max_item_frequency: int | None = 10
    remove: bool = False
    min_overlap: int = 1
    min_ratio: float = 0.0
    if_missing: str = "skip"           # "skip" (recorded in the card) or "error"

    @classmethod
    def from_dict(cls, d: Any, where: str = "contamination") -> "ContaminationSpec | None":
        if d is None:
            return None
        if not isinstance(d, dict):
            raise SpecError(f"{where}: a mapping with `benchmarks:` (a folder), got {d!r}")
        _check_keys(d, {f.name for f in dc_fields(cls)}, where)
        spec = cls(**d)
        if spec.if_missing not in ("skip", "error"):
            raise SpecError(f"{where}: `if_missing` is skip or error, got {spec.if_missing!r}")
        if not isinstance(spec.n, int) or spec.n < 1:
            raise SpecError(f"{where}: `n` must be a positive integer, got {spec.n!r}")
        if not isinstance(spec.remove, bool):
            raise SpecError(f"{where}: `remove` must be true or false")
        return spec


EXPORT_FORMATS = ("jsonl", "parquet", "hf", "llamafactory", "trl", "card")


@dataclass
class BuildSpec:
    """A whole build: input, seed, subsets, mixtures, split, formatting, contamination, exports."""

    name: str = "build"
    description: str = ""
    input: str | None = None
    seed: int | None = None
    builtin: tuple[str, ...] = ()          # "configs", "groups" and/or built-in subset names
    subsets: tuple[SubsetSpec, ...] = ()
    mixtures: tuple[MixtureSpec, ...] = ()
    validation: float = 0.05
    format: Any = None                     # formatting.FormatConfig
    contamination: ContaminationSpec | None = None
    exports: tuple[str, ...] = EXPORT_FORMATS
    out_dir: str | None = None             # where `cqia-nb build` writes (not part of the outputs)
    #: one batch of records in memory at a time (``cqia_nb.build.streaming``); None: when the input is
    #: large. Not part of the outputs, as out_dir, spill_dir (the streaming build's scratch folder)
    #: and batch_rows (its records in memory at a time; None: ``streaming.READ_ROWS``)
    streaming: bool | None = None
    spill_dir: str | None = None
    batch_rows: int | None = None
    path: str | None = None                # the YAML file, for resolving relative paths
    raw: dict[str, Any] = field(default_factory=dict)

    # ---- construction
    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> "BuildSpec":

        if not isinstance(d, dict):
            raise SpecError(f"{source}: a build spec is a mapping (name, subsets, mixtures, ...), got {type(d).__name__}")
        _check_keys(d, {"name", "description", "input", "seed", "builtin", "subsets", "mixtures", "split",
                        "format", "contamination", "exports", "out_dir", "streaming", "spill_dir",
                        "batch_rows"}, source)
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise SpecError(f"{source}: `seed` must be a non-negative integer, got {seed!r}")
        builtin = _str_tuple(d.get("builtin"), source, "builtin")
        known_builtin = builtin_subsets()
        for b in builtin:
            if b not in ("configs", "groups") and b not in known_builtin:
                raise SpecError(f"{source}: builtin: unknown {b!r}; use configs, groups, or names such as "
                                f"{', '.join(list(known_builtin)[:3])}, ...")
        raw_subsets = d.get("subsets") or []
        if not isinstance(raw_subsets, list):
            raise SpecError(f"{source}: `subsets:` must be a list of `- name: ...` entries")
        subsets = tuple(SubsetSpec.from_dict(s, f"{source}: subsets[{i}]") for i, s in enumerate(raw_subsets))
        raw_mix = d.get("mixtures") or []
        if not isinstance(raw_mix, list):
            raise SpecError(f"{source}: `mixtures:` must be a list of `- name: ...` entries")
        mixtures = tuple(MixtureSpec.from_dict(m, f"{source}: mixtures[{i}]") for i, m in enumerate(raw_mix))
        split = d.get("split") or {}
        if not isinstance(split, dict):
            raise SpecError(f"{source}: `split:` must be a mapping like `validation: 0.05`")
        _check_keys(split, {"validation"}, f"{source}: split")
        val = split.get("validation", 0.05)
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 <= val < 1:
            raise SpecError(f"{source}: split: `validation` must be a fraction in [0, 1), got {val!r}")
        try:
            fmt = FormatConfig.from_dict(d.get("format"), f"{source}: format")
        except (FormattingError, TypeError) as e:
            raise SpecError(f"{source}: format: {e}") from e
        contamination = ContaminationSpec.from_dict(d.get("contamination"), f"{source}: contamination")
        exports = _str_tuple(d.get("exports"), source, "exports") or EXPORT_FORMATS
        bad = [e for e in exports if e not in EXPORT_FORMATS]
        if bad:
            raise SpecError(f"{source}: unknown export format(s) {bad}; formats: {', '.join(EXPORT_FORMATS)}")
        inp = d.get("input")
        if inp is not None and not isinstance(inp, str):
            raise SpecError(f"{source}: `input` must be a string ('bundled', a folder, or a filter output folder)")
        out_dir = d.get("out_dir")
        if out_dir is not None and (not isinstance(out_dir, str) or not out_dir):
            raise SpecError(f"{source}: `out_dir` must be a folder path, got {out_dir!r}")
        streaming = d.get("streaming")
        if streaming is not None and not isinstance(streaming, bool):
            raise SpecError(f"{source}: `streaming` must be true, false or null (decide by the input's size), "
                            f"got {streaming!r}")
        spill_dir = d.get("spill_dir")
        if spill_dir is not None and (not isinstance(spill_dir, str) or not spill_dir):
            raise SpecError(f"{source}: `spill_dir` must be a folder path, got {spill_dir!r}")
        batch_rows = d.get("batch_rows")
        if batch_rows is not None and (isinstance(batch_rows, bool) or not isinstance(batch_rows, int)
                                       or batch_rows < 1):
            raise SpecError(f"{source}: `batch_rows` must be a positive integer (records a streaming build holds "
                            f"at a time), got {batch_rows!r}")
        spec = cls(name=_check_name(d.get("name", "build"), source), description=str(d.get("description", "")),
                   input=inp, seed=seed, builtin=builtin, subsets=subsets, mixtures=mixtures, validation=float(val),
                   format=fmt, contamination=contamination, exports=exports, out_dir=out_dir,
                   streaming=streaming, spill_dir=spill_dir, batch_rows=batch_rows,
                   path=source if source != "<dict>" else None, raw=d)
        spec.check_names()
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> "BuildSpec":
        """A spec file plus ``--set`` overrides (``KEY=VALUE`` strings or a parsed mapping; dotted keys
        reach into mappings and named list items: ``format.max_length=512``,
        ``subsets.zhihu-top.quality_tier=[9.0-10]``, ``mixtures.mix-groups.size=500``)."""
        d = read_yaml_mapping(path, what="build spec", error=SpecError,
                              missing_hint=" (see recipes/subsets-paper.yaml)")
        return cls.from_dict(apply_overrides(d, overrides, error=SpecError), str(path))

    # ---- names
    def subset_specs(self) -> dict[str, SubsetSpec]:
        """The subsets this build makes, in order: selected built-ins, then the spec's own."""
        known = builtin_subsets()
        out: dict[str, SubsetSpec] = {}
        for b in self.builtin:
            if b == "configs":
                out.update({k: v for k, v in known.items() if k.startswith("config.")})
            elif b == "groups":
                out.update({k: v for k, v in known.items() if k.startswith("group.")})
            else:
                out[b] = known[b]
        for s in self.subsets:
            out[s.name] = s
        return out

    def known_subset_names(self) -> list[str]:
        return list({**builtin_subsets(), **{s.name: s for s in self.subsets}})

    def check_names(self) -> None:
        src = self.path or "<dict>"
        own = [s.name for s in self.subsets]
        dup = sorted({n for n in own if own.count(n) > 1})
        if dup:
            raise SpecError(f"{src}: subset name(s) {dup} defined twice")
        clash = sorted(set(own) & set(builtin_subsets()))
        if clash:
            raise SpecError(f"{src}: subset name(s) {clash} are built-in names; choose other names")
        mix = [m.name for m in self.mixtures]
        dup = sorted({n for n in mix if mix.count(n) > 1} | (set(mix) & (set(own) | set(builtin_subsets()))))
        if dup:
            raise SpecError(f"{src}: mixture name(s) {dup} are used twice (names must be unique across "
                            "subsets and mixtures)")
        known = self.known_subset_names()
        for m in self.mixtures:
            for i, p in enumerate(m.parts, start=1):
                if p.subset not in known:
                    raise SpecError(f"{m.entry} part {i}: unknown subset {p.subset!r}; known subsets: "
                                    f"{', '.join(known)}")

    def resolve_path(self, p: str) -> Path:
        """A path from the spec: absolute, else relative to the spec file's folder."""
        q = Path(p).expanduser()
        if q.is_absolute() or self.path is None:
            return q
        return Path(self.path).resolve().parent / q

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"name": self.name, "description": self.description, "input": self.input, "seed": self.seed,
                "builtin": list(self.builtin), "subsets": [s.as_dict() for s in self.subsets],
                "mixtures": [m.as_dict() for m in self.mixtures], "split": {"validation": self.validation},
                "format": asdict(self.format) if self.format is not None else None,
                "contamination": asdict(self.contamination) if self.contamination else None,
                "exports": list(self.exports)}


def where_expr(text: str, where: str = "where") -> pl.Expr:
    """Parse a SQL boolean expression into a polars expression (no Python eval, no tables)."""
    if ";" in text:
        raise SpecError(f"{where}: `where` is one SQL expression; remove the ';'")
    try:
        return pl.sql_expr(text)
    except Exception as e:  # polars raises SQLSyntaxError / SQLInterfaceError / ...
        raise SpecError(f"{where}: cannot parse `where: {text}` ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        "write a SQL boolean expression such as \"human_verified AND output_chars >= 200\"") from e


def builtin_subsets() -> dict[str, SubsetSpec]:
    """``config.<name>`` for the 13 configs and ``group.<name>`` for the card's groups."""
    out = {f"config.{c}": SubsetSpec(f"config.{c}", configs=(c,), builtin=True, entry="built-in",
                                     description=f"HF config {c}") for c in CONFIGS}
    for g, grp in GROUPS.items():
        out[f"group.{g}"] = SubsetSpec(f"group.{g}", groups=(g,), builtin=True, entry="built-in",
                                       description=f"card group {grp.title}")
    return out
