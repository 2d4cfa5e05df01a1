"""cqia_nb.build.formatting: messages, named and own chat templates, token counts, truncation policy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import cqia_nb.build.formatting as F
from cqia_nb.core.chat import QWEN_DEFAULT_SYSTEM
from cqia_nb.data.load import load


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return load(source="bundled").frame


@pytest.fixture(scope="module")
def tok(frame):
    return F.load_tokenizer("tiny", frame)


def _rec(instruction: str, input: str, output: str) -> pl.DataFrame:
    return pl.DataFrame({"instruction": [instruction], "input": [input], "output": [output]})


def test_messages_join_instruction_and_input():
    df = pl.concat([_rec("翻译成英文", "你好", "Hello"), _rec("讲个笑话", "", "好的")])
    m = F.add_messages(df)["messages"].to_list()
    assert m[0] == [{"role": "user", "content": "翻译成英文\n你好"}, {"role": "assistant", "content": "Hello"}]
    assert m[1][0] == {"role": "user", "content": "讲个笑话"}
    ms = F.add_messages(df, system="你是助手")["messages"].to_list()
    assert ms[0][0] == {"role": "system", "content": "你是助手"} and len(ms[0]) == 3


def test_named_templates_render_exactly():
    df = _rec("翻译成英文", "你好", "Hello")
    assert F.render(df, template="chatml")[0] == (
        "<|im_start|>user\n翻译成英文\n你好<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n")
    assert F.render(df, template="qwen")[0] == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\n翻译成英文\n你好<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n")
    assert F.render(df, template="qwen", system="S")[0].startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user")
    assert F.render(df, template="chatml", system="S")[0].startswith("<|im_start|>system\nS<|im_end|>\n")


@pytest.mark.parametrize("template", ["chatml", "qwen"])
@pytest.mark.parametrize("system", [None, "你是一个乐于助人的助手。"])
def test_vectorised_named_templates_equal_their_jinja_source(frame, tok, template, system):
    hf = F.load_tokenizer("tiny", frame, transformers_wrapper=True)
    fast = F.render(frame, tok, template, system)
    jinja = F.render_jinja(frame, hf, F.NAMED_TEMPLATES[template], system)
    assert fast.to_list() == jinja.to_list()


def test_tokenizers_own_template_is_used(frame):
    hf = F.load_tokenizer("tiny", frame, transformers_wrapper=True)
    hf.chat_template = ("{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] }}{{ '\n' }}"
                        "{% endfor %}")
    out = F.format_records(frame.head(3), F.FormatConfig(template=None), hf)
    first = frame.row(0, named=True)
    user = first["instruction"] + ("\n" + first["input"] if first["input"] else "")
    assert out.frame["text"][0] == f"[user] {user}\n[assistant] {first['output']}\n"
    assert out.frame["n_tokens"][0] == len(hf(out.frame["text"][0], add_special_tokens=False)["input_ids"])


def test_missing_chat_template_names_both_fixes(frame, tok):
    with pytest.raises(F.FormattingError) as e:
        F.format_records(frame.head(2), F.FormatConfig(template=None), tok)
    msg = str(e.value)
    assert "no chat template" in msg and "template: chatml" in msg and "tokenizer that ships one" in msg
    with pytest.raises(F.FormattingError, match="named templates: chatml, qwen"):
        F.FormatConfig(template="llama9")


def test_token_counts_are_exact_batched_and_cached(frame, tok, monkeypatch):
    texts = F.render(frame, tok, "chatml").to_list()
    single = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
    assert F.encode_lengths(texts, tok, batch_size=7).tolist() == single
    assert F.count_tokens_cached(texts, tok).tolist() == single  # fills the cache
    monkeypatch.setattr(F, "encode_lengths", lambda *a, **k: (_ for _ in ()).throw(AssertionError("not cached")))
    assert F.count_tokens_cached(texts, tok).tolist() == single  # all hits
    with pytest.raises(AssertionError, match="not cached"):
        F.count_tokens_cached(texts, tok, cache=False)


def test_truncation_policies_are_counted(frame, tok):
    base = F.format_records(frame, F.FormatConfig(), tok)
    L = int(np.percentile(base.frame["n_tokens"].to_numpy(), 80))
    over = int((base.frame["n_tokens"] > L).sum())
    assert over > 0

    keep = F.format_records(frame, F.FormatConfig(max_length=L, truncation="keep"), tok)
    assert keep.frame.height == frame.height and keep.report.kept_over == over and keep.report.over == over

    drop = F.format_records(frame, F.FormatConfig(max_length=L, truncation="drop"), tok)
    assert drop.frame.height == frame.height - over and drop.report.dropped == over
    assert drop.dropped.height == over and drop.dropped["reason"][0].startswith("too long:")
    assert int(drop.frame["n_tokens"].max()) <= L

    cut = F.format_records(frame, F.FormatConfig(max_length=L, truncation="truncate_output"), tok)
    assert cut.report.truncated + cut.report.dropped == over and cut.report.truncated > 0
    assert cut.frame.height == frame.height - cut.report.dropped
    assert int(cut.frame["n_tokens"].max()) <= L
    t = cut.frame.filter(pl.col("truncated"))
    assert t.height == cut.report.truncated
    orig = dict(frame.select("record_id", "output").iter_rows())
    assert all(orig[r].startswith(o) and len(o) < len(orig[r]) for r, o in t.select("record_id", "output").iter_rows())
    # re-rendered text and counts match the cut output
    assert F.encode_lengths(t["text"].to_list(), tok).tolist() == t["n_tokens"].to_list()
    assert cut.frame["record_id"].to_list() == [r for r in frame["record_id"].to_list()
                                               if r not in set(cut.dropped["record_id"].to_list())]


def test_prompt_longer_than_max_length_is_dropped_not_cut(tok):
    df = pl.DataFrame({"record_id": ["a"], "instruction": ["很长的问题" * 50], "input": [""], "output": ["答"]})
    r = F.format_records(df, F.FormatConfig(max_length=20, truncation="truncate_output"), tok)
    assert r.frame.height == 0 and r.report.dropped == 1 and "prompt alone" in r.dropped["reason"][0]
