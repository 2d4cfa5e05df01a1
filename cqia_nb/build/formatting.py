"""Records -> chat messages -> rendered training text, token counts and a visible truncation policy.

Messages
    ``instruction`` and ``input`` become the user turn (joined by one newline when ``input`` is not
    empty, as LLaMA-Factory's alpaca converter does: ``instruction + "\\n" + input``), ``output``
    the assistant turn; an optional system prompt comes first. ``messages_expr`` builds them as a
    polars ``list[struct{role, content}]`` column.

Templates
    A *named template* we ship (``NAMED_TEMPLATES``) or the tokenizer's own ``chat_template``:

    * ``chatml`` — ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, no default
      system prompt. This is also Yi's chat template (01-ai/Yi-*-Chat), the model family the
      COIG-CQIA paper fine-tunes.
    * ``qwen`` — ChatML with Qwen2.5's default system prompt
      (``QWEN_DEFAULT_SYSTEM``) inserted when the conversation has none.

    Named templates are rendered by a vectorised polars expression; ``render_jinja`` renders the
    same Jinja source through ``transformers`` (``apply_chat_template``), and the tests check that
    both give identical strings. Training text is the whole conversation
    (``add_generation_prompt=False``). A tokenizer without a chat template and no named template is
    an error that names both fixes.

Token counts
    ``n_tokens`` is the length of the rendered text encoded with ``add_special_tokens=False`` (the
    template writes its own special tokens; a BOS the tokenizer would add is not counted), in
    batches through the Rust tokenizer. ``tokenizer="tiny"`` is the project's byte-level BPE
    trained on the frame (:mod:`cqia_nb.data.tokens`), anything else is loaded with
    ``AutoTokenizer.from_pretrained`` (never with remote code). Counts are cached on disk by
    (tokenizer, text) hash (``count_tokens_cached``), so rebuilds skip the tokeniser.

Truncation (``max_length``; every decision counted in ``TruncationReport``)
    * ``"keep"`` — nothing changes; records over the limit are counted (``kept_over``).
    * ``"drop"`` — records over the limit are removed and returned in ``dropped`` with the reason.
    * ``"truncate_output"`` — the assistant answer is cut at a token boundary (by the tokenizer's
      character offsets, so no character is split) until the rendered record fits; the row's
      ``truncated`` is true. A record whose prompt alone does not fit is dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import polars as pl

from cqia_nb.core.atomic import atomic_file
from cqia_nb.core.chat import NAMED_TEMPLATES, messages_expr, render_expr
from cqia_nb.core.overrides import unknown_keys_message
from cqia_nb.core.paths import cache_dir
from cqia_nb.data.tokens import TokenizerConfig, tiny_tokenizer, tiny_tokenizer_for

TRUNCATION_POLICIES = ("keep", "drop", "truncate_output")


class FormattingError(ValueError):
    """A formatting setting that cannot work; the message says what to change."""


@dataclass(frozen=True)
class FormatConfig:
    """How records become training text. ``template=None`` uses the tokenizer's own template."""

    tokenizer: str = "tiny"
    template: str | None = "chatml"
    system: str | None = None
    max_length: int | None = None
    truncation: Literal["keep", "drop", "truncate_output"] = "keep"
    batch_size: int = 1024
    cache: bool = True              # cache token counts on disk (exact; see count_tokens_cached)

    def __post_init__(self) -> None:
        if self.template is not None and self.template not in NAMED_TEMPLATES:
            raise FormattingError(f"unknown template {self.template!r}; named templates: "
                                  f"{', '.join(NAMED_TEMPLATES)} (or template: null for the tokenizer's own)")
        if self.truncation not in TRUNCATION_POLICIES:
            raise FormattingError(f"truncation must be one of {', '.join(TRUNCATION_POLICIES)}, "
                                  f"got {self.truncation!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise FormattingError(f"max_length must be a positive integer or null, got {self.max_length!r}")
        if self.system is not None and not isinstance(self.system, str):
            raise FormattingError(f"system must be a string or null, got {self.system!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "format") -> "FormatConfig":
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise FormattingError(f"{where}: {unknown_keys_message(unknown, known)}")
        return cls(**d)


def add_messages(frame: pl.DataFrame, system: str | None = None) -> pl.DataFrame:
    return frame.with_columns(messages_expr(system))


def load_tokenizer(name: str = "tiny", frame: pl.DataFrame | None = None, vocab_size: int = 4000,
                   transformers_wrapper: bool = False, texts: list[str] | None = None):
    """The tiny BPE trained on ``frame`` (cached; a ``tokenizers.Tokenizer``, or a ``transformers``
    fast tokenizer with ``transformers_wrapper=True``), or ``AutoTokenizer`` for a HF name/path.
    ``texts``: the tiny one's training sample already drawn (``data.tokens.corpus_texts``), for a
    frame that is not in memory (``cqia-nb build --streaming``).

    The tiny one has no chat template: use it with a named template (importing transformers
    costs ~1 s, which the raw tokenizer avoids)."""
    if name == "tiny":
        if frame is None and texts is None:
            raise FormattingError("tokenizer 'tiny' is trained on the data: pass the frame")

        cfg = TokenizerConfig(vocab_size=vocab_size)
        tok = tiny_tokenizer(frame, cfg) if texts is None else tiny_tokenizer_for(texts, cfg)
        if not transformers_wrapper:
            return tok
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                       name_or_path="tiny")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, trust_remote_code=False)


