"""``cqia-nb eval belle``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import polars as pl

from cqia_nb.eval.belle.data import BelleEvalError, load_belle
from cqia_nb.eval.belle.generate import GenerationSettings
from cqia_nb.eval.belle.run import BelleEvalConfig, judge_from, run_belle_eval
from cqia_nb.eval.results import append_results
from cqia_nb.models.judge import JudgeConfig


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``cqia-nb eval belle`` options (also ``python -m cqia_nb.eval.belle``)."""
    p.add_argument("--model", required=True, metavar="PATH", help="a model folder or a LoRA/QLoRA adapter folder")
    p.add_argument("--data", required=True, metavar="DIR_OR_FILE",
                   help="a BELLE-EVAL folder (eval_set.json + eval_prompt.json) or an eval_set file")
    p.add_argument("--prompts", metavar="FILE", help="judge prompts (default: eval_prompt.json beside the set)")
    j = p.add_mutually_exclusive_group()
    j.add_argument("--judge-url", metavar="URL", help="an OpenAI-compatible endpoint (…/v1; default $CQIA_JUDGE_URL)")
    j.add_argument("--judge-local", metavar="PATH", help="judge with a local HF model instead")
    j.add_argument("--no-judge", action="store_true", help="generate (and cache) answers only")
    j.add_argument("--overlap", action="store_true",
                   help="score offline by character-bigram F1 with the reference (a stand-in, not a judge)")
    p.add_argument("--judge-model", metavar="NAME", help="the endpoint's model name (default $CQIA_JUDGE_MODEL)")
    p.add_argument("--judge-concurrency", type=int, default=4, metavar="N")
    p.add_argument("--judge-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--out", metavar="DIR", help="folder for per_item.jsonl, summary.csv, run.json "
                                                "(default build/belle_eval/<model folder>)")
    p.add_argument("--limit", type=int, metavar="N", help="a seeded, class-stratified sample of N questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--dtype", help="float32, bfloat16, float16 (default: as loaded)")
    p.add_argument("--chat-template", help="chatml / qwen / a Jinja file (default: the tokenizer's own)")
    p.add_argument("--system", help="a system prompt for every question")
    p.add_argument("--empty-answers", choices=("zero", "judge"), default="zero",
                   help="empty answers: score 0 without the judge (default) or judge them")
    p.add_argument("--name", help="model name in the results store (default: the model folder's name)")
    p.add_argument("--base-model", help="results store: the base this model was tuned from")
    p.add_argument("--train-subset", help="results store: the CQIA subset it was tuned on")
    p.add_argument("--results", metavar="PATH", help="results store to append to (default build/results/results.jsonl)")
    p.add_argument("--no-results", action="store_true", help="do not append to the results store")
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``cqia-nb eval belle``; prints the summary table. Exit 0, or 2 on bad input."""

    template = args.chat_template
    if template and Path(template).is_file():
        template = Path(template).read_text(encoding="utf-8")
    gen = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=args.device,
                             dtype=args.dtype, chat_template=template, system=args.system, seed=args.seed)
    judge: JudgeConfig | None
    local = None
    if args.no_judge or args.overlap:
        judge = None
    else:
        import os

        url = args.judge_url or os.environ.get("CQIA_JUDGE_URL", "").strip()
        if not args.judge_local and not url:
            raise BelleEvalError("no judge: give --judge-url URL (or set $CQIA_JUDGE_URL), --judge-local PATH, "
                                 "--overlap for the offline stand-in, or --no-judge to generate answers only")
        judge, local = judge_from(args.judge_local or url, args.judge_model, concurrency=args.judge_concurrency,
                                  timeout_s=args.judge_timeout, device=args.device)
    cfg = BelleEvalConfig(generation=gen, judge=judge, judge_model_path=local, empty_answers=args.empty_answers,
                          limit=args.limit, seed=args.seed, progress=True,
                          scorer="overlap" if args.overlap else "judge")
    name = args.name or Path(args.model).name
    out = Path(args.out) if args.out else Path("build") / "belle_eval" / name
    res = run_belle_eval(args.model, load_belle(args.data, args.prompts), cfg, out_dir=out)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="MARKDOWN", float_precision=3):
        print(res.summary)
    counts = ", ".join(f"{k} {v}" for k, v in res.counts().items())
    print(f"{res.per_item.height} questions: {counts}; outputs in {out}")
    if (judge is not None or args.overlap) and not args.no_results:
        path = append_results(res.results_rows(name, base_model=args.base_model, train_subset=args.train_subset),
                              args.results)
        print(f"results appended to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cqia_nb.eval.belle --model PATH --data DIR …`` (same options as ``cqia-nb eval belle``)."""
    ap = configure_parser(argparse.ArgumentParser(prog="python -m cqia_nb.eval.belle",
                                                  description=__doc__.split("\n")[0]))
    args = ap.parse_args(argv)
    try:
        return run_cli(args)
    except (BelleEvalError, FileNotFoundError, ValueError) as e:
        print(f"belle eval: {e}", file=sys.stderr)
        return 2
