"""Linear mixed-effects models (statsmodels MixedLM) that simplify instead of failing.

:func:`fit_mixed` fits a model and, when a fit raises (e.g. a singular matrix), does not converge with any of the
optimizers tried, or is singular (a random-effect standard deviation ~0 relative to the residual one, or random
effects perfectly correlated: lme4's ``isSingular``), steps down a ladder: random slopes -> random intercepts only
-> OLS, recording what was simplified and why in ``MixedFit.fallback``. Aliased fixed-effect columns are dropped
first (as R's ``lm`` and ``lmer`` do), also with a note. Warnings are recorded, never printed.
:func:`crossed_intercepts` fits crossed random intercepts (e.g. subjects and items) and :func:`condition_effects`
estimates condition effects on one set's region surprisal with by-item random effects.
"""
from __future__ import annotations

import itertools
import math
import re
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy.stats import norm
from statsmodels.regression.mixed_linear_model import MixedLM

from ..errors import PsylingError

OPTIMIZERS = ("lbfgs", "bfgs", "powell", "nm")
SINGULAR_TOL = 1e-2  # relative random-effect sd (Cholesky diagonal of cov / residual variance) taken as zero
COEFFICIENT_COLUMNS = ["term", "estimate", "std_error", "z", "p_value", "ci_low", "ci_high"]
_Z95 = float(norm.ppf(0.975))


@dataclass(frozen=True)
class MixedFit:
    """A fitted model. ``coefficients``: term, estimate, std_error, z (t for OLS), p_value, 95% Wald CI.

    ``random_effects`` is the random-effects structure actually fitted, in lme4 notation ("none (OLS)" after the
    last fallback); ``fallback`` is None or one line saying what was simplified and why; ``warnings`` holds the
    warnings raised while fitting (every attempt); ``n_groups`` maps each grouping factor to its number of levels;
    ``variances`` the random-effect and residual variances; ``n_dropped`` the rows dropped for missing values.
    ``aic`` counts fixed effects, covariance parameters and the residual variance (for REML fits, as lme4 does,
    on the REML log-likelihood)."""
    coefficients: pd.DataFrame
    loglik: float
    aic: float
    converged: bool
    random_effects: str
    fallback: str | None
    n_obs: int
    n_groups: dict[str, int]
    method: str
    variances: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    n_dropped: int = 0


def _complete_rows(data: pd.DataFrame, texts: list[str], group: str) -> tuple[pd.DataFrame, int]:
    """The rows with no missing value in the columns the formulas (or the grouping) use, and how many were not."""
    if not isinstance(data, pd.DataFrame):
        raise PsylingError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if group not in data.columns:
        known = ", ".join(map(str, data.columns))
        raise PsylingError(f"grouping column {group!r} is not in the data (columns: {known})")
    text = " ".join(texts)
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)) | set(re.findall(r"Q\(\s*['\"](.+?)['\"]\s*\)", text))
    used = [c for c in data.columns if c in words or c == group]
    missing = data[used].isna().any(axis=1)
    frame = data.loc[~missing].reset_index(drop=True)
    if frame.empty:
        raise PsylingError(f"no complete rows: every row has a missing value in {', '.join(map(str, used))}")
    return frame, int(missing.sum())


def _build(frame: pd.DataFrame, formula: str, group: str, re_formula: str | None,
           vc: dict[str, str] | None) -> MixedLM:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = MixedLM.from_formula(formula, frame, re_formula=re_formula, vc_formula=vc, groups=group)
    except Exception as exc:  # the formula engines raise many types; all mean the user's formula does not fit
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PsylingError(f"cannot build the model {formula!r} (random: {re_formula!r}, vc: {vc!r}): "
                           f"{message}") from None
    if len(model.endog) != len(frame):
        raise PsylingError(f"model {formula!r}: missing values in columns psyling could not identify in the formula "
                           "(use plain column names)")
    return model


