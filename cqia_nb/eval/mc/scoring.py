"""Scoring options: letter log-likelihoods in as few forward passes as the inputs allow, or generation."""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from cqia_nb.build.formatting import chat_template_of
from cqia_nb.core.distributed import Shard, balance, gather
from cqia_nb.core.generation import chat_prompts, generate_ids
from cqia_nb.eval.mc.prompts import Prompt


@dataclass(frozen=True)
class MCConfig:
    """How to evaluate. ``max_length`` None: the model's context length (as lm-evaluation-harness)."""

    shots: int = 0
    mode: Literal["loglikelihood", "generate"] = "loglikelihood"
    prompt_style: Literal["harness", "upstream"] = "harness"
    batch_size: int = 16
    padding_side: Literal["right", "left"] = "right"
    max_padding: float = 0.1                # a batch closes before padding exceeds this share of it
    prefix_cache: bool = True               # run a subject's shared prompt prefix once (right padding only)
    max_length: int | None = None
    chat: bool = False                      # wrap the prompt in the chat template
    chat_template: str | None = None        # a named template (formatting.NAMED_TEMPLATES); None: the tokenizer's
    max_new_tokens: int = 32                # generate mode
    bootstrap: int = 1000
    ci: float = 0.95
    seed: int = 0
    device: str | None = None               # None: where the model already is
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("loglikelihood", "generate"):
            raise ValueError(f"mode must be 'loglikelihood' or 'generate', got {self.mode!r}")
        if self.prompt_style not in ("harness", "upstream"):
            raise ValueError(f"prompt_style must be 'harness' or 'upstream', got {self.prompt_style!r}")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")
        for name in ("batch_size", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.shots, int) or self.shots < 0:
            raise ValueError(f"shots must be an integer >= 0, got {self.shots!r}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length!r}")
        if not 0 <= self.max_padding < 1:
            raise ValueError(f"max_padding must be in [0, 1), got {self.max_padding!r}")
        if not 0 < self.ci < 1:
            raise ValueError(f"ci must be in (0, 1), got {self.ci!r}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap!r}")


def resolve_max_length(model, tokenizer, default: int = 2048) -> int:
    """The context length lm-evaluation-harness uses: config ``n_positions`` /
    ``max_position_embeddings`` / ``n_ctx``, else the tokenizer's ``model_max_length``, else 2048."""
    cfg = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, attr, None)
        if v is not None:
            return int(v)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml < int(1e29):
        return int(mml)
    return default


@dataclass
class _Row:
    """One sequence to run: its ids and, per option it scores, (logit index, token) pairs."""

    question: int
    ids: list[int]
    targets: dict[int, list[tuple[int, int]]]


def _bos_strings(tok) -> list[str]:
    return [s for s in (getattr(tok, "bos_token", None), getattr(tok, "eos_token", None)) if s]


def _encode(tok, texts: list[str], add_special: bool | None) -> list[list[int]]:
    if not texts:
        return []
    if add_special is None:  # lm-evaluation-harness: the tokenizer's default, unless the text starts with BOS
        bos = getattr(tok, "bos_token", None)
        plain = [i for i, t in enumerate(texts) if not (bos and t.startswith(bos))]
        out: list[list[int]] = [[] for _ in texts]
        if plain:
            for i, ids in zip(plain, tok([texts[i] for i in plain])["input_ids"]):
                out[i] = list(ids)
        plain_set = set(plain)
        rest = [i for i in range(len(texts)) if i not in plain_set]
        if rest:
            for i, ids in zip(rest, tok([texts[i] for i in rest], add_special_tokens=False)["input_ids"]):
                out[i] = list(ids)
        return out
    return [list(x) for x in tok(texts, add_special_tokens=add_special)["input_ids"]]


def _rows_for(qi: int, ctx: list[int], conts: list[list[int]], max_len: int) -> tuple[list[_Row], int]:
    """Rows scoring every option of one question, and how many tokens left truncation dropped."""
    common = 0
    shortest = min(len(c) for c in conts)
    while common < shortest - 1 and all(c[common] == conts[0][common] for c in conts):
        common += 1
    if all(len(c) == common + 1 for c in conts):
        # one pass: the options differ only in their last token
        full = ctx + conts[0][:common]
        ids = full[-max_len:]
        n = len(ids)
        shared = [(n - common - 1 + j, conts[0][j]) for j in range(common)]
        targets = {i: shared + [(n - 1, c[-1])] for i, c in enumerate(conts)}
        return [_Row(qi, ids, targets)], max(0, len(full) - max_len)
    rows, dropped = [], 0
    for i, c in enumerate(conts):
        full = ctx + c
        ids = full[-(max_len + 1):][:-1]
        n = len(ids)
        rows.append(_Row(qi, ids, {i: [(n - len(c) + j, c[j]) for j in range(len(c))]}))
        dropped = max(dropped, len(full) - 1 - len(ids))
    return rows, dropped


