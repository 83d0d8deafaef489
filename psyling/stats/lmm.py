"""Linear mixed models by lme4's profiled deviance (Bates, Mächler, Bolker & Walker 2015, J. Stat. Softw. 67(1)).

Model: y = X beta + Z b + e, b = Lambda_theta u, u ~ N(0, sigma^2 I_q), e ~ N(0, sigma^2 I_n), with any number of
random terms ``(c1 + ... + ck | group)``, each with a correlated k x k lower-triangular relative covariance factor
T (Lambda = block-diag of I_levels kron T per term). theta lists, per term in the given order, T's lower triangle
column-major, as lme4 does; diagonal elements are bounded below by 0.

Speed: cross-products (sufficient statistics) are computed once, so a deviance evaluation never touches the n
rows. Lambda'Z'Z Lambda + I is block-diagonal (k x k blocks, one per level) within a grouping factor: the term
with the most random effects is eliminated through its block-diagonal inverse (a Schur complement) and the rest
of the system takes one dense Cholesky. X is orthogonalised (X = QR) and y replaced by its OLS residual first,
so the penalised residual sum of squares does not lose digits to cancellation; estimates are mapped back to X.

Optimisation: bounded Nelder-Mead from lme4's start, polished by L-BFGS-B with central-difference gradients;
when the optimum lies on the boundary (a diagonal theta below 1e-4), fails the check or neither stage ended
normally, restarts from other starts and keeps the best. ``optimum_check`` is the largest absolute projected
gradient of the deviance at the optimum (central differences); a fit is ``converged`` only when a stage ended
normally (not at its evaluation limit) and the check passes: every coordinate's Hessian-scaled gradient
(``scaled_check``; the projected gradient where the coordinate sits on its bound) is at most
``OptimiserSettings.gradient_tolerance`` (1e-3: the deviance then lies at most about n_theta x 5e-7 above the
optimum). Optimiser messages and warnings are collected in ``LMMFit.messages``, never printed."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse

from ..errors import PsylingError

SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular: a diagonal theta below this


class MixedModelError(PsylingError):
    """A mixed model that cannot be built from the data given."""


@dataclass(frozen=True)
class RandomTerm:
    """One ``(cols | group)`` term: level codes per row, the raw random-effect columns and their names."""
    group: str
    codes: np.ndarray
    design: np.ndarray
    names: tuple[str, ...]


@dataclass(frozen=True)
class OptimiserSettings:
    """How theta is optimised and checked. ``gradient_tolerance``: a converged fit's Hessian-scaled deviance
    gradient (see :class:`OptimumCheck`) is at most this in every coordinate; at 1e-3 the Newton estimate of the
    deviance above the optimum is at most n_theta x 5e-7. ``step``, ``hessian_step``:
    relative central-difference steps. ``restart_scales``: lme4's start times these are among the restarts."""
    gradient_tolerance: float = 1e-3
    step: float = 1e-5
    hessian_step: float = 1e-4
    simplex_step: float = 0.1
    max_evaluations: int = 4000
    restart_scales: tuple[float, ...] = (0.5, 2.0)


@dataclass(frozen=True)
class LMMFit:
    """A fitted model. ``deviance`` is the minimised criterion (the REML criterion for REML fits) and ``loglik``
    = -deviance / 2, as lme4's logLik. ``covariance``: one row per random-effect variance, then covariance, per
    term, then Residual; columns group, name1, name2 (None for variances), vcov, sd_cor (sd or correlation)."""
    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    loglik: float
    deviance: float
    reml: bool
    vcov_beta: np.ndarray
    converged: bool
    singular: bool
    singular_terms: tuple[str, ...]
    messages: tuple[str, ...]
    covariance: pd.DataFrame
    n_obs: int
    n_groups: dict[str, int]
    optimum_check: float
    x_names: tuple[str, ...] = ()
    scaled_check: float = math.nan  # max |Hessian-scaled gradient| (see OptimumCheck)

    @property
    def varpar(self) -> np.ndarray:
        """(*theta, sigma), the parameters of :meth:`LinearMixedModel.deviance_varpar`."""
        return np.append(self.theta, self.sigma)

    @property
    def std_errors(self) -> np.ndarray:
        """Standard errors of the fixed effects."""
        return np.sqrt(np.diag(self.vcov_beta))


