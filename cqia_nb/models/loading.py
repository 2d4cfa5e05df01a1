"""Loading any HF causal LM safely (safetensors only, never remote code), full or LoRA adapter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cqia_nb.models.store import MARKER, quiet_transformers

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
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name != MARKER and not f.name.startswith(".")
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


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def load_for_inference(model_dir: str | Path, dtype=None, device: str = "cpu"):
    """(model, tokenizer) for a full model folder or an adapter folder (base + adapter, unmerged),
    in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(model_dir)
    dtype = dtype or torch.float32
    with quiet_transformers():
        if is_adapter(folder):
            from peft import PeftModel

            base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
            model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=True, trust_remote_code=False)
            import warnings

            with warnings.catch_warnings():  # peft reads the pre-5.24 is_gradient_checkpointing alias
                warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*",
                                        category=FutureWarning)
                model = PeftModel.from_pretrained(model, str(folder))
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True,
                                                         trust_remote_code=False)
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device != "cpu":
        model.to(device)
    model.eval()
    return model, tok
