"""SFT data preparation and training: ours (``cqia_nb.train``) vs TRL's ``SFTTrainer``, side by side.

    .venv/bin/python benchmarks/bench_sft.py --reps 3              # masks, packing check, tokens/s (cpu-tiny)
    .venv/bin/python benchmarks/bench_sft.py --reps 3 --smollm2    # + the masks with SmolLM2-135M's tokenizer

Needs ``trl`` (the test extra pins it: ``pip install -e ".[test]"``). The data is notebook 03's TRL
export of the bundled set (``trl/mix-groups/train.jsonl``, rebuilt with ``session.training_data``), the
model the cpu-tiny profile's (``recipes/train-cpu-tiny.yaml``: tiny Llama, 30 steps, batch 8, max length
256, 1 thread).

(a) masks: every conversation of the export, tokenised by ``train.data.encode_conversation`` and by TRL
    (``SFTTrainer(...).train_dataset``, built without training; TRL reads the export with
    ``datasets.load_dataset("json")``): input ids and labels compared token by token, at the recipe's
    max length and untruncated. ``--smollm2`` repeats it with SmolLM2's tokenizer, whose own template has
    no ``{% generation %}`` markers (ours falls back to character offsets; TRL needs markers).
(b) packing without cross-attention: TRL's ``packing=True`` (strategy ``bfd``, which turns on
    ``padding_free``): a collated batch of packed rows through the tiny Llama on CPU; the logits of each
    example inside the packed row must equal its logits alone (as ``tests/train/test_train.py::
    test_packing_keeps_examples_apart`` checks for ours); the same row with a KV cache object, which
    disables the per-example mask, shows that the check can tell.
(c) tokens/s: the same model, data (same examples in the same order: TRL's rows are the export shuffled
    with the seed ``load_conversations`` uses), max length, batch size, steps, learning rate and
    schedule (TRL's ``SFTConfig`` is built from our ``TrainingArguments``), LoRA and full, with and
    without packing, 1 thread. Each run is a fresh process; ``--reps`` repetitions interleaved
    (ours, TRL, ours, TRL, ...) after one warm-up of each; medians and ranges. Training time is
    ``trainer.train()`` alone; tokens are non-padding input tokens (``num_input_tokens_seen``). Also
    tokens per CPU-second (process CPU time from ``on_train_begin`` to ``on_train_end``): with 1 thread
    that is the work done, the comparable figure on a machine shared with other jobs.
    Data preparation is timed separately: ours = ``load_conversations`` + ``build_datasets``; TRL =
    reading the export (``load_dataset`` + the shuffle) + its ``_prepare_dataset`` (private; called once
    more on the constructed trainer to time it alone), and the whole ``SFTTrainer(...)`` construction.
(d) where TRL's time goes: forward + backward of one batch through the model's own loss (what Trainer runs
    for ours) and through TRL's fused LM head (what ``SFTTrainer.compute_loss`` always runs), alternating.

The verdict line applies issue 12's rule: adopt TRL if it gives the same masks and is within 10 % of our
tokens/s (LoRA and full, unpacked: the recipes' setting); otherwise keep ours and say why.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: SmolLM2-135M-Instruct's chat template with ``{% generation %}`` around the assistant content and its
#: ``<|im_end|>`` (TRL ships no such patch for SmolLM2); ``masks_smollm2`` checks that it renders every
#: conversation exactly as SmolLM2's own template does.
SMOLLM2_TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' }}{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    from transformers.utils import logging as tlog

    datasets.disable_progress_bars()
    datasets.disable_caching()  # TRL's .map() would otherwise reuse an earlier run's cache files
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


# ----------------------------------------------------------------------------- shared set-up

def recipe_config(method: str, data: str, out: str, steps: int, threads: int, packing: bool):
    """The cpu-tiny profile's config for ``method`` on ``data`` (what notebook 04 and bench_train run)."""
    import cqia_nb.train.session as finetune

    td = finetune.TrainingData(Path(data), None, "bench")
    return finetune.method_configs("cpu-tiny", td, out, steps=steps, methods=[method], overrides=[
        "eval_steps=null", "eval_on_start=false", "save_steps=null", "val_fraction=0", f"torch_threads={threads}",
        f"packing={'true' if packing else 'false'}"])[method]


def export_dataset(data: str, seed: int):
    """The TRL export as TRL reads it (``datasets.load_dataset("json")``), in ``load_conversations``'
    order (the same seeded shuffle of the same rows)."""
    import datasets

    ds = datasets.load_dataset("json", data_files=str(data), split="train")
    idx = list(range(len(ds)))
    random.Random(seed).shuffle(idx)
    return ds.select(idx)


