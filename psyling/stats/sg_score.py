"""The SyntaxGym score (Hu et al. 2020): an item passes iff all its predictions hold; a suite's accuracy is the
share of passing items; the SG score is the mean of suite accuracies; circuits average their suites."""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

import pandas as pd


def item_passes(predictions: pd.DataFrame) -> pd.DataFrame:
    """(set, item, passed): an item passes iff every one of its predictions holds. Items with a prediction that
    could not be evaluated (``evaluable`` False, where the table has that column) are left out."""
    if "evaluable" in predictions.columns:
        evaluable = predictions.groupby(["set", "item"], sort=False)["evaluable"].transform("all").astype(bool)
        predictions = predictions[evaluable]
    return predictions.groupby(["set", "item"], sort=False)["passed"].all().reset_index()


def suite_accuracy(items: pd.DataFrame) -> pd.DataFrame:
    """(set, n_items, accuracy) from an item-level (set, item, passed) table."""
    grouped = items.groupby("set", sort=False)["passed"]
    return pd.DataFrame({"n_items": grouped.size(), "accuracy": grouped.mean()}).reset_index()


def sg_score(items: pd.DataFrame, exclude: Iterable[str] = (),
             circuits: Optional[Mapping[str, Iterable[str]]] = None) -> tuple[float, pd.DataFrame]:
    """Mean suite accuracy over the suites not excluded, and a circuit table (circuit, n_suites, score).

    ``items`` is item-level: (set, item, passed), e.g. from :func:`item_passes` or a released results file."""
    suites = suite_accuracy(items[~items["set"].isin(set(exclude))])
    score = float(suites["accuracy"].mean())
    rows = []
    for circuit, members in (circuits or {}).items():
        chosen = suites[suites["set"].isin(set(members))]
        rows.append((circuit, len(chosen), float(chosen["accuracy"].mean()) if len(chosen) else float("nan")))
    return score, pd.DataFrame(rows, columns=["circuit", "n_suites", "score"])


SCORE_COLUMNS = ["score", "battery", "n_suites", "value"]


def battery_score_rows(items: pd.DataFrame, battery: str, config: Mapping) -> pd.DataFrame:
    """A battery's ``score:`` block applied to item passes (set, item, passed): the SG score row ("SG score
    (excluding …)", over the suites present and not excluded) and one row per circuit ("circuit: NAME")."""
    exclude = list(config.get("exclude", ()))
    score, circuits = sg_score(items, exclude, config.get("circuits"))
    label = f"SG score (excluding {', '.join(exclude) or 'none'})"
    n_scored = int(items.loc[~items["set"].isin(set(exclude)), "set"].nunique())
    rows = [(label, battery, n_scored, score)] + [(f"circuit: {c.circuit}", battery, int(c.n_suites), c.score)
                                                  for c in circuits.itertuples()]
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)
