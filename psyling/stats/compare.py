"""Comparing two models over the same items: McNemar's test, a paired bootstrap, Benjamini-Hochberg q-values,
a per-set comparison of two runs' predictions, and accuracy per phenomenon."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2

from ..errors import PsylingError
from .accuracy import wilson_interval
from .sg_score import item_passes

EXACT_BELOW = 25  # discordant pairs below which McNemar's test is exact (binomial)
COMPARE_COLUMNS = ["set", "n_items", "n_unpaired", "accuracy_a", "accuracy_b", "difference", "ci_low", "ci_high",
                   "n_a_only", "n_b_only", "mcnemar_p", "q_value"]
ACCURACY_BY_COLUMNS = ["n_sets", "n_items", "n_passed", "accuracy", "ci_low", "ci_high"]


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired outcomes. ``b01``: items A failed and B passed; ``b10``: A passed and B failed.

    ``statistic`` is min(b01, b10) for the exact (binomial) test, else the chi-square statistic (1 df)."""
    b01: int
    b10: int
    statistic: float
    p_value: float
    method: str


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``statistic(a) - statistic(b)``: observed difference, percentile CI, two-sided p."""
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_boot: int
    level: float


def _boolean(values: object, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise PsylingError(f"{name}: expected a 1-dimensional array of pass/fail outcomes, got shape {array.shape}")
    if array.dtype.kind == "b":
        return array
    if array.dtype.kind not in "iuf" or not np.isin(array, [0, 1]).all():
        raise PsylingError(f"{name}: outcomes must be booleans or 0/1 (missing values are not allowed)")
    return array.astype(bool)


def _paired(a: object, b: object, kind: Callable[[object, str], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = kind(a, "a"), kind(b, "b")
    if len(x) != len(y):
        raise PsylingError(f"paired arrays differ in length: a has {len(x)} items, b has {len(y)}")
    if len(x) == 0:
        raise PsylingError("paired arrays are empty")
    return x, y


def mcnemar(a: object, b: object, exact: bool | None = None, correction: bool = True) -> McNemarResult:
    """McNemar's test for two paired boolean arrays (per item: did model A / model B pass?).

    Exact binomial test when the discordant count is below 25 (or ``exact=True``), else chi-square with 1 df and
    (unless ``correction=False``) Edwards' continuity correction."""
    x, y = _paired(a, b, _boolean)
    b01, b10 = int(np.sum(~x & y)), int(np.sum(x & ~y))
    n = b01 + b10
    if exact is None:
        exact = n < EXACT_BELOW
    if exact:
        p = binomtest(min(b01, b10), n, 0.5).pvalue if n else 1.0
        return McNemarResult(b01, b10, float(min(b01, b10)), float(p), "exact binomial")
    if n == 0:
        return McNemarResult(b01, b10, 0.0, 1.0, "chi-square")
    diff = max(abs(b01 - b10) - (1 if correction else 0), 0)
    stat = diff * diff / n
    method = "chi-square, continuity-corrected" if correction else "chi-square"
    return McNemarResult(b01, b10, float(stat), float(chi2.sf(stat, 1)), method)


