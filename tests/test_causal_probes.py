"""Causal probes: the intervention's algebra, no-op and full-interchange runs through a tiny model, held-out
folds, and a summary that equals what its rows give by hand."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from psyling.interp.causal_probes import (CausalProbeConfig, SteerPosition, Steering, causal_probes,
                                          collect_features, fit_direction, item_folds, steer, steer_position,
                                          steered_values, summarise_causal_probes)
from psyling.interp.circuit_metric import MetricReader
from psyling.interp.pair_sequences import item_sequences
from psyling.interp.pairs import DesignError, PairSpec, pairs_for
from psyling.interp.patch_runs import Layout, run_context
from psyling.models.forward import ForwardRunner
from psyling.models.options import ScoringOptions
from psyling.models.scoring import CausalScorer
from psyling.stats.accuracy import wilson_interval
from psyling.stimuli.io import load_set

NOUNS = ["key", "cat", "dog", "chef", "table", "fox", "bird", "baby"]  # invented items, one noun each
MANIFEST = """schema_version: 1
name: tiny_agreement
version: "1.0"
description: Invented subject-verb pairs for tests.
phenomenon: subject_verb_agreement
language: en
license: CC-BY-4.0
citation: none
items: tiny_agreement.csv
regions: [subject, verb, continuation]
conditions: [sg_match, sg_mismatch, pl_match, pl_mismatch]
factors:
  number: [sg, sg, pl, pl]
  agreement: [match, mismatch, match, mismatch]
predictions:
  - "[(verb;%sg_mismatch%) > (verb;%sg_match%)] & [(verb;%pl_mismatch%) > (verb;%pl_match%)]"
"""


def _write_set(folder: Path, nouns: list[tuple[str, str]]):
    """'The key is on the table.' / 'The keys has on the table.' ... (the verbs are one token each)."""
    lines = ["item,condition,subject,verb,continuation"]
    for i, (singular, plural) in enumerate(nouns, 1):
        for cond, subject, verb in (("sg_match", singular, "is"), ("sg_mismatch", singular, "has"),
                                    ("pl_match", plural, "has"), ("pl_mismatch", plural, "is")):
            lines.append(f"{i},{cond},The {subject},{verb},on the table.")
    (folder / "tiny_agreement.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "tiny_agreement.yaml").write_text(MANIFEST, encoding="utf-8")
    return load_set(folder / "tiny_agreement.yaml")


@pytest.fixture
def stim(tmp_path):
    return _write_set(tmp_path, [(noun, noun + "s") for noun in NOUNS])


def _chunk(lm, stim, correct=True):
    """The set's items under its design, their steered positions, a runner and a metric reader."""
    scorer = CausalScorer(lm, ScoringOptions(), progress=False)
    (pair,) = pairs_for(stim, PairSpec())
    items = [item_sequences(stim, item, pair, scorer) for item in stim.items]
    positions = [steer_position(s, CausalProbeConfig()) for s in items]
    reader = MetricReader(scorer.statistics, scorer.markers, correct and scorer.word_correction)
    return items, positions, ForwardRunner(lm), reader


def test_interchange_puts_the_projection_at_the_target_and_keeps_the_rest():
    rng = np.random.default_rng(1)
    h, other = torch.from_numpy(rng.normal(size=(3, 16))), torch.from_numpy(rng.normal(size=(3, 16)))
    u = (other - h) / (other - h).norm(dim=1, keepdim=True)
    target = torch.tensor([0.5, -2.0, 7.25], dtype=torch.float64)
    moved = steer(h, u, target, "interchange")
    assert torch.allclose((moved * u).sum(1), target, atol=1e-12, rtol=0)
    assert torch.allclose(moved - (moved * u).sum(1, keepdim=True) * u, h - (h * u).sum(1, keepdim=True) * u,
                          atol=1e-12, rtol=0)  # the orthogonal complement is untouched
    exact = steer(h, u, (other * u).sum(1), "interchange")  # the runs differ only along u: h' = the other run
    assert torch.allclose(exact, other, atol=1e-12, rtol=0)
    added = steer(h, u, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), "add")
    assert torch.allclose(((added - h) * u).sum(1), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), atol=1e-12)
    flat32 = h.float()
    assert torch.equal(steer(flat32, torch.zeros_like(flat32), torch.zeros(3), "interchange"), flat32)


