"""The tiny local causal LM of the ``cpu-tiny`` profile, and a safe loader for any HF causal LM.

``build_tiny_model`` wraps the tiny byte-level BPE (``cqia_nb.data.tokens``) as a transformers fast
tokenizer with a ChatML chat template, builds a small ``LlamaForCausalLM`` from a fixed seed and
saves both (weights as safetensors) in one folder. ``train_tiny_lm`` gives it a few dozen LM steps
on the loaded text so that perplexities mean something. Both are cached by content hash under
``<cache_dir>/models``: a repeated call returns the existing folder at once.

``load_causal_lm`` loads a model by local path or hub name, always with ``use_safetensors=True``
and ``trust_remote_code=False`` (a checkpoint that needs either is refused, not executed).

Special tokens of the tiny tokenizer: ``bos`` = ``<|endoftext|>`` (starts every document),
``eos`` = ``<|im_end|>`` (ends every chat turn, so ``generate`` stops there), ``pad`` = ``<pad>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from cqia_nb.core.chat import CHATML_TEMPLATE, render_chatml, user_content
from cqia_nb.core.hashing import content_key
from cqia_nb.data.load import LoadConfig, load
from cqia_nb.data.tokens import TokenizerConfig, tiny_tokenizer
from cqia_nb.models.loading import load_causal_lm, model_fingerprint
from cqia_nb.models.store import MODEL_VERSION, is_complete, models_dir, save_model

BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<pad>"


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Llama. ``vocab_size`` None: taken from the tokenizer."""

    vocab_size: int | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_positions: int = 512
    seed: int = 0
    #: vocabulary of the BPE trained when ``build_tiny_model`` is given a frame
    tokenizer_vocab_size: int = 4000


def _raw_tokenizer(tokenizer_or_frame: Any, config: TinyModelConfig):
    """A ``tokenizers.Tokenizer`` from a frame (trained/cached), a Tokenizer, or a HF fast tokenizer."""
    if isinstance(tokenizer_or_frame, pl.DataFrame):

        return tiny_tokenizer(tokenizer_or_frame, TokenizerConfig(vocab_size=config.tokenizer_vocab_size))
    backend = getattr(tokenizer_or_frame, "backend_tokenizer", None)
    if backend is not None:  # a transformers fast tokenizer
        return backend
    if hasattr(tokenizer_or_frame, "to_str") and hasattr(tokenizer_or_frame, "encode_batch"):
        return tokenizer_or_frame
    raise TypeError("build_tiny_model needs a polars DataFrame, a tokenizers.Tokenizer or a fast "
                    f"transformers tokenizer, got {type(tokenizer_or_frame).__name__}")