def sft_config(cfg, out: str, **over):
    """TRL's SFTConfig with exactly our TrainingArguments (optimizer, schedule, batch, logging, precision,
    no activation checkpointing), plus assistant-only loss, max length and packing."""
    from trl import SFTConfig

    from cqia_nb.train.trainer import _training_args

    d = _training_args(cfg, has_eval=False).to_dict()
    d.update(output_dir=out, remove_unused_columns=True, assistant_only_loss=True, max_length=cfg.max_length,
             packing=cfg.packing, padding_free=cfg.packing, dataset_num_proc=None)
    d.update(over)
    return SFTConfig(**d)


def lora_config(cfg):
    from peft import LoraConfig

    tm = cfg.lora_target_modules
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=tm if tm == "all-linear" else list(tm), bias="none", task_type="CAUSAL_LM")


def trl_trainer(cfg, base, tok, ds, out: str, **over):
    """``SFTTrainer`` on the plain base model (+ ``peft_config`` for LoRA), as a TRL user would build it."""
    from trl import SFTTrainer

    from cqia_nb.train.trainer import load_model

    model = load_model(cfg.replace(method="full"), base)
    peft = lora_config(cfg) if cfg.method == "lora" else None
    return SFTTrainer(model=model, args=sft_config(cfg, out, **over), train_dataset=ds, processing_class=tok,
                      peft_config=peft)


# ----------------------------------------------------------------------------- (a) masks

def _describe(tok, ours: dict, theirs: dict) -> str:
    a_ids, b_ids, a_lab, b_lab = ours["input_ids"], theirs["input_ids"], ours["labels"], theirs["labels"]
    if a_ids != b_ids:
        n = next((i for i, (x, y) in enumerate(zip(a_ids, b_ids)) if x != y), min(len(a_ids), len(b_ids)))
        return f"input ids differ from token {n} (lengths {len(a_ids)} / {len(b_ids)})"
    pos = [i for i, (x, y) in enumerate(zip(a_lab, b_lab)) if x != y]
    toks = sorted({tok.convert_ids_to_tokens(a_ids[i]) for i in pos})
    who = "ours only" if all(a_lab[i] != -100 for i in pos) else "TRL only" if all(b_lab[i] != -100 for i in pos) \
        else "both ways"
    return f"labels differ at {len(pos)} token(s), trained by {who}: {toks[:5]}"


def compare_masks(tok, convs, prepared, max_length: int | None) -> dict:
    """Ours (``encode_conversation``) vs TRL's prepared rows, matched by their messages."""
    from cqia_nb.train.data import encode_conversation

    theirs = {json.dumps(r["messages"], ensure_ascii=False): r for r in prepared}
    out = {"total": len(convs), "identical": 0, "dropped_ours": 0, "dropped_trl": 0, "differences": {}}
    for c in convs:
        o = encode_conversation(tok, c, max_length or 10**9)
        kept = any(x != -100 for x in o["labels"])  # build_datasets drops rows without a trained token
        t = theirs.get(json.dumps(c, ensure_ascii=False))
        out["dropped_ours"] += not kept
        out["dropped_trl"] += t is None
        if not kept or t is None:
            if kept != (t is not None):
                out["differences"].setdefault("kept by one side only", 0)
                out["differences"]["kept by one side only"] += 1
            else:
                out["identical"] += 1
            continue
        if o["input_ids"] == t["input_ids"] and o["labels"] == t["labels"]:
            out["identical"] += 1
        else:
            why = _describe(tok, o, t)
            out["differences"][why] = out["differences"].get(why, 0) + 1
    return out


def _prepare_trl(cfg, base, tok, ds, max_length, **over):
    with tempfile.TemporaryDirectory() as out:
        tr = trl_trainer(cfg.replace(method="full"), base, tok, ds, out, max_length=max_length, packing=False,
                         padding_free=False, **over)
        return tr.train_dataset


def masks_tiny(data: str) -> list[tuple[str, dict]]:
    import cqia_nb.train as T

    with tempfile.TemporaryDirectory() as out:
        cfg = recipe_config("lora", data, out, 30, 1, False)
    convs = T.load_conversations(cfg)
    base = T.resolve_base_model(cfg, convs)
    tok = T.load_tokenizer(base, cfg.chat_template)
    ds = export_dataset(data, cfg.seed)
    assert [r["messages"] for r in ds] == convs, "the export read by datasets differs from load_conversations"
    rows = []
    for ml in (cfg.max_length, None):
        prepared = _prepare_trl(cfg, base, tok, ds, ml)
        rows.append((f"tiny Llama, project ChatML (markers), max_length {ml or 'none'}",
                     compare_masks(tok, convs, prepared, ml)))
    return rows


