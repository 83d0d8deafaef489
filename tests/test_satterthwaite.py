"""Satterthwaite tests (psyling.stats.satterthwaite) against lmerTest, on a dense test-local lme4 reference model.

The reference (DenseLMM) is lme4's model by dense linear algebra, independent of psyling's engine: V = sigma^2 (I +
Z Lambda Lambda' Z'), beta by GLS, the profiled and varpar deviances of the spec. Each model is compared with
lmerTest's summary(lmer(...)) (tests/r_oracle.py) twice: at lme4's own (theta, sigma), which isolates the
Satterthwaite computation (df and p agree to ~1e-7 relative), and at the reference's own scipy optimum (3
significant digits). Contrasts are compared with lmerTest's contest1D (a small Rscript here: r_oracle fits
summary tables only). The numDeriv steps are compared with numDeriv itself."""
from __future__ import annotations

import importlib.resources
import json
import subprocess
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from psyling.errors import PsylingError
from psyling.stats.satterthwaite import (extrapolate, richardson_hessian, richardson_jacobian, satterthwaite,
                                         varpar_covariance)
from r_oracle import R_MISSING, lmer_many

CONTEST_SCRIPT = r"""
suppressMessages(library(lmerTest))
jobs <- jsonlite::fromJSON(commandArgs(trailingOnly = TRUE)[1], simplifyVector = FALSE)
cat(jsonlite::toJSON(lapply(jobs, function(job) {
  m <- lmer(as.formula(job$formula), data = read.csv(job$csv, stringsAsFactors = TRUE), REML = job$reml)
  lapply(job$contrasts, function(l) {
    r <- contest1D(m, unlist(l))
    sprintf("%.17g", c(r$Estimate, r$df, r[["Pr(>|t|)"]]))
  })
})))
"""
NUMDERIV_SCRIPT = r"""
f <- function(x) exp(x[1]) * sin(x[2] + 0.3) + x[1] * x[3]^3 + log(1 + x[2]^2)
g <- function(x) c(sin(x[1] * x[2]), x[3]^2 * exp(x[1]), x[1] + x[2] * x[3])
x <- c(0.5, 0, 2)
cat(sprintf("%.17g", c(numDeriv::hessian(f, x), numDeriv::jacobian(g, x))))
"""


