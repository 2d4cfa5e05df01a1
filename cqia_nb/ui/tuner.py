"""Threshold tuner: move a slider per filter, see how many records it would drop, and which.

::

    result = run_pipeline(frame, cfg)
    tuner = ThresholdTuner(frame, result)            # or a dict step -> frame(record_id, value)
    tuner                                            # sliders, counts, histograms, examples
    tuner.set_threshold("traditional", 0.1)          # the same from code
    tuner.to_recipe_params()                         # {"traditional": {"filter": "traditional", "max_ratio": 0.1}}

A threshold is a direction and a number: ``"above"`` drops records whose value is ``> t``,
``"below"`` drops ``< t``; a null (or NaN) value is never dropped, as in the pipeline. The
pure functions under the widget (:func:`would_drop`, :func:`drop_label`,
:func:`infer_threshold`, :func:`histogram`) are what the tests check.

Counts per filter are over the records that filter measured; the overall count is the union of
the enabled filters over ``frame``. The values of a pipeline run were measured on what the
earlier steps kept, so records dropped early have no value at later steps: to tune every filter
on every record, measure them independently with :func:`measure_all` first.

Recipe parameters: when the filter and its recipe are known (a :class:`PipelineResult`, or
``config=``), a threshold maps to the filter's ``max_*`` (above) or ``min_*`` (below) parameter
from ``threshold_fields`` if that parameter reproduces the run's keep/drop decisions exactly on
the measured values (so a parameter that is not a bound on the value, like ``truncated``'s
``min_chars``, is never offered). Integer parameters are rounded the safe way (floor for above,
ceil for below). Steps without such a parameter come back as ``threshold`` + ``direction``.

The histogram is a plotly ``FigureWidget`` when anywidget is installed, otherwise a static
figure re-rendered into an ``Output`` on every change. Step names and record text are
HTML-escaped wherever they are shown.
"""

from __future__ import annotations

import html
import json
import math
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import ipywidgets as w
import numpy as np
import polars as pl

from cqia_nb.ui.browser import DatasetBrowser
from cqia_nb.ui.common import Displayable

DIRECTIONS: tuple[str, ...] = ("above", "below")
_DIRECTION_ALIASES = {
    "above": "above", "drop above": "above", ">": "above", "max": "above",
    "below": "below", "drop below": "below", "<": "below", "min": "below",
}
UNION = "(union)"
_DROP_COLOR, _KEEP_COLOR = "#d62728", "#9aa5b1"


def normalize_direction(direction: str) -> str:
    """"above" / "below" (also accepts "drop above", ">", "max", "drop below", "<", "min")."""
    d = _DIRECTION_ALIASES.get(str(direction).strip().lower())
    if d is None:
        raise ValueError(f"direction must be 'above' (drop values > t) or 'below' (drop values < t), "
                         f"got {direction!r}")
    return d


def would_drop(values: pl.Series | Sequence[float | None], threshold: float, direction: str) -> pl.Series:
    """Boolean mask, no nulls: ``value > threshold`` ("above") or ``< threshold`` ("below");
    null and NaN values are never dropped."""
    d = normalize_direction(direction)
    s = values if isinstance(values, pl.Series) else pl.Series("value", list(values), dtype=pl.Float64)
    s = s.cast(pl.Float64)
    t = float(threshold)
    mask = (s > t) if d == "above" else (s < t)
    return (mask & s.is_not_nan()).fill_null(False).alias("would_drop")


def drop_label(n_drop: int, n_total: int) -> str:
    """"N of M records would be dropped (x %)" (one decimal; no percentage when M is 0)."""
    if n_total == 0:
        return f"{n_drop:,} of 0 records would be dropped"
    return f"{n_drop:,} of {n_total:,} records would be dropped ({100 * n_drop / n_total:.1f} %)"


def _finite(values: pl.Series) -> np.ndarray:
    a = values.cast(pl.Float64).drop_nulls().to_numpy()
    return a[np.isfinite(a)]


