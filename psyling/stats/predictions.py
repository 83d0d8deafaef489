"""Evaluate each set's predictions per item on region measures, and summarise accuracy per set.

The measures (``MEASURES``; ``--measure`` sets the one bare terms use, a function such as ``mean(...)`` in a
formula fixes a term's own), in bits, for a (region; condition) cell of an item; ``*`` is the whole sentence:

- ``surprisal``: the cell's corrected word surprisal, summed (SyntaxGym's ``sum``; the default).
- ``surprisal_raw``: the cell's raw token surprisal, summed (no word correction).
- ``mean``: mean per-token surprisal, the cell's ``surprisal`` / its ``n_tokens`` (bits per token of the model).
  For ``*`` it is the sentence's total surprisal over its total tokens: the mean of the sentence, not a sum of
  region means. A cell without a token (an empty region) has no mean (NaN).
- ``slor``: NEGATIVE SLOR (Lau, Clark & Lappin 2017), ``(surprisal - unigram surprisal) / n_tokens`` in bits per
  token. SLOR itself is ``(log P_model - log P_unigram) / length`` (higher = more acceptable); psyling's formulas
  compare costs (lower = better: ``(*;%good%) < (*;%bad%)``), so ``slor`` is its negative and every formula keeps
  its direction. The unigram surprisal is wordfreq's (``psyling.measures.unigram``) in the set's ``language``; a
  language wordfreq lacks (or cannot segment) is a one-line error naming the set and field ``language``.

Length is counted in the regions table's ``n_tokens``: the model's tokens in a run (as LM acceptability studies
normalise, e.g. Lau et al. 2020; under ``--convention minicons`` a text's unscored first token is counted too),
the table's rows (tokens or words) for an imported table. The unigram model is over words, since word
frequencies exist only for words; both terms of SLOR are log probabilities of the same text and one length
divides both, so ``slor`` = ``mean`` - unigram surprisal / tokens. Bits rather than SLOR's usual nats scale every
value by 1/ln 2 and change no < or > decision.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import pandas as pd

from ..errors import PsylingError, StimulusError
from ..measures.unigram import UnigramError, unigram_settings, unigram_surprisal
from ..stimuli.formula import MEASURES, Node, Term, evaluate
from ..stimuli.schema import StimulusSet
from .accuracy import wilson_interval
from .sg_score import item_passes

PREDICTION_COLUMNS = ["set", "item", "prediction_index", "prediction", "passed", "evaluable"]
SUMMARY_COLUMNS = ["set", "n_items", "accuracy", "ci_low", "ci_high", "n_unevaluable"]
DEFINITIONS = {
    "surprisal": "sum of corrected word surprisal over the cell (bits)",
    "surprisal_raw": "sum of raw token surprisal over the cell (bits)",
    "mean": "mean per-token surprisal: the cell's surprisal / its tokens (bits per token; * = sentence total / "
            "sentence tokens)",
    "slor": "NEGATIVE SLOR (Lau et al. 2017): (surprisal - unigram surprisal) / tokens, bits per token; lower = "
            "more acceptable, as surprisal",
}
NORMALISED = ("mean", "slor")  # the measures divided by the cell's length
Cells = tuple[dict, dict]  # (item, condition, region_number) -> value, (item, condition) -> whole-sentence value


def _unknown_measure(measure: str) -> PsylingError:
    return PsylingError(f"unknown prediction measure {measure!r} (choose from {', '.join(MEASURES)})")


def _unigram_bits(stim: StimulusSet, texts: pd.Series) -> pd.Series:
    """wordfreq unigram surprisal (bits) of each region text, in the set's language."""
    try:
        return texts.map(lambda text: unigram_surprisal(str(text), stim.language).bits)
    except UnigramError as exc:
        raise StimulusError(f"set {stim.name!r}: the slor measure needs word frequencies: {exc}",
                            field="language") from None  # callers put the set's file first


def _parts(stim: StimulusSet, table: pd.DataFrame, measure: str) -> tuple[pd.Series, pd.Series, Optional[pd.Series]]:
    """(model surprisal, unigram surprisal, length) per region row; length None for the summed measures."""
    if measure not in NORMALISED:
        if measure not in table.columns:
            raise _unknown_measure(measure)
        return table[measure], pd.Series(0.0, index=table.index), None
    needed = ["n_tokens"] + (["text"] if measure == "slor" else [])
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise PsylingError(f"set {stim.name!r}: the {measure} measure needs the regions table's token counts and "
                           f"texts; it has no {', '.join(missing)} column")
    unigram = _unigram_bits(stim, table["text"]) if measure == "slor" else pd.Series(0.0, index=table.index)
    return table["surprisal"], unigram, table["n_tokens"].astype(float)


def _cell_values(stim: StimulusSet, table: pd.DataFrame, measure: str) -> Cells:
    """The ``measure`` of every cell and of every whole sentence of a set's region rows."""
    model, unigram, length = _parts(stim, table, measure)
    keys = [table["item"], table["condition"]]
    total = model.groupby(keys).sum(min_count=1) - unigram.groupby(keys).sum()
    cell = model - unigram
    if length is not None:
        cell = cell / length.where(length > 0)
        total = total / length.groupby(keys).sum().where(lambda n: n > 0)
    cells = dict(zip(zip(table["item"], table["condition"], table["region_number"]), cell))
    return cells, total.to_dict()


