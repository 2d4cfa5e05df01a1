"""Fixtures of the browser tier: one JupyterLab and one headless Chromium for the whole tier.

They are package-scoped (tests/browser is a package for this): started by the tier's first test
and stopped after its last, not kept running through the rest of the suite.

The server runs from a temporary folder (notebooks are copied there, so the committed ones never
get outputs) with the CQIA_* cache and figures folders that tests/conftest.py set for the
session, which its kernels inherit. Screenshots go to ``build/browser-artifacts/`` (or
``$CQIA_BROWSER_ARTIFACTS``); with ``$CQIA_SCREENSHOTS_DIR`` set the few README ones are also
written there (``make browser-screenshots`` writes docs/screenshots/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from . import lab

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CQIA_BROWSER_ARTIFACTS", ROOT / "build" / "browser-artifacts"))
#: README screenshots stay small: committed PNGs above this size fail the run that writes them.
MAX_COMMITTED_PNG_BYTES = 150_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """On a failed test, keep a screenshot of each tab it used (``FAILED-<test>-<tab>.png``)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        t = value if isinstance(value, Tab) else getattr(value, "tab", None)
        if isinstance(t, Tab):
            try:
                t.shoot(f"FAILED-{item.name}-{t.name}")
            except Exception:  # the page may be gone; the failure itself is what matters
                pass


@pytest.fixture(scope="package")
def browser_requirements() -> None:
    """Skip the tier, naming what is missing, where playwright, Chromium or jupyter is absent."""
    missing = lab.missing_requirements()
    if missing:
        pytest.skip("browser tier skipped: " + "; ".join(missing))
    # Screenshots of an earlier run (a FAILED-… one especially) would mislead: start afresh.
    for old in [*ARTIFACTS.glob("*.png"), ARTIFACTS / "jupyter-lab.log"]:
        old.unlink(missing_ok=True)
    if shutil.which("fc-list") and not subprocess.run(["fc-list", ":lang=zh"], capture_output=True,
                                                        text=True).stdout.strip():
        warnings.warn("no Chinese font is installed: record text shows as boxes in the screenshots "
                      "(`apt-get install fonts-wqy-microhei`; `make test` does this)", UserWarning)


@pytest.fixture(scope="package")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder JupyterLab serves: each test copies or writes its notebooks here."""
    return tmp_path_factory.mktemp("lab-root")


@pytest.fixture(scope="package")
def lab_server(browser_requirements: None, lab_root: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.LabServer]:
    """JupyterLab on lab_root; stopped (kernels and process group too) when the tier ends,
    its log kept with the artifacts."""
    state = tmp_path_factory.mktemp("lab-state")
    env = {k: os.environ[k] for k in ("CQIA_CACHE_DIR", "CQIA_FIGURES_DIR") if k in os.environ}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    server = lab.LabServer(lab.LabConfig(root_dir=lab_root, state_dir=state, env=env))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if server.log_path.is_file():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(server.log_path, ARTIFACTS / "jupyter-lab.log")


@pytest.fixture(scope="package")
def chromium(browser_requirements: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A BrowserContext of Debian's Chromium (fresh profile), closed when the tier ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = lab.launch_chromium(pw, tmp_path_factory.mktemp("chromium-profile"))
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Tab:
    """A browser tab with what the page did behind the user's back: dialogs (alert/confirm/prompt:
    only script execution opens one here) and uncaught page errors."""

    page: Any
    name: str
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def shoot(self, name: str, target: Any = None, committed: bool = False) -> Path:
        """Screenshot the viewport (with ``target`` scrolled to the top of it) as an artifact;
        ``committed`` ones are also written to $CQIA_SCREENSHOTS_DIR when that is set."""
        if target is not None:
            target.evaluate("el => el.scrollIntoView({block: 'start'})")
            self.page.wait_for_timeout(300)  # let plotly and the widgets lay out after the scroll
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), animations="disabled", caret="hide")
        out_dir = os.environ.get("CQIA_SCREENSHOTS_DIR")
        if committed and out_dir:
            dest = Path(out_dir) / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            _optimise_png(path, dest)
            size = dest.stat().st_size
            assert size <= MAX_COMMITTED_PNG_BYTES, (
                f"{dest} is {size:,} bytes, over the {MAX_COMMITTED_PNG_BYTES:,} allowed for a committed "
                "screenshot: install pngquant, or shoot a smaller region")
        return path

    def assert_nothing_executed(self) -> None:
        """No record text ran: ``window.__pwned`` unset, no dialog, no uncaught page error."""
        pwned = self.page.evaluate("() => window.__pwned === undefined ? null : window.__pwned")
        assert pwned is None, f"dataset text ran as script in the page: window.__pwned = {pwned!r}"
        assert not self.dialogs, f"dataset text ran as script in the page (dialogs opened: {self.dialogs})"
        assert not self.page_errors, f"uncaught errors in the page: {self.page_errors}"


def _optimise_png(src: Path, dest: Path) -> None:
    """Palette-quantised copy with pngquant when it is installed; else Chromium's PNG as it is."""
    exe = shutil.which("pngquant")
    if exe:
        r = subprocess.run([exe, "--quality=70-95", "--strip", "--force", "--output", str(dest), str(src)],
                           capture_output=True)
        if r.returncode == 0:
            return
    shutil.copy(src, dest)


@pytest.fixture(scope="package")
def new_tab(chromium: Any) -> Iterator[Callable[[str], Tab]]:
    """``new_tab(name)``: a new browser tab that records dialogs and page errors; all are
    closed when the tier ends."""
    tabs: list[Tab] = []

    def make(name: str) -> Tab:
        page = chromium.new_page()
        t = Tab(page, name)

        def on_dialog(d: Any) -> None:
            if d.type != "beforeunload":
                t.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda e: t.page_errors.append(str(e)))
        page.on("console", lambda m: t.console_errors.append(m.text) if m.type == "error" else None)
        tabs.append(t)
        return t

    yield make
    for t in tabs:
        try:
            t.page.close()
        except Exception:  # closed with the context already
            pass
