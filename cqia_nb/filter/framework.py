"""The filter framework: named, configurable filters composed into an audited pipeline.

A filter measures one value per record and decides keep/drop from it. The pipeline applies
filters in order to what the previous steps kept, and returns the kept frame, a dropped frame
(every removed record with the step, filter, measured value and detail), and a per-step table.
``in == kept + dropped`` always holds.

A *transform* is the other kind of step: it rewrites text columns (e.g. traditional ->
simplified characters) and drops nothing; the steps table records how many records it changed.
Both kinds register by name with ``@register`` and are used the same way in recipes::

    steps:
      - filter: traditional      # detect; with `convert: true` it runs as the to_simplified transform
        convert: true
      - transform: to_simplified # or name a transform directly
      - filter: url
        label: url_in_answer     # optional; step names must be unique (repeats get "#2", "#3")
        field: output

Batches: a step whose value for a record depends on that record alone declares ``per_record =
True`` (every rule filter, ``to_simplified``). The pipeline runs consecutive such steps batch by
batch (``batch_slices``: at most ``BATCH_ROWS`` records and ``BATCH_BYTES`` bytes of the text
they read; ``run_batch`` takes one batch through the steps), so their memory is bounded by the
batch, not the input, and their time grows linearly; results are the same for any batch size.
``run_batch`` is the unit a streaming engine or Ray Data's ``map_batches`` calls. Other steps
(deduplication) see every record kept so far at once.

Filters register themselves by name (``@register``); rule filters live in ``cqia_nb.filter.rules``,
deduplication in ``cqia_nb.filter.dedup``, model-based scores in ``cqia_nb.filter.scores``.

A bad recipe fails in ``PipelineConfig.build()`` (called first by ``run_pipeline``), before any
record is touched: unknown step names, unknown parameters, parameters of the wrong type, invalid
regular expressions, and (in ``run_pipeline``) columns the input lacks. Every message names the
step. Outputs: ``write_outputs(result, out_dir)`` and ``read_kept(out_dir)``.

Why this module is long: it is the one contract every engine shares (the step classes, the recipe's
validation, ``run_batch``, the stream protocol and the in-memory pipeline); split, each part would
import the others.
"""

from __future__ import annotations

import dataclasses
import re
import time
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, Union

import numpy as np
import polars as pl

from cqia_nb.core.memory import release_free_memory
from cqia_nb.core.overrides import (
    ConfigError,
    apply_overrides,
    config_from_mapping,
    did_you_mean,
    read_yaml_mapping,
    unknown_keys_message,
)

FILTERS: dict[str, type["Filter"] | type["Transform"]] = {}
#: Columns added to every dropped record.
AUDIT_COLUMNS: dict[str, pl.DataType] = {
    "step": pl.Int64,        # 1-based position of the step in the recipe
    "step_name": pl.String,  # the step's label (or its filter name), unique within a recipe
    "filter": pl.String,     # the registered filter name
    "value": pl.Float64,     # what the filter measured for this record
    "detail": pl.String,     # why (matched text, first changed character, ...), may be null
}
def with_audit_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the ``AUDIT_COLUMNS`` added, all null: the shape of dropped records."""
    return frame.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in AUDIT_COLUMNS.items()])


def summary_line(n_in: int, kept: int, dropped: int) -> str:
    """A run's one-line summary, as every engine prints it and pipeline.json stores it."""
    return f"{n_in} in, {kept} kept, {dropped} dropped"


#: Batches for per-record steps (``per_record = True``): at most this many rows ...
BATCH_ROWS = 4096
#: ... and at most this many UTF-8 bytes in the columns the step reads (a batch always holds
#: at least one record). Every array a rule kernel builds is a few times the batch's text
#: (code points 4 B/char, n-gram keys 8 B/char, 3-4 such arrays at once), so peak memory is
#: bounded by these two numbers, not by the input. 4096 real records are ~2.2 M characters
#: (~6 MB of UTF-8) of instruction+input+output. See ``batch_slices``.
BATCH_BYTES = 8 << 20
#: With ``threads`` > 1 (and no ``batch_rows``), ``run_pipeline`` cuts about 8 batches a thread, of at
#: least this many rows (and at most ``BATCH_ROWS``): batches of equal work end together.
THREADED_MIN_ROWS = 1024
STEPS_SCHEMA: dict[str, pl.DataType] = {
    "step": pl.Int64, "name": pl.String, "filter": pl.String, "kind": pl.String,
    "records_in": pl.Int64, "kept": pl.Int64, "dropped": pl.Int64, "changed": pl.Int64,
    "seconds": pl.Float64,
}


@dataclass(frozen=True)
class Measured:
    """What a filter found: one value per record, keep/drop, and an optional detail string."""

    value: pl.Series                # Float64; null where the measure does not apply
    keep: pl.Series                 # Boolean, no nulls
    detail: pl.Series | None = None  # Utf8 (matched text, duplicate_of, judge reason …)


