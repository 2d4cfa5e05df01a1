#!/usr/bin/env bash
# Do LLaMA-Factory's own loaders read our LLaMA-Factory export? (README: "Exports read by their consumers")
#
#   tools/check_llamafactory.sh [BUILD_DIR]
#
# 1. builds LLaMA-Factory 0.9.5 in its own virtual environment ($LF_VENV, default build/llamafactory-venv;
#    it cannot share .venv: it pins transformers<=5.6, datasets<=4.0, accelerate<=1.11), from exact pins:
#    torch==2.13.0 first, then tools/llamafactory-requirements.txt with --no-deps (reused while that file
#    is unchanged);
# 2. makes a build with the project's own venv unless BUILD_DIR is given:
#    cqia-nb build --spec recipes/subsets-paper.yaml --seed 42 --input bundled build/llamafactory-check/build
# 3. saves the cpu-tiny tokenizer (its ChatML special tokens) for the `chatml` template;
# 4. runs tools/llamafactory_load.py in LLaMA-Factory's venv: get_train_args -> load_tokenizer ->
#    get_template_and_fix_tokenizer -> get_dataset on the alpaca and sharegpt entries of our
#    dataset_info.json; prints counts and a decoded sample; exit status 1 on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PROJECT_PY=${PROJECT_PY:-.venv/bin/python}
LF_VENV=${LF_VENV:-build/llamafactory-venv}
WORK=build/llamafactory-check
REQ=tools/llamafactory-requirements.txt
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

stamp="$LF_VENV/.cqia-requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== building $LF_VENV (LLaMA-Factory 0.9.5, CPU torch 2.13.0)"
  rm -rf "$LF_VENV"
  "$PYTHON" -m venv "$LF_VENV"
  "$LF_VENV/bin/python" -m pip install -q --upgrade pip
  "$LF_VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$LF_VENV/bin/python" -m pip install -q --no-deps -r "$REQ"
  echo "$want" > "$stamp"
fi

mkdir -p "$WORK"
BUILD=${1:-$WORK/build}
if [ -z "${1:-}" ]; then
  echo "== cqia-nb build -> $BUILD"
  "$PROJECT_PY" -m cqia_nb.cli build --spec recipes/subsets-paper.yaml --seed 42 --input bundled --force "$BUILD" >/dev/null
fi

TOK="$WORK/tiny-tokenizer"
"$PROJECT_PY" - "$TOK" <<'EOF'
import sys
from transformers import AutoTokenizer
from cqia_nb.data import load
from cqia_nb.models.tiny import build_tiny_model
AutoTokenizer.from_pretrained(str(build_tiny_model(load(source="bundled").frame))).save_pretrained(sys.argv[1])
EOF

echo "== LLaMA-Factory's loader on $BUILD/llamafactory"
"$LF_VENV/bin/python" tools/llamafactory_load.py "$BUILD" "$TOK" --template chatml