def infer_threshold(measured: pl.DataFrame) -> tuple[str, float]:
    """A starting threshold that reproduces the run's decisions when it can.

    With a ``keep`` column and some drops: "above" at the largest kept value when every
    dropped value is larger, "below" at the smallest kept value when every dropped value is
    smaller; "above" just below the smallest value when every non-null value was dropped (dedup
    steps: kept records have no similarity). Otherwise (nothing dropped, no keep column, mixed):
    "above" at the largest value (drops nothing).
    """
    vals = _finite(measured["value"]) if measured.height else np.array([])
    top = float(vals.max()) if vals.size else 0.0
    if "keep" not in measured.columns or measured.height == 0:
        return "above", top
    m = measured.select(pl.col("value").cast(pl.Float64), pl.col("keep"))
    m = m.filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
    kept, dropped = m.filter(pl.col("keep"))["value"], m.filter(~pl.col("keep"))["value"]
    if dropped.len() == 0 or kept.len() == 0:
        if dropped.len() and not kept.len():  # every measured value was dropped (dedup similarity):
            lo, hi = float(dropped.min()), float(dropped.max())  # just below the smallest one
            return "above", lo - _nice_step(lo, hi, False) if hi > lo else lo - max(abs(lo) * 0.01, 0.01)
        return "above", top
    if dropped.min() > kept.max():
        return "above", float(kept.max())
    if dropped.max() < kept.min():
        return "below", float(kept.min())
    return "above", top