@dataclass(frozen=True)
class Rewritten:
    """What a transform did: the rewritten frame and which records it changed."""

    frame: pl.DataFrame
    changed: pl.Series               # Boolean, no nulls
    value: pl.Series | None = None   # Float64, e.g. the share of characters changed
    detail: pl.Series | None = None  # Utf8, e.g. the first change "們→们"


class _Step:
    """What filters and transforms share: parameters and the columns they read."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "filter"

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def required_columns(self) -> tuple[str, ...]:
        """Columns the step reads; checked against the input before any step runs."""
        return ()


@dataclass
class Filter(_Step, ABC):
    """Base class. Subclasses are dataclasses whose fields are the documented parameters."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: "value <= threshold keeps" style hint for plots and the threshold tuner
    threshold_fields: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "filter"
    #: True when ``details(frame, values)`` of a record depends on that record alone, so the
    #: pipeline may ask for the details of the dropped records only (rule filters); leave it
    #: False when a detail needs the whole frame (``duplicate_of``).
    details_per_record: ClassVar[bool] = False
    #: True when ``measure(frame)`` (and ``details``) of a record depends on that record alone,
    #: so the pipeline measures the frame in bounded batches (``measure_batched``) and the same
    #: ``measure(batch) -> values`` serves a streaming engine or Ray ``map_batches``. Leave it
    #: False when a value needs the whole frame (deduplication).
    per_record: ClassVar[bool] = False

    @abstractmethod
    def measure(self, frame: pl.DataFrame) -> pl.Series:
        """One Float64 value per record (null where not applicable)."""

    @abstractmethod
    def keep(self, values: pl.Series) -> pl.Series:
        """Boolean keep mask from measured values (null values are kept)."""

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        """Optional per-record explanation (e.g. the matched URL)."""
        return None

    def apply(self, frame: pl.DataFrame, batch_rows: int | None = None, batch_bytes: int | None = None) -> Measured:
        """Measure, keep and details of every record (in batches when ``per_record``)."""
        values = measure_batched(self, frame, batch_rows, batch_bytes)
        keep = self.keep(values).fill_null(True).cast(pl.Boolean)
        return Measured(values, keep, details_batched(self, frame, values, batch_rows, batch_bytes))

    def as_step(self) -> "Filter | Transform":
        """What the pipeline runs for this filter; a filter with a conversion mode (e.g.
        ``traditional`` with ``convert: true``) returns its transform here."""
        return self

    # -- the stream protocol: how an engine that never holds every record runs a step that
    # needs every record (``per_record = False``). Two passes over the records: ``stream_keys``
    # on each batch (a small table, a few to ~100 bytes a record), then ``stream_decide`` once on
    # the keys of all records. ``decisions`` and ``Decided`` (below) turn that into the dropped
    # records, which a third pass applies batch by batch through ``run_batch``.

    def stream_keys(self, batch: pl.DataFrame) -> pl.DataFrame | None:
        """The per-record keys ``stream_decide`` needs, for one batch: a frame with
        ``record_id`` and the step's own columns, one row per record in batch order. None (the
        default): the step cannot stream; an engine then holds the records it sees at once."""
        return None

    def stream_decide(self, keys: pl.DataFrame | pl.LazyFrame,
                      reread: Callable[[], Iterable[pl.DataFrame]] | None) -> pl.DataFrame:
        """Given the keys of every record (``stream_keys`` of each batch, concatenated in input
        order; a LazyFrame when an engine spilled them to disk), per record: ``record_id``,
        ``value`` (Float64, as ``measure`` gives on the whole frame) and ``detail`` (String or
        null; used unless ``details_per_record``). ``reread()`` yields the records again, in
        batches, for the few a decision needs the text of (near dedup verifies its candidates)."""
        raise NotImplementedError(f"filter {self.name!r} has no stream protocol")


