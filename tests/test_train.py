"""cqia_nb.train: config validation, assistant-only labels, packing isolation, full/LoRA/QLoRA
steps on the tiny Llama, resume after SIGKILL, adapter merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cqia_nb.train import TrainConfig, TrainConfigError, parse_overrides

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("train-*.yaml"))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """24 bundled records as a messages jsonl (short answers keep the steps fast)."""
    from cqia_nb.data import load

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
                per_device_batch_size=4, max_steps=12, learning_rate=3e-3, lr_scheduler="constant",
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
    ({"max_steps": -1, "epochs": 0}, "set epochs > 0 or max_steps > 0"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"eval_steps": 5, "val_fraction": 0.0}, "needs a validation split"),
    ({"data": "/nonexistent/x.jsonl"}, "does not exist"),
    ({"lr_scheduler": "triangle"}, "unknown scheduler"),
    ({"packing": "yes"}, "packing: must be true or false"),
    ({"chat_template": "vicuna"}, "chat_template"),
])
def test_config_errors(over, match):
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig.from_dict(over)


def test_qlora_without_bitsandbytes(monkeypatch):
    import cqia_nb.train as tr

    monkeypatch.setattr(tr, "bnb_4bit_support", lambda: (False, "bitsandbytes is not installed"))
    with pytest.raises(TrainConfigError, match="qlora needs bitsandbytes with 4-bit support"):
        TrainConfig.from_dict({"method": "qlora"})
    TrainConfig.from_dict({"method": "lora"})  # lora does not need it


def test_missing_chat_template(tmp_path):
    from tokenizers import Tokenizer

    from cqia_nb.models import PAD, BOS, EOS
    from cqia_nb.tokens import train_tiny_tokenizer
    from cqia_nb.train import load_tokenizer
    from transformers import PreTrainedTokenizerFast

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
    from cqia_nb.train import _tiny_model_dir, load_conversations, load_tokenizer

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
    from cqia_nb.formatting import CHATML_TEMPLATE
    from cqia_nb.train import encode_conversation

    folder, tok, _ = tiny_tok
    if template == "no-markers":
        from cqia_nb.train import load_tokenizer

        tok = load_tokenizer(folder, CHATML_TEMPLATE)
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

    from cqia_nb.train import TrainConfig as TC, _collator, encode_conversation

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
    from cqia_nb.train import read_metrics, train

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

    from cqia_nb.train import _load_for_inference, generate, merge_adapter, train

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
    from cqia_nb.train import read_metrics, train

    over = dict(method="lora", learning_rate=1e-2, max_steps=16, save_steps=4, save_total_limit=None,
                lr_scheduler="cosine", warmup_ratio=0.1)
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
    try:
        deadline = time.time() + 300
        while not (killed / "checkpoint-4" / "trainer_state.json").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # a little past the checkpoint, so logs beyond it exist and must be cut
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
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
