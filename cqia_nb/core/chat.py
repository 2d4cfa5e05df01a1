"""The chat turn and the chat templates: one definition for training, evaluation, scoring and exports.

A record becomes ``[system?, user, assistant]``. The user turn is ``instruction``, plus a newline
and ``input`` when ``input`` is not empty (LLaMA-Factory's alpaca converter does the same,
``instruction + "\\n" + input``); the assistant turn is ``output``. ``user_content`` builds it from
Python strings, ``user_content_expr`` as a polars expression over a frame; the tests check that
both give the same text, and that the text a model is trained on and the prompt the chat-mode
evaluation sends come from these functions.

Templates we ship (``NAMED_TEMPLATES``), Jinja sources that transformers renders:

* ``chatml`` — ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, no default system
  prompt. This is also Yi's chat template (01-ai/Yi-*-Chat), the family the COIG-CQIA paper tunes.
* ``qwen`` — ChatML with Qwen2.5's default system prompt (``QWEN_DEFAULT_SYSTEM``) inserted when
  the conversation has none.

Both wrap the assistant content and its ``<|im_end|>`` in ``{% generation %}`` markers, so that
``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly the tokens a model
is trained on. Newlines are written as ``{{ '\\n' }}`` (transformers renders with trim_blocks and
lstrip_blocks). ``render_expr`` renders a named template as a vectorised polars expression; the
tests check it equals the Jinja rendering.
"""

from __future__ import annotations

from typing import Any

import polars as pl

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

def _turns(skip_system: bool) -> str:
    """The per-message loop, optionally leaving system messages out (the qwen template writes its own)."""
    cond, end = ("{% if message['role'] != 'system' %}", "{% endif %}") if skip_system else ("", "")
    return ("{% for message in messages %}" + cond
            + "{{ '<|im_start|>' + message['role'] + '\\n' }}"
            "{% if message['role'] == 'assistant' %}"
            "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
            "{% else %}"
            "{{ message['content'] + '<|im_end|>' + '\\n' }}"
            "{% endif %}" + end + "{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


CHATML_TEMPLATE = _turns(skip_system=False)
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{% endif %}" + _turns(skip_system=True)
)
NAMED_TEMPLATES: dict[str, str] = {"chatml": CHATML_TEMPLATE, "qwen": QWEN_TEMPLATE}
#: The system prompt each named template inserts when a conversation has none.
TEMPLATE_DEFAULT_SYSTEM: dict[str, str | None] = {"chatml": None, "qwen": QWEN_DEFAULT_SYSTEM}

MESSAGE_DTYPE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def user_content(instruction: str | None, input: str | None) -> str:
    """The user turn of a record: ``instruction``, then ``"\\n" + input`` when input is not empty."""
    instruction, input = instruction or "", input or ""
    return f"{instruction}\n{input}" if input else instruction


def user_content_expr() -> pl.Expr:
    """``user_content`` over the ``instruction`` and ``input`` columns of a frame."""
    inp = pl.col("input").fill_null("")
    return (pl.when(inp != "").then(pl.col("instruction").fill_null("") + "\n" + inp)
            .otherwise(pl.col("instruction").fill_null("")))


def prompt_messages(user: str, system: str | None = None) -> list[dict[str, str]]:
    """``[system?, user]``: what a model is asked. Training conversations (:func:`record_messages`)
    and evaluation prompts (``cqia_nb.core.generation.chat_prompts``) both start with this."""
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]


def record_messages(instruction: str | None, input: str | None, output: str | None,
                    system: str | None = None) -> list[dict[str, str]]:
    """``[system?, user, assistant]`` of one record: its prompt, then its answer."""
    return prompt_messages(user_content(instruction, input), system) + [{"role": "assistant", "content": output or ""}]


def messages_expr(system: str | None = None) -> pl.Expr:
    """The ``messages`` column: ``record_messages`` as ``list[struct{role, content}]``."""
    msgs = []
    if system is not None:
        msgs.append(pl.struct(pl.lit("system").alias("role"), pl.lit(system, dtype=pl.String).alias("content")))
    msgs.append(pl.struct(pl.lit("user").alias("role"), user_content_expr().alias("content")))
    msgs.append(pl.struct(pl.lit("assistant").alias("role"), pl.col("output").fill_null("").alias("content")))
    return pl.concat_list(msgs).cast(MESSAGE_DTYPE).alias("messages")


def render_expr(template: str, system: str | None = None) -> pl.Expr:
    """A named template rendered over a frame's records (whole conversations), vectorised."""
    if template not in NAMED_TEMPLATES:
        raise ValueError(f"unknown template {template!r}; named templates: {', '.join(NAMED_TEMPLATES)}")
    sys_prompt = system if system is not None else TEMPLATE_DEFAULT_SYSTEM[template]
    parts: list[pl.Expr] = []
    if sys_prompt is not None:
        parts.append(pl.lit(f"<|im_start|>system\n{sys_prompt}<|im_end|>\n"))
    parts += [pl.lit("<|im_start|>user\n"), user_content_expr(), pl.lit("<|im_end|>\n<|im_start|>assistant\n"),
              pl.col("output").fill_null(""), pl.lit("<|im_end|>\n")]
    return pl.concat_str(parts).alias("text")


def render_chatml(messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    """``CHATML_TEMPLATE`` rendered in Python (no transformers needed), e.g. for pretraining text."""
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")
