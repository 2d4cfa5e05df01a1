"""Where things live: the repository root, the package's resources, the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The repository root (where ``pyproject.toml``, ``data/`` and ``recipes/`` live)."""
    return PACKAGE_DIR.parent


def resource(name: str) -> Path:
    """A file shipped inside the package (``cqia_nb/resources/<name>``)."""
    return PACKAGE_DIR / "resources" / name


def here_or_root(path: str | Path) -> Path:
    """A relative path from the working directory when it exists there, else from the repository root."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else project_root() / p


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache folder: ``override``, else ``$CQIA_CACHE_DIR``, else ``$XDG_CACHE_HOME/cqia_nb``
    (``~/.cache/cqia_nb``). Parsed data, token counts, tiny models and scores live under it."""
    if override:
        return Path(override)
    if os.environ.get("CQIA_CACHE_DIR"):
        return Path(os.environ["CQIA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cqia_nb"
