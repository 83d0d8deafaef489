"""psyling: artificial psycholinguistics -- human sentence-processing experiments run on language models."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["RunConfig", "RunResult", "analyze", "evaluate", "__version__", "run"]


def __getattr__(name: str) -> Any:
    """``psyling.run`` / ``evaluate`` / ``analyze`` / ``RunConfig`` load torch only when first used."""
    if name in ("RunConfig", "RunResult", "evaluate", "run"):
        from . import api
        return getattr(api, name)
    if name == "analyze":
        from .analysis import analyze
        return analyze
    raise AttributeError(f"module 'psyling' has no attribute {name!r}")
