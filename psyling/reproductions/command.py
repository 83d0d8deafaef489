"""``psyling reproduce list | NAME... | all``: the terminal tables and the exit code."""
from __future__ import annotations

import math
import sys
from typing import Any

import pandas as pd

from ..errors import PsylingError

OK, FAILED, DATA_ERROR = 0, 1, 2
VERDICTS = {"passed": "PASS", "failed": "FAIL", "differs": "DIFFERS (known)", "skipped": "skipped", "error": "ERROR"}


def _in_all(row: Any) -> str:
    why = [f"hub weights ({row.hub_model})"] * bool(row.hub_model) + ["long"] * bool(row.long)
    return f"no: {', '.join(why)}" if why else "yes"


def format_list(table: pd.DataFrame) -> str:
    """The registry as a terminal table: name, figures, data folder, run time, what keeps it out of `all`."""
    rows = [(r, _in_all(r)) for r in table.itertuples()]
    width = max(len("reproduction"), *(len(r.name) for r, _ in rows))
    where_width = max(len("in all"), *(len(w) for _, w in rows))
    lines = [f"{'reproduction':<{width}}  {'figures':>7}  {'data':<26}  {'min':>5}  {'in all':<{where_width}}  "
             "citation"]
    lines += [f"{r.name:<{width}}  {r.figures:>7}  {r.data:<26}  {r.minutes:>5.1f}  {where:<{where_width}}  "
              f"{r.citation}" for r, where in rows]
    return "\n".join(lines)


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"


def format_results(table: pd.DataFrame) -> str:
    """Published vs measured vs verdict, one line per figure, then the reasons for skipped or failed runs."""
    widths = {c: max(len(title), *(len(v) for v in table[c])) for c, title in
              (("reproduction", "reproduction"), ("figure", "figure"), ("criterion", "test"))}
    lines = [f"{'reproduction':<{widths['reproduction']}}  {'figure':<{widths['figure']}}  {'published':>9}  "
             f"{'test':<{widths['criterion']}}  {'measured':>9}  result"]
    for r in table.itertuples():
        lines.append(f"{r.reproduction:<{widths['reproduction']}}  {r.figure:<{widths['figure']}}  "
                     f"{_number(r.published):>9}  {r.criterion:<{widths['criterion']}}  {_number(r.measured):>9}  "
                     f"{VERDICTS[r.status]}")
    reasons = table[table["reason"] != ""]
    known = reasons["status"] == "differs"
    lines += [f"{r.reproduction}: {VERDICTS[r.status]}: {r.reason}"
              for r in reasons[~known].drop_duplicates("reproduction").itertuples()]
    lines += [f"{r.reproduction}: {r.figure}: {VERDICTS[r.status]}: {r.reason}" for r in reasons[known].itertuples()]
    counts = table["status"].value_counts()
    lines.append(", ".join(f"{counts.get(s, 0)} {s}" for s in VERDICTS) + " figures")
    return "\n".join(lines)


def exit_code(table: pd.DataFrame) -> int:
    """2 on a data error, else 1 if a figure that ran failed, else 0."""
    if (table["status"] == "error").any():
        return DATA_ERROR
    return FAILED if (table["status"] == "failed").any() else OK


def reproduce_command(args: Any) -> int:
    """``psyling reproduce``: ``args.names`` (["list"], ["all"] or names), ``args.long``, ``args.data_root``."""
    from . import list_table, run_reproductions

    names = list(args.names or ["list"])
    if names == ["list"]:
        print(format_list(list_table()))
        return OK
    try:
        table = run_reproductions(names, include_long=args.long, data_root=args.data_root)
    except PsylingError as exc:
        print(f"psyling: error: {exc}", file=sys.stderr)
        return DATA_ERROR
    print(format_results(table))
    return exit_code(table)
