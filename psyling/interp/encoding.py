"""Encoding models per layer: cross-validated ridge regression from word-aligned activations to a human measure
(e.g. N400 amplitude or reading time per word), its gain over a baseline (length, frequency), a Freedman-Lane
permutation test, and a split-half noise ceiling where per-subject data exist."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import PsylingError
from ..stats.compare import benjamini_hochberg
from .probes import check_features, group_folds, group_permutation, site_layer, site_matrix

ALPHAS = np.logspace(-1, 5, 13)
ENCODING_COLUMNS = ["site", "layer", "r2", "r2_baseline", "delta_r2", "p_value", "q_value", "alpha", "n", "n_groups",
                    "n_excluded"]


def _baseline_matrix(baseline: object, n: int) -> np.ndarray:
    """[n, k+1]: an intercept column and the baseline predictors (none when ``baseline`` is None)."""
    if baseline is None:
        return np.ones((n, 1))
    values = np.asarray(baseline, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2 or values.shape[0] != n:
        raise PsylingError(f"encode_layers: baseline has shape {np.shape(baseline)}, expected [{n}] or [{n}, k]")
    return np.column_stack([np.ones(n), values])


def _r2(observed: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pooled out-of-fold R^2 per column of ``observed`` / ``predicted`` ([n, m])."""
    total = ((observed - observed.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ((observed - predicted) ** 2).sum(axis=0) / total


def _thin_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U [n, r], s [r], V [d, r] of ``x`` through the eigendecomposition of the smaller Gram matrix (faster than
    an SVD); directions with s^2 below 1e-12 of the largest are dropped."""
    wide = x.shape[0] < x.shape[1]
    squared, vectors = np.linalg.eigh(x @ x.T if wide else x.T @ x)
    keep = squared > squared.max() * 1e-12
    s, vectors = np.sqrt(squared[keep]), vectors[:, keep]
    other = (x.T if wide else x) @ vectors / s
    return (vectors, s, other) if wide else (other, s, vectors)


def ridge_gcv(x: np.ndarray, y: np.ndarray, alphas: np.ndarray, used_dof: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Ridge coefficients [d, m] (no intercept) for each column of ``y`` [n, m], each with the penalty from
    ``alphas`` that minimises generalised cross-validation, n RSS / (n - used_dof - df)^2 (Golub, Heath & Wahba
    1979; df = trace of the hat matrix, ``used_dof``: parameters already fitted, e.g. a projected-out baseline).
    One thin SVD serves every penalty and every column; also returns the chosen penalty per column."""
    u, s, v = _thin_svd(x)
    projected = u.T @ y
    outside = np.maximum((y ** 2).sum(axis=0) - (projected ** 2).sum(axis=0), 0.0)  # RSS outside x's columns
    squared, n = s ** 2, len(x)
    scores = []
    for alpha in alphas:
        rss = outside + (((alpha / (squared + alpha))[:, None] * projected) ** 2).sum(axis=0)
        remaining = n - used_dof - (squared / (squared + alpha)).sum()
        scores.append(n * rss / remaining ** 2 if remaining > 0 else np.full(y.shape[1], np.inf))
    chosen = alphas[np.argmin(np.array(scores), axis=0)]
    return v @ ((s[:, None] / (squared[:, None] + chosen[None, :])) * projected), chosen


def encode_layers(features: dict[str, np.ndarray], target: np.ndarray, groups: np.ndarray,
                  baseline: np.ndarray | None = None, folds: int = 10, alphas: Sequence[float] = ALPHAS,
                  n_permutations: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per activation site, how well cross-validated ridge regression predicts ``target`` (one value per row of the
    feature arrays) beyond ``baseline`` ([n] or [n, k] predictors, e.g. word length and log frequency); one row per
    site (ENCODING_COLUMNS).

    Folds: GroupKFold on ``groups`` (e.g. sentence or story), so no group is both fitted and predicted. Model:
    target = baseline (unpenalised, with intercept) + standardised activations (ridge), fitted exactly by
    projecting the baseline out of activations and target (Frisch-Waugh-Lovell). The penalty is chosen per
    training fold and per target from ``alphas`` by generalised cross-validation (``ridge_gcv``: the
    rotation-invariant form of RidgeCV's leave-one-out criterion, one decomposition for all penalties and
    permutations; it leaves out rows, not groups, but the outer folds stay group-wise). No dimensionality
    reduction. ``r2``: pooled out-of-fold R^2 of that model; ``r2_baseline``: the baseline alone (OLS; intercept
    only without a baseline); ``delta_r2`` = r2 - r2_baseline. ``p_value``: Freedman-Lane permutation test of
    delta_r2: the baseline residuals (baseline fitted on all rows) are permuted with ``group_permutation``
    (shuffled within groups; whole groups trade with same-sized groups), added back to the baseline fit, and the
    whole cross-validation is rerun on each of ``n_permutations`` such targets; p = (1 + #null >= observed) /
    (1 + n_permutations). ``q_value``: Benjamini-Hochberg over sites. ``alpha``: median penalty chosen over folds.
    Rows with a missing target, group or baseline value are excluded and counted (``n_excluded``)."""
    target = np.asarray(target, dtype=float)
    if target.ndim != 1:
        raise PsylingError(f"encode_layers: target must be 1-dimensional, got shape {target.shape}")
    n_all = len(target)
    sites = check_features(features, n_all)
    groups = np.asarray(groups, dtype=object)
    if groups.shape != (n_all,):
        raise PsylingError(f"encode_layers: groups has shape {groups.shape}, expected [{n_all}]")
    design_all = _baseline_matrix(baseline, n_all)
    keep = np.isfinite(target) & ~pd.isna(groups) & np.isfinite(design_all).all(axis=1)
    rows = np.flatnonzero(keep)
    y, groups, design = target[rows], groups[rows], design_all[rows]
    if np.ptp(y) == 0:
        raise PsylingError("encode_layers: the target is constant")
    splits = group_folds(groups, folds)
    penalties = np.asarray(alphas, dtype=float)
    rng = np.random.default_rng(seed)
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    residual = y - fitted
    targets = np.column_stack([y] + [fitted + residual[group_permutation(groups, rng)]
                                     for _ in range(n_permutations)])
    projections = [np.linalg.pinv(design[train]) for train, _ in splits]
    baseline_pred = np.empty_like(targets)
    for (train, test), pinv in zip(splits, projections):
        baseline_pred[test] = design[test] @ (pinv @ targets[train])
    r2_baseline = _r2(targets, baseline_pred)
    records, pvalues = [], []
    for site in sites:
        x = site_matrix(features, site, rows)
        predicted = np.empty_like(targets)
        chosen = []
        for (train, test), pinv in zip(splits, projections):
            mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
            sd[sd == 0] = 1.0
            x_train, x_test = (x[train] - mean) / sd, (x[test] - mean) / sd
            b_train = design[train]
            coef, alpha = ridge_gcv(x_train - b_train @ (pinv @ x_train),
                                    targets[train] - b_train @ (pinv @ targets[train]), penalties, design.shape[1])
            beta_baseline = pinv @ (targets[train] - x_train @ coef)
            predicted[test] = design[test] @ beta_baseline + x_test @ coef
            chosen.append(alpha[0])
        delta = _r2(targets, predicted) - r2_baseline
        p = (1 + np.sum(delta[1:] >= delta[0] - 1e-12)) / (1 + n_permutations) if n_permutations else np.nan
        pvalues.append(p)
        records.append({"site": site, "layer": site_layer(site), "r2": delta[0] + r2_baseline[0],
                        "r2_baseline": r2_baseline[0], "delta_r2": delta[0], "p_value": p,
                        "alpha": float(np.median(chosen)), "n": len(rows), "n_groups": len(pd.unique(groups)),
                        "n_excluded": int((~keep).sum())})
    table = pd.DataFrame.from_records(records)
    table["q_value"] = benjamini_hochberg(pvalues)
    return table[ENCODING_COLUMNS]


def split_half_ceiling(per_subject: pd.DataFrame | None, unit: str | list[str] = "unit", subject: str = "subject",
                       value: str = "value", n_splits: int = 100, seed: int = 0) -> float:
    """Noise ceiling for the R^2 of predicting the subject-mean ``value`` per ``unit`` (e.g. word): the split-half
    correlation of unit means over random halves of the subjects, averaged over ``n_splits`` splits and
    Spearman-Brown corrected (2r / (1 + r)), i.e. the reliability of the full-sample mean.

    NaN when there are no per-subject data (``per_subject`` None or fewer than two subjects): the UCL corpus
    (de Varda et al. 2023 release of Frank et al. 2013/2015) provides only item means, so no ceiling is computed
    for it. Missing values are missing observations: each half's mean uses the subjects that have the unit, and
    units without data in both halves do not enter that split's correlation."""
    if per_subject is None:
        return float("nan")
    units = [unit] if isinstance(unit, str) else list(unit)
    missing = [c for c in units + [subject, value] if c not in per_subject.columns]
    if missing:
        raise PsylingError(f"split_half_ceiling: per-subject table lacks column(s) {', '.join(missing)}")
    matrix = per_subject.pivot_table(index=units, columns=subject, values=value, aggfunc="mean").to_numpy(float)
    if matrix.shape[1] < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    correlations = []
    for _ in range(n_splits):
        order = rng.permutation(matrix.shape[1])
        half = matrix.shape[1] // 2
        with warnings.catch_warnings():  # all-NaN rows (a unit no subject in the half saw) give NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            a = np.nanmean(matrix[:, order[:half]], axis=1)
            b = np.nanmean(matrix[:, order[half:]], axis=1)
        both = np.isfinite(a) & np.isfinite(b)
        if both.sum() > 2:
            correlations.append(np.corrcoef(a[both], b[both])[0, 1])
    if not correlations:
        return float("nan")
    r = float(np.mean(correlations))
    return 2 * r / (1 + r)
