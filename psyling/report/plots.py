"""PNG plots of a run's statistics (matplotlib, headless): region profiles and model-vs-human effects."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..stats.human import mean_ci
from ..stimuli.schema import StimulusSet

MARKERS = ("o", "s", "^", "D", "v")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))


def load_pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def empty_regions(regions: pd.DataFrame) -> pd.Series:
    """Per row of a regions table: True where the region has no text (its 0 bits are not a measurement)."""
    if "text" not in regions.columns:
        return pd.Series(False, index=regions.index)
    return regions["text"].fillna("").astype(str).str.strip().eq("")


def safe_file_names(names: list[str]) -> dict[str, str]:
    """Set name -> a file-name stem without spaces (spaces become ``_``), unique among ``names`` (``-2``, ``-3``
    ... on a clash)."""
    stems: dict[str, str] = {}
    for name in names:
        base = stem = "_".join(name.split())
        k = 1
        while stem in stems.values():
            k += 1
            stem = f"{base}-{k}"
        stems[name] = stem
    return stems


def condition_styles(n: int) -> list[dict[str, Any]]:
    """``n`` distinct line styles: the 10 colours of tab10, then again with another marker and dash pattern."""
    colours = [f"C{k}" for k in range(10)]
    return [{"color": colours[k % 10], "marker": MARKERS[k // 10 % len(MARKERS)],
             "linestyle": LINESTYLES[k // 10 % len(LINESTYLES)]} for k in range(n)]


def profile_means(stim: StimulusSet, regions: pd.DataFrame, measure: str = "surprisal") -> dict[str, np.ndarray]:
    """Condition -> rows (mean, ci_low, ci_high) per region over items; an empty region (no text) is NaN, a gap."""
    table = regions[regions["set"] == stim.name]
    table = table.assign(**{measure: table[measure].mask(empty_regions(table))})
    out = {}
    for cond in stim.conditions:
        cells = table[table["condition"] == cond]
        out[cond] = np.array([mean_ci(cells.loc[cells["region_number"] == k + 1, measure].dropna().to_numpy())[:3]
                              for k in range(len(stim.regions))])
    return out


def region_profile(stim: StimulusSet, regions: pd.DataFrame, path: Path, measure: str = "surprisal") -> Path:
    """Mean region surprisal per condition across the set's regions, with 95% CIs over items (``profile_means``)."""
    plt = load_pyplot()
    n_items = regions.loc[regions["set"] == stim.name, "item"].nunique()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(stim.regions) + 2), 3.6))
    x = np.arange(len(stim.regions))
    offsets = np.linspace(-0.15, 0.15, len(stim.conditions)) if len(stim.conditions) > 1 else [0.0]
    means = profile_means(stim, regions, measure)
    for offset, style, (cond, stats) in zip(offsets, condition_styles(len(means)), means.items()):
        err = np.where(np.isnan(stats[:, 1:]), 0.0, np.abs(stats[:, 1:] - stats[:, :1])).T
        ax.errorbar(x + offset, stats[:, 0], yerr=err, capsize=3, label=cond, **style)
    if stim.human and stim.human.region in stim.regions:
        ax.axvspan(stim.regions.index(stim.human.region) - 0.4, stim.regions.index(stim.human.region) + 0.4,
                   color="0.92", zorder=0, label="critical region")
    ax.set_xticks(x, stim.regions, rotation=30, ha="right")
    ax.set_ylabel(f"{measure} (bits), mean ± 95% CI")
    gaps = any(np.isnan(stats[:, 0]).any() for stats in means.values())
    ax.set_title(f"{stim.name} ({n_items} items{'; gaps: no value, e.g. an empty region' if gaps else ''})")
    ax.legend(fontsize=7, frameon=False, ncol=2 if len(stim.conditions) > 8 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def effects_plot(comparison: pd.DataFrame, path: Path) -> Optional[Path]:
    """Left: each set's model effect (bits, 95% CI), coloured by whether it is reliable and in the human
    direction. Right: predicted vs human effect in the human unit for the sets with both; a set whose bits and
    predicted value differ in sign is marked † with the reason (``sign_note``) under the plot. None, and no file,
    when no set has a human effect."""
    table = comparison[comparison["effect"].astype(bool)].sort_values("model_bits")
    if table.empty:
        return None
    plt = load_pyplot()
    sized = table.dropna(subset=["predicted", "human_size"])
    notes = sized["sign_note"].fillna("") if "sign_note" in sized.columns else pd.Series("", index=sized.index)
    footnote = "\n".join(textwrap.fill(f"† {name}: {note}", 170) for name, note in zip(sized["set"], notes) if note)
    foot_in = 0.12 * (footnote.count("\n") + 1) if footnote else 0.0  # inches of footnote text
    height = 0.28 * len(table) + 1.6 + foot_in
    fig, axes = plt.subplots(1, 2 if len(sized) else 1, figsize=(11 if len(sized) else 6, height), squeeze=False)
    _model_effects(axes[0][0], table)
    if len(sized):
        _sized_effects(axes[0][1], sized, notes)
    if footnote:
        fig.text(0.01, 0.01, footnote, fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, foot_in / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _model_effects(ax: Any, table: pd.DataFrame) -> None:
    """Each set's effect in bits with its CI, coloured by the verdict."""
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


def _sized_effects(ax: Any, sized: pd.DataFrame, notes: pd.Series) -> None:
    """Predicted (linked) vs human effect per set in the human unit; † marks a set with a ``sign_note``."""
    y = np.arange(len(sized))
    ax.errorbar(sized["human_size"], y + 0.12, xerr=[sized["human_size"] - sized["human_ci_low"],
                                                      sized["human_ci_high"] - sized["human_size"]],
                fmt="s", color="k", capsize=2, label="humans")
    ax.errorbar(sized["predicted"], y - 0.12, xerr=[sized["predicted"] - sized["predicted_ci_low"],
                                                     sized["predicted_ci_high"] - sized["predicted"]],
                fmt="o", color="tab:blue", capsize=2, label="model (linked)")
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(y, [f"{name} †" if note else name for name, note in zip(sized["set"], notes)], fontsize=7)
    units = ", ".join(sorted(set(sized["unit"]) - {""}))
    ax.set_xlabel(f"effect ({units})")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("model-predicted vs human effect size (†: sign differs from the bits, see below)"
                 if notes.astype(bool).any() else "model-predicted vs human effect size", fontsize=8)
