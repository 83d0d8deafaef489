"""The logit lens: surprisal of every word and region read out from intermediate layers, and the layer at which
each minimal-pair prediction emerges.

The causal scorer applies the model's own final norm and unembedding to the residual stream after each requested
layer (``psyling.models.architecture.LensHead``, in the same forward pass; ``TokenScores.at_layer`` gives the
scores read there); word surprisal then follows exactly the same path as the model's own (Pimentel & Meister
correction included), so at the last layer the lens equals the model's surprisal.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..measures import surprisal_tables
from ..models import TokenScores
from ..models.vocab import WordMarkers
from ..stats.predictions import evaluate_predictions
from ..stimuli.schema import StimulusSet

EMERGENCE_COLUMNS = ["set", "item", "prediction_index", "prediction", "emerges_at", "final_passed"]


def lens_tables(stim: StimulusSet, scores: dict[tuple, TokenScores], markers: WordMarkers, tokenizer,
                layers: list[int], measure: str = "surprisal",
                correct: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(regions, predictions) of one set at each lens layer, with a ``layer`` column."""
    regions, predictions = [], []
    for layer in layers:
        at_layer = {key: sc.at_layer(layer) for key, sc in scores.items()}
        _, _, table = surprisal_tables(stim, at_layer, markers, tokenizer, correct)
        regions.append(table.assign(layer=layer))
        predictions.append(evaluate_predictions(stim, table, measure).assign(layer=layer))
    return pd.concat(regions, ignore_index=True), pd.concat(predictions, ignore_index=True)


def emergence(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per item and prediction: the first layer from which the prediction holds at every later lens layer
    (``emerges_at``; NaN when it does not hold at the last layer), and whether it holds at the last layer."""
    rows = []
    keys = ["set", "item", "prediction_index", "prediction"]
    for key, group in predictions.sort_values("layer").groupby(keys, sort=False):
        passed = group["passed"].to_numpy(bool)
        layers = group["layer"].to_numpy()
        if not passed[-1]:
            rows.append((*key, np.nan, False))
            continue
        failing = np.flatnonzero(~passed)
        rows.append((*key, float(layers[failing[-1] + 1] if len(failing) else layers[0]), True))
    return pd.DataFrame(rows, columns=EMERGENCE_COLUMNS)


def lens_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """Share of items whose predictions all hold, per set and lens layer (over the evaluable items)."""
    if "evaluable" in predictions.columns:
        keys = predictions.groupby(["set", "layer", "item"])["evaluable"]
        predictions = predictions[keys.transform("all").astype(bool)]
    per_item = predictions.groupby(["set", "layer", "item"])["passed"].all().reset_index()
    return per_item.groupby(["set", "layer"], as_index=False)["passed"].mean().rename(columns={"passed": "accuracy"})
