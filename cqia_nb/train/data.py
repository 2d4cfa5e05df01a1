"""Training data: conversations from any source, tokenised with assistant-only labels.

The loader's contract (as ``cqia_nb.data.load``'s): nothing is dropped or cut silently. Every row
read is used or dropped, and every dropped or truncated conversation is one issue with its reason
and location (``file:line`` for JSON Lines and COIG-CQIA folders, the 1-based row for Parquet,
JSON arrays and ``datasets`` folders): ``TrainDataReport`` (``TrainResult.data``), printed by
``cqia-nb train`` and written to ``output_dir/data_issues.jsonl``. ``policy: strict`` stops at the
first issue instead.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cqia_nb.core.chat import CHATML_TEMPLATE, record_messages
from cqia_nb.core.jsonl import CompressedDataError, compressed_bytes_hint, data_name, decompress, json_object
from cqia_nb.data.load import LoadConfig, load
from cqia_nb.models.tiny import TinyModelConfig, build_tiny_model, tiny_training_texts, train_tiny_lm
from cqia_nb.train.config import TrainConfig, TrainConfigError

ISSUE_COLUMNS = ("split", "file", "line", "unit", "action", "reason")


class TrainDataError(TrainConfigError):
    """``policy: strict``: the first row that would be dropped or truncated, with where it is."""


@dataclass
class Issue:
    split: str          # "train" (``data``) or "validation" (``val_data``)
    file: str
    line: int           # 1-based line (unit "line") or row (unit "row")
    unit: str
    action: str         # "dropped" or "truncated"
    reason: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.unit == "line" else f"{self.file} row {self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.action}: {self.reason}"


@dataclass
class SourceAccount:
    """What the loader did with one source: ``read == used + dropped``; ``truncated`` are among the used."""

    split: str
    source: str
    read: int = 0
    used: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return sum(1 for i in self.issues if i.action == "dropped")

    @property
    def truncated(self) -> int:
        return sum(1 for i in self.issues if i.action == "truncated")

    def reconciles(self) -> bool:
        return self.read == self.used + self.dropped

    def reasons(self, action: str = "dropped") -> dict[str, int]:
        """Issue counts by the first words of their reasons (before any ':' or '(')."""
        out: dict[str, int] = {}
        for i in self.issues:
            if i.action == action:
                key = i.reason.split(":")[0].split(" (")[0]
                out[key] = out.get(key, 0) + 1
        return out

    def summary(self, max_length: int | None = None) -> str:
        why = ", ".join(f"{k}: {n}" for k, n in sorted(self.reasons().items(), key=lambda kv: -kv[1]))
        line = (f"{self.split} data {self.source}: {self.read:,} read = {self.used:,} used + {self.dropped:,} dropped"
                + (f" ({why})" if why else ""))
        if self.truncated or max_length:
            line += f"; {self.truncated:,} of the used truncated" + (f" at max_length {max_length}" if max_length else "")
        return line


@dataclass
class TrainDataReport:
    """The account of every source a run read (train, and validation when ``val_data`` is set)."""

    sources: list[SourceAccount]
    max_length: int | None = None

    @property
    def read(self) -> int:
        return sum(s.read for s in self.sources)

    @property
    def used(self) -> int:
        return sum(s.used for s in self.sources)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sources)

    @property
    def truncated(self) -> int:
        return sum(s.truncated for s in self.sources)

    def reconciles(self) -> bool:
        return all(s.reconciles() for s in self.sources)

    @property
    def issues(self):
        """One row per dropped or truncated conversation (polars frame, ``ISSUE_COLUMNS``)."""
        import polars as pl

        rows = [(i.split, i.file, i.line, i.unit, i.action, i.reason) for s in self.sources for i in s.issues]
        schema = {"split": pl.String, "file": pl.String, "line": pl.Int64, "unit": pl.String, "action": pl.String,
                  "reason": pl.String}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def summary(self) -> str:
        return "\n".join(s.summary(self.max_length) for s in self.sources)

    def format_issues(self, limit: int | None = None) -> str:
        issues = [i for s in self.sources for i in s.issues]
        lines = [str(i) for i in (issues[:limit] if limit else issues)]
        if limit and len(issues) > limit:
            lines.append(f"... and {len(issues) - limit} more")
        return "\n".join(lines)

    def jsonl(self) -> str:
        return "".join(json.dumps({"split": i.split, "where": i.where, "file": i.file, i.unit: i.line,
                                   "action": i.action, "reason": i.reason}, ensure_ascii=False) + "\n"
                       for s in self.sources for i in s.issues)


class Conversations(list):
    """The usable conversations of one source (a list of message lists, shuffled with ``seed``), with
    ``where`` (file, line, unit) of each and the ``account`` of every row read."""

    def __init__(self, convs: Iterable[list[dict[str, str]]] = (), where: Iterable[tuple[str, int, str]] = (),
                 account: SourceAccount | None = None):
        super().__init__(convs)
        self.where = list(where)
        self.account = account if account is not None else SourceAccount("train", "(given)", len(self), len(self))


def _record(account: SourceAccount, strict: bool, file: str, line: int, unit: str, action: str, reason: str) -> None:
    issue = Issue(account.split, file, line, unit, action, reason)
    if strict:
        raise TrainDataError(f"{'data' if account.split == 'train' else 'val_data'}: {issue} "
                             "(policy: strict stops at the first problem; fix the data or use policy: collect)")
    account.issues.append(issue)


def _tname(v: Any) -> str:
    return {type(None): "null", str: "a string", list: "a list", dict: "an object", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def row_messages(r: Any, system_prompt: str | None) -> tuple[list[dict[str, str]] | None, str]:
    """``(messages, "")`` for one row (``messages``, or ``instruction``/``input``/``output``), or
    ``(None, why)`` when it cannot be trained on. Null contents and a null ``input`` count as empty."""
    if not isinstance(r, dict):
        return None, f"expected an object per row, got {_tname(r)}"
    if r.get("messages") is not None:
        raw = r["messages"]
        if not isinstance(raw, list) or not raw:
            return None, f"messages: expected a non-empty list of {{role, content}} objects, got {_tname(raw)}"
        msgs = []
        for k, m in enumerate(raw):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                return None, f"messages[{k}]: expected an object with a string role, got {_short(m)}"
            content = m.get("content")
            if content is not None and not isinstance(content, str):
                return None, f"messages[{k}].content: expected a string, got {_tname(content)} {_short(content)}"
            msgs.append({"role": m["role"], "content": content or ""})
        if system_prompt is not None and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system_prompt}] + msgs
        if not any(m["role"] == "assistant" for m in msgs):
            return None, "no assistant text (no assistant turn)"
        if not any(m["role"] == "assistant" and m["content"] for m in msgs):
            return None, "no assistant text (assistant content empty or null)"
        return msgs, ""
    if "instruction" in r or "output" in r:
        for key in ("instruction", "input", "output"):
            v = r.get(key)
            if v is not None and not isinstance(v, str):
                return None, f"{key}: expected a string, got {_tname(v)} {_short(v)}"
        out = r.get("output")
        if not out:
            how = "missing" if "output" not in r else "null" if out is None else "empty"
            return None, f"no assistant text (output {how})"
        return record_messages(r.get("instruction"), r.get("input"), out, system_prompt), ""
    return None, f"no messages and no instruction/output (keys: {', '.join(sorted(map(str, r))) or 'none'})"


def _short(v: Any, n: int = 40) -> str:
    s = json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def _read_rows(src: str, key: str, split: str) -> list[tuple[Any, str, int, str, str]]:
    """``(row, file, line, unit, why)`` for every row of ``src`` in file order; ``why`` says why a line
    could not be read (its row is then None). Problems with the whole source raise TrainConfigError."""
    import polars as pl

    p = Path(src).expanduser()
    rows: list[tuple[Any, str, int, str, str]] = []
    if src == "bundled" or (p.is_dir() and not any((p / n).is_file() for n in
                                                   ("dataset_info.json", "state.json", "dataset_dict.json"))):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # every rejected line becomes an issue below
            res = load(LoadConfig(source=src))
        rows = [(r, r["source_file"], r["line"], "line", "") for r in res.frame.to_dicts()]
        rows += [(None, r["file"], r["line"], "line", r["message"]) for r in
                 res.problems.unique(["file", "line"], keep="first", maintain_order=True).iter_rows(named=True)]
        order = {f: i for i, f in enumerate(res.files["file"])}
        return sorted(rows, key=lambda x: (order.get(x[1], -1), x[2]))
    if p.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            want = "train" if split == "train" else "validation"
            ds = ds[want] if want in ds else next(iter(ds.values()))
        rows = [(r, src, i, "row", "") for i, r in enumerate(ds.to_list(), start=1)]
    elif p.suffix == ".parquet":
        rows = [(r, src, i, "row", "") for i, r in enumerate(pl.read_parquet(p).to_dicts(), start=1)]
    elif Path(data_name(p)).suffix in (".jsonl", ".json"):
        try:
            raw = decompress(p.read_bytes(), p)
        except CompressedDataError as e:
            raise TrainConfigError(f"{key}: {src}: {e}") from None
        hint = compressed_bytes_hint(raw, p)
        if hint:
            raise TrainConfigError(f"{key}: {src}: {hint}")
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if raw.lstrip()[:1] == b"[":
            try:
                items = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise TrainConfigError(f"{key}: {src}: not a valid JSON array ({e}); fix it or write JSON Lines") from None
            rows = [(r, src, i, "row", "") for i, r in enumerate(items, start=1)]
        else:  # split on \n only: CQIA text contains raw U+2028
            for i, line in enumerate(raw.split(b"\n"), start=1):
                if not line.strip():
                    continue
                obj, why = json_object(line)
                rows.append((obj, src, i, "line", why))
    else:
        raise TrainConfigError(f"{key}: cannot read {src!r} (use .jsonl, .jsonl.gz, .json, .parquet or a folder)")
    return rows


def load_conversations(config: TrainConfig, source: str | None = None) -> Conversations:
    """The training conversations (list of messages) of ``config.data`` (or ``source``, e.g.
    ``config.val_data``), shuffled with ``seed``, capped at ``max_records``; with ``.where`` and
    ``.account`` (rows read, and every row dropped with its reason and location)."""
    src = config.data if source is None else source
    key, split = ("data", "train") if source is None else ("val_data", "validation")
    strict = config.policy == "strict"
    account = SourceAccount(split, src)
    rows = _read_rows(src, key, split)
    if not rows:
        raise TrainConfigError(f"{key}: {src!r} holds no records")
    account.read = len(rows)
    pairs: list[tuple[list[dict[str, str]], tuple[str, int, str]]] = []
    for r, file, line, unit, why in rows:
        msgs, why = (None, why) if why else row_messages(r, config.system_prompt)
        if msgs is None:
            _record(account, strict, file, line, unit, "dropped", why)
        else:
            pairs.append((msgs, (file, line, unit)))
    if not pairs:
        raise TrainConfigError(f"{key}: no usable conversation in {src!r} ({account.read} read, all dropped):\n  "
                               + "\n  ".join(str(i) for i in account.issues[:5]))
    random.Random(config.seed).shuffle(pairs)
    if config.max_records and source is None and len(pairs) > config.max_records:
        for _, (file, line, unit) in pairs[config.max_records:]:
            account.issues.append(Issue(split, file, line, unit, "dropped",
                                        f"beyond max_records ({config.max_records}, after the seeded shuffle)"))
        pairs = pairs[: config.max_records]
    return Conversations((c for c, _ in pairs), (w for _, w in pairs), account)


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
    ids, mask = encode_full(tok, messages)
    ids, mask = ids[:max_length], mask[:max_length]
    labels = [t if m else -100 for t, m in zip(ids, mask)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def encode_full(tok, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """The whole conversation's token ids and assistant mask (1 on the tokens to train on), untruncated."""
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
    return ids, mask