def masks_smollm2(data: str) -> list[tuple[str, dict]]:
    import cqia_nb.train as T
    from cqia_nb.models.smollm2 import smollm2_folder

    with tempfile.TemporaryDirectory() as out:
        cfg = recipe_config("lora", data, out, 30, 1, False)
    convs = T.load_conversations(cfg)
    base = smollm2_folder()
    tok = T.load_tokenizer(base)   # SmolLM2's own template: no generation markers -> ours uses offsets
    ds = export_dataset(data, cfg.seed)
    rows = []
    try:
        _prepare_trl(cfg, base, tok, ds, cfg.max_length)
        rows.append(("SmolLM2, its own template (no markers)", {"note": "TRL prepared it (unexpected)"}))
    except ValueError as e:
        rows.append(("SmolLM2, its own template (no markers)",
                     {"note": f"TRL refuses assistant_only_loss: {str(e).splitlines()[0][:150]}"}))
    same = all(tok.apply_chat_template(c, tokenize=False)
               == tok.apply_chat_template(c, tokenize=False, chat_template=SMOLLM2_TRAINING_TEMPLATE) for c in convs)
    with tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as f:
        f.write(SMOLLM2_TRAINING_TEMPLATE)
    try:
        prepared = _prepare_trl(cfg, base, T.load_tokenizer(base), ds, cfg.max_length, chat_template_path=f.name)
    finally:
        os.unlink(f.name)
    r = compare_masks(tok, convs, prepared, cfg.max_length)
    r["note"] = f"training template renders identically on all {len(convs)}: {same}"
    rows.append(("SmolLM2: ours offsets on its template vs TRL on a marker template", r))
    return rows


# ----------------------------------------------------------------------------- (b) packing

def packing_check(data: str, rows: int = 2) -> dict:
    """TRL's packed, padding-free batch vs each example alone, on the tiny Llama (CPU, sdpa)."""
    import torch

    import cqia_nb.train as T

    with tempfile.TemporaryDirectory() as out:
        cfg = recipe_config("full", data, out, 30, 1, True)
        convs = T.load_conversations(cfg)
        base = T.resolve_base_model(cfg, convs)
        tok = T.load_tokenizer(base, cfg.chat_template)
        tr = trl_trainer(cfg, base, tok, export_dataset(data, cfg.seed), out)
        packed_ds = tr.train_dataset
        # the packed rows holding the most examples (bfd fills most rows with one long conversation)
        most = sorted(range(len(packed_ds)), key=lambda i: -len(packed_ds[i]["seq_lengths"]))[:rows]
        batch = tr.data_collator([packed_ds[i] for i in most])
        unpacked = _prepare_trl(cfg, base, tok, export_dataset(data, cfg.seed), cfg.max_length)
    model = tr.model.eval()
    pos = batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist() + [pos.numel()]
    segs = [batch["input_ids"][0, a:b] for a, b in zip(starts, starts[1:])]
    by_ids = {tuple(r["input_ids"]): r["labels"] for r in unpacked}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=s[None]).logits[0] for s in segs])
        from transformers import DynamicCache

        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                      past_key_values=DynamicCache(config=model.config), use_cache=True).logits[0]
    labels_ok = all(tuple(s.tolist()) in by_ids and
                    batch["labels"][0, a + 1:b].tolist() == by_ids[tuple(s.tolist())][1:]
                    and batch["labels"][0, a].item() == -100
                    for s, a, b in zip(segs, starts, starts[1:]))
    return {"rows": rows, "examples": len(segs), "tokens": int(pos.numel()),
            "collator_keys": sorted(batch), "max_abs_diff": float((packed - alone).abs().max()),
            "leaky_max_abs_diff": float((leaky - alone).abs().max()),
            "isolated": bool(torch.allclose(packed, alone, atol=1e-4)),
            "check_can_tell": not torch.allclose(leaky, alone, atol=1e-4), "labels_ok": labels_ok,
            "rows_unpacked": len(unpacked), "rows_packed": len(packed_ds)}


# ----------------------------------------------------------------------------- (d) where TRL's time goes