def histogram(values: pl.Series | Sequence[float | None], bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of the finite non-null values; integer-valued data with a small range
    gets one bin per integer."""
    s = values if isinstance(values, pl.Series) else pl.Series(list(values), dtype=pl.Float64)
    a = _finite(s)
    if a.size == 0:
        return np.array([0.0, 1.0]), np.array([0])
    lo, hi = float(a.min()), float(a.max())
    if np.all(a == np.round(a)) and hi - lo <= bins:
        edges = np.arange(lo - 0.5, hi + 1.5, 1.0)
    elif lo == hi:
        edges = np.array([lo - 0.5, hi + 0.5])
    else:
        edges = np.linspace(lo, hi, bins + 1)
    counts, edges = np.histogram(a, bins=edges)
    return edges, counts


def figure_widget_available() -> bool:
    """Whether plotly's FigureWidget works here (it needs anywidget)."""
    try:
        import plotly.graph_objects as go

        go.FigureWidget()
        return True
    except Exception:
        return False


def _int_hint(hint: Any) -> bool:
    if hint is int:
        return True
    args = typing.get_args(hint)
    return int in args and float not in args


def _recipe_param(cls: Any, params: Mapping[str, Any], measured: pl.DataFrame
                  ) -> list[tuple[str, str, float, bool]]:
    """(param, direction, current value, is_int) candidates that reproduce the run's keep mask."""
    if cls is None or "keep" not in measured.columns:
        return []
    try:
        import dataclasses

        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
    except Exception:
        return []
    out = []
    for name in getattr(cls, "threshold_fields", ()):
        direction = "above" if name.startswith("max_") else "below" if name.startswith("min_") else None
        value = params.get(name, defaults.get(name))
        if direction is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        mask = would_drop(measured["value"], float(value), direction)
        if bool((mask == ~measured["keep"].fill_null(True)).all()):
            out.append((name, direction, float(value), _int_hint(hints.get(name))))
    return out


@dataclass
class _Step:
    name: str
    filter: str | None
    measured: pl.DataFrame            # record_id (str), value (f64)[, keep]
    direction: str
    threshold: float
    enabled: bool = True
    recipe: dict[str, Any] | None = None      # the step's recipe params (when known)
    cls: Any = None
    candidates: tuple = ()                    # from _recipe_param
    label: str | None = None                  # the recipe step's label


def _nice_step(lo: float, hi: float, integer: bool) -> float:
    if integer and hi - lo >= 2:
        return 1.0
    span = hi - lo
    if span <= 0:
        return 0.01
    raw = span / 200
    mag = 10 ** math.floor(math.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


class ThresholdTuner(Displayable):
    """Sliders per filter step over measured values; see the module docstring.

    frame: the records the values were measured on (for the overall count and the examples;
        None: count over the measured record_ids, no examples).
    measured: a PipelineResult (its filter steps, in order) or ``{step: frame(record_id, value[, keep])}``.
    thresholds: ``{step: (direction, value)}`` starting points; otherwise the recipe's
        parameter when known, else :func:`infer_threshold`.
    config: the PipelineConfig of a dict of measures (for :meth:`to_recipe_params`).
    """

    def __init__(self, frame: pl.DataFrame | None, measured: Any,
                 thresholds: Mapping[str, tuple[str, float]] | None = None, *,
                 config: Any = None, bins: int = 40, page_size: int = 5) -> None:
        self._frame = frame
        self._bins = bins
        self._page_size = page_size
        steps = self._collect(measured, config)
        thresholds = dict(thresholds or {})
        unknown = sorted(set(thresholds) - {s.name for s in steps})
        if unknown:
            raise ValueError(f"thresholds for unknown step(s) {unknown}; steps: {[s.name for s in steps]}")
        for s in steps:
            if s.name in thresholds:
                d, t = thresholds[s.name]
                s.direction, s.threshold = normalize_direction(d), float(t)
            elif s.candidates:
                _, s.direction, s.threshold, _ = s.candidates[0]
            else:
                s.direction, s.threshold = infer_threshold(s.measured)
        self._steps: dict[str, _Step] = {s.name: s for s in steps}
        self._masks: dict[str, pl.Series] = {}
        if frame is not None and "record_id" in frame.columns:
            self._all_ids = frame["record_id"].cast(pl.String)
        else:
            self._all_ids = (pl.concat([s.measured["record_id"] for s in steps]).unique(maintain_order=True)
                             if steps else pl.Series("record_id", [], dtype=pl.String))
        self._fig_widget = figure_widget_available()
        self._syncing = False
        self._building = True
        self._build()
        self._building = False
        self._refresh_all()

    @staticmethod
    def _collect(measured: Any, config: Any) -> list[_Step]:
        order: list[tuple[str, str | None]]
        if hasattr(measured, "measured") and hasattr(measured, "steps"):
            config = config if config is not None else getattr(measured, "config", None)
            st = measured.steps
            if st.height and "kind" in st.columns:
                st = st.filter(pl.col("kind") == "filter")
            order = [(n, f) for n, f in zip(st["name"].to_list(), st["filter"].to_list())
                     if n in measured.measured] if st.height else [(k, None) for k in measured.measured]
            frames = measured.measured
        elif isinstance(measured, Mapping):
            frames = dict(measured)
            order = [(k, None) for k in frames]
        else:
            raise TypeError(f"measured must be a PipelineResult or a dict of frames, got {type(measured).__name__}")
        recipe: dict[str, tuple[str, dict[str, Any], str | None]] = {}
        classes: dict[str, Any] = {}  # step -> the filter class the recipe builds (its fields give the parameters)
        if config is not None:
            for sc, name in zip(config.steps, config.step_names()):
                recipe[name] = (sc.filter, dict(sc.params), sc.label)
            try:
                classes = {name: type(flt) for name, flt in config.build()}
            except Exception:  # a recipe that does not build here: map no parameters, tune the values alone
                classes = {}
        out = []
        for name, filt in order:
            m = frames[name]
            if not isinstance(m, pl.DataFrame) or "record_id" not in m.columns or "value" not in m.columns:
                raise ValueError(f"measured[{name!r}] must be a frame with record_id and value columns")
            if "changed" in m.columns:  # a transform's measure: nothing to threshold
                continue
            cols = [pl.col("record_id").cast(pl.String), pl.col("value").cast(pl.Float64)]
            if "keep" in m.columns:
                cols.append(pl.col("keep").cast(pl.Boolean))
            m = m.select(cols)
            fname, params, label = recipe.get(name, (filt, None, None))
            cls = classes.get(name) if fname else None
            cands = tuple(_recipe_param(cls, params or {}, m)) if params is not None else ()
            out.append(_Step(name, fname or filt, m, "above", 0.0, True, params, cls, cands, label))
        return out

    # -- pure state

    @property
    def steps(self) -> list[str]:
        return list(self._steps)

    def _get(self, step: str) -> _Step:
        if step not in self._steps:
            raise KeyError(f"no step {step!r}; steps: {self.steps}")
        return self._steps[step]

    def threshold(self, step: str) -> tuple[str, float]:
        s = self._get(step)
        return s.direction, s.threshold

    def enabled(self, step: str) -> bool:
        return self._get(step).enabled

    def drop_mask(self, step: str) -> pl.Series:
        """Would-drop mask aligned with ``measured[step]`` rows."""
        if step not in self._masks:
            s = self._get(step)
            self._masks[step] = would_drop(s.measured["value"], s.threshold, s.direction)
        return self._masks[step]

    def would_drop_ids(self, step: str | None = None) -> pl.Series:
        """record_ids that would be dropped by ``step``, or (None) by any enabled step, in
        frame order."""
        if step is not None:
            s = self._get(step)
            return s.measured["record_id"].filter(self.drop_mask(step))
        parts = [self.would_drop_ids(n) for n, s in self._steps.items() if s.enabled]
        if not parts:
            return pl.Series("record_id", [], dtype=pl.String)
        ids = pl.concat(parts)
        return self._all_ids.filter(self._all_ids.is_in(ids.implode()))

    def n_would_drop(self, step: str | None = None) -> int:
        return self.would_drop_ids(step).len()

    def n_total(self, step: str | None = None) -> int:
        """Records measured by ``step``; for None, the records of ``frame``."""
        return self._all_ids.len() if step is None else self._get(step).measured.height

    def label_text(self, step: str | None = None) -> str:
        return drop_label(self.n_would_drop(step), self.n_total(step))

    @property
    def overall_text(self) -> str:
        n_on = sum(s.enabled for s in self._steps.values())
        return f"overall (union of {n_on} enabled filter{'s' if n_on != 1 else ''}): {self.label_text(None)}"

    def counts(self) -> pl.DataFrame:
        """One row per step plus the union: direction, threshold, enabled, n_total, n_drop, share."""
        rows = []
        for n, s in self._steps.items():
            nd, nt = self.n_would_drop(n), self.n_total(n)
            rows.append((n, s.direction, s.threshold, s.enabled, nt, nd, nd / nt if nt else None))
        nd, nt = self.n_would_drop(None), self.n_total(None)
        rows.append((UNION, None, None, None, nt, nd, nd / nt if nt else None))
        return pl.DataFrame(rows, orient="row", schema={
            "step": pl.String, "direction": pl.String, "threshold": pl.Float64, "enabled": pl.Boolean,
            "n_total": pl.Int64, "n_drop": pl.Int64, "share": pl.Float64})

    def dropped_frame(self, step: str | None = None) -> pl.DataFrame:
        """The records of ``frame`` that would be dropped by ``step`` (None: any enabled step),
        with ``value`` (one step) or ``would_drop_by`` (the union) added."""
        if self._frame is None:
            raise ValueError("no frame given: the tuner only has record_ids and values")
        ids = self.would_drop_ids(step)
        base = self._frame.with_columns(pl.col("record_id").cast(pl.String))
        sub = base.filter(pl.col("record_id").is_in(ids.implode()))
        if step is not None:
            vals = self._get(step).measured.select("record_id", pl.col("value").alias("__value"))
            sub = sub.join(vals, on="record_id", how="left", maintain_order="left")
            return sub.rename({"__value": "value" if "value" not in sub.columns else f"value ({step})"})
        by: dict[str, list[str]] = {}
        for n, s in self._steps.items():
            if s.enabled:
                for rid in self.would_drop_ids(n).to_list():
                    by.setdefault(rid, []).append(n)
        return sub.with_columns(pl.Series("would_drop_by", [", ".join(by.get(r, [])) for r in sub["record_id"].to_list()],
                                          dtype=pl.String))

    def set_threshold(self, step: str, value: float | None = None, direction: str | None = None) -> None:
        """Move a slider (and/or flip its direction) from code; the view updates."""
        s = self._get(step)
        if direction is not None:
            s.direction = normalize_direction(direction)
        if value is not None:
            s.threshold = float(value)
        self._masks.pop(step, None)
        self._sync_controls(step)
        self._refresh(step)

    def set_enabled(self, step: str, enabled: bool = True) -> None:
        """Include (or leave out) a step in the union and in :meth:`to_recipe_params`."""
        self._get(step).enabled = bool(enabled)
        self._sync_controls(step)
        self._refresh(step)

    def to_recipe_params(self) -> dict[str, dict[str, Any]]:
        """The chosen thresholds as recipe steps, by step name (enabled steps only).

        A step whose filter parameter is known (module docstring) comes back as the full step,
        ``{"filter": name, [label,] <its other params>, <param>: <threshold>}``, ready to paste
        into the recipe's ``steps:``; other steps as ``{"filter": name, "threshold": t,
        "direction": "above"|"below"}`` (set the matching parameter by hand).
        """
        out: dict[str, dict[str, Any]] = {}
        for n, s in self._steps.items():
            if not s.enabled:
                continue
            entry: dict[str, Any] = {}
            if s.filter:
                entry["filter"] = s.filter
            if s.label:
                entry["label"] = s.label
            match = next((c for c in s.candidates if c[1] == s.direction), None)
            if match is not None:
                entry.update(s.recipe or {})
                param, _, _, is_int = match
                t = s.threshold
                if is_int:
                    t = math.floor(t) if s.direction == "above" else math.ceil(t)
                entry[param] = int(t) if is_int else float(t)
            else:
                entry.update(threshold=float(s.threshold), direction=s.direction)
            out[n] = entry
        return out

    # -- widget

    def _slider_range(self, s: _Step) -> tuple[float, float, float]:
        vals = _finite(s.measured["value"])
        lo = float(vals.min()) if vals.size else 0.0
        hi = float(vals.max()) if vals.size else 1.0
        lo, hi = min(lo, s.threshold), max(hi, s.threshold)
        integer = bool(vals.size) and bool(np.all(vals == np.round(vals)))
        if hi <= lo:
            lo, hi = lo - 1.0, hi + 1.0
        return lo, hi, _nice_step(lo, hi, integer)

    def _build(self) -> None:
        lay = w.Layout
        self._controls: dict[str, dict[str, Any]] = {}
        rows: list[w.Widget] = []
        for n, s in self._steps.items():
            lo, hi, step = self._slider_range(s)
            title = w.HTML(f"<b>{html.escape(n)}</b>"
                           + (f' <span style="color:#888">({html.escape(s.filter)})</span>' if s.filter and s.filter != n else ""))
            on = w.Checkbox(value=s.enabled, description="use", indent=False, layout=lay(width="60px"))
            direction = w.ToggleButtons(options=[("drop above", "above"), ("drop below", "below")],
                                        value=s.direction, style={"button_width": "90px"})
            slider = w.FloatSlider(min=lo, max=hi, step=step, value=s.threshold, description="threshold",
                                   readout_format=".4g", continuous_update=False, layout=lay(width="480px"))
            label = w.Label()
            nvals = int(_finite(s.measured["value"]).size)
            if nvals == 0:
                slider.disabled = direction.disabled = True
            fig, view = self._make_figure(s)
            on.observe(lambda ch, n=n: self._on_control(n, enabled=ch["new"]), names="value")
            direction.observe(lambda ch, n=n: self._on_control(n, direction=ch["new"]), names="value")
            slider.observe(lambda ch, n=n: self._on_control(n, value=ch["new"]), names="value")
            self._controls[n] = {"enabled": on, "direction": direction, "slider": slider, "label": label,
                                 "figure": fig, "view": view, "title": title}
            rows.append(w.VBox([w.HBox([title, on]), w.HBox([direction, slider]), label, view],
                               layout=lay(border="1px solid #ddd", padding="4px", margin="2px 0")))
        self._overall = w.Label()
        self._examples_of = w.Dropdown(options=[UNION, *self._steps], value=UNION, description="examples")
        self._examples_of.observe(lambda ch: self._refresh_browser(), names="value")
        self._browser_box = w.VBox()
        self._browser: DatasetBrowser | None = None
        self._browser_key: tuple | None = None
        tail: list[w.Widget] = [self._overall]
        if self._frame is not None:
            tail += [self._examples_of, self._browser_box]
        self.widget = w.VBox(rows + tail)

    def _on_control(self, step: str, **change: Any) -> None:
        if self._building or self._syncing:
            return
        s = self._steps[step]
        if "enabled" in change:
            s.enabled = bool(change["enabled"])
        if "direction" in change:
            s.direction = change["direction"]
        if "value" in change:
            s.threshold = float(change["value"])
        self._masks.pop(step, None)
        self._refresh(step)

    def _sync_controls(self, step: str) -> None:
        c, s = self._controls[step], self._steps[step]
        self._syncing = True
        try:
            slider = c["slider"]
            if s.threshold < slider.min or s.threshold > slider.max:
                lo, hi, st = self._slider_range(s)
                slider.min, slider.max, slider.step = min(lo, slider.min), max(hi, slider.max), st
            slider.value = s.threshold
            c["direction"].value = s.direction
            c["enabled"].value = s.enabled
        finally:
            self._syncing = False

    def _colors(self, s: _Step, edges: np.ndarray) -> list[str]:
        centers = (edges[:-1] + edges[1:]) / 2
        mask = would_drop(pl.Series(centers, dtype=pl.Float64), s.threshold, s.direction).to_list()
        return [_DROP_COLOR if m else _KEEP_COLOR for m in mask]

    def _base_figure(self, s: _Step):
        import plotly.graph_objects as go

        edges, counts = histogram(s.measured["value"], self._bins)
        centers = (edges[:-1] + edges[1:]) / 2
        fig = go.Figure(go.Bar(x=centers.tolist(), y=counts.tolist(), width=(edges[1:] - edges[:-1]).tolist(),
                               marker_color=self._colors(s, edges), hovertemplate="%{x:.4g}: %{y} records<extra></extra>"))
        fig.add_vline(x=s.threshold, line_color="#111", line_dash="dash")
        # quote=False: plotly decodes &lt; &gt; &amp; but shows &quot; as it is, and without
        # < and > no tag can form in plotly's pseudo-HTML anyway.
        fig.update_layout(title=dict(text=html.escape(s.name, quote=False), font=dict(size=13)), height=220,
                          margin=dict(l=40, r=10, t=30, b=30), bargap=0, showlegend=False,
                          xaxis_title="value", yaxis_title="records")
        fig._tuner_edges = edges  # type: ignore[attr-defined]
        return fig

    def _make_figure(self, s: _Step):
        fig = self._base_figure(s)
        if self._fig_widget:
            import plotly.graph_objects as go

            fw = go.FigureWidget(fig)
            fw._tuner_edges = fig._tuner_edges  # type: ignore[attr-defined]
            return fw, fw
        return fig, w.Output()

    def _update_figure(self, step: str) -> None:
        s, c = self._steps[step], self._controls[step]
        fig = c["figure"]
        colors = self._colors(s, fig._tuner_edges)
        if self._fig_widget:
            with fig.batch_update():
                fig.data[0].marker.color = colors
                fig.layout.shapes[0].x0 = s.threshold
                fig.layout.shapes[0].x1 = s.threshold
            return
        fig.data[0].marker.color = colors
        fig.layout.shapes[0].x0 = fig.layout.shapes[0].x1 = s.threshold
        fig.layout.title.text = html.escape(f"{s.name}: {self.label_text(step)}", quote=False)
        c["view"].outputs = ({"output_type": "display_data", "metadata": {},
                              "data": {"application/vnd.plotly.v1+json": {**json.loads(fig.to_json()),
                                                                          "config": {"displaylogo": False}},
                                       "text/plain": f"<histogram of {s.name}>"}},)

    def _refresh(self, step: str) -> None:
        c = self._controls[step]
        c["label"].value = self.label_text(step)
        self._update_figure(step)
        self._overall.value = self.overall_text
        self._refresh_browser()

    def _refresh_all(self) -> None:
        for n in self._steps:
            self._controls[n]["label"].value = self.label_text(n)
            self._update_figure(n)
        self._overall.value = self.overall_text
        self._refresh_browser()

    def _refresh_browser(self) -> None:
        if self._frame is None:
            return
        sel = self._examples_of.value
        step = None if sel == UNION else sel
        key = (sel, tuple((n, s.direction, s.threshold, s.enabled) for n, s in self._steps.items()
                          if step is None or n == step))
        if key == self._browser_key:
            return
        self._browser_key = key
        self._browser = DatasetBrowser(self.dropped_frame(step), page_size=self._page_size)
        self._browser_box.children = (w.HTML(f"<i>would be dropped by {html.escape(sel)}:</i>"),
                                      self._browser.widget)

    @property
    def browser(self) -> DatasetBrowser | None:
        """The DatasetBrowser of the would-be-dropped examples (None without a frame)."""
        return self._browser

    def show_examples(self, step: str | None = None) -> DatasetBrowser | None:
        """Point the examples browser at ``step`` (None: the union) and return it."""
        if step is not None:
            self._get(step)
        self._examples_of.value = UNION if step is None else step
        self._refresh_browser()
        return self._browser

    @property
    def controls(self) -> dict[str, dict[str, Any]]:
        """Per step: enabled, direction, slider, label, figure, view, title widgets."""
        return self._controls

    def __repr__(self) -> str:
        return f"<ThresholdTuner {len(self._steps)} steps: {self.overall_text}>"
