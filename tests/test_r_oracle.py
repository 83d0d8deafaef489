"""The lme4 oracle itself (tests/r_oracle.py): published lme4 numbers, singular fits, factors, R errors; and the
acceptance cases (tests/lme4_cases.py) rebuilt from a run exactly as ``condition_effects`` fits them."""
import importlib.resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import psyling
from psyling.stats.mixed import condition_effects
from psyling.analysis import _critical_table, analysis_region
from psyling.runs import read_run, run_sets

from lme4_cases import core_condition_frames
from r_oracle import OPTIMIZERS, R_MISSING, ROracleError, differences, lmer, lmer_best, lmer_many

REPO = Path(__file__).resolve().parents[1]
CORE_SETS = ("garden_path_npz", "agreement_orc")

pytestmark = pytest.mark.skipif(R_MISSING is not None, reason=str(R_MISSING))


def _singular_frame() -> pd.DataFrame:
    """Every group has the same values: the between-group variance is 0 at the optimum (ML and REML)."""
    return pd.DataFrame({"y": np.tile([1.0, 2.5, 2.0, 4.0, 3.0], 8), "g": np.repeat([f"g{k}" for k in range(8)], 5)})


def _factor_frame() -> pd.DataFrame:
    """A digit-string factor (object column) crossed with 6 subjects, balanced: lme4's fixed effects are the
    differences of the dose means from the reference level "1" (levels sorted as strings: 1, 10, 2)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"dose": np.tile(["1", "2", "10"], 12), "subject": np.repeat(np.arange(6), 6)})
    frame["y"] = frame["dose"].map({"1": 0.0, "2": 1.0, "10": 3.0}) + rng.normal(size=36) + frame["subject"] * 0.5
    return frame


def _short_frame() -> pd.DataFrame:
    """A 2x2 design, 12 items, correlated by-item slopes, where lme4's default optimizer stops short (seed found
    by search: nloptwrap ends ~0.15 nats below bobyqa's maximum)."""
    rng = np.random.default_rng(11)
    items, a, b = np.repeat(np.arange(12), 4), np.tile([-.5, -.5, .5, .5], 12), np.tile([-.5, .5, -.5, .5], 12)
    u = rng.normal(size=(12, 3)) * [2, 0.3, 0.3]
    y = 1 + a + 0.5 * b + u[items, 0] + u[items, 1] * a + u[items, 2] * b + rng.normal(size=48)
    return pd.DataFrame(dict(y=y, item=[f"i{i}" for i in items], c0=a, c1=b, c2=a * b))


SHORT_FORMULA = "y ~ 1 + c0 + c1 + c2 + (1 + c0 + c1 | item)"


@pytest.fixture(scope="module")
def dietox():
    return pd.read_csv(importlib.resources.files("statsmodels") / "regression/tests/results/dietox.csv")


@pytest.fixture(scope="module")
def fits(dietox):
    """Six models in one R process: dietox ML and REML, the singular, factor (object and categorical) and
    stopping-short cases."""
    ordered = _factor_frame().assign(dose=lambda f: pd.Categorical(f["dose"], categories=["2", "1", "10"]))
    fitted = lmer_many([(dietox, "Weight ~ Time + (1 | Pig)", False), (dietox, "Weight ~ Time + (1 | Pig)", True),
                        (_singular_frame(), "y ~ 1 + (1 | g)"), (_factor_frame(), "y ~ dose + (1 | subject)"),
                        (ordered, "y ~ dose + (1 | subject)"), (_short_frame(), SHORT_FORMULA, False)])
    return dict(zip(("ml", "reml", "singular", "factor", "categorical", "short"), fitted))


def test_dietox_reproduces_published_lme4_numbers(fits, dietox):
    ml, reml = fits["ml"], fits["reml"]
    assert round(ml["loglik"], 3) == -2402.932
    assert ml["deviance"] == pytest.approx(-2 * ml["loglik"], rel=1e-12)  # ML: deviance(m)
    assert reml["deviance"] == pytest.approx(-2 * reml["loglik"], rel=1e-12)  # REML: REMLcrit(m)
    assert reml["loglik"] < ml["loglik"]
    assert reml["fixef"]["(Intercept)"] == pytest.approx(15.723523, abs=1e-6)
    assert reml["fixef"]["Time"] == pytest.approx(6.942505, abs=1e-6)
    assert set(reml["se"]) == set(reml["df"]) == set(reml["p"]) == {"(Intercept)", "Time"}
    # one random intercept: theta is sd(Pig) / sigma, and varcor lists it and the residual
    (pig, residual) = reml["varcor"]
    assert (pig["grp"], pig["var1"], pig["var2"], residual["grp"], residual["var1"]) == \
        ("Pig", "(Intercept)", None, "Residual", None)
    assert reml["theta"] == [pytest.approx(pig["sdcor"] / reml["sigma"], rel=1e-10)]
    assert residual["sdcor"] == pytest.approx(reml["sigma"], rel=1e-12)
    assert pig["vcov"] == pytest.approx(pig["sdcor"] ** 2, rel=1e-12)
    # Satterthwaite df of the intercept lies between the number of pigs - 1 and the observations - 2
    assert dietox["Pig"].nunique() - 1 < reml["df"]["(Intercept)"] < len(dietox) - 2 and not reml["is_singular"]
    assert ml["optimizer_messages"] == [] and reml["optimizer_messages"] == []


