"""Held-out loss: a model's cross-entropy on the assistant turns of conversations it was not trained on.

The same labels as training (``cqia_nb.train.data.encode_conversation``: every token -100 except the
assistant turns' content and ``<|im_end|>``), so the number is the training objective measured on a
validation split. The loss is **token-weighted** over the whole split (sum of token losses divided
by the number of assistant tokens), not a mean of per-batch means: batching cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cqia_nb.train.data import encode_conversation

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class HeldoutLoss:
    """Token-weighted mean loss over ``examples`` conversations (``tokens`` assistant tokens)."""

    loss: float
    tokens: int
    examples: int

    @property
    def perplexity(self) -> float:
        """``exp(loss)``."""
        import math

        return math.exp(self.loss)


def example_losses(model: Any, tok: Any, conversations: Sequence[Conversation], max_length: int = 512,
                   batch_size: int = 8) -> list[tuple[float, int]]:
    """``(sum of token losses, assistant tokens)`` per conversation, in order; a conversation with no
    assistant token within ``max_length`` gives ``(0.0, 0)``. Batched by length, right padding."""
    import torch

    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    width_cap = min(max_length, limit) if limit else max_length
    enc = [encode_conversation(tok, c, width_cap) for c in conversations]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]["input_ids"]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), max(1, batch_size)):
            idx = [i for i in order[start:start + batch_size] if any(x != -100 for x in enc[i]["labels"])]
            if not idx:
                continue
            width = max(len(enc[i]["input_ids"]) for i in idx)
            ids = torch.tensor([enc[i]["input_ids"] + [pad] * (width - len(enc[i]["input_ids"])) for i in idx])
            att = torch.tensor([[1] * len(enc[i]["input_ids"]) + [0] * (width - len(enc[i]["input_ids"])) for i in idx])
            lab = torch.tensor([enc[i]["labels"] + [-100] * (width - len(enc[i]["labels"])) for i in idx])
            with torch.no_grad():
                logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits.float()
            target = lab[:, 1:].to(dev)
            lp = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100,
                                                   reduction="none")
            mask = target != -100
            sums = (lp * mask).sum(dim=1).tolist()
            counts = mask.sum(dim=1).tolist()
            for i, s, n in zip(idx, sums, counts):
                out[i] = (float(s), int(n))
    finally:
        if was_training:
            model.train()
    return out


def heldout_loss(model: Any, tok: Any, conversations: Sequence[Conversation], max_length: int = 512,
                 batch_size: int = 8) -> HeldoutLoss:
    """The token-weighted loss of ``model`` on the assistant turns of ``conversations``."""
    per = example_losses(model, tok, conversations, max_length, batch_size)
    tokens = sum(n for _, n in per)
    if tokens == 0:
        raise ValueError("heldout_loss: no assistant token within max_length in any conversation")
    return HeldoutLoss(loss=sum(s for s, _ in per) / tokens, tokens=tokens, examples=sum(1 for _, n in per if n))
