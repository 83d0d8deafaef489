"""Satterthwaite t tests for the fixed effects of a linear mixed model, computed as lmerTest 3.x does.

lmerTest (Kuznetsova, Brockhoff & Christensen 2017, J. Stat. Softw. 82(13)) takes the variance parameters
varpar = (theta, sigma) at the optimum and

- A = 2 H^-1, H the Hessian of the non-profiled deviance in varpar (``lmerTest:::devfun_vp``), inverted through
  its eigen-decomposition on the eigenvalues above 1e-8 (with a warning when some are negative or near zero);
- J_i = d vcov(beta) / d varpar_i (``lmerTest:::get_covbeta``);
- for a contrast l: v = l'C l, g_i = l'J_i l, df = 2 v^2 / (g'A g), t = l'beta / sqrt(v), p = 2 P(T_df > |t|),
  CI = l'beta -+ t_{df,0.975} sqrt(v) (``lmerTest:::contest1D``).

Both derivatives are numDeriv's Richardson extrapolations with its defaults (``hessian``: d = 0.1; ``jacobian``:
d = 1e-4; both eps = 1e-4, r = 4, v = 2), reproduced step for step so that the df agree with lmerTest's to
numerical precision. Kenward-Roger is not provided: it needs the model matrices, not only these two callables."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import PsylingError

COLUMNS = ["estimate", "std_error", "df", "t", "p_value", "ci_low", "ci_high", "note"]
EIGEN_TOLERANCE = 1e-8  # lmerTest's tol in as_lmerModLT


@dataclass(frozen=True)
class Richardson:
    """numDeriv's Richardson settings: initial step d |x| (eps where |x| < zero_tol), r halvings of the step."""
    d: float
    eps: float = 1e-4
    zero_tol: float = math.sqrt(np.finfo(float).eps / 7e-7)
    r: int = 4

    def steps(self, x: np.ndarray) -> np.ndarray:
        """The initial step for each coordinate of ``x``."""
        return np.abs(self.d * x) + self.eps * (np.abs(x) < self.zero_tol)


HESSIAN_STEPS = Richardson(d=0.1)     # numDeriv::hessian's defaults
JACOBIAN_STEPS = Richardson(d=1e-4)   # numDeriv::jacobian's defaults


def extrapolate(estimates: np.ndarray) -> np.ndarray:
    """Richardson extrapolation over axis 0 of estimates at steps h, h/2, h/4, ... (error in even powers of h)."""
    a = np.asarray(estimates, dtype=float)
    for m in range(1, a.shape[0]):
        a = (a[1:] * 4.0 ** m - a[:-1]) / (4.0 ** m - 1)
    return a[0]


def richardson_jacobian(func: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                        settings: Richardson = JACOBIAN_STEPS) -> np.ndarray:
    """numDeriv::jacobian (method "Richardson"): an array of shape func(x).shape + (len(x),)."""
    x = np.asarray(x, dtype=float)
    h0 = settings.steps(x)
    columns = []
    for i in range(len(x)):
        unit = np.eye(len(x))[i]
        central = [(np.asarray(func(x + unit * h)) - np.asarray(func(x - unit * h))) / (2 * h[i])
                   for h in (h0 / 2.0 ** k for k in range(settings.r))]
        columns.append(extrapolate(np.stack(central)))
    return np.stack(columns, axis=-1)


def richardson_hessian(func: Callable[[np.ndarray], float], x: np.ndarray,
                       settings: Richardson = HESSIAN_STEPS) -> np.ndarray:
    """numDeriv::hessian (method "Richardson", through genD): the symmetric matrix of second derivatives."""
    x = np.asarray(x, dtype=float)
    n, f0, h0 = len(x), float(func(x)), settings.steps(x)
    unit, halvings = np.eye(n), [h0 / 2.0 ** k for k in range(settings.r)]
    hessian = np.zeros((n, n))
    for i in range(n):
        second = [(func(x + unit[i] * h) - 2 * f0 + func(x - unit[i] * h)) / h[i] ** 2 for h in halvings]
        hessian[i, i] = extrapolate(np.array(second))
    for i in range(n):
        for j in range(i):
            step = unit[i] + unit[j]
            mixed = [(func(x + step * h) - 2 * f0 + func(x - step * h) - hessian[i, i] * h[i] ** 2
                      - hessian[j, j] * h[j] ** 2) / (2 * h[i] * h[j]) for h in halvings]
            hessian[i, j] = hessian[j, i] = extrapolate(np.array(mixed))
    return hessian


