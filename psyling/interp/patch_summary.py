"""Set-level patching effects: the ratio of item means with an item-bootstrap 95% CI, per site, region and
direction, over the items that are not excluded (``effect`` not NaN)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .patching import effect

GROUP = ["set", "clean", "corrupt", "site", "kind", "layer", "head", "region", "direction"]
SUMMARY_COLUMNS = GROUP + ["effect", "ci_low", "ci_high", "n_items", "n_excluded", "n_not_patched",
                           "m_clean", "m_corrupt", "m_patched"]


def ratio_of_means(direction: str, clean: np.ndarray, corrupt: np.ndarray, patched: np.ndarray) -> np.ndarray:
    """R (denoise) or D (noise) of item means along the last axis."""
    return effect(direction, clean.mean(-1), corrupt.mean(-1), patched.mean(-1))


def bootstrap_ratio(direction: str, values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% CI of the ratio of item means, resampling items ([3, n_items]: clean, corrupt, patched)."""
    n = values.shape[1]
    if n < 2 or n_boot < 1:
        return np.nan, np.nan
    draws = values[:, rng.integers(0, n, size=(n_boot, n))]
    ratios = ratio_of_means(direction, *draws)
    return tuple(np.nanpercentile(ratios, [2.5, 97.5]))  # type: ignore[return-value]


def summarise_patching(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per set x pair x site x region x direction: effect, CI, items used, excluded and not patched."""
    rng = np.random.default_rng(seed)
    out = []
    for key, group in rows.groupby(GROUP, sort=False):
        used = group[group["effect"].notna()]
        values = used[["m_clean", "m_corrupt", "m_patched"]].to_numpy(float).T
        direction = key[GROUP.index("direction")]
        value = float(ratio_of_means(direction, *values)) if len(used) else np.nan
        low, high = bootstrap_ratio(direction, values, n_boot, rng)
        excluded = int(group["note"].str.startswith("excluded").sum())
        means = values.mean(1) if len(used) else [np.nan] * 3
        out.append(dict(zip(GROUP, key), effect=value, ci_low=low, ci_high=high, n_items=len(used),
                        n_excluded=excluded, n_not_patched=len(group) - len(used) - excluded,
                        m_clean=means[0], m_corrupt=means[1], m_patched=means[2]))
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)