def wrap_tokenizer(tok) -> Any:
    """A ``tokenizers.Tokenizer`` with the chat specials as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    for t in (BOS, EOS, PAD, "<|im_start|>"):
        if tok.token_to_id(t) is None:
            raise ValueError(f"tokenizer lacks the special token {t!r}; train it with "
                             "cqia_nb.data.tokens.train_tiny_tokenizer")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   chat_template=CHATML_TEMPLATE, model_max_length=1 << 30)


def build_tiny_model(tokenizer_or_frame: Any, config: TinyModelConfig = TinyModelConfig(),
                     out_dir: str | Path | None = None) -> Path:
    """Build (or find) the tiny Llama + tokenizer folder and return its path.

    ``tokenizer_or_frame``: a frame (its text trains the tiny BPE, see ``tokens.tiny_tokenizer``),
    a ``tokenizers.Tokenizer`` or a fast transformers tokenizer. The folder holds
    ``model.safetensors``, ``config.json``, ``tokenizer.json``, ``chat_template.jinja`` … and is
    named by the hash of the tokenizer and ``config``; an identical second call returns at once.
    """
    tok = _raw_tokenizer(tokenizer_or_frame, config)
    tok_json = tok.to_str()
    key = content_key("tiny-build", MODEL_VERSION, tok_json, json.dumps(dataclasses.asdict(config), sort_keys=True))
    final = Path(out_dir) if out_dir is not None else models_dir() / f"tiny-{key[:16]}"
    if is_complete(final, key):
        return final

    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_tok = wrap_tokenizer(Tokenizer.from_str(tok_json))
    vocab = config.vocab_size or len(hf_tok)
    if vocab < len(hf_tok):
        raise ValueError(f"vocab_size {vocab} is smaller than the tokenizer's {len(hf_tok)} tokens")
    if config.hidden_size % config.num_heads:
        raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}")
    lcfg = LlamaConfig(
        vocab_size=vocab, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size, max_position_embeddings=config.max_positions,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=False)
    # A fixed seed, and a CPU generator that does not disturb the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(lcfg)
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.generation_config.bos_token_id = hf_tok.bos_token_id

    return save_model(model, hf_tok, final, {"key": key, "kind": "tiny", "version": MODEL_VERSION,
                                              "config": dataclasses.asdict(config)})


def train_tiny_lm(folder: str | Path, texts: Iterable[str], steps: int = 40, *, batch_size: int = 8,
                  seq_len: int = 128, lr: float = 3e-3, seed: int = 0,
                  out_dir: str | Path | None = None, progress: bool = False, schedule: str = "constant") -> Path:
    """A few quick causal-LM steps on ``texts`` so the tiny model's perplexity is meaningful.

    Each text becomes ``<bos> text``; the token stream is packed into ``seq_len`` windows and
    ``steps`` AdamW steps run on seeded random batches of them. The trained model is saved to a
    new folder named by the hash of (source model, texts, hyper-parameters); an identical call
    returns that folder without training. A plain torch loop: the Trainer-based module comes later.
    ``schedule="cosine"`` warms the rate up over the first 5 % of the steps and decays it to zero
    (longer pretraining, e.g. the subset sweep's shared base); ``"constant"`` keeps ``lr``.
    """
    import torch

    src = Path(folder)
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_tiny_lm needs at least one non-empty text")
    th = hashlib.sha256()
    for t in texts:
        th.update(t.encode("utf-8"))
        th.update(b"\x00")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    hp: dict[str, Any] = dict(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed)
    if schedule != "constant":  # the default stays out of the key: folders built before keep their names
        hp["schedule"] = schedule
    key = content_key("tiny-train", MODEL_VERSION, model_fingerprint(src), th.hexdigest(), json.dumps(hp, sort_keys=True))
    final = Path(out_dir) if out_dir is not None else models_dir() / f"{src.name}-lm-{key[:12]}"
    if is_complete(final, key):
        return final

    model, tok = load_causal_lm(src, cache=False)
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    stream: list[int] = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(([bos] if bos is not None else []) + ids)
    seq_len = max(2, min(seq_len, len(stream), model.config.max_position_embeddings))
    data = torch.tensor(stream[: len(stream) // seq_len * seq_len] or stream[:seq_len]).view(-1, seq_len)

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        warm = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, (lambda i: min(1.0, (i + 1) / warm) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, i / max(1, steps))))) if schedule == "cosine" else (lambda i: 1.0))
        from tqdm.auto import tqdm

        bar = tqdm(range(steps), desc="tiny LM", unit="step", disable=not progress)
        final_loss = None
        for _ in bar:
            idx = torch.randint(0, data.shape[0], (min(batch_size, data.shape[0]),), generator=gen)
            batch = data[idx]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            final_loss = float(loss.item())
            bar.set_postfix(loss=f"{final_loss:.3f}", refresh=False)
        model.eval()

    return save_model(model, tok, final, {"key": key, "kind": "tiny-lm", "version": MODEL_VERSION,
                                           "source": str(src), "train": hp, "texts": len(texts),
                                           "final_loss": final_loss})


def tiny_training_texts(frame: pl.DataFrame, tokenizer=None) -> list[str]:
    """What the cpu-tiny profile trains on: each record as a ChatML conversation, and its answer alone.

    Both forms are what ``quality.perplexity`` / ``quality.ifd`` score, so the tiny model is
    trained on the distribution it is asked about.
    """
    out: list[str] = []
    for r in frame.select("instruction", "input", "output").iter_rows(named=True):
        answer = r["output"] or ""
        user = user_content(r["instruction"], r["input"])
        if answer:
            out.append(answer)
        if user or answer:
            out.append(render_chatml([{"role": "user", "content": user}, {"role": "assistant", "content": answer}]))
    return out


def tiny_lm(frame: pl.DataFrame, steps: int = 40, config: TinyModelConfig = TinyModelConfig()) -> Path:
    """The cpu-tiny model for ``frame``: built on its text, then ``steps`` LM steps on it (cached)."""
    folder = build_tiny_model(frame, config)
    if steps <= 0:
        return folder
    return train_tiny_lm(folder, tiny_training_texts(frame), steps=steps, seed=config.seed)


def resolve_model(spec: str | Path) -> str | Path:
    """A ``model`` setting of the evaluation commands as given (a folder, a hub name), except
    ``"tiny"``: the cpu-tiny model built and LM-trained on the bundled data (:func:`tiny_lm`, cached)."""
    if str(spec) != "tiny":
        return spec
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load problems of the bundled copy are the validate command's business
        frame = load(LoadConfig(source="bundled")).frame
    return tiny_lm(frame)