@pytest.mark.parametrize("fixture", ["bpe_llama", "sp_gpt2"])  # a started pass cut at the block list / by a map
def test_zero_steering_leaves_every_metric_bit_for_bit(fixture, stim, request):
    lm = request.getfixturevalue(fixture)
    items, positions, runner, reader = _chunk(lm, stim)
    d = lm.model.config.hidden_size
    steerings = [Steering(layer, np.zeros((len(items), d)), np.zeros(len(items)), mode)
                 for layer, mode in ((1, "interchange"), (2, "add"))]
    clean = run_context(runner, reader, items, "clean", Layout(), ["resid.1"], copies=len(steerings))
    for values in steered_values(runner, reader, clean, positions, steerings):
        assert [v.m for v in values] == [v.m for v in clean.values]
        assert [v.logit_diff for v in values] == [v.logit_diff for v in clean.values]


def test_interchange_with_the_runs_difference_at_the_last_layer_gives_the_corrupted_metric(bpe_llama, stim):
    """One-token verbs, raw surprisal: M reads only the last context position, where the last layer's clean and
    corrupted residuals differ along u alone (their difference): steering must reproduce M corrupt."""
    items, positions, runner, reader = _chunk(bpe_llama, stim, correct=False)
    item, pos = items[:1], positions[:1]
    top = bpe_llama.model.config.num_hidden_layers
    clean = run_context(runner, reader, item, "clean", Layout(), [f"resid.{top}"])
    corrupt = run_context(runner, reader, item, "corrupt", Layout(), [f"resid.{top}"])
    h = clean.forward.recorded[f"resid.{top}"][clean.flat(0, 0, pos[0].clean[0])].double().numpy()
    g = corrupt.forward.recorded[f"resid.{top}"][corrupt.flat(0, 0, pos[0].corrupt)].double().numpy()
    u = (g - h) / np.linalg.norm(g - h)
    (values,) = steered_values(runner, reader, clean, pos, [Steering(top, u[None], np.array([g @ u]))])
    assert abs(clean.values[0].m - corrupt.values[0].m) > 0.05  # the contexts do differ in M
    assert values[0].m == pytest.approx(corrupt.values[0].m, abs=1e-5)
    assert values[0].logit_diff == pytest.approx(corrupt.values[0].logit_diff, abs=1e-5)


def test_a_steered_layer_gives_the_same_metric_from_its_own_start_or_by_a_hook(bpe_llama, stim):
    items, positions, runner, reader = _chunk(bpe_llama, stim)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(len(items), bpe_llama.model.config.hidden_size))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    move = Steering(2, u, rng.normal(size=len(items)) * 3)
    clean = run_context(runner, reader, items, "clean", Layout(), ["resid.1", "resid.2"])
    (own,) = steered_values(runner, reader, clean, positions, [move])  # starts at resid.2 itself
    _, hooked = steered_values(runner, reader, clean, positions, [Steering(1, u * 0, np.zeros(len(items))), move])
    assert [v.m for v in hooked] == pytest.approx([v.m for v in own], abs=1e-5)
    assert max(abs(a.m - b.m) for a, b in zip(own, clean.values)) > 1e-3  # the steering did change M


def test_folds_are_balanced_and_directions_never_see_their_test_item(bpe_llama, stim):
    fold = item_folds(8, 4, seed=3)
    assert sorted(np.bincount(fold)) == [2, 2, 2, 2]
    with pytest.raises(DesignError, match="4 folds need at least 4 usable items, have 3"):
        item_folds(3, 4, seed=0)
    items, positions, runner, reader = _chunk(bpe_llama, stim)
    config = CausalProbeConfig(folds=4)
    features = collect_features(runner, reader, items, positions, [1], config)
    clean, corrupt = features.clean[1], features.corrupt[1]
    control = np.array([0, 1] * 4)
    fit = fit_direction(clean, corrupt, fold, control, "mean-diff", config)
    for j in range(8):
        others = fold != fold[j]
        diff = corrupt[others].mean(0) - clean[others].mean(0)
        assert np.allclose(fit.directions[fold[j]], diff / np.linalg.norm(diff), atol=1e-12)
        assert fit.values[fold[j]] == pytest.approx(corrupt[others].mean(0) @ fit.directions[fold[j]])
        with_item = corrupt.mean(0) - clean.mean(0)
        assert not np.allclose(fit.directions[fold[j]], with_item / np.linalg.norm(with_item), atol=1e-6)
    probe = fit_direction(clean, corrupt, fold, control, "probe", config)
    assert np.allclose(np.linalg.norm(probe.directions, axis=1), 1.0)
    assert set(np.unique(probe.correct)) <= {0.0, 0.5, 1.0} and set(np.unique(probe.control)) <= {0.0, 0.5, 1.0}