def test_singular_fit_is_reported_with_lme4s_message(fits):
    singular = fits["singular"]
    assert singular["is_singular"] is True and len(singular["theta"]) == 1 and 0 <= singular["theta"][0] < 1e-4
    assert singular["varcor"][0]["vcov"] < 1e-8 * singular["sigma"] ** 2
    assert any("singular" in m for m in singular["optimizer_messages"])
    y = _singular_frame()["y"]
    assert singular["fixef"]["(Intercept)"] == pytest.approx(y.mean(), rel=1e-10)
    assert singular["sigma"] == pytest.approx(y.std(ddof=1), rel=1e-8)  # REML: the residual sd of the mean model


def test_a_string_column_stays_a_factor(fits):
    factor = fits["factor"]
    assert list(factor["fixef"]) == ["(Intercept)", "dose10", "dose2"]
    means = _factor_frame().groupby("dose")["y"].mean()
    assert factor["fixef"]["(Intercept)"] == pytest.approx(means["1"], rel=1e-7)
    assert factor["fixef"]["dose10"] == pytest.approx(means["10"] - means["1"], rel=1e-7)
    assert factor["fixef"]["dose2"] == pytest.approx(means["2"] - means["1"], rel=1e-7)
    categorical = fits["categorical"]["fixef"]  # a categorical keeps its own level order: "2" is the reference
    assert list(categorical) == ["(Intercept)", "dose1", "dose10"]
    assert categorical["dose1"] == pytest.approx(means["1"] - means["2"], rel=1e-7)


def test_differences_flag_what_leaves_the_acceptance_tolerances(fits):
    reference = fits["reml"]
    assert differences(reference, reference) == []
    near = dict(reference, loglik=reference["loglik"] + 5e-7, df={k: v * 1.0004 for k, v in reference["df"].items()})
    assert differences(near, reference) == []
    far = dict(reference, loglik=reference["loglik"] + 2e-6, is_singular=True,
               se={k: v * 1.001 for k, v in reference["se"].items()})
    found = differences(far, reference)
    assert len(found) == 4 and found[0].startswith("loglik") and found[1].startswith("is_singular")


def test_lmer_best_keeps_the_highest_optimum_of_lme4s_optimizers(fits, dietox):
    dietox_best, short_best = lmer_best([(dietox, "Weight ~ Time + (1 | Pig)"), (_short_frame(), SHORT_FORMULA)],
                                        reml=False)
    assert dietox_best["optimizer"] in OPTIMIZERS  # every optimizer reaches the same maximum
    assert 0 <= dietox_best["loglik"] - fits["ml"]["loglik"] < 1e-6
    assert short_best["optimizer"] != OPTIMIZERS[0] and short_best["loglik"] > fits["short"]["loglik"] + 0.1
    assert set(short_best) == set(fits["short"]) | {"optimizer"}


def test_r_errors_raise_with_rs_message(dietox):
    with pytest.raises(ROracleError, match="object 'Tme' not found"):
        lmer(dietox, "Weight ~ Tme + (1 | Pig)")


@pytest.fixture(scope="module")
def core_run(tmp_path_factory, bpe_llama):
    out = tmp_path_factory.mktemp("run")
    sets = [REPO / "stimuli" / "sets" / f"{name}.yaml" for name in CORE_SETS]
    psyling.run(bpe_llama, sets, out=out, progress=False, max_items=8)
    return out


def test_core_condition_frames_are_the_models_condition_effects_fits(core_run):
    cases = core_condition_frames(core_run)
    assert set(cases) == set(CORE_SETS)
    manifest, tables = read_run(core_run)
    sets = {s.name: s for s in run_sets(manifest, (), core_run)[0]}
    references = dict(zip(cases, lmer_many(list(cases.values()), reml=False)))
    for name, (frame, formula) in cases.items():
        stim = sets[name]
        region = analysis_region(stim)[0]
        fit = condition_effects(_critical_table(stim, tables["regions"], region),
                                {k: list(v) for k, v in stim.factors.items()}, region, list(stim.conditions))
        assert len(frame) == fit.n_obs == 32 and frame["item"].nunique() == 8
        assert formula.startswith("y ~ 1 + c0 + c1 + c2 + (1") and formula.endswith("| item)")
        labels = frame.attrs["labels"]
        assert set(labels.values()) == set(fit.coefficients["term"]) - {"Intercept"}
        # 2x2, balanced and complete: the ML fixed effects are the contrasts of the cell means whatever the
        # random effects, so lme4's and psyling's agree, coefficient by coefficient
        estimates = dict(zip(fit.coefficients["term"], fit.coefficients["estimate"]))
        lme4 = references[name]["fixef"]
        assert lme4["(Intercept)"] == pytest.approx(estimates["Intercept"], rel=1e-6)
        for column, label in labels.items():
            assert lme4[column] == pytest.approx(estimates[label], rel=1e-5, abs=1e-8)


def test_r_missing_names_the_reason(monkeypatch, tmp_path):
    from r_oracle import _r_missing
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _r_missing().startswith("Rscript not found on PATH")
