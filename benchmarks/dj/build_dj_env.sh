#!/usr/bin/env bash
# Build a reproducible, self-contained Data-Juicer 1.6.1 venv for the rule-filter comparison.
#
#   bash benchmarks/dj/build_dj_env.sh [VENV_DIR]     (default: build/dj-venv in the repository)
#
# Why each step:
# * torch==2.13.0 first (the CPU wheel this machine has on disk), then repeated in every later
#   pip command: py-data-juicer's lazy loader would otherwise pull an unpinned CUDA torch (~3 GB).
# * aiohttp: imported by data_juicer but not declared in its metadata.
# * Data-Juicer 1.6.1 has NO switch (env var or config key) for its lazy auto-install:
#   LazyLoader(auto_install=True) is the default everywhere and LazyLoader.check_packages()
#   calls `python -m uv pip install` then falls back to `python -m pip install`. So this script
#   (a) pre-installs every package the ops of the comparison import lazily
#       (`import data_juicer.core` -> ray, for an @ray.remote at module level, pinned to
#       Data-Juicer's own uv.lock version 2.52.0; chinese_convert_mapper -> opencc;
#       clean_html_mapper -> selectolax; the rest need only regex/numpy, hard dependencies), and
#   (b) installs a guard: a .pth file that patches LazyLoader._install_package to raise, so any
#       op that would install something fails loudly instead, and a wrapper bin/dj-python that
#       also points pip and uv at no index at all (PIP_NO_INDEX, UV_OFFLINE, no config file).
# * opencc==1.4.2: the same OpenCC build (C++ library + dictionaries) as our side, so that the
#   t2s conversions are identical on both sides (Data-Juicer's own lock pins opencc==1.1.9).
# * polars / pyarrow at our versions: the fair benchmark reads the same parquet file on both
#   sides, with the same reader.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-$HERE/../../build/dj-venv}"
PY="${PYTHON:-python3}"
TORCH="torch==2.13.0"
# Every version as built on 2026-12-07 (pip freeze of a good build): pass it so a rebuild
# resolves to the same set; delete the file (or set DJ_CONSTRAINTS=) to re-resolve.
CONSTRAINTS="${DJ_CONSTRAINTS-$HERE/dj-constraints.txt}"
PIN=()
[ -n "$CONSTRAINTS" ] && [ -f "$CONSTRAINTS" ] && PIN=(-c "$CONSTRAINTS")

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "${PIN[@]}" "$TORCH"
"$VENV/bin/pip" install -q "${PIN[@]}" "$TORCH" aiohttp "py-data-juicer==1.6.1" "ray==2.52.0" "opencc==1.4.2" \
    selectolax "polars==2.1.0" "pyarrow==26.0.1"

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$SITE/_dj_no_autoinstall.py" <<'EOF'
"""Installed by build_dj_env.sh: Data-Juicer must never install packages at run time."""
import importlib.abc
import sys

_TARGET = "data_juicer.utils.lazy_loader"


def _refuse(*args, **kwargs):
    spec = args[-1] if args else kwargs
    raise ImportError(f"Data-Juicer tried to auto-install {spec!r}; this venv forbids it. "
                      "Add the package to build_dj_env.sh instead.")


def _patch(mod):
    mod.LazyLoader._install_package = classmethod(_refuse)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        orig = loader.exec_module

        def exec_module(module):
            orig(module)
            _patch(module)

        loader.exec_module = exec_module
        return spec


import importlib.util  # noqa: E402

if _TARGET in sys.modules:
    _patch(sys.modules[_TARGET])
else:
    sys.meta_path.insert(0, _Finder())
EOF
echo "import _dj_no_autoinstall" > "$SITE/_dj_no_autoinstall.pth"

cat > "$VENV/bin/dj-python" <<EOF
#!/usr/bin/env bash
# Data-Juicer's python with every install route closed (see build_dj_env.sh).
export PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= UV_OFFLINE=1 UV_NO_CONFIG=1 \\
       HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
exec "$VENV/bin/python" "\$@"
EOF
chmod +x "$VENV/bin/dj-python"

"$VENV/bin/pip" check
"$VENV/bin/pip" freeze > "$VENV/freeze-at-build.txt"

# Smoke test: build every op of the comparison, run it on two records, and check that the
# venv's package set did not change (nothing was installed at run time).
"$VENV/bin/dj-python" - <<'EOF'
import json, os, tempfile
from data_juicer.ops import load_ops
from data_juicer.core.data import NestedDataset
from data_juicer.utils import lazy_loader
assert lazy_loader.LazyLoader._install_package.__func__.__name__ == "_refuse", "guard not active"
words = tempfile.mkdtemp()
with open(os.path.join(words, "flagged_words.json"), "w", encoding="utf-8") as f:
    json.dump({"zh": ["赌博"]}, f, ensure_ascii=False)
common = {"auto_op_parallelism": False, "num_proc": 1}
ops = load_ops([
    {"chinese_convert_mapper": {"mode": "t2s", **common}},
    {"text_length_filter": {"min_len": 1, "max_len": 50000, **common}},
    {"special_characters_filter": {"min_ratio": 0.0, "max_ratio": 0.25, **common}},
    {"alphanumeric_filter": {"min_ratio": 0.0, **common}},
    {"clean_html_mapper": {**common}},
    {"clean_links_mapper": {**common}},
    {"clean_email_mapper": {**common}},
    {"flagged_words_filter": {"lang": "zh", "tokenization": False, "max_ratio": 0.04,
                              "flagged_words_dir": words, "use_words_aug": False, **common}},
    {"character_repetition_filter": {"rep_len": 10, "max_ratio": 0.5, **common}},
    {"word_repetition_filter": {"lang": "zh", "tokenization": False, "rep_len": 10, "max_ratio": 0.6, **common}},
])
ds = NestedDataset.from_list([{"text": "這是一個測試 <p>x</p> http://a.cn a@b.cn"}, {"text": "正常的简体中文文本。"}])
for op in ops:
    ds = op.run(ds)
print("smoke test ok:", len(ds), "records kept;", ds[0]["text"][:40])
EOF
"$VENV/bin/pip" freeze | diff -q - "$VENV/freeze-at-build.txt" >/dev/null \
    || { echo "the package set changed at run time" >&2; exit 1; }
echo "Data-Juicer venv ready: $VENV (run with $VENV/bin/dj-python)"