def _tok_name(tokenizer) -> str:
    if _is_raw(tokenizer):
        return "tiny" if tokenizer.token_to_id("<|im_start|>") is not None else "tokenizers.Tokenizer"
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def _is_raw(tokenizer) -> bool:
    """A bare ``tokenizers.Tokenizer`` (no chat template, no transformers)."""
    return hasattr(tokenizer, "encode_batch_fast") and not hasattr(tokenizer, "apply_chat_template")


def chat_template_of(tokenizer, template: str | None) -> str:
    """The Jinja template to use: a named one, else the tokenizer's own, else a clear error."""
    if template is not None:
        if template not in NAMED_TEMPLATES:
            raise FormattingError(f"unknown template {template!r}; named templates: {', '.join(NAMED_TEMPLATES)}")
        return NAMED_TEMPLATES[template]
    own = None if _is_raw(tokenizer) else getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):
        own = own.get("default")
    if not own:
        raise FormattingError(
            f"tokenizer {_tok_name(tokenizer)!r} has no chat template. Either use a named template "
            f"(format: template: chatml, or qwen) or use a tokenizer that ships one "
            "(or set tokenizer.chat_template before formatting)")
    return own


def _backend(tokenizer):
    """The Rust ``tokenizers.Tokenizer`` behind a fast tokenizer (None when there is none)."""
    if _is_raw(tokenizer):
        return tokenizer
    tok = getattr(tokenizer, "backend_tokenizer", None)
    if tok is None:
        tok = getattr(tokenizer, "_tokenizer", None)
    return tok if hasattr(tok, "encode_batch_fast") else None


def encode_lengths(texts: Sequence[str], tokenizer, batch_size: int = 1024) -> np.ndarray:
    """Token counts of ``texts`` (no special tokens added), in batches."""
    out = np.zeros(len(texts), dtype=np.int64)
    backend = _backend(tokenizer)
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i:i + batch_size])
        if backend is not None:
            enc = backend.encode_batch_fast(chunk, add_special_tokens=False)
            out[i:i + len(chunk)] = [len(e.ids) for e in enc]
        else:
            ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
            out[i:i + len(chunk)] = [len(x) for x in ids]
    return out


def _tokenizer_key(tokenizer) -> str | None:
    """A hash of the tokenizer's full definition (None when it cannot be serialised)."""
    backend = _backend(tokenizer)
    try:
        spec = backend.to_str() if backend is not None else None
    except Exception:
        spec = None
    if spec is None:
        return None
    return hashlib.sha256(f"v1\n{type(tokenizer).__name__}\n{spec}".encode("utf-8")).hexdigest()[:24]


