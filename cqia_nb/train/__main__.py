"""``python -m cqia_nb.train --config recipes/train-cpu-tiny.yaml [--set key=value ...]``."""

import sys

from cqia_nb.train.cli import main

sys.exit(main())
