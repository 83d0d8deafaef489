"""Ablation with a random control and circuit faithfulness on a tiny random model, checked against hand-made
hooks: zero ablation is zeroing a head's slice of the o_proj input, mean ablation sets a unit to its mean over
the set, resampling takes pool rows, and F(all) = 1, F(none) = 0."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psyling import api
from psyling.interp.ablation import (AblationConfig, ablate, ablation_interventions, all_units, check_units,
                                     faithfulness, random_units, scored_tables, site_pools)
from psyling.interp.pairs import DesignError
from psyling.interp.patching import PatchConfig, patch_set
from psyling.models.scoring import CausalScorer
from test_mediation import agreement_set

HEAD_DIM = 16  # tiny_llama: hidden 64, 4 heads


@pytest.fixture(scope="module")
def stim():
    return agreement_set(("is", "has"))  # a verb pair on which the random model's accuracy is neither 0 nor 1


@pytest.fixture(scope="module")
def scorer(bpe_llama):
    return CausalScorer(bpe_llama, progress=False)


def _sequences(stim, scorer) -> list[list[int]]:
    return [scorer.encode(r).sequence for r in api.set_requests(stim)]


def _zero_head_input(model, layer: int, head: int):
    """A hand-made hook: zero head ``head``'s slice of block ``layer``'s o_proj input."""
    def hook(module, args):
        x = args[0].clone()
        x[..., head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0.0
        return (x,)
    return model.model.layers[layer - 1].self_attn.o_proj.register_forward_pre_hook(hook)


def test_ablating_nothing_is_the_unablated_run(bpe_llama, stim):
    table = ablate(bpe_llama, [stim], [], AblationConfig(methods=("zero",), n_random=0), progress=False)
    (row,) = table.to_dict("records")
    run = api.run(bpe_llama, [stim], progress=False)
    assert row["baseline"] == row["accuracy"] == run.summary["accuracy"].iloc[0]
    assert 0 < row["baseline"] < 1 and row["n_items"] == 12
    assert row["change"] == row["ci_low"] == row["ci_high"] == 0.0


def test_zero_ablating_a_head_is_zeroing_its_o_proj_input_slice(bpe_llama, stim, scorer):
    ablated = scorer.with_interventions(ablation_interventions(bpe_llama, ["head.1.0"], "zero", None))
    regions, passes = scored_tables(ablated, stim, "surprisal")
    handle = _zero_head_input(bpe_llama.model, 1, 0)
    try:
        hand_regions, hand_passes = scored_tables(scorer, stim, "surprisal")
    finally:
        handle.remove()
    _, base = scored_tables(scorer, stim, "surprisal")
    np.testing.assert_array_equal(regions["surprisal"].to_numpy(), hand_regions["surprisal"].to_numpy())
    assert passes.equals(hand_passes) and not passes.equals(base)  # the head matters to some item
    table = ablate(bpe_llama, [stim], ["head.1.0"], AblationConfig(methods=("zero",), n_random=0), progress=False)
    (row,) = table.to_dict("records")
    assert (row["accuracy"], row["baseline"]) == (hand_passes.mean(), base.mean())
    assert row["change"] == pytest.approx(hand_passes.mean() - base.mean())


def _hand_mean(model, sequences, module, columns) -> torch.Tensor:
    """The mean of a module input's ``columns`` over every position of every sequence, one sequence at a time."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0][0, :, columns].double()))
    try:
        with torch.no_grad():
            for ids in sequences:
                model(torch.tensor([ids]))
    finally:
        handle.remove()
    return torch.cat(seen).mean(0)


def test_mean_ablation_sets_units_to_their_mean_over_the_set(bpe_llama, stim, scorer):
    sequences = _sequences(stim, scorer)
    layer = bpe_llama.model.model.layers[1]
    head_mean = _hand_mean(bpe_llama.model, sequences, layer.self_attn.o_proj, slice(3 * HEAD_DIM, 4 * HEAD_DIM))
    unit_mean = _hand_mean(bpe_llama.model, sequences, layer.mlp.down_proj, slice(5, 6))
    pools = site_pools(stim, scorer, ["head.2", "neuron.2"], AblationConfig())
    assert pools["head.2"].shape[0] == sum(map(len, sequences))
    interventions = ablation_interventions(bpe_llama, ["head.2.3", "neuron.2.5"], "mean", pools)
    forward = scorer.runner.run_sequences(sequences[:3], record=["head.2", "neuron.2"], interventions=interventions)
    plain = scorer.runner.run_sequences(sequences[:3], record=["head.2", "neuron.2"])
    for i in range(3):
        head, unit = forward.at("head.2", i), forward.at("neuron.2", i)
        torch.testing.assert_close(head[:, 3 * HEAD_DIM:].double(), head_mean.expand(len(head), -1), atol=1e-6,
                                   rtol=0)
        torch.testing.assert_close(unit[:, 5].double(), unit_mean.expand(len(unit)), atol=1e-6, rtol=0)
        torch.testing.assert_close(head[:, :3 * HEAD_DIM], plain.at("head.2", i)[:, :3 * HEAD_DIM], atol=0, rtol=0)