@dataclass
class Transform(_Step, ABC):
    """A step that rewrites text columns and drops nothing (records changed are counted)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "transform"
    #: True when a record's rewrite depends on that record alone: applied in batches.
    per_record: ClassVar[bool] = False

    @abstractmethod
    def transform(self, frame: pl.DataFrame) -> Rewritten:
        """The rewritten frame (same rows, same order, same columns) and the changed mask."""

    def _checked(self, frame: pl.DataFrame) -> Rewritten:
        out = self.transform(frame)
        if out.frame.height != frame.height or out.frame.columns != frame.columns:
            raise RuntimeError(f"transform {self.name!r} must keep the rows and columns of its input")
        return out

    def apply(self, frame: pl.DataFrame, batch_rows: int | None = None, batch_bytes: int | None = None) -> Rewritten:
        """The rewritten frame and changed mask (in batches when ``per_record``)."""
        bounds = _step_batches(self, frame, batch_rows, batch_bytes)
        if len(bounds) == 1:
            out = self._checked(frame)
        else:
            parts = [self._checked(frame.slice(o, n)) for o, n in bounds]
            out = Rewritten(
                pl.concat([p.frame for p in parts], how="vertical"),
                pl.concat([p.changed for p in parts]),
                _concat_optional([p.value for p in parts], pl.Float64),
                _concat_optional([p.detail for p in parts], pl.String))
        return Rewritten(out.frame, out.changed.fill_null(False).cast(pl.Boolean), out.value, out.detail)

    def as_step(self) -> "Filter | Transform":
        return self


def register(cls):
    """Class decorator: make a filter (or transform) available by its ``name`` in recipes."""
    if cls.name in FILTERS and FILTERS[cls.name] is not cls:
        raise ValueError(f"two filters are named {cls.name!r}: {FILTERS[cls.name].__module__} and {cls.__module__}")
    FILTERS[cls.name] = cls
    return cls


def available_filters() -> dict[str, type[Filter] | type[Transform]]:
    """Every registered filter and transform, by name. ``cqia_nb.filter`` imports every module that
    defines one, and Python runs a package's ``__init__`` before any of its modules, so the
    registry is complete whatever was imported first."""
    return dict(sorted(FILTERS.items()))


# ----------------------------------------------------------------------------- batches

def batch_slices(frame: pl.DataFrame, columns: Sequence[str] = (), batch_rows: int | None = None,
                 batch_bytes: int | None = None) -> list[tuple[int, int]]:
    """(offset, length) of consecutive batches covering ``frame``: at most ``batch_rows`` rows
    (default ``BATCH_ROWS``) and at most ``batch_bytes`` UTF-8 bytes (default ``BATCH_BYTES``)
    in the string ``columns`` that exist in the frame; a record longer than that is a batch of
    its own. Batches are cut from the lengths only (no text is copied)."""
    rows = max(1, int(batch_rows or BATCH_ROWS))
    cap = max(1, int(batch_bytes or BATCH_BYTES))
    n = frame.height
    if n == 0:
        return [(0, 0)]
    cols = [c for c in dict.fromkeys(columns) if c in frame.columns and frame.schema[c] == pl.String]
    if not cols:
        return [(o, min(rows, n - o)) for o in range(0, n, rows)]
    nbytes = frame.select(pl.sum_horizontal([pl.col(c).str.len_bytes().fill_null(0).cast(pl.Int64)
                                             for c in cols]).alias("b")).to_series().to_numpy()
    if n <= rows and int(nbytes.sum()) <= cap:
        return [(0, n)]
    cum = np.concatenate(([0], np.cumsum(nbytes)))
    out, o = [], 0
    while o < n:
        e = min(o + rows, int(np.searchsorted(cum, cum[o] + cap, side="right")) - 1, n)
        e = max(e, o + 1)
        out.append((o, e - o))
        o = e
    return out


def _step_batches(step: "Filter | Transform", frame: pl.DataFrame, batch_rows: int | None,
                  batch_bytes: int | None) -> list[tuple[int, int]]:
    if not step.per_record:  # the step needs every record at once (deduplication ...)
        return [(0, frame.height)]
    return batch_slices(frame, step.required_columns(), batch_rows, batch_bytes)


def _concat_optional(parts: list[pl.Series | None], dtype: pl.DataType) -> pl.Series | None:
    if any(p is None for p in parts):
        return None
    return pl.concat([p.cast(dtype) for p in parts])


def measure_batched(flt: "Filter", frame: pl.DataFrame, batch_rows: int | None = None,
                    batch_bytes: int | None = None) -> pl.Series:
    """``flt.measure`` as Float64, over zero-copy slices of ``frame`` when the filter is
    ``per_record`` (one call otherwise); the values equal one ``measure(frame)`` call."""
    bounds = _step_batches(flt, frame, batch_rows, batch_bytes)
    parts = []
    for o, n in bounds:
        batch = frame if len(bounds) == 1 else frame.slice(o, n)
        v = flt.measure(batch).cast(pl.Float64)
        if v.len() != n:
            raise RuntimeError(f"filter {flt.name!r} measured {v.len()} values for {n} records")
        parts.append(v)
        if len(bounds) > 1:
            _release_free_memory()
    return parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=True)


def details_batched(flt: "Filter", frame: pl.DataFrame, values: pl.Series, batch_rows: int | None = None,
                    batch_bytes: int | None = None) -> pl.Series | None:
    """``flt.details(frame, values)``, in batches when the filter is ``per_record``."""
    bounds = _step_batches(flt, frame, batch_rows, batch_bytes)
    if len(bounds) == 1:
        return flt.details(frame, values)
    return _concat_optional([flt.details(frame.slice(o, n), values.slice(o, n)) for o, n in bounds], pl.String)


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(ok, value converted to the hinted type): lists become tuples where a tuple is hinted,
    ints are accepted for floats; bools are never taken for numbers."""
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(hint), value
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if isinstance(value, str) and args and args[0] is str:
            value = [value]  # a single pattern / word / domain where a list is expected
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for item in value:
            ok, v = _coerce(item, args[0]) if args else (True, item)
            if not ok:
                return False, value
            out.append(v)
        return True, (tuple(out) if origin is tuple else out)
    if origin is dict:
        return isinstance(value, dict), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, (float(value) if ok else value)
    if hint is str:
        return isinstance(value, str), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value


