"""Model comparisons over items: McNemar, paired bootstrap, Benjamini-Hochberg, per-set and per-phenomenon tables."""
import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from psyling.errors import PsylingError
from psyling.stats.compare import accuracy_by, benjamini_hochberg, compare_models, mcnemar, paired_bootstrap


def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.repeat([True, True, False, False], [both, a_only, b_only, neither])
    b = np.repeat([True, False, True, False], [both, a_only, b_only, neither])
    return a, b


def test_mcnemar_agresti_presidential_approval():
    # Agresti (2002), Categorical Data Analysis, Table 10.1: approve/approve 794, approve/disapprove 150,
    # disapprove/approve 86, disapprove/disapprove 570; McNemar z^2 = 17.36 (no continuity correction).
    a, b = _pairs(794, 150, 86, 570)
    plain = mcnemar(a, b, correction=False)
    assert (plain.b10, plain.b01) == (150, 86)
    assert round(plain.statistic, 2) == 17.36
    table = np.array([[794, 150], [86, 570]])
    assert plain.p_value == pytest.approx(sm_mcnemar(table, exact=False, correction=False).pvalue, rel=1e-10)
    default = mcnemar(a, b)  # 236 discordant pairs: chi-square with continuity correction
    assert default.method == "chi-square, continuity-corrected"
    assert default.statistic == pytest.approx((150 - 86 - 1) ** 2 / 236)
    assert default.p_value == pytest.approx(sm_mcnemar(table, exact=False, correction=True).pvalue, rel=1e-10)


def test_mcnemar_exact_below_25_discordant():
    a, b = _pairs(30, 10, 2, 5)
    result = mcnemar(a, b)
    assert result.method == "exact binomial" and result.statistic == 2
    assert result.p_value == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    assert result.p_value == pytest.approx(sm_mcnemar(np.array([[30, 10], [2, 5]]), exact=True).pvalue)
    assert mcnemar(*_pairs(5, 0, 0, 5)).p_value == 1.0
    assert mcnemar(a, b, exact=False).method.startswith("chi-square")


def test_mcnemar_rejects_bad_input():
    with pytest.raises(PsylingError, match="differ in length"):
        mcnemar([True, False], [True])
    with pytest.raises(PsylingError, match="missing"):
        mcnemar([1.0, np.nan], [1, 0])


def test_paired_bootstrap_covers_the_known_difference():
    rng = np.random.default_rng(7)
    a = np.zeros(200)
    a[:160] = 1  # accuracy 0.8
    b = a.copy()
    b[rng.choice(160, 60, replace=False)] = 0  # accuracy 0.5: B fails 60 of A's passes
    result = paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert result.difference == pytest.approx(0.3)
    assert result.ci_low < 0.3 < result.ci_high
    # the percentile CI's half-width matches the normal-theory SE of a paired mean difference
    se = np.std(a - b, ddof=1) / math.sqrt(len(a))
    assert (result.ci_high - result.ci_low) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert result.p_value < 0.001
    assert paired_bootstrap(a, b, n_boot=4000, seed=1) == result  # deterministic with the seed
    assert paired_bootstrap(a, b, n_boot=4000, seed=2) != result


