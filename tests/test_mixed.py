"""Mixed-effects models: lme4 reference values, the fallback ladder, crossed intercepts and condition effects."""
import importlib.resources
import warnings

import numpy as np
import pandas as pd
import pytest

from psyling.errors import PsylingError
from scipy import stats

from psyling.stats.lmer import lmer
from psyling.stats.mixed import condition_effects, crossed_intercepts

CONDITIONS = ["trans_nocomma", "trans_comma", "intrans_nocomma", "intrans_comma"]
FACTORS = {"verb": ["trans", "trans", "intrans", "intrans"], "comma": ["nocomma", "comma", "nocomma", "comma"]}
VERB, COMMA = np.array([-0.5, -0.5, 0.5, 0.5]), np.array([-0.5, 0.5, -0.5, 0.5])
TRUE = {"Intercept": 10.0, "verb": 2.0, "comma": -1.0, "verb:comma": 1.5}


@pytest.fixture(scope="module")
def dietox():
    return pd.read_csv(importlib.resources.files("statsmodels") / "regression/tests/results/dietox.csv")


def test_dietox_matches_lme4(dietox):
    # lme4: lmer(Weight ~ Time + (1 | Pig), dietox): REML fixed effects 15.723523, 6.942505; ML logLik -2402.932
    reml = lmer(dietox, "Weight ~ Time + (1 | Pig)")
    est = dict(zip(reml.coefficients.term, reml.coefficients.estimate))
    assert f"{est['Intercept']:.4g}" == f"{15.723523:.4g}" and f"{est['Time']:.4g}" == f"{6.942505:.4g}"
    assert est["Intercept"] == pytest.approx(15.723523, abs=1e-4) and est["Time"] == pytest.approx(6.942505, abs=1e-5)
    assert (reml.method, reml.random_effects, reml.fallback, reml.converged) == ("REML", "(1 | Pig)", None, True)
    assert (reml.n_obs, reml.n_groups, reml.n_dropped) == (861, {"Pig": 72}, 0)
    ml = lmer(dietox, "Weight ~ Time + (1 | Pig)", reml=False)
    assert round(ml.loglik, 3) == -2402.932
    assert ml.aic == pytest.approx(-2 * -2402.932 + 2 * 4, abs=1e-3)  # 2 fixed effects, 1 variance, residual
    row = ml.coefficients.set_index("term").loc["Time"]
    assert row.ci_low == pytest.approx(row.estimate - stats.t.ppf(0.975, row.df) * row.std_error)
    assert row.t == pytest.approx(row.estimate / row.std_error)


def test_missing_values_are_dropped_and_counted(dietox):
    data = dietox.copy()
    data.loc[[3, 10, 20], "Weight"] = np.nan
    data.loc[5, "Feed"] = np.nan  # not in the model: kept
    fit = lmer(data, "Weight ~ Time + (1 | Pig)")
    assert (fit.n_obs, fit.n_dropped) == (858, 3)
    with pytest.raises(PsylingError, match="grouping column 'pig'"):
        lmer(dietox, "Weight ~ Time + (1 | pig)")
    with pytest.raises(PsylingError, match="cannot build the fixed effects 'Tme'"):
        lmer(dietox, "Weight ~ Tme + (1 | Pig)")


def _groups(seed: int, n_groups: int = 30, per: int = 8):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=g.size)
    e = rng.normal(size=g.size)
    return rng, g, x, e


def test_zero_group_variance_falls_back_to_ols_without_printing(capfd):
    rng, g, x, e = _groups(1)
    e -= pd.Series(e).groupby(g).transform("mean").to_numpy()  # identical group means: between-group variance 0
    data = pd.DataFrame({"g": g, "x": x, "y": 1 + 2 * x + e})
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        fit = lmer(data, "y ~ x + (1 | g)", reml=False)
    assert not leaked and capfd.readouterr() == ("", "")
    assert fit.method == "OLS" and fit.random_effects == "none (OLS)"
    assert fit.fallback.startswith("(1 | g): ") and fit.fallback.endswith("fitted OLS (no random effects) instead")
    assert fit.warnings  # recorded, not printed
    beta = np.linalg.lstsq(np.column_stack([np.ones(len(x)), x]), data.y, rcond=None)[0]
    np.testing.assert_allclose(fit.coefficients.estimate, beta, rtol=1e-10)


