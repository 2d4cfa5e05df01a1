"""``cqia-nb train --config RECIPE [--set KEY=VALUE ...]`` (also ``python -m cqia_nb.train``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from cqia_nb.core.atomic import OutputError
from cqia_nb.core.overrides import add_config_options
from cqia_nb.train.config import DATA_ISSUES_FILE, TrainConfig, TrainConfigError
from cqia_nb.train.trainer import train


def add_cli_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``python -m cqia_nb.train`` (also ``cqia-nb train``)."""
    add_config_options(ap, config_help="a training recipe, e.g. recipes/train-cpu-tiny.yaml (keys: TrainConfig's)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    return ap


def run_cli(a: argparse.Namespace) -> int:
    """Train as the parsed options say; prints the training data's account (rows read = used +
    dropped, truncated; the first issues), then one JSON line (output_dir, global_step, first/last
    loss, tokens/s). Exit status 2, with the message, for a config that cannot run or an output
    folder that cannot be written."""
    try:
        cfg = TrainConfig.from_yaml(a.config, a.overrides)
        res = train(cfg, resume=a.resume, progress=a.progress)
    except TrainConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OutputError as e:
        print(f"cqia-nb train: {e}", file=sys.stderr)
        return 2
    if not res.is_main:  # several processes: one summary, from the process that wrote the files
        return 0
    if res.data is not None:  # read = used + dropped, per source; then the first issues
        print(res.data.summary())
        if res.data.issues.height:
            print(res.data.format_issues(limit=5) + f"\n(all {res.data.issues.height} in "
                  f"{res.output_dir / DATA_ISSUES_FILE})")
    losses = res.losses
    print(json.dumps({"output_dir": str(res.output_dir), "global_step": res.global_step,
                      "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                      "tokens_per_s": round(res.tokens_per_s, 1)}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = add_cli_arguments(argparse.ArgumentParser(prog="python -m cqia_nb.train", description=__doc__.split("\n")[0]))
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
