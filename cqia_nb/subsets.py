"""Declarative subsets and mixtures of COIG-CQIA, a seeded train/validation split, and the build.

The COIG-CQIA paper (arXiv 2403.18058) fine-tunes models on per-source subsets and on mixtures.
A *build spec* (``BuildSpec``, YAML in ``recipes/subsets-*.yaml``) says which, and ``run_build``
turns it into frames that :mod:`cqia_nb.exports` writes in every trainer's format.

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
    (:mod:`cqia_nb.formatting`) -> derived columns -> split -> subsets -> mixtures. Built-in
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

import fnmatch
import hashlib
import re
import warnings
from dataclasses import dataclass, field, fields as dc_fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cqia_nb.data import CONFIGS, SCHEMA


class SpecError(ValueError):
    """A build spec that cannot work; the message names the entry and what to change."""


# ----------------------------------------------------------------------------- card groups

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

_TIER = re.compile(r"score(\d+(?:\.\d+)?-\d+(?:\.\d+)?)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
DERIVED_COLUMNS = ("instruction_chars", "input_chars", "output_chars", "quality_tier", "group")


def _glob_any(path: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def quality_tier(source_file: str) -> str | None:
    """The zhihu score bucket in a file name ("zhihu/zhihu_score8.0-8.5_clean_v3.jsonl" -> "8.0-8.5")."""
    m = _TIER.search(Path(source_file).name)
    return m.group(1) if m else None


def group_of(config: str, source_file: str) -> str | None:
    """The card group of a record (None for configs the card does not know)."""
    for name, g in GROUPS.items():
        if (config in g.configs or _glob_any(source_file, g.files)) and not _glob_any(source_file, g.exclude):
            return name
    return None


def add_derived(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the derived columns subsets can use (``DERIVED_COLUMNS``); computed per distinct file."""
    files = frame.select("config", "source_file").unique(maintain_order=True)
    tiers = [quality_tier(s) for s in files["source_file"].to_list()]
    groups = [group_of(c, s) for c, s in files.iter_rows()]
    files = files.with_columns(pl.Series("quality_tier", tiers, dtype=pl.String),
                               pl.Series("group", groups, dtype=pl.String))
    out = frame.drop([c for c in ("quality_tier", "group") if c in frame.columns])
    out = out.join(files, on=["config", "source_file"], how="left", maintain_order="left")
    return out.with_columns(pl.col(f).str.len_chars().cast(pl.Int64).alias(f"{f}_chars")
                            for f in ("instruction", "input", "output"))


# ----------------------------------------------------------------------------- specs

