"""Model folders built or converted here: named by a content hash, written to a temporary folder and
published whole (``core.atomic.staged_folder``; a marker file written last), so a folder is either
complete or rebuilt."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from cqia_nb.core.atomic import staged_folder
from cqia_nb.core.paths import cache_dir

#: Bump when the build or training recipe changes so stale cached folders are never reused.
MODEL_VERSION = "1"
MARKER = "cqia_model.json"  # written last: a folder without it is incomplete and rebuilt


def models_dir() -> Path:
    """Where built/trained tiny models live: ``<cqia cache>/models``."""

    return cache_dir() / "models"


def is_complete(folder: Path, key: str) -> bool:
    m = folder / MARKER
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text(encoding="utf-8")).get("key") == key
    except (OSError, ValueError):
        return False


def save_model(model, tokenizer, final: Path, marker: dict[str, Any]) -> Path:
    """Save model (safetensors) + tokenizer + our marker into a temporary folder beside ``final``,
    then publish it whole (``core.atomic.staged_folder``; a concurrent identical build there is replaced)."""
    with staged_folder(final) as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    return final


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars (weight loading/saving) for the duration."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()
