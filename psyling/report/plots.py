"""PNG plots of a run's statistics (matplotlib, headless): region profiles and model-vs-human effects."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..stats.human import mean_ci
from ..stimuli.schema import StimulusSet


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def region_profile(stim: StimulusSet, regions: pd.DataFrame, path: Path, measure: str = "surprisal") -> Path:
    """Mean region surprisal per condition across the set's regions, with 95% CIs over items."""
    plt = _pyplot()
    table = regions[regions["set"] == stim.name]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(stim.regions) + 2), 3.6))
    x = np.arange(len(stim.regions))
    offsets = np.linspace(-0.15, 0.15, len(stim.conditions)) if len(stim.conditions) > 1 else [0.0]
    for offset, cond in zip(offsets, stim.conditions):
        cells = table[table["condition"] == cond]
        stats = [mean_ci(cells.loc[cells["region_number"] == k + 1, measure].dropna().to_numpy())
                 for k in range(len(stim.regions))]
        means = np.array([s[0] for s in stats])
        err = np.array([[m - s[1], s[2] - m] if not math.isnan(s[1]) else [0, 0] for m, s in zip(means, stats)]).T
        ax.errorbar(x + offset, means, yerr=err, marker="o", capsize=3, label=cond)
    if stim.human and stim.human.region in stim.regions:
        ax.axvspan(stim.regions.index(stim.human.region) - 0.4, stim.regions.index(stim.human.region) + 0.4,
                   color="0.92", zorder=0, label="critical region")
    ax.set_xticks(x, stim.regions, rotation=30, ha="right")
    ax.set_ylabel(f"{measure} (bits), mean ± 95% CI")
    ax.set_title(f"{stim.name} ({len(table['item'].unique())} items)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def effects_plot(comparison: pd.DataFrame, path: Path) -> Path:
    """Left: each set's model effect (bits, 95% CI), coloured by whether it is reliable and in the human
    direction. Right: predicted vs human effect in the human unit for the sets with both."""
    plt = _pyplot()
    table = comparison[comparison["effect"].astype(bool)].sort_values("model_bits")
    sized = table.dropna(subset=["predicted", "human_size"])
    fig, axes = plt.subplots(1, 2 if len(sized) else 1, figsize=(11 if len(sized) else 6, 0.28 * len(table) + 1.6),
                             squeeze=False)
    ax = axes[0][0]
    y = np.arange(len(table))
    colour = table["present"].map({"yes": "tab:green", "reversed": "tab:red"}).fillna("0.55")
    ax.errorbar(table["model_bits"], y, xerr=[table["model_bits"] - table["model_ci_low"],
                                               table["model_ci_high"] - table["model_bits"]],
                fmt="none", ecolor="0.6", capsize=2)
    ax.scatter(table["model_bits"], y, c=list(colour), zorder=3)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(y, table["set"], fontsize=7)
    ax.set_xlabel("model effect (bits; > 0 = human direction)")
    ax.set_title("green: present, red: reversed, grey: not reliable", fontsize=8)
    if len(sized):
        ax = axes[0][1]
        y = np.arange(len(sized))
        ax.errorbar(sized["human_size"], y + 0.12, xerr=[sized["human_size"] - sized["human_ci_low"],
                                                          sized["human_ci_high"] - sized["human_size"]],
                    fmt="s", color="k", capsize=2, label="humans")
        ax.errorbar(sized["predicted"], y - 0.12, xerr=[sized["predicted"] - sized["predicted_ci_low"],
                                                         sized["predicted_ci_high"] - sized["predicted"]],
                    fmt="o", color="tab:blue", capsize=2, label="model (linked)")
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_yticks(y, sized["set"], fontsize=7)
        units = ", ".join(sorted(set(sized["unit"]) - {""}))
        ax.set_xlabel(f"effect ({units})")
        ax.legend(fontsize=7, frameon=False)
        ax.set_title("model-predicted vs human effect size", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
