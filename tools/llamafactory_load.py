"""Load a `cqia-nb build` LLaMA-Factory export with LLaMA-Factory's own loader (run by
tools/check_llamafactory.sh inside LLaMA-Factory's virtual environment, not the project's).

    python tools/llamafactory_load.py BUILD_DIR TOKENIZER_DIR [--target mix-groups] [--template chatml]

For the target's alpaca and sharegpt entries of BUILD_DIR/llamafactory/dataset_info.json, it runs the
steps of llamafactory.train.test_utils.load_dataset_module: get_train_args -> load_tokenizer ->
get_template_and_fix_tokenizer -> get_dataset(stage="sft"); no model weights are loaded. It prints the
train/eval counts and a decoded sample, and exits 1 unless both formats load every row that
BUILD_DIR/build.json lists for the target, every example keeps trained tokens, and the two formats give
identical token ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import transformers  # noqa: E402  (before the stand-in below: transformers checks find_spec("torchaudio"))

try:  # PyPI's torchaudio links CUDA libraries and is not installed beside CPU torch; text never uses it,
    import torchaudio  # noqa: F401  but llamafactory.data.mm_plugin imports it unconditionally.
except (ImportError, OSError):
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")

import llamafactory  # noqa: E402
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.hparams import get_train_args  # noqa: E402
from llamafactory.model import load_tokenizer  # noqa: E402


def load(dataset_dir: Path, name: str, tok_dir: Path, template: str, cutoff_len: int, work: Path):
    args = dict(model_name_or_path=str(tok_dir), stage="sft", do_train=True, finetuning_type="full",
                template=template, dataset=name, eval_dataset=f"{name}_validation", dataset_dir=str(dataset_dir),
                cutoff_len=cutoff_len, overwrite_cache=True, output_dir=str(work / name), report_to="none")
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    tpl = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    dm = get_dataset(tpl, model_args, data_args, training_args, stage="sft", **tm)
    return tm["tokenizer"], dm["train_dataset"], dm.get("eval_dataset")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build_dir", type=Path)
    ap.add_argument("tokenizer_dir", type=Path)
    ap.add_argument("--target", default="mix-groups")
    ap.add_argument("--template", default="chatml")
    ap.add_argument("--cutoff-len", type=int, default=1024)
    a = ap.parse_args(argv)
    expected = json.loads((a.build_dir / "build.json").read_text(encoding="utf-8"))["targets"][a.target]
    dataset_dir = a.build_dir / "llamafactory"
    print(f"llamafactory {llamafactory.__version__}, transformers {transformers.__version__}; "
          f"{dataset_dir}/dataset_info.json, target {a.target}, template {a.template}")
    ok, ids = True, {}
    with tempfile.TemporaryDirectory(prefix="lf-check-") as work:
        for fmt in ("alpaca", "sharegpt"):
            t0 = time.perf_counter()
            tok, train, ev = load(dataset_dir, f"{a.target}_{fmt}", a.tokenizer_dir, a.template, a.cutoff_len,
                                  Path(work))
            n_train, n_eval = len(train), len(ev) if ev is not None else 0
            untrained = sum(1 for x in train["labels"] if all(t == -100 for t in x))
            ex = train[0]
            print(f"{a.target}_{fmt}: train {n_train} (build.json {expected['train']}), eval {n_eval} "
                  f"(build.json {expected['validation']}), examples without trained tokens {untrained}, "
                  f"columns {train.column_names}, {time.perf_counter() - t0:.1f} s")
            print(f"  sample 0 ({len(ex['input_ids'])} tokens, "
                  f"{sum(t != -100 for t in ex['labels'])} trained): {tok.decode(ex['input_ids'])!r}")
            print(f"  sample 0 trained text: {tok.decode([t for t in ex['labels'] if t != -100])!r}")
            ok &= n_train == expected["train"] and n_eval == expected["validation"] and untrained == 0
            ids[fmt] = list(train["input_ids"])
    same = ids["alpaca"] == ids["sharegpt"]
    print(f"alpaca and sharegpt give identical token ids: {same}")
    print("OK: LLaMA-Factory loads both exports completely" if ok and same else "FAILED")
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
