"""The mixed-model engine (psyling.stats.lmm) against lme4 (tests/r_oracle.py, lme4 run through Rscript) on
dietox, synthetic crossed designs and a 2x2 design with by-item correlated slopes, singular fits included."""
import importlib.resources

import numpy as np
import pandas as pd
import pytest

from psyling.stats import lmm
from psyling.stats.lmm import LinearMixedModel, MixedModelError, OptimiserSettings, RandomTerm

from psyling.stats.lmer import lmer
from r_oracle import R_MISSING, differences, from_psyling, lmer_best, lmer_many

needs_r = pytest.mark.skipif(R_MISSING is not None, reason=f"lme4 oracle unavailable: {R_MISSING}")
CONDITIONS = ["(Intercept)", "a", "b", "a:b"]


def dietox() -> pd.DataFrame:
    frame = pd.read_csv(importlib.resources.files("statsmodels") / "regression/tests/results/dietox.csv")
    return frame[["Weight", "Time", "Pig"]].assign(Pig=frame["Pig"].astype(str))


def two_by_two(seed: int, slope_sd: tuple[float, float, float]) -> pd.DataFrame:
    """24 items x 4 conditions (a, b: -0.5/+0.5), one observation per cell; by-item slopes with ``slope_sd``."""
    rng = np.random.default_rng(seed)
    items = np.repeat(np.arange(24), 4)
    a, b = np.tile([-0.5, -0.5, 0.5, 0.5], 24), np.tile([-0.5, 0.5, -0.5, 0.5], 24)
    effects = rng.normal(size=(24, 4)) * np.array([1.0, *slope_sd])
    y = (1 + 0.8 * a + 0.3 * b + 0.2 * a * b + effects[items, 0] + effects[items, 1] * a + effects[items, 2] * b
         + effects[items, 3] * a * b + rng.normal(size=96) * 0.7)
    return pd.DataFrame({"y": y, "a": a, "b": b, "item": [f"i{i:02d}" for i in items]})


def crossed(seed: int = 5, subjects: int = 40, items: int = 25, per_subject: int = 15) -> pd.DataFrame:
    """Each subject sees ``per_subject`` of the items; random intercepts and slopes of x for both."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(subjects), per_subject)
    item = np.concatenate([rng.choice(items, per_subject, replace=False) for _ in range(subjects)])
    x = rng.normal(size=len(subject))
    s_int, s_slope = rng.normal(size=(2, subjects)) * [[3.0], [0.8]]
    i_int, i_slope = rng.normal(size=(2, items)) * [[2.0], [0.6]]
    y = 10 + 1.5 * x + s_int[subject] + s_slope[subject] * x + i_int[item] + i_slope[item] * x
    y += rng.normal(size=len(subject)) * 2.0
    return pd.DataFrame({"y": y, "x": x, "subject": [f"s{s:02d}" for s in subject],
                         "item": [f"w{i:02d}" for i in item]})


def columns(frame: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """The design columns named as in lme4: (Intercept), variables, products a:b."""
    def one(name: str) -> np.ndarray:
        if name == "(Intercept)":
            return np.ones(len(frame))
        return np.prod([frame[part].to_numpy(float) for part in name.split(":")], axis=0)
    return np.column_stack([one(name) for name in names])


def model(frame: pd.DataFrame, response: str, fixed: tuple[str, ...], terms: list[tuple[str, tuple[str, ...]]],
          reml: bool) -> LinearMixedModel:
    """The model of ``frame``: fixed-effect columns and (columns | group) terms, in lme4's order."""
    random = [RandomTerm(group, pd.factorize(frame[group], sort=True)[0], columns(frame, names), names)
              for group, names in terms]
    return LinearMixedModel(frame[response].to_numpy(float), columns(frame, fixed), fixed, random, reml=reml)


def as_oracle(fit) -> dict:
    """The fit in r_oracle.lmer's shape, for r_oracle.differences."""
    varcor = [{"grp": r.group, "var1": r.name1, "var2": r.name2, "vcov": r.vcov, "sdcor": r.sd_cor}
              for r in fit.covariance.itertuples()]
    return {"loglik": fit.loglik, "is_singular": fit.singular, "fixef": dict(zip(fit.x_names, fit.beta)),
            "se": dict(zip(fit.x_names, fit.std_errors)), "varcor": varcor}


