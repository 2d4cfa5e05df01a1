#!/usr/bin/env bash
# Data-Juicer 1.6.1 with what its Ray executor (executor_type: ray) needs, for bench_ray_dj.py.
#
#   bash benchmarks/dj/build_dj_ray_env.sh VENV_DIR      (e.g. /work/dj-ray-venv; outside the repo)
#
# build_dj_env.sh's venv (same pins, same offline guard: ray 2.52.0, Data-Juicer's own lock
# version, is already there), then:
# * ray[data]==2.52.0: Ray Data's extras (numpy, pandas, pyarrow, fsspec: all present; stated anyway);
# * pandas 2.3.3: Ray 2.52's Arrow-to-pandas conversion, which its JSON writer uses (Data-Juicer's
#   exporter), reads pd.errors.SettingWithCopyWarning, gone in pandas 3 (the shared pins have
#   3.1.1): "AttributeError: module 'pandas.errors' has no attribute 'SettingWithCopyWarning'" at
#   export. Data-Juicer's own `distributed` extra says pandas<3 for the same reason. (The rest of
#   that extra, pyspark, boto3, s3fs, pylance, ..., is for other executors and storage, not needed.)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:?usage: build_dj_ray_env.sh VENV_DIR}"
bash "$HERE/build_dj_env.sh" "$VENV"
"$VENV/bin/pip" install -q -c <(grep -v '^pandas==' "$HERE/dj-constraints.txt") "torch==2.13.0" \
    "ray[data]==2.52.0" "pandas==2.3.3" "pytz==2026.6"
"$VENV/bin/pip" check
"$VENV/bin/pip" freeze > "$VENV/freeze-at-build.txt"
echo "Data-Juicer venv with its Ray executor ready: $VENV"