def test_causal_probes_rows_and_summary_agree_with_a_hand_computation(bpe_llama, stim):
    config = CausalProbeConfig(layers=(0, 1, 2), folds=4, items_per_batch=3, layers_per_pass=2, n_boot=200)
    result = causal_probes(bpe_llama, stim, config, progress=False)
    rows, summary = result.rows, result.summary
    assert len(rows) == 8 * 3 * 2 and rows["m_steered"].notna().all()
    assert (rows.groupby("item")["fold"].nunique() == 1).all()  # an item keeps its fold at every layer and kind
    flipped = np.sign(rows["m_steered"]) != np.sign(rows["m_clean"])
    assert (rows["flipped"].astype(bool) == flipped).all()
    gap = rows["m_clean"] - rows["m_corrupt"]
    expected = ((rows["m_clean"] - rows["m_steered"]) / gap).where(gap.abs() >= config.threshold)
    assert np.allclose(rows["toward"], expected, equal_nan=True)
    assert len(summary) == 3 * 2
    for _, line in summary.iterrows():
        mine = rows[(rows["layer"] == line["layer"]) & (rows["direction_kind"] == line["direction_kind"])]
        flips = int(mine["flipped"].astype(bool).sum())
        assert line["n_items"] == 8 and line["iia"] == flips / 8
        assert (line["iia_low"], line["iia_high"]) == pytest.approx(wilson_interval(flips, 8))
        assert line["toward"] == pytest.approx(mine["toward"].mean())
        assert line["toward_low"] <= line["toward"] <= line["toward_high"]
        assert line["accuracy"] == pytest.approx(mine["correct"].mean())
        assert line["selectivity"] == pytest.approx(mine["correct"].mean() - mine["control_correct"].mean())
    again = summarise_causal_probes(rows, n_boot=200, seed=config.seed)
    pd.testing.assert_frame_equal(summary, again)


def test_layer_zero_is_the_embedding_and_the_clean_m_matches_an_unpatched_run(bpe_llama, stim):
    config = CausalProbeConfig(layers=(0,), folds=2, directions=("mean-diff",), mode="add", alpha=0.0)
    rows = causal_probes(bpe_llama, stim, config, progress=False).rows
    assert np.array_equal(rows["m_steered"].to_numpy(), rows["m_clean"].to_numpy())  # alpha 0: no change
    assert not rows["flipped"].any()
    items, _, runner, reader = _chunk(bpe_llama, stim)
    clean = run_context(runner, reader, items, "clean", Layout(), ["resid.0"])
    assert rows["m_clean"].to_numpy() == pytest.approx([v.m for v in clean.values], abs=1e-5)


def test_an_item_whose_contexts_are_identical_is_listed_but_not_steered(bpe_llama, tmp_path):
    stim = _write_set(tmp_path, [(noun, noun + "s") for noun in NOUNS[:4]] + [("sheep", "sheep")])
    config = CausalProbeConfig(layers=(1,), folds=2, directions=("probe",), n_boot=10)
    result = causal_probes(bpe_llama, stim, config, progress=False)
    sheep = result.rows[result.rows["item"] == "5"]
    assert len(sheep) == 1 and sheep["m_steered"].isna().all()
    assert sheep["note"].iloc[0] == "not steered: the clean and corrupted contexts are identical"
    assert result.summary["n_items"].tolist() == [4]


def test_a_region_position_and_bad_settings(bpe_llama, stim):
    items, _, _, _ = _chunk(bpe_llama, stim)
    first = steer_position(items[0], CausalProbeConfig(region="subject", token="first"))
    assert first == SteerPosition((1, 1), 1)  # 'The' right after the context token, in both contexts
    last = steer_position(items[0], CausalProbeConfig())
    assert last == SteerPosition((2, 2), 3)  # 'Ġkey' vs 's' of 'Ġkey s'
    with pytest.raises(DesignError, match="before the critical region 'verb'"):
        causal_probes(bpe_llama, stim, CausalProbeConfig(region="continuation", folds=2), progress=False)
    with pytest.raises(DesignError, match="layer 9 does not exist"):
        causal_probes(bpe_llama, stim, CausalProbeConfig(layers=(9,), folds=2), progress=False)
    with pytest.raises(DesignError, match="not all"):
        CausalProbeConfig(token="all")
    with pytest.raises(DesignError, match="steering mode 'swap'"):
        CausalProbeConfig(mode="swap")
    with pytest.raises(DesignError, match="direction kind 'pca'"):
        CausalProbeConfig(directions=("pca",))
    assert math.isnan(summarise_causal_probes(pd.DataFrame(
        [{"set": "s", "clean": "a", "corrupt": "b", "layer": 1, "site": "resid.1", "direction_kind": "probe",
          "m_clean": 1.0, "m_corrupt": -1.0, "m_steered": 0.5, "flipped": False, "toward": 0.25, "correct": 1.0,
          "control_correct": 0.5}]))["toward_low"][0])  # one item: no bootstrap CI
