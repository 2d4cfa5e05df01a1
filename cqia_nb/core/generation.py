"""One batched generation loop for every stage that asks a model for answers (notebook 04's before/after,
BELLE-EVAL, the local judge, multiple-choice generate mode)."""

from __future__ import annotations

from typing import Any, Sequence

from cqia_nb.core import chat
from cqia_nb.core.distributed import Shard


def stop_token_ids(tok) -> list[int]:
    """Token ids that end an answer: eos, plus ``<|im_end|>`` when the vocabulary has it (ChatML
    templates end every turn with it, even where the tokenizer's eos is another token)."""
    return [tok.eos_token_id] + [i for t in ("<|im_end|>",) if (i := tok.convert_tokens_to_ids(t)) is not None
                                 and i != tok.unk_token_id and i != tok.eos_token_id]


def chat_prompts(tok, prompts: Sequence[str], system: str | None = None,
                 chat_template: str | None = None) -> list[str]:
    """Each prompt as a user turn (after ``system``), rendered with the chat template and its
    generation prompt: what a chat model is asked."""
    kw: dict[str, Any] = {"chat_template": chat_template} if chat_template else {}
    return [tok.apply_chat_template(chat.prompt_messages(p, system), tokenize=False, add_generation_prompt=True, **kw)
            for p in prompts]


def generate_ids(model, tok, inputs: Sequence[Sequence[int]], max_new_tokens: int = 64, batch_size: int = 8,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int = 0, progress: bool = False,
                 desc: str = "generating", shard: Shard = Shard()) -> list[dict[str, Any]]:
    """The generation loop: token-id prompts, ``batch_size`` at a time (similar lengths together,
    left padding), greedy unless ``do_sample`` (seeded per batch: ``seed`` + batch index, so a run is
    reproducible with the same prompts and batch size). An answer ends at the first stop token
    (:func:`stop_token_ids`) or after ``max_new_tokens``.

    Returns one dict per prompt, in order: ``answer`` (decoded, special tokens skipped),
    ``new_tokens`` and ``finish`` ("stop" or "length"). With several processes (``shard``) each runs the
    batches it owns (the same batches as one process) and leaves ``{}`` for the others' prompts.
    """
    import torch
    from tqdm.auto import tqdm

    stop = stop_token_ids(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop[0]
    dev = next(model.parameters()).device
    gen_kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=stop,
                                  repetition_penalty=repetition_penalty)
    if do_sample:
        gen_kw.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen_kw.update(do_sample=False)
    enc = [list(x) for x in inputs]
    # similar lengths share a batch (less padding); answers go back to the prompts' order
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out: list[dict[str, Any]] = [{} for _ in enc]
    step = max(1, batch_size)
    starts = range(0, len(order), step)
    for b, start in enumerate(tqdm(starts, desc=desc, unit="batch", disable=not progress or not enc, leave=False)):
        if not shard.owns(b):
            continue
        idx = order[start:start + step]
        width = max(len(enc[i]) for i in idx)
        input_ids = torch.tensor([[pad_id] * (width - len(enc[i])) + enc[i] for i in idx], dtype=torch.long)
        attention = torch.tensor([[0] * (width - len(enc[i])) + [1] * len(enc[i]) for i in idx], dtype=torch.long)
        if do_sample:
            torch.manual_seed(seed + b)
        with torch.no_grad():
            gen = model.generate(input_ids=input_ids.to(dev), attention_mask=attention.to(dev), **gen_kw)
        for i, row in zip(idx, gen[:, width:].tolist()):
            end = next((j for j, t in enumerate(row) if t in stop), None)
            kept = row if end is None else row[:end + 1]
            out[i] = {"answer": tok.decode(kept, skip_special_tokens=True), "new_tokens": len(kept),
                      "finish": "length" if end is None else "stop"}
    return out


def generate_batch(model, tok, prompts: Sequence[str], max_new_tokens: int = 64, system: str | None = None,
                   batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                   repetition_penalty: float = 1.0, seed: int = 0, chat_template: str | None = None,
                   max_input_tokens: int | None = None) -> list[dict[str, Any]]:
    """Answers to ``prompts`` (user turns: :func:`chat_prompts`) from a loaded model, through
    :func:`generate_ids`. ``chat_template``: a Jinja source used instead of the tokenizer's own.
    Prompts longer than ``max_input_tokens`` (default: the model's context minus
    ``max_new_tokens``) keep their end, so the generation prompt survives."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    keep = max_input_tokens or (max(1, limit - max_new_tokens) if limit else None)
    texts = chat_prompts(tok, prompts, system, chat_template)
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]  # the template writes its specials
    if keep:
        enc = [ids[-keep:] for ids in enc]
    return generate_ids(model, tok, enc, max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
                        temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed)
