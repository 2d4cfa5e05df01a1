"""TRL reads our TRL export and prepares the same training examples as ``cqia_nb.train``.

Issue 12 measured ``trl.SFTTrainer`` beside ours (``benchmarks/bench_sft.py``, README "Why our own
implementation"): identical masks, but about half our tokens/s on CPU, so we keep our implementation. These
tests keep the parity part true on a handful of conversations: the assistant-only labels TRL builds from
notebook 03's TRL export equal ``encode_conversation``'s token for token, TRL's packing keeps examples apart
as ours does, and TRL refuses a template without ``{% generation %}`` markers where ours falls back to
character offsets.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cqia_nb.build.exports import export_trl
from cqia_nb.core.chat import CHATML_TEMPLATE, messages_expr
from cqia_nb.data.load import load
from cqia_nb.train.config import TrainConfig
from cqia_nb.train.data import encode_conversation, load_conversations, load_tokenizer, tiny_base_model

pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[test]')")

SYSTEM = "你是一个乐于助人的助手。"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """Our TRL export (``export_trl``: ``{"messages": [...]}`` per line) of 12 bundled records with a system
    prompt, short and long answers mixed so that max_length 64 truncates some."""
    frame = load(source="bundled").frame.head(200)
    short = frame.filter(pl.col("output").str.len_chars() <= 60).head(8)
    long = frame.filter(pl.col("output").str.len_chars() > 200).head(4)
    rows = pl.concat([short, long]).with_columns(messages_expr(SYSTEM))
    out = tmp_path_factory.mktemp("trl-export")
    (path,) = export_trl(rows, "parity", out)
    return path


@pytest.fixture(scope="module")
def tiny(export):
    cfg = TrainConfig.from_dict({"data": str(export), "tiny_vocab_size": 600, "max_length": 64, "seed": 0})
    convs = load_conversations(cfg)
    folder = tiny_base_model(cfg, convs)
    return folder, load_tokenizer(folder), convs


def _trl_prepared(folder, tok, export: Path, tmp_path: Path, **config):
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    datasets.disable_caching()
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(export), split="train")
    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    model.config.use_cache = False
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False,
                     assistant_only_loss=True, disable_tqdm=True, save_strategy="no", **config)
    return SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)


@pytest.mark.parametrize("max_length", [64, None])
def test_trl_reads_our_export_with_our_masks(tiny, export, tmp_path, max_length):
    folder, tok, convs = tiny
    prepared = _trl_prepared(folder, tok, export, tmp_path, max_length=max_length).train_dataset
    assert {"messages", "input_ids", "labels"} <= set(prepared.column_names)
    theirs = {json.dumps(r["messages"], ensure_ascii=False): r for r in prepared}
    assert len(convs) == 12
    truncated = dropped = 0
    for c in convs:
        ours = encode_conversation(tok, c, max_length or 10**9)
        t = theirs.get(json.dumps(c, ensure_ascii=False))
        if all(x == -100 for x in ours["labels"]):  # the prompt fills max_length: build_datasets drops it, TRL too
            assert t is None
            dropped += 1
            continue
        assert t["input_ids"] == ours["input_ids"]
        assert t["labels"] == ours["labels"]  # -100 outside the assistant content + <|im_end|>
        truncated += max_length is not None and len(ours["input_ids"]) == max_length
    assert len(theirs) == len(convs) - dropped
    assert truncated or max_length is None  # the long answers do reach the cut


def test_trl_packing_keeps_examples_apart_like_ours(tiny, export, tmp_path):
    """TRL's packing (bfd -> padding-free rows + position_ids) leaves every example's logits as they are
    alone, and masks the first label of each example, as our DataCollatorWithFlattening does."""
    import torch

    from cqia_nb.train.trainer import _collator

    folder, tok, convs = tiny
    tr = _trl_prepared(folder, tok, export, tmp_path, max_length=256, packing=True)
    packed = tr.train_dataset
    assert len(packed) < len(convs)  # something was packed together
    most = sorted(range(len(packed)), key=lambda i: -len(packed[i]["seq_lengths"]))[:2]
    batch = tr.data_collator([packed[i] for i in most])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    pos = batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist()
    bounds = list(zip(starts, starts[1:] + [pos.numel()]))
    assert len(bounds) >= 3
    model = tr.model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=batch["input_ids"][:, a:b]).logits[0] for a, b in bounds])
    assert torch.allclose(logits, alone, atol=1e-4)
    assert all(batch["labels"][0, a].item() == -100 for a, _ in bounds)
    # each packed example is one of ours, labels included (its first label masked by both collators)
    ours = {tuple(e["input_ids"]): e for e in (encode_conversation(tok, c, 256) for c in convs)}
    mine = _collator(TrainConfig(packing=True), tok)
    for a, b in bounds:
        e = ours[tuple(batch["input_ids"][0, a:b].tolist())]
        assert batch["labels"][0, a:b].tolist() == mine([e])["labels"][0].tolist()


def test_trl_needs_generation_markers_ours_does_not(tiny, export, tmp_path):
    folder, _, convs = tiny
    plain = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tok = load_tokenizer(folder, plain)
    with pytest.raises(ValueError, match="generation"):
        _trl_prepared(folder, tok, export, tmp_path, max_length=64)
    marked = load_tokenizer(folder)
    assert all(encode_conversation(tok, c, 64) == encode_conversation(marked, c, 64) for c in convs)
