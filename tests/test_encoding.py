"""Encoding models per layer on synthetic word-level data with a planted layer (psyling.interp.encoding)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold

from psyling.errors import PsylingError
from psyling.interp import encode_layers, split_half_ceiling
from psyling.report.interp_plots import layer_bars, layer_curve

N_SENTENCES, N_WORDS, DIM, PLANTED, FOLDS = 60, 8, 40, 3, 10


def synthetic(seed: int = 2) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """60 sentences x 8 words; target = 0.5 length - 1.0 frequency + 2 (resid.3 . w) + noise (sd 1.5)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(N_SENTENCES), N_WORDS)
    n = len(groups)
    length, frequency = rng.integers(2, 10, n).astype(float), rng.normal(4, 1, n)
    features = {f"resid.{k}": rng.normal(size=(n, DIM)).astype(np.float32) for k in range(6)}
    weights = rng.normal(size=DIM) / np.sqrt(DIM)
    target = 0.5 * length - 1.0 * frequency + 2.0 * features["resid.3"] @ weights + 1.5 * rng.normal(size=n)
    return features, target, groups, np.column_stack([length, frequency])


@pytest.fixture(scope="module")
def encoded():
    features, target, groups, baseline = synthetic()
    table = encode_layers(features, target, groups, baseline, folds=FOLDS, n_permutations=100, seed=0)
    return features, target, groups, baseline, table.set_index("layer")


def test_planted_layer_has_the_largest_gain(encoded):
    *_, table = encoded
    assert list(table["site"]) == [f"resid.{k}" for k in range(6)]
    assert table["delta_r2"].idxmax() == PLANTED
    assert table.loc[PLANTED, "delta_r2"] > 0.35
    assert (table["delta_r2"].drop(PLANTED).abs() < 0.02).all()
    assert np.allclose(table["r2"] - table["r2_baseline"], table["delta_r2"])
    assert (table["n"] == N_SENTENCES * N_WORDS).all() and (table["n_groups"] == N_SENTENCES).all()


def test_permutation_p_values(encoded):
    *_, table = encoded
    assert table.loc[PLANTED, "p_value"] == pytest.approx(1 / 101)
    assert table["p_value"].drop(PLANTED).median() > 0.2
    assert (table["q_value"].drop(PLANTED) > 0.1).all()


def test_baseline_r2_recomputed_by_ols(encoded):
    """r2_baseline equals plain OLS (intercept, length, frequency) fitted per group fold, pooled out of fold."""
    _, target, groups, baseline, table = encoded
    design = np.column_stack([np.ones(len(target)), baseline])
    predicted = np.empty_like(target)
    for train, test in GroupKFold(n_splits=FOLDS).split(design, target, groups):
        beta = np.linalg.lstsq(design[train], target[train], rcond=None)[0]
        predicted[test] = design[test] @ beta
    r2 = 1 - np.sum((target - predicted) ** 2) / np.sum((target - target.mean()) ** 2)
    assert np.allclose(table["r2_baseline"], r2, atol=1e-12)


def test_full_model_equals_partially_penalised_ridge(encoded):
    """With one penalty, the encoding model is ridge with an unpenalised baseline: solve the penalised normal
    equations directly (standardised activations, training-fold statistics) and compare the out-of-fold R^2."""
    features, target, groups, baseline, _ = encoded
    alpha = 300.0
    table = encode_layers({"resid.3": features["resid.3"]}, target, groups, baseline, folds=FOLDS, alphas=[alpha],
                          n_permutations=0)
    x = features["resid.3"].astype(float)
    design = np.column_stack([np.ones(len(target)), baseline])
    predicted = np.empty_like(target)
    for train, test in GroupKFold(n_splits=FOLDS).split(x, target, groups):
        mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
        full = np.column_stack([design, (x - mean) / sd])
        penalty = np.diag([0.0] * design.shape[1] + [alpha] * x.shape[1])
        beta = np.linalg.solve(full[train].T @ full[train] + penalty, full[train].T @ target[train])
        predicted[test] = full[test] @ beta
    r2 = 1 - np.sum((target - predicted) ** 2) / np.sum((target - target.mean()) ** 2)
    assert table["r2"].iloc[0] == pytest.approx(r2, abs=1e-10)
    assert table["alpha"].iloc[0] == alpha and np.isnan(table["p_value"].iloc[0])


def test_missing_values_are_counted_and_no_baseline(encoded):
    features, target, groups, _, _ = encoded
    holes = target.copy()
    holes[[0, 5, 17]] = np.nan
    table = encode_layers({"resid.3": features["resid.3"]}, holes, groups, None, folds=5, n_permutations=0)
    assert table["n_excluded"].iloc[0] == 3 and table["n"].iloc[0] == len(target) - 3
    # intercept-only baseline: out-of-fold prediction by the training mean, R^2 slightly below 0
    assert -0.05 < table["r2_baseline"].iloc[0] < 0
    with pytest.raises(PsylingError, match="5 folds need at least 5 groups"):
        encode_layers({"resid.3": features["resid.3"][:16]}, target[:16], groups[:16], folds=5)
    with pytest.raises(PsylingError, match="baseline has shape"):
        encode_layers(features, target, groups, np.ones((3, 2)))


def test_split_half_ceiling_matches_spearman_brown():
    """20 subjects, true values sd 1, subject noise sd sqrt(20): reliability of the mean = 1 / (1 + 20/20) = 0.5."""
    rng = np.random.default_rng(4)
    n_units, n_subjects = 3000, 20
    true = rng.normal(size=n_units)
    observed = true[:, None] + np.sqrt(20.0) * rng.normal(size=(n_units, n_subjects))
    long = pd.DataFrame({"unit": np.repeat(np.arange(n_units), n_subjects),
                         "subject": np.tile(np.arange(n_subjects), n_units), "value": observed.ravel()})
    long.loc[rng.random(len(long)) < 0.05, "value"] = np.nan  # missing observations
    assert split_half_ceiling(long, n_splits=20) == pytest.approx(0.5, abs=0.04)
    # item means only (the UCL corpus): no ceiling
    assert np.isnan(split_half_ceiling(None))
    assert np.isnan(split_half_ceiling(long[long["subject"] == 0]))


def test_layer_plots(encoded, tmp_path):
    *_, table = encoded
    wide = table.reset_index()
    for path in (layer_bars(wide, "delta_r2", tmp_path / "bars.png", "synthetic N400"),
                 layer_curve(wide, ["r2", "r2_baseline"], tmp_path / "curve.png", "synthetic N400")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
