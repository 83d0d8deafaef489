"""Surprisal -> reading time / ERP regressions: spillover, baseline predictors, cross-validated ΔLL, linking
slopes and the mixed-model likelihood-ratio test, on hand-computed and simulated data."""
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from wordfreq import zipf_frequency

from psyling.errors import PsylingError
from psyling.stats.regression import (add_spillover, baseline_predictors, delta_loglik, fit_linking,
                                      gaussian_loglik, mixed_delta_loglik)


def simulated(n_items=60, n_words=20, slope=5.0, seed=1):
    """Reading times that depend on length (2 ms/char) and, with ``slope``, on surprisal; noise SD 20 ms."""
    rng = np.random.default_rng(seed)
    n = n_items * n_words
    df = pd.DataFrame({"item": np.repeat(np.arange(n_items), n_words),
                       "word_index": np.tile(np.arange(n_words), n_items),
                       "length": rng.integers(1, 10, n).astype(float), "surprisal": rng.normal(5, 2, n)})
    df["rt"] = 300 + 2 * df["length"] + slope * df["surprisal"] + rng.normal(0, 20, n)
    return df


def test_gaussian_loglik_matches_the_normal_density():
    y, mean = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])
    expected = [-0.5 * math.log(4 * math.pi) - d * d / 4 for d in (0, 1, 2)]
    assert gaussian_loglik(y, mean, 2.0) == pytest.approx(expected, abs=1e-12)
    assert gaussian_loglik(y, mean, 2.0) == pytest.approx(stats.norm.logpdf(y, 1.0, math.sqrt(2.0)), abs=1e-12)


def test_delta_loglik_on_a_hand_computed_two_fold_case():
    # Item a: y rises with x, item b mirrors it. Trained on a: y = -0.1 + 0.9 x, RSS/n = 0.7/4 = 0.175; intercept
    # only: mean 1.25, variance 4.75/4 = 1.1875. Held-out residuals on b: full 3.1, 0.2, -0.7, -2.6 (sum of
    # squares 16.9); baseline 1.75, -0.25, -0.25, -1.25 (4.75). Fold b -> a is the mirror image.
    df = pd.DataFrame({"item": list("aaaabbbb"), "x": [0, 1, 2, 3] * 2, "y": [0, 1, 1, 3, 3, 1, 1, 0]})
    fit = delta_loglik(df, "y", [], ["x"], folds=2)
    expected = 0.5 * math.log(1.1875 / 0.175) - 0.5 * (16.9 / 4) / 0.175 + 0.5 * (4.75 / 4) / 1.1875
    assert fit.delta_ll == pytest.approx(expected, abs=1e-9)  # -10.614
    assert fit.per_token[:4].sum() == pytest.approx(fit.per_token[4:].sum(), abs=1e-9)
    assert fit.fold_delta_ll == pytest.approx([expected, expected], abs=1e-9) and fit.se == pytest.approx(0, abs=1e-9)
    assert fit.delta_ll_in_sample == pytest.approx(0.0, abs=1e-12)  # pooled slope is exactly 0
    assert fit.coefficients["x"] == pytest.approx(0.0, abs=1e-12)
    assert (fit.n, fit.n_dropped, fit.n_groups) == (8, 0, 2)


def test_delta_loglik_detects_a_real_predictor():
    df = simulated(slope=5.0)
    df.loc[[3, 50, 51, 400, 401, 402, 999], "surprisal"] = np.nan
    fit = delta_loglik(df, "rt", ["length"], ["surprisal"])
    # population value: 0.5 ln(1 + var(5 s) / 20^2) = 0.5 ln(1.25) = 0.1116 nats per token; the estimate from
    # 1,200 tokens has SE ~0.02 (the noise variance itself is estimated to ~4%)
    assert fit.delta_ll == pytest.approx(0.5 * math.log(1.25), abs=0.045)
    complete = df.dropna()
    full = sm.OLS(complete["rt"], sm.add_constant(complete[["length", "surprisal"]])).fit()
    base = sm.OLS(complete["rt"], sm.add_constant(complete[["length"]])).fit()
    assert fit.delta_ll_in_sample == pytest.approx((full.llf - base.llf) / len(complete), abs=1e-10)
    assert fit.coef_se["surprisal"] == pytest.approx(full.bse["surprisal"], rel=1e-8)
    assert fit.delta_ll > 5 * fit.se and fit.p_value < 1e-10
    assert fit.n_dropped == 7 and fit.n == len(df) - 7
    assert fit.coefficients["surprisal"] == pytest.approx(5.0, abs=3 * fit.coef_se["surprisal"])
    assert fit.coefficients["length"] == pytest.approx(2.0, abs=3 * fit.coef_se["length"])