def loss_path_ab(data: str, reps: int = 8) -> dict:
    """One LoRA model, one batch of 8 from TRL's prepared data, 1 thread: forward + backward with the model's
    own loss (what ``transformers.Trainer`` runs for ours) vs TRL's fused LM head
    (``model(**batch, fused_lm_head=True)``, which ``SFTTrainer.compute_loss`` always runs: log-probs, entropy
    and top-1 accuracy per token, in tiles). Alternating, CPU milliseconds, medians."""
    import torch

    import cqia_nb.train as T

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        cfg = recipe_config("lora", data, out, 30, 1, False)
        base = T.resolve_base_model(cfg)
        tr = trl_trainer(cfg, base, T.load_tokenizer(base, cfg.chat_template), export_dataset(data, cfg.seed), out)
    model = tr.model.train()
    batch = tr.data_collator([tr.train_dataset[i] for i in range(cfg.per_device_train_batch_size)])

    def own():
        loss = model(**batch).loss
        loss.backward()
        return float(loss)

    def fused():
        o = model(**batch, fused_lm_head=True)
        loss = -o.log_probs.sum() / o.label_mask.sum()
        loss.backward()
        return float(loss)

    losses = {"own": own(), "fused": fused()}
    ms: dict[str, list[float]] = {"own": [], "fused": []}
    for _ in range(reps):
        for name, fn in (("own", own), ("fused", fused)):
            model.zero_grad(set_to_none=True)
            c0 = time.process_time()
            fn()
            ms[name].append(1000 * (time.process_time() - c0))
    return {"shape": list(batch["input_ids"].shape), "own_ms": statistics.median(ms["own"]),
            "fused_ms": statistics.median(ms["fused"]), "own_loss": losses["own"], "fused_loss": losses["fused"]}


# ----------------------------------------------------------------------------- (c) workers

def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_clock():
    """A callback holding the process CPU seconds from on_train_begin to on_train_end (the comparable figure
    on a loaded machine: with 1 thread, CPU time is the work done, whatever else runs beside it)."""
    from transformers import TrainerCallback

    class CpuClock(TrainerCallback):
        seconds = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.c0 = time.process_time()

        def on_train_end(self, args, state, control, **kw):
            self.seconds = time.process_time() - self.c0

    return CpuClock()


def worker_ours(method: str, data: str, steps: int, threads: int, packing: bool) -> dict:
    import torch

    import cqia_nb.train as T

    with tempfile.TemporaryDirectory() as out:
        cfg = recipe_config(method, data, out, steps, threads, packing)
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        convs = T.load_conversations(cfg)
        t_load = time.perf_counter() - t0
        base = T.resolve_base_model(cfg, convs)  # cached tiny base: not data preparation
        tok = T.load_tokenizer(base, cfg.chat_template)
        t0 = time.perf_counter()
        train_ds, _ = T.build_datasets(cfg, tok, convs)
        t_build = time.perf_counter() - t0
        clock = _cpu_clock()
        res = T.train(cfg, callbacks=[clock])
    return {"tokens": res.train_tokens, "seconds": res.train_seconds, "cpu_s": clock.seconds, "steps": res.global_step,
            "prep_s": t_load + t_build, "read_s": t_load, "construct_s": None, "rows": len(train_ds),
            "first_loss": res.losses[0], "last_loss": res.losses[-1], "peak_mib": _peak_mib()}


def worker_trl(method: str, data: str, steps: int, threads: int, packing: bool) -> dict:
    import torch
    from transformers import PrinterCallback
    from transformers.trainer_callback import ProgressCallback

    import cqia_nb.train as T

    with tempfile.TemporaryDirectory() as out:
        cfg = recipe_config(method, data, out, steps, threads, packing)
        torch.set_num_threads(threads)
        base = T.resolve_base_model(cfg)
        tok = T.load_tokenizer(base, cfg.chat_template)
        t0 = time.perf_counter()
        ds = export_dataset(data, cfg.seed)
        t_read = time.perf_counter() - t0
        from transformers import set_seed

        set_seed(cfg.seed)
        t0 = time.perf_counter()
        tr = trl_trainer(cfg, base, tok, ds, out)
        t_construct = time.perf_counter() - t0
        t0 = time.perf_counter()
        tr._prepare_dataset(ds, tok, tr.args, cfg.packing, None, "train")  # timed alone; result unused
        t_prep = time.perf_counter() - t0
        tr.remove_callback(PrinterCallback)
        tr.remove_callback(ProgressCallback)
        clock = _cpu_clock()
        tr.add_callback(clock)
        t0 = time.perf_counter()
        tr.train()
        secs = time.perf_counter() - t0
        losses = [r["loss"] for r in tr.state.log_history if "loss" in r]
    return {"tokens": int(tr.state.num_input_tokens_seen), "seconds": secs, "cpu_s": clock.seconds,
            "steps": int(tr.state.global_step),
            "prep_s": t_read + t_prep, "read_s": t_read, "construct_s": t_construct, "rows": len(tr.train_dataset),
            "first_loss": losses[0], "last_loss": losses[-1], "peak_mib": _peak_mib()}