def _str_tuple(v: Any, where: str, key: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise SpecError(f"{where}: `{key}` must be a string or a list of strings, got {v!r}")


def _check_keys(d: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(f"{where}: `name` must be letters, digits and _ . + - (it names files), got {name!r}")
    return name


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
    path: str | None = None                # the YAML file, for resolving relative paths
    raw: dict[str, Any] = field(default_factory=dict)

    # ---- construction
    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> "BuildSpec":
        from cqia_nb.formatting import FormatConfig, FormattingError

        if not isinstance(d, dict):
            raise SpecError(f"{source}: a build spec is a mapping (name, subsets, mixtures, ...), got {type(d).__name__}")
        _check_keys(d, {"name", "description", "input", "seed", "builtin", "subsets", "mixtures", "split",
                        "format", "contamination", "exports"}, source)
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
        spec = cls(name=_check_name(d.get("name", "build"), source), description=str(d.get("description", "")),
                   input=inp, seed=seed, builtin=builtin, subsets=subsets, mixtures=mixtures, validation=float(val),
                   format=fmt, contamination=contamination, exports=exports,
                   path=source if source != "<dict>" else None, raw=d)
        spec.check_names()
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> "BuildSpec":
        import yaml

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: build spec not found (see recipes/subsets-paper.yaml)")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise SpecError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', None) or e}; check indentation "
                            "and quote values containing ':' or '#'") from e
        return cls.from_dict(d, str(p))

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


# ----------------------------------------------------------------------------- selection

def select(frame: pl.DataFrame, spec: SubsetSpec) -> pl.DataFrame:
    """The records of one subset, in input order. ``frame`` needs the derived columns
    (``add_derived``); ``where`` columns are checked against it."""
    for c in ("group", "quality_tier"):
        if c not in frame.columns:
            frame = add_derived(frame)
            break
    cond: pl.Expr = pl.lit(True)
    source: list[pl.Expr] = []
    if spec.configs:
        source.append(pl.col("config").is_in(list(spec.configs)))
    if spec.groups:
        source.append(pl.col("group").is_in(list(spec.groups)))
    if spec.files:
        files = frame["source_file"].unique().to_list()
        hit = sorted(f for f in files if _glob_any(f, spec.files))
        source.append(pl.col("source_file").is_in(hit))
    if source:
        cond = pl.any_horizontal(source)
    if spec.exclude_files:
        files = frame["source_file"].unique().to_list()
        out = sorted(f for f in files if _glob_any(f, spec.exclude_files))
        cond = cond & ~pl.col("source_file").is_in(out)
    if spec.quality_tier:
        cond = cond & pl.col("quality_tier").is_in(list(spec.quality_tier)).fill_null(False)
    for col in ("task_type_major", "task_type_minor", "domain"):
        vals = getattr(spec, col)
        if vals:
            cond = cond & (pl.col(col).list.set_intersection(pl.lit(list(vals), dtype=pl.List(pl.String)))
                           .list.len() > 0)
    if spec.where:
        e = where_expr(spec.where, spec.entry)
        cols = set(e.meta.root_names())
        missing = sorted(cols - set(frame.columns))
        if missing:
            raise SpecError(f"{spec.entry}: `where` uses unknown column(s) {missing}; columns: "
                            f"{', '.join(c for c in frame.columns if c not in ('messages', 'text'))}")
        try:
            mask = frame.select(e.alias("_m")).to_series()
        except Exception as ex:
            raise SpecError(f"{spec.entry}: `where: {spec.where}` failed on the data "
                            f"({type(ex).__name__}: {str(ex).splitlines()[0]})") from ex
        if mask.dtype != pl.Boolean:
            raise SpecError(f"{spec.entry}: `where: {spec.where}` gives {mask.dtype}, not true/false; "
                            "write a comparison (e.g. output_chars > 100)")
        return frame.filter(frame.select(cond.alias("_c")).to_series() & mask.fill_null(False))
    return frame.filter(cond)


# ----------------------------------------------------------------------------- randomness

def rng_for(seed: int, *purpose: str) -> np.random.Generator:
    """A generator for one purpose: SHA-256 of (seed, purpose...), independent of PYTHONHASHSEED."""
    h = hashlib.sha256("\x1f".join([str(int(seed)), *purpose]).encode("utf-8")).digest()
    return np.random.default_rng(np.frombuffer(h, dtype=np.uint64))


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total`` with each within 1 of its quota (ties: earlier first)."""
    base = np.floor(quotas).astype(np.int64)
    rest = int(total - base.sum())
    if rest > 0:
        order = np.lexsort((np.arange(quotas.size), -(quotas - base)))
        base[order[:rest]] += 1
    return base


# ----------------------------------------------------------------------------- split

def assign_split(frame: pl.DataFrame, validation: float, seed: int, strata: str = "source_file") -> pl.DataFrame:
    """record_id -> split ("train" / "validation"), stratified by ``strata`` (module docstring)."""
    ids = frame.select("record_id", strata).unique("record_id", keep="first", maintain_order=True)
    if validation <= 0 or ids.height == 0:
        return ids.select("record_id", pl.lit("train").alias("split"))
    groups = ids.group_by(strata, maintain_order=True).agg(pl.col("record_id")).sort(strata)
    sizes = groups["record_id"].list.len().to_numpy()
    counts = _largest_remainder(sizes * validation, int(round(validation * ids.height)))
    val_ids: list[str] = []
    for (key, members), k in zip(groups.iter_rows(), counts.tolist()):
        if k:
            perm = rng_for(seed, "split", str(key)).permutation(len(members))[:k]
            val_ids.extend(members[i] for i in sorted(perm.tolist()))
    return ids.select("record_id").with_columns(
        pl.when(pl.col("record_id").is_in(val_ids)).then(pl.lit("validation")).otherwise(pl.lit("train"))
        .alias("split"))


# ----------------------------------------------------------------------------- mixtures

@dataclass
class PartReport:
    subset: str
    available_records: int
    available_tokens: int
    target: str              # "N records" / "N tokens"
    records: int             # rows drawn
    distinct: int            # distinct records among them
    tokens: int
    upsampled: int           # rows drawn with replacement


def _fill(tokens: np.ndarray, order: np.ndarray, budget: int) -> tuple[list[int], int]:
    """First fit: walk ``order`` and take each record whose tokens still fit in the budget."""
    taken, used = [], 0
    for i, t in zip(order.tolist(), tokens[order].tolist()):
        if used + t <= budget:
            taken.append(i)
            used += t
            if used == budget:
                break
    return taken, used


def _draw_tokens(tokens: np.ndarray, budget: int, rng: np.random.Generator, allow_upsample: bool,
                 where: str) -> np.ndarray:
    """Records in a seeded random order, each taken if it still fits (total <= budget); past the
    subset's own tokens, further draws with replacement when ``allow_upsample``."""
    n = tokens.size
    total = int(tokens.sum())
    perm = rng.permutation(n)
    if budget <= total:
        taken, _ = _fill(tokens, perm, budget)
        return np.sort(np.array(taken, dtype=np.int64))
    if not allow_upsample:
        raise SpecError(f"{where}: budget of {budget:,} tokens but the subset holds {total:,} tokens in {n:,} records; "
                        "lower the budget or set `allow_upsample: true`")
    left = budget - total
    extra: list[int] = []
    smallest = int(tokens.min()) if n else 0
    while n and left >= smallest:
        draw = rng.integers(0, n, size=int(left / max(1.0, float(tokens.mean()))) + 16)
        got, used = _fill(tokens, draw, left)
        if not got:
            break
        extra.extend(got)
        left -= used
    return np.concatenate([np.arange(n), np.array(extra, dtype=np.int64)])


def _draw_records(n: int, count: int, rng: np.random.Generator, allow_upsample: bool, where: str) -> np.ndarray:
    if count <= n:
        return np.sort(rng.permutation(n)[:count])
    if not allow_upsample:
        raise SpecError(f"{where}: needs {count:,} records but the subset has {n:,}; lower `size`, change the "
                        "ratios, or set `allow_upsample: true`")
    return np.concatenate([np.arange(n), rng.integers(0, n, size=count - n)])


def _pools(fr: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    if "split" not in fr.columns:
        return [("train", fr)]
    return [(name, fr.filter(pl.col("split") == name)) for name in ("train", "validation")]


def build_mixture(spec: MixtureSpec, subsets: dict[str, pl.DataFrame], seed: int
                  ) -> tuple[pl.DataFrame, list[PartReport]]:
    """Sample the parts of a mixture (``n_tokens`` is needed for token budgets); rows shuffled.

    Each part is drawn separately from its train and its validation records, in proportion to
    them (records, or tokens under a budget), so the mixture's validation split holds every part
    in the same share as the part's subset does: the split stays stratified by subset.
    """
    frames, reports = [], []
    parts = spec.parts
    sizes = []
    for i, p in enumerate(parts, start=1):
        fr = subsets.get(p.subset)
        if fr is None or fr.height == 0:
            raise SpecError(f"{spec.entry} part {i}: subset {p.subset!r} is empty on this input; "
                            "remove the part or change the subset")
        sizes.append(fr.height)
    mode = spec.mode
    counts = np.zeros(len(parts), dtype=np.int64)
    if mode == "ratio_tokens":
        ratios = np.array([p.ratio for p in parts], dtype=float)
        budgets = _largest_remainder(ratios * spec.total_tokens, int(spec.total_tokens))  # type: ignore[arg-type]
    if mode == "ratio_records":
        ratios = np.array([p.ratio for p in parts], dtype=float)
        size = spec.size if spec.size is not None else int(np.floor(min(np.array(sizes) / ratios) + 1e-9))
        counts = _largest_remainder(ratios * size, size)
    for i, p in enumerate(parts, start=1):
        fr = subsets[p.subset]
        where = f"{spec.entry} part {i} ({p.subset})"
        drawn_parts = []
        if mode in ("tokens", "ratio_tokens"):
            if "n_tokens" not in fr.columns:
                raise SpecError(f"{where}: token budgets need token counts (format the records first)")
            budget = int(p.tokens if mode == "tokens" else budgets[i - 1])  # type: ignore[arg-type]
            total = int(fr["n_tokens"].sum())
            if budget > total and not spec.allow_upsample:
                raise SpecError(f"{where}: budget of {budget:,} tokens but the subset holds {total:,} tokens in "
                                f"{fr.height:,} records; lower the budget or set `allow_upsample: true`")
            pools = [(n, q) for n, q in _pools(fr) if q.height]
            shares = np.array([int(q["n_tokens"].sum()) for _, q in pools], dtype=float)
            sub = _largest_remainder(budget * shares / shares.sum(), budget) if shares.sum() else np.zeros(len(pools), np.int64)
            for (name, q), b in zip(pools, sub.tolist()):
                rng = rng_for(seed, "mixture", spec.name, p.subset, name)
                idx = _draw_tokens(q["n_tokens"].to_numpy(), int(b), rng, spec.allow_upsample, where)
                drawn_parts.append((q, idx))
            target = f"{budget:,} tokens"
        else:
            c = int(counts[i - 1])
            if c > fr.height and not spec.allow_upsample:
                raise SpecError(f"{where}: needs {c:,} records but the subset has {fr.height:,}; lower `size`, "
                                "change the ratios, or set `allow_upsample: true`")
            pools = [(n, q) for n, q in _pools(fr) if q.height]
            sub = _largest_remainder(np.array([c * q.height / fr.height for _, q in pools]), c)
            for (name, q), k in zip(pools, sub.tolist()):
                rng = rng_for(seed, "mixture", spec.name, p.subset, name)
                drawn_parts.append((q, _draw_records(q.height, int(k), rng, spec.allow_upsample, where)))
            target = f"{c:,} records"
        pieces = []
        for q, idx in drawn_parts:
            rows = q.with_row_index("_i").with_columns(pl.col("_i").cast(pl.Int64))
            pieces.append(pl.DataFrame({"_i": pl.Series(idx, dtype=pl.Int64)})
                          .join(rows, on="_i", how="left", maintain_order="left").drop("_i"))
        drawn = pl.concat(pieces, how="vertical_relaxed").with_columns(
            pl.int_range(0, pl.len()).over("record_id").cast(pl.Int64).alias("sample"),
            pl.lit(p.subset).alias("subset"))
        tok = int(drawn["n_tokens"].sum()) if "n_tokens" in drawn.columns else 0
        reports.append(PartReport(p.subset, fr.height, int(fr["n_tokens"].sum()) if "n_tokens" in fr.columns else 0,
                                  target, drawn.height, drawn["record_id"].n_unique(), tok,
                                  int((drawn["sample"] > 0).sum())))
        frames.append(drawn)
    mix = pl.concat(frames, how="vertical_relaxed")
    order = rng_for(seed, "mixture-order", spec.name).permutation(mix.height)
    return mix[order.tolist()], reports


# ----------------------------------------------------------------------------- input

@dataclass
class InputData:
    frame: pl.DataFrame
    source: str                       # as given
    kind: str                         # "bundled", "dataset", "filter-output"
    steps: pl.DataFrame | None = None  # steps.csv of a filter output folder
    files: pl.DataFrame | None = None  # LoadResult.files for a dataset folder
    problems: int = 0
    rejected: int = 0


def load_input(source: str) -> InputData:
    """INPUT of a build: "bundled", a COIG-CQIA folder/.jsonl, or a filter output folder
    (with kept.parquet; its steps.csv is read for the card)."""
    from cqia_nb.data import LoadConfig, load
    from cqia_nb.filters import read_kept

    p = Path(source).expanduser()
    if source != "bundled" and (p.suffix == ".parquet" or (p.is_dir() and (p / "kept.parquet").is_file())):
        folder = p.parent if p.suffix == ".parquet" else p
        frame = read_kept(p)
        steps_path = folder / "steps.csv"
        steps = pl.read_csv(steps_path) if steps_path.is_file() else None
        return InputData(frame, source, "filter-output", steps=steps)
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


# ----------------------------------------------------------------------------- build

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

    from cqia_nb import formatting

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
    report, note, removed = None, "", None
    cs = spec.contamination
    if cs is not None and (cs.benchmarks or evals is not None):
        from cqia_nb import contamination as C

        t = time.perf_counter()
        if evals is None:
            bpath = spec.resolve_path(cs.benchmarks)  # type: ignore[arg-type]
            if not bpath.exists():
                if cs.if_missing == "error":
                    raise FileNotFoundError(f"contamination: benchmarks not found at {bpath} "
                                            f"(from `benchmarks: {cs.benchmarks}` in {spec.path})")
                note = f"skipped: no benchmarks at `{cs.benchmarks}` (resolved to {bpath.name}/ next to the spec)"
            else:
                evals = C.load_eval_sets(bpath)
        if evals is not None:
            index = evals if isinstance(evals, C.EvalIndex) else C.build_index(evals, cs.n, cs.max_item_frequency)
            report = C.check(frame, index)
            note = report.summary()
            if cs.remove:
                frame, removed = C.remove_contaminated(frame, report, cs.min_overlap, cs.min_ratio)
                note += f"; {removed.height:,} records removed"
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
    targets: dict[str, Target] = {}
    skipped: dict[str, str] = {}
    made: dict[str, pl.DataFrame] = {}
    for name, s in spec.subset_specs().items():
        fr = select(base, s)
        if fr.height == 0:
            if s.builtin:
                skipped[name] = f"no records in this input ({base.height:,} records)"
                continue
            raise SpecError(f"{s.entry}: subset {name!r} selects no records from this input "
                            f"({base.height:,} records); change its criteria or remove the entry")
        made[name] = fr
        targets[name] = Target(name, "subset", _target_frame(fr.with_columns(pl.lit(name).alias("subset"),
                                                                              pl.lit(0, dtype=pl.Int64).alias("sample"))),
                               s)
    # mixture parts may name built-ins the spec does not export
    all_specs = {**builtin_subsets(), **{s.name: s for s in spec.subsets}}
    for m in spec.mixtures:
        for p in m.parts:
            if p.subset not in made:
                fr = select(base, all_specs[p.subset])
                made[p.subset] = fr
    timings["subsets"] = time.perf_counter() - t
    t = time.perf_counter()
    for m in spec.mixtures:
        mix, parts = build_mixture(m, made, seed)
        targets[m.name] = Target(m.name, "mixture", _target_frame(mix), m, parts)
    timings["mixtures"] = time.perf_counter() - t
    fmt_light = formatting.FormatResult(fmt.frame.clear(), fmt.dropped, fmt.report, fmt.config, fmt.tokenizer)
    return Build(spec, seed, data, targets, base, skipped, fmt_light, report, note, removed, timings)


def _target_frame(fr: pl.DataFrame) -> pl.DataFrame:
    return fr.select([c for c in TARGET_COLUMNS if c in fr.columns])
