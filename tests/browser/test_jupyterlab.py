"""What a person sees in JupyterLab: notebook 01 and the widgets of notebook 02, in headless Chromium.

Widgets that pass the unit tests can still fail in the browser: the front end and the kernel
package drift apart ("Error displaying widget: model not found"), record text reaches
``innerHTML`` unescaped, figures do not render. These tests run the real front end (the
JupyterLab, ipywidgets and plotly versions installed) and assert on the rendered page; every
expected number is computed here from the same data with the library's own functions.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nbformat
import polars as pl
import pytest

import cqia_nb.data as data
import cqia_nb.runner as notebooks
import cqia_nb.ui.browser as widgets
import cqia_nb.ui.review as review
import cqia_nb.ui.tuner as tuner
from cqia_nb.core.decisions import read_decisions

from .lab import LabServer, NotebookPage

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Hostile record text: if any of it reached innerHTML unescaped, the onerror handler would run
# and leave window.__pwned set (a <script> added through innerHTML never runs, but is checked too).
MARKER = "浏览器转义测试"
HOSTILE_IMG = "<img src=x onerror=\"window.__pwned=(window.__pwned||[]).concat('img')\">"
HOSTILE_SCRIPT = "<script>window.__pwned=(window.__pwned||[]).concat('script')</script>"
SEARCH_PLACEHOLDER = "text (Enter to apply)"  # cqia_nb.ui.browser.DatasetBrowser's search box
TIMEOUT_MS = 60_000


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _code_cell(path: Path, needle: str) -> int:
    """Index (as JupyterLab counts cells) of the one code cell whose source contains ``needle``."""
    nb = nbformat.read(str(path), as_version=4)
    hits = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source]
    assert len(hits) == 1, f"{path.name}: expected one code cell containing {needle!r}, found cells {hits}"
    return hits[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class OpenNotebook:
    tab: Any                       # conftest.Tab
    nb: NotebookPage
    path: Path
    frame: pl.DataFrame


# ----------------------------------------------------------------------------- widget handles

@dataclass
class BrowserView:
    """The parts of a rendered DatasetBrowser (its VBox's children, in cqia_nb.ui.browser order)."""

    root: Any

    @property
    def search(self) -> Any:
        return self.root.locator(f'input[placeholder="{SEARCH_PLACEHOLDER}"]')

    def select(self, label: str) -> Any:
        return self.root.locator(".widget-select-multiple", has=self.root.page.locator(
            "label.widget-label", has_text=re.compile(f"^{re.escape(label)}$"))).locator("select")

    def button(self, name: str) -> Any:
        return self.root.get_by_role("button", name=name)

    @property
    def status(self) -> Any:
        # `has` takes a locator relative to the matched element, hence page.get_by_role.
        return self.root.locator(".widget-hbox", has=self.root.page.get_by_role(
            "button", name="Next ▶")).locator(".widget-label")

    @property
    def page_view(self) -> Any:
        return self.root.locator(":scope > .widget-html").nth(0)

    @property
    def record_view(self) -> Any:
        return self.root.locator(":scope > .widget-html").nth(1)

    @property
    def row_ids(self) -> Any:
        """The record_id cell of every rendered row (column 2 of render_page_html's table)."""
        return self.page_view.locator("tbody tr td:nth-child(2)")

    def expect_page(self, filtered: pl.DataFrame, page: int, page_size: int) -> None:
        n_pages = widgets.page_count(filtered.height, page_size)
        n = filtered.height
        _expect()(self.status).to_have_text(
            f"page {page + 1} of {n_pages} · {n:,} matching record{'' if n == 1 else 's'}", timeout=TIMEOUT_MS)
        ids = filtered.slice(page * page_size, page_size)["record_id"].to_list()
        _expect()(self.row_ids).to_have_text(ids, timeout=TIMEOUT_MS)


# The DatasetBrowser's own VBox: the one whose first row holds the search box.
BROWSER_ROOT = f'.widget-vbox:has(> .widget-hbox input[placeholder="{SEARCH_PLACEHOLDER}"])'


def _browser_in(output: Any) -> BrowserView:
    return BrowserView(output.locator(BROWSER_ROOT).first)


def _assert_text_not_markup(region: Any, *literals: str) -> None:
    """The literals are visible as text inside ``region`` and no element was made of them."""
    for s in literals:
        _expect()(region).to_contain_text(s, timeout=TIMEOUT_MS)
    assert region.locator('img[src="x"], script').count() == 0, "record text became <img>/<script> elements"


# ----------------------------------------------------------------------------- notebook 01

@pytest.fixture(scope="module")
def notebook_01(lab_server: LabServer, lab_root: Path, new_tab: Callable[[str], Any]) -> OpenNotebook:
    """A copy of notebook 01 run top to bottom in the browser on a copy of the bundled data with
    one hostile record added (the committed notebook and data are never touched)."""
    committed = notebooks.notebooks_dir() / "01_explore_sources.ipynb"
    before = _sha256(committed)
    data_dir = lab_root / "data-01"
    shutil.copytree(data.bundled_path(), data_dir)
    xhs = data_dir / "xhs" / "xhs.jsonl"
    template = json.loads(xhs.read_text(encoding="utf-8").split("\n", 1)[0])
    hostile = {**template, "instruction": f"{MARKER}：标题 {HOSTILE_IMG}",
               "output": f"{HOSTILE_SCRIPT}\n{MARKER}的正文 {HOSTILE_IMG}"}
    with xhs.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(hostile, ensure_ascii=False) + "\n")

    # papermill's own injection: a cell after the `parameters` cell, as `cqia-nb notebooks -p` does.
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(committed)), {"DATA_SOURCE": str(data_dir)})
    path = lab_root / committed.name
    nbformat.write(nb, str(path))

    tab = new_tab("notebook-01")
    page = NotebookPage(tab.page, lab_server)
    page.open(path.name)
    page.run_all(timeout_s=900)
    assert _sha256(committed) == before, "running the copy changed the committed notebook"
    frame = data.load(source=str(data_dir)).frame
    assert frame.filter(pl.col("instruction").str.contains(MARKER, literal=True)).height == 1
    return OpenNotebook(tab, page, path, frame)