def cell_lookup(stim: StimulusSet, regions: pd.DataFrame,
                measure: str = "surprisal") -> Callable[[str, Term], float]:
    """``lookup(item_id, term)``: the measure of a (region; condition) cell of an item (``*``: the whole
    sentence), the term's own measure function if it has one, else ``measure`` (one of ``MEASURES``, or any
    numeric column of ``regions``, summed like surprisal: e.g. the human comparison's ``linked``)."""
    table = regions[regions["set"] == stim.name]
    computed: dict[str, Cells] = {}

    def lookup(item_id: str, term: Term) -> float:
        name = term.measure or measure
        if name not in computed:
            computed[name] = _cell_values(stim, table, name)
        cells, totals = computed[name]
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
    """One row per item x prediction: does the formula hold on the item's region ``measure``? A prediction
    with a cell of no value (NaN: a region without a token of its own, a mean over no tokens) is not
    ``evaluable``; its ``passed`` is False and the item is left out of accuracies (``item_passes``)."""
    lookup = cell_lookup(stim, regions, measure)
    rows = []
    for item in stim.items:
        for k, pred in enumerate(stim.predictions):
            values: list[float] = []

            def noted(term: Term, item_id: str = item.id) -> float:
                values.append(lookup(item_id, term))
                return values[-1]
            passed = bool(evaluate(pred.tree, noted))
            evaluable = not any(math.isnan(v) for v in values)
            rows.append((stim.name, item.id, k, pred.formula, passed and evaluable, evaluable))
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def item_values(stim: StimulusSet, regions: pd.DataFrame, expression: Node,
                measure: str = "surprisal") -> pd.Series:
    """An arithmetic expression over cells (e.g. a human effect contrast) evaluated per item; NaN for an item
    with a missing cell."""
    lookup = _missing_as_nan(cell_lookup(stim, regions, measure))
    values = {item.id: float(evaluate(expression, lambda term, item_id=item.id: lookup(item_id, term)))
              for item in stim.items}
    return pd.Series(values, name=measure, dtype=float).rename_axis("item")


def prediction_measures(stim: StimulusSet, measure: str) -> list[str]:
    """The measures a set's predictions use: ``measure`` for bare terms, a function's own for the others."""
    return sorted({term.measure or measure for pred in stim.predictions for term in pred.terms})


def check_measures(stim: StimulusSet, measure: str) -> None:
    """Fail before scoring when a set's predictions need what it lacks (slor: wordfreq for its language)."""
    if measure not in MEASURES:
        raise _unknown_measure(measure)
    if "slor" in prediction_measures(stim, measure):
        _unigram_bits(stim, pd.Series([""]))


def _unigram_counts(stim: StimulusSet, regions: pd.DataFrame) -> dict:
    found = [unigram_surprisal(str(text), stim.language) for text in regions.loc[regions["set"] == stim.name, "text"]]
    return {"language": stim.language, "words": sum(u.n_words for u in found),
            "words_at_floor": sum(u.n_floored for u in found)}


def measures_record(measure: str, sets: Iterable[StimulusSet], regions: pd.DataFrame, length_unit: str) -> dict:
    """What the manifest records of the prediction measures: for ``measure`` and every measure the sets'
    predictions name, its definition; for mean and slor the ``length_unit``; for slor the unigram model (wordfreq
    version, word list, floor) and, per set using it, its language and the words of its region texts (all cells)
    looked up and how many of them got the floor."""
    users: dict[str, list[StimulusSet]] = {measure: []}
    for stim in sets:
        for name in prediction_measures(stim, measure):
            users.setdefault(name, []).append(stim)
    record = {}
    for name, used_by in sorted(users.items()):
        entry: dict = {"definition": DEFINITIONS[name]}
        if name in NORMALISED:
            entry["length_unit"] = length_unit
        if name == "slor":
            entry["unigram"] = {**unigram_settings(), "sets": {s.name: _unigram_counts(s, regions) for s in used_by}}
        record[name] = entry
    return record


def summarise(predictions: pd.DataFrame, sets: list[StimulusSet]) -> pd.DataFrame:
    """Accuracy per set over its evaluable items: an item passes when all its predictions hold (SyntaxGym);
    Wilson 95% CI; ``n_unevaluable`` items had a prediction without a value."""
    rows = []
    for stim in sets:
        table = predictions[predictions["set"] == stim.name]
        if table.empty:  # a set without predictions is listed, with no accuracy
            rows.append((stim.name, len(stim.items), math.nan, math.nan, math.nan, 0))
            continue
        per_item = item_passes(table)["passed"]
        n, k = len(per_item), int(per_item.sum())
        low, high = wilson_interval(k, n)
        rows.append((stim.name, n, k / n if n else math.nan, low, high, table["item"].nunique() - n))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
