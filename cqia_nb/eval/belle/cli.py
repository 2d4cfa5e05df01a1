"""``cqia-nb eval belle [--config RECIPE] [--set KEY=VALUE ...]`` (older flags map onto the same keys)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import polars as pl

from cqia_nb.core.overrides import add_config_options, cli_overrides
from cqia_nb.eval.belle.data import BelleEvalError
from cqia_nb.eval.belle.run import BelleRunConfig, run_belle
from cqia_nb.eval.results import append_results

#: the older per-setting flags, each the config key it stands for (the judge flags: see ``_judge_flag``)
FLAG_KEYS = ("model", "data", "prompts", "judge_model", "judge_concurrency", "judge_timeout", "out", "limit", "seed",
             "max_new_tokens", "batch_size", "device", "dtype", "chat_template", "system", "empty_answers", "name",
             "base_model", "train_subset", "results", "no_results")


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``cqia-nb eval belle`` options: ``--config RECIPE`` and ``--set KEY=VALUE`` (keys:
    ``BelleRunConfig``'s, e.g. recipes/eval-belle.yaml), and the older flags, each the key it names."""
    p.description = ("cqia-nb eval belle [--config RECIPE] [--set KEY=VALUE ...]: keys are BelleRunConfig's "
                     "(model, data, judge, max_new_tokens, limit, out, ...; see recipes/eval-belle.yaml); "
                     "each older flag below sets the key of its name (--judge-url/--judge-local/--overlap/"
                     "--no-judge set judge).")
    add_config_options(p, required=False, config_help="an eval recipe, e.g. recipes/eval-belle.yaml")
    p.add_argument("--model", metavar="PATH", help="= --set model=PATH: a model folder or a LoRA/QLoRA adapter "
                                                   "folder, or 'tiny'")
    p.add_argument("--data", metavar="DIR_OR_FILE",
                   help="= --set data=…: a BELLE-EVAL folder (eval_set.json + eval_prompt.json) or an eval_set file")
    p.add_argument("--prompts", metavar="FILE", help="judge prompts (default: eval_prompt.json beside the set)")
    j = p.add_mutually_exclusive_group()
    j.add_argument("--judge-url", metavar="URL", help="= --set judge=URL: an OpenAI-compatible endpoint (…/v1; "
                                                      "default $CQIA_JUDGE_URL)")
    j.add_argument("--judge-local", metavar="PATH", help="= --set judge=PATH: judge with a local HF model instead")
    j.add_argument("--no-judge", action="store_true", default=None,
                   help="= --set judge=none: generate (and cache) answers only")
    j.add_argument("--overlap", action="store_true", default=None,
                   help="= --set judge=overlap: score offline by character-bigram F1 with the reference "
                        "(a stand-in, not a judge)")
    p.add_argument("--judge-model", metavar="NAME", help="the endpoint's model name (default $CQIA_JUDGE_MODEL)")
    p.add_argument("--judge-concurrency", type=int, metavar="N", help="default 4")
    p.add_argument("--judge-timeout", type=float, metavar="S", help="default 60")
    p.add_argument("--out", metavar="DIR", help="folder for per_item.jsonl, summary.csv, run.json "
                                                "(default build/belle_eval/<model folder>)")
    p.add_argument("--limit", type=int, metavar="N", help="a seeded, class-stratified sample of N questions")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--max-new-tokens", type=int, help="default 512")
    p.add_argument("--batch-size", type=int, help="default 8")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default cpu)")
    p.add_argument("--dtype", help="float32, bfloat16, float16 (default: as loaded)")
    p.add_argument("--chat-template", help="chatml / qwen / a Jinja file (default: the tokenizer's own)")
    p.add_argument("--system", help="a system prompt for every question")
    p.add_argument("--empty-answers", choices=("zero", "judge"),
                   help="empty answers: score 0 without the judge (default) or judge them")
    p.add_argument("--name", help="model name in the results store (default: the model folder's name)")
    p.add_argument("--base-model", help="results store: the base this model was tuned from")
    p.add_argument("--train-subset", help="results store: the CQIA subset it was tuned on")
    p.add_argument("--results", metavar="PATH", help="results store to append to (default build/results/results.jsonl)")
    p.add_argument("--no-results", action="store_true", default=None, help="do not append to the results store")
    return p


def _judge_flag(args: argparse.Namespace) -> str | None:
    """The ``judge`` key of the older judge flags (mutually exclusive), None when none was given."""
    if args.no_judge:
        return "none"
    if args.overlap:
        return "overlap"
    return args.judge_url or args.judge_local


def config_from_args(args: argparse.Namespace) -> BelleRunConfig:
    """The run's config: the recipe (if any), then the older flags, then ``--set``."""
    flags = {k: getattr(args, k) for k in FLAG_KEYS}
    flags["judge"] = _judge_flag(args)
    return BelleRunConfig.from_yaml(args.config, cli_overrides(flags, args.overrides, error=BelleEvalError))


def run_cli(args: argparse.Namespace) -> int:
    """Run ``cqia-nb eval belle``; prints the summary table. Exit 0, or 2 on bad input."""

    cfg = config_from_args(args)
    res = run_belle(cfg)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="MARKDOWN", float_precision=3):
        print(res.summary)
    counts = ", ".join(f"{k} {v}" for k, v in res.counts().items())
    print(f"{res.per_item.height} questions: {counts}; outputs in {cfg.out_dir}")
    if cfg.scored and not cfg.no_results:
        path = append_results(res.results_rows(cfg.model_name, base_model=cfg.base_model,
                                               train_subset=cfg.train_subset), cfg.results)
        print(f"results appended to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cqia_nb.eval.belle.cli …``: the same options as ``cqia-nb eval belle``."""
    ap = configure_parser(argparse.ArgumentParser(prog="python -m cqia_nb.eval.belle.cli",
                                                  description=__doc__.split("\n")[0]))
    args = ap.parse_args(argv)
    try:
        return run_cli(args)
    except (BelleEvalError, FileNotFoundError, ValueError) as e:
        print(f"belle eval: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