def _drop_aliased(model: MixedLM, frame: pd.DataFrame, formula: str) -> tuple[str, pd.DataFrame, list[str], str | None]:
    """Keep fixed-effect columns that add rank (earlier columns win); rewrite the model over the kept columns."""
    exog, names = np.asarray(model.exog, dtype=float), list(model.exog_names)
    keep: list[int] = []
    for j in range(exog.shape[1]):
        if np.linalg.matrix_rank(exog[:, keep + [j]]) == len(keep) + 1:
            keep.append(j)
    if len(keep) == exog.shape[1]:
        return formula, frame, names, None
    dropped = [names[j] for j in range(exog.shape[1]) if j not in keep]
    frame = frame.assign(psyling_y=np.asarray(model.endog, dtype=float),
                         **{f"psyling_x{j}": exog[:, j] for j in keep})
    formula = "psyling_y ~ 0 + " + " + ".join(f"psyling_x{j}" for j in keep)
    note = f"dropped aliased fixed-effect column(s) {', '.join(dropped)} (linearly dependent on earlier columns)"
    return formula, frame, [names[j] for j in keep], note


def _has_slopes(re_formula: str | None) -> bool:
    return re_formula is not None and re_formula.replace("~", "").replace(" ", "") not in ("1", "0", "-1", "")


def _describe(group: str, re_formula: str | None, vc: dict[str, str] | None) -> str:
    """The random-effects structure in lme4 notation, e.g. "(1 + Time | Pig)" or "(1 | subject) + (1 | item)"."""
    parts = []
    terms = "0" if re_formula is None and vc else (re_formula or "1").replace("~", "").strip()
    if terms.replace(" ", "") not in ("0", "-1"):
        parts.append(f"({terms if terms.startswith(('0', '-1', '1')) else '1 + ' + terms} | {group})")
    for name, formula in (vc or {}).items():
        match = re.fullmatch(r"0\s*\+\s*C\((\w+)\)", formula.strip())
        parts.append(f"(1 | {match[1]})" if match else f"({formula} | {name})")
    return " + ".join(parts) or "none"


def _record(caught: list[warnings.WarningMessage], into: list[str]) -> None:
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).strip()}"
        if text not in into:
            into.append(text)


def _singular(result: object, model: MixedLM) -> str | None:
    """lme4-style singularity: a ~zero diagonal in the Cholesky factor of the relative random-effect covariance."""
    scale = float(result.scale)
    problems = []
    if model.k_re:
        cov = np.asarray(result.cov_re, dtype=float) / scale
        try:
            theta = np.diag(np.linalg.cholesky(cov))
        except np.linalg.LinAlgError:
            theta = np.zeros(len(cov))
        for name, t, var in zip(model.data.exog_re_names, theta, np.diag(cov)):
            if not t >= SINGULAR_TOL:
                zero = not var >= (2 * SINGULAR_TOL) ** 2
                problems.append(f"{name} {'variance ~0' if zero else 'perfectly correlated'}")
    if model.k_vc:
        for name, var in zip(model.exog_vc.names, np.asarray(result.vcomp, dtype=float) / scale):
            if not math.sqrt(max(var, 0.0)) >= SINGULAR_TOL:
                problems.append(f"{name} variance ~0")
    return f"singular fit ({', '.join(problems)})" if problems else None


def _try(model: MixedLM, reml: bool, optimizers: tuple[str, ...], captured: list[str]) -> tuple[object, str | None]:
    """Fit with each optimizer in turn until one converges (or reaches a singular fit); (result, problem or None)."""
    failures = []
    for method in optimizers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = model.fit(reml=reml, method=method)
            except (np.linalg.LinAlgError, ValueError, ArithmeticError) as exc:
                result = None
                failures.append(f"{method} raised {type(exc).__name__}: {str(exc).strip()[:80]}")
        _record(caught, captured)
        if result is None:
            continue
        singular = _singular(result, model)
        if singular:  # a property of the model: other optimizers will not help
            return result, singular + ("" if result.converged else f", {method} did not converge")
        if result.converged:
            break
        failures.append(f"{method} did not converge")
    else:
        return None, "no optimizer succeeded (" + "; ".join(failures) + ")"
    with warnings.catch_warnings(record=True) as caught:  # the standard errors are computed here, on first use
        warnings.simplefilter("always")
        finite = np.all(np.isfinite(np.asarray(result.bse_fe, dtype=float)))
    _record(caught, captured)
    if not finite:
        return result, "standard errors undefined (singular Hessian)"
    return result, None


def _table(names: list[str], estimate: np.ndarray, se: np.ndarray, stat: np.ndarray, p: np.ndarray,
           low: np.ndarray, high: np.ndarray) -> pd.DataFrame:
    columns = [names] + [np.asarray(v, dtype=float) for v in (estimate, se, stat, p, low, high)]
    return pd.DataFrame(dict(zip(COEFFICIENT_COLUMNS, columns)))


