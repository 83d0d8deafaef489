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
        lines.append(f"{'mean over sets':<{width}}  {summary['n_items'].mean():>5.4g}  {scored.mean():>8.3f}  "
                     f"(unweighted; {int(summary['n_items'].sum())} items in all)")
    return "\n".join(lines)


def format_verdicts(comparison: pd.DataFrame) -> str:
    """One line per set: effect present?, direction as in humans?, and the verdict with sizes."""
    if comparison.empty:
        return "no sets analysed"
    width = max(len("set"), *(len(s) for s in comparison["set"]))
    lines = [f"{'set':<{width}}  {'present':<8}  {'direction':<18}  verdict", "-" * (width + 60)]
    for row in comparison.itertuples(index=False):
        lines.append(f"{row.set:<{width}}  {row.present or '-':<8}  {row.direction or '-':<18}  {row.verdict}")
        lines += [f"{'':<{width}}  {note}" for note in _verdict_notes(row)]
    shown = comparison[comparison["present"].astype(str) != ""]
    if len(shown):
        lines.append("-" * (width + 60))
        lines.append(f"{len(shown)} sets with a human effect: {int((shown['present'] == 'yes').sum())} present in "
                     f"the human direction, {int((shown['present'] == 'reversed').sum())} reversed, "
                     f"{int((shown['present'] == 'no').sum())} not reliable (BH q < 0.05)")
    return "\n".join(lines)


def _verdict_notes(row: tuple) -> list[str]:
    """Lines under a set's verdict: items left out for an empty compared region, why bits and the predicted
    human-unit effect differ in sign."""
    notes = []
    if getattr(row, "n_empty", 0):
        notes.append(f"({row.n_empty} items left out: the compared region is empty)")
    if getattr(row, "sign_note", ""):
        notes.append(f"({row.sign_note})")
    return notes


def format_comparison(table: pd.DataFrame, name_a: str, name_b: str) -> str:
    """Per set: accuracy of A and B, the difference with its bootstrap CI, McNemar p and BH q."""
    if table.empty:
        return "no sets in common"
    width = max(len("set"), *(len(s) for s in table["set"]))
    lines = [f"A = {name_a}\nB = {name_b}",
             f"{'set':<{width}}  {'items':>5}  {'A':>6}  {'B':>6}  {'A - B':>7}  {'95% CI':<17}  {'McNemar p':>9}  "
             f"{'q (BH)':>7}", "-" * (width + 75)]
    for r in table.itertuples(index=False):
        lines.append(f"{r.set:<{width}}  {r.n_items:>5}  {r.accuracy_a:>6.3f}  {r.accuracy_b:>6.3f}  "
                     f"{r.difference:>+7.3f}  [{r.ci_low:+.3f}, {r.ci_high:+.3f}]  {r.mcnemar_p:>9.3g}  "
                     f"{r.q_value:>7.3g}" + (f"  ({r.n_unpaired} unpaired items)" if r.n_unpaired else ""))
    return "\n".join(lines)


def format_patching(tables: dict[str, pd.DataFrame]) -> str:
    """Per set, pair and direction: the layer x region grid of residual-stream effects (R or D), the items used;
    then attribution patching's agreement with exact patching, when both ran."""
    lines = []
    summary = tables.get("patching_summary")
    if summary is not None and not summary.empty:
        resid = summary[summary["kind"] == "resid"]
        for (name, clean, corrupt, direction), grid in resid.groupby(["set", "clean", "corrupt", "direction"],
                                                                       sort=False):
            label = "recovery R" if direction == "denoise" else "disruption D"
            wide = grid.pivot_table(index="layer", columns="region", values="effect", sort=False)
            lines.append(f"{name}: {clean} vs {corrupt}, {direction} ({label}; {int(grid['n_items'].max())} items, "
                         f"{int(grid['n_excluded'].max())} excluded)")
            lines.append(wide.to_string(float_format=lambda v: f"{v:.2f}"))
    agreement = tables.get("atp_agreement")
    if agreement is not None and not agreement.empty:
        lines.append("\nattribution patching vs exact patching (Pearson r)")
        lines.append(agreement.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return "\n".join(lines)