# name -> (frame, lme4 formula, response, fixed columns, random terms)
CASES = {
    "dietox_intercept": (dietox(), "Weight ~ Time + (1 | Pig)", "Weight", ("(Intercept)", "Time"),
                         [("Pig", ("(Intercept)",))]),
    "dietox_slope": (dietox(), "Weight ~ Time + (1 + Time | Pig)", "Weight", ("(Intercept)", "Time"),
                     [("Pig", ("(Intercept)", "Time"))]),
    "2x2_singular": (two_by_two(1, (0.5, 0.4, 0.0)), "y ~ a * b + (1 + a + b | item)", "y", tuple(CONDITIONS),
                     [("item", ("(Intercept)", "a", "b"))]),
    "2x2_singular_slope": (two_by_two(2, (0.0, 0.0, 0.0)), "y ~ a * b + (1 + a | item)", "y", tuple(CONDITIONS),
                           [("item", ("(Intercept)", "a"))]),
    "2x2_slopes": (two_by_two(3, (0.6, 0.5, 0.3)), "y ~ a * b + (1 + a + b | item)", "y", tuple(CONDITIONS),
                   [("item", ("(Intercept)", "a", "b"))]),
    "crossed_intercepts": (crossed(), "y ~ x + (1 | subject) + (1 | item)", "y", ("(Intercept)", "x"),
                           [("subject", ("(Intercept)",)), ("item", ("(Intercept)",))]),
    "crossed_slopes": (crossed(), "y ~ x + (1 + x | subject) + (1 + x | item)", "y", ("(Intercept)", "x"),
                       [("subject", ("(Intercept)", "x")), ("item", ("(Intercept)", "x"))]),
    "uncorrelated_and_crossed": (crossed(), "y ~ x + (1 | subject) + (0 + x | subject) + (1 | item)", "y",
                                 ("(Intercept)", "x"), [("subject", ("(Intercept)",)), ("subject", ("x",)),
                                                        ("item", ("(Intercept)",))]),
}
SINGULAR = {"2x2_singular": ("b | item",), "2x2_singular_slope": ("a | item",)}
RUNS = [(name, reml) for name in CASES for reml in (False, True)]


@pytest.fixture(scope="module")
def lme4() -> dict:
    """lme4's fit of every case, ML and REML, from one R process."""
    if R_MISSING:
        pytest.skip(f"lme4 oracle unavailable: {R_MISSING}")
    results = lmer_many([(CASES[name][0], CASES[name][1], reml) for name, reml in RUNS])
    return dict(zip(RUNS, results))


def case_model(name: str, reml: bool) -> LinearMixedModel:
    frame, _, response, fixed, terms = CASES[name]
    return model(frame, response, fixed, terms, reml)


@pytest.fixture(scope="module")
def fits() -> dict:
    return {(name, reml): case_model(name, reml).fit() for name, reml in RUNS}


@needs_r
@pytest.mark.parametrize("name, reml", RUNS)
def test_fit_equals_lme4(name, reml, fits, lme4):
    fit, reference = fits[name, reml], lme4[name, reml]
    assert differences(as_oracle(fit), reference) == []
    np.testing.assert_allclose(fit.theta, reference["theta"], atol=2e-3)
    np.testing.assert_allclose(fit.sigma, reference["sigma"], rtol=1e-4)
    assert fit.converged and fit.optimum_check < 1e-3 and fit.reml == reml
    assert fit.singular_terms == SINGULAR.get(name, ())
    assert fit.n_obs == len(CASES[name][0])


@pytest.fixture(scope="module")
def lme4_best() -> dict:
    """lme4's best optimum over its optimizers: a p of 1e-74 moves in its third digit when the default stops 4e-8
    nats short (dietox_slope), so df and p are compared there."""
    if R_MISSING:
        pytest.skip(f"lme4 oracle unavailable: {R_MISSING}")
    return dict(zip(RUNS, lmer_best([(CASES[name][0], CASES[name][1], reml) for name, reml in RUNS])))


