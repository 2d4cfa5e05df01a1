"""``python -m cqia_nb ...`` is ``cqia-nb ...``."""

import sys

from cqia_nb.cli import main

sys.exit(main())