def count_tokens_cached(texts: Sequence[str], tokenizer, batch_size: int = 1024, cache: bool = True) -> np.ndarray:
    """``encode_lengths`` with a disk cache of counts keyed by (tokenizer definition, text).

    Tokenising is the slowest step of a build (byte-level BPE runs at a few MB/s); a rebuild with
    another seed, spec or subset list re-renders the same texts, so their counts are looked up in
    ``<cache_dir>/token-counts/<tokenizer hash>.parquet`` (BLAKE2b-128 of each text -> count)
    instead. Counts are exact either way; ``cache=False`` (or an unserialisable tokenizer) skips it.
    """
    key = _tokenizer_key(tokenizer) if cache else None
    if key is None:
        return encode_lengths(texts, tokenizer, batch_size)

    path = cache_dir() / "token-counts" / f"{key}.parquet"
    hashes = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]
    want = pl.DataFrame({"h": pl.Series(hashes, dtype=pl.Binary)}).with_row_index("i")
    known = None
    if path.is_file():
        try:
            known = pl.read_parquet(path)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            known = None
    out = np.full(len(texts), -1, dtype=np.int64)
    if known is not None and known.height:
        hit = want.join(known, on="h", how="inner")
        out[hit["i"].to_numpy()] = hit["n"].to_numpy()
    miss = np.flatnonzero(out < 0)
    if miss.size:
        out[miss] = encode_lengths([texts[i] for i in miss.tolist()], tokenizer, batch_size)
        new = pl.DataFrame({"h": pl.Series([hashes[i] for i in miss.tolist()], dtype=pl.Binary),
                            "n": pl.Series(out[miss], dtype=pl.Int64)})
        table = pl.concat([known, new]).unique("h", keep="first") if known is not None else new.unique("h")
        try:
            with atomic_file(path, "wb") as fh:
                table.write_parquet(fh)
        except OSError:  # a read-only cache must not stop the build
            pass
    return out


def _prefix_chars(text: str, n_tokens: int, tokenizer) -> str:
    """The longest prefix of ``text`` made of its first ``n_tokens`` tokens (cut at a character)."""
    if n_tokens <= 0:
        return ""
    backend = _backend(tokenizer)
    if backend is not None:
        enc = backend.encode(text, add_special_tokens=False)
        if n_tokens >= len(enc.ids):
            return text
        end = enc.offsets[n_tokens - 1][1]
        return text[:end]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if n_tokens >= len(enc["input_ids"]):
        return text
    return text[:enc["offset_mapping"][n_tokens - 1][1]]


def render_jinja(frame: pl.DataFrame, tokenizer, chat_template: str | None = None,
                 system: str | None = None, batch_size: int = 512) -> pl.Series:
    """Render each record's messages with a Jinja chat template through ``apply_chat_template``."""
    msgs = frame.select(messages_expr(system)).to_series().to_list()
    out: list[str] = []
    for i in range(0, len(msgs), batch_size):
        out.extend(tokenizer.apply_chat_template(msgs[i:i + batch_size], chat_template=chat_template,
                                                 tokenize=False, add_generation_prompt=False))
    return pl.Series("text", out, dtype=pl.String)


def render(frame: pl.DataFrame, tokenizer=None, template: str | None = "chatml",
           system: str | None = None, batch_size: int = 512) -> pl.Series:
    """Rendered training text per record: named templates vectorised, else the tokenizer's own."""
    if template is not None:
        if template not in NAMED_TEMPLATES:
            raise FormattingError(f"unknown template {template!r}; named templates: {', '.join(NAMED_TEMPLATES)}")
        return frame.select(render_expr(template, system)).to_series()
    if tokenizer is None:
        raise FormattingError("template: null renders with the tokenizer's own chat template: pass a tokenizer, "
                              "or name a template (chatml, qwen)")
    return render_jinja(frame, tokenizer, chat_template_of(tokenizer, None), system, batch_size)


@dataclass
class TruncationReport:
    max_length: int | None
    policy: str
    records: int
    over: int = 0            # records whose rendered text was longer than max_length
    truncated: int = 0       # ... whose answer was cut (truncate_output)
    dropped: int = 0         # ... removed (drop, or truncate_output when the prompt alone is too long)
    kept_over: int = 0       # ... kept as they were (keep)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.max_length is None:
            return f"no max_length: {self.records:,} records, none truncated"
        return (f"max_length {self.max_length}, policy {self.policy}: {self.over:,} of {self.records:,} records over "
                f"the limit; {self.truncated:,} truncated, {self.dropped:,} dropped, {self.kept_over:,} kept as they are")


@dataclass
class FormatResult:
    frame: pl.DataFrame        # input columns + messages, text, n_tokens, truncated
    dropped: pl.DataFrame      # removed records + reason
    report: TruncationReport
    config: FormatConfig
    tokenizer: Any = field(default=None, repr=False)

    def token_stats(self) -> dict[str, int]:
        return token_stats(self.frame["n_tokens"])


