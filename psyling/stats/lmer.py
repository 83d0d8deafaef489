"""lme4-style model formulas on psyling's mixed-model engine: ``y ~ x + (1 + x | item) + (1 | subject)``.

:func:`lmer` parses the formula (fixed part by patsy, each ``(terms | group)`` bar a correlated random term),
drops rows with a missing value and aliased fixed-effect columns (as R's ``lm``/``lmer`` do, with a note), and
fits by lme4's profiled deviance (:mod:`.lmm`), with Satterthwaite t tests as lmerTest computes them
(:mod:`.satterthwaite`). A fit that is singular (lme4's ``isSingular``) or does not reach a checked optimum is
simplified step by step: random slopes -> random intercepts only -> OLS, each step and its reason recorded."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import patsy

from ..errors import PsylingError, first_line
from .lmm import LinearMixedModel, LMMFit, RandomTerm
from .satterthwaite import satterthwaite

_BAR = re.compile(r"\(([^()|]+)\|([^()|]+)\)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class Bar:
    """One random-effects term as written: its columns' formula (e.g. ``1 + x``) and grouping column."""
    terms: str
    group: str

    def __str__(self) -> str:
        return f"({self.terms} | {self.group})"

    @property
    def has_slopes(self) -> bool:
        return self.terms.replace(" ", "") not in ("1", "1+0", "0+1")

    def intercept_only(self) -> "Bar":
        return Bar("1", self.group)


@dataclass(frozen=True)
class Formula:
    """A parsed lme4 formula: response, fixed-effects right-hand side (patsy) and the random-effects bars."""
    response: str
    fixed: str
    bars: tuple[Bar, ...]

    @classmethod
    def parse(cls, text: str) -> "Formula":
        if text.count("~") != 1:
            raise PsylingError(f"model formula {text!r}: write it as 'response ~ fixed effects + (terms | group)'")
        response, rhs = (part.strip() for part in text.split("~"))
        bars = tuple(Bar(" ".join(t.split()), g.strip()) for t, g in _BAR.findall(rhs))
        fixed = _BAR.sub("", rhs)
        fixed = re.sub(r"\+\s*(?=\+|$)", "", re.sub(r"^\s*\+", "", fixed.strip())).strip() or "1"
        if "|" in fixed:
            raise PsylingError(f"model formula {text!r}: a random-effects term must be written '(terms | group)'")
        return cls(response, fixed, bars)

    @property
    def random(self) -> str:
        """The random-effects structure in lme4 notation ("none" without bars)."""
        return " + ".join(map(str, self.bars)) or "none"

    def columns(self) -> set[str]:
        """Every column name the formula may read (for dropping incomplete rows)."""
        text = " ".join([self.response, self.fixed, *(f"{b.terms} {b.group}" for b in self.bars)])
        quoted = set(re.findall(r"Q\(\s*['\"](.+?)['\"]\s*\)", text))
        return set(_NAME.findall(text)) | quoted


COEFFICIENT_COLUMNS = ["term", "estimate", "std_error", "df", "t", "p_value", "ci_low", "ci_high"]


@dataclass(frozen=True)
class MixedFit:
    """A fitted model. ``coefficients``: term, estimate, std_error, df, t, p_value and the 95% CI (Satterthwaite
    df as lmerTest; OLS: residual df). ``covariance``: random-effect variances, covariances and correlations
    (lme4's ``as.data.frame(VarCorr(m))``: group, name1, name2, vcov, sd_cor) and the residual; ``variances`` the
    same variances keyed "group|name". ``random_effects``: the structure actually fitted, in lme4 notation ("none
    (OLS)" after the last step); ``fallback``: None or what was simplified and why; ``singular``: lme4's
    ``isSingular`` of the structure first tried; ``warnings``: every optimiser message (never printed);
    ``optimum_check``: max |projected gradient| of the deviance at the reported optimum. ``aic`` counts fixed
    effects, covariance parameters and the residual variance (on the REML criterion for REML fits, as lme4)."""
    coefficients: pd.DataFrame
    loglik: float
    aic: float
    converged: bool
    random_effects: str
    fallback: Optional[str]
    n_obs: int
    n_groups: dict[str, int]
    method: str
    variances: dict[str, float]
    covariance: pd.DataFrame
    singular: bool
    warnings: list[str]
    n_dropped: int = 0
    optimum_check: float = float("nan")