def test_singular_random_slope_falls_back_to_intercepts():
    rng, g, x, e = _groups(2)
    for k in range(30):  # residuals orthogonal to (1, x) within each group: every group has slope exactly 2
        rows = g == k
        design = np.column_stack([np.ones(rows.sum()), x[rows]])
        e[rows] -= design @ np.linalg.lstsq(design, e[rows], rcond=None)[0]
    data = pd.DataFrame({"g": g, "x": x, "y": 1 + 2 * x + rng.normal(size=30)[g] + e})
    fit = lmer(data, "y ~ x + (1 + x | g)")
    assert fit.random_effects == "(1 | g)" and fit.method == "REML"
    assert fit.fallback.startswith("(1 + x | g): singular fit (x | g at the boundary)") and fit.singular
    assert fit.fallback.endswith("fitted (1 | g) instead")
    intercepts = lmer(data, "y ~ x + (1 | g)")  # the fallback is exactly the random-intercept model
    np.testing.assert_allclose(fit.coefficients.estimate, intercepts.coefficients.estimate, rtol=1e-8)
    assert fit.loglik == pytest.approx(intercepts.loglik)


def test_aliased_fixed_effect_is_dropped_with_a_note(dietox):
    data = dietox.assign(Time2=2 * dietox.Time)
    fit = lmer(data, "Weight ~ Time + Time2 + (1 | Pig)")
    assert list(fit.coefficients.term) == ["Intercept", "Time"]
    assert fit.fallback.startswith("dropped aliased fixed-effect column(s) Time2")
    assert fit.coefficients.estimate[1] == pytest.approx(6.942505, abs=1e-5)


def test_crossed_intercepts_equal_anova_estimates_in_a_balanced_design():
    rng = np.random.default_rng(5)
    n_subj, n_item = 20, 16
    s, i = np.repeat(np.arange(n_subj), n_item), np.tile(np.arange(n_item), n_subj)
    y = 3 + rng.normal(0, 1.0, n_subj)[s] + rng.normal(0, 0.7, n_item)[i] + rng.normal(0, 0.5, s.size)
    fit = crossed_intercepts(pd.DataFrame({"subject": s, "item": i, "y": y}), "y ~ 1", ["subject", "item"])
    assert fit.random_effects == "(1 | subject) + (1 | item)" and fit.fallback is None
    assert fit.n_groups == {"subject": 20, "item": 16}
    # balanced two-way crossed design: REML = the ANOVA (expected mean squares) estimators when positive
    cells = y.reshape(n_subj, n_item)
    ms_subj = n_item * np.var(cells.mean(axis=1), ddof=1)
    ms_item = n_subj * np.var(cells.mean(axis=0), ddof=1)
    resid = cells - cells.mean(axis=1, keepdims=True) - cells.mean(axis=0, keepdims=True) + cells.mean()
    ms_err = (resid ** 2).sum() / ((n_subj - 1) * (n_item - 1))
    assert fit.variances["subject|(Intercept)"] == pytest.approx((ms_subj - ms_err) / n_item, rel=1e-3)
    assert fit.variances["item|(Intercept)"] == pytest.approx((ms_item - ms_err) / n_subj, rel=1e-3)
    assert fit.variances["Residual"] == pytest.approx(ms_err, rel=1e-3)
    assert fit.coefficients.estimate[0] == pytest.approx(y.mean(), abs=1e-6)


def _regions(seed: int = 3, n_items: int = 32, between: bool = False) -> pd.DataFrame:
    """A simulated 2x2 region table with by-item intercepts and verb slopes; `between`: items see one verb type."""
    rng = np.random.default_rng(seed)
    u, slope = rng.normal(0, 1.0, n_items), rng.normal(0, 0.8, n_items)
    rows = []
    for item in range(n_items):
        for c, cond in enumerate(CONDITIONS):
            if between and (VERB[c] > 0) != (item % 2 == 1):
                continue
            y = (TRUE["Intercept"] + TRUE["verb"] * VERB[c] + TRUE["comma"] * COMMA[c]
                 + TRUE["verb:comma"] * VERB[c] * COMMA[c] + u[item] + slope[item] * VERB[c] + rng.normal(0, 0.7))
            rows.append(("gp", f"i{item}", cond, 1, "critical", y, y + 0.5))
            rows.append(("gp", f"i{item}", cond, 2, "spillover", 0.0, 0.0))
    return pd.DataFrame(rows, columns=["set", "item", "condition", "region_number", "region", "surprisal",
                                       "surprisal_raw"])


def _contrasts(regions: pd.DataFrame) -> dict[str, float]:
    m = regions[regions.region == "critical"].groupby("condition").surprisal.mean()
    return {"Intercept": m.mean(),
            "verb": (m.intrans_nocomma + m.intrans_comma - m.trans_nocomma - m.trans_comma) / 2,
            "comma": (m.trans_comma + m.intrans_comma - m.trans_nocomma - m.intrans_nocomma) / 2,
            "verb:comma": (m.intrans_comma - m.intrans_nocomma) - (m.trans_comma - m.trans_nocomma)}