def token_stats(n_tokens: pl.Series) -> dict[str, int]:
    """Sum, mean, median, p95 and max of a token-count column."""
    if n_tokens.len() == 0:
        return {"records": 0, "tokens": 0, "mean": 0, "p50": 0, "p95": 0, "max": 0}
    return {"records": int(n_tokens.len()), "tokens": int(n_tokens.sum()),
            "mean": int(round(float(n_tokens.mean()))), "p50": int(n_tokens.quantile(0.5, "nearest")),
            "p95": int(n_tokens.quantile(0.95, "nearest")), "max": int(n_tokens.max())}


def format_records(frame: pl.DataFrame, config: FormatConfig = FormatConfig(), tokenizer=None) -> FormatResult:
    """Messages, rendered text, token counts and the truncation policy, for every record."""
    missing = [c for c in ("instruction", "input", "output") if c not in frame.columns]
    if missing:
        raise FormattingError(f"the frame has no column(s) {missing}; its columns: {frame.columns}")
    if tokenizer is None:
        tokenizer = load_tokenizer(config.tokenizer, frame)
    if config.template is None:
        chat_template_of(tokenizer, None)  # fail before any work
    text = render(frame, tokenizer, config.template, config.system, config.batch_size)
    n_tok = count_tokens_cached(text.to_list(), tokenizer, config.batch_size, config.cache)
    out = frame.with_columns(messages_expr(config.system), text, pl.Series("n_tokens", n_tok, dtype=pl.Int64),
                             pl.lit(False).alias("truncated"))
    report = TruncationReport(config.max_length, config.truncation, frame.height)
    empty_dropped = out.clear().with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    if config.max_length is None:
        return FormatResult(out, empty_dropped, report, config, tokenizer)
    L = config.max_length
    over = out["n_tokens"] > L
    report.over = int(over.sum())
    if report.over == 0:
        return FormatResult(out, empty_dropped, report, config, tokenizer)
    if config.truncation == "keep":
        report.kept_over = report.over
        return FormatResult(out, empty_dropped, report, config, tokenizer)
    if config.truncation == "drop":
        gone = out.filter(over).with_columns(
            pl.format("too long: {} tokens > max_length {}", pl.col("n_tokens"), pl.lit(L)).alias("reason"))
        report.dropped = gone.height
        return FormatResult(out.filter(~over), gone, report, config, tokenizer)
    # truncate_output
    idx = np.flatnonzero(over.to_numpy())
    sub = out[idx.tolist()]
    outputs = sub["output"].fill_null("").to_list()
    out_tok = encode_lengths(outputs, tokenizer, config.batch_size)
    new_out: list[str | None] = []
    for k, (o, total, ot) in enumerate(zip(outputs, sub["n_tokens"].to_list(), out_tok.tolist())):
        overhead = total - ot
        allowed = L - overhead
        cut = None
        for _ in range(6):  # re-tokenising at the cut can merge differently: adjust and retry
            if allowed <= 0:
                break
            cand = _prefix_chars(o, allowed, tokenizer)
            row = sub[k].with_columns(pl.lit(cand).alias("output"))
            t = render(row, tokenizer, config.template, config.system)
            n = int(encode_lengths(t.to_list(), tokenizer)[0])
            if n <= L:
                cut = cand
                break
            allowed -= n - L
        new_out.append(cut)
    keep_mask = np.array([c is not None for c in new_out], dtype=bool)
    fixed = sub.filter(pl.Series(keep_mask)).with_columns(
        pl.Series("output", [c for c in new_out if c is not None], dtype=pl.String))
    fixed = fixed.drop("messages", "text", "n_tokens", "truncated")
    text2 = render(fixed, tokenizer, config.template, config.system)
    fixed = fixed.with_columns(messages_expr(config.system), text2,
                               pl.Series("n_tokens", encode_lengths(text2.to_list(), tokenizer), dtype=pl.Int64),
                               pl.lit(True).alias("truncated")).select(out.columns)
    gone = sub.filter(pl.Series(~keep_mask)).with_columns(
        pl.format("prompt alone exceeds max_length {} ({} tokens in all)", pl.lit(L), pl.col("n_tokens"))
        .alias("reason"))
    report.truncated = fixed.height
    report.dropped = gone.height
    # put the truncated rows back in their places
    pos = pl.Series("_pos", np.arange(out.height))
    kept_idx = idx[keep_mask]
    merged = pl.concat([out.with_columns(pos).filter(~over),
                        fixed.with_columns(pl.Series("_pos", kept_idx))]).sort("_pos").drop("_pos")
    return FormatResult(merged, gone, report, config, tokenizer)