def run_r(script: str, folder, *args: str) -> str:
    """stdout of an R script (skipping where R or its packages are missing)."""
    if R_MISSING:
        pytest.skip(R_MISSING)
    path = folder / "script.R"
    path.write_text(script)
    done = subprocess.run(["Rscript", "--vanilla", str(path), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


class DenseLMM:
    """lme4's linear mixed model by dense algebra; terms are (level codes, (n, k) random-effect columns)."""

    def __init__(self, y: np.ndarray, x: np.ndarray, terms: list[tuple[np.ndarray, np.ndarray]], reml: bool):
        self.y, self.x, self.reml = y, x, reml
        self.n, self.p = x.shape
        self.shapes = [(int(codes.max()) + 1, design.shape[1]) for codes, design in terms]
        self.z = np.hstack([_indicator_design(codes, design) for codes, design in terms])
        self.n_theta = sum(k * (k + 1) // 2 for _, k in self.shapes)

    def relative_factor(self, theta: np.ndarray) -> np.ndarray:
        """Lambda_theta: block diagonal, one lower-triangular k x k block per level (theta column-major)."""
        blocks, start = [], 0
        for levels, k in self.shapes:
            block, (cols, rows) = np.zeros((k, k)), np.triu_indices(k)
            block[rows, cols] = theta[start:start + len(rows)]
            blocks.append(np.kron(np.eye(levels), block))
            start += len(rows)
        return _block_diagonal(blocks)

    def solve(self, theta: np.ndarray) -> tuple[float, np.ndarray, float, np.ndarray]:
        """log|L|^2, beta, r2 and R_X'R_X at theta (penalised least squares)."""
        zl = self.z @ self.relative_factor(theta)
        a = zl.T @ zl + np.eye(zl.shape[1])
        a_zx, a_zy = np.linalg.solve(a, zl.T @ self.x), np.linalg.solve(a, zl.T @ self.y)
        rx = self.x.T @ self.x - self.x.T @ zl @ a_zx
        beta = np.linalg.solve(rx, self.x.T @ self.y - self.x.T @ zl @ a_zy)
        u = np.linalg.solve(a, zl.T @ (self.y - self.x @ beta))
        r2 = float(np.sum((self.y - self.x @ beta - zl @ u) ** 2) + u @ u)
        return float(np.linalg.slogdet(a)[1]), beta, r2, rx

    def deviance(self, theta: np.ndarray) -> float:
        """The profiled deviance (ML or REML) of the spec."""
        log_l, _, r2, rx = self.solve(theta)
        dof = self.n - self.p if self.reml else self.n
        return log_l + (np.linalg.slogdet(rx)[1] if self.reml else 0.0) + dof * (1 + np.log(2 * np.pi * r2 / dof))

    def deviance_varpar(self, varpar: np.ndarray) -> float:
        """lmerTest's devfun_vp: the deviance at (theta, sigma), beta at its conditional optimum."""
        log_l, _, r2, rx = self.solve(varpar[:-1])
        sigma2 = varpar[-1] ** 2
        ml = log_l + r2 / sigma2 + self.n * np.log(2 * np.pi * sigma2)
        return ml + np.linalg.slogdet(rx)[1] - self.p * np.log(2 * np.pi * sigma2) if self.reml else ml

    def vcov_beta(self, varpar: np.ndarray) -> np.ndarray:
        """sigma^2 (R_X'R_X)^-1 at theta."""
        return varpar[-1] ** 2 * np.linalg.inv(self.solve(varpar[:-1])[3])

    def at(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(varpar, beta) at theta, sigma at its profiled optimum."""
        _, beta, r2, _ = self.solve(theta)
        return np.append(theta, np.sqrt(r2 / (self.n - self.p if self.reml else self.n))), beta

    def fit(self) -> np.ndarray:
        """theta minimising the profiled deviance (lme4's start and bounds; L-BFGS-B, then Nelder-Mead)."""
        start, lower = np.zeros(self.n_theta), np.full(self.n_theta, -np.inf)
        start_index = 0
        for _, k in self.shapes:
            diagonal = start_index + np.cumsum(np.r_[0, np.arange(k, 1, -1)])
            start[diagonal], lower[diagonal] = 1.0, 0.0
            start_index += k * (k + 1) // 2
        bounds = list(zip(lower, [np.inf] * self.n_theta))
        first = optimize.minimize(self.deviance, start, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15})
        return optimize.minimize(self.deviance, first.x, method="Nelder-Mead", bounds=bounds,
                                 options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x


def _indicator_design(codes: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Z for one term: for each level, its k columns of ``design`` on that level's rows."""
    levels, k = int(codes.max()) + 1, design.shape[1]
    z = np.zeros((len(codes), levels * k))
    for j in range(k):
        z[np.arange(len(codes)), codes * k + j] = design[:, j]
    return z


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    size = sum(b.shape[0] for b in blocks)
    out, at = np.zeros((size, size)), 0
    for b in blocks:
        out[at:at + b.shape[0], at:at + b.shape[0]] = b
        at += b.shape[0]
    return out


@dataclass(frozen=True)
class Case:
    """One model: its data frame, lme4 formula, fixed-effect columns (R's names) and random term (group, columns)."""
    frame: pd.DataFrame
    formula: str
    fixed: dict[str, str]
    group: str
    random: tuple[str, ...]

    def model(self, reml: bool) -> DenseLMM:
        with_one = self.frame.assign(one=1.0)
        codes = pd.factorize(self.frame[self.group])[0]
        return DenseLMM(self.frame["y"].to_numpy(float), with_one[list(self.fixed.values())].to_numpy(float),
                        [(codes, with_one[list(self.random)].to_numpy(float))], reml)

    def coefficients(self, fit: dict, key: str) -> np.ndarray:
        """One of r_oracle's per-coefficient results, in our column order."""
        return np.array([fit[key][name] for name in self.fixed], dtype=float)


def dietox(random: tuple[str, ...]) -> Case:
    """statsmodels' dietox pigs, Weight ~ Time with by-pig random intercepts (and Time slopes)."""
    raw = pd.read_csv(importlib.resources.files("statsmodels") / "regression/tests/results/dietox.csv")
    frame = pd.DataFrame({"y": raw["Weight"], "Time": raw["Time"].astype(float), "Pig": "p" + raw["Pig"].astype(str)})
    bar = "1" if random == ("one",) else "1 + Time"
    return Case(frame, f"y ~ Time + ({bar} | Pig)", {"(Intercept)": "one", "Time": "Time"}, "Pig", random)


def within_items(slope_sd: tuple[float, float], seed: int = 15) -> Case:
    """A simulated 2x2 within-item design (24 items, one observation per item and cell, deviation-coded),
    y ~ a * b + (1 + a + b | item) as condition_effects fits it; slope_sd: the SDs of the a and b slopes."""
    rng = np.random.default_rng(seed)
    cells = pd.DataFrame([(a, b) for a in (-0.5, 0.5) for b in (-0.5, 0.5)], columns=["a", "b"])
    frame = cells.merge(pd.DataFrame({"item": [f"i{k:02d}" for k in range(24)]}), how="cross")
    effects = rng.normal(size=(24, 3)) * [1.5, *slope_sd]
    codes = pd.factorize(frame["item"])[0]
    frame["ab"] = frame["a"] * frame["b"]
    frame["y"] = (3 + 0.8 * frame["a"] + 0.3 * frame["b"] + 0.5 * frame["ab"] + effects[codes, 0]
                  + effects[codes, 1] * frame["a"] + effects[codes, 2] * frame["b"] + rng.normal(0, 0.6, len(frame)))
    return Case(frame, "y ~ a * b + (1 + a + b | item)", {"(Intercept)": "one", "a": "a", "b": "b", "a:b": "ab"},
                "item", ("one", "a", "b"))


CASES = {"dietox_intercept": lambda: dietox(("one",)), "dietox_slope": lambda: dietox(("one", "Time")),
         "within_items": lambda: within_items((0.9, 0.7))}
CONTRASTS = {"dietox_intercept": [[1.0, 10.0]], "dietox_slope": [[1.0, 10.0]],
             "within_items": [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, -0.5]]}
KEYS = [(name, reml) for name in CASES for reml in (True, False)]
NO_A_SLOPE = ("no_a_slope", False)  # lme4 ends on a boundary with a non-positive-definite Hessian


@pytest.fixture(scope="module")
def cases() -> dict:
    built = {name: make() for name, make in CASES.items()}
    return {key: built[key[0]] for key in KEYS} | {NO_A_SLOPE: within_items((0.0, 0.9), seed=2)}


@pytest.fixture(scope="module")
def lme4(cases) -> dict:
    """lmerTest's fit of every model, in one R process."""
    if R_MISSING:
        pytest.skip(R_MISSING)
    fits = lmer_many([(case.frame, case.formula, reml) for (_, reml), case in cases.items()])
    return dict(zip(cases, fits))


@pytest.fixture(scope="module")
def contests(cases, tmp_path_factory) -> dict:
    """lmerTest's contest1D of each CONTRASTS row: (estimate, df, p) per contrast, in one R process."""
    folder, jobs = tmp_path_factory.mktemp("contest"), []
    for k, (name, reml) in enumerate(KEYS):
        cases[name, reml].frame.to_csv(folder / f"{k}.csv", index=False)
        jobs.append({"csv": str(folder / f"{k}.csv"), "formula": cases[name, reml].formula, "reml": reml,
                     "contrasts": CONTRASTS[name]})
    (folder / "jobs.json").write_text(json.dumps(jobs))
    answers = json.loads(run_r(CONTEST_SCRIPT, folder, str(folder / "jobs.json")))
    return {key: np.array(rows, dtype=float) for key, rows in zip(KEYS, answers)}


def relative(ours, theirs) -> float:
    """The largest relative difference (0 where both are equal, e.g. two p-values that underflow to 0)."""
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.max(np.where(ours == theirs, 0.0, np.abs(ours - theirs) / np.abs(theirs)), initial=0.0))


def p_difference(ours, theirs) -> float:
    """The relative difference of p-values, of log p below 1e-10 (so sensitive to t and df there that a t of 40
    on 70 df moves p by 1e-3 relative when t moves by 1e-6 relative)."""
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    tiny = theirs < 1e-10
    with np.errstate(divide="ignore"):
        return max(relative(ours[~tiny], theirs[~tiny]), relative(np.log(ours[tiny]), np.log(theirs[tiny])))


def run_satterthwaite(model: DenseLMM, theta, contrasts=()) -> pd.DataFrame:
    """Our tests of each coefficient, then of each contrast, at theta (sigma and beta profiled)."""
    varpar, beta = model.at(np.asarray(theta, float))
    weights = np.vstack([np.eye(model.p), np.reshape(contrasts, (-1, model.p))])
    return satterthwaite(model.deviance_varpar, model.vcov_beta, varpar, beta, weights)


@pytest.mark.parametrize("key", KEYS, ids=[f"{n}-{'REML' if r else 'ML'}" for n, r in KEYS])
def test_at_lme4_optimum_equals_lmertest(cases, lme4, contests, key):
    """At lme4's (theta, sigma): df and p of lmerTest's summary and contest1D to 1e-6, SEs to 1e-9 (relative)."""
    case, fit, model = cases[key], lme4[key], cases[key].model(key[1])
    varpar, beta = model.at(np.asarray(fit["theta"], float))
    assert relative(varpar[-1], fit["sigma"]) < 1e-9 and relative(beta, case.coefficients(fit, "fixef")) < 1e-9
    table = run_satterthwaite(model, fit["theta"], CONTRASTS[key[0]])
    coefficients, contrasts = table.iloc[:model.p], table.iloc[model.p:]
    assert relative(coefficients["std_error"], case.coefficients(fit, "se")) < 1e-9
    assert relative(coefficients["df"], case.coefficients(fit, "df")) < 1e-6
    assert p_difference(coefficients["p_value"], case.coefficients(fit, "p")) < 1e-6
    assert relative(contrasts["estimate"], contests[key][:, 0]) < 1e-9
    assert relative(contrasts["df"], contests[key][:, 1]) < 1e-6
    assert p_difference(contrasts["p_value"], contests[key][:, 2]) < 1e-6
    assert (table["note"] == "").all() and not [m for m in fit["optimizer_messages"] if "eigenvalue" in m]


@pytest.mark.parametrize("key", KEYS, ids=[f"{n}-{'REML' if r else 'ML'}" for n, r in KEYS])
def test_own_optimum_agrees_with_lmertest(cases, lme4, key):
    """Fitted here (scipy on the dense reference; its deviance at or below lme4's), df agree with lmerTest's to 3
    significant digits; p to 5e-3 relative, because lme4's default stopping leaves theta ~3e-5 relative from the
    optimum, which alone moves a p of 5e-10 by 1.6e-3."""
    case, fit, model = cases[key], lme4[key], cases[key].model(key[1])
    theta = model.fit()
    assert model.deviance(theta) <= fit["deviance"] + 1e-7
    table = run_satterthwaite(model, theta)
    assert relative(table["df"], case.coefficients(fit, "df")) < 5e-4
    assert p_difference(table["p_value"], case.coefficients(fit, "p")) < 5e-3
    assert relative(table["std_error"], case.coefficients(fit, "se")) < 1e-4


def test_non_positive_definite_hessian_mirrors_lmertest(cases, lme4):
    """No a slope: lme4 stops on the boundary T22 = 0, 0.34 deviance units above the optimum (where T33 = 0), so the
    Hessian there has a negative eigenvalue; lmerTest warns and inverts it over its positive eigenvalues. At lme4's
    point our note, df and p are lmerTest's (to 1e-5: measured df 1.1e-7, p 5e-7)."""
    case, fit = cases[NO_A_SLOPE], lme4[NO_A_SLOPE]
    assert fit["is_singular"] and fit["theta"][3] == 0
    model = case.model(False)
    assert model.deviance(model.fit()) < fit["deviance"] - 0.3
    table = run_satterthwaite(model, fit["theta"])
    warning = "Model failed to converge with 1 negative eigenvalue: -1.9e+00"
    assert warning in fit["optimizer_messages"] and (table["note"] == warning).all()
    assert relative(table["df"], case.coefficients(fit, "df")) < 1e-5
    assert p_difference(table["p_value"], case.coefficients(fit, "p")) < 1e-5


def test_derivatives_equal_numderiv(tmp_path):
    """richardson_hessian / richardson_jacobian reproduce numDeriv's hessian / jacobian (a zero coordinate too)."""
    theirs = np.array(run_r(NUMDERIV_SCRIPT, tmp_path).split(), dtype=float)
    x = np.array([0.5, 0.0, 2.0])
    hessian = richardson_hessian(lambda v: np.exp(v[0]) * np.sin(v[1] + 0.3) + v[0] * v[2] ** 3
                                 + np.log(1 + v[1] ** 2), x)
    jacobian = richardson_jacobian(lambda v: np.array([np.sin(v[0] * v[1]), v[2] ** 2 * np.exp(v[0]),
                                                       v[0] + v[1] * v[2]]), x)
    np.testing.assert_allclose(hessian.ravel(order="F"), theirs[:9], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jacobian.ravel(order="F"), theirs[9:], rtol=1e-12, atol=1e-14)


def test_extrapolation_removes_even_powers():
    """Four estimates at h, h/2, h/4, h/8 with errors in h^2, h^4, h^6: extrapolation returns the limit."""
    h = 0.1 / 2.0 ** np.arange(4)
    assert extrapolate(1.5 + 3 * h ** 2 - 7 * h ** 4 + 11 * h ** 6) == pytest.approx(1.5, rel=1e-14)


def test_varpar_covariance_pseudo_inverse():
    """2 H^-1 for a positive definite H; else 2 H^+ over the eigenvalues above 1e-8, with lmerTest's warnings."""
    positive = np.array([[4.0, 1.0], [1.0, 3.0]])
    covariance, note = varpar_covariance(positive)
    np.testing.assert_allclose(covariance, 2 * np.linalg.inv(positive), rtol=1e-14)
    assert note == ""
    rotation = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    covariance, note = varpar_covariance(rotation @ np.diag([2.0, -0.5, 1e-10]) @ rotation.T)
    np.testing.assert_allclose(covariance, np.outer(rotation[:, 0], rotation[:, 0]), atol=1e-14)
    assert note == ("Model failed to converge with 1 negative eigenvalue: -5.0e-01; "
                    "Model may not have converged with 1 eigenvalue close to zero: 1.0e-10")


def test_bad_input_is_one_line_error():
    model = within_items((0.9, 0.7)).model(True)
    varpar, beta = model.at(np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0]))
    call = [model.deviance_varpar, model.vcov_beta, varpar, beta]
    with pytest.raises(PsylingError, match="contrasts must have 4 columns"):
        satterthwaite(*call, np.ones((1, 3)))
    with pytest.raises(PsylingError, match="sigma"):
        satterthwaite(*call[:2], np.append(varpar[:-1], 0.0), beta)
    with pytest.raises(PsylingError, match="beta has 3 coefficients"):
        satterthwaite(*call[:3], beta[:3])
    with pytest.raises(PsylingError, match="contrasts has missing"):
        satterthwaite(*call, [0.0, np.nan, 1.0, 0.0])