def _mixed_result(result: object, model: MixedLM, names: list[str], group: str) -> dict[str, object]:
    est, se = np.asarray(result.fe_params, dtype=float), np.asarray(result.bse_fe, dtype=float)
    z = est / se
    table = _table(names, est, se, z, 2 * norm.sf(np.abs(z)), est - _Z95 * se, est + _Z95 * se)
    variances = {}
    for name, var in zip(model.data.exog_re_names, np.diag(np.asarray(result.cov_re, dtype=float))):
        variances[f"{group}|{'(Intercept)' if name == group else name}"] = float(var)
    if model.k_vc:
        variances.update(zip(model.exog_vc.names, map(float, result.vcomp)))
    variances["Residual"] = float(result.scale)
    loglik = float(result.llf)
    return dict(coefficients=table, loglik=loglik, aic=-2 * loglik + 2 * (np.size(result.params) + 1),
                converged=bool(result.converged), method=result.method, variances=variances)


def _ols_result(frame: pd.DataFrame, formula: str, names: list[str], captured: list[str]) -> dict[str, object]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = smf.ols(formula, frame).fit()
        low, high = np.asarray(result.conf_int(), dtype=float).T
    _record(caught, captured)
    table = _table(names, result.params, result.bse, result.tvalues, result.pvalues, low, high)
    loglik = float(result.llf)
    return dict(coefficients=table, loglik=loglik, aic=-2 * loglik + 2 * (len(names) + 1), converged=True,
                method="OLS", variances={"Residual": float(result.scale)})


def _group_sizes(frame: pd.DataFrame, group: str, model: MixedLM) -> dict[str, int]:
    sizes = {group: int(frame[group].nunique())} if frame[group].nunique() > 1 else {}
    if model.k_vc:
        for name, columns in zip(model.exog_vc.names, model.exog_vc.colnames):
            sizes[name] = sum(len(c) for c in columns)
    return sizes


def fit_mixed(data: pd.DataFrame, formula: str, group: str, re_formula: str | None = None,
              vc: dict[str, str] | None = None, reml: bool = True,
              optimizers: tuple[str, ...] = OPTIMIZERS) -> MixedFit:
    """Fit ``formula`` with random effects by ``group`` (``re_formula``, default a random intercept) and variance
    components ``vc`` (name -> formula, e.g. {"item": "0 + C(item)"}); REML unless ``reml=False``.

    Rows with a missing value in a column the model uses are dropped and counted (``n_dropped``). On failure the
    model is simplified (random slopes -> random intercepts -> OLS) and the reason is kept in ``fallback``."""
    frame, n_dropped = _complete_rows(data, [formula, re_formula or "", *(vc or {}).values()], group)
    model = _build(frame, formula, group, re_formula, vc)
    n_groups = _group_sizes(frame, group, model)
    formula, frame, names, alias_note = _drop_aliased(model, frame, formula)
    notes = [alias_note] if alias_note else []
    captured: list[str] = []
    rungs = [(re_formula, vc)] + ([("1", vc)] if _has_slopes(re_formula) else [])
    for k, (re_f, vc_f) in enumerate(rungs):
        if k or alias_note:  # the model built above already is the first rung unless columns were dropped
            model = _build(frame, formula, group, re_f, vc_f)
        result, problem = _try(model, reml, optimizers, captured)
        spec = _describe(group, re_f, vc_f)
        if problem is None:
            fitted = _mixed_result(result, model, names, group)
            break
        following = _describe(group, *rungs[k + 1]) if k + 1 < len(rungs) else "OLS (no random effects)"
        notes.append(f"{spec}: {problem}; fitted {following} instead")
    else:
        spec = "none (OLS)"
        fitted = _ols_result(frame, formula, names, captured)
    return MixedFit(random_effects=spec, fallback="; ".join(notes) or None, n_obs=len(frame), n_groups=n_groups,
                    warnings=captured, n_dropped=n_dropped, **fitted)


