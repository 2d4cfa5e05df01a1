"""Stage 5 (notebook 05): multiple-choice benchmarks, BELLE-EVAL, blind pairwise human evaluation and
the results store. Importing it never imports ipywidgets (the widgets live in ``cqia_nb.ui``)."""

from __future__ import annotations

from cqia_nb.eval import belle, human, mc, results  # noqa: F401
