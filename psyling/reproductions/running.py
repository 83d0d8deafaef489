"""Run reproductions and tabulate published against measured figures."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import pandas as pd

from ..errors import PsylingError
from ..stimuli.batteries import data_root as default_data_root
from .registry import Reproduction, skip_reason

RESULT_COLUMNS = ["reproduction", "figure", "published", "criterion", "tolerance", "measured", "passed", "status",
                  "reason"]
LIST_COLUMNS = ["name", "figures", "data", "minutes", "long", "hub_model", "citation"]


def list_table(registry: Mapping[str, Reproduction]) -> pd.DataFrame:
    """One row per reproduction: name, number of figures, data folder, run time, long, hub model, citation."""
    rows = [(r.name, len(r.figures), r.data, r.minutes, r.long, r.hub_model or "", r.citation)
            for r in registry.values()]
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def select(registry: Mapping[str, Reproduction], names: Sequence[str]) -> list[Reproduction]:
    """The reproductions ``names`` asks for ("all": every one), in registry order; unknown names are an error."""
    unknown = [n for n in names if n != "all" and n not in registry]
    if unknown or not names:
        raise PsylingError(f"unknown reproduction {', '.join(map(repr, unknown)) or '(none given)'} "
                           f"(known: all, {', '.join(registry)})")
    wanted = set(registry) if "all" in names else set(names)
    return [r for name, r in registry.items() if name in wanted]


def _rows(reproduction: Reproduction, measured: Optional[Mapping[str, float]] = None, status: str = "",
          reason: str = "") -> list[dict]:
    """One row per figure: measured, passed and status from ``measured``, else the given status and reason."""
    rows = []
    for figure in reproduction.figures:
        value = float(measured[figure.name]) if measured is not None else float("nan")
        passed = figure.passes(value) if measured is not None else None
        row_status = status if passed is None else (
            "passed" if passed else "differs" if figure.differs else "failed")
        published = figure.published if figure.kind in ("near", "within") else float("nan")  # not a bound
        rows.append({"reproduction": reproduction.name, "figure": figure.name, "published": published,
                     "criterion": figure.criterion,
                     "tolerance": figure.tolerance if figure.kind == "near" else float("nan"),
                     "measured": value, "passed": passed, "status": row_status,
                     "reason": figure.differs if row_status == "differs" else reason})
    return rows


def _measure(reproduction: Reproduction, root: Path) -> list[dict]:
    """Measure one reproduction; a missing data folder or a PsylingError while reading gives "error" rows."""
    folder = root / reproduction.data
    if not folder.exists():
        return _rows(reproduction, status="error", reason=f"{folder} does not exist (set PSYLING_DATA or --data-root)")
    try:
        measured = reproduction.measure(root)
    except PsylingError as exc:
        return _rows(reproduction, status="error", reason=str(exc))
    missing = [f.name for f in reproduction.figures if f.name not in measured]
    if missing:
        raise RuntimeError(f"reproduction {reproduction.name!r} measured no value for {missing}")
    return _rows(reproduction, measured)


def run(registry: Mapping[str, Reproduction], names: Sequence[str], include_long: bool = False,
        data_root: Optional[Path] = None) -> pd.DataFrame:
    """Run the reproductions ``names`` names ("all": every one) and return one row per figure.

    Long ones are skipped under "all" unless ``include_long`` (a reproduction named explicitly always runs);
    one needing hub weights that are not cached locally is skipped. Columns: reproduction, figure, published
    (NaN where the test is a bound, e.g. "> 0"), criterion, tolerance (NaN unless the test is ±tolerance),
    measured, passed, status (passed, failed, differs: a documented known difference, skipped, error) and reason
    (why skipped, why it differs, or the data error)."""
    chosen = select(registry, names)
    root_error = ""
    try:
        root = Path(data_root) if data_root is not None else default_data_root()
    except PsylingError as exc:
        root, root_error = None, str(exc)
    rows: list[dict] = []
    for reproduction in chosen:
        reason = skip_reason(reproduction, include_long or "all" not in names)
        if reason:
            rows += _rows(reproduction, status="skipped", reason=reason)
        elif root is None:
            rows += _rows(reproduction, status="error", reason=root_error)
        else:
            rows += _measure(reproduction, root)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
