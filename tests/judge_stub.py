"""A stub OpenAI-compatible chat-completions server on 127.0.0.1 for the judge tests.

Shared by ``test_judge.py`` and ``test_open_eval.py``. The stub reads a marker in the last
message — ``[[good:8]]`` ("分数: 8"), ``[[belle:0.7]]`` ("得分: 0.7", BELLE-EVAL's format),
``[[garbage]]`` (no score), ``[[e500]]``, ``[[flaky:2]]`` (two 500s, then a score), ``[[r429]]``
(one 429 with Retry-After, then a score), ``[[slow]]`` (answers after the client's timeout),
``[[badjson]]``, ``[[lp:SCRIPT]]`` (a reply with token logprobs in the OpenAI format, sent only when
the request asked for them; see :func:`logprob_reply`) — counts every request and keeps the prompts
and the request bodies it was sent.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

MAX_REQUESTS = 300
MARK = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


class Stub:
    """What the server saw: request totals, per-marker counts, auth headers, times, prompts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.url = ""
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.total = 0
            self.per_mark: Counter = Counter()
            self.auth: list[str | None] = []
            self.times: dict[str, list[float]] = {}
            self.prompts: list[str] = []
            self.bodies: list[dict] = []


#: [[lp:NAME]] scripts: the tokens the reply is written with, and at chosen positions the top
#: alternatives as {token: probability} (the written token's own probability included)
LOGPROB_SCRIPTS: dict[str, tuple[list[str], dict[int, dict[str, float]]]] = {
    # "分数: 7": the score token has 7 (0.6), 8 (0.3), 1 (0.1)  -> expected 6.7
    "seven": (["分数", ":", " ", "7", "\n", "好"], {3: {"7": 0.6, "8": 0.3, "1": 0.1}, 4: {"\n": 1.0}}),
    # "分数: 10" ("1" then "0", as SmolLM2 writes it): P(1…)=0.8, P(9)=0.2; after "1": "0" 0.5, "\n" 0.5
    # -> P(10)=0.4, P(1)=0.4, P(9)=0.2 -> expected 6.2
    "ten": (["分数", ":", " ", "1", "0", "\n"], {3: {"1": 0.8, "9": 0.2}, 4: {"0": 0.5, "\n": 0.5}}),
    # no "分数:" written: the first score token counts, with half the mass on non-scores -> 4.0, mass 0.5
    "bare": (["I", " rate", " it", " 4", "."], {3: {" 4": 0.5, " well": 0.5}}),
    # BELLE-EVAL's "得分: 0.7": "0" 0.75 / "1" 0.25; after "0": "." 1.0; after "0.": 7 0.5, 9 0.5
    # -> 0.25 * 1 + 0.75 * 0.8 = 0.85
    "belle": (["得分", ":", " ", "0", ".", "7"], {3: {"0": 0.75, "1": 0.25}, 4: {".": 1.0},
                                                  5: {"7": 0.5, "9": 0.5}}),
}


def logprob_reply(name: str, top_n: int) -> dict:
    """A chat-completion choice whose ``logprobs.content`` follows ``LOGPROB_SCRIPTS[name]``: every
    written token with its logprob and ``top_n`` alternatives (positions without a script: the token
    alone, probability 1)."""
    tokens, tops = LOGPROB_SCRIPTS[name]
    content = []
    for i, tok in enumerate(tokens):
        alts = tops.get(i, {tok: 1.0})
        lp = {t: math.log(p) for t, p in alts.items()}
        content.append({"token": tok, "logprob": lp.get(tok, math.log(1e-6)), "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                         for t, v in sorted(lp.items(), key=lambda kv: -kv[1])[:top_n]]})
    return {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": "stop",
            "logprobs": {"content": content}}


def make_handler(stub: Stub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (timeout test)
                pass

        def _reply(self, text: str) -> None:
            self._send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]},
                ensure_ascii=False).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            content = body["messages"][-1]["content"]
            m = MARK.search(content)
            mark, arg = (m.group(1), m.group(2)) if m else ("none", None)
            key = m.group(0) if m else "none"
            with stub.lock:
                stub.total += 1
                stub.per_mark[key] += 1
                n = stub.per_mark[key]
                stub.auth.append(self.headers.get("Authorization"))
                stub.times.setdefault(key, []).append(time.monotonic())
                stub.prompts.append(content)
                stub.bodies.append(body)
                over = stub.total > MAX_REQUESTS
            if over or self.path != "/v1/chat/completions":
                return self._send(503 if over else 404, b'{"error": "stub"}')
            if mark == "good":
                return self._reply(f"分数: {arg}\n回答准确、完整，语言流畅。")
            if mark == "belle":
                return self._reply(f"得分: {arg}\n模型回答与标准答案基本一致。")
            if mark == "garbage":
                return self._reply("I think this answer is pretty good overall!")
            if mark == "e500":
                return self._send(500, b'{"error": "internal"}')
            if mark == "flaky":
                if n <= int(arg or 1):
                    return self._send(500, b'{"error": "flaky"}')
                return self._reply("分数：8\n不错。")
            if mark == "r429":
                if n == 1:
                    return self._send(429, b'{"error": "rate"}', {"Retry-After": "0.3"})
                return self._reply("分数: 7\n还行。")
            if mark == "slow":
                stub.release.wait(3)
                return self._reply("分数: 9\n迟到的回答。")
            if mark == "lp":
                if not body.get("logprobs"):  # as an endpoint does: logprobs only when asked
                    return self._reply("".join(LOGPROB_SCRIPTS[arg][0]))
                choice = logprob_reply(arg, int(body.get("top_logprobs") or 0))
                return self._send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]},
                                                  ensure_ascii=False).encode())
            if mark == "badjson":
                return self._send(200, b"<html>not json</html>")
            return self._reply("分数: 5")

    return Handler


@contextlib.contextmanager
def serve() -> Iterator[Stub]:
    """Run the stub on a free port of 127.0.0.1; ``stub.url`` is its ``…/v1`` base URL."""
    stub = Stub()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(stub))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield stub
    finally:
        stub.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def server():
    """One stub server per test module (import this and ``stub`` into the module)."""
    with serve() as stub:
        yield stub


@pytest.fixture
def stub(server):
    """The module's stub server, its script and records reset for each test."""
    server.reset()
    return server