@needs_r
@pytest.mark.parametrize("name, reml", RUNS)
def test_formula_fit_with_satterthwaite_equals_lmertest(name, reml, lme4_best):
    """The lme4 formula through psyling.stats.lmer: the same fit, plus lmerTest's df and p to 3 digits."""
    frame, formula = CASES[name][:2]
    assert differences(from_psyling(lmer(frame, formula, reml=reml, simplify=False)), lme4_best[name, reml]) == []


@pytest.mark.parametrize("name", ["dietox_slope", "2x2_slopes", "crossed_slopes"])
@pytest.mark.parametrize("reml", [False, True])
def test_varpar_deviance_and_vcov_at_the_optimum(name, reml, fits):
    """deviance_varpar at (theta, sigma-hat) is the profiled deviance, and sigma-hat minimises it."""
    lmm, fit = case_model(name, reml), fits[name, reml]
    assert lmm.deviance_varpar(fit.varpar) == pytest.approx(fit.deviance, abs=1e-8)
    for factor in (0.99, 1.01):
        assert lmm.deviance_varpar(fit.varpar * np.append(np.ones(lmm.n_theta), factor)) > fit.deviance + 1e-6
    np.testing.assert_allclose(lmm.vcov_beta(fit.varpar), fit.vcov_beta, rtol=1e-12)
    np.testing.assert_allclose(lmm.vcov_beta(np.append(fit.theta, 2 * fit.sigma)), 4 * fit.vcov_beta, rtol=1e-10)


def test_covariance_table_is_lme4s_layout(fits):
    table = fits["crossed_slopes", True].covariance
    assert list(table.columns) == ["group", "name1", "name2", "vcov", "sd_cor"]
    assert list(table["group"]) == ["subject"] * 3 + ["item"] * 3 + ["Residual"]
    assert list(table["name2"]) == [None, None, "x", None, None, "x", None]
    theta, sigma = fits["crossed_slopes", True].theta, fits["crossed_slopes", True].sigma
    t = np.array([[theta[0], 0], [theta[1], theta[2]]])
    cov = sigma ** 2 * t @ t.T
    np.testing.assert_allclose(table["vcov"][:3], [cov[0, 0], cov[1, 1], cov[1, 0]], rtol=1e-12)
    assert table["sd_cor"][2] == pytest.approx(cov[1, 0] / np.sqrt(cov[0, 0] * cov[1, 1]), rel=1e-12)
    assert table["vcov"].iloc[-1] == pytest.approx(sigma ** 2) and table["sd_cor"].iloc[-1] == pytest.approx(sigma)


def test_theta_layout_bounds_and_start():
    frame, _, response, fixed, terms = CASES["crossed_slopes"]
    lmm = model(frame, response, fixed, terms, reml=True)
    assert lmm.n_theta == 6 and lmm.q == 2 * 40 + 2 * 25 and (lmm.n, lmm.p) == (600, 2)
    np.testing.assert_array_equal(lmm.theta_start, [1, 0, 1, 1, 0, 1])
    np.testing.assert_array_equal(lmm.theta_lower, [0, -np.inf, 0, 0, -np.inf, 0])
    # the terms' order changes which one is eliminated, not the deviance
    swapped = model(frame, response, fixed, terms[::-1], reml=True)
    theta = np.array([0.9, -0.2, 0.4, 1.3, 0.3, 0.5])
    assert swapped.deviance(np.r_[theta[3:], theta[:3]]) == pytest.approx(lmm.deviance(theta), abs=1e-9)


def test_a_stopped_optimiser_is_not_converged():
    fit = case_model("dietox_slope", reml=False).fit(OptimiserSettings(max_evaluations=6))
    assert not fit.converged
    assert any("Nelder-Mead" in m for m in fit.messages) and any("optimum check failed" in m for m in fit.messages)


def test_the_check_rejects_a_point_below_the_maximum(fits):
    lmm, fit = case_model("crossed_intercepts", reml=False), fits["crossed_intercepts", False]
    assert lmm.check_optimum(fit.theta).passed(1e-3)
    off = lmm.check_optimum(fit.theta * [0.8, 1.2])
    assert not off.passed(1e-3) and off.largest_gradient > 1e-2 and off.largest_scaled > 1e-2