def test_paired_bootstrap_identical_and_noisy_inputs():
    a = np.random.default_rng(0).normal(size=50)
    same = paired_bootstrap(a, a, n_boot=1000)
    assert (same.difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    noise = paired_bootstrap(a, a + np.random.default_rng(1).normal(scale=0.01, size=50) - 0.0005, n_boot=2000,
                             statistic=np.median)
    assert noise.p_value > 0.2 and noise.ci_low < 0 < noise.ci_high


def test_benjamini_hochberg_by_hand_and_against_statsmodels():
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted p 0.005, 0.01, 0.03, 0.04 (m = 4): p*m/rank = 0.02, 0.02, 0.04, 0.04, then running minima from the top
    np.testing.assert_allclose(q[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(q[4])
    p = np.random.default_rng(3).uniform(size=60) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    assert np.isnan(benjamini_hochberg([np.nan])).all()


def _predictions(set_name: str, passed: dict[str, list[bool]]) -> pd.DataFrame:
    rows = [(set_name, item, k, f"formula{k}", ok) for item, oks in passed.items() for k, ok in enumerate(oks)]
    return pd.DataFrame(rows, columns=["set", "item", "prediction_index", "prediction", "passed"])


def test_compare_models_per_set():
    rng = np.random.default_rng(11)
    a1, b1 = rng.random(60) < 0.85, rng.random(60) < 0.55
    # set s2: two predictions per item; an item passes only when both hold
    a2, b2 = rng.random((40, 2)) < 0.9, rng.random((40, 2)) < 0.85
    pred_a = pd.concat([_predictions("s1", {f"{i}": [a1[i]] for i in range(60)}),
                        _predictions("s2", {f"{i}": list(a2[i]) for i in range(40)}),
                        _predictions("s2", {"extra": [True, True]})], ignore_index=True)  # only in run A
    pred_b = pd.concat([_predictions("s1", {f"{i}": [b1[i]] for i in range(60)}),
                        _predictions("s2", {f"{i}": list(b2[i]) for i in range(40)})], ignore_index=True)
    table = compare_models(pred_a, pred_b.sample(frac=1, random_state=0), n_boot=2000).set_index("set")
    items_a2, items_b2 = a2.all(axis=1), b2.all(axis=1)
    assert table.loc["s1", "n_items"] == 60 and table.loc["s2", "n_items"] == 40
    assert table.loc["s1", "n_unpaired"] == 0 and table.loc["s2", "n_unpaired"] == 1
    assert table.loc["s2", "accuracy_a"] == pytest.approx(items_a2.mean())
    assert table.loc["s2", "accuracy_b"] == pytest.approx(items_b2.mean())
    assert table.loc["s1", "difference"] == pytest.approx(a1.mean() - b1.mean())
    expected_p = []
    for name, a, b in (("s1", a1, b1), ("s2", items_a2, items_b2)):
        counts = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
        assert (table.loc[name, "n_a_only"], table.loc[name, "n_b_only"]) == (counts[0, 1], counts[1, 0])
        expected_p.append(sm_mcnemar(counts, exact=counts[0, 1] + counts[1, 0] < 25, correction=True).pvalue)
        assert table.loc[name, "ci_low"] <= table.loc[name, "difference"] <= table.loc[name, "ci_high"]
    np.testing.assert_allclose(table["mcnemar_p"], expected_p, rtol=1e-10)
    np.testing.assert_allclose(table["q_value"], multipletests(expected_p, method="fdr_bh")[1], rtol=1e-10)
    assert table.loc["s1", "mcnemar_p"] < 0.01


def test_compare_models_set_in_one_run_only():
    """A set scored in only one of the runs is listed with no paired items (it used to crash the table)."""
    pred_a = pd.concat([_predictions("s1", {"1": [True], "2": [False]}),
                        _predictions("only_a", {"1": [True], "2": [True]})], ignore_index=True)
    pred_b = _predictions("s1", {"1": [False], "2": [False]})
    table = compare_models(pred_a, pred_b, n_boot=200).set_index("set")
    assert list(table.index) == ["s1", "only_a"]
    row = table.loc["only_a"]
    assert row["n_items"] == 0 and row["n_unpaired"] == 2 and row["n_a_only"] == 0
    assert np.isnan(row["accuracy_a"]) and np.isnan(row["mcnemar_p"]) and np.isnan(row["q_value"])
    assert table.loc["s1", "n_a_only"] == 1 and table.loc["s1", "q_value"] == table.loc["s1", "mcnemar_p"]


def test_compare_models_rejects_duplicates_and_missing_columns():
    pred = _predictions("s", {"1": [True]})
    with pytest.raises(PsylingError, match="predictions B: missing column"):
        compare_models(pred, pred.drop(columns="passed"))
    with pytest.raises(PsylingError, match="duplicated"):
        compare_models(pd.concat([pred, pred]), pred)


def test_accuracy_by_phenomenon_with_wilson_intervals():
    preds = pd.concat([_predictions("agr1", {f"{i}": [i % 4 != 0] for i in range(20)}),
                       _predictions("agr2", {f"{i}": [True, i % 2 == 0] for i in range(10)}),
                       _predictions("npi", {f"{i}": [i < 3] for i in range(12)})], ignore_index=True)
    meta = pd.DataFrame({"set": ["agr1", "agr2", "npi", "unused"],
                         "phenomenon": ["agreement", "agreement", "npi", "island"]})
    table = accuracy_by(preds, meta).set_index("phenomenon")
    assert list(table.index) == ["agreement", "npi"]
    assert table.loc["agreement", ["n_sets", "n_items", "n_passed"]].tolist() == [2, 30, 20]
    assert table.loc["npi", "accuracy"] == pytest.approx(0.25)
    low, high = proportion_confint(20, 30, method="wilson")
    assert (table.loc["agreement", "ci_low"], table.loc["agreement", "ci_high"]) == pytest.approx((low, high))
    with pytest.raises(PsylingError, match="no phenomenon for set"):
        accuracy_by(preds, meta[meta.set != "npi"])