def make_filter(name: str, **params: Any) -> Filter | Transform:
    """Build a filter from a recipe step; unknown names and parameters get a clear error."""
    known = available_filters()
    if not isinstance(name, str) or name not in known:
        close = [k for k in known if isinstance(name, str) and (name in k or k in name)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown filter {name!r}{hint}; available: {', '.join(known)}")
    cls = known[name]
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields_))
    if unknown:
        raise ValueError(f"filter {name!r} has no parameter(s) {unknown}{did_you_mean(unknown[0], fields_)}; "
                         f"its parameters: {sorted(fields_)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: skip type checks, not the step
        hints = {}
    checked = {}
    for k, v in params.items():
        if k in hints:
            ok, v2 = _coerce(v, hints[k])
            if not ok:
                raise ValueError(f"filter {name!r} parameter {k!r} expects {_type_name(hints[k])}, "
                                 f"got {v!r} ({type(v).__name__})")
            v = v2
        checked[k] = v
    try:
        return cls(**checked)
    except (TypeError, ValueError, re.error) as e:
        raise ValueError(f"filter {name!r}: {e}") from e


@dataclass
class StepConfig:
    """One recipe step: a filter name, its parameters, and an optional label."""

    filter: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    kind: str | None = None  # "transform" when the recipe said `transform: NAME`

    @property
    def step_name(self) -> str:
        return self.label or self.filter


def _yaml_error_step(text: str, line: int | None) -> str:
    """'step N' for the recipe line ``line`` (0-based), found by counting `- ` items under steps."""
    if line is None:
        return ""
    n, in_steps = 0, False
    for i, raw in enumerate(text.splitlines()):
        if i > line:
            break
        if re.match(r"^steps\s*:", raw):
            in_steps = True
            continue
        if in_steps and re.match(r"^\S", raw) and not raw.startswith("#"):
            in_steps = False
        if in_steps and re.match(r"^\s*-\s", raw + " "):
            n += 1
    return f" (in step {n})" if n else ""


@dataclass
class PipelineConfig:
    """An ordered list of steps, loadable from a YAML recipe (see ``recipes/``)."""

    steps: list[StepConfig] = field(default_factory=list)
    name: str = "pipeline"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "PipelineConfig":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: a recipe is a mapping with a `steps:` list, got {type(d).__name__}")
        unknown = set(d) - {"name", "steps"}
        if unknown:
            raise ConfigError(f"{source}: {unknown_keys_message(unknown, ['name', 'steps'])}")
        raw_steps = d.get("steps")
        if raw_steps is not None and not isinstance(raw_steps, list):
            raise ValueError(f"{source}: `steps:` must be a list of `- filter: NAME` items")
        steps = []
        for i, raw in enumerate(raw_steps or [], start=1):
            if not isinstance(raw, dict) or not ("filter" in raw or "transform" in raw):
                raise ValueError(f"{source}: step {i} needs a 'filter:' key (or 'transform:'), got {raw!r}; "
                                 "write it as `- filter: NAME` followed by its parameters")
            raw = dict(raw)
            if "filter" in raw and "transform" in raw:
                raise ValueError(f"{source}: step {i} has both 'filter:' and 'transform:'; keep one")
            kind = "transform" if "transform" in raw else None
            name = raw.pop("transform") if kind else raw.pop("filter")
            label = raw.pop("label", None)
            nested = raw.pop("params", None)
            if nested is not None:
                if not isinstance(nested, dict):
                    raise ValueError(f"{source}: step {i} ({name}): 'params:' must be a mapping")
                raw = {**nested, **raw}
            if not isinstance(name, str):
                raise ValueError(f"{source}: step {i}: the filter name must be a string, got {name!r}")
            if label is not None and not isinstance(label, str):
                raise ValueError(f"{source}: step {i} ({name}): 'label:' must be a string, got {label!r}")
            steps.append(StepConfig(name, raw, label, kind))
        if not steps:
            raise ValueError(f"{source}: no steps; a recipe lists `steps:` with one `- filter: NAME` each")
        return cls(steps=steps, name=str(d.get("name", Path(source).stem)))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> "PipelineConfig":
        """The recipe's pipeline, with ``--set`` overrides (:meth:`FilterRun.from_yaml`)."""
        return FilterRun.from_yaml(path, overrides).pipeline

    def step_names(self) -> list[str]:
        """Unique step names: the label or filter name, repeats suffixed "#2", "#3"."""
        seen: dict[str, int] = {}
        out = []
        for s in self.steps:
            n = seen.get(s.step_name, 0) + 1
            seen[s.step_name] = n
            out.append(s.step_name if n == 1 else f"{s.step_name}#{n}")
        return out

    def build(self) -> list[tuple[str, Filter | Transform]]:
        """Instantiate every step up front, so a bad recipe fails before any work."""
        out, errors = [], []
        for i, (s, step_name) in enumerate(zip(self.steps, self.step_names()), start=1):
            try:
                built = make_filter(s.filter, **s.params).as_step()
                if s.kind == "transform" and not isinstance(built, Transform):
                    raise ValueError(f"{s.filter!r} is a filter, not a transform: write `- filter: {s.filter}`")
                out.append((step_name, built))
            except ValueError as e:
                errors.append(f"step {i} ({s.step_name}): {e}")
        if errors:
            raise ValueError("bad recipe:\n" + "\n".join(errors))
        return out


@dataclass
class FilterRun:
    """What ``cqia-nb filter`` runs: a recipe's pipeline, where the records come from and where the
    outputs go. A recipe may set ``input:`` ('bundled', a COIG-CQIA folder or .jsonl file, or a
    previous run's kept.parquet) and ``out_dir:`` beside ``name:`` and ``steps:``; ``--set``
    overrides any key, a step's parameter by the step's label or filter name
    (``steps.special_chars.max_ratio=0.3``) or 1-based position (``steps.6.max_ratio=0.3``)."""

    pipeline: PipelineConfig
    input: str = "bundled"
    out_dir: str | None = None
    #: one batch in memory at a time (``cqia_nb.filter.streaming``); None: when the input is large
    streaming: bool | None = None
    #: where streaming spills keys and intermediate records (default: inside out_dir)
    spill_dir: str | None = None
    #: "local" (this process) or "ray" (``cqia_nb.filter.ray_engine``: Ray Data, same outputs)
    engine: str = "local"
    #: the Ray cluster for engine "ray": 'auto' or HOST:PORT; None starts a local Ray instance
    address: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.input, str) or not self.input:
            raise ConfigError(f"input: a path or 'bundled', got {self.input!r}")
        if self.streaming is not None and not isinstance(self.streaming, bool):
            raise ConfigError(f"streaming: true, false or null (decide by the input's size), got {self.streaming!r}")
        if self.out_dir is not None and (not isinstance(self.out_dir, str) or not self.out_dir):
            raise ConfigError(f"out_dir: a folder path, got {self.out_dir!r}")
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"engine: 'local' or 'ray', got {self.engine!r}")
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ConfigError(f"address: a Ray cluster's HOST:PORT or 'auto', got {self.address!r}")
        if self.address is not None and self.engine != "ray":
            raise ConfigError("address: a Ray cluster is for engine 'ray'; add --engine ray (or leave out --address)")
        if self.engine == "ray" and self.streaming:
            raise ConfigError("streaming is the local engine's way to bound memory; with engine 'ray' the records "
                              "are spread over the cluster's object store: leave out --streaming or --engine ray")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "FilterRun":
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: a recipe is a mapping with a `steps:` list, got {type(d).__name__}")
        return config_from_mapping(cls, d, where=source, parts={"pipeline": PipelineConfig})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> "FilterRun":
        """A recipe file plus ``overrides`` (``KEY=VALUE`` strings or a parsed mapping, dotted keys)."""
        d = read_yaml_mapping(path, what="recipe", missing_hint=" (see recipes/ for examples)",
                              locate=_yaml_error_step)
        return cls.from_dict(apply_overrides(d, overrides), str(path))


