"""A real OpenAI-compatible endpoint on 127.0.0.1 for a local model folder: ``transformers serve``.

Why ``transformers serve``: it comes with transformers (``pip install "transformers[serving]"``: fastapi,
uvicorn, openai), loads a safetensors folder offline, and answers ``/v1/chat/completions``. Measured on
the 2-core CI machine with SmolLM2-135M-Instruct: ready in ~40 s, ~20 s per judge request of ~430 prompt
tokens under load. It ignores ``logprobs`` (transformers 5.25 logs "Ignoring unsupported fields"), so a
judge behind it parses text. llama-cpp-python's server returns logprobs for the same model's GGUF, but it
compiles llama.cpp from source on pip install (80 min wall, 19 CPU-min here): too slow for CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class Server:
    """A running endpoint: ``base_url`` (…/v1), the ``model`` name it answers to, seconds to ready."""

    base_url: str
    model: str
    startup_s: float
    pid: int
    log: Path


def serving_available() -> str | None:
    """None when ``transformers serve`` can run here, else what is missing and how to install it."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    if missing:
        return f"transformers serve needs {', '.join(missing)}: pip install 'transformers[serving]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(folder: Path, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("transformers")
    cli = [str(exe)] if exe.is_file() else [shutil.which("transformers") or "transformers"]
    return cli + ["serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                  "--dtype", "float32", "--log-level", "warning"]


@contextlib.contextmanager
def transformers_serve(folder: str | Path, timeout_s: float = 600.0, log: str | Path | None = None) -> Iterator[Server]:
    """Run ``transformers serve FOLDER`` on a free port of 127.0.0.1 until the block ends.

    Offline (``HF_HUB_OFFLINE``): the folder must hold the weights (safetensors), config and tokenizer;
    remote code is never trusted (the CLI's default). Waits for ``/v1/models`` (``timeout_s``) and stops
    the whole process group afterwards. The server's output goes to ``log`` (default: a file beside the
    system's temp dir), which an error message names.
    """
    problem = serving_available()
    if problem:
        raise RuntimeError(problem)
    folder = Path(folder)
    port = _free_port()
    log_path = Path(log) if log else Path(os.environ.get("TMPDIR", "/tmp")) / f"transformers-serve-{port}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    t0 = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(_command(folder, port), env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: stopping it stops its workers too
    base = f"http://127.0.0.1:{port}/v1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        model = None
        while model is None:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode} before it was ready; "
                                   f"see {log_path}")
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"transformers serve not ready after {timeout_s:g} s; see {log_path}")
            try:
                with opener.open(base + "/models", timeout=5) as r:
                    data = json.loads(r.read()).get("data") or []
                model = data[0]["id"] if data else str(folder)
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                time.sleep(0.5)
        yield Server(base, model, time.monotonic() - t0, proc.pid, log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
