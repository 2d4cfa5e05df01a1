"""JupyterLab in Debian's headless Chromium: what the browser test tier and bench_browser.py drive.

:class:`LabServer` starts ``jupyter lab`` on 127.0.0.1 (a free port, a random token, every
settings / workspace / runtime / config folder in a temporary directory, so nothing of the
user's JupyterLab leaks in or is written to) and stops it with its kernels and its process
group. :func:`launch_chromium` opens Debian's ``/usr/bin/chromium`` through Playwright (never a
browser Playwright downloads) with a fresh profile. :class:`NotebookPage` is what a person does
in the notebook: open it, run all cells, find a cell's output, save.

Only the standard library, playwright and psutil (an ipykernel dependency) are used, so the
benchmark can import this file as it is.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: Where Debian's chromium package puts the browser; ``$CQIA_CHROMIUM`` overrides it.
DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: Flags for a quiet, reproducible headless run in a container (Playwright adds ``--headless``
#: itself for ``headless=True`` and the profile folder through ``user_data_dir``).
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
)
INSTALL_HINT = ("install Debian's browser: `DEBIAN_FRONTEND=noninteractive apt-get install -y "
                "--no-install-recommends chromium chromium-driver` (`make test` does this when apt-get works)")

# JupyterLab user settings for the test session (JSON written into JUPYTERLAB_SETTINGS_DIR):
# no news or update checks (no network, no toasts over the widgets), and every cell attached to
# the DOM ("none" windowing) so that a cell far down the notebook can be found and screenshotted.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def chromium_path() -> Path:
    """The Chromium executable the tier uses (``$CQIA_CHROMIUM``, default /usr/bin/chromium)."""
    return Path(os.environ.get("CQIA_CHROMIUM", DEFAULT_CHROMIUM))


def missing_requirements() -> list[str]:
    """Why the browser tier cannot run here (empty list: it can)."""
    out: list[str] = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        out.append("the Python package `playwright` is not installed (it is in the test extra: "
                   "`pip install -e '.[test]'`; no browser download is needed)")
    exe = chromium_path()
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        out.append(f"Chromium not found at {exe}: {INSTALL_HINT}, or set CQIA_CHROMIUM to another build")
    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        out.append(f"`jupyter` is not installed beside {sys.executable} (it is in the notebooks extra)")
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server is told not to move to another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LabConfig:
    """Where a test JupyterLab serves from and keeps its state.

    root_dir: the folder the file browser shows (notebooks are opened relative to it).
    state_dir: a temporary folder for the config, data, settings, workspaces and runtime
        folders and the server log; it is emptied and reused.
    env: extra environment for the server and therefore its kernels (e.g. CQIA_* folders).
    """

    root_dir: Path
    state_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 180.0


class LabServer:
    """One ``jupyter lab`` process; use as a context manager or call start() / stop()."""

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.token = secrets.token_hex(24)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(config.state_dir) / "jupyter-lab.log"

    # -- lifecycle

    def _env(self) -> dict[str, str]:
        state = Path(self.config.state_dir)
        dirs = {
            "JUPYTER_CONFIG_DIR": state / "config",
            "JUPYTER_DATA_DIR": state / "data",
            "JUPYTER_RUNTIME_DIR": state / "runtime",
            "JUPYTERLAB_SETTINGS_DIR": state / "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": state / "lab-workspaces",
            "IPYTHONDIR": state / "ipython",
        }
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for plugin, values in LAB_SETTINGS.items():
            pkg, name = plugin.rsplit("/", 1)
            target = dirs["JUPYTERLAB_SETTINGS_DIR"] / pkg / f"{name}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values), encoding="utf-8")
        env = dict(os.environ)
        env.update({k: str(v) for k, v in dirs.items()})
        # The kernel must be this environment's Python, whatever PATH the caller had.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        # Quiet start: no debugpy frozen-modules note, no "migrating to platformdirs" warning.
        env.update({"PYDEVD_DISABLE_FILE_VALIDATION": "1", "JUPYTER_PLATFORM_DIRS": "1"})
        env.update(self.config.env)
        return env

    def start(self) -> None:
        """Start the server and wait until its REST API answers (raises with the log tail)."""
        if self.proc is not None:
            raise RuntimeError("this LabServer is already started")
        Path(self.config.state_dir).mkdir(parents=True, exist_ok=True)
        env = self._env()
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--expose-app-in-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={Path(self.config.root_dir).resolve()}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension manager
            "--ServerApp.log_level=WARN",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI and containers run as root; the server only listens on 127.0.0.1
        log = self.log_path.open("wb")
        # A session of its own: stop() signals the whole group (the server and what it spawned).
        self.proc = subprocess.Popen(cmd, cwd=str(self.config.root_dir), env=env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.config.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode} before it "
                                   f"answered; its log ({self.log_path}) ends:\n{self.log_tail()}")
            try:
                self.api("GET", "api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter lab did not answer on port {self.port} within "
                                   f"{self.config.startup_timeout_s:.0f} s; its log ends:\n{self.log_tail()}")
            time.sleep(0.25)

    def _descendants(self) -> list[Any]:
        try:
            import psutil
        except ImportError:
            return []
        try:
            return psutil.Process(self.proc.pid).children(recursive=True) if self.proc else []
        except psutil.Error:
            return []

    def stop(self, timeout_s: float = 20.0) -> None:
        """Shut the server down with its kernels; whatever is left of its process group (and
        kernels, which jupyter_client starts in sessions of their own) is killed."""
        proc = self.proc
        if proc is None:
            return
        # Kernels run in their own sessions (jupyter_client), so the group signal misses them.
        children = self._descendants()
        if proc.poll() is None:
            try:
                self.api("POST", "api/shutdown", timeout=5)
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        for child in children:
            try:
                if child.is_running():
                    child.kill()
            except Exception:  # already gone
                pass
        self.proc = None

    def __enter__(self) -> "LabServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def lab_url(self, path: str = "") -> str:
        """URL that opens ``path`` (relative to root_dir) in JupyterLab, token included."""
        return f"{self.base_url}lab/tree/{path}?token={self.token}&reset"

    def api(self, method: str, path: str, timeout: float = 5.0) -> Any:
        """Call the server's REST API with the token; the decoded JSON answer (or None)."""
        req = urllib.request.Request(self.base_url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-n:])


