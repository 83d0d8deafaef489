"""A prediction over a cell without a value (a region whose characters all lie in a token crossing into the
next region) is not evaluable: it is neither a pass nor a failure, and the item leaves the accuracy."""
import math

import pandas as pd

from psyling.stats import item_passes, sg_score
from psyling.stats.predictions import evaluate_predictions, summarise
from psyling.stimuli.schema import Condition, Item, Prediction, StimulusSet

TEXTS = {"good": ("他在一", "家", "店。"), "bad": ("他在一", "本", "店。")}


def _set():
    items = [Item(i, {c: Condition(c, TEXTS[c], separator="") for c in TEXTS}) for i in ("1", "2", "3")]
    return StimulusSet("clf", ("pre", "clf", "noun"), ("good", "bad"), items,
                       [Prediction.parse("(clf;%good%) < (clf;%bad%)")], source="t", segmentation="none")


def _regions(critical):
    """Region rows; ``critical[item]`` = (good, bad) surprisal of the classifier region (NaN: no own token)."""
    rows = []
    for item, values in critical.items():
        for c, value in zip(("good", "bad"), values):
            for r, name in enumerate(("pre", "clf", "noun")):
                s = value if name == "clf" else 5.0
                rows.append(("clf", item, c, r + 1, name, TEXTS[c][r], s, s, 0 if math.isnan(s) else 1))
    return pd.DataFrame(rows, columns=["set", "item", "condition", "region_number", "region", "text", "surprisal",
                                       "surprisal_raw", "n_tokens"])


def test_a_nan_cell_makes_the_prediction_unevaluable_not_failed():
    stim = _set()
    predictions = evaluate_predictions(stim, _regions({"1": (2.0, 9.0), "2": (math.nan, 9.0), "3": (9.0, 2.0)}))
    assert list(predictions["evaluable"]) == [True, False, True]
    assert list(predictions["passed"]) == [True, False, False]
    summary = summarise(predictions, [stim]).iloc[0]
    assert (summary["n_items"], summary["accuracy"], summary["n_unevaluable"]) == (2, 0.5, 1)
    assert list(item_passes(predictions)["item"]) == ["1", "3"]
    assert sg_score(item_passes(predictions))[0] == 0.5


def test_a_set_with_no_evaluable_item_has_no_accuracy():
    stim = _set()
    predictions = evaluate_predictions(stim, _regions({i: (math.nan, 1.0) for i in ("1", "2", "3")}))
    summary = summarise(predictions, [stim]).iloc[0]
    assert summary["n_items"] == 0 and math.isnan(summary["accuracy"]) and summary["n_unevaluable"] == 3