def _length_batches(lengths: Sequence[int], max_rows: int, max_padding: float) -> list[list[int]]:
    """Consecutive runs of ``lengths`` (sorted longest first) as batches of at most ``max_rows``
    whose padding stays under ``max_padding`` of the batch: padding is compute thrown away, and on a
    CPU it costs more than the larger matrix products save."""
    out: list[list[int]] = []
    cur: list[int] = []
    width = real = 0
    for k, n in enumerate(lengths):
        if cur and (len(cur) >= max_rows or 1 - (real + n) / (width * (len(cur) + 1)) > max_padding):
            out.append(cur)
            cur, real = [], 0
        if not cur:
            width = n
        cur.append(k)
        real += n
    if cur:
        out.append(cur)
    return out


def chat_wrap(tok, context: str, config: MCConfig) -> str:
    """The question as a chat model's user turn (``cqia_nb.core.generation.chat_prompts``)."""
    return chat_prompts(tok, [context], chat_template=chat_template_of(tok, config.chat_template))[0]


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _common_prefix(rows: Sequence[_Row]) -> int:
    """How many leading tokens every row shares, stopping before the first scored position."""
    first = rows[0].ids
    n = min(min(pos for t in r.targets.values() for pos, _ in t) for r in rows)
    for r in rows[1:]:
        ids = r.ids
        m = min(n, len(ids))
        i = 0
        while i < m and ids[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


# A shared prefix runs on its own when it saves at least this many tokens: below that the extra forward
# pass and the copies of its key/value cache cost more than the tokens saved.
_MIN_SAVED = 32


def score_loglikelihood(model, tok, prompts: list[Prompt], config: MCConfig, max_len: int,
                         add_special: bool | None, groups: Sequence[str] | None = None, shard: Shard = Shard()
                         ) -> tuple[list[list[float]], list[int], list[int], list[str]]:
    """Per question: option log-likelihoods, prompt tokens, tokens truncated, error ('' if fine).

    ``groups`` (e.g. the subject of each prompt): untruncated rows of one group that share a long
    token prefix (the description and the few-shot examples) run that prefix once and reuse its
    key/value cache; the prefix is found on the token ids themselves, so the inputs are unchanged.

    ``shard`` (several processes, :func:`cqia_nb.core.distributed.current_shard`): every process plans the
    same work units (a prefix group, or one batch), runs its own and gathers the scores of all, so each
    question is scored in the same batch as in a one-process run and the scores are identical.
    """
    import copy
    import functools

    import torch
    from tqdm.auto import tqdm

    texts = [p.context for p in prompts]
    ctx_ids = _encode(tok, texts, add_special)
    whole = _encode(tok, [p.context + c for p in prompts for c in p.continuations], add_special)
    rows: list[_Row] = []
    truncated = [0] * len(prompts)
    errors = [""] * len(prompts)
    k = 0
    for qi, p in enumerate(prompts):
        ctx = ctx_ids[qi]
        conts = [w[len(ctx):] for w in whole[k:k + len(p.continuations)]]
        k += len(p.continuations)
        if not ctx or any(not c for c in conts):
            errors[qi] = ("empty prompt" if not ctx else
                          "an option's continuation tokenises into the prompt's last token; cannot score it")
            continue
        if any(len(c) > max_len for c in conts):
            errors[qi] = f"a continuation is longer than max_length {max_len}"
            continue
        new, truncated[qi] = _rows_for(qi, ctx, conts, max_len)
        rows.extend(new)
    scores = [[0.0] * len(p.continuations) for p in prompts]
    keep = _accepts(model, "logits_to_keep")
    device = next(model.parameters()).device
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    bar = tqdm(total=len(prompts), desc="scoring", unit="q", disable=not config.progress, leave=False)
    done: set[int] = set()
    ran: list[_Row] = []  # the rows this process scored (a question's options may span several rows)

    def run(batch: list[_Row], start: int = 0, cache=None) -> None:
        """One forward pass over ``batch`` (their ids from ``start`` on, after ``cache``)."""
        width = max(len(r.ids) - start for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        shift = [-start] * len(batch)
        kwargs: dict[str, Any] = {}
        if config.padding_side == "right" or cache is not None:
            for j, r in enumerate(batch):
                ids[j, :len(r.ids) - start] = torch.tensor(r.ids[start:])
            # causal attention: right padding cannot reach the real tokens, so no mask is needed
        else:
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, r in enumerate(batch):
                shift[j] = width - len(r.ids)
                ids[j, shift[j]:] = torch.tensor(r.ids)
                mask[j, shift[j]:] = 1
            kwargs["attention_mask"] = mask.to(device)
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        if cache is not None:
            cache = copy.deepcopy(cache)  # the forward pass appends to it
            cache.batch_repeat_interleave(len(batch))
            kwargs.update({cache_kw: cache, "use_cache": True})
        need = sorted({pos + shift[j] for j, r in enumerate(batch) for t in r.targets.values() for pos, _ in t})
        need_t = torch.tensor(need, dtype=torch.long, device=device)
        index = {p: i for i, p in enumerate(need)}
        if keep:  # only the scored positions go through the LM head
            kwargs["logits_to_keep"] = need_t
        logits = model(input_ids=ids.to(device), **kwargs).logits
        if not keep:
            logits = logits[:, need_t]
        logp = torch.log_softmax(logits.float(), dim=-1)
        for j, r in enumerate(batch):
            ran.append(r)
            for opt, tgts in r.targets.items():
                scores[r.question][opt] = float(sum(logp[j, index[pos + shift[j]], tok_id].item()
                                                    for pos, tok_id in tgts))
            if r.question not in done:
                done.add(r.question)
                bar.update(1)

    def batches(batch_rows: list[_Row], start: int = 0) -> list[list[_Row]]:
        # longest first (a bad batch size fails at once), similar lengths together (little padding)
        order = sorted(batch_rows, key=lambda r: (-len(r.ids), r.ids))
        return [[order[i] for i in grp]
                for grp in _length_batches([len(r.ids) - start for r in order], config.batch_size, config.max_padding)]

    def run_group(members: list[_Row], n: int) -> None:
        """A group's shared prefix once, then its rows after that prefix's key/value cache."""
        prefix = torch.tensor([members[0].ids[:n]], dtype=torch.long, device=device)
        kw = {"logits_to_keep": 1} if keep else {}
        out = model(input_ids=prefix, use_cache=True, **kw)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            for b in batches(members):  # the model gives no reusable cache: whole rows
                run(b)
            return
        for b in batches(members, n):
            run(b, n, cache)

    # The work as units (a prefix group, or one batch), planned identically in every process.
    units: list[tuple[int, Any]] = []
    rest = rows
    # transformers 5.24 renamed the forward's ``past_key_values`` to ``cache``; older models keep the old name
    cache_kw = next((n for n in ("cache", "past_key_values") if _accepts(model, n)), None)
    if groups is not None and config.prefix_cache and config.padding_side == "right" and cache_kw:
        by_group: dict[str, list[_Row]] = {}
        rest = []
        for r in rows:
            if truncated[r.question]:
                rest.append(r)
            else:
                by_group.setdefault(groups[r.question], []).append(r)
        for members in by_group.values():
            n = _common_prefix(members) if len(members) > 1 else 0
            # the description and subject line (0-shot, ~20 % of C-Eval's tokens for SmolLM2) or
            # description + shots (5-shot, ~75 %): every token run once
            if n * (len(members) - 1) < _MIN_SAVED:
                rest.extend(members)
                continue
            cost = n + sum(len(r.ids) - n for r in members)
            units.append((cost, functools.partial(run_group, members, n)))
    for b in batches(rest):
        units.append((len(b) * max(len(r.ids) for r in b), functools.partial(run, b)))
    owner = balance([c for c, _ in units], shard.world)
    with torch.inference_mode():
        for u, (_, fn) in enumerate(units):
            if shard.owns(u, owner):
                fn()
    if shard.world > 1:
        mine = {(r.question, opt): scores[r.question][opt] for r in ran for opt in r.targets}
        print(f"process {shard.rank} of {shard.world}: scored {len({q for q, _ in mine})} of {len(prompts)} "
              "questions", file=sys.stderr)
        for part in gather(mine, shard):
            for (qi, opt), v in part.items():
                scores[qi][opt] = v
    bar.update(len(prompts) - len(done))
    bar.close()
    n_tokens = [len(c) for c in ctx_ids]
    return scores, n_tokens, truncated, errors


def generate_replies(model, tok, prompts: list[str], config: MCConfig, max_len: int,
                     add_special: bool | None, shard: Shard = Shard()) -> tuple[list[str], list[int], list[int]]:
    """Greedy replies (``cqia_nb.core.generation.generate_ids``), prompt tokens, tokens truncated.
    ``shard``: this process generates its batches, then every process has all replies."""
    ids = _encode(tok, prompts, add_special)
    room = max(1, max_len - config.max_new_tokens)
    truncated = [max(0, len(x) - room) for x in ids]
    ids = [x[-room:] for x in ids]
    outs = generate_ids(model, tok, ids, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                        progress=config.progress, shard=shard)
    if shard.world > 1:
        print(f"process {shard.rank} of {shard.world}: answered {sum(1 for o in outs if o)} of {len(outs)} "
              "questions", file=sys.stderr)
        for part in gather({i: o for i, o in enumerate(outs) if o}, shard):
            for i, o in part.items():
                outs[i] = o
    return [o["answer"] for o in outs], [len(x) + t for x, t in zip(ids, truncated)], truncated