def test_bad_input_is_one_line_error():
    frame, _, response, fixed, terms = CASES["dietox_intercept"]
    codes = pd.factorize(frame["Pig"])[0]
    term = RandomTerm("Pig", codes, np.ones((len(frame), 1)), ("(Intercept)",))
    y = frame[response].to_numpy(float)
    with pytest.raises(MixedModelError, match="rank deficient"):
        LinearMixedModel(y, np.ones((len(frame), 2)), ["(Intercept)", "again"], [term])
    with pytest.raises(MixedModelError, match="'Pig': 2 names for 1 columns"):
        LinearMixedModel(y, np.ones((len(frame), 1)), ["(Intercept)"], [RandomTerm("Pig", codes, term.design,
                                                                                   ("a", "b"))])
    with pytest.raises(MixedModelError, match="finite"):
        LinearMixedModel(np.r_[np.nan, y[1:]], np.ones((len(frame), 1)), ["(Intercept)"], [term])


def test_dense_cross_products_when_level_pairs_would_be_too_many(monkeypatch):
    frame, _, response, fixed, terms = CASES["crossed_slopes"]
    sparse_pairs = model(frame, response, fixed, terms, reml=True)
    monkeypatch.setattr(lmm, "MAX_PAIRS", 0)
    dense = model(frame, response, fixed, terms, reml=True)
    assert dense._pairs.products is None and sparse_pairs._pairs.products is not None
    for theta in (dense.theta_start, np.array([0.9, -0.2, 0.4, 1.3, 0.3, 0.5])):
        assert dense.deviance(theta) == pytest.approx(sparse_pairs.deviance(theta), abs=1e-9)


@pytest.fixture(scope="module")
def sap_agreement(data) -> pd.DataFrame:
    """The SAP agreement trials with GPT-2 surprisal and the baseline predictors (as psyling.reproductions.sap),
    participant ids as released."""
    from psyling.reproductions.sap import RT_BASELINE, RT_PREDICTORS
    from psyling.stats.regression import baseline_predictors
    from psyling.stimuli.sap import SAP_FOLDER, load_sap_trial_surprisal

    trials = load_sap_trial_surprisal(data / SAP_FOLDER, "gpt2")
    joined = trials[(trials["subset"] == "Agreement") & (trials["join_status"] == "ok")]
    columns = ["RT_corrected"] + RT_BASELINE + RT_PREDICTORS
    return baseline_predictors(joined, "word", "word_pos").dropna(subset=columns)[columns + ["participant", "item"]]


def sap_frame(trials: pd.DataFrame, participants=None) -> pd.DataFrame:
    """The first ``participants`` participant ids in sorted order (all when None), groups as strings."""
    if participants is not None:
        trials = trials[trials["participant"].isin(sorted(trials["participant"].unique())[:participants])]
    return trials.assign(participant=trials["participant"].astype(str), item=trials["item"].astype(str))


def sap_model(frame: pd.DataFrame, reml: bool = False) -> LinearMixedModel:
    fixed = ("(Intercept)",) + tuple(frame.columns[1:-2])
    return model(frame, "RT_corrected", fixed, [("participant", ("(Intercept)",)), ("item", ("(Intercept)",))],
                 reml)


def test_sap_first_100_participants_reach_lme4s_maximum(sap_agreement):
    """Issue 15: statsmodels stopped 0.155 nats short here and said converged; lme4: -15079.857240."""
    fit = sap_model(sap_frame(sap_agreement, participants=100)).fit()
    assert fit.loglik == pytest.approx(-15079.857240, abs=1e-6)
    assert fit.converged and not fit.singular and fit.n_groups == {"participant": 100, "item": 18}


@needs_r
@pytest.mark.slow  # ~10 s: lme4 on 45k rows twice
def test_sap_all_participants_equal_lme4(sap_agreement):
    frame = sap_frame(sap_agreement)
    formula = ("RT_corrected ~ " + " + ".join(frame.columns[1:-2]) + " + (1 | participant) + (1 | item)")
    references = lmer_many([(frame, formula, False), (frame, formula, True)])
    for reml, reference in zip((False, True), references):
        fit = sap_model(frame, reml).fit()
        assert differences(as_oracle(fit), reference) == []
        assert fit.converged and fit.n_obs == len(frame) and fit.n_groups["participant"] == 2000
        # the formula front end with lmerTest's Satterthwaite df and p (to 3 significant digits)
        assert differences(from_psyling(lmer(frame, formula, reml=reml, simplify=False)), reference) == []
