"""Maximum-likelihood linear mixed model with two crossed random intercepts, by lme4's profiled deviance.

Model: y = X beta + Z_a b_a + Z_b b_b + e, b_a ~ N(0, s2 theta_a^2 I), b_b ~ N(0, s2 theta_b^2 I), e ~ N(0, s2 I)
(e.g. a = subjects, b = items). For given relative standard deviations theta, beta and s2 have closed forms and
the ML deviance is (Bates et al. 2015, J. Stat. Softw. 67(1), eq. 34)

    d(theta) = log |Lambda' Z'Z Lambda + I| + n (1 + log(2 pi r2(theta) / n)),

r2 being the minimised penalised residual sum of squares. Everything is computed from sufficient statistics
(X'X, Z'X, level counts and the sparse level-by-level count matrix), and the random-effects system is reduced to
the factor with fewer levels by a Schur complement (the other block is diagonal), so a fit costs a dense
Cholesky of min(levels) x min(levels) per evaluation however many observations there are. The deviance is
minimised over the two thetas (it is even in each), as lme4 does."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, optimize, sparse


@dataclass
class CrossedFit:
    """The ML fit: log-likelihood (nats), fixed effects, the two random-intercept variances and the residual
    variance, the relative SDs theta, and whether the optimiser converged."""
    loglik: float
    beta: np.ndarray
    variances: tuple[float, float]
    residual: float
    theta: tuple[float, float]
    converged: bool


class _Statistics:
    """Sufficient statistics of y, X and two grouping factors given as integer codes."""

    def __init__(self, y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        xy = np.column_stack([x, y])
        self.n, self.p = len(y), x.shape[1]
        self.moments = xy.T @ xy
        na, nb = int(a.max()) + 1, int(b.max()) + 1
        za = sparse.csr_array((np.ones(self.n), (a, np.arange(self.n))), shape=(na, self.n))
        zb = sparse.csr_array((np.ones(self.n), (b, np.arange(self.n))), shape=(nb, self.n))
        self.flip = na < nb  # the diagonal block eliminated is the factor with more levels
        big, small = (zb, za) if self.flip else (za, zb)
        self.count_big = np.asarray(big.sum(axis=1)).ravel()
        self.count_small = np.asarray(small.sum(axis=1)).ravel()
        self.cross = sparse.csr_array(big @ small.T)  # big x small level co-occurrence counts
        self.big_xy, self.small_xy = big @ xy, small @ xy

    def solve(self, theta: tuple[float, float]) -> tuple[float, np.ndarray, float]:
        """log |Lambda'Z'Z Lambda + I|, beta and r2 at ``theta`` (subject-like factor first)."""
        t_big, t_small = (theta[1], theta[0]) if self.flip else theta
        a = t_big ** 2 * self.count_big + 1.0
        c = (t_big * t_small) * self.cross
        schur = np.diag(t_small ** 2 * self.count_small + 1.0) - (c.T @ sparse.diags_array(1.0 / a) @ c).toarray()
        chol = linalg.cho_factor(schur, lower=True)
        logdet = float(np.log(a).sum() + 2 * np.log(np.diag(chol[0])).sum())
        r_big, r_small = t_big * self.big_xy, t_small * self.small_xy
        t = r_small - c.T @ (r_big / a[:, None])
        gram = self.moments - (r_big.T @ (r_big / a[:, None]) + t.T @ linalg.cho_solve(chol, t))
        p = self.p
        beta = np.linalg.solve(gram[:p, :p], gram[:p, p])
        r2 = float(gram[p, p] - gram[:p, p] @ beta)
        return logdet, beta, r2

    def deviance(self, theta: np.ndarray) -> float:
        logdet, _, r2 = self.solve((abs(theta[0]), abs(theta[1])))
        if r2 <= 0:
            return math.inf
        return logdet + self.n * (1 + math.log(2 * math.pi * r2 / self.n))


def fit_crossed_intercepts(y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> CrossedFit:
    """ML fit of y on the columns of ``x`` (include the intercept) with random intercepts for the integer-coded
    factors ``a`` and ``b`` (codes 0..levels-1). Nelder-Mead over theta from lme4's start (1, 1), polished by
    L-BFGS-B; converged when both stop normally and agree."""
    stats = _Statistics(np.asarray(y, float), np.asarray(x, float), np.asarray(a), np.asarray(b))
    coarse = optimize.minimize(stats.deviance, np.ones(2), method="Nelder-Mead",
                               options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    fine = optimize.minimize(stats.deviance, np.abs(coarse.x), method="L-BFGS-B", bounds=[(0, None)] * 2)
    best = fine if fine.fun <= coarse.fun else coarse
    theta = (abs(float(best.x[0])), abs(float(best.x[1])))
    _, beta, r2 = stats.solve(theta)
    s2 = r2 / stats.n
    return CrossedFit(loglik=-0.5 * float(best.fun), beta=beta, variances=(s2 * theta[0] ** 2, s2 * theta[1] ** 2),
                      residual=s2, theta=theta,
                      converged=bool(coarse.success and abs(coarse.fun - fine.fun) < 1e-4))
