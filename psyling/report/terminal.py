"""Plain-text tables for the terminal."""
from __future__ import annotations

import math

import pandas as pd


def format_summary(summary: pd.DataFrame) -> str:
    """Per-set accuracy with its 95% CI, one line per set, plus the mean over sets."""
    if summary.empty:
        return "no sets scored"
    width = max(len("mean over sets"), *(len(s) for s in summary["set"]))
    lines = [f"{'set':<{width}}  {'items':>5}  {'accuracy':>8}  95% CI", "-" * (width + 33)]
    for row in summary.itertuples(index=False):
        if math.isnan(row.accuracy):
            lines.append(f"{row.set:<{width}}  {row.n_items:>5}  {'-':>8}  (no predictions)")
        else:
            lines.append(f"{row.set:<{width}}  {row.n_items:>5}  {row.accuracy:>8.3f}  "
                         f"[{row.ci_low:.3f}, {row.ci_high:.3f}]")
    scored = summary["accuracy"].dropna()
    if len(scored) > 1:
        lines.append("-" * (width + 33))
        lines.append(f"{'mean over sets':<{width}}  {int(summary['n_items'].sum()):>5}  {scored.mean():>8.3f}")
    return "\n".join(lines)
