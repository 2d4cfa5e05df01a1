"""Token counting: the tiny BPE is deterministic, cached, and counts what it encodes."""

from __future__ import annotations

import polars as pl

import cqia_nb.data.tokens as tokens


def _frame(n: int = 60) -> pl.DataFrame:
    out = [f"第{i}个回答：指令微调让模型学会按照人类的要求回答问题。" * (1 + i % 3) for i in range(n)]
    return pl.DataFrame({"instruction": [f"问题{i}是什么？" for i in range(n)], "input": [""] * n, "output": out})


def test_tiny_tokenizer_is_deterministic_and_cached(tmp_path):
    cfg = tokens.TokenizerConfig(vocab_size=400, cache_dir=str(tmp_path))
    a = tokens.tiny_tokenizer(_frame(), cfg)
    files = list(tmp_path.rglob("tokenizer.json"))
    assert len(files) == 1
    b = tokens.train_tiny_tokenizer(tokens._corpus(_frame(), cfg.max_train_chars), 400)
    assert a.get_vocab() == b.get_vocab()
    for s in tokens.SPECIAL_TOKENS:
        assert a.token_to_id(s) is not None
    assert a.decode(a.encode("中文指令微调 test").ids) == "中文指令微调 test"  # byte-level round trip


def test_count_tokens_matches_encoding(tmp_path):
    frame = _frame()
    enc = tokens.load_encoder(frame, tokens.TokenizerConfig(vocab_size=400, cache_dir=str(tmp_path)))
    out = tokens.count_tokens(frame, enc, batch_size=7)
    assert out["output_tokens"][5] == len(enc.encode_batch([frame["output"][5]])[0])
    assert out["input_tokens"].sum() == 0
    assert (out["output_tokens"] > out["instruction_tokens"]).all()


def test_training_corpus_is_capped_evenly():
    frame = _frame(100)
    texts = tokens._corpus(frame, max_chars=2000)
    assert sum(map(len, texts)) <= 2000 * 1.5 and len(texts) < 2 * 100