@dataclass
class PipelineResult:
    kept: pl.DataFrame
    dropped: pl.DataFrame   # input columns + step, step_name, filter, value, detail
    steps: pl.DataFrame     # step, name, filter, kind, records_in, kept, dropped, changed, seconds
    measured: dict[str, pl.DataFrame] = field(default_factory=dict)  # step -> record_id, value, keep[, changed]
    config: PipelineConfig | None = None

    @property
    def n_in(self) -> int:
        return self.kept.height + self.dropped.height

    def summary(self) -> str:
        return summary_line(self.n_in, self.kept.height, self.dropped.height)

    def reconciles(self) -> bool:
        """in == kept + dropped, and each step's records_in == kept + dropped == next records_in."""
        s = self.steps
        if s.height == 0:
            return True
        ok = bool((s["records_in"] == s["kept"] + s["dropped"]).all())
        ok &= bool((s["kept"].head(s.height - 1) == s["records_in"].tail(s.height - 1)).all())
        ok &= int(s["kept"][-1]) == self.kept.height
        ok &= int(s["dropped"].sum()) == self.dropped.height
        return ok


def check_columns(frame: pl.DataFrame, built: list[tuple[str, Filter | Transform]]) -> None:
    """Fail before any work when a step reads a column the input does not have."""
    errors = []
    for i, (step, flt) in enumerate(built, start=1):
        missing = [c for c in flt.required_columns() if c not in frame.columns]
        if missing:
            errors.append(f"step {i} ({step}): the input has no column(s) {missing}; "
                          f"its columns: {frame.columns}. Change the step's `field:` parameter")
    if errors:
        raise ValueError("bad recipe for this input:\n" + "\n".join(errors))