def crossed_intercepts(data: pd.DataFrame, formula: str, groups: list[str], reml: bool = True) -> MixedFit:
    """Crossed random intercepts, e.g. ``groups=["subject", "item"]``: variance components over one all-ones group.

    Each grouping factor becomes a dense indicator matrix, so this is slow (and memory-hungry) for thousands of
    levels; it suits the tens to hundreds of subjects and items of reading-time studies."""
    if not isinstance(data, pd.DataFrame):
        raise PsylingError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [g for g in groups if g not in data.columns]
    if missing or not groups:
        raise PsylingError(f"crossed_intercepts: grouping column(s) not in the data: {', '.join(missing) or '(none)'}")
    odd = [g for g in groups if not g.isidentifier()]
    if odd:
        raise PsylingError(f"crossed_intercepts: rename grouping column(s) {', '.join(odd)} to plain identifiers")
    vc = {g: f"0 + C({g})" for g in groups}
    return fit_mixed(data.assign(psyling_all=1), formula, "psyling_all", re_formula="0", vc=vc, reml=reml)


# --- condition effects on one set's region surprisal --------------------------------------------------------------

@dataclass(frozen=True)
class _Column:
    label: str          # coefficient name, e.g. "verb", "verb:comma", "condition[b]"
    coding: str
    values: dict[str, float]  # condition -> code
    term: tuple[str, ...]     # the factors it belongs to (the random-slope unit)


def _design(factors: dict[str, list[str]] | None, conditions: list[str]) -> tuple[list[_Column], str]:
    """Coded fixed-effect columns (all interactions) and the meaning of the intercept."""
    if factors is None:
        ref = conditions[0]
        columns = [_Column(f"condition[{c}]", f"treatment: {c} - {ref} (reference)",
                           {d: float(d == c) for d in conditions}, ("condition",)) for c in conditions[1:]]
        return columns, f"treatment: mean of {ref} (reference)"
    contrasts: dict[str, list[tuple[str, str, dict[str, float]]]] = {}
    for name, per_condition in factors.items():
        if len(per_condition) != len(conditions):
            raise PsylingError(f"factor {name!r} gives {len(per_condition)} levels for {len(conditions)} conditions "
                               f"({', '.join(conditions)})")
        levels = list(dict.fromkeys(per_condition))
        if len(levels) < 2:
            raise PsylingError(f"factor {name!r} has a single level {levels[0]!r} over the conditions")
        k = len(levels)
        contrasts[name] = [(name if k == 2 else f"{name}[{level}]", f"{level} - {levels[0]}",
                            {c: float(lev == level) - 1 / k for c, lev in zip(conditions, per_condition)})
                           for level in levels[1:]]
    columns = []
    for order in range(1, len(contrasts) + 1):
        for term in itertools.combinations(contrasts, order):
            for parts in itertools.product(*(contrasts[f] for f in term)):
                if order == 1:
                    kind = "deviation -0.5/+0.5" if len(contrasts[term[0]]) == 1 else "simple (centred treatment)"
                    coding = f"{kind}: {parts[0][1]}"
                else:
                    coding = "interaction: " + " x ".join(f"({p[1]})" for p in parts)
                values = {c: math.prod(p[2][c] for p in parts) for c in conditions}
                columns.append(_Column(":".join(p[0] for p in parts), coding, values, term))
    return columns, "mean of the condition means (balanced design)"


def _region_table(regions: pd.DataFrame, region: str, conditions: list[str], measure: str) -> tuple[pd.DataFrame, int]:
    missing = [c for c in ("set", "item", "condition", "region", measure) if c not in regions.columns]
    if missing:
        raise PsylingError(f"regions table: missing column(s) {', '.join(missing)}")
    sets = list(pd.unique(regions["set"]))
    if len(sets) != 1:
        named = ", ".join(map(str, sets[:5]))
        raise PsylingError(f"regions table: expected one stimulus set, got {len(sets)} ({named})")
    where = f"set {sets[0]}"
    if len(set(conditions)) != len(conditions) or len(conditions) < 2:
        raise PsylingError(f"{where}: give at least two distinct conditions, got {conditions}")
    rows = regions[regions["region"] == region]
    if rows.empty:
        known = ", ".join(map(str, pd.unique(regions["region"])))
        raise PsylingError(f"{where}: no region {region!r} (regions: {known})")
    absent = [c for c in conditions if c not in set(rows["condition"])]
    if absent:
        raise PsylingError(f"{where} region {region}: no condition(s) {', '.join(absent)} "
                           f"(conditions: {', '.join(map(str, pd.unique(rows['condition'])))})")
    rows = rows[rows["condition"].isin(conditions)]
    dup = rows.duplicated(["item", "condition"])
    if dup.any():
        item, cond = rows.loc[dup, ["item", "condition"]].iloc[0]
        raise PsylingError(f"{where} region {region}: item {item} condition {cond} appears more than once")
    nan = rows[measure].isna()
    return rows.loc[~nan, ["item", "condition", measure]].reset_index(drop=True), int(nan.sum())