@dataclass(frozen=True)
class _Solution:
    """The penalised least squares solution at one theta (beta and R_X in the orthogonalised coordinates)."""
    logdet_l: float
    logdet_rx: float
    gamma: np.ndarray
    rx_gram: np.ndarray
    r2: float


@dataclass
class _Run:
    """One optimisation from one start."""
    theta: np.ndarray
    deviance: float
    ended_normally: bool
    messages: list[str] = field(default_factory=list)


class _Term:
    """A random term's level codes, sparse Z and the map from its theta slice to T."""

    def __init__(self, term: RandomTerm, n: int, label: str) -> None:
        design = np.asarray(term.design, float)
        design = design[:, None] if design.ndim == 1 else design
        codes = np.asarray(term.codes)
        if codes.shape != (n,) or design.shape[0] != n or not np.isfinite(design).all():
            raise MixedModelError(f"random term {term.group!r}: codes and design need {n} finite rows")
        if len(term.names) != design.shape[1]:
            raise MixedModelError(f"random term {term.group!r}: {len(term.names)} names for "
                                  f"{design.shape[1]} columns")
        levels, self.codes = np.unique(codes, return_inverse=True)
        self.group, self.label, self.names = term.group, label, tuple(term.names)
        self.m, self.k = len(levels), design.shape[1]
        self.q = self.m * self.k
        self.cols, self.rows = np.triu_indices(self.k)  # column-major lower triangle: T[rows, cols]
        self.n_theta = len(self.rows)
        columns = self.codes[:, None] * self.k + np.arange(self.k)
        self.z = sparse.csc_array((design.ravel(), (np.repeat(np.arange(n), self.k), columns.ravel())),
                                  shape=(n, self.q))
        self.design = design

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """T, the k x k relative covariance factor."""
        t = np.zeros((self.k, self.k))
        t[self.rows, self.cols] = theta
        return t

    def blocks(self) -> np.ndarray:
        """Z_j'Z_j per level j, shape (m, k, k)."""
        out = np.empty((self.m, self.k, self.k))
        for a in range(self.k):
            for b in range(a, self.k):
                out[:, a, b] = out[:, b, a] = np.bincount(self.codes, self.design[:, a] * self.design[:, b],
                                                          minlength=self.m)
        return out

    def lambda_t(self, t: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Lambda' @ ``rows`` for this term's (q, c) level-major rows: T' applied per level."""
        blocks = rows.reshape(self.m, self.k, -1)
        return np.einsum("ka,mkc->mac", t, blocks).reshape(self.q, -1)


def _labels(terms: Sequence[RandomTerm]) -> list[str]:
    """lme4's names for the terms: the group, then group.1, group.2 ... for repeats."""
    seen: dict[str, int] = {}
    out = []
    for term in terms:
        count = seen.get(term.group, 0)
        out.append(term.group if count == 0 else f"{term.group}.{count}")
        seen[term.group] = count + 1
    return out


@dataclass(frozen=True)
class _LevelPairs:
    """N = Z_big'Z_rest (level-major rows) and, for N' B N with block-diagonal symmetric B, every product of two
    entries of N in the same level's rows, upper triangle i <= i' only:
    products[i * q + i', (j k + a) k + b] = N[j k + a, i] N[j k + b, i']."""
    cross: sparse.csr_array
    products: Optional[sparse.csc_array]  # None when there would be more than MAX_PAIRS: use dense N instead
    dense: Optional[np.ndarray] = None


MAX_PAIRS = 30_000_000  # ~360 MB of products; beyond this N' B N is computed from a dense N


def _level_pairs(cross: sparse.csr_array, m: int, k: int) -> _LevelPairs:
    """Precompute :class:`_LevelPairs` (about half the sum over levels of (entries in its rows)^2 values)."""
    cross.sort_indices()
    q = cross.shape[1]
    row = np.repeat(np.arange(m * k), np.diff(cross.indptr))
    block_start = cross.indptr[:-1:k]
    level_start = block_start[row // k]
    count = (cross.indptr[k::k] - block_start)[row // k]
    if int(count.sum()) > 2 * MAX_PAIRS:
        return _LevelPairs(cross=cross, products=None, dense=cross.toarray())
    first = np.repeat(np.arange(cross.nnz), count)
    second = np.repeat(level_start - np.cumsum(count) + count, count) + np.arange(len(first))
    index_first, index_second = cross.indices[first], cross.indices[second]
    keep = index_first <= index_second
    first, second, index_first, index_second = first[keep], second[keep], index_first[keep], index_second[keep]
    column = (row[first] * k + row[second] % k)  # = (level k + a) k + b
    order = np.argsort(column, kind="stable") if k > 1 else slice(None)  # k = 1: already by level
    index_type = np.int32 if q * q < 2 ** 31 else np.int64
    flat = (index_first[order].astype(np.int64) * q + index_second[order]).astype(index_type)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(column, minlength=m * k * k))]).astype(index_type)
    products = sparse.csc_array((cross.data[first[order]] * cross.data[second[order]], flat, indptr),
                                shape=(q * q, m * k * k))
    return _LevelPairs(cross=cross, products=products)


