"""SyntaxGym test-suite JSON from before the May 2020 standard, converted to the current shape.

Two older shapes are read, both from the cpllab repositories (2019 to May 2020):

- the first suites of syntactic-generalization (Hu et al. 2020, before "update JSONs to new standard"):
  ``"predictions": []`` and the formulas as strings in ``meta.string_predictions``;
- syntaxgym-core's early suites: ``meta.metric`` ``"all"`` or a list such as ``["all"]``, and predictions as
  relations, ``{"relation": "greaterthan", "region_number": 3, "l_operand": "that", "r_operand": "what"}``
  (``(3;%that%) > (3;%what%)``), or no ``predictions`` at all.

The suite's name, reference, author and comment are kept as they are; what the conversion changed is recorded in
the set's metadata (``syntaxgym_legacy``).
"""
from __future__ import annotations

from typing import Any, Optional

from .fields import Where, array, integer, mapping, string, string_list

RELATIONS = {"greaterthan": ">", "lessthan": "<", "equal": "="}
ALL_METRICS = "all"  # legacy: compute every statistic; psyling's region statistic is the sum


def is_legacy(suite: dict) -> bool:
    """Does a suite use one of the pre-2020 shapes (string_predictions, relations, metric "all" or a list)?"""
    meta = suite.get("meta") if isinstance(suite.get("meta"), dict) else {}
    metric = meta.get("metric")
    predictions = suite.get("predictions")
    relations = isinstance(predictions, list) and any(isinstance(p, dict) and "relation" in p for p in predictions)
    return "string_predictions" in meta or relations or isinstance(metric, list) or metric == ALL_METRICS


def _relation_formula(prediction: dict, field: str, where: Where) -> str:
    relation = string(prediction.get("relation"), where, f"{field}.relation")
    if relation not in RELATIONS:
        raise where.error(f"unknown relation {relation!r} (known: {', '.join(RELATIONS)})", f"{field}.relation")
    region = integer(prediction.get("region_number"), where, f"{field}.region_number")
    left = string(prediction.get("l_operand"), where, f"{field}.l_operand")
    right = string(prediction.get("r_operand"), where, f"{field}.r_operand")
    return f"({region};%{left}%) {RELATIONS[relation]} ({region};%{right}%)"


def _metric(value: Any, where: Where) -> str:
    """The legacy metric as psyling's: "all" (or a list holding "all" or "sum") is the sum."""
    names = [value] if isinstance(value, str) else string_list(value, where, "meta.metric")
    if ALL_METRICS in names or "sum" in names:
        return "sum"
    return ", ".join(names)


def upgrade_legacy(suite: dict, where: Where) -> tuple[dict, Optional[dict]]:
    """(the suite in the current shape, a record of what was converted); the record is None for a suite that
    is already in the current shape."""
    if not is_legacy(suite):
        return suite, None
    meta = dict(mapping(suite.get("meta"), where, "meta"))
    strings = meta.pop("string_predictions", None)
    formulas = string_list(strings, where, "meta.string_predictions") if strings is not None else []
    kept, relations = [], []
    for k, prediction in enumerate(array(suite.get("predictions", []), where, "predictions"), start=1):
        if isinstance(prediction, dict) and "relation" in prediction:
            relations.append(_relation_formula(prediction, f"predictions[{k}]", where))
        else:
            kept.append(prediction)
    record = {"string_predictions": len(formulas), "relations": len(relations)}
    if "metric" in meta and meta["metric"] != _metric(meta["metric"], where):
        record["metric"] = meta["metric"]  # as written; psyling's is the sum
        meta["metric"] = _metric(meta["metric"], where)
    converted = [{"type": "formula", "formula": f} for f in formulas + relations]
    return {**suite, "meta": meta, "predictions": kept + converted}, record
