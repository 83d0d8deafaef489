"""Mixed-effects models of psyling's analyses, on its lme4-equal engine (:func:`psyling.stats.lmer.lmer`).

:func:`crossed_intercepts` fits crossed random intercepts (e.g. subjects and items) and :func:`condition_effects`
estimates condition effects on one set's region surprisal with by-item random effects; both simplify a singular
or unchecked fit (slopes -> intercepts -> OLS) and say why (``MixedFit.fallback``).
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..errors import PsylingError
from .lmer import MixedFit, lmer


def crossed_intercepts(data: pd.DataFrame, formula: str, groups: list[str], reml: bool = True) -> MixedFit:
    """Crossed random intercepts, e.g. ``groups=["subject", "item"]``: ``formula + (1 | subject) + (1 | item)``."""
    if not isinstance(data, pd.DataFrame):
        raise PsylingError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [g for g in groups if g not in data.columns]
    if missing or not groups:
        raise PsylingError(f"crossed_intercepts: grouping column(s) not in the data: {', '.join(missing) or '(none)'}")
    return lmer(data, formula + "".join(f" + (1 | {g})" for g in groups), reml=reml)


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


def condition_formula(n_columns: int, slopes: list[int]) -> str:
    """The lme4 formula of a condition-effects model: y on the coded columns c0.., by-item random intercepts
    plus the chosen slopes (correlated)."""
    random = " + ".join(["1"] + [f"c{j}" for j in slopes])
    return "y ~ 1 + " + " + ".join(f"c{j}" for j in range(n_columns)) + f" + ({random} | item)"


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
    fit = lmer(frame, condition_formula(len(columns), chosen), reml=False)

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
                   covariance=fit.covariance.assign(name1=fit.covariance["name1"].map(_label_or_none(label)),
                                                    name2=fit.covariance["name2"].map(_label_or_none(label))),
                   n_dropped=n_dropped + fit.n_dropped)


def _label_or_none(label):
    return lambda name: None if name is None else label(name)
