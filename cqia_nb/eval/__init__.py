"""Stages 5 and 6 (notebooks 05, 06): multiple-choice benchmarks, BELLE-EVAL, blind pairwise human
evaluation, the results store; the held-out loss (``heldout``) and the subset sweep (``sweep``), which
load the training stack and are imported on their own (``from cqia_nb.eval import sweep``). Importing
this package never imports ipywidgets (the widgets live in ``cqia_nb.ui``)."""

from __future__ import annotations

from cqia_nb.eval import belle, human, mc, results  # noqa: F401
