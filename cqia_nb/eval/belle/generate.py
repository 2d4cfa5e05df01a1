"""Answers to the BELLE-EVAL questions: batched, cached per model fingerprint, question and settings."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from cqia_nb.core.chat import NAMED_TEMPLATES
from cqia_nb.core.generation import generate_batch
from cqia_nb.core.kvstore import KVStore, default_cache_path
from cqia_nb.eval.belle.data import ANSWER_SCHEMA, GENERATION_VERSION, BelleEvalError
from cqia_nb.models.loading import load_for_inference, model_fingerprint, torch_dtype


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated. ``chat_template``: None (the tokenizer's own), ``"chatml"`` or
    ``"qwen"`` (:data:`cqia_nb.core.chat.NAMED_TEMPLATES`; for base models without one) or a
    Jinja source. ``dtype``: None (the checkpoint's float32 load), ``"bfloat16"`` … for GPUs."""

    max_new_tokens: int = 512
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0
    system: str | None = None
    chat_template: str | None = None
    max_input_tokens: int | None = None
    device: str = "cpu"
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise BelleEvalError("max_new_tokens and batch_size must be >= 1")
        if self.do_sample and self.temperature <= 0:
            raise BelleEvalError("do_sample needs temperature > 0")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise BelleEvalError(f"dtype must be float32, bfloat16 or float16 (or None), got {self.dtype!r}")

    def key_fields(self) -> dict[str, Any]:
        """The settings that change an answer (and so the cache key): not batch size or device."""
        d = dataclasses.asdict(self)
        for k in ("batch_size", "device"):
            d.pop(k)
        if not self.do_sample:  # greedy: sampling knobs do not matter
            for k in ("temperature", "top_p", "seed"):
                d.pop(k)
        return d


def model_identity(model: str | Path) -> str:
    """A stable id for caches: the weights fingerprint of a folder (for an adapter, of the adapter
    and of its base), or ``hub:<name>``."""

    p = Path(model).expanduser()
    cfg = p / "adapter_config.json"
    if cfg.is_file():
        base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path", "")
        return f"adapter:{model_fingerprint(p)}+{model_fingerprint(base)}"
    return model_fingerprint(p if p.is_dir() else str(model))


def _gen_key(model_id: str, question: str, settings: GenerationSettings) -> str:
    payload = {"v": GENERATION_VERSION, "model": model_id, "question": question, "settings": settings.key_fields()}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _resolve_template(tok, template: str | None, model: str | Path) -> str | None:
    """The Jinja source to pass to apply_chat_template, or None for the tokenizer's own."""

    if template is None:
        if not getattr(tok, "chat_template", None):
            raise BelleEvalError(f"the tokenizer of {str(model)!r} has no chat template (a base model?); set "
                                 "GenerationSettings(chat_template='chatml') (Yi's template) or give a Jinja source")
        return None
    if template in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[template]
    if "{{" in template or "{%" in template:
        return template
    raise BelleEvalError(f"chat_template {template!r} is neither a named template ({', '.join(NAMED_TEMPLATES)}) "
                         "nor a Jinja source")


def generate_answers(model: str | Path, questions: Sequence[str], ids: Sequence[str] | None = None,
                     settings: GenerationSettings = GenerationSettings(), cache: bool = True,
                     cache_path: str | Path | None = None, progress: bool = False) -> pl.DataFrame:
    """One answer per question (:data:`ANSWER_SCHEMA`, in order). Cached answers are reused
    without loading the model; the rest are generated batch by batch, each batch cached as soon
    as it is done. ``empty`` marks answers that are empty or whitespace."""

    questions = list(questions)
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(questions))]
    if len(ids) != len(questions):
        raise BelleEvalError(f"{len(ids)} ids for {len(questions)} questions")
    model_id = model_identity(model)
    keys = [_gen_key(model_id, q, settings) for q in questions]
    rows: list[dict[str, Any]] = [{"item_id": i, "gen_key": k, "cached": False} for i, k in zip(ids, keys)]
    store = KVStore(cache_path or default_cache_path("generations.sqlite")) if cache else None
    try:
        hits = store.get_many(keys) if store is not None else {}
        todo = []
        for i, k in enumerate(keys):
            h = hits.get(k)
            if isinstance(h, dict) and isinstance(h.get("answer"), str):
                rows[i].update(answer=h["answer"], finish=h.get("finish"), new_tokens=h.get("new_tokens"), cached=True)
            else:
                todo.append(i)
        if todo:
            _generate_into(rows, todo, questions, keys, model, settings, store, progress)
    finally:
        if store is not None:
            store.close()
    for r in rows:
        a = r.get("answer")
        r["empty"] = None if a is None else not a.strip()
    return pl.DataFrame(rows, schema=ANSWER_SCHEMA)


def _generate_into(rows, todo, questions, keys, model, settings: GenerationSettings, store, progress) -> None:
    import torch
    from tqdm.auto import tqdm

    dtype = torch_dtype(settings.dtype) if settings.dtype else None
    try:
        lm, tok = load_for_inference(model, dtype=dtype, device=settings.device)
    except OSError as e:
        raise BelleEvalError(f"could not load the model {str(model)!r} ({e}); pass a local folder with safetensors "
                             "weights (a full model or a LoRA/QLoRA adapter folder)") from e
    template = _resolve_template(tok, settings.chat_template, model)
    # similar lengths share a batch; every batch is cached before the next one starts
    todo = sorted(todo, key=lambda i: len(questions[i]))
    bar = tqdm(total=len(todo), desc="generate", unit="q", disable=not progress)
    step = settings.batch_size
    for b in range(0, len(todo), step):
        idx = todo[b:b + step]
        try:
            outs = generate_batch(lm, tok, [questions[i] for i in idx], max_new_tokens=settings.max_new_tokens,
                                  system=settings.system, batch_size=step, do_sample=settings.do_sample,
                                  temperature=settings.temperature, top_p=settings.top_p,
                                  repetition_penalty=settings.repetition_penalty, seed=settings.seed + b,
                                  chat_template=template, max_input_tokens=settings.max_input_tokens)
        except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory: recorded, not cached; a rerun retries
            for i in idx:
                rows[i].update(gen_error="generation_error", gen_error_message=f"{type(e).__name__}: {e}"[:500])
            if settings.device.startswith("cuda"):
                torch.cuda.empty_cache()
            bar.update(len(idx))
            continue
        for i, o in zip(idx, outs):
            rows[i].update(answer=o["answer"], finish=o["finish"], new_tokens=o["new_tokens"])
        if store is not None:
            store.put_many({keys[i]: {"answer": o["answer"], "finish": o["finish"], "new_tokens": o["new_tokens"],
                                      "time": time.time()} for i, o in zip(idx, outs)})
        bar.update(len(idx))
    bar.close()
