"""A sweep's data, base and runs: the subsets split once, the shared base, equal token budgets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from cqia_nb import build as subsets
from cqia_nb.core.chat import render_chatml, user_content
from cqia_nb.eval.sweep.config import SWEEP_VERSION, SweepConfig, SweepError
from cqia_nb.models.loading import model_fingerprint
from cqia_nb.models.tiny import TinyModelConfig, build_tiny_model, train_tiny_lm
from cqia_nb.train.data import encode_conversation
from cqia_nb.train.session import filtered_records, profile
from cqia_nb.train.trainer import resolve_base_model

# ----------------------------------------------------------------------------------------------- data

Conversation = list[dict[str, str]]


@dataclass
class SweepData:
    """The subsets of a sweep: train and validation conversations per subset, the records the base
    pretrains on (every record's train split), and what was left out and why."""

    train: dict[str, list[Conversation]]
    validation: dict[str, list[Conversation]]
    pretrain: pl.DataFrame                      # instruction, input, output, messages of the train split
    origin: str
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The training subsets, in sweep order."""
        return list(self.train)

    def table(self) -> pl.DataFrame:
        """Train and validation conversations per subset."""
        return pl.DataFrame({"subset": self.names,
                             "train": [len(self.train[s]) for s in self.names],
                             "validation": [len(self.validation[s]) for s in self.names]})

    def fingerprint(self, name: str) -> str:
        """A hash of one subset's train and validation conversations (part of each run's fingerprint)."""
        return _digest(self.train[name], self.validation[name])


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _messages(frame: pl.DataFrame) -> list[Conversation]:
    return [[{"role": m["role"], "content": m["content"] or ""} for m in msgs] for msgs in frame["messages"].to_list()]


def prepare_data(config: SweepConfig, out_dir: str | Path, *, source: str = "auto",
                 filter_dir: str | Path = "../build/02_filter", data_source: str = "auto") -> SweepData:
    """Build the subsets (notebook 03's spec, the sweep's validation share, no contamination
    report) and write each one's ``train.jsonl`` / ``validation.jsonl`` under ``out_dir/data``."""
    spec = subsets.BuildSpec.from_yaml(config.resolve(config.spec))
    spec = dataclasses.replace(spec, validation=float(config.validation), contamination=None)
    inputs, how = filtered_records(source, filter_dir, data_source)
    build = subsets.run_build(spec, seed=config.build_seed, data=inputs)
    names: list[str]
    skipped: dict[str, str] = {}
    if isinstance(config.subsets, str):
        prefix = "group." if config.subsets == "groups" else "config."
        names = []
        for name, t in build.targets.items():
            if not name.startswith(prefix):
                continue
            c = t.split_counts()
            if c["train"] < config.min_train_records or c["validation"] < 1:
                skipped[name] = f"{c['train']} train / {c['validation']} validation records (min_train_records " \
                                f"{config.min_train_records})"
            else:
                names.append(name)
        for name, why in build.skipped.items():
            if name.startswith(prefix):
                skipped[name] = why
        if len(names) < 2:
            raise SweepError(f"subsets: {config.subsets}: only {names} have at least {config.min_train_records} "
                             "training records; lower min_train_records or list the subsets")
    else:
        names = list(config.subsets)
        unknown = [n for n in names if n not in build.targets]
        if unknown:
            raise SweepError(f"subsets: unknown or empty {unknown}; this build has: {', '.join(build.targets)}")
        for n in names:
            c = build.targets[n].split_counts()
            if c["train"] < 1 or c["validation"] < 1:
                raise SweepError(f"subsets: {n} has {c['train']} train and {c['validation']} validation records; "
                                 "each subset needs both (raise validation or choose larger subsets)")
    train_split: dict[str, list[Conversation]] = {}
    val_split: dict[str, list[Conversation]] = {}
    files: dict[str, Path] = {}
    root = Path(out_dir) / "data"
    for n in names:
        fr = build.targets[n].frame
        train_split[n] = _messages(fr.filter(pl.col("split") == "train"))
        val_split[n] = _messages(fr.filter(pl.col("split") == "validation"))
        for split, convs in (("train", train_split[n]), ("validation", val_split[n])):
            path = root / n / f"{split}.jsonl"
            _write_text(path, "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in convs))
            files[f"{n}/{split}"] = path
    pre = build.base.filter(pl.col("split") == "train").select("instruction", "input", "output", "messages")
    return SweepData(train_split, val_split, pre, how, skipped, files)


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file + rename) unless the file already holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- base

def pretrain_texts(frame: pl.DataFrame, text: str = "plain") -> list[str]:
    """What the shared tiny base reads: each record as ``user turn + newline + answer`` (``plain``)
    or as its ChatML conversation (``chat``)."""
    if text == "chat":
        return [render_chatml(m) for m in _messages(frame)]
    return [user_content(r["instruction"], r["input"]) + "\n" + (r["output"] or "")
            for r in frame.iter_rows(named=True)]


