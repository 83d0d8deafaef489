"""The cache directory: converted models and other rebuildable artefacts (never the repository)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``PSYLING_CACHE`` if set, else ``$XDG_CACHE_HOME/psyling`` (default ``~/.cache/psyling``)."""
    env = os.environ.get("PSYLING_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "psyling"
    base.mkdir(parents=True, exist_ok=True)
    return base