def complete_rows(data: pd.DataFrame, formula: Formula) -> tuple[pd.DataFrame, int]:
    """The rows with no missing value in the columns the formula uses, and how many were not."""
    if not isinstance(data, pd.DataFrame):
        raise PsylingError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    absent = [b.group for b in formula.bars if b.group not in data.columns]
    if absent:
        raise PsylingError(f"grouping column {absent[0]!r} is not in the data (columns: "
                           f"{', '.join(map(str, data.columns))})")
    used = [c for c in data.columns if c in formula.columns()]
    missing = data[used].isna().any(axis=1)
    frame = data.loc[~missing].reset_index(drop=True)
    if frame.empty:
        raise PsylingError(f"no complete rows: every row has a missing value in {', '.join(map(str, used))}")
    return frame, int(missing.sum())


def _matrix(formula: str, frame: pd.DataFrame, what: str) -> pd.DataFrame:
    try:
        return patsy.dmatrix(formula, frame, return_type="dataframe", NA_action="raise")
    except Exception as exc:  # patsy raises many types; all mean the user's formula does not fit the data
        raise PsylingError(f"cannot build the {what} {formula!r}: {first_line(exc)}") from None


def fixed_design(frame: pd.DataFrame, formula: Formula) -> tuple[np.ndarray, pd.DataFrame, Optional[str]]:
    """(y, X with its column names, a note on aliased columns dropped): earlier columns win, as in R."""
    y = _matrix(f"0 + {formula.response}", frame, "response").to_numpy(dtype=float)
    if y.shape[1] != 1:
        raise PsylingError(f"response {formula.response!r} must be one numeric column")
    x = _matrix(formula.fixed, frame, "fixed effects")
    values, keep = x.to_numpy(dtype=float), []
    for j in range(values.shape[1]):
        if np.linalg.matrix_rank(values[:, keep + [j]]) == len(keep) + 1:
            keep.append(j)
    dropped = [name for j, name in enumerate(x.columns) if j not in keep]
    note = (f"dropped aliased fixed-effect column(s) {', '.join(dropped)} (linearly dependent on earlier columns)"
            if dropped else None)
    return y[:, 0], x.iloc[:, keep], note


def random_terms(frame: pd.DataFrame, bars: tuple[Bar, ...]) -> list[RandomTerm]:
    """The engine's random terms: per bar, the group's level codes and the columns of its terms' formula."""
    terms = []
    for bar in bars:
        design = _matrix(bar.terms, frame, f"random-effects term {bar}")
        codes, _ = pd.factorize(frame[bar.group].astype(str), sort=True)
        names = tuple("(Intercept)" if name == "Intercept" else name for name in design.columns)
        terms.append(RandomTerm(bar.group, codes, design.to_numpy(dtype=float), names))
    return terms


def _mixed_result(model: LinearMixedModel, fit: LMMFit, names: list[str]) -> dict:
    """The MixedFit fields of an engine fit, with Satterthwaite t tests."""
    tests = satterthwaite(model.deviance_varpar, model.vcov_beta, fit.varpar, fit.beta)
    table = tests.drop(columns="note").assign(term=names)[COEFFICIENT_COLUMNS]
    notes = [f"satterthwaite: {n}" for n in tests["note"].unique() if n]
    cov = fit.covariance
    variances = {("Residual" if g == "Residual" else f"{g}|{a}"): float(v)
                 for g, a, b, v in zip(cov["group"], cov["name1"], cov["name2"], cov["vcov"]) if b is None}
    k = len(fit.theta) + 1 + len(names)
    return dict(coefficients=table, loglik=fit.loglik, aic=-2 * fit.loglik + 2 * k, converged=fit.converged,
                method="REML" if fit.reml else "ML", variances=variances, covariance=cov,
                optimum_check=fit.optimum_check, warnings=list(fit.messages) + notes)