def _identifiable_slopes(frame: pd.DataFrame, columns: list[_Column]) -> tuple[list[int], list[str]]:
    """By-item random slopes to fit, term by term in hierarchical order (main effects first).

    Rule: with one observation per item x condition, a term's slopes are added when, for at least half of the items
    (and at least two), the item's own cells give a random-effects matrix [1, slopes...] of full column rank q with
    more cells than q. A term whose code is constant within items is therefore never added, and a saturated set
    (q = number of cells, e.g. all of verb, comma and verb:comma in a 2x2) is not: its slope variances would be
    confounded with the residual variance. Terms are skipped, not the whole ladder stopped."""
    patterns = frame.groupby("item")["condition"].agg(frozenset).value_counts()
    need = max(2, math.ceil(patterns.sum() / 2))
    chosen: list[int] = []
    skipped: list[str] = []
    for term in dict.fromkeys(c.term for c in columns):
        candidate = chosen + [j for j, c in enumerate(columns) if c.term == term]
        q = 1 + len(candidate)
        ok = 0
        for cells, count in patterns.items():
            z = np.array([[1.0] + [columns[j].values[c] for j in candidate] for c in sorted(cells)])
            if len(cells) > q and np.linalg.matrix_rank(z) == q:
                ok += count
        if ok >= need:
            chosen = candidate
        else:
            skipped.append(":".join(term))
    return chosen, skipped


def condition_effects(regions: pd.DataFrame, factors: dict[str, list[str]] | None, region: str,
                      conditions: list[str], measure: str = "surprisal") -> MixedFit:
    """Condition effects on one set's ``region`` ``measure`` (regions.parquet rows), by-item random effects, ML fit.

    ``factors`` maps factor names to one level per condition (in ``conditions`` order); the model has all their
    interactions, 2-level factors deviation-coded (-0.5/+0.5: main effects are average differences, a two-way
    interaction a difference of differences) and k-level factors simple-coded (each level minus the first, intercept
    the grand mean). ``factors=None``: one factor ``condition``, treatment-coded against ``conditions[0]``. The
    ``coding`` column of the coefficient table states each coefficient's meaning. By-item random intercepts, plus
    the identifiable random slopes (see :func:`_identifiable_slopes`); omitted slopes are named in ``fallback``.
    Rows with a missing measure are dropped and counted in ``n_dropped``; fewer than 2 items is a one-line error,
    not a fit."""
    table, n_dropped = _region_table(regions, region, conditions, measure)
    n_items = table["item"].nunique()
    if n_items < 2:
        raise PsylingError(f"set {regions['set'].iloc[0]} region {region}: {n_items} item(s) with a value; a "
                           "by-item model needs at least 2 (with one, neither the item nor the residual variance "
                           "can be estimated)")
    columns, intercept = _design(factors, conditions)
    frame = pd.DataFrame({"y": table[measure].astype(float), "item": table["item"].astype(str),
                          "condition": table["condition"]})
    for j, column in enumerate(columns):
        frame[f"c{j}"] = frame["condition"].map(column.values)
    chosen, skipped = _identifiable_slopes(frame, columns)
    re_formula = "1 + " + " + ".join(f"c{j}" for j in chosen) if chosen else None
    formula = "y ~ 1 + " + " + ".join(f"c{j}" for j in range(len(columns)))
    fit = fit_mixed(frame, formula, "item", re_formula=re_formula, reml=False)

    def label(text: str) -> str:
        return re.sub(r"\bc(\d+)\b", lambda m: columns[int(m[1])].label, text)

    notes = []
    if skipped:
        notes.append(f"by-item random slopes for {', '.join(skipped)} omitted: not identifiable with one observation "
                     "per item and condition (an item needs more cells than random-effect terms)")
    if fit.fallback:
        notes.append(label(fit.fallback))
    coefficients = fit.coefficients.assign(term=[label(t) for t in fit.coefficients["term"]])
    codings = {c.label: c.coding for c in columns} | {"Intercept": intercept}
    coefficients["coding"] = coefficients["term"].map(codings)
    return replace(fit, coefficients=coefficients, random_effects=label(fit.random_effects),
                   fallback="; ".join(notes) or None, variances={label(k): v for k, v in fit.variances.items()},
                   n_dropped=n_dropped + fit.n_dropped)
