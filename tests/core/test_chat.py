"""cqia_nb.core.chat: one user turn, one set of templates, for training, scoring and evaluation."""

from __future__ import annotations

import json

import polars as pl
import pytest

import cqia_nb.core.chat as chat
from cqia_nb.build.formatting import render
from cqia_nb.core.generation import chat_prompts
from cqia_nb.filter.scores import prompt_texts
from cqia_nb.models.tiny import build_tiny_model
from cqia_nb.train.config import TrainConfig
from cqia_nb.train.data import load_conversations, load_tokenizer

RECORDS = [
    {"instruction": "把下面的句子翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today."},
    {"instruction": "什么是指令微调？", "input": "", "output": "用指令和回答训练模型。"},
    {"instruction": "  前后有空格  ", "input": None, "output": "保留原样"},
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    frame = pl.DataFrame(RECORDS * 30)
    folder = build_tiny_model(frame, out_dir=tmp_path_factory.mktemp("tiny") / "model")
    return load_tokenizer(folder)


def _train_texts(tmp_path, tok, system=None) -> list[str]:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    cfg = TrainConfig.from_dict({"data": str(path), "output_dir": str(tmp_path / "out"), "system_prompt": system})
    convs = load_conversations(cfg)
    by_answer = {c[-1]["content"]: c for c in convs}
    return [tok.apply_chat_template(by_answer[r["output"]], tokenize=False) for r in RECORDS]


def test_user_content_python_and_polars_agree():
    frame = pl.DataFrame(RECORDS, schema={"instruction": pl.String, "input": pl.String, "output": pl.String})
    expr = frame.select(chat.user_content_expr()).to_series().to_list()
    assert expr == [chat.user_content(r["instruction"], r["input"]) for r in RECORDS]
    assert expr[0] == "把下面的句子翻译成英文。\n今天天气很好。" and expr[2] == "  前后有空格  "


def test_training_text_is_the_evaluation_prompt_then_the_answer(tok, tmp_path):
    trained = _train_texts(tmp_path, tok)
    asked = chat_prompts(tok, [chat.user_content(r["instruction"], r["input"]) for r in RECORDS])
    for t, a, r in zip(trained, asked, RECORDS):
        assert t == a + r["output"] + "<|im_end|>\n"
    # the IFD score conditions on the same prompt, and notebook 03 renders the same training text
    assert prompt_texts(tok, [chat.user_content(r["instruction"], r["input"]) for r in RECORDS]) == asked
    frame = pl.DataFrame(RECORDS, schema={"instruction": pl.String, "input": pl.String, "output": pl.String})
    assert render(frame, tok, "chatml").to_list() == trained
    assert render(frame, tok, None).to_list() == trained  # the tokenizer's own template is ours too


def test_both_sides_call_the_same_function(tok, tmp_path, monkeypatch):
    """Change the one definition of the prompt: training text and evaluation prompt both follow."""
    real = chat.prompt_messages
    calls = []

    def marked(user, system=None):
        calls.append(user)
        return real("【" + user + "】", system)

    monkeypatch.setattr(chat, "prompt_messages", marked)
    trained = _train_texts(tmp_path, tok)
    asked = chat_prompts(tok, [chat.user_content(r["instruction"], r["input"]) for r in RECORDS])
    assert len(calls) == 2 * len(RECORDS)
    for t, a in zip(trained, asked):
        assert "<|im_start|>user\n【" in t and t.startswith(a)


def test_named_templates_mark_the_assistant_tokens(tok):
    msgs = chat.record_messages("问题", "", "回答", system="你是助手。")
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                  chat_template=chat.QWEN_TEMPLATE)
    marked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(marked) == "回答<|im_end|>"
    # qwen inserts its default system prompt only when there is none
    plain = tok.apply_chat_template(chat.record_messages("问题", "", "回答"), tokenize=False,
                                    chat_template=chat.QWEN_TEMPLATE)
    assert plain.startswith(f"<|im_start|>system\n{chat.QWEN_DEFAULT_SYSTEM}<|im_end|>\n")


@pytest.mark.parametrize("template", sorted(chat.NAMED_TEMPLATES))
def test_vectorised_rendering_equals_jinja(tok, template):
    frame = pl.DataFrame(RECORDS, schema={"instruction": pl.String, "input": pl.String, "output": pl.String})
    fast = frame.select(chat.render_expr(template)).to_series().to_list()
    jinja = [tok.apply_chat_template(chat.record_messages(r["instruction"], r["input"], r["output"]), tokenize=False,
                                     chat_template=chat.NAMED_TEMPLATES[template]) for r in RECORDS]
    assert fast == jinja
    assert chat.render_chatml(chat.record_messages("问", None, "答")) == \
        tok.apply_chat_template(chat.record_messages("问", None, "答"), tokenize=False)