def prepare_base(config: SweepConfig, data: SweepData, progress: bool = False) -> Path | str:
    """The base every run starts from: for ``base_model: tiny`` the shared pretrained tiny Llama
    (cached by content hash: a second call returns at once), else the recipe's base model."""
    tc = config.train_config()
    if tc.base_model != "tiny":
        return resolve_base_model(tc)
    b = config.base
    frame = data.pretrain.select("instruction", "input", "output")
    shape = TinyModelConfig(hidden_size=tc.tiny_hidden_size, num_layers=tc.tiny_layers,
                            intermediate_size=2 * tc.tiny_hidden_size, max_positions=max(512, tc.max_length),
                            tokenizer_vocab_size=tc.tiny_vocab_size, seed=b.seed)
    folder = build_tiny_model(frame, shape)
    steps = b.steps if b.steps is not None else tc.tiny_pretrain_steps
    if steps <= 0:
        return folder
    if tc.torch_threads:  # as the runs will (train() sets it too): on shared cores 1 thread is the fast choice
        import torch

        torch.set_num_threads(tc.torch_threads)
    return train_tiny_lm(folder, pretrain_texts(data.pretrain, b.text), steps=steps, batch_size=b.batch_size,
                         seq_len=b.seq_len, lr=b.lr, seed=b.seed, schedule="cosine", progress=progress)


# ----------------------------------------------------------------------------------------------- runs

def token_lengths(conversations: Sequence[Conversation], tok: Any, max_length: int) -> list[int | None]:
    """Tokens of each conversation as trained (chat template, truncated to ``max_length``); None for
    one whose truncation leaves no assistant token: it teaches nothing, training drops it."""
    out: list[int | None] = []
    for c in conversations:
        e = encode_conversation(tok, c, max_length)
        out.append(len(e["input_ids"]) if any(x != -100 for x in e["labels"]) else None)
    return out


def budget_sample(conversations: Sequence[Conversation], tok: Any, budget: int, seed: int,
                  max_length: int) -> tuple[list[Conversation], int]:
    """Conversations filling ``budget`` tokens: the subset in a seeded order, reshuffled and
    repeated as often as the budget needs, each taken when it still fits (lengths with ``tok``'s
    chat template, truncated to ``max_length``; a conversation left without an assistant token by the
    truncation is never taken). Returns them and their token total (≤ budget)."""
    all_lengths = token_lengths(conversations, tok, max_length)
    usable = [i for i, n in enumerate(all_lengths) if n is not None]
    if not usable:
        raise SweepError(f"budget_sample: none of {len(conversations)} conversations keeps an assistant token "
                         f"within max_length {max_length}; raise max_length")
    conversations = [conversations[i] for i in usable]
    lengths = [all_lengths[i] for i in usable]
    rng = random.Random(seed)
    picked: list[Conversation] = []
    total = 0
    shortest = min(lengths)
    while budget - total >= shortest:
        order = list(range(len(conversations)))
        rng.shuffle(order)
        took = False
        for i in order:
            if total + lengths[i] <= budget:
                picked.append(conversations[i])
                total += lengths[i]
                took = True
        if not took:
            break
    return picked, total


@dataclass(frozen=True)
class Run:
    """One planned run: a training subset, a seed and the folder its results go to."""

    train_subset: str
    seed: int
    dir: Path

    @property
    def id(self) -> str:
        """``<subset>/seed<k>``: the run's name in logs, results and the store."""
        return f"{self.train_subset}/seed{self.seed}"


def plan_runs(config: SweepConfig, data: SweepData, out_dir: str | Path) -> list[Run]:
    """Every (subset, seed) run, seed-major (all subsets of the first seed come first)."""
    root = Path(out_dir) / "runs"
    return [Run(s, seed, root / s / f"seed{seed}") for seed in config.seeds for s in data.names]


def _run_fingerprint(config: SweepConfig, data: SweepData, base: Path | str, run: Run | None) -> str:
    """Everything that decides a run's numbers (not the list of seeds: adding seeds adds runs)."""
    tc = config.train_config()
    recipe_text = Path(profile(config.profile).recipe).read_text(encoding="utf-8")
    base_id = model_fingerprint(base) if Path(str(base)).is_dir() else str(base)
    ev = dataclasses.asdict(config.eval)
    ev["mc"] = list(config.eval.mc)
    ev["benchmarks_files"] = _tree_digest(config.resolve(config.eval.benchmarks)) if config.eval.benchmarks else None
    return _digest(SWEEP_VERSION, recipe_text, config.train, tc.to_dict(), config.budget_tokens, base_id,
                   {n: data.fingerprint(n) for n in data.names}, ev,
                   None if run is None else [run.train_subset, run.seed])


def _tree_digest(folder: Path | None) -> str | None:
    if folder is None or not folder.exists():
        return None
    h = hashlib.sha256()
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(folder.parent)}\x00{st.st_size}\x00{st.st_mtime_ns}\x00".encode())
    return h.hexdigest()
