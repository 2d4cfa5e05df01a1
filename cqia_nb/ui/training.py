"""Figures and views of notebook 04: the live training chart, loss curves, before/after answers."""

from __future__ import annotations

import html
import json
from typing import Any, Mapping, Sequence

import polars as pl

_PANELS = (("loss", "loss"), ("learning_rate", "learning rate"), ("grad_norm", "gradient norm"))
_COLORS = {"full": "#1f77b4", "lora": "#ff7f0e", "qlora": "#2ca02c"}


def training_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "Fine-tuning: loss, learning rate, gradient norm"):
    """Three stacked panels (loss with the validation loss dashed, learning rate, gradient norm)
    against the optimizer step, one colour per run; ``runs`` maps a run name to its metrics rows
    (``train.read_metrics``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[t for _, t in _PANELS])
    for i, (name, rows) in enumerate(runs.items()):
        color = _COLORS.get(name, None)
        train_rows = [r for r in rows if "loss" in r]
        for p, (key, label) in enumerate(_PANELS, start=1):
            pts = [(r["step"], r[key]) for r in train_rows if r.get(key) is not None]
            fig.add_trace(go.Scatter(x=[s for s, _ in pts], y=[v for _, v in pts], mode="lines", name=name,
                                     legendgroup=name, showlegend=p == 1, line=dict(color=color)), row=p, col=1)
        ev = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
        if ev:
            fig.add_trace(go.Scatter(x=[s for s, _ in ev], y=[v for _, v in ev], mode="lines+markers",
                                     name=f"{name} (validation)", legendgroup=name,
                                     line=dict(color=color, dash="dash")), row=1, col=1)
    fig.update_layout(title=title, height=620, legend_title_text="run", margin=dict(t=70))
    fig.update_xaxes(title_text="optimizer step", row=3, col=1)
    for p, (_, label) in enumerate(_PANELS, start=1):
        fig.update_yaxes(title_text=label, row=p, col=1)
    return fig


class LivePlot:
    """A chart that redraws while ``train.train`` runs: pass ``live.callback(name)`` in
    ``callbacks=``; display ``live.widget`` (an ``ipywidgets.Output``) before training.

    Every ``every`` logs (and at the end of each run) the output is replaced by a fresh plotly
    figure of all runs so far, so it works in JupyterLab, VS Code and under papermill alike.
    """

    def __init__(self, title: str = "Fine-tuning (live)", every: int = 2) -> None:
        import ipywidgets as w

        self.title, self.every = title, max(1, int(every))
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.widget = w.Output()
        self.redraws = 0

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def figure(self):
        return training_figure(self.runs, self.title)

    def redraw(self) -> None:
        fig = self.figure()
        self.widget.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"application/vnd.plotly.v1+json": {**json.loads(fig.to_json()),
                                                                            "config": {"displaylogo": False}},
                                         "text/plain": f"<training chart: {', '.join(self.runs)}>"}},)
        self.redraws += 1

    def callback(self, name: str, rows: Sequence[Mapping[str, Any]] = ()):
        """A ``TrainerCallback`` feeding run ``name``; ``rows`` seeds it (e.g. the metrics of the
        interrupted part of a resumed run)."""
        from transformers import TrainerCallback

        live = self
        live.runs[name] = [dict(r) for r in rows]

        class LiveCallback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if not state.is_world_process_zero or not logs:
                    return
                live.runs[name].append({"step": int(state.global_step), **{k: v for k, v in logs.items()
                                                                        if isinstance(v, (int, float))}})
                if len(live.runs[name]) % live.every == 0:
                    live.redraw()

            def on_train_end(self, args, state, control, **kw):
                live.redraw()

        return LiveCallback()


def comparison_html(table: pl.DataFrame, max_chars: int = 160) -> str:
    """The generations table as HTML, every cell escaped (prompts and answers are untrusted text)."""
    def cell(v: Any) -> str:
        s = "" if v is None else str(v)
        s = s if len(s) <= max_chars else s[:max_chars] + "…"
        return f'<td style="text-align:left;white-space:pre-wrap;vertical-align:top">{html.escape(s)}</td>'

    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in table.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