def test_resampling_takes_rows_of_the_pool_reproducibly(bpe_llama, stim, scorer):
    sequences = _sequences(stim, scorer)[:4]
    pools = site_pools(stim, scorer, ["head.1"], AblationConfig())
    pool = pools["head.1"][:, HEAD_DIM:2 * HEAD_DIM]

    def resampled(seed: int) -> torch.Tensor:
        interventions = ablation_interventions(bpe_llama, ["head.1.1"], "resample", pools, seed)
        forward = scorer.runner.run_sequences(sequences, record=["head.1"], interventions=interventions)
        return torch.cat([forward.at("head.1", i) for i in range(len(sequences))])

    first, again, other = resampled(0), resampled(0), resampled(1)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.equal(first, other)
    rows = first[:, HEAD_DIM:2 * HEAD_DIM]
    distance = torch.cdist(rows, pool, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert (distance == 0).all()  # every ablated position holds a pool row exactly
    assert len({tuple(r.tolist()) for r in rows}) > 1


def test_random_units_are_seeded_layer_matched_and_never_the_given_ones(bpe_llama):
    units = ["head.1.0", "head.2.1", "head.2.3", "neuron.1.5"]
    draws = random_units(bpe_llama, units, 6, seed=3)
    assert draws == random_units(bpe_llama, units, 6, seed=3) and draws != random_units(bpe_llama, units, 6, seed=4)
    for draw in draws:
        assert len(set(draw)) == 4 and not set(draw) & set(units)
        layers = sorted((name.split(".")[0], name.split(".")[1]) for name in draw)
        assert layers == [("head", "1"), ("head", "2"), ("head", "2"), ("neuron", "1")]
    with pytest.raises(DesignError, match="layer 1 has 0 head units outside"):
        random_units(bpe_llama, [f"head.1.{h}" for h in range(4)], 1, seed=0)


def test_ablate_reports_the_change_against_the_baseline_and_the_random_control(bpe_llama, stim):
    other = agreement_set(("has", "is"), name="toy_agreement_2")
    config = AblationConfig(methods=("zero", "resample"), n_random=2, n_boot=200)
    table = ablate(bpe_llama, [stim, other], ["head.1.0", "neuron.2.7"], config, progress=False)
    assert len(table) == 2 * 2 * 4 and set(table["units"]) == {"top", "random-0", "random-1", "random"}
    np.testing.assert_allclose(table["change"], table["accuracy"] - table["baseline"], atol=1e-12)
    boot = table[table["interval"] == "item bootstrap"]
    assert ((boot["ci_low"] <= boot["change"]) & (boot["change"] <= boot["ci_high"])).all()
    assert ((boot["acc_ci_low"] <= boot["accuracy"]) & (boot["accuracy"] <= boot["acc_ci_high"])).all()
    for (name, method), group in table.groupby(["set", "method"]):
        summary = group[group["units"] == "random"].iloc[0]
        draws = group[group["units"].str.startswith("random-")]
        assert summary["change"] == pytest.approx(draws["change"].mean())
        assert summary["ci_low"] == pytest.approx(draws["change"].quantile(0.025))
    again = ablate(bpe_llama, [stim], ["head.1.0", "neuron.2.7"], config, progress=False)
    np.testing.assert_array_equal(again["accuracy"], table[table["set"] == stim.name]["accuracy"])


def test_faithfulness_of_every_unit_is_one_and_of_none_zero(bpe_llama, stim):
    config = AblationConfig(methods=("zero", "mean"), n_random=0, n_boot=100)
    whole = faithfulness(bpe_llama, stim, all_units(bpe_llama, ["head"]), config)
    assert list(whole["faithfulness"]) == [1.0, 1.0] and (whole["m_full"] != whole["m_empty"]).all()
    none = faithfulness(bpe_llama, stim, [], AblationConfig(methods=("zero", "mean"), n_random=0, kinds=("head",)))
    assert list(none["faithfulness"]) == [0.0, 0.0]
    rows = patch_set(bpe_llama, stim, PatchConfig(sites=("resid.0",), regions=("subject",), directions=("noise",),
                                                  threshold=0.0), progress=False).rows
    assert whole["m_full"].iloc[0] == pytest.approx(rows["m_clean"].mean(), abs=1e-9)  # the engine's M


def test_faithfulness_of_a_circuit_against_hand_ablation_and_random_circuits(bpe_llama, stim):
    circuit = ["head.1.0", "head.2.1"]
    config = AblationConfig(methods=("zero",), n_random=3, n_boot=100)
    table = faithfulness(bpe_llama, stim, circuit, config).set_index("circuit")
    assert list(table.index) == ["circuit", "random-0", "random-1", "random-2", "random"]
    handles = [_zero_head_input(bpe_llama.model, layer, head) for layer in (1, 2) for head in range(4)
               if f"head.{layer}.{head}" not in circuit]
    try:
        rows = patch_set(bpe_llama, stim, PatchConfig(sites=("resid.0",), regions=("subject",),
                                                      directions=("noise",), threshold=0.0), progress=False).rows
    finally:
        for handle in handles:
            handle.remove()
    row = table.loc["circuit"]
    assert row["m_circuit"] == pytest.approx(rows["m_clean"].mean(), abs=1e-5)
    assert row["faithfulness"] == pytest.approx((row["m_circuit"] - row["m_empty"]) / (row["m_full"] - row["m_empty"]))
    assert row["ci_low"] <= row["faithfulness"] <= row["ci_high"]
    draws = table.loc[["random-0", "random-1", "random-2"], "faithfulness"]
    assert table.loc["random", "faithfulness"] == pytest.approx(draws.mean())
    assert draws.nunique() > 1


def test_bad_units_and_settings_are_one_line_errors(bpe_llama):
    with pytest.raises(DesignError, match="name a head"):
        check_units(bpe_llama, ["resid.1"])
    with pytest.raises(DesignError, match="out of range"):
        check_units(bpe_llama, ["head.3.0"])
    with pytest.raises(DesignError, match="ablation method 'noise'"):
        AblationConfig(methods=("noise",))
    with pytest.raises(DesignError, match="empty circuit"):
        faithfulness(bpe_llama, agreement_set(), [], AblationConfig(n_random=0))