def test_delta_loglik_of_an_irrelevant_predictor_is_zero_within_se():
    fit = delta_loglik(simulated(slope=0.0), "rt", ["length"], ["surprisal"])
    assert abs(fit.delta_ll) < 2 * fit.se and abs(fit.delta_ll) < 0.003
    assert fit.delta_ll_in_sample >= 0 and fit.p_value > 0.05


def test_delta_loglik_keeps_items_within_one_fold_and_reports_errors():
    df = simulated(n_items=12)
    one = delta_loglik(df, "rt", ["length"], ["surprisal"], folds=3, seed=4)
    shuffled = delta_loglik(df.sample(frac=1, random_state=0), "rt", ["length"], ["surprisal"], folds=3, seed=4)
    assert one.delta_ll == pytest.approx(shuffled.delta_ll, abs=1e-12)  # folds depend on items, not row order
    with pytest.raises(PsylingError, match="missing column"):
        delta_loglik(df, "rt", ["frequency"], ["surprisal"])
    with pytest.raises(PsylingError, match="12 groups cannot fill 20 folds"):
        delta_loglik(df, "rt", ["length"], ["surprisal"], folds=20)


def test_add_spillover_follows_word_positions_within_items():
    df = pd.DataFrame({"item": ["b", "a", "a", "a", "b", "a"], "word_index": [1, 2, 0, 1, 0, 4],
                       "s": [20.0, 3.0, 1.0, 2.0, 10.0, 5.0]})
    out = add_spillover(df, "s", lags=(1, 2))
    assert out["s_prev1"].tolist() == pytest.approx([10.0, 2.0, np.nan, 1.0, np.nan, np.nan], nan_ok=True)
    assert out["s_prev2"].tolist() == pytest.approx([np.nan, 1.0, np.nan, np.nan, np.nan, 3.0], nan_ok=True)
    ordered = add_spillover(df.sort_values(["item", "word_index"]), "s", lags=(1,), position=None)
    assert ordered["s_prev1"].tolist() == pytest.approx([np.nan, 1.0, 2.0, 3.0, np.nan, 10.0], nan_ok=True)
    with pytest.raises(PsylingError, match="not unique"):
        add_spillover(pd.concat([df, df]), "s")


def test_baseline_predictors():
    words = pd.DataFrame({"item": ["1"] * 3, "word_index": [0, 1, 2], "word": ["\"Hello,", "the", "cabinet."]})
    out = baseline_predictors(words)
    assert out["word_length"].tolist() == [5, 3, 7]
    assert out["zipf_freq"].tolist() == [zipf_frequency("hello", "en"), zipf_frequency("the", "en"),
                                         zipf_frequency("cabinet", "en")]
    assert out["zipf_freq"].iloc[1] > 7 > out["zipf_freq"].iloc[2] > 2  # "the" is the most frequent English word
    assert out["word_position"].tolist() == [0, 1, 2] and "word_length" not in words


def test_fit_linking_recovers_planted_slopes():
    rng = np.random.default_rng(7)
    df = simulated(n_items=100, slope=0.0, seed=3)
    df["zipf"] = rng.normal(4, 1, len(df))
    spill = add_spillover(df, "surprisal", lags=(1, 2))
    df["rt"] = (300 + 4 * spill["surprisal"] + 2 * spill["surprisal_prev1"].fillna(0)
                + 1 * spill["surprisal_prev2"].fillna(0) - 6 * df["zipf"] + rng.normal(0, 10, len(df)))
    link = fit_linking(df, "rt", baseline=["length", "zipf"])
    for lag, planted in {0: 4.0, 1: 2.0, 2: 1.0}.items():
        assert link.slopes[lag] == pytest.approx(planted, abs=max(3 * link.slope_se[lag], 0.1))
    assert link.baseline_coefficients["zipf"] == pytest.approx(-6.0, abs=0.3)
    assert link.n_dropped == 2 * 100 and link.n == len(df) - 200  # first two words of each item
    assert 0 < link.r_squared < 1