def test_condition_effects_recovers_a_simulated_2x2():
    regions = _regions()
    fit = condition_effects(regions, FACTORS, "critical", CONDITIONS)
    table = fit.coefficients.set_index("term")
    assert list(table.index) == ["Intercept", "verb", "comma", "verb:comma"]
    for term, value in TRUE.items():
        assert abs(table.loc[term, "estimate"] - value) < 3 * table.loc[term, "std_error"], term
    # balanced, complete data with a saturated fixed part: GLS estimates are the cell-mean contrasts
    for term, value in _contrasts(regions).items():
        assert table.loc[term, "estimate"] == pytest.approx(value, abs=1e-4), term
    assert table.loc["verb", "coding"] == "deviation -0.5/+0.5: intrans - trans"
    assert table.loc["verb:comma", "coding"] == "interaction: (intrans - trans) x (comma - nocomma)"
    assert fit.method == "ML" and (fit.n_obs, fit.n_groups) == (128, {"item": 32})
    # 4 cells per item: intercept + verb + comma slopes (q = 3 < 4) are identifiable, the verb:comma slope is not
    assert fit.fallback.startswith("by-item random slopes for verb:comma omitted: not identifiable")
    assert fit.random_effects in ("(1 + verb + comma | item)", "(1 | item)")


def test_condition_effects_treatment_coding_and_missing_values():
    regions = _regions()
    regions.loc[(regions.region == "critical") & (regions.item == "i0") & (regions.condition == "trans_comma"),
                "surprisal"] = np.nan
    fit = condition_effects(regions, None, "critical", CONDITIONS)
    assert (fit.n_dropped, fit.n_obs) == (1, 127)
    table = fit.coefficients.set_index("term")
    assert list(table.index) == ["Intercept", "condition[trans_comma]", "condition[intrans_nocomma]",
                                 "condition[intrans_comma]"]
    assert table.loc["Intercept", "coding"] == "treatment: mean of trans_nocomma (reference)"
    assert "random slopes for condition omitted" in fit.fallback and fit.random_effects == "(1 | item)"
    complete = _regions()  # without the missing cell, the estimates are the condition mean differences
    full = condition_effects(complete, None, "critical", CONDITIONS).coefficients.set_index("term").estimate
    m = complete[complete.region == "critical"].groupby("condition").surprisal.mean()
    assert full["condition[intrans_comma]"] == pytest.approx(m.intrans_comma - m.trans_nocomma, abs=1e-4)


def test_between_item_factor_drops_random_slopes_with_a_message():
    regions = _regions(between=True)  # verb is constant within every item
    fit = condition_effects(regions, FACTORS, "critical", CONDITIONS)
    assert fit.fallback.startswith("by-item random slopes for verb, comma, verb:comma omitted")
    assert fit.random_effects == "(1 | item)"
    table = fit.coefficients.set_index("term")
    for term, value in TRUE.items():
        assert abs(table.loc[term, "estimate"] - value) < 3 * table.loc[term, "std_error"], term


def test_collinear_factors_yield_a_fallback_not_an_exception():
    factors = dict(FACTORS, copy=["a", "a", "b", "b"])  # the same split as verb
    fit = condition_effects(_regions(), factors, "critical", CONDITIONS)
    assert "dropped aliased fixed-effect column(s) copy, verb:copy, comma:copy, verb:comma:copy" in fit.fallback
    table = fit.coefficients.set_index("term")
    assert list(table.index) == ["Intercept", "verb", "comma", "verb:comma"]
    assert table.loc["verb", "estimate"] == pytest.approx(_contrasts(_regions())["verb"], abs=1e-4)


def test_condition_effects_errors_name_what_is_missing():
    regions = _regions()
    with pytest.raises(PsylingError, match="set gp: no region 'verb' \\(regions: critical, spillover\\)"):
        condition_effects(regions, FACTORS, "verb", CONDITIONS)
    with pytest.raises(PsylingError, match="no condition\\(s\\) intrans_coma"):
        condition_effects(regions, FACTORS, "critical", CONDITIONS[:3] + ["intrans_coma"])
    with pytest.raises(PsylingError, match="factor 'verb' gives 3 levels for 4 conditions"):
        condition_effects(regions, {"verb": ["a", "a", "b"]}, "critical", CONDITIONS)