def _numeric(values: object, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise PsylingError(f"{name}: expected a 1-dimensional array, got shape {array.shape}")
    if np.isnan(array).any():
        raise PsylingError(f"{name}: {int(np.isnan(array).sum())} missing values; drop or pair them first")
    return array


def paired_bootstrap(a: object, b: object, n_boot: int = 10000, seed: int = 0,
                     statistic: Callable[..., np.ndarray] = np.mean, level: float = 0.95) -> BootstrapResult:
    """Resample items with replacement (the same items for A and B) and bootstrap ``statistic(a) - statistic(b)``.

    ``statistic`` must reduce along ``axis=-1`` (np.mean, np.median, ...). The CI is the percentile interval; the
    two-sided p-value is twice the share of bootstrap differences on the other side of 0 from the observed
    difference (0 included), capped at 1 (1 when the observed difference is 0). Deterministic given ``seed``."""
    x, y = _paired(a, b, _numeric)
    if n_boot < 1:
        raise PsylingError(f"n_boot must be positive, got {n_boot}")
    observed = float(statistic(x, axis=-1) - statistic(y, axis=-1))
    rng = np.random.default_rng(seed)
    n = len(x)
    chunk = max(1, 2_000_000 // n)  # bound memory: at most ~2M resampled indices at a time
    diffs = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        diffs.append(statistic(x[idx], axis=-1) - statistic(y[idx], axis=-1))
    boot = np.concatenate(diffs)
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    if observed > 0:
        p = min(1.0, 2 * float(np.mean(boot <= 0)))
    elif observed < 0:
        p = min(1.0, 2 * float(np.mean(boot >= 0)))
    else:
        p = 1.0
    return BootstrapResult(observed, float(low), float(high), p, n, n_boot, level)


def benjamini_hochberg(pvalues: object) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), as R's ``p.adjust(p, "BH")``; NaNs stay NaN, uncounted."""
    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    finite = ~np.isnan(p)
    values = p[finite]
    if values.size == 0:
        return q
    if ((values < 0) | (values > 1)).any():
        raise PsylingError("p-values must lie in [0, 1]")
    m = values.size
    order = np.argsort(values)[::-1]  # largest first
    scaled = values[order] * m / np.arange(m, 0, -1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(scaled))
    out = np.empty(m)
    out[order] = adjusted
    q[finite] = out
    return q


def _require(table: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PsylingError(f"{name}: missing column(s) {', '.join(missing)}")


def _keyed(predictions: pd.DataFrame, keys: list[str], name: str) -> pd.DataFrame:
    table = predictions[keys + ["passed"]].copy()
    table["item"] = table["item"].astype(str)  # runs may store item ids as int or str
    dup = table.duplicated(keys)
    if dup.any():
        first = table.loc[dup, keys].iloc[0].tolist()
        raise PsylingError(f"{name}: {int(dup.sum())} duplicated prediction rows, e.g. {first}")
    return table


def compare_models(pred_a: pd.DataFrame, pred_b: pd.DataFrame, n_boot: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per set, compare two runs' item accuracy on the same stimuli (one row per set, columns COMPARE_COLUMNS).

    Predictions are paired on (set, item, prediction[, prediction_index]); an item passes when all its predictions
    hold (:func:`item_passes`). Items whose predictions are not all present in both runs are excluded from the
    comparison and counted in ``n_unpaired``. ``difference`` = accuracy_a - accuracy_b with its paired-bootstrap
    CI; ``mcnemar_p`` tests the discordant items; ``q_value`` is the BH adjustment of mcnemar_p across sets."""
    base = ["set", "item", "prediction", "passed"]
    _require(pred_a, base, "predictions A")
    _require(pred_b, base, "predictions B")
    keys = ["set", "item", "prediction"]
    if "prediction_index" in pred_a.columns and "prediction_index" in pred_b.columns:
        keys.append("prediction_index")
    merged = _keyed(pred_a, keys, "predictions A").merge(
        _keyed(pred_b, keys, "predictions B"), on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    one_sided = merged.loc[merged["_merge"] != "both", ["set", "item"]].drop_duplicates()
    unpaired = one_sided.groupby("set").size()
    paired = merged.merge(one_sided, on=["set", "item"], how="left", indicator="_side")
    paired = paired[paired["_side"] == "left_only"]
    items = item_passes(paired.rename(columns={"passed_a": "passed"})).merge(
        item_passes(paired.rename(columns={"passed_b": "passed"})), on=["set", "item"], suffixes=("_a", "_b"))
    sets = pd.unique(pd.concat([pred_a["set"], pred_b["set"]], ignore_index=True))
    rows = []
    for name in sets:
        table = items[items["set"] == name]
        a, b = table["passed_a"].to_numpy(bool), table["passed_b"].to_numpy(bool)
        n_unpaired = int(unpaired.get(name, 0))
        if len(a) == 0:
            rows.append((name, 0, n_unpaired) + (math.nan,) * 5 + (0, 0, math.nan))
            continue
        test = mcnemar(a, b)
        boot = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
        rows.append((name, len(a), n_unpaired, float(a.mean()), float(b.mean()), boot.difference,
                     boot.ci_low, boot.ci_high, test.b10, test.b01, test.p_value))
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS[:-1])
    out["q_value"] = benjamini_hochberg(out["mcnemar_p"].to_numpy())
    return out


def accuracy_by(predictions: pd.DataFrame, sets_meta: pd.DataFrame, by: str = "phenomenon") -> pd.DataFrame:
    """Item accuracy pooled over the sets of each ``by`` group (sets_meta: set -> group), Wilson 95% CI.

    An item passes when all its predictions hold. Items are pooled across sets (a micro-average); the Wilson
    interval treats items as independent. Every set in ``predictions`` must appear in ``sets_meta``."""
    _require(predictions, ["set", "item", "passed"], "predictions")
    _require(sets_meta, ["set", by], "sets metadata")
    meta = sets_meta[["set", by]]
    dup = meta["set"][meta["set"].duplicated()]
    if len(dup):
        raise PsylingError(f"sets metadata: set(s) listed twice: {', '.join(map(str, dup.unique()[:5]))}")
    unknown = sorted(set(predictions["set"]) - set(meta["set"]))
    if unknown:
        raise PsylingError(f"sets metadata: no {by} for set(s) {', '.join(map(str, unknown[:5]))}"
                           + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    items = item_passes(predictions).merge(meta, on="set")
    rows = []
    for group, table in items.groupby(by, dropna=False):
        n, k = len(table), int(table["passed"].sum())
        low, high = wilson_interval(k, n)
        rows.append((group, table["set"].nunique(), n, k, k / n, low, high))
    return pd.DataFrame(rows, columns=[by] + ACCURACY_BY_COLUMNS)