def test_notebook_01_runs_with_widgets_and_figures(notebook_01: OpenNotebook) -> None:
    nb, path, page = notebook_01.nb, notebook_01.path, notebook_01.tab.page
    expect = _expect()
    for needle in ("ui.DatasetBrowser(examples", "ui.browse(result.frame)"):
        out = nb.output(_code_cell(path, needle))
        # The widget itself, not its text/plain fallback (what shows when the front end lacks
        # the widget manager) and not an error box.
        expect(out.locator(".jp-OutputArea-output > .widget-vbox")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(out).not_to_contain_text("<DatasetBrowser")
    assert nb.widget_problems() == [], f"console errors: {notebook_01.tab.console_errors}"

    figure_cells = [i for i, c in enumerate(nbformat.read(str(path), as_version=4).cells)
                    if c.cell_type == "code" and "plots.save_figure(" in c.source]
    assert len(figure_cells) >= 5, f"expected the notebook's plotly figures, found cells {figure_cells}"
    for i in figure_cells:
        expect(nb.output(i).locator(".js-plotly-plot svg.main-svg").first).to_be_visible(timeout=TIMEOUT_MS)
    counts_cell = _code_cell(path, "plots.counts_bar(")
    # Bars drawn, one group per config: the figure has data, not just axes.
    bars = nb.output(counts_cell).locator(".js-plotly-plot .trace .point")
    expect(bars).to_have_count(notebook_01.frame["config"].n_unique(), timeout=TIMEOUT_MS)
    notebook_01.tab.shoot("01-records-per-config", nb.cell(counts_cell))

    nb.save()
    saved = nbformat.read(str(path), as_version=4)
    errors = [(i, o.get("ename")) for i, c in enumerate(saved.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert all(c.execution_count for c in saved.cells if c.cell_type == "code")
    notebook_01.tab.assert_nothing_executed()
    assert page.locator(".jp-OutputArea img[src='x']").count() == 0


def test_dataset_browser_search_filter_and_page(notebook_01: OpenNotebook) -> None:
    nb, frame = notebook_01.nb, notebook_01.frame
    view = _browser_in(nb.output(_code_cell(notebook_01.path, "ui.browse(result.frame)")))
    page_size = widgets.BrowserQuery().page_size
    view.select("config").select_option([])
    query = "什么"
    view.search.fill(query)
    view.search.press("Enter")
    by_text = widgets.filter_frame(frame, widgets.BrowserQuery(text=query))
    assert 0 < by_text.height < frame.height
    view.expect_page(by_text, 0, page_size)

    top = by_text["config"].value_counts(sort=True)["config"][0]
    view.select("config").select_option([top])
    both = widgets.filter_frame(frame, widgets.BrowserQuery(text=query, configs=(top,)))
    assert both.height > page_size, f"need two pages of {query!r} in {top} to test paging"
    view.expect_page(both, 0, page_size)

    view.button("Next ▶").click()
    view.expect_page(both, 1, page_size)
    configs = view.page_view.locator("tbody tr td:nth-child(3)").all_inner_texts()
    assert configs and set(configs) == {top}
    # The record view follows: the first row of the new page, with its provenance.
    first = both.row(page_size, named=True)
    _expect()(view.record_view).to_contain_text(f"record_id: {first['record_id']}", timeout=TIMEOUT_MS)
    notebook_01.tab.shoot("browser-search-filter-page", view.root, committed=True)
    notebook_01.tab.assert_nothing_executed()


def test_dataset_browser_shows_hostile_records_as_text(notebook_01: OpenNotebook) -> None:
    nb, frame, tab = notebook_01.nb, notebook_01.frame, notebook_01.tab
    view = _browser_in(nb.output(_code_cell(notebook_01.path, "ui.browse(result.frame)")))
    view.select("config").select_option([])
    view.search.fill(MARKER)
    view.search.press("Enter")
    ours = widgets.filter_frame(frame, widgets.BrowserQuery(text=MARKER))
    view.expect_page(ours, 0, 10)
    _assert_text_not_markup(view.record_view, HOSTILE_IMG, HOSTILE_SCRIPT, MARKER)
    _assert_text_not_markup(view.page_view, MARKER + "：标题 <img src=x")
    tab.shoot("browser-hostile-record", view.record_view, committed=True)

    # The bundled set's own injection records (alert(1)): open every one of them.
    view.search.fill("onerror")
    view.search.press("Enter")
    hits = widgets.filter_frame(frame, widgets.BrowserQuery(text="onerror"))
    assert hits.height >= 3
    view.expect_page(hits, 0, 10)
    record = view.root.locator(":scope > .widget-dropdown select")
    for i in range(min(hits.height, 10)):
        record.select_option(index=i)
        _expect()(view.record_view).to_contain_text(f"record_id: {hits['record_id'][i]}", timeout=TIMEOUT_MS)
        _assert_text_not_markup(view.record_view, "onerror")
    tab.assert_nothing_executed()
    assert tab.page.locator(".jp-OutputArea img[src='x'], .widget-html-content script").count() == 0


# ----------------------------------------------------------------------------- tuner and review

STEP = f"output_chars {HOSTILE_IMG}"   # a step name is shown too: it must be escaped as well
EDITED = f"改好的回答 {HOSTILE_IMG}"
NOTE = f"看过了 {HOSTILE_SCRIPT}"


def _widget_frame() -> pl.DataFrame:
    """Eight records, a third of them hostile, with distinct output lengths."""
    rows = []
    for i in range(8):
        bad = i % 3 == 0
        instruction = f"{MARKER} 第{i}条 {HOSTILE_IMG}" if bad else f"第{i}条普通问题"
        output = (f"{HOSTILE_SCRIPT} " if bad else "") + "答" * (10 * (i + 1))
        rows.append({"record_id": f"w{i}", "config": "xhs", "instruction": instruction, "input": "",
                     "output": output})
    return pl.DataFrame(rows)


WIDGETS_NOTEBOOK = [
    "import json\n\nimport polars as pl\n\nfrom cqia_nb.ui import review, tuner\n\n"
    "frame = pl.read_parquet('widgets_frame.parquet')\n"
    "STEP = json.load(open('widgets_step.json', encoding='utf-8'))\n"
    "measures = {STEP: frame.select('record_id', pl.col('output').str.len_chars().cast(pl.Float64).alias('value'))}",
    "tune = tuner.ThresholdTuner(frame, measures, page_size=5)\ntune",
    "queue = review.ReviewQueue(frame, 'review.jsonl')\nqueue",
    "print(json.dumps(tune.to_recipe_params(), ensure_ascii=False))",
]


@pytest.fixture(scope="module")
def widgets_notebook(lab_server: LabServer, lab_root: Path, new_tab: Callable[[str], Any]) -> OpenNotebook:
    """A small purpose-made notebook: notebook 02's tuner and review widgets on hostile records."""
    frame = _widget_frame()
    frame.write_parquet(lab_root / "widgets_frame.parquet")
    (lab_root / "widgets_step.json").write_text(json.dumps(STEP), encoding="utf-8")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in WIDGETS_NOTEBOOK]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = lab_root / "widgets_hostile.ipynb"
    nbformat.write(nb, str(path))
    tab = new_tab("widgets")
    page = NotebookPage(tab.page, lab_server)
    page.open(path.name)
    page.run_all(timeout_s=300)
    assert page.widget_problems() == [], f"console errors: {tab.console_errors}"
    return OpenNotebook(tab, page, path, frame)


def test_threshold_tuner_in_browser(widgets_notebook: OpenNotebook) -> None:
    nb, frame, tab = widgets_notebook.nb, widgets_notebook.frame, widgets_notebook.tab
    expect = _expect()
    out = nb.output(1)
    root = out.locator(".jp-OutputArea-output > .widget-vbox").first
    expect(root).to_be_visible(timeout=TIMEOUT_MS)
    _assert_text_not_markup(root.locator(".widget-html").first, STEP)
    # The histogram: plotly inside a widget Output, with the (escaped) step name as its title.
    expect(root.locator(".js-plotly-plot svg.main-svg").first).to_be_visible(timeout=TIMEOUT_MS)
    # The title shows the name exactly as written (no &quot; or other entities left over).
    expect(root.locator(".js-plotly-plot .gtitle")).to_contain_text(STEP, timeout=TIMEOUT_MS)

    values = frame["output"].str.len_chars().cast(pl.Float64)
    threshold = float(values.sort()[4])          # drops what is longer than the fifth-shortest
    n_drop = int(tuner.would_drop(values, threshold, "above").sum())
    assert 0 < n_drop < frame.height
    readout = root.locator(".widget-readout").first
    readout.click()
    tab.page.keyboard.press("Control+A")
    tab.page.keyboard.type(f"{threshold:g}")
    tab.page.keyboard.press("Enter")
    label = root.locator(".widget-label", has_text="would be dropped").first
    expect(label).to_have_text(tuner.drop_label(n_drop, frame.height), timeout=TIMEOUT_MS)
    expect(root.locator(".widget-label", has_text="overall")).to_contain_text(
        tuner.drop_label(n_drop, frame.height), timeout=TIMEOUT_MS)

    # The examples browser lists exactly the records the threshold drops, hostile text as text.
    dropped = frame.filter(tuner.would_drop(values, threshold, "above"))
    examples = BrowserView(root.locator(BROWSER_ROOT).first)
    examples.expect_page(dropped, 0, 5)
    hostile_dropped = dropped.filter(pl.col("instruction").str.contains(MARKER, literal=True))
    assert hostile_dropped.height, "the threshold must drop a hostile record for this check"
    record = examples.root.locator(":scope > .widget-dropdown select")
    record.select_option(index=dropped["record_id"].to_list().index(hostile_dropped["record_id"][0]))
    _assert_text_not_markup(examples.record_view, HOSTILE_IMG, HOSTILE_SCRIPT)
    tab.shoot("tuner", root, committed=True)

    # What the slider set in the browser is what the kernel has (the recipe params from code).
    nb.run_cell(3)
    printed = nb.output(3).locator(".jp-OutputArea-output").first
    expect(printed).to_contain_text("threshold", timeout=TIMEOUT_MS)
    params = json.loads(printed.inner_text())
    assert params == {STEP: {"threshold": threshold, "direction": "above"}}
    tab.assert_nothing_executed()


def test_review_queue_in_browser(widgets_notebook: OpenNotebook, lab_root: Path) -> None:
    nb, frame, tab = widgets_notebook.nb, widgets_notebook.frame, widgets_notebook.tab
    expect = _expect()
    log = lab_root / "review.jsonl"
    root = nb.output(2).locator(".jp-OutputArea-output > .widget-vbox").first
    expect(root).to_be_visible(timeout=TIMEOUT_MS)
    progress = root.locator(":scope > .widget-label").first
    view = root.locator(":scope > .widget-html").first
    ids = frame["record_id"].to_list()
    expect(progress).to_contain_text(f"record 1 of {len(ids)} · 0 decided", timeout=TIMEOUT_MS)
    _assert_text_not_markup(view, HOSTILE_IMG, MARKER)  # record w0 is hostile

    root.get_by_role("button", name="Drop (d)").click()
    expect(progress).to_contain_text("1 decided (0 keep, 1 drop, 0 edit)", timeout=TIMEOUT_MS)
    command = root.locator(".widget-text", has=root.page.locator("label", has_text="command")).locator("input")
    command.fill(f"k {NOTE}")
    command.press("Enter")
    expect(progress).to_contain_text("2 decided (1 keep, 1 drop, 0 edit)", timeout=TIMEOUT_MS)
    root.locator("textarea").fill(EDITED)
    root.get_by_role("button", name="Save edit (e)").click()
    expect(progress).to_contain_text("3 decided (1 keep, 1 drop, 1 edit)", timeout=TIMEOUT_MS)

    # The decisions are in the saved log, in order, with the browser's text byte for byte.
    entries = read_decisions(log)
    assert [(e["record_id"], e["decision"]) for e in entries] == [(ids[0], "drop"), (ids[1], "keep"), (ids[2], "edit")]
    assert entries[1]["note"] == NOTE
    assert entries[2]["edited_output"] == EDITED
    labels = review.export_labels(log)
    assert labels.filter(pl.col("decision") == "drop")["record_id"].to_list() == [ids[0]]

    root.get_by_role("button", name="◀ Prev (p)").click()
    expect(progress).to_contain_text("record 3 of", timeout=TIMEOUT_MS)
    _assert_text_not_markup(view, EDITED)
    root.get_by_role("button", name="◀ Prev (p)").click()
    _assert_text_not_markup(view, NOTE)
    tab.shoot("review", root, committed=True)
    tab.assert_nothing_executed()
    assert nb.widget_problems() == []


# ----------------------------------------------------------------------------- the pinned stack

WIDGET_STACK = ("ipywidgets", "jupyterlab_widgets", "jupyterlab")


def _pins() -> dict[str, str]:
    import tomllib

    proj = tomllib.loads((notebooks.notebooks_dir().parent / "pyproject.toml").read_text())["project"]
    reqs = proj["dependencies"] + [r for extra in proj["optional-dependencies"].values() for r in extra]
    pins = {}
    for r in reqs:
        name, sep, version = r.partition("==")
        if sep:
            pins[name.strip().lower().replace("-", "_")] = version.strip()
    return pins


def test_the_pinned_widget_stack_is_what_ran(notebook_01: OpenNotebook) -> None:
    """The widgets above rendered with exactly the pinned ipywidgets / jupyterlab_widgets /
    jupyterlab: the pins name a set this tier has seen working together."""
    from importlib.metadata import version

    pins = _pins()
    assert {p: pins.get(p) for p in WIDGET_STACK} == {p: version(p) for p in WIDGET_STACK}, (
        "installed widget stack differs from the exact pins in pyproject.toml")
    assert notebook_01.tab.page.evaluate("() => window.jupyterapp.version") == pins["jupyterlab"]


# ----------------------------------------------------------------------------- the checks can fail

CONTROLS_NOTEBOOK = [
    # What an unescaped widget would do: ipywidgets.HTML sets innerHTML.
    "import ipywidgets as w\nimport traitlets as t\n\n"
    "w.HTML('<img src=x onerror=\"window.__pwned=1\">')",
    # What version drift looks like: a kernel asking for a widget model version the front end lacks.
    "class Drifted(w.DOMWidget):\n"
    "    _model_module = t.Unicode('@jupyter-widgets/controls').tag(sync=True)\n"
    "    _model_module_version = t.Unicode('99.0.0').tag(sync=True)\n"
    "    _model_name = t.Unicode('HTMLModel').tag(sync=True)\n"
    "    _view_module = t.Unicode('@jupyter-widgets/controls').tag(sync=True)\n"
    "    _view_module_version = t.Unicode('99.0.0').tag(sync=True)\n"
    "    _view_name = t.Unicode('HTMLView').tag(sync=True)\n\n"
    "Drifted()",
]


def test_checks_catch_drift_and_unescaped_html(lab_server: LabServer, lab_root: Path,
                                                new_tab: Callable[[str], Any]) -> None:
    """The checks used above do see the failures they exist for (else a pass means nothing)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CONTROLS_NOTEBOOK]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = lab_root / "controls.ipynb"
    nbformat.write(nb, str(path))
    tab = new_tab("controls")
    page = NotebookPage(tab.page, lab_server)
    page.open(path.name)
    page.run_all(timeout_s=120)
    tab.page.wait_for_function("() => window.__pwned !== undefined", timeout=TIMEOUT_MS)
    with pytest.raises(AssertionError, match="ran as script"):
        tab.assert_nothing_executed()
    _expect()(page.output(1).locator(".jupyter-widgets-error-widget")).to_have_count(1, timeout=TIMEOUT_MS)
    problems = page.widget_problems()
    assert len(problems) == 1 and problems[0].startswith("cell 1: 1 widget error box")