def build_datasets(config: TrainConfig, tok, convs: list[list[dict[str, str]]],
                   val_convs: list[list[dict[str, str]]] | None = None):
    """Tokenized train (and validation) ``datasets.Dataset``. A conversation longer than
    ``max_length`` is cut (an issue "truncated" on its source's account); one left without any
    assistant token is dropped (an issue "dropped"); ``policy: strict`` raises on either. The
    accounts of ``convs`` / ``val_convs`` (when they are :class:`Conversations`) get their ``used``.
    ``val_convs`` (from ``val_data``) is the validation set when given, else ``val_fraction`` of ``convs``."""
    import datasets

    strict = config.policy == "strict"
    L = config.max_length

    def encode(cs):
        where = getattr(cs, "where", None) or [("(given)", i, "row") for i in range(1, len(cs) + 1)]
        account = getattr(cs, "account", None) or SourceAccount("train", "(given)", len(cs))
        rows = []
        for c, (file, line, unit) in zip(cs, where):
            ids, mask = encode_full(tok, c)
            n, trained = len(ids), sum(mask)
            kept = sum(mask[:L])
            if not kept:
                _record(account, strict, file, line, unit, "dropped",
                        f"no assistant token within max_length {L} ({n} tokens, {trained} of them assistant "
                        "tokens, all beyond the cut): raise max_length")
                continue
            if n > L:
                _record(account, strict, file, line, unit, "truncated",
                        f"cut at max_length {L}: {n} tokens, {n - L} cut, {kept} of {trained} assistant tokens kept")
            ids, mask = ids[:L], mask[:L]
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [t if m else -100 for t, m in zip(ids, mask)]})
        account.used = len(rows)
        return rows

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


def data_report(config: TrainConfig, convs: list, val_convs: list | None = None) -> TrainDataReport:
    """The accounts of the sources ``build_datasets`` encoded (``TrainResult.data``)."""
    accounts = [c.account for c in (convs, val_convs) if c is not None and hasattr(c, "account")]
    return TrainDataReport(accounts, config.max_length)
