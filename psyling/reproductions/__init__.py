"""Reproductions of published results: a registry of what each recomputes, from which data, against which
published figures and tolerances; ``psyling reproduce list | NAME... | all`` runs them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from . import battery_runs, hu2020, naturalstories, running, sap, ucl
from .command import reproduce_command
from .registry import Figure, Reproduction

REGISTRY: dict[str, Reproduction] = {r.name: r for r in (
    hu2020.REPRODUCTION, sap.REPRODUCTION, ucl.REPRODUCTION, naturalstories.REPRODUCTION,
    *battery_runs.REPRODUCTIONS)}

__all__ = ["Figure", "REGISTRY", "Reproduction", "list_table", "reproduce_command", "run_reproductions"]


def list_table() -> pd.DataFrame:
    """The registered reproductions: name, figures, data, minutes, long, hub_model, citation."""
    return running.list_table(REGISTRY)


def run_reproductions(names: Sequence[str], include_long: bool = False,
                      data_root: Optional[Path] = None) -> pd.DataFrame:
    """Run the named reproductions ("all": every short, offline one; the rest are listed as skipped with their
    reason) and return one row per figure: published, measured, tolerance, passed, status, reason."""
    return running.run(REGISTRY, names, include_long, data_root)