@dataclass
class StepOutput:
    """What one step did to the records it saw (one batch, or all batches added up)."""

    n_in: int = 0
    kept: int = 0
    changed: int = 0
    seconds: float = 0.0
    measured: list[pl.DataFrame] = field(default_factory=list)  # record_id, value, keep[, changed]
    gone: list[pl.DataFrame] = field(default_factory=list)      # dropped records + audit columns

    def add(self, other: "StepOutput") -> None:
        """Add what ``other`` (a later batch) counted and kept."""
        self.n_in += other.n_in
        self.kept += other.kept
        self.changed += other.changed
        self.seconds += other.seconds
        self.measured.extend(other.measured)
        self.gone.extend(other.gone)


def _own_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its String columns copied into buffers of their own. A few rows filtered out
    of a batch are views into the batch's whole text buffers (the input's, or those a transform
    wrote for the batch), so keeping them until the end of the run would keep every batch's
    rewritten text alive: measured on the real data x10, 480 bytes per input record for 2 % of
    the records dropped. Copying their strings costs only their own bytes. Values are unchanged
    (a null stays null)."""
    cols = [pl.concat_str([pl.col(c), pl.lit("")]).alias(c) for c, t in frame.schema.items() if t == pl.String]
    return frame.with_columns(cols) if cols else frame


def _no_details(n: int) -> pl.Series:
    return pl.Series("detail", [None] * n, dtype=pl.String)


def run_batch(batch: pl.DataFrame, steps: Sequence[tuple[int, str, Filter | Transform]],
              outputs: Sequence[StepOutput]) -> pl.DataFrame:
    """Run consecutive steps ((position, step name, filter) each) on one batch of records and
    return the records the batch keeps, rewritten by the transforms among the steps; each
    step's counts, measured values and dropped records are added to its StepOutput.

    For per-record steps (``per_record = True``) a record's fate depends on that record alone,
    so running this over any partition of the records in order (slices of a frame here, a
    streaming engine's or Ray Data's batches elsewhere) gives the results of one call on all of
    them. A step that needs every record (deduplication) is run with the whole frame as its batch."""
    b = batch
    for (i, step, flt), acc in zip(steps, outputs):
        n_in = b.height
        if n_in == 0:  # an emptied batch adds nothing; run_pipeline fills tables no record reached
            break
        t0 = time.perf_counter()
        try:
            if isinstance(flt, Transform):
                r = flt._checked(b)
                changed = r.changed.fill_null(False).cast(pl.Boolean)
                if "record_id" in b.columns:
                    value = r.value if r.value is not None else changed.cast(pl.Float64)
                    acc.measured.append(b.select("record_id").with_columns(
                        value.cast(pl.Float64).alias("value"), pl.lit(True).alias("keep"), changed.alias("changed")))
                b = r.frame
                acc.n_in += n_in
                acc.kept += n_in
                acc.changed += int(changed.sum())
                acc.seconds += time.perf_counter() - t0
                continue
            values = flt.measure(b).cast(pl.Float64)
            if values.len() != n_in:
                raise RuntimeError(f"filter {flt.name!r} measured {values.len()} values for {n_in} records")
            keep = flt.keep(values).fill_null(True).cast(pl.Boolean)
            drop = ~keep
            gone = b.filter(drop)
            if flt.details_per_record:  # details of the dropped records only
                d = flt.details(gone, values.filter(drop)) if gone.height else None
                dropped_detail = d.cast(pl.String) if d is not None else _no_details(gone.height)
            else:
                d = flt.details(b, values)
                dropped_detail = d.cast(pl.String).filter(drop) if d is not None else _no_details(gone.height)
        except Exception as e:
            raise RuntimeError(f"step {i} ({step}, filter {flt.name!r}) failed on {n_in} records: "
                               f"{type(e).__name__}: {e}") from e
        if dropped_detail.len() != gone.height:
            raise RuntimeError(f"filter {flt.name!r} gave {dropped_detail.len()} details for {gone.height} records")
        if "record_id" in b.columns:
            acc.measured.append(b.select("record_id").with_columns(values.alias("value"), keep.alias("keep")))
        if gone.height:
            acc.gone.append(_own_strings(gone).with_columns(
                pl.lit(i, dtype=pl.Int64).alias("step"), pl.lit(step, dtype=pl.String).alias("step_name"),
                pl.lit(flt.name, dtype=pl.String).alias("filter"),
                values.filter(drop).alias("value"), dropped_detail.alias("detail")))
            b = b.filter(keep)
        acc.n_in += n_in
        acc.kept += b.height
        acc.seconds += time.perf_counter() - t0
    return b


#: What ``decisions`` returns: the records a step drops, with the value and the detail.
DECISION_SCHEMA: dict[str, pl.DataType] = {"record_id": pl.String, "value": pl.Float64, "detail": pl.String}


def decisions(flt: Filter, keys: pl.DataFrame | pl.LazyFrame,
              reread: Callable[[], Iterable[pl.DataFrame]] | None, **hints: Any) -> pl.DataFrame:
    """The records ``flt`` drops, decided from the keys of every record (the stream protocol):
    ``record_id``, ``value``, ``detail`` (null where the filter gives its details per record:
    ``Decided`` asks for them when it sees the record's text). Small: dropped records only.
    ``hints``: what an engine computed for the step beforehand (near dedup's ``candidates``)."""
    d = flt.stream_decide(keys, reread, **hints)
    values = d["value"].cast(pl.Float64)
    keep = flt.keep(values).fill_null(True).cast(pl.Boolean)
    detail = (d["detail"].cast(pl.String) if "detail" in d.columns and not flt.details_per_record
              else _no_details(d.height))
    return (d.select(pl.col("record_id").cast(pl.String)).with_columns(values.alias("value"), detail.alias("detail"))
            .filter(~keep))


class Decided(Filter):
    """A step that needs every record, after ``decisions``: a per-record step that
    ``run_batch`` runs on any batch (of any engine, in any order), each record looked up by
    record_id in the small table of the records the step drops. Named as the step it stands for."""

    per_record = True

    def __init__(self, flt: Filter, dropped: pl.DataFrame):
        self.inner, self.dropped, self.name = flt, dropped, flt.name  # type: ignore[misc]
        self.details_per_record = flt.details_per_record  # type: ignore[misc]

    # Pickled as Arrow (a cluster engine ships the step to its workers): polars' own pickling
    # (DataFrame.serialize) hung in Ray's scheduling thread on a frame gathered from Ray blocks.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "dropped": self.dropped.to_arrow()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        dropped = pl.from_arrow(state["dropped"])
        assert isinstance(dropped, pl.DataFrame)
        self.__dict__.update({**state, "dropped": dropped})

    def _lookup(self, frame: pl.DataFrame, column: str) -> pl.Series:
        return frame.select(pl.col("record_id").cast(pl.String)).join(
            self.dropped, on="record_id", how="left", maintain_order="left")[column]

    def required_columns(self) -> tuple[str, ...]:
        return self.inner.required_columns()

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return self._lookup(frame, "value")

    def keep(self, values: pl.Series) -> pl.Series:
        return values.is_null()  # only the dropped records have a value here

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        if self.details_per_record:
            return self.inner.details(frame, values)
        return self._lookup(frame, "detail")


_release_free_memory = release_free_memory  # the streaming and Ray engines import it from here


def segments(built: list[tuple[str, Filter | Transform]]) -> list[list[int]]:
    """Step indices grouped into runs of consecutive per-record steps; any other step alone:
    the stages every engine runs (a run of per-record steps is one pass over the records)."""
    out: list[list[int]] = []
    for k, (_, flt) in enumerate(built):
        if flt.per_record and out and built[out[-1][-1]][1].per_record:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def steps_table(built: Sequence[tuple[str, Filter | Transform]], outs: Sequence[StepOutput]) -> pl.DataFrame:
    """The per-step table (``STEPS_SCHEMA``) from what each step's StepOutput added up."""
    rows = [(i, step, flt.name, "transform" if isinstance(flt, Transform) else "filter", acc.n_in, acc.kept,
             acc.n_in - acc.kept, acc.changed, round(acc.seconds, 4))
            for i, ((step, flt), acc) in enumerate(zip(built, outs), start=1)]
    return pl.DataFrame(rows, schema=STEPS_SCHEMA, orient="row")


def run_batches(frame: pl.DataFrame, bounds: Sequence[tuple[int, int]],
                steps: Sequence[tuple[int, str, Filter | Transform]], outputs: Sequence[StepOutput],
                threads: int = 1) -> pl.DataFrame:
    """``run_batch`` over the slices ``bounds`` of ``frame`` (per-record steps only), the kept
    records concatenated in input order. With ``threads`` > 1 up to that many batches run at once
    in a thread pool (the kernels spend their time in numpy, polars and OpenCC, which release the
    GIL); each batch counts into StepOutputs of its own, added to ``outputs`` in batch order, so the
    results are those of one thread. Each batch in flight holds its own arrays (memory: ``threads``
    batches). ``seconds`` of a step is then the sum over batches of their time in the step."""
    if len(bounds) == 1:
        out = run_batch(frame, steps, outputs)
        _release_free_memory()
        return out
    if threads <= 1:
        parts = []
        for o, n in bounds:
            parts.append(run_batch(frame.slice(o, n), steps, outputs))
            _release_free_memory()
        return pl.concat(parts, how="vertical")
    from concurrent.futures import ThreadPoolExecutor

    def one(bound: tuple[int, int]) -> tuple[pl.DataFrame, list[StepOutput]]:
        local = [StepOutput() for _ in outputs]
        kept = run_batch(frame.slice(*bound), steps, local)
        _release_free_memory()
        return kept, local

    parts = []
    with ThreadPoolExecutor(max_workers=min(threads, len(bounds)), thread_name_prefix="cqia-batch") as pool:
        for kept, local in pool.map(one, bounds):
            parts.append(kept)
            for acc, part in zip(outputs, local):
                acc.add(part)
    return pl.concat(parts, how="vertical")


def run_pipeline(frame: pl.DataFrame, config: PipelineConfig, progress: bool = False,
                 batch_rows: int | None = None, batch_bytes: int | None = None,
                 threads: int = 1) -> PipelineResult:
    """Apply the steps in order; every removed record is kept in ``dropped`` with its reason.

    Consecutive per-record steps (rule filters, ``to_simplified``) run batch by batch: each
    batch (``batch_slices``: ``batch_rows`` rows / ``batch_bytes`` bytes, defaults
    ``BATCH_ROWS`` / ``BATCH_BYTES``; zero-copy slices) goes through all of them (``run_batch``)
    before the next, so memory holds one batch's arrays, not the whole input's; steps that need
    every record (deduplication) run on all records kept so far. The results are those of
    running each step on the whole frame, whatever the batch size. ``threads`` > 1 runs that many
    batches at once (``run_batches``), with the same results; without ``batch_rows`` the batches are
    then smaller (about 8 a thread, ``THREADED_MIN_ROWS`` rows at least)."""
    built = config.build()
    check_columns(frame, built)
    current = frame
    outs = [StepOutput() for _ in built]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(built), desc="filters", unit="step")
    for seg in segments(built):
        steps = [(k + 1, *built[k]) for k in seg]
        accs = [outs[k] for k in seg]
        if not built[seg[0]][1].per_record:
            current = run_batch(current, steps, accs)
        else:
            cols = [c for k in seg for c in built[k][1].required_columns()]
            rows = batch_rows
            if rows is None and threads > 1:  # about 8 batches a thread, so that the threads end together
                rows = min(BATCH_ROWS, max(THREADED_MIN_ROWS, -(-current.height // (8 * threads))))
            current = run_batches(current, batch_slices(current, cols, rows, batch_bytes), steps, accs, threads)
        if bar is not None:
            bar.update(len(seg))
    if bar is not None:
        bar.close()
    measured, dropped_parts = {}, []
    for i, ((step, flt), acc) in enumerate(zip(built, outs), start=1):
        kind = "transform" if isinstance(flt, Transform) else "filter"
        if acc.measured:
            measured[step] = acc.measured[0] if len(acc.measured) == 1 else pl.concat(acc.measured)
        elif "record_id" in frame.columns:  # no record reached the step: an empty table, same columns
            extra = [pl.lit(None, dtype=pl.Boolean).alias("changed")] if kind == "transform" else []
            measured[step] = frame.clear().select("record_id").with_columns(
                pl.lit(None, dtype=pl.Float64).alias("value"), pl.lit(None, dtype=pl.Boolean).alias("keep"), *extra)
        dropped_parts.extend(acc.gone)
    empty = with_audit_columns(frame.clear())
    dropped = pl.concat([empty, *dropped_parts], how="vertical_relaxed") if dropped_parts else empty
    result = PipelineResult(current, dropped, steps_table(built, outs), measured, config)
    assert current.height + dropped.height == frame.height  # the audit trail is complete
    return result


def measure_all(frame: pl.DataFrame, config: Any, batch_rows: int | None = None,
                batch_bytes: int | None = None) -> dict[str, pl.DataFrame]:
    """Every filter step of ``config`` (a PipelineConfig) measured on *all* records, not only
    on what earlier steps kept (transforms are applied in order, nothing is dropped):
    step -> frame(record_id, value, keep). Per-record steps run in batches (``run_pipeline``)."""

    built = config.build()
    check_columns(frame, built)
    current = frame
    out: dict[str, pl.DataFrame] = {}
    for step, flt in built:
        if isinstance(flt, Transform):
            current = flt.apply(current, batch_rows, batch_bytes).frame
            continue
        m = flt.apply(current, batch_rows, batch_bytes)
        out[step] = current.select(pl.col("record_id").cast(pl.String)).with_columns(
            m.value.alias("value"), m.keep.alias("keep"))
    return out