def crossed(n_subjects=10, n_items=30, effect=6.0, seed=5):
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(n_subjects), n_items)
    item = np.tile(np.arange(n_items), n_subjects)
    s = rng.normal(5, 2, n_items)[item]
    y = (300 + rng.normal(0, 30, n_subjects)[subject] + rng.normal(0, 15, n_items)[item] + effect * s
         + rng.normal(0, 25, len(item)))
    return pd.DataFrame({"subject": subject, "item": item, "s": s, "y": y, "one": rng.normal(size=len(item))})


def test_mixed_delta_loglik_is_the_exact_crossed_marginal_likelihood():
    df = crossed()
    fit = mixed_delta_loglik(df, "y", ["one"], ["s"])
    # the ML log-likelihood of the full model is the multivariate normal density of y with
    # covariance s2_subject Z_s Z_s' + s2_item Z_i Z_i' + s2 I at the fitted parameters
    zs = (df["subject"].to_numpy()[:, None] == np.arange(10)).astype(float)
    zi = (df["item"].to_numpy()[:, None] == np.arange(30)).astype(float)
    v = fit.variances
    cov = v["subject"] * zs @ zs.T + v["item"] * zi @ zi.T + v["residual"] * np.eye(len(df))
    c = fit.coefficients
    mean = c["Intercept"] + c["one"] * df["one"] + c["s"] * df["s"]
    assert fit.loglik_full == pytest.approx(stats.multivariate_normal.logpdf(df["y"], mean, cov), abs=1e-4)
    assert fit.converged and fit.n == 300 and (fit.n_subjects, fit.n_items) == (10, 30)
    assert fit.lr == pytest.approx(2 * (fit.loglik_full - fit.loglik_baseline))
    assert fit.p_value == pytest.approx(stats.chi2.sf(fit.lr, 1)) and fit.p_value < 0.01
    assert c["s"] == pytest.approx(6.0, abs=2.5)


def test_mixed_delta_loglik_of_an_irrelevant_predictor():
    fit = mixed_delta_loglik(crossed(effect=0.0, seed=6).assign(y=lambda d: d["y"].where(d.index != 3)),
                             "y", [], ["one"])
    assert fit.n_dropped == 1 and 0 <= fit.lr < 3.84 and fit.p_value > 0.05


@pytest.mark.parametrize("n_subjects,n_items", [(10, 30), (40, 8)])
def test_crossed_fit_is_the_normal_density_at_its_maximum(n_subjects, n_items):
    """Unbalanced crossed intercepts, whichever factor has more levels: the engine's log-likelihood is the
    multivariate normal density at its estimates, and no nearby variance values do better."""
    from psyling.stats.lmm import LinearMixedModel, RandomTerm

    df = crossed(n_subjects, n_items, seed=11).sample(frac=0.8, random_state=2).reset_index(drop=True)
    x = np.column_stack([np.ones(len(df)), df["s"], df["one"]])
    terms = [RandomTerm(c, pd.factorize(df[c], sort=True)[0], np.ones((len(df), 1)), ("(Intercept)",))
             for c in ("subject", "item")]
    fit = LinearMixedModel(df["y"].to_numpy(), x, ["Intercept", "s", "one"], terms, reml=False).fit()
    zs, zi = (pd.get_dummies(df[c], dtype=float).to_numpy() for c in ("subject", "item"))

    def loglik(v_subject, v_item, residual):
        cov = v_subject * zs @ zs.T + v_item * zi @ zi.T + residual * np.eye(len(df))
        inv = np.linalg.inv(cov)
        beta = np.linalg.solve(x.T @ inv @ x, x.T @ inv @ df["y"])
        return stats.multivariate_normal.logpdf(df["y"], x @ beta, cov)
    variances = fit.covariance.set_index("group")["vcov"]
    best = (variances["subject"], variances["item"], fit.sigma ** 2)
    assert fit.converged and fit.loglik == pytest.approx(loglik(*best), abs=1e-6)
    for k in range(3):
        for factor in (0.98, 1.02):
            moved = list(best)
            moved[k] *= factor
            assert loglik(*moved) < fit.loglik
