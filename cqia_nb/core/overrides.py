"""``KEY=VALUE`` assignments from the command line, values parsed as YAML.

One parser for every ``--set`` / ``-p`` flag (``cqia-nb notebooks -p``, ``python -m cqia_nb.train
--set``), so ``true``, ``3e-4``, ``[q_proj, v_proj]`` and ``null`` mean the same everywhere.
Callers word the error for their own flag and add their own post-processing (the notebooks
command resolves existing paths, for instance).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

# PyYAML follows YAML 1.1, where ``3e-4`` (no dot) is a string; on a command line it is a number.
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class AssignmentError(ValueError):
    """A ``KEY=VALUE`` item that cannot be parsed; ``item`` is the offending text."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item!r}: {reason}")
        self.item = item
        self.reason = reason


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["lora_r=16", "packing=true", "x="]`` -> ``{"lora_r": 16, "packing": True, "x": None}``.

    Keys are stripped; values are parsed with ``yaml.safe_load`` (an empty value is None; ``3e-4``
    is read as the number, not as YAML 1.1's string). A later
    item overrides an earlier one with the same key. Raises ``AssignmentError`` for an item
    without ``=`` or with a value that is not valid YAML.
    """
    import yaml

    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise AssignmentError(it, "expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            value = yaml.safe_load(v) if v.strip() else None
        except yaml.YAMLError as e:
            raise AssignmentError(it, f"the value is not valid YAML ({str(e).splitlines()[0]}); quote it") from None
        if isinstance(value, str) and v.strip()[:1] not in "'\"" and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)
        out[k.strip()] = value
    return out
