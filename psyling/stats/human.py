"""The human comparison of each set: is the model's effect there, in the human direction, and how big is it?

A set's human finding names an ``effect``: an expression over (region; condition) cells oriented so that the
human effect is positive (slower reading, larger N400, lower acceptability in the first term). The model's
effect is the same expression on region surprisal (bits), per item. Its magnitude in the human unit comes from
a linking function (e.g. ms per bit of surprisal, with spillover) applied word by word: each word of a cell
contributes ``sum_k slope_k * surprisal(word - k)``, so a cell's predicted value is the surprisal-driven part of
its reading time; the expression is then evaluated on those predicted cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ..stimuli.formula import BinOp, Negate, Node
from ..stimuli.schema import StimulusSet
from .compare import benjamini_hochberg
from .predictions import item_values

COMPARISON_COLUMNS = [
    "set", "phenomenon", "human_measure", "human_region", "effect", "n_items", "n_missing",
    "model_bits", "model_ci_low", "model_ci_high", "p_value", "q_value", "present", "direction",
    "linking", "predicted", "predicted_ci_low", "predicted_ci_high", "human_size", "human_ci_low",
    "human_ci_high", "unit", "ratio", "size_verdict", "verdict"]
TEXT_COLUMNS = ["human_measure", "human_region", "effect", "present", "direction", "linking", "unit",
                "size_verdict", "verdict"]
ALPHA = 0.05


@dataclass(frozen=True)
class Linking:
    """Surprisal -> human measure: ``slopes[k]`` is the change in the measure per bit of surprisal k words back."""
    measure: str
    unit: str
    slopes: dict[int, float]
    source: str
    details: dict = field(default_factory=dict)


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, t-based confidence interval over items and the one-sample t-test p-value against 0."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    se = float(values.std(ddof=1) / math.sqrt(n))
    if se == 0:
        return mean, mean, mean, (0.0 if mean != 0 else 1.0)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return mean, mean - half, mean + half, p


def linked_regions(stim: StimulusSet, regions: pd.DataFrame, words: pd.DataFrame, linking: Linking,
                   measure: str = "surprisal") -> pd.DataFrame:
    """The set's region table with a ``linked`` column: the predicted human-measure contribution of each region,
    its words' ``sum_k slope_k * s(word - k)``. Earlier words of the same sentence spill over; nothing spills
    over from outside the scored sentence; a region without words gets 0."""
    words = words[words["set"] == stim.name].sort_values(["item", "condition", "word_index"])
    keys = [words["item"], words["condition"]]
    predicted = np.zeros(len(words))
    for lag, slope in linking.slopes.items():
        shifted = words[measure].groupby(keys, sort=False).shift(lag) if lag else words[measure]
        predicted += slope * shifted.fillna(0.0).to_numpy()
    number = {name: k + 1 for k, name in enumerate(stim.regions)}
    linked = (words.assign(linked=predicted, region_number=words["region"].map(number))
              .groupby(["item", "condition", "region_number"])["linked"].sum())
    table = regions[regions["set"] == stim.name]
    index = pd.MultiIndex.from_frame(table[["item", "condition", "region_number"]])
    return table.assign(linked=linked.reindex(index, fill_value=0.0).to_numpy())


def _size_verdict(pred: tuple[float, float, float], human: tuple[float, float, float]) -> str:
    p, p_lo, p_hi = pred
    h, h_lo, h_hi = human
    if any(math.isnan(v) for v in (p, h)):
        return ""
    if not math.isnan(h_lo) and not math.isnan(p_hi) and p_hi < h_lo:
        return "smaller than in humans"
    if not math.isnan(h_hi) and not math.isnan(p_lo) and p_lo > h_hi:
        return "larger than in humans"
    return "comparable to humans"


def _denominators(node: Node) -> list[Node]:
    """The divisors of every ``/`` in an expression."""
    if isinstance(node, Negate):
        return _denominators(node.operand)
    if isinstance(node, BinOp):
        own = [node.right] if node.op == "/" else []
        return own + _denominators(node.left) + _denominators(node.right)
    return []


def zero_denominator(stim: StimulusSet, regions: pd.DataFrame, measure: str = "surprisal") -> str:
    """Why items have no human-effect value when a divisor of the effect is 0 for them (e.g. a difference of
    equal cells, or an empty region): "the human effect's denominator is 0 for items ..."; "" when none is."""
    zero: set[str] = set()
    for divisor in _denominators(stim.human.effect_tree):
        values = item_values(stim, regions, divisor, measure)
        zero |= set(values.index[values == 0])
    items = [item.id for item in stim.items if item.id in zero]
    return f"the human effect's denominator is 0 for items {', '.join(items)}" if items else ""


def compare_with_humans(sets: list[StimulusSet], regions: pd.DataFrame, words: pd.DataFrame | None = None,
                        linkings: dict[str, Linking] | None = None, measure: str = "surprisal") -> pd.DataFrame:
    """One row per set: the model's effect (bits, mean over items with 95% CI and a t-test, BH across sets),
    whether it is present and in the human direction, and (with a linking function for the set's human
    measure) the predicted effect in the human unit next to the published human effect."""
    linkings = linkings or {}
    rows, reasons = [], {}
    for stim in sets:
        human = stim.human
        row = dict.fromkeys(COMPARISON_COLUMNS, math.nan)
        row.update(dict.fromkeys(TEXT_COLUMNS, ""), set=stim.name, phenomenon=stim.phenomenon)
        if human is None or not human.effect:
            row.update(human_measure=human.measure if human else "", verdict="no human effect recorded for this set")
            rows.append(row)
            continue
        effects = item_values(stim, regions, human.effect_tree, measure)
        reasons[len(rows)] = zero_denominator(stim, regions, measure)
        valid = effects.dropna()
        mean, low, high, p = mean_ci(valid.to_numpy())
        row.update(human_measure=human.measure, human_region=human.region or "", effect=human.effect,
                   n_items=len(valid), n_missing=len(effects) - len(valid), model_bits=mean, model_ci_low=low,
                   model_ci_high=high, p_value=p, human_size=human.size if human.size is not None else math.nan,
                   unit=human.unit or "")
        if human.ci:
            row.update(human_ci_low=human.ci[0], human_ci_high=human.ci[1])
        link = linkings.get(human.measure)
        if link is not None and words is not None:
            linked = item_values(stim, linked_regions(stim, regions, words, link, measure), human.effect_tree,
                                 "linked").dropna()
            pred, pred_lo, pred_hi, _ = mean_ci(linked.to_numpy())
            row.update(linking=link.source, predicted=pred, predicted_ci_low=pred_lo, predicted_ci_high=pred_hi)
            if human.size is not None and (not human.unit or human.unit == link.unit):
                row["ratio"] = pred / human.size if human.size else math.nan
                row["size_verdict"] = _size_verdict((pred, pred_lo, pred_hi),
                                                    (human.size, row["human_ci_low"], row["human_ci_high"]))
            row["unit"] = link.unit
        rows.append(row)
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy(dtype=float))
    for i, row in table.iterrows():
        if row["effect"]:
            table.loc[i, ["present", "direction", "verdict"]] = _verdict(row, reasons.get(i, ""))
    return table


def _verdict(row: pd.Series, missing: str = "") -> tuple[str, str, str]:
    """present (yes/no/reversed), direction (as in humans / opposite) and a one-line verdict; ``missing`` says
    why items were left out (a zero denominator)."""
    mean, q = row["model_bits"], row["q_value"]
    if math.isnan(mean):
        return "", "", "no items could be evaluated" + (f": {missing}" if missing else "")
    direction = "as in humans" if mean > 0 else "opposite to humans"
    significant = not math.isnan(q) and q < ALPHA
    present = ("yes" if mean > 0 else "reversed") if significant else "no"
    way = "the human way" if mean > 0 else "the other way"
    text = {"yes": "effect present, in the human direction",
            "reversed": "effect reversed relative to humans",
            "no": f"no reliable effect (q = {q:.2g}); the mean points {way}"}[present]
    text += f": {mean:+.2f} bits [{row['model_ci_low']:+.2f}, {row['model_ci_high']:+.2f}]"
    if isinstance(row["linking"], str) and row["linking"] and not math.isnan(row["predicted"]):
        text += f"; predicted {row['predicted']:+.1f} {row['unit']}"
        if not math.isnan(row["human_size"]):
            text += f" vs human {row['human_size']:+.1f} {row['unit']}"
            if row["size_verdict"]:
                text += f" ({row['size_verdict']}, ratio {row['ratio']:.2f})"
    if missing:
        text += f" (left out: {missing})"
    return present, direction, text
