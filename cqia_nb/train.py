"""Fine-tuning — full, LoRA and QLoRA from one config (``recipes/train-*.yaml``).

``TrainConfig`` holds every setting; ``TrainConfig.from_yaml`` / ``from_dict`` reject unknown keys
and impossible values *before* any data, tokenizer or model is loaded (``TrainConfigError``).
``train(config)`` then:

1. loads the data (``"bundled"``, a CQIA folder, a ``.jsonl``/``.json``/``.parquet`` file, or a
   ``datasets.save_to_disk`` folder) with either a ``messages`` column or
   ``instruction``/``input``/``output`` (turned into [system?, user, assistant] messages: the user
   turn is ``instruction + "\\n" + input`` when ``input`` is not empty, as in ``cqia_nb.formatting``);
2. loads the tokenizer — ``base_model: tiny`` builds the project's 2-layer Llama on the training
   text (``models.build_tiny_model``) — and checks its chat template (``chat_template: chatml``
   installs the project's ChatML template for tokenizers that have none, e.g. Yi base models);
3. tokenizes each conversation with labels = -100 everywhere except the assistant turns' tokens
   (content + ``<|im_end|>``): from ``apply_chat_template(return_assistant_tokens_mask=True)``
   when the template has ``{% generation %}`` markers, else from character spans of the assistant
   contents mapped through the tokenizer's offsets;
4. trains with ``transformers.Trainer`` (TRL is not a dependency) — full fine-tuning, LoRA (peft),
   or QLoRA (bitsandbytes 4-bit nf4 base + ``prepare_model_for_kbit_training`` + LoRA);
5. writes ``metrics.jsonl`` (one JSON object per log: step, loss, learning_rate, grad_norm,
   tokens, …), checkpoints (weights as safetensors) and the final model/adapter + tokenizer +
   ``train_config.yaml`` in ``output_dir``.

Packing (``packing: true``) uses ``DataCollatorWithFlattening``: each batch becomes one row with
``position_ids`` restarting at 0 for every example and the first label of each example set to
-100; transformers' masking derives a block-diagonal causal mask from those position ids (sdpa and
eager attention), so no example attends to another — ``tests/test_train.py`` checks that the
packed logits equal the per-example logits on the tiny Llama on CPU.

``train(config, resume=True)`` continues from the last complete checkpoint in ``output_dir``
(model, optimizer, scheduler and RNG states); ``metrics.jsonl`` is cut back to that step, so the
logged curve continues exactly as an uninterrupted run (tested with a SIGKILLed subprocess).
Optimizer/scheduler states are Trainer's ``optimizer.pt``/``scheduler.pt`` (torch, loaded with
``weights_only``); model weights are always safetensors.

``merge_adapter(output_dir)`` folds a LoRA/QLoRA adapter into its base (loaded unquantised in the
compute dtype) and saves a plain safetensors model; ``generate(model_dir, prompts)`` answers
prompts greedily with a full model or an adapter folder, for before/after comparisons.

CLI: ``python -m cqia_nb.train --config recipes/train-cpu-tiny.yaml [--set key=value ...] [--resume]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

METHODS = ("full", "lora", "qlora")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
QUANT_TYPES = ("nf4", "fp4")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr",
              "warmup_stable_decay")
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.yaml"


class TrainConfigError(ValueError):
    """A training setting that cannot work; the message names the key and what to change."""


@dataclass
class TrainConfig:
    """Everything one fine-tuning run needs. See ``recipes/train-*.yaml`` for annotated presets."""

    # model
    base_model: str = "tiny"               # "tiny", a local folder or a hub id (safetensors only)
    method: str = "lora"                   # full | lora | qlora
    chat_template: str | None = None       # None: the tokenizer's own; "chatml"; or a Jinja source
    tiny_vocab_size: int = 2000            # tokenizer vocabulary when base_model is "tiny"
    tiny_hidden_size: int = 128
    tiny_layers: int = 2
    # LoRA (lora/qlora)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: Any = "all-linear"  # "all-linear" or a list of module names
    # 4-bit (qlora)
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "float32"
    # optimisation
    precision: str = "fp32"                # fp32 | bf16 | fp16 (mixed precision; GPU for fp16)
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int = -1                    # > 0 overrides epochs
    per_device_batch_size: int = 4
    gradient_accumulation: int = 1
    max_length: int = 512
    packing: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    optim: str = "adamw_torch"
    deepspeed: Any = None                  # a DeepSpeed config (path or inline mapping), multi-GPU
    # output / logging
    output_dir: str = "runs/train"
    logging_steps: int = 1
    eval_steps: int | None = None          # None: no evaluation during training
    save_steps: int | None = None          # None: save only at the end
    save_total_limit: int | None = 2
    # data
    data: str = "bundled"
    val_fraction: float = 0.0
    max_records: int | None = None         # first N records (after the seeded shuffle)
    system_prompt: str | None = None
    # runtime
    torch_threads: int | None = None       # torch.set_num_threads; None leaves torch's default

    # ------------------------------------------------------------------ construction / checks

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "config") -> "TrainConfig":
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            import difflib

            hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, known, 1)) else repr(u)
                     for u in unknown]
            raise TrainConfigError(f"{where}: unknown key(s) {', '.join(hints)}; known keys: {', '.join(sorted(known))}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "TrainConfig":
        import yaml

        p = Path(path)
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise TrainConfigError(f"config file {str(p)!r} not found") from None
        except yaml.YAMLError as e:
            raise TrainConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(d, dict):
            raise TrainConfigError(f"{p}: expected a mapping of settings, got {type(d).__name__}")
        d.update(parse_overrides(overrides))
        return cls.from_dict(d, where=str(p))

    def replace(self, **over: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**dataclasses.asdict(self), **over})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``TrainConfigError`` for the first impossible setting (no files are read except
        to check that a local ``data`` path exists)."""
        def bad(key: str, msg: str) -> None:
            raise TrainConfigError(f"{key}: {msg}")

        def num(key: str, kind=(int, float)) -> Any:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, kind):
                want = "an integer" if kind is int else "a number"
                bad(key, f"must be {want}, got {v!r}")
            return v

        if self.method not in METHODS:
            bad("method", f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            bad("base_model", "must be 'tiny', a local folder or a hub id")
        if self.precision not in PRECISIONS:
            bad("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lr_scheduler not in SCHEDULERS:
            bad("lr_scheduler", f"unknown scheduler {self.lr_scheduler!r}; use one of {', '.join(SCHEDULERS)}")
        if self.method in ("lora", "qlora"):
            if num("lora_r", int) < 1:
                bad("lora_r", f"LoRA rank must be >= 1, got {self.lora_r} (use method: full for no adapter)")
            if num("lora_alpha") <= 0:
                bad("lora_alpha", f"must be > 0, got {self.lora_alpha}")
            if not 0 <= num("lora_dropout") < 1:
                bad("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
            tm = self.lora_target_modules
            if not (tm == "all-linear" or (isinstance(tm, (list, tuple)) and tm and all(isinstance(t, str) and t for t in tm))):
                bad("lora_target_modules", f"must be 'all-linear' or a non-empty list of module names, got {tm!r}")
        if self.method == "qlora":
            if self.bnb_4bit_quant_type not in QUANT_TYPES:
                bad("bnb_4bit_quant_type", f"must be one of {', '.join(QUANT_TYPES)}, got {self.bnb_4bit_quant_type!r}")
            if self.bnb_4bit_compute_dtype not in COMPUTE_DTYPES:
                bad("bnb_4bit_compute_dtype", f"must be one of {', '.join(COMPUTE_DTYPES)}, got {self.bnb_4bit_compute_dtype!r}")
            ok, why = bnb_4bit_support()
            if not ok:
                bad("method", f"qlora needs bitsandbytes with 4-bit support: {why}. Install "
                              "bitsandbytes>=0.43 or use method: lora")
        for key in ("bnb_4bit_use_double_quant", "packing", "gradient_checkpointing"):
            if not isinstance(getattr(self, key), bool):
                bad(key, f"must be true or false, got {getattr(self, key)!r}")
        if num("learning_rate") <= 0:
            bad("learning_rate", f"must be > 0, got {self.learning_rate}")
        if not 0 <= num("warmup_ratio") < 1:
            bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if num("weight_decay") < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if num("max_grad_norm") < 0:
            bad("max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        num("max_steps", int)
        if self.max_steps <= 0 and num("epochs") <= 0:
            bad("epochs", f"set epochs > 0 or max_steps > 0 (got epochs={self.epochs}, max_steps={self.max_steps})")
        for key in ("per_device_batch_size", "gradient_accumulation", "logging_steps", "tiny_vocab_size",
                    "tiny_hidden_size", "tiny_layers"):
            if num(key, int) < 1:
                bad(key, f"must be >= 1, got {getattr(self, key)}")
        if num("max_length", int) < 8:
            bad("max_length", f"must be >= 8 tokens, got {self.max_length}")
        num("seed", int)
        for key in ("eval_steps", "save_steps", "save_total_limit", "max_records", "torch_threads"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                bad(key, f"must be a positive integer or null, got {v!r}")
        if not 0 <= num("val_fraction") < 1:
            bad("val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        if self.eval_steps and self.val_fraction <= 0:
            bad("eval_steps", "evaluation needs a validation split: set val_fraction > 0 (e.g. 0.05)")
        if self.precision == "fp16" and self.method != "qlora" and not _cuda():
            bad("precision", "fp16 mixed precision needs a CUDA GPU; use fp32 (or bf16) on CPU")
        if self.chat_template is not None and not (self.chat_template == "chatml" or "{%" in str(self.chat_template)
                                                   or "{{" in str(self.chat_template)):
            bad("chat_template", f"must be null (the tokenizer's own), 'chatml' or a Jinja template, got {self.chat_template!r}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            bad("output_dir", "must be a folder path")
        if not isinstance(self.data, str) or not self.data:
            bad("data", "must be 'bundled' or a path")
        if self.data != "bundled" and not Path(self.data).expanduser().exists():
            bad("data", f"{self.data!r} does not exist (use 'bundled', a .jsonl/.json/.parquet file, a "
                        "CQIA folder or a datasets.save_to_disk folder)")
        if self.deepspeed is not None:
            if not isinstance(self.deepspeed, (str, dict)):
                bad("deepspeed", "must be a path to a DeepSpeed JSON or an inline mapping")
            if importlib.util.find_spec("deepspeed") is None:
                bad("deepspeed", "is set but the deepspeed package is not installed (pip install deepspeed; "
                                 "launch with `accelerate launch` or `deepspeed` on the GPUs)")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            bad("system_prompt", f"must be a string or null, got {self.system_prompt!r}")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lora_r=16", "packing=true"]`` -> ``{"lora_r": 16, "packing": True}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise TrainConfigError(f"--set {it!r}: expected key=value")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else None
    return out


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def bnb_4bit_support() -> tuple[bool, str]:
    """Whether bitsandbytes can load 4-bit weights here, and why not."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed"
    try:
        from importlib.metadata import version

        v = version("bitsandbytes")
        major, minor = (int(x) for x in v.split(".")[:2])
    except Exception as e:  # pragma: no cover
        return False, f"cannot read the bitsandbytes version ({e})"
    if (major, minor) < (0, 43):
        return False, f"bitsandbytes {v} is older than 0.43 (4-bit on CPU)"
    return True, ""


# ----------------------------------------------------------------------------- data

def _messages_from_row(r: dict[str, Any], system: str | None) -> list[dict[str, str]]:
    inst, inp, out = r.get("instruction") or "", r.get("input") or "", r.get("output") or ""
    user = f"{inst}\n{inp}" if inp else inst
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": out}]


def load_conversations(config: TrainConfig) -> list[list[dict[str, str]]]:
    """The training conversations (list of messages), shuffled with ``seed``, capped at ``max_records``."""
    import random

    import polars as pl

    src = config.data
    rows: list[dict[str, Any]]
    if src == "bundled":
        from cqia_nb.data import load

        rows = load(source="bundled").frame.to_dicts()
    else:
        p = Path(src).expanduser()
        if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "state.json").is_file()
                           or (p / "dataset_dict.json").is_file()):
            import datasets

            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
            rows = ds.to_list()
        elif p.is_dir():
            from cqia_nb.data import load

            rows = load(source=str(p)).frame.to_dicts()
        elif p.suffix == ".parquet":
            rows = pl.read_parquet(p).to_dicts()
        elif p.suffix in (".jsonl", ".json"):
            text = p.read_text(encoding="utf-8")
            if text.lstrip().startswith("["):
                rows = json.loads(text)
            else:  # split on \n only: CQIA text contains raw U+2028
                rows = [json.loads(line) for line in text.split("\n") if line.strip()]
        else:
            raise TrainConfigError(f"data: cannot read {src!r} (use .jsonl, .json, .parquet or a folder)")
    if not rows:
        raise TrainConfigError(f"data: {src!r} holds no records")
    convs: list[list[dict[str, str]]] = []
    for r in rows:
        if r.get("messages"):
            msgs = [{"role": m["role"], "content": m["content"] or ""} for m in r["messages"]]
            if config.system_prompt is not None and msgs[0]["role"] != "system":
                msgs = [{"role": "system", "content": config.system_prompt}] + msgs
        elif "instruction" in r or "output" in r:
            msgs = _messages_from_row(r, config.system_prompt)
        else:
            raise TrainConfigError(f"data: records need a 'messages' column or instruction/input/output; "
                                   f"got columns {sorted(r)}")
        if any(m["role"] == "assistant" and m["content"] for m in msgs):
            convs.append(msgs)
    random.Random(config.seed).shuffle(convs)
    if config.max_records:
        convs = convs[: config.max_records]
    return convs


def _tiny_model_dir(config: TrainConfig, convs: list[list[dict[str, str]]]) -> Path:
    import polars as pl

    from cqia_nb.models import TinyModelConfig, build_tiny_model

    frame = pl.DataFrame({"instruction": [" ".join(m["content"] for m in c if m["role"] != "assistant") for c in convs],
                          "input": [""] * len(convs),
                          "output": [" ".join(m["content"] for m in c if m["role"] == "assistant") for c in convs]})
    tcfg = TinyModelConfig(hidden_size=config.tiny_hidden_size, num_layers=config.tiny_layers,
                           intermediate_size=2 * config.tiny_hidden_size,
                           max_positions=max(512, config.max_length), tokenizer_vocab_size=config.tiny_vocab_size,
                           seed=config.seed)
    return build_tiny_model(frame, tcfg)


def load_tokenizer(model_dir: str | Path, chat_template: str | None = None):
    """The model's tokenizer (no remote code) with a checked chat template and a pad token."""
    from transformers import AutoTokenizer

    from cqia_nb.models import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if chat_template == "chatml":
        tok.chat_template = CHAT_TEMPLATE
    elif chat_template:
        tok.chat_template = chat_template
    if not getattr(tok, "chat_template", None):
        raise TrainConfigError(f"chat_template: the tokenizer of {str(model_dir)!r} has no chat template; set "
                               "chat_template: chatml (the ChatML template Yi-Chat/Qwen use) or give a Jinja template")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _has_generation_markers(tok) -> bool:
    t = tok.chat_template if isinstance(tok.chat_template, str) else ""
    return "{% generation %}" in t or "{%- generation %}" in t


def encode_conversation(tok, messages: list[dict[str, str]], max_length: int) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` (-100 outside assistant turns), truncated."""
    if _has_generation_markers(tok):
        enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True, add_generation_prompt=False)
        ids = list(enc["input_ids"])
        mask = list(enc["assistant_masks"])
    else:  # character spans of the assistant turns, mapped through token offsets
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        spans, pos = [], 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prefix = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            start = len(prefix) if text.startswith(prefix) else text.find(m["content"], pos)
            if start < 0:
                continue
            end = text.find(m["content"], start) + len(m["content"])
            eos = tok.eos_token or ""
            if eos and text.startswith(eos, end):
                end += len(eos)
            spans.append((start, end))
            pos = end
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = [int(any(s <= a < e for s, e in spans)) for a, b in enc["offset_mapping"]]
    ids, mask = ids[:max_length], mask[:max_length]
    labels = [t if m else -100 for t, m in zip(ids, mask)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def build_datasets(config: TrainConfig, tok, convs: list[list[dict[str, str]]]):
    """Tokenized train (and validation) ``datasets.Dataset``; examples with no labelled token are dropped."""
    import datasets

    rows = [encode_conversation(tok, c, config.max_length) for c in convs]
    rows = [r for r in rows if any(x != -100 for x in r["labels"])]
    if not rows:
        raise TrainConfigError("data: no example keeps an assistant token within max_length "
                               f"{config.max_length}; raise max_length")
    n_val = int(round(len(rows) * config.val_fraction)) if config.val_fraction > 0 else 0
    if config.val_fraction > 0:
        n_val = max(1, min(n_val, len(rows) - 1))
    train = datasets.Dataset.from_list(rows[n_val:])
    val = datasets.Dataset.from_list(rows[:n_val]) if n_val else None
    return train, val


# ----------------------------------------------------------------------------- model

def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model(config: TrainConfig, model_dir: str | Path):
    """The model to train: plain (full), peft-wrapped (lora) or 4-bit + peft (qlora)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cqia_nb.models import quiet_transformers

    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=config.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=_torch_dtype(config.bnb_4bit_compute_dtype))
        kwargs["device_map"] = {"": 0} if _cuda() else "cpu"
        kwargs["dtype"] = _torch_dtype(config.bnb_4bit_compute_dtype)
    else:
        kwargs["dtype"] = torch.float32 if config.precision == "fp32" or not _cuda() else _torch_dtype(
            "bfloat16" if config.precision == "bf16" else "float16")
        if config.precision == "fp16":
            kwargs["dtype"] = torch.float32  # fp16 AMP keeps fp32 master weights
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    # No KV cache while training: besides saving memory, transformers only derives the per-example
    # (block-diagonal) mask of packed rows from position_ids when no cache object exists.
    model.config.use_cache = False
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        import warnings

        with warnings.catch_warnings():  # peft still calls the pre-5.24 gradient_checkpointing_enable
            warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*", category=FutureWarning)
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=config.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
    tm = config.lora_target_modules
    lcfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=tm if tm == "all-linear" else list(tm), bias="none", task_type="CAUSAL_LM")
    import warnings

    with warnings.catch_warnings():  # peft reads the pre-5.24 is_gradient_checkpointing alias
        warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*", category=FutureWarning)
        return get_peft_model(model, lcfg)


# ----------------------------------------------------------------------------- callbacks

def _metrics_callback(path: Path):
    from transformers import TrainerCallback

    class MetricsJsonlCallback(TrainerCallback):
        """Appends every Trainer log to ``metrics.jsonl`` (flushed at once: plot it live)."""

        def __init__(self) -> None:
            self.t0: float | None = None
            self.tok0 = 0

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.tok0 = time.perf_counter(), int(state.num_input_tokens_seen or 0)

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            row: dict[str, Any] = {"step": int(state.global_step), "epoch": state.epoch}
            for k, v in logs.items():
                try:
                    row[k] = float(v) if not isinstance(v, (int, bool)) else v
                except (TypeError, ValueError):
                    row[k] = v
            row["tokens"] = int(state.num_input_tokens_seen or 0)
            if self.t0 is not None:
                dt = time.perf_counter() - self.t0
                row["tokens_per_s"] = (row["tokens"] - self.tok0) / dt if dt > 0 else None
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return MetricsJsonlCallback()


def _slow_callback(seconds: float):
    """Test hook (``CQIA_TRAIN_STEP_DELAY_S``): sleep after every step so a kill can land mid-run."""
    from transformers import TrainerCallback

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            time.sleep(seconds)

    return Slow()


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``output_dir/metrics.jsonl`` (training logs carry ``loss``; evaluations ``eval_loss``)."""
    p = Path(output_dir) / METRICS_FILE
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").split("\n") if line.strip()]


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest ``checkpoint-N`` folder that was completely written (its trainer_state.json is
    written last by Trainer), or None."""
    out = Path(output_dir)
    best: tuple[int, Path] | None = None
    for d in out.glob("checkpoint-*") if out.is_dir() else ():
        try:
            n = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if (d / "trainer_state.json").is_file() and any(d.glob("*.safetensors")):
            try:
                json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
            except ValueError:
                continue
            if best is None or n > best[0]:
                best = (n, d)
    return best[1] if best else None


# ----------------------------------------------------------------------------- train

@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path              # the final model (full) or adapter (lora/qlora) folder
    base_model_dir: Path         # the base the run started from
    global_step: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0
    resumed_from: Path | None = None   # the checkpoint this run continued from

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics if "loss" in m]


def resolve_base_model(config: TrainConfig, convs=None) -> Path | str:
    if config.base_model == "tiny":
        return _tiny_model_dir(config, convs if convs is not None else load_conversations(config))
    p = Path(config.base_model).expanduser()
    return p if p.is_dir() else config.base_model


def _training_args(config: TrainConfig, has_eval: bool):
    from transformers import TrainingArguments

    on_cpu = not _cuda()
    kw: dict[str, Any] = dict(
        output_dir=config.output_dir, learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=float(config.warmup_ratio), weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, seed=config.seed, data_seed=config.seed,
        logging_steps=config.logging_steps, logging_first_step=False,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval and config.eval_steps else "no", eval_steps=config.eval_steps,
        report_to="none", disable_tqdm=True, remove_unused_columns=False, optim=config.optim,
        include_num_input_tokens_seen="non_padding", use_cpu=on_cpu, dataloader_num_workers=0,
        # qlora: prepare_model_for_kbit_training already enabled checkpointing on the base model
        gradient_checkpointing=config.gradient_checkpointing and config.method != "qlora",
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        bf16=config.precision == "bf16", fp16=config.precision == "fp16",
        deepspeed=config.deepspeed,
    )
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "activation_checkpointing" in fields:  # transformers >= 5.24 renamed gradient_checkpointing*
        kw["activation_checkpointing"] = kw.pop("gradient_checkpointing")
        kw["activation_checkpointing_kwargs"] = kw.pop("gradient_checkpointing_kwargs")
    return TrainingArguments(**kw)


def _collator(config: TrainConfig, tok):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if config.packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    return DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100, return_tensors="pt")


def train(config: TrainConfig, resume: bool = False, progress: bool = False) -> TrainResult:
    """Run one fine-tuning; ``resume=True`` continues from the last complete checkpoint in output_dir."""
    import torch
    from transformers import PrinterCallback, Trainer, set_seed

    config.validate()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    out = Path(config.output_dir)
    ckpt = last_checkpoint(out) if resume else None
    if resume and ckpt is None and read_metrics(out):
        print(f"resume: no complete checkpoint in {out}; starting over", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / METRICS_FILE
    if ckpt is not None:  # cut the logged curve back to the checkpoint so it continues exactly
        step = int(json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
        keep = [m for m in read_metrics(out) if m.get("step", 0) <= step]
        metrics_path.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in keep), encoding="utf-8")
    elif metrics_path.exists():
        metrics_path.unlink()

    set_seed(config.seed)
    convs = load_conversations(config)
    base = resolve_base_model(config, convs)
    tok = load_tokenizer(base, config.chat_template)
    train_ds, val_ds = build_datasets(config, tok, convs)
    set_seed(config.seed)
    model = load_model(config, base)
    import yaml

    (out / CONFIG_FILE).write_text(yaml.safe_dump({**config.to_dict(), "resolved_base_model": str(base)},
                                                  allow_unicode=True, sort_keys=False), encoding="utf-8")
    trainer = Trainer(model=model, args=_training_args(config, val_ds is not None), train_dataset=train_ds,
                      eval_dataset=val_ds, data_collator=_collator(config, tok), processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    if not progress:
        from transformers.trainer_callback import ProgressCallback

        trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_metrics_callback(metrics_path))
    delay = float(os.environ.get("CQIA_TRAIN_STEP_DELAY_S", "0") or 0)
    if delay > 0:
        trainer.add_callback(_slow_callback(delay))
    t0 = time.perf_counter()
    tokens0 = 0
    if ckpt is not None:
        tokens0 = int(json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8")).get("num_input_tokens_seen") or 0)
    import contextlib

    from cqia_nb.models import quiet_transformers

    import warnings

    with contextlib.nullcontext() if progress else quiet_transformers(), warnings.catch_warnings():
        # transformers 5.24 warns about its own deprecated alias inside Trainer; keep stderr stable
        warnings.filterwarnings("ignore", message=".*_checkpointing.* is deprecated and will be removed in v6.*",
                                category=FutureWarning)
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
        secs = time.perf_counter() - t0
        getattr(model, "get_base_model", lambda: model)().config.use_cache = True  # saved for inference
        trainer.save_model(str(out))  # full: model.safetensors; lora/qlora: adapter_model.safetensors
        tok.save_pretrained(str(out))
    return TrainResult(output_dir=out, model_dir=out, base_model_dir=Path(str(base)),
                       global_step=int(trainer.state.global_step), metrics=read_metrics(out),
                       train_tokens=int(trainer.state.num_input_tokens_seen or 0) - tokens0, train_seconds=secs,
                       resumed_from=ckpt)


# ----------------------------------------------------------------------------- merge / generate

def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def _load_for_inference(model_dir: str | Path, dtype=None):
    """(model, tokenizer) for a full model folder or an adapter folder (base + adapter, unmerged)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cqia_nb.models import quiet_transformers

    folder = Path(model_dir)
    dtype = dtype or torch.float32
    with quiet_transformers():
        if _is_adapter(folder):
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
    model.eval()
    return model, tok


def merge_adapter(output_dir: str | Path, out_dir: str | Path | None = None, dtype: str = "float32") -> Path:
    """Fold the LoRA/QLoRA adapter in ``output_dir`` into its base and save a full safetensors model
    (+ tokenizer) to ``out_dir`` (default ``output_dir/merged``). A QLoRA adapter is merged into the
    *unquantised* base in ``dtype``, the usual way to ship it (outputs differ from the 4-bit model
    by the quantisation error)."""
    folder = Path(output_dir)
    if not _is_adapter(folder):
        raise ValueError(f"{folder} holds no adapter (adapter_config.json); was it trained with method: full?")
    model, tok = _load_for_inference(folder, _torch_dtype(dtype))
    merged = model.merge_and_unload()
    dest = Path(out_dir) if out_dir is not None else folder / "merged"
    dest.mkdir(parents=True, exist_ok=True)
    from cqia_nb.models import quiet_transformers

    with quiet_transformers():
        merged.save_pretrained(str(dest), safe_serialization=True)
        tok.save_pretrained(str(dest))
    return dest


def generate(model_dir: str | Path, prompts: Sequence[str], max_new_tokens: int = 64,
             system: str | None = None) -> list[str]:
    """Greedy answers to ``prompts`` (user turns, chat template applied) from a full model or an
    adapter folder."""
    import torch

    model, tok = _load_for_inference(model_dir)
    stop = [tok.eos_token_id] + [i for t in ("<|im_end|>",) if (i := tok.convert_tokens_to_ids(t)) is not None
                                 and i != tok.unk_token_id and i != tok.eos_token_id]
    outs: list[str] = []
    for p in prompts:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
        enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, add_generation_prompt=True,
                                      return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=stop)
        outs.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return outs


# ----------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cqia_nb.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="a recipes/train-*.yaml file")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting (value parsed as YAML); repeatable")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    a = ap.parse_args(argv)
    try:
        cfg = TrainConfig.from_yaml(a.config, a.overrides)
    except TrainConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = train(cfg, resume=a.resume, progress=a.progress)
    losses = res.losses
    print(json.dumps({"output_dir": str(res.output_dir), "global_step": res.global_step,
                      "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                      "tokens_per_s": round(res.tokens_per_s, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