def launch_chromium(playwright: Any, profile_dir: Path, width: int = 1200, height: int = 900) -> Any:
    """A Playwright BrowserContext of Debian's Chromium, headless, on a fresh profile folder."""
    profile_dir = Path(profile_dir)
    if profile_dir.exists():
        shutil.rmtree(profile_dir)
    profile_dir.mkdir(parents=True)
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=str(chromium_path()), headless=True,
        args=list(CHROMIUM_FLAGS), viewport={"width": width, "height": height},
        device_scale_factor=1, locale="en-US", timezone_id="UTC")


# ----------------------------------------------------------------------------- the notebook page

# JavaScript run in the page; `jupyterapp` is there because the server runs with
# --expose-app-in-browser. Cell state is read from the notebook model, as the UI shows it.
_JS_STATE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = [];
  for (const c of panel.content.model.cells) {
    if (c.type !== 'code') { cells.push(null); continue; }
    const errors = [];
    for (let i = 0; i < c.outputs.length; i++) {
      const o = c.outputs.get(i).toJSON();
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
    cells.push({count: c.executionCount, errors});
  }
  const prompts = [...panel.content.node.querySelectorAll('.jp-InputPrompt')].map(p => p.textContent);
  return {kernel: kernel ? kernel.status : 'none', busy: prompts.some(t => t.includes('*')),
          cells, dirty: panel.context.model.dirty, path: panel.context.path};
}"""


_JS_WIDGET_PROBLEMS = """() => {
  const out = [];
  document.querySelectorAll('.jp-Notebook .jp-Cell').forEach((cell, i) => {
    const area = cell.querySelector('.jp-OutputArea');
    if (!area) return;
    const n = area.querySelectorAll('.jupyter-widgets-error-widget').length;
    if (n) out.push(`cell ${i}: ${n} widget error box(es) (the front end could not load a widget class)`);
    const text = area.innerText || '';
    for (const needle of ['Error displaying widget', 'Loading widget...']) {
      const at = text.indexOf(needle);
      if (at >= 0) out.push(`cell ${i}: ` + text.slice(at, at + 120).split('\\n')[0]);
    }
  });
  return out;
}"""


class NotebookError(AssertionError):
    """A cell raised while the notebook ran in the browser."""


class NotebookPage:
    """A notebook opened in JupyterLab in one browser tab."""

    def __init__(self, page: Any, server: LabServer) -> None:
        self.page = page
        self.server = server

    def open(self, rel_path: str, timeout_s: float = 120.0, file_browser: bool = False) -> None:
        """Open ``rel_path`` (relative to the server's root) and wait for an idle kernel;
        the file browser is folded away unless ``file_browser`` (more notebook on screen)."""
        self.page.goto(self.server.lab_url(rel_path), wait_until="domcontentloaded",
                       timeout=timeout_s * 1000)
        try:
            self.page.wait_for_function(
                "p => { const s = (" + _JS_STATE + ")(); return s && s.path === p && s.kernel === 'idle'; }",
                arg=rel_path, timeout=timeout_s * 1000, polling=250)
        except Exception as e:
            dialogs = self.page.locator(".jp-Dialog").all_inner_texts()
            raise NotebookError(
                f"{rel_path} did not reach an idle kernel within {timeout_s:.0f} s"
                + (f"; a dialog is open: {dialogs!r} (a notebook without kernelspec metadata asks "
                   "for a kernel)" if dialogs else "")
                + f"; page state: {self.state()!r}; server log ends:\n{self.server.log_tail()}") from e
        if not file_browser:
            self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(_JS_STATE)

    def command(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a JupyterLab command (what a menu item or shortcut does)."""
        return self.page.evaluate("([n, a]) => window.jupyterapp.commands.execute(n, a)",
                                  [name, dict(args or {})])

    def wait_idle(self, timeout_s: float) -> dict[str, Any]:
        """Wait until no cell is queued or running and the kernel is idle."""
        self.page.wait_for_function(
            "() => { const s = (" + _JS_STATE + ")(); return s && s.kernel === 'idle' && !s.busy; }",
            timeout=timeout_s * 1000, polling=250)
        return self.state()

    def run_all(self, timeout_s: float = 300.0) -> dict[str, Any]:
        """Run > Run All Cells; wait for the end; raise NotebookError naming the failed cell."""
        self.command("notebook:run-all-cells")
        # The prompts turn to [*] only once the kernel has the requests: wait for that first.
        deadline = time.monotonic() + timeout_s
        self.page.wait_for_function(
            "() => { const s = (" + _JS_STATE + ")(); return s && (s.busy || s.cells.every(c => !c || c.count)); }",
            timeout=timeout_s * 1000, polling=100)
        state = self.wait_idle(max(1.0, deadline - time.monotonic()))
        self.raise_for_errors(state)
        not_run = [i for i, c in enumerate(state["cells"]) if c is not None and not c["count"]]
        if not_run:
            raise NotebookError(f"{state['path']}: cells {not_run} did not run")
        return state

    def run_cell(self, index: int, timeout_s: float = 120.0) -> dict[str, Any]:
        """Click into cell ``index`` and press Shift+Enter, as a person would."""
        cell = self.cell(index)
        cell.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")
        self.page.wait_for_function(
            "i => { const s = (" + _JS_STATE + ")(); return s && s.cells[i] && s.cells[i].count && !s.busy "
            "&& s.kernel === 'idle'; }", arg=index, timeout=timeout_s * 1000, polling=100)
        state = self.state()
        self.raise_for_errors(state)
        return state

    @staticmethod
    def raise_for_errors(state: Mapping[str, Any]) -> None:
        for i, c in enumerate(state["cells"]):
            if c and c["errors"]:
                raise NotebookError(f"{state['path']} cell {i} raised in the browser: {'; '.join(c['errors'])}")

    def cell(self, index: int) -> Any:
        """Locator of cell ``index`` (0-based, markdown cells counted, as in the .ipynb)."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def output(self, index: int) -> Any:
        """Locator of cell ``index``'s output area."""
        return self.cell(index).locator(".jp-OutputArea")

    def save(self, timeout_s: float = 30.0) -> None:
        """File > Save, and wait until the model is clean."""
        self.command("docmanager:save")
        self.page.wait_for_function("() => { const s = (" + _JS_STATE + ")(); return s && !s.dirty; }",
                                    timeout=timeout_s * 1000, polling=100)

    def body_text(self) -> str:
        return self.page.locator("body").inner_text()

    def widget_problems(self) -> list[str]:
        """Widgets the front end failed to show, by cell: ipywidgets' error box (a model or
        view class it cannot load: the kernel and front-end packages have drifted apart),
        "Error displaying widget" (no such model in the front end), or "Loading widget..."
        still there. Empty list: every widget output rendered."""
        return self.page.evaluate(_JS_WIDGET_PROBLEMS)
