"""The static page's per-set charts (matplotlib PNGs) drawn from the same plotly traces as the interactive ones, so
both show the same numbers: the region profile, the item-level points and the forest plot."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .html_parts import figure_img
from .plots import condition_styles, load_pyplot

MARKERS = {"circle": "o", "square": "s", "diamond": "D", "triangle-up": "^", "x": "X"}


def trace_values(values: Sequence[Any]) -> np.ndarray:
    """Plotly's values (None for a gap) as floats (NaN)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def error_lengths(error: dict[str, Any]) -> np.ndarray:
    """A plotly error bar (``arrayminus``, ``array``) as matplotlib's (2, n) lengths, gaps (and rounding below
    zero) as 0."""
    lengths = np.array([trace_values(error["arrayminus"]), trace_values(error["array"])])
    return np.clip(np.nan_to_num(lengths), 0.0, None)


def profile_png(traces: list[dict[str, Any]], names: list[str], set_name: str, critical: str) -> str:
    """The region chart: each trace's region means with their 95% CIs, the critical region shaded."""
    fig, ax = load_pyplot().subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.8))
    for trace, style in zip(traces, condition_styles(len(traces))):
        ax.errorbar(trace["x"], trace_values(trace["y"]), yerr=error_lengths(trace["error_y"]), capsize=3,
                    label=trace["name"], **style)
    if critical in names:
        ax.axvspan(names.index(critical) - 0.45, names.index(critical) + 0.45, color="0.92", zorder=0,
                   label="critical region")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("surprisal (bits), mean ± 95% CI")
    ax.set_title(set_name)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figure_img(fig, f"{set_name} region profile")


def items_png(traces: list[dict[str, Any]], conditions: list[str], set_name: str, region: str) -> str:
    """The item-level chart: each item's surprisal at ``region``, colour by condition, marker by model."""
    fig, ax = load_pyplot().subplots(figsize=(max(5.0, 1.2 * len(conditions) + 2), 3.8))
    for trace in traces:
        marker = trace["marker"]
        ax.scatter(trace["x"], trace_values(trace["y"]), s=18, alpha=0.75, color=marker["color"],
                   marker=MARKERS.get(marker["symbol"], "o"), label=trace["name"])
    ax.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
    ax.set(xlabel="condition", ylabel=f"surprisal at {region} (bits)")
    ax.set_title(f"{set_name}: surprisal of each item at the {region} region", fontsize=9)
    ax.legend(fontsize=6, frameon=False, ncol=2)
    fig.tight_layout()
    return figure_img(fig, f"{set_name} item-level surprisal")


def forest_png(traces: list[dict[str, Any]], set_name: str, unit: str) -> str:
    """The forest plot: left, the human unit (people and the models' predictions); right, the models' bits."""
    rows = list(dict.fromkeys(t["name"] for t in traces))
    fig, axes = load_pyplot().subplots(1, 2, figsize=(9.0, 0.45 * len(rows) + 1.6), sharey=True,
                                       gridspec_kw={"width_ratios": [0.6, 0.4]})
    for trace in traces:
        ax = axes[1] if trace["xaxis"] == "x2" else axes[0]
        y = len(rows) - 1 - rows.index(trace["name"])
        ax.errorbar(trace_values(trace["x"]), [y], xerr=error_lengths(trace["error_x"]), capsize=3,
                    color=trace["marker"]["color"], marker="D" if trace["marker"]["symbol"] == "diamond" else "o")
    for ax, label in zip(axes, (f"effect ({unit})", "model effect (bits)")):
        ax.axvline(0, color="0.55", ls=":", lw=1)
        ax.set_xlabel(label)
    axes[0].set_yticks(range(len(rows)), rows[::-1], fontsize=7)
    fig.suptitle(f"{set_name}: effect in {unit} (models' predictions and people) and in bits", fontsize=9)
    fig.tight_layout()
    return figure_img(fig, f"{set_name} forest plot")
