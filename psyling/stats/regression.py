"""Regressions of human measures (reading times, ERP amplitudes) on surprisal.

Log-likelihoods are natural-log (nats); ``delta_loglik`` reports them per token. Surprisal columns are taken as
given, so coefficients are "target units per surprisal unit" (ms or µV per bit for psyling's bits).
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import PsylingError
from .lmm import LinearMixedModel, LMMFit, RandomTerm

Columns = Union[str, Sequence[str]]
BASELINE = ["word_length", "zipf_freq", "word_position"]
PUNCTUATION = string.punctuation + "“”‘’–—…"


def _list(cols: Columns) -> list[str]:
    return [cols] if isinstance(cols, str) else list(cols)


def _need(df: pd.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise PsylingError(f"{what}: missing column(s) {', '.join(missing)} (have: {', '.join(map(str, df.columns))})")


def add_spillover(df: pd.DataFrame, columns: Columns, lags: Sequence[int] = (1, 2), by: Columns = "item",
                  position: Optional[str] = "word_index") -> pd.DataFrame:
    """A copy of ``df`` with ``{column}_prev{lag}``: the value of the word ``lag`` positions earlier in the same
    ``by`` group (item, sentence or story); NaN where that word does not exist (the first words) or has no row.

    Words are located by ``position`` (e.g. word_index), so gaps and row order do not matter;
    ``position=None`` uses the row order within each group instead."""
    columns, by = _list(columns), _list(by)
    _need(df, columns + by + ([position] if position else []), "add_spillover")
    out = df.copy()
    if position is None:
        grouped = df.groupby(by, sort=False)[columns]
        for lag in lags:
            shifted = grouped.shift(lag)
            for col in columns:
                out[f"{col}_prev{lag}"] = shifted[col]
        return out
    if df.duplicated(by + [position]).any():
        raise PsylingError(f"add_spillover: ({', '.join(by + [position])}) is not unique")
    source = df[by + [position] + columns]
    for lag in lags:
        moved = source.assign(**{position: source[position] + lag})
        moved = moved.rename(columns={c: f"{c}_prev{lag}" for c in columns})
        merged = df[by + [position]].merge(moved, on=by + [position], how="left")
        for col in columns:
            out[f"{col}_prev{lag}"] = merged[f"{col}_prev{lag}"].to_numpy()
    return out


def _strip(word: str) -> str:
    return word.strip(PUNCTUATION)


def baseline_predictors(words: pd.DataFrame, word_col: str = "word",
                        position: str = "word_index") -> pd.DataFrame:
    """A copy of ``words`` with ``word_length`` (characters, leading/trailing punctuation stripped),
    ``zipf_freq`` (``wordfreq.zipf_frequency`` of the stripped, lower-cased word, English; 0 for unknown words)
    and ``word_position`` (the word's 0-based position in its item)."""
    from wordfreq import zipf_frequency

    _need(words, [word_col, position], "baseline_predictors")
    stripped = words[word_col].astype(str).map(_strip)
    zipf = {w: zipf_frequency(w.lower(), "en") if w else 0.0 for w in stripped.unique()}
    return words.assign(word_length=stripped.str.len().astype(float), zipf_freq=stripped.map(zipf).astype(float),
                        word_position=words[position].astype(float))


def _design(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    return np.column_stack([np.ones(len(df))] + [df[c].to_numpy(float) for c in cols])


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients and the ML residual variance (RSS / n)."""
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    return beta, float(resid @ resid / len(y))


def gaussian_loglik(y: np.ndarray, mean: np.ndarray, variance: float) -> np.ndarray:
    """Per-observation log-density (nats) of y under N(mean, variance)."""
    return -0.5 * (math.log(2 * math.pi * variance) + (y - mean) ** 2 / variance)


def _complete(df: pd.DataFrame, numeric: list[str], labels: list[str], what: str) -> tuple[pd.DataFrame, int]:
    """Rows with a finite value in every ``numeric`` column and a value in every ``labels`` column, and the
    number of rows dropped."""
    _need(df, numeric + labels, what)
    wrong = [c for c in numeric if not pd.api.types.is_numeric_dtype(df[c])]
    if wrong:
        raise PsylingError(f"{what}: column(s) {', '.join(wrong)} are not numeric")
    keep = np.isfinite(df[numeric].to_numpy(dtype=float, na_value=np.nan)).all(axis=1)
    keep &= df[labels].notna().all(axis=1).to_numpy()
    return df.loc[keep].reset_index(drop=True), int((~keep).sum())


def fold_assignment(groups: pd.Series, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..folds-1) of every row; whole groups stay in one fold (groups sorted, shuffled with
    ``seed``, dealt in turn), so the assignment does not depend on row order."""
    unique = sorted(pd.unique(groups), key=str)
    if len(unique) < folds:
        raise PsylingError(f"{len(unique)} groups cannot fill {folds} folds (each group stays in one fold)")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[g]: i % folds for i, g in enumerate(order)}
    return groups.map(fold_of).to_numpy(int)


@dataclass
class DeltaLL:
    """Cross-validated gain in log-likelihood per token (nats) from adding ``predictors`` to ``baseline``.

    ``delta_ll`` is the mean over all held-out tokens; ``se`` the standard error of the fold means; ``t``/``p``
    a paired t-test of the per-token held-out log-likelihoods (tokens treated as independent).
    ``coefficients``/``coef_se`` come from the full model fitted on all rows (target units per predictor unit)."""
    target: str
    predictors: list[str]
    baseline: list[str]
    n: int
    n_dropped: int
    n_groups: int
    folds: int
    delta_ll: float
    se: float
    t: float
    p_value: float
    fold_delta_ll: list[float]
    delta_ll_in_sample: float
    coefficients: dict[str, float]
    coef_se: dict[str, float]
    per_token: np.ndarray = field(repr=False)


def delta_loglik(df: pd.DataFrame, target: str, baseline: Sequence[str], predictors: Sequence[str],
                 folds: int = 10, groups: str = "item", seed: int = 0) -> DeltaLL:
    """OLS with K-fold cross-validation (whole ``groups`` per fold): held-out log-likelihood of
    baseline + predictors minus baseline, each a Gaussian with its training residual variance (RSS/n).

    Rows with NaN in any used column are dropped and counted in ``n_dropped``."""
    baseline, predictors = list(baseline), list(predictors)
    if not predictors:
        raise PsylingError("delta_loglik: no predictors to test")
    data, dropped = _complete(df, [target] + baseline + predictors, [groups], "delta_loglik")
    if len(data) <= len(baseline) + len(predictors) + 1:
        raise PsylingError(f"delta_loglik: {len(data)} complete rows for target {target!r} are too few")
    y = data[target].to_numpy(float)
    x_base, x_full = _design(data, baseline), _design(data, baseline + predictors)
    fold = fold_assignment(data[groups], folds, seed)
    per_token = np.empty(len(data))
    for k in range(folds):
        test = fold == k
        train = ~test
        deltas = []
        for x in (x_full, x_base):
            beta, var = _ols(x[train], y[train])
            deltas.append(gaussian_loglik(y[test], x[test] @ beta, var))
        per_token[test] = deltas[0] - deltas[1]
    fold_means = np.array([per_token[fold == k].mean() for k in range(folds)])
    beta_full, var_full = _ols(x_full, y)
    _, var_base = _ols(x_base, y)
    resid_df = len(y) - x_full.shape[1]
    cov = np.linalg.pinv(x_full.T @ x_full) * var_full * len(y) / resid_df
    names = baseline + predictors
    test_result = stats.ttest_1samp(per_token, 0.0)
    return DeltaLL(target=target, predictors=predictors, baseline=baseline, n=len(data), n_dropped=dropped,
                   n_groups=int(data[groups].nunique()), folds=folds, delta_ll=float(per_token.mean()),
                   se=float(fold_means.std(ddof=1) / math.sqrt(folds)), t=float(test_result.statistic),
                   p_value=float(test_result.pvalue), fold_delta_ll=fold_means.tolist(),
                   delta_ll_in_sample=0.5 * math.log(var_base / var_full),
                   coefficients={c: float(b) for c, b in zip(names, beta_full[1:])},
                   coef_se={c: float(s) for c, s in zip(names, np.sqrt(np.diag(cov))[1:])}, per_token=per_token)


@dataclass
class LinkingFunction:
    """A linear link from surprisal to a human measure: ``slopes[lag]`` is the change in the measure (ms or µV)
    per unit of surprisal on the word ``lag`` positions back (0: the word itself, 1, 2: spillover).

    Use: a manipulation that raises the surprisal of a critical word by Δs bits predicts ``slopes[0] * Δs`` on
    that word, ``slopes[1] * Δs`` on the next word and ``slopes[2] * Δs`` two words on; a region's predicted
    effect is the sum over its words of slope × surprisal difference of the word ``lag`` positions earlier."""
    target: str
    surprisal: str
    slopes: dict[int, float]
    slope_se: dict[int, float]
    intercept: float
    baseline_coefficients: dict[str, float]
    n: int
    n_dropped: int
    r_squared: float


def _lagged(surprisal: str, lag: int) -> str:
    return surprisal if lag == 0 else f"{surprisal}_prev{lag}"


def fit_linking(df: pd.DataFrame, target: str, surprisal: str = "surprisal", lags: Sequence[int] = (0, 1, 2),
                baseline: Sequence[str] = tuple(BASELINE), by: Columns = "item",
                position: Optional[str] = "word_index") -> LinkingFunction:
    """OLS of ``target`` on surprisal at ``lags`` (spillover columns are added when absent, see add_spillover)
    plus the ``baseline`` columns; rows with NaN in a used column are dropped and counted."""
    lags, baseline = list(lags), list(baseline)
    missing_lags = [lag for lag in lags if lag and _lagged(surprisal, lag) not in df.columns]
    if missing_lags:
        df = add_spillover(df, surprisal, missing_lags, by=by, position=position)
    names = [_lagged(surprisal, lag) for lag in lags]
    data, dropped = _complete(df, [target] + names + baseline, [], "fit_linking")
    y = data[target].to_numpy(float)
    x = _design(data, names + baseline)
    if len(y) <= x.shape[1]:
        raise PsylingError(f"fit_linking: {len(y)} complete rows for target {target!r} are too few")
    beta, var = _ols(x, y)
    cov = np.linalg.pinv(x.T @ x) * var * len(y) / (len(y) - x.shape[1])
    se = np.sqrt(np.diag(cov))
    return LinkingFunction(target=target, surprisal=surprisal,
                           slopes={lag: float(beta[1 + i]) for i, lag in enumerate(lags)},
                           slope_se={lag: float(se[1 + i]) for i, lag in enumerate(lags)},
                           intercept=float(beta[0]),
                           baseline_coefficients={c: float(b) for c, b in zip(baseline, beta[1 + len(lags):])},
                           n=len(y), n_dropped=dropped, r_squared=float(1 - var / y.var()))


@dataclass
class MixedDeltaLL:
    """Likelihood-ratio test of ``predictors`` in a linear mixed model with crossed random intercepts.

    ``delta_ll`` = ML log-likelihood(full) - ML log-likelihood(baseline), in total nats; ``lr`` = 2 × delta_ll,
    chi-square with ``df`` = number of predictors. ``coefficients`` are the full model's fixed effects
    (Intercept included); ``variances`` its subject, item and residual variances."""
    target: str
    predictors: list[str]
    baseline: list[str]
    n: int
    n_dropped: int
    n_subjects: int
    n_items: int
    loglik_baseline: float
    loglik_full: float
    delta_ll: float
    lr: float
    df: int
    p_value: float
    coefficients: dict[str, float]
    variances: dict[str, float]
    converged: bool


def mixed_delta_loglik(df: pd.DataFrame, target: str, baseline: Sequence[str], predictors: Sequence[str],
                       subject: str = "subject", item: str = "item") -> MixedDeltaLL:
    """Trial-level likelihood-ratio test with by-subject and by-item random intercepts (ML).

    The random intercepts are exactly crossed; the fits maximise lme4's profiled deviance
    (:class:`psyling.stats.lmm.LinearMixedModel`), which eliminates the factor with more levels and costs one
    Cholesky of the other's levels per evaluation, so hundreds of thousands of trials fit in seconds. Random
    slopes are not modelled.
    Rows with NaN in a used column are dropped and counted."""
    baseline, predictors = list(baseline), list(predictors)
    data, dropped = _complete(df, [target] + baseline + predictors, [subject, item], "mixed_delta_loglik")
    y = data[target].to_numpy(float)
    base, full = (_crossed_fit(y, data, names, subject, item) for names in (baseline, baseline + predictors))
    delta = full.loglik - base.loglik
    return MixedDeltaLL(target=target, predictors=predictors, baseline=baseline, n=len(data), n_dropped=dropped,
                        n_subjects=int(data[subject].nunique()), n_items=int(data[item].nunique()),
                        loglik_baseline=base.loglik, loglik_full=full.loglik, delta_ll=delta,
                        lr=2 * delta, df=len(predictors), p_value=float(stats.chi2.sf(max(2 * delta, 0.0),
                                                                                     len(predictors))),
                        coefficients=dict(zip(["Intercept"] + baseline + predictors, map(float, full.beta))),
                        variances={"subject": _variance(full, subject), "item": _variance(full, item),
                                   "residual": full.sigma ** 2},
                        converged=base.converged and full.converged)


def _variance(fit: LMMFit, group: str) -> float:
    table = fit.covariance
    return float(table.loc[(table["group"] == group) & table["name2"].isna(), "vcov"].iloc[0])


def _crossed_fit(y: np.ndarray, data: pd.DataFrame, names: list[str], subject: str, item: str) -> LMMFit:
    """ML fit of y on an intercept and ``names`` with crossed random intercepts for subject and item."""
    terms = [RandomTerm(col, pd.factorize(data[col], sort=True)[0], np.ones((len(data), 1)), ("(Intercept)",))
             for col in (subject, item)]
    return LinearMixedModel(y, _design(data, names), ["Intercept", *names], terms, reml=False).fit()
