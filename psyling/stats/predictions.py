"""Evaluate each set's predictions per item on region surprisal, and summarise accuracy per set."""
from __future__ import annotations

import math
from typing import Callable

import pandas as pd

from ..stimuli.formula import Node, Term, evaluate
from ..stimuli.schema import StimulusSet
from .accuracy import wilson_interval
from .sg_score import item_passes

PREDICTION_COLUMNS = ["set", "item", "prediction_index", "prediction", "passed"]
SUMMARY_COLUMNS = ["set", "n_items", "accuracy", "ci_low", "ci_high"]


def cell_lookup(stim: StimulusSet, regions: pd.DataFrame,
                measure: str = "surprisal") -> Callable[[str, Term], float]:
    """``lookup(item_id, term)``: the ``measure`` of a (region; condition) cell of an item (``*``: the sum)."""
    table = regions[regions["set"] == stim.name]
    cells = {(i, c, r): v for i, c, r, v in
             zip(table["item"], table["condition"], table["region_number"], table[measure])}
    totals = table.groupby(["item", "condition"])[measure].sum(min_count=1).to_dict()

    def lookup(item_id: str, term: Term) -> float:
        index = stim.region_index(term.region)
        if index is None:
            return totals[(item_id, term.condition)]
        return cells[(item_id, term.condition, index + 1)]
    return lookup


def _missing_as_nan(lookup: Callable[[str, Term], float]) -> Callable[[str, Term], float]:
    def safe(item_id: str, term: Term) -> float:
        try:
            return lookup(item_id, term)
        except KeyError:
            return math.nan
    return safe


def evaluate_predictions(stim: StimulusSet, regions: pd.DataFrame, measure: str = "surprisal") -> pd.DataFrame:
    """One row per item x prediction: does the formula hold on the item's region ``measure``?"""
    lookup = cell_lookup(stim, regions, measure)
    rows = []
    for item in stim.items:
        for k, pred in enumerate(stim.predictions):
            value = evaluate(pred.tree, lambda term, item_id=item.id: lookup(item_id, term))
            rows.append((stim.name, item.id, k, pred.formula, bool(value)))
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def item_values(stim: StimulusSet, regions: pd.DataFrame, expression: Node,
                measure: str = "surprisal") -> pd.Series:
    """An arithmetic expression over cells (e.g. a human effect contrast) evaluated per item; NaN for an item
    with a missing cell."""
    lookup = _missing_as_nan(cell_lookup(stim, regions, measure))
    values = {item.id: float(evaluate(expression, lambda term, item_id=item.id: lookup(item_id, term)))
              for item in stim.items}
    return pd.Series(values, name=measure, dtype=float).rename_axis("item")


def summarise(predictions: pd.DataFrame, sets: list[StimulusSet]) -> pd.DataFrame:
    """Accuracy per set: an item passes when all its predictions hold (SyntaxGym); Wilson 95% CI."""
    rows = []
    for stim in sets:
        table = predictions[predictions["set"] == stim.name]
        if table.empty:  # a set without predictions is listed, with no accuracy
            rows.append((stim.name, len(stim.items), math.nan, math.nan, math.nan))
            continue
        per_item = item_passes(table)["passed"]
        n, k = len(per_item), int(per_item.sum())
        low, high = wilson_interval(k, n)
        rows.append((stim.name, n, k / n, low, high))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