def varpar_covariance(hessian: np.ndarray, tol: float = EIGEN_TOLERANCE) -> tuple[np.ndarray, str]:
    """lmerTest's vcov(varpar) = 2 H^+ over the eigenvalues above ``tol``, and its warning ("" when none)."""
    values, vectors = np.linalg.eigh(hessian)
    notes = []
    negative, zero = values[values < -tol], values[(values > -tol) & (values < tol)]
    if negative.size:
        notes.append(f"Model failed to converge with {negative.size} negative "
                     f"eigenvalue{'s' if negative.size > 1 else ''}: {_format_values(negative)}")
    if zero.size:
        notes.append(f"Model may not have converged with {zero.size} "
                     f"eigenvalue{'s' if zero.size > 1 else ''} close to zero: {_format_values(zero)}")
    keep = values > tol
    inverse = vectors[:, keep] @ np.diag(1.0 / values[keep]) @ vectors[:, keep].T
    return 2 * inverse, "; ".join(notes)


def _format_values(values: np.ndarray) -> str:
    """Eigenvalues as lmerTest prints them (sprintf("%1.1e"), in decreasing order as R's eigen returns them)."""
    return " ".join(f"{v:1.1e}" for v in sorted(values, reverse=True))


def satterthwaite(deviance_varpar: Callable[[np.ndarray], float], vcov_beta: Callable[[np.ndarray], np.ndarray],
                  varpar: np.ndarray, beta: np.ndarray, contrasts: np.ndarray | None = None) -> pd.DataFrame:
    """Satterthwaite t tests of each row of ``contrasts`` (default: each coefficient) as lmerTest computes them.

    ``deviance_varpar(varpar)`` is lmerTest's devfun_vp (-2 log-likelihood, REML or ML, beta at its conditional
    optimum), ``vcov_beta(varpar)`` is sigma^2 (R_X'R_X)^-1; ``varpar`` = (*theta, sigma) at the optimum. One row
    per contrast: estimate, std_error, df, t, p_value, the 95% CI, and ``note`` (lmerTest's warning when the
    Hessian is not positive definite: the pseudo-inverse over its positive eigenvalues is used, as lmerTest does)."""
    varpar, beta = _checked_vector(varpar, "varpar"), _checked_vector(beta, "beta")
    if varpar[-1] <= 0:
        raise PsylingError(f"satterthwaite: varpar's last element (sigma) must be positive, got {varpar[-1]}")
    covariance = np.asarray(vcov_beta(varpar), dtype=float)
    if covariance.shape != (len(beta), len(beta)):
        raise PsylingError(f"satterthwaite: vcov_beta returned shape {covariance.shape}, beta has {len(beta)} "
                           "coefficients")
    weights = _checked_contrasts(contrasts, len(beta))
    varpar_vcov, note = varpar_covariance(richardson_hessian(deviance_varpar, varpar))
    jacobian = richardson_jacobian(vcov_beta, varpar)              # (p, p, k)
    variance = np.einsum("ci,ij,cj->c", weights, covariance, weights)
    gradient = np.einsum("ci,ijk,cj->ck", weights, jacobian, weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = 2 * variance ** 2 / np.einsum("ck,kl,cl->c", gradient, varpar_vcov, gradient)
    return _t_table(weights @ beta, np.sqrt(variance), df, note)


def _t_table(estimate: np.ndarray, se: np.ndarray, df: np.ndarray, note: str) -> pd.DataFrame:
    """lmerTest's t table (mk_ttable with waldCI at level 0.95) plus the note column."""
    t = estimate / se
    quantile = stats.t.ppf(0.975, df)
    return pd.DataFrame({"estimate": estimate, "std_error": se, "df": df, "t": t,
                         "p_value": 2 * stats.t.sf(np.abs(t), df), "ci_low": estimate - quantile * se,
                         "ci_high": estimate + quantile * se, "note": note}, columns=COLUMNS)


def _checked_vector(values: np.ndarray, name: str) -> np.ndarray:
    """A finite, non-empty 1-D float array, or a one-line error naming the argument."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise PsylingError(f"satterthwaite: {name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise PsylingError(f"satterthwaite: {name} has non-finite values: {array.tolist()}")
    return array


def _checked_contrasts(contrasts: np.ndarray | None, p: int) -> np.ndarray:
    """Contrast rows as a (c, p) array (identity by default; a single 1-D contrast becomes one row)."""
    if contrasts is None:
        return np.eye(p)
    weights = np.atleast_2d(np.asarray(contrasts, dtype=float))
    if weights.ndim != 2 or weights.shape[1] != p:
        raise PsylingError(f"satterthwaite: contrasts must have {p} columns (one per coefficient), got shape "
                           f"{np.shape(contrasts)}")
    if not np.isfinite(weights).all():
        raise PsylingError("satterthwaite: contrasts has missing or infinite weights")
    return weights