def _ols_result(y: np.ndarray, x: pd.DataFrame) -> dict:
    """OLS with t tests on the residual degrees of freedom (the last step of the ladder)."""
    import statsmodels.api as sm

    result = sm.OLS(y, x.to_numpy(dtype=float)).fit()
    low, high = np.asarray(result.conf_int(), dtype=float).T
    table = pd.DataFrame({"term": list(x.columns), "estimate": result.params, "std_error": result.bse,
                          "df": float(result.df_resid), "t": result.tvalues, "p_value": result.pvalues,
                          "ci_low": low, "ci_high": high}, columns=COEFFICIENT_COLUMNS)
    residual = pd.DataFrame([{"group": "Residual", "name1": None, "name2": None, "vcov": float(result.scale),
                              "sd_cor": float(np.sqrt(result.scale))}])
    return dict(coefficients=table, loglik=float(result.llf), aic=-2 * float(result.llf) + 2 * (x.shape[1] + 1),
                converged=True, method="OLS", variances={"Residual": float(result.scale)}, covariance=residual,
                optimum_check=0.0, warnings=[])


def _ladder(bars: tuple[Bar, ...]) -> list[tuple[Bar, ...]]:
    """The structures tried in turn: as written, then intercepts only (when there were slopes)."""
    rungs = [bars]
    if any(b.has_slopes for b in bars):
        rungs.append(tuple(dict.fromkeys(b.intercept_only() for b in bars)))
    return rungs


def _problem(fit: LMMFit) -> Optional[str]:
    """Why a fit is not kept: singular (lme4's isSingular) or no checked optimum."""
    if fit.singular:
        return f"singular fit ({', '.join(fit.singular_terms)} at the boundary)"
    if not fit.converged:
        return f"no checked optimum (max |projected gradient| {fit.optimum_check:.3g})"
    return None


def lmer(data: pd.DataFrame, formula: str, reml: bool = True, simplify: bool = True) -> MixedFit:
    """Fit an lme4 formula (``y ~ x + (1 + x | item)``) by REML (``reml=False``: ML), as ``lme4::lmer`` with
    lmerTest's Satterthwaite tests. Rows with a missing value in a used column are dropped (``n_dropped``); a
    singular or unchecked fit is simplified (slopes -> intercepts -> OLS) and the reason kept in ``fallback``
    (``simplify=False``: the model as written is reported whatever it is, as lme4 does)."""
    parsed = Formula.parse(formula)
    frame, n_dropped = complete_rows(data, parsed)
    y, x, alias_note = fixed_design(frame, parsed)
    notes, captured, singular = [alias_note] if alias_note else [], [], None
    spec, fitted, n_groups = "none (OLS)", None, {}
    rungs = _ladder(parsed.bars) if parsed.bars else []
    for k, bars in enumerate(rungs):
        model = LinearMixedModel(y, x.to_numpy(dtype=float), list(x.columns), random_terms(frame, bars), reml)
        fit = model.fit()
        singular = fit.singular if singular is None else singular
        captured += list(fit.messages)
        n_groups = n_groups or {b.group: int(frame[b.group].nunique()) for b in bars}
        problem = _problem(fit) if simplify else None
        if problem is None:
            spec, fitted = " + ".join(map(str, bars)), _mixed_result(model, fit, list(x.columns))
            break
        following = " + ".join(map(str, rungs[k + 1])) if k + 1 < len(rungs) else "OLS (no random effects)"
        notes.append(f"{' + '.join(map(str, bars))}: {problem}; fitted {following} instead")
    if fitted is None:
        fitted = _ols_result(y, x)
    fitted["warnings"] = captured + [w for w in fitted["warnings"] if w not in captured]
    return MixedFit(random_effects=spec, fallback="; ".join(notes) or None, n_obs=len(frame), n_groups=n_groups,
                    singular=bool(singular), n_dropped=n_dropped, **fitted)
