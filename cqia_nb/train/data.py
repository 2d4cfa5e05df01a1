"""Training data: conversations from any source, tokenised with assistant-only labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cqia_nb.core.chat import CHATML_TEMPLATE, record_messages
from cqia_nb.data.load import load
from cqia_nb.models.tiny import TinyModelConfig, build_tiny_model, tiny_training_texts, train_tiny_lm
from cqia_nb.train.config import TrainConfig, TrainConfigError


def load_conversations(config: TrainConfig, source: str | None = None) -> list[list[dict[str, str]]]:
    """The training conversations (list of messages) of ``config.data`` (or ``source``, e.g.
    ``config.val_data``), shuffled with ``seed``, capped at ``max_records``."""
    import random

    import polars as pl

    src = config.data if source is None else source
    key = "data" if source is None else "val_data"
    rows: list[dict[str, Any]]
    if src == "bundled":

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
            msgs = record_messages(r.get("instruction"), r.get("input"), r.get("output"), config.system_prompt)
        else:
            raise TrainConfigError(f"{key}: records need a 'messages' column or instruction/input/output; "
                                   f"got columns {sorted(r)}")
        if any(m["role"] == "assistant" and m["content"] for m in msgs):
            convs.append(msgs)
    random.Random(config.seed).shuffle(convs)
    if config.max_records and source is None:
        convs = convs[: config.max_records]
    return convs


def tiny_base_model(config: TrainConfig, convs: list[list[dict[str, str]]]) -> Path:
    import polars as pl

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

        folder = train_tiny_lm(folder, tiny_training_texts(frame), steps=config.tiny_pretrain_steps,
                               seq_len=min(128, config.max_length), seed=config.seed)
    return folder


def load_tokenizer(model_dir: str | Path, chat_template: str | None = None):
    """The model's tokenizer (no remote code) with a checked chat template and a pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if chat_template == "chatml":
        tok.chat_template = CHATML_TEMPLATE
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
