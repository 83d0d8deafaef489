"""Evaluate each set's predictions per item on region surprisal, and summarise accuracy per set."""
from __future__ import annotations

import math

import pandas as pd

from ..stimuli.formula import Term, evaluate
from ..stimuli.schema import StimulusSet
from .accuracy import wilson_interval
from .sg_score import item_passes

PREDICTION_COLUMNS = ["set", "item", "prediction_index", "prediction", "passed"]
SUMMARY_COLUMNS = ["set", "n_items", "accuracy", "ci_low", "ci_high"]


def evaluate_predictions(stim: StimulusSet, regions: pd.DataFrame, measure: str = "surprisal") -> pd.DataFrame:
    """One row per item x prediction: does the formula hold on the item's region ``measure``?"""
    table = regions[regions["set"] == stim.name]
    cells = {(i, c, r): v for i, c, r, v in
             zip(table["item"], table["condition"], table["region_number"], table[measure])}
    totals = table.groupby(["item", "condition"])[measure].sum().to_dict()
    rows = []
    for item in stim.items:
        def lookup(term: Term, item_id: str = item.id) -> float:
            index = stim.region_index(term.region)
            if index is None:
                return totals[(item_id, term.condition)]
            return cells[(item_id, term.condition, index + 1)]

        for k, pred in enumerate(stim.predictions):
            rows.append((stim.name, item.id, k, pred.formula, bool(evaluate(pred.tree, lookup))))
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


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