def _per_level(blocks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """blockdiag(``blocks``) @ ``rows``, with blocks (m, k, k) and rows (m k, c)."""
    m, k = blocks.shape[:2]
    return np.einsum("mab,mbc->mac", blocks, rows.reshape(m, k, -1)).reshape(m * k, -1)


def _central_gradient(function: Callable[[np.ndarray], float], x: np.ndarray, step: float) -> np.ndarray:
    """Central-difference gradient with steps ``step`` * max(1, |x_i|)."""
    grad = np.empty(len(x))
    for i in range(len(x)):
        h = step * max(1.0, abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (function(up) - function(down)) / (2 * h)
    return grad


def _projected(grad: np.ndarray, x: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """The gradient with components that point out of the feasible set at an active lower bound set to 0."""
    return np.where(x <= lower, np.minimum(grad, 0.0), grad)


def _central_hessian(function: Callable[[np.ndarray], float], x: np.ndarray, step: float) -> np.ndarray:
    """Central-difference Hessian with steps ``step`` * max(1, |x_i|)."""
    moves = np.diag(step * np.maximum(1.0, np.abs(x)))
    centre = function(x)
    hess = np.empty((len(x), len(x)))
    for i, hi in enumerate(moves):
        hess[i, i] = (function(x + hi) - 2 * centre + function(x - hi)) / hi[i] ** 2
        for j, hj in enumerate(moves[:i]):
            hess[i, j] = hess[j, i] = (function(x + hi + hj) - function(x + hi - hj) - function(x - hi + hj)
                                       + function(x - hi - hj)) / (4 * hi[i] * hj[j])
    return hess


@dataclass(frozen=True)
class OptimumCheck:
    """The projected gradient of the deviance at a candidate optimum and, where the Hessian over the free
    coordinates is positive definite, the gradient scaled by its Cholesky factor (R^-T g: |.|^2 / 2 is the
    Newton estimate of how far the deviance lies above the optimum; NaN elsewhere). Passed: every |scaled_i|,
    or |g_i| where there is no scaled value (an active bound, a Hessian not positive definite), is at most the
    tolerance (stricter than lme4's check.conv.grad, which takes the smaller of the two)."""
    gradient: np.ndarray
    scaled: np.ndarray

    @property
    def largest_gradient(self) -> float:
        return float(np.max(np.abs(self.gradient), initial=0.0))

    @property
    def largest_scaled(self) -> float:
        """NaN when no coordinate could be scaled."""
        known = np.abs(self.scaled[~np.isnan(self.scaled)])
        return float(known.max()) if len(known) else math.nan

    def passed(self, tolerance: float) -> bool:
        judged = np.where(np.isnan(self.scaled), np.abs(self.gradient), np.abs(self.scaled))
        return bool(np.all(judged <= tolerance))


class LinearMixedModel:
    """y ~ X beta + random ``terms``, fitted by ML or REML (``reml``) profiled deviance as lme4's lmer."""

    def __init__(self, y: np.ndarray, x: np.ndarray, x_names: Sequence[str], terms: Sequence[RandomTerm],
                 reml: bool = True) -> None:
        y, x = np.asarray(y, float), np.asarray(x, float)
        x = x[:, None] if x.ndim == 1 else x
        self.n, self.p = x.shape
        if y.shape != (self.n,) or not (np.isfinite(y).all() and np.isfinite(x).all()):
            raise MixedModelError(f"y and x need {self.n} finite rows")
        if len(x_names) != self.p or not terms:
            raise MixedModelError("need one name per column of x and at least one random term")
        self.x_names, self.reml = tuple(x_names), reml
        self._terms = [_Term(t, self.n, label) for t, label in zip(terms, _labels(terms))]
        self.q = sum(t.q for t in self._terms)
        self.n_theta = sum(t.n_theta for t in self._terms)
        self.theta_lower = np.concatenate([np.where(t.rows == t.cols, 0.0, -np.inf) for t in self._terms])
        self.theta_start = np.concatenate([(t.rows == t.cols).astype(float) for t in self._terms])
        self._orthogonalise(y, x)
        self._precompute()

    def _orthogonalise(self, y: np.ndarray, x: np.ndarray) -> None:
        """X = QR and y's OLS residual: the working columns W = [Q, y - QQ'y]."""
        q, r = np.linalg.qr(x)
        diag = np.abs(np.diag(r))
        if self.p and diag.min() <= 1e-10 * max(diag.max(), 1.0) * math.sqrt(self.n):
            raise MixedModelError(f"the fixed-effects design ({', '.join(self.x_names)}) is rank deficient")
        self._r = r
        self._ols = q.T @ y
        self._w = np.column_stack([q, y - q @ self._ols])
        self._logdet_r2 = 2.0 * float(np.log(diag).sum())

    def _precompute(self) -> None:
        """Cross-products: the eliminated term's per-level blocks, Z'Z for the rest, Z'W and W'W."""
        big = max(range(len(self._terms)), key=lambda i: self._terms[i].q)
        self._big = self._terms[big]
        self._rest = [t for i, t in enumerate(self._terms) if i != big]
        bounds = np.cumsum([0] + [t.n_theta for t in self._terms])
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._big_slice = self._slices[big]
        self._rest_slices = [s for i, s in enumerate(self._slices) if i != big]
        self._big_blocks = self._big.blocks()
        self._ww = self._w.T @ self._w
        self._big_zw = self._big.z.T @ self._w
        self.q_dense = sum(t.q for t in self._rest)
        if self._rest:
            z_rest = sparse.hstack([t.z for t in self._rest], format="csc")
            self._rest_zz = (z_rest.T @ z_rest).toarray()
            self._rest_zw = z_rest.T @ self._w
            self._pairs = _level_pairs(sparse.csr_array(self._big.z.T @ z_rest), self._big.m, self._big.k)

    def _solve(self, theta: np.ndarray) -> _Solution:
        """Penalised least squares at ``theta``: log|L|^2 and the Schur complement of W'W (beta and r2)."""
        theta = np.asarray(theta, float)
        t_big = self._big.factor(theta[self._big_slice])
        a_blocks = np.einsum("ji,mjk,kl->mil", t_big, self._big_blocks, t_big) + np.eye(self._big.k)
        chol = np.linalg.cholesky(a_blocks)
        logdet_l = 2.0 * float(np.log(np.diagonal(chol, axis1=1, axis2=2)).sum())
        chol_inv = np.linalg.inv(chol)
        s_big = _per_level(chol_inv, self._big.lambda_t(t_big, self._big_zw))
        gram = self._ww - s_big.T @ s_big
        if self._rest:
            factor = t_big @ np.swapaxes(chol_inv, 1, 2)  # per level T L_j^-T
            logdet_s, v = self._dense_part(theta, factor, _per_level(factor, s_big))
            logdet_l += logdet_s
            gram = gram - v.T @ v
        p = self.p
        rx_gram = gram[:p, :p]
        rx_chol = linalg.cholesky(rx_gram, lower=True) if p else np.zeros((0, 0))
        gamma = linalg.cho_solve((rx_chol, True), gram[:p, p]) if p else np.zeros(0)
        r2 = float(gram[p, p] - gram[:p, p] @ gamma)
        logdet_rx = 2.0 * float(np.log(np.diag(rx_chol)).sum()) + self._logdet_r2
        return _Solution(logdet_l=logdet_l, logdet_rx=logdet_rx, gamma=gamma, rx_gram=rx_gram, r2=r2)

    def _rest_lambda_t(self, theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Lambda_rest' @ ``rows`` for the rows of the terms not eliminated."""
        out, start = np.empty_like(rows), 0
        for term, s in zip(self._rest, self._rest_slices):
            out[start:start + term.q] = term.lambda_t(term.factor(theta[s]), rows[start:start + term.q])
            start += term.q
        return out

    def _eliminated_cross(self, factor: np.ndarray) -> np.ndarray:
        """N' B N with N = Z_big'Z_rest and B = blockdiag(T A_j^-1 T') = blockdiag(factor_j factor_j')."""
        if self._pairs.products is None:
            scaled = _per_level(np.swapaxes(factor, 1, 2), self._pairs.dense)
            return scaled.T @ scaled
        weights = factor @ np.swapaxes(factor, 1, 2)
        upper = (self._pairs.products @ weights.ravel()).reshape(self.q_dense, self.q_dense)
        return upper + upper.T - np.diag(upper.diagonal())

    def _dense_part(self, theta: np.ndarray, factor: np.ndarray, u_big: np.ndarray) -> tuple[float, np.ndarray]:
        """log det of the other terms' Schur complement S, and L_S^-1 of their right side (``u_big`` =
        Lambda_big L_A^-T L_A^-1 Lambda_big' Z_big'W)."""
        kernel = self._rest_zz - self._eliminated_cross(factor)
        schur = self._rest_lambda_t(theta, self._rest_lambda_t(theta, kernel).T) + np.eye(self.q_dense)
        chol = linalg.cholesky(schur, lower=True)
        rhs = self._rest_lambda_t(theta, self._rest_zw - self._cross_transpose(u_big))
        v = linalg.solve_triangular(chol, rhs, lower=True)
        return 2.0 * float(np.log(np.diag(chol)).sum()), v

    def _cross_transpose(self, rows: np.ndarray) -> np.ndarray:
        """N' @ ``rows`` for the eliminated term's level-major rows."""
        return self._pairs.cross.T @ rows

    def _residual_df(self) -> int:
        return self.n - self.p if self.reml else self.n

    def deviance(self, theta: np.ndarray) -> float:
        """lme4's profiled deviance at ``theta`` (the REML criterion when ``reml``)."""
        sol = self._solve(theta)
        if not sol.r2 > 0:
            return math.inf
        df = self._residual_df()
        value = sol.logdet_l + df * (1 + math.log(2 * math.pi * sol.r2 / df))
        return value + sol.logdet_rx if self.reml else value

    def deviance_varpar(self, varpar: np.ndarray) -> float:
        """The deviance at (*theta, sigma), not profiled in sigma (lmerTest's devfun_vp)."""
        varpar = np.asarray(varpar, float)
        sol = self._solve(varpar[:-1])
        s2 = float(varpar[-1]) ** 2
        value = sol.logdet_l + sol.r2 / s2 + self.n * math.log(2 * math.pi * s2)
        return value + sol.logdet_rx - self.p * math.log(2 * math.pi * s2) if self.reml else value

    def vcov_beta(self, varpar: np.ndarray) -> np.ndarray:
        """sigma^2 (R_X'R_X)^-1 at theta, for the original columns of x."""
        varpar = np.asarray(varpar, float)
        sol = self._solve(varpar[:-1])
        r_inv = linalg.solve_triangular(self._r, np.eye(self.p))
        return float(varpar[-1]) ** 2 * (r_inv @ np.linalg.solve(sol.rx_gram, r_inv.T))

    def beta_sigma(self, theta: np.ndarray) -> tuple[np.ndarray, float]:
        """The conditional estimates of beta (original columns) and sigma at ``theta``."""
        sol = self._solve(theta)
        beta = linalg.solve_triangular(self._r, sol.gamma + self._ols)
        return beta, math.sqrt(max(sol.r2, 0.0) / self._residual_df())

    def _safe_deviance(self, theta: np.ndarray) -> float:
        """The deviance, +inf where the factorisations fail (for the optimisers)."""
        try:
            return self.deviance(theta)
        except (np.linalg.LinAlgError, ValueError):
            return math.inf

    def check_optimum(self, theta: np.ndarray, settings: OptimiserSettings = OptimiserSettings()) -> OptimumCheck:
        """The projected gradient (central differences) at ``theta`` and its Hessian-scaled form."""
        theta = np.asarray(theta, float)
        grad = _projected(_central_gradient(self._safe_deviance, theta, settings.step), theta, self.theta_lower)
        scaled = np.full(len(theta), np.nan)
        free = ~((theta <= self.theta_lower) & (grad == 0.0))
        if free.any():
            def part(sub: np.ndarray) -> float:
                full = theta.copy()
                full[free] = sub
                return self._safe_deviance(full)

            try:
                root = linalg.cholesky(_central_hessian(part, theta[free], settings.hessian_step))
                scaled[free] = linalg.solve_triangular(root, grad[free], trans="T")
            except (np.linalg.LinAlgError, ValueError):  # not positive definite: the raw gradient decides
                pass
        return OptimumCheck(gradient=grad, scaled=scaled)

    def _optimise(self, start: np.ndarray, settings: OptimiserSettings) -> _Run:
        """Bounded Nelder-Mead from ``start``, then L-BFGS-B; a message for every stage that ended abnormally."""
        bounds = optimize.Bounds(self.theta_lower, np.full(self.n_theta, np.inf))
        simplex = np.vstack([start, start + settings.simplex_step * np.eye(self.n_theta)])
        coarse = optimize.minimize(self._safe_deviance, start, method="Nelder-Mead", bounds=bounds,
                                   options={"initial_simplex": simplex, "xatol": 1e-6, "fatol": 1e-8,
                                            "maxfev": settings.max_evaluations})
        fine = optimize.minimize(self._safe_deviance, np.maximum(coarse.x, self.theta_lower), method="L-BFGS-B",
                                 bounds=bounds, jac=lambda x: _central_gradient(self._safe_deviance, x, settings.step),
                                 options={"ftol": 1e-15, "gtol": settings.gradient_tolerance / 10,
                                          "maxiter": settings.max_evaluations})
        messages = []
        for name, result in (("Nelder-Mead", coarse), ("L-BFGS-B", fine)):
            if not result.success:
                messages.append(f"{name} from {np.round(start, 4).tolist()}: {result.message}")
        best = fine if fine.fun <= coarse.fun else coarse
        ended = bool(math.isfinite(best.fun) and (coarse.success or fine.success))
        return _Run(theta=np.asarray(best.x, float), deviance=float(best.fun), ended_normally=ended,
                    messages=messages)

    def _restart_points(self, theta: np.ndarray, settings: OptimiserSettings) -> list[np.ndarray]:
        """Other starts: the optimum with its zero diagonals set back to 1, and lme4's start rescaled."""
        diagonal = np.isfinite(self.theta_lower)
        lifted = np.where(diagonal & (theta < SINGULAR_TOLERANCE), 1.0, theta)
        return [lifted] + [self.theta_start * scale for scale in settings.restart_scales]

    def fit(self, settings: OptimiserSettings = OptimiserSettings()) -> LMMFit:
        """Minimise the deviance over theta; see the module docstring for the starts and the check. Warnings
        raised meanwhile are recorded in the fit's messages, not shown."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs, check = self._search(settings)
        best = min(runs, key=lambda run: run.deviance)
        messages = [m for run in runs for m in run.messages] + [f"warning: {w.message}" for w in caught]
        if len(runs) > 1:
            messages.append(f"restarted from {len(runs) - 1} other starts: deviances "
                            f"{', '.join(f'{run.deviance:.6f}' for run in runs)}; kept {best.deviance:.6f}")
        if not check.passed(settings.gradient_tolerance):
            messages.append(f"optimum check failed: max |projected gradient| {check.largest_gradient:.3g}, "
                            f"scaled {check.largest_scaled:.3g} > {settings.gradient_tolerance:g}")
        converged = best.ended_normally and check.passed(settings.gradient_tolerance)
        return self._result(best, check, converged, list(dict.fromkeys(messages)))

    def _search(self, settings: OptimiserSettings) -> tuple[list[_Run], OptimumCheck]:
        """The run from lme4's start, restarts where it needs them, and the check of the best run."""
        runs = [self._optimise(self.theta_start, settings)]
        check = self.check_optimum(runs[0].theta, settings)
        on_boundary = bool(np.any(np.isfinite(self.theta_lower) & (runs[0].theta < SINGULAR_TOLERANCE)))
        if on_boundary or not check.passed(settings.gradient_tolerance) or not runs[0].ended_normally:
            runs += [self._optimise(point, settings) for point in self._restart_points(runs[0].theta, settings)]
        best = min(runs, key=lambda run: run.deviance)
        return runs, check if best is runs[0] else self.check_optimum(best.theta, settings)

    def _result(self, run: _Run, check: OptimumCheck, converged: bool, messages: list[str]) -> LMMFit:
        theta = run.theta
        beta, sigma = self.beta_sigma(theta)
        singular = self._singular_terms(theta)
        return LMMFit(theta=theta, beta=beta, sigma=sigma, loglik=-run.deviance / 2, deviance=run.deviance,
                      reml=self.reml, vcov_beta=self.vcov_beta(np.append(theta, sigma)), converged=converged,
                      singular=bool(singular), singular_terms=singular, messages=tuple(messages),
                      covariance=self.covariance_table(theta, sigma), n_obs=self.n,
                      n_groups={t.label: t.m for t in self._terms}, optimum_check=check.largest_gradient,
                      x_names=self.x_names, scaled_check=check.largest_scaled)

    def _singular_terms(self, theta: np.ndarray) -> tuple[str, ...]:
        """'column | group' for every diagonal theta below lme4's tolerance."""
        out = []
        for term, s in zip(self._terms, self._slices):
            diag = term.factor(theta[s]).diagonal()
            out += [f"{term.names[i]} | {term.label}" for i in range(term.k) if diag[i] < SINGULAR_TOLERANCE]
        return tuple(out)

    def covariance_table(self, theta: np.ndarray, sigma: float) -> pd.DataFrame:
        """Random-effect variances, covariances and correlations per term (as lme4's as.data.frame(VarCorr)),
        then the residual variance."""
        rows = []
        for term, s in zip(self._terms, self._slices):
            t = term.factor(np.asarray(theta, float)[s])
            cov = sigma ** 2 * t @ t.T
            sd = np.sqrt(np.diag(cov))
            rows += [(term.label, term.names[i], None, cov[i, i], sd[i]) for i in range(term.k)]
            rows += [(term.label, term.names[c], term.names[r], cov[r, c],
                      cov[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else math.nan)
                     for r, c in zip(term.rows, term.cols) if r != c]
        rows.append(("Residual", None, None, sigma ** 2, sigma))
        columns = list(zip(*rows))
        return pd.DataFrame({"group": list(columns[0]), "name1": pd.Series(columns[1], dtype=object),
                             "name2": pd.Series(columns[2], dtype=object),
                             "vcov": np.array(columns[3], float), "sd_cor": np.array(columns[4], float)})