def _spawn(impl: str, method: str, data: str, steps: int, threads: int, packing: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--method", method, "--data", data, "--steps", str(steps),
           "--threads", str(threads)] + (["--packing"] if packing else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"worker {impl}/{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver

def _med(xs):
    return statistics.median(xs), min(xs), max(xs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--variants", default="unpacked,packed")
    ap.add_argument("--smollm2", action="store_true", help="also compare the masks with SmolLM2-135M's tokenizer")
    ap.add_argument("--data", help="a TRL export train.jsonl (default: notebook 03's mix-groups rebuilt here)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--packing", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    _quiet()

    if a.worker:
        fn = worker_ours if a.worker == "ours" else worker_trl
        print(json.dumps(fn(a.method, a.data, a.steps, a.threads, a.packing)))
        return 0

    import trl

    import cqia_nb.train.session as finetune

    load0 = os.getloadavg()
    if a.data:
        data = a.data
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-sft-"))
        data = str(finetune.training_data("bundled", rebuild_dir=tmp / "subsets").train)
    import transformers

    print(f"trl {trl.__version__}, transformers {transformers.__version__}; data: {data} "
          f"({finetune._count_lines(Path(data))} conversations); nproc {os.cpu_count()}, "
          f"load average at start {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}")
    report: dict = {"data": data, "trl": trl.__version__, "load_start": load0}

    print("\n(a) masks: ours (encode_conversation) vs TRL (SFTTrainer.train_dataset), token by token")
    mask_rows = masks_tiny(data) + (masks_smollm2(data) if a.smollm2 else [])
    for name, r in mask_rows:
        if "total" in r:
            diffs = "; ".join(f"{k}: {v}" for k, v in r["differences"].items()) or "none"
            print(f"  {name}: identical {r['identical']}/{r['total']} (rows without a trained token: ours "
                  f"{r['dropped_ours']}, TRL {r['dropped_trl']}); differences: {diffs}"
                  + (f"; {r['note']}" if r.get("note") else ""))
        else:
            print(f"  {name}: {r['note']}")
    report["masks"] = mask_rows
    tiny_masks = [r for n, r in mask_rows if n.startswith("tiny")]
    masks_same = all(r["identical"] == r["total"] for r in tiny_masks)

    print("\n(b) packing without cross-attention: TRL packing=True (bfd, padding_free) on the tiny Llama, CPU")
    pk = packing_check(data)
    print(f"  the {pk['rows']} packed rows with the most examples -> one flattened row of {pk['tokens']} tokens, {pk['examples']} examples "
          f"(collator keys: {', '.join(pk['collator_keys'])}); packed vs alone: max |logit diff| "
          f"{pk['max_abs_diff']:.2e} -> isolated: {pk['isolated']}; with a KV cache object (no per-example mask) "
          f"{pk['leaky_max_abs_diff']:.2e} -> the check can tell: {pk['check_can_tell']}; labels per example = "
          f"unpacked labels with the first masked: {pk['labels_ok']}; {pk['rows_unpacked']} examples -> "
          f"{pk['rows_packed']} packed rows of <= max_length")
    report["packing"] = pk

    ab = loss_path_ab(data)
    print(f"\n(d) where TRL's time goes: one LoRA batch {ab['shape']}, forward + backward, CPU ms (median of 8, "
          f"alternating): the model's own loss (ours, via Trainer) {ab['own_ms']:.0f} ms; TRL's fused LM head "
          f"{ab['fused_ms']:.0f} ms ({ab['fused_ms'] / ab['own_ms']:.2f}x); losses {ab['own_loss']:.5f} / "
          f"{ab['fused_loss']:.5f}")
    report["loss_path"] = ab

    if a.skip_speed:
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
        return 0
    methods, variants = a.methods.split(","), a.variants.split(",")
    print(f"\n(c) tokens/s, cpu-tiny, {a.steps} steps, batch 8, max_length 256, {a.threads} thread(s); "
          f"{a.reps} reps interleaved, each run a fresh process (after one warm-up of each)")
    for v in variants:
        for m in methods:
            for impl in ("ours", "trl"):
                _spawn(impl, m, data, 3, a.threads, v == "packed")
    runs: dict[tuple[str, str, str], list[dict]] = {}
    loads = []
    for rep in range(a.reps):
        for v in variants:
            for m in methods:
                for impl in ("ours", "trl"):
                    r = _spawn(impl, m, data, a.steps, a.threads, v == "packed")
                    runs.setdefault((v, m, impl), []).append(r)
                    loads.append(os.getloadavg()[0])
                    print(f"  rep {rep + 1} {v:8} {m:4} {impl:4} {r['tokens'] / r['seconds']:7.0f} tokens/s "
                          f"{r['tokens'] / r['cpu_s']:6.0f} per CPU-s "
                          f"({r['tokens']} tokens, {r['steps']} steps, {r['seconds']:.1f} s) prep {r['prep_s']:.2f} s "
                          f"loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}  load {loads[-1]:.1f}", flush=True)
    report["runs"] = {"|".join(k): v for k, v in runs.items()}
    print(f"\nload average during the runs: median {statistics.median(loads):.1f} "
          f"(range {min(loads):.1f}-{max(loads):.1f}) on {os.cpu_count()} cores")
    print("\n| variant | method | ours tokens/s | TRL tokens/s | TRL ÷ ours | tokens per CPU-s ours / TRL (÷) "
          "| tokens/step ours / TRL | first loss ours / TRL | data prep ours | data prep TRL "
          "(read + _prepare_dataset) | SFTTrainer(...) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios = {}
    fmt = "{:,.0f} ({:,.0f}–{:,.0f})"
    fmt_s = "{:.2f} s ({:.2f}–{:.2f})"
    for v in variants:
        for m in methods:
            o, t = runs[(v, m, "ours")], runs[(v, m, "trl")]
            to = [r["tokens"] / r["seconds"] for r in o]
            tt = [r["tokens"] / r["seconds"] for r in t]
            ratio = statistics.median(tt) / statistics.median(to)
            ratios[(v, m)] = ratio
            co = statistics.median(r["tokens"] / r["cpu_s"] for r in o)
            ct = statistics.median(r["tokens"] / r["cpu_s"] for r in t)
            print(f"| {v} | {m} | {fmt.format(*_med(to))} | {fmt.format(*_med(tt))} | {ratio:.2f} | "
                  f"{co:,.0f} / {ct:,.0f} ({ct / co:.2f}) | "
                  f"{o[0]['tokens'] / o[0]['steps']:.0f} / {t[0]['tokens'] / t[0]['steps']:.0f} | "
                  f"{o[0]['first_loss']:.4f} / {t[0]['first_loss']:.4f} | "
                  f"{fmt_s.format(*_med([r['prep_s'] for r in o]))} | {fmt_s.format(*_med([r['prep_s'] for r in t]))} | "
                  f"{fmt_s.format(*_med([r['construct_s'] for r in t]))} |")
    main_ratios = [ratios[("unpacked", m)] for m in methods if ("unpacked", m) in ratios] or list(ratios.values())
    within = all(r >= 0.9 for r in main_ratios)
    adopt = masks_same and within
    why = []
    if not masks_same:
        why.append("the masks differ")
    if not within:
        why.append(f"TRL is at {min(main_ratios):.2f}x our tokens/s (needs >= 0.90); its fused LM head alone costs "
                   f"{ab['fused_ms'] / ab['own_ms']:.2f}x our forward + backward per batch on this CPU")
    if any("refuses" in r.get("note", "") for _, r in mask_rows):
        why.append("TRL refuses assistant-only loss on a template without {% generation %} markers "
                   "(SmolLM2's own), where ours falls back to character offsets")
    shown = ", ".join(f"{m} {ratios[(v, m)]:.2f}" for (v, m) in ratios if v == "unpacked")
    print(f"\nverdict: masks identical? {'yes' if masks_same else 'no'}; within 10 % of our speed? "
          f"{'yes' if within else 'no'} (TRL ÷ ours, unpacked: {shown}) => "
          + ("adopt TRL" if adopt else "keep ours: " + "; ".join(why)))
    report["ratios"] = {"|".join(k): v for k, v in ratios.items()}
    report["verdict"] = "adopt" if adopt else "keep ours"
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
