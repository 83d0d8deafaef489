"""The human comparison: model effects per item, t-based CIs, linking with spillover, verdicts."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from psyling.stats.human import Linking, compare_with_humans, linked_regions, mean_ci
from psyling.stimuli.schema import Condition, HumanFinding, Item, StimulusSet


def _set(name="toy", human=True, size=None, ci=None):
    items = [Item(str(i), {c: Condition(c, ("The dog", verb, "fast."))
                           for c, verb in (("match", "runs"), ("mismatch", "run"))}) for i in range(1, 6)]
    finding = HumanFinding("SPR", "verb", "mismatch > match", "A study", size=size, unit="ms" if size else None,
                           ci=ci, effect="(verb;%mismatch%) - (verb;%match%)") if human else None
    return StimulusSet(name, ("subject", "verb", "end"), ("match", "mismatch"), items, [], "toy.yaml",
                       phenomenon="agreement", human=finding).validate()


def _tables(stim, verb_effects):
    """Regions and words where each region is one word except the subject (two words)."""
    words, regions = [], []
    for item, delta in zip([i.id for i in stim.items], verb_effects):
        for cond, verb in (("match", 3.0), ("mismatch", 3.0 + delta)):
            surprisals = [("The", "subject", 5.0), ("dog", "subject", 7.0), ("run", "verb", verb),
                          ("fast.", "end", 2.0 + (1.0 if cond == "mismatch" else 0.0))]
            for k, (w, region, s) in enumerate(surprisals):
                words.append((stim.name, item, cond, k, w, region, s))
            for number, region in enumerate(stim.regions, start=1):
                total = sum(s for _, r, s in surprisals if r == region)
                regions.append((stim.name, item, cond, number, region, total))
    return (pd.DataFrame(regions, columns=["set", "item", "condition", "region_number", "region", "surprisal"]),
            pd.DataFrame(words, columns=["set", "item", "condition", "word_index", "word", "region", "surprisal"]))


def test_mean_ci_is_the_t_interval():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    mean, low, high, p = mean_ci(values)
    se = values.std(ddof=1) / 2
    assert mean == 3.5
    assert high - mean == pytest.approx(stats.t.ppf(0.975, 3) * se)
    assert p == pytest.approx(stats.ttest_1samp(values, 0).pvalue)


def test_model_effect_direction_and_verdict():
    stim = _set()
    regions, words = _tables(stim, [2.0, 3.0, 4.0, 5.0, 6.0])
    row = compare_with_humans([stim], regions, words).iloc[0]
    assert row["model_bits"] == pytest.approx(4.0)
    assert row["n_items"] == 5 and row["present"] == "yes" and row["direction"] == "as in humans"
    reversed_row = compare_with_humans([stim], *_tables(stim, [-2.0, -3.0, -4.0, -5.0, -6.0])).iloc[0]
    assert reversed_row["present"] == "reversed" and reversed_row["direction"] == "opposite to humans"


def test_linking_applies_spillover_word_by_word():
    stim = _set(size=30.0, ci=(20.0, 40.0))
    regions, words = _tables(stim, [2.0, 2.0, 2.0, 2.0, 2.0])
    link = Linking("SPR", "ms", {0: 3.0, 1: 1.5}, "toy")
    table = linked_regions(stim, regions, words, link)
    # mismatch item: verb = 3*5.0 + 1.5*7.0 (spillover from "dog"); end = 3*3.0 + 1.5*5.0
    cell = table[(table["item"] == "1") & (table["condition"] == "mismatch")].set_index("region")["linked"]
    assert cell["verb"] == pytest.approx(3 * 5.0 + 1.5 * 7.0)
    assert cell["end"] == pytest.approx(3 * 3.0 + 1.5 * 5.0)
    assert cell["subject"] == pytest.approx(3 * 5.0 + 3 * 7.0 + 1.5 * 5.0)  # "The" has no spillover
    row = compare_with_humans([stim], regions, words, {"SPR": link}).iloc[0]
    assert row["predicted"] == pytest.approx(6.0)  # 3 ms/bit x 2 bits; the spillover word is the same
    assert row["ratio"] == pytest.approx(0.2) and row["size_verdict"] == "smaller than in humans"


def test_sets_without_a_human_effect_and_missing_cells_are_reported():
    plain, stim = _set("plain", human=False), _set()
    regions, words = _tables(stim, [1.0, 2.0, 3.0, 4.0, 5.0])
    regions.loc[(regions["item"] == "5") & (regions["region"] == "verb"), "surprisal"] = math.nan
    table = compare_with_humans([plain, stim], pd.concat([regions, regions.assign(set="plain")]), words)
    assert table.iloc[0]["verdict"] == "no human effect recorded for this set"
    assert table.iloc[1]["n_items"] == 4 and table.iloc[1]["n_missing"] == 1
    assert table.iloc[1]["model_bits"] == pytest.approx(2.5)
