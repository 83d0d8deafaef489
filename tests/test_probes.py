"""Layer-wise linear probes on synthetic activations with a planted signal (psyling.interp.probes)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from psyling.errors import PsylingError
from psyling.interp import (control_labels, group_folds, group_permutation, labels_from_conditions, probe_layers,
                            site_layer, sorted_sites)
from psyling.report.interp_plots import layer_curve

N_ITEMS, N_WORDS, DIM, VOCAB, PLANTED = 40, 6, 64, 50, 3


def synthetic(seed: int = 1) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """40 items x {sg, pl} x 6 words drawn from 50 word types. resid.0 holds the word type's embedding (lexical
    identity, no number), resid.3 holds number (+/-1.5 along one direction), the other layers are noise."""
    rng = np.random.default_rng(seed)
    rows = [(item, cond, f"W{w}" if w % 2 else f"w{w}") for item in range(N_ITEMS) for cond in ("sg", "pl")
            for w in rng.integers(0, VOCAB, N_WORDS)]
    meta = pd.DataFrame(rows, columns=["item", "condition", "text"]).assign(set="toy", pool="word")
    meta["position"] = meta.groupby(["item", "condition"]).cumcount()
    meta["number"] = labels_from_conditions(meta, {"number": ["sg", "pl"]}, ["sg", "pl"], "number")
    n = len(meta)
    sign = np.where(meta["number"] == "sg", 1.0, -1.0)
    types = pd.factorize(meta["text"].str.lower())[0]
    embedding = rng.normal(size=(VOCAB, DIM))
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    features = {}
    for layer in (5, 0, 2, 4, 1, 3):  # unordered on purpose
        x = rng.normal(size=(n, DIM))
        if layer == 0:
            x = embedding[types] + 0.3 * x
        if layer == PLANTED:
            x += 1.5 * sign[:, None] * direction
        features[f"resid.{layer}"] = x.astype(np.float16)
    return features, meta


@pytest.fixture(scope="module")
def probed():
    features, meta = synthetic()
    return features, meta, probe_layers(features, meta, "number", folds=5, n_permutations=100, seed=0)


def value(table: pd.DataFrame, site: str, metric: str) -> float:
    return float(table.loc[(table["site"] == site) & (table["metric"] == metric), "value"].iloc[0])


def test_planted_layer_is_found(probed):
    features, meta, table = probed
    assert list(dict.fromkeys(table["site"])) == [f"resid.{k}" for k in range(6)]  # resid.0 (embeddings) first
    assert set(table["metric"]) == {"accuracy", "control_accuracy", "selectivity", "majority", "p_value", "q_value"}
    accuracy = table[table["metric"] == "accuracy"].set_index("layer")["value"]
    assert accuracy.idxmax() == PLANTED
    assert accuracy[PLANTED] > 0.85
    assert accuracy.drop(PLANTED).between(0.40, 0.56).all()
    # independent recomputation of the planted layer's out-of-fold accuracy
    x, y = features["resid.3"].astype(float), meta["number"].to_numpy()
    predicted = np.empty(len(y), dtype=object)
    for train, test in GroupKFold(n_splits=5).split(x, y, meta["item"]):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[train], y[train])
        predicted[test] = model.predict(x[test])
    assert accuracy[PLANTED] == pytest.approx(np.mean(predicted == y), abs=1e-12)
    # balanced labels: the majority baseline is exactly 0.5 (every training fold is 50/50, ties -> first class)
    assert (table.loc[table["metric"] == "majority", "value"] == 0.5).all()


def test_selectivity_and_control(probed):
    _, _, table = probed
    selectivity = table[table["metric"] == "selectivity"].set_index("layer")
    assert selectivity.loc[PLANTED, "value"] > 0.3 and selectivity.loc[PLANTED, "ci_low"] > 0.25
    for layer in (1, 2, 4, 5):  # noise layers: both the task and the control sit near their majority rates
        assert abs(selectivity.loc[layer, "value"]) < 0.15
    # the embedding layer encodes word identity: the control task (a random label per type) is learnable there,
    # the real label is not, so selectivity is strongly negative -- the point of Hewitt & Liang's control
    assert value(table, "resid.0", "control_accuracy") > 0.95
    assert selectivity.loc[0, "value"] < -0.4
    ci = table.dropna(subset=["ci_low"])
    assert ((ci["ci_low"] <= ci["value"]) & (ci["value"] <= ci["ci_high"])).all()


def test_permutation_p_values(probed):
    _, _, table = probed
    p = table[table["metric"] == "p_value"].set_index("layer")["value"]
    assert p[PLANTED] == pytest.approx(1 / 101)  # no permutation reaches the observed accuracy
    assert p.drop(PLANTED).median() > 0.3  # null layers: p roughly uniform (one of five is 0.04 here, by chance)
    q = table[table["metric"] == "q_value"].set_index("layer")["value"]
    assert q[PLANTED] == pytest.approx(6 / 101)  # Benjamini-Hochberg: smallest of 6 p-values times 6
    assert (q.drop(PLANTED) > 0.1).all()


def test_item_grouped_folds_do_not_leak():
    """Each item has a fingerprint vector and one random label: a probe that sees an item's rows in training
    recognises the item (~100%); with item-grouped folds it cannot (~chance)."""
    rng = np.random.default_rng(7)
    items = np.repeat(np.arange(40), 8)
    labels = rng.integers(0, 2, 40)[items]
    features = {"resid.1": rng.normal(size=(40, 64))[items] + 0.3 * rng.normal(size=(len(items), 64))}
    meta = pd.DataFrame({"item": items, "row": np.arange(len(items)), "label": labels, "text": "w"})
    for train, test in group_folds(meta["item"].to_numpy(), 5):
        assert not set(meta["item"].iloc[train]) & set(meta["item"].iloc[test])
    grouped = probe_layers(features, meta, "label", control=None, n_permutations=50)
    leaky = probe_layers(features, meta, "label", group="row", control=None, n_permutations=50)
    assert value(grouped, "resid.1", "accuracy") < 0.62
    assert value(leaky, "resid.1", "accuracy") > 0.95
    # labels constant within items: the permutation moves whole items' labels, so the grouped probe is not
    # significant, while the row-wise (leaky) analysis is
    assert value(grouped, "resid.1", "p_value") > 0.2
    assert value(leaky, "resid.1", "p_value") == pytest.approx(1 / 51)


def test_group_permutation_respects_groups():
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"])
    values = np.arange(len(groups))
    for _ in range(20):
        moved = values[group_permutation(groups, rng)]
        blocks = {g: set(moved[groups == g]) for g in "abcd"}
        assert {frozenset(blocks["a"]), frozenset(blocks["b"])} == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}
        assert blocks["c"] == {6, 7} and blocks["d"] == {8}  # the only groups of their sizes


def test_control_labels_are_fixed_per_type_and_follow_the_label_distribution():
    rng = np.random.default_rng(2)
    words = np.array([f"word{k}" for k in range(4000)])
    text = np.concatenate([words, np.char.upper(words)])  # every type twice, differently cased
    labels = np.where(rng.random(len(text)) < 0.3, "pl", "sg")
    control = control_labels(text, labels, seed=5)
    assert (control[:4000] == control[4000:]).all()
    assert np.mean(control[:4000] == "pl") == pytest.approx(np.mean(labels == "pl"), abs=0.025)


def test_labels_from_conditions_and_errors():
    conditions = ["sg_det_match", "sg_det_mismatch", "pl_det_match", "pl_det_mismatch"]
    factors = {"number": ["sg", "sg", "pl", "pl"], "agreement": ["match", "mismatch", "match", "mismatch"]}
    meta = pd.DataFrame({"condition": ["pl_det_mismatch", "sg_det_match", "pl_det_match"]})
    assert list(labels_from_conditions(meta, factors, conditions, "number")) == ["pl", "sg", "pl"]
    assert list(labels_from_conditions(meta, factors, conditions, "agreement")) == ["mismatch", "match", "match"]
    with pytest.raises(PsylingError, match="no factor 'case'"):
        labels_from_conditions(meta, factors, conditions, "case")
    with pytest.raises(PsylingError, match="condition"):
        labels_from_conditions(meta.assign(condition="other"), factors, conditions, "number")
    assert sorted_sites(["resid.10", "mlp.2", "resid.2", "attn.2", "resid.0"]) == [
        "resid.0", "attn.2", "mlp.2", "resid.2", "resid.10"]
    # within a block, the order of computation: heads, attention output, neurons, MLP output, residual stream
    assert sorted_sites(["resid.1", "neuron.1.7", "mlp.1", "head.1.3", "attn.1", "head.1", "neuron.1.2"]) == [
        "head.1", "head.1.3", "attn.1", "neuron.1.2", "neuron.1.7", "mlp.1", "resid.1"]
    assert site_layer("head.3.5") == 3 and site_layer("resid.12") == 12
    with pytest.raises(PsylingError, match="not a site name: 'layer3'"):
        site_layer("layer3")
    with pytest.raises(PsylingError, match=r"features\['resid.1'\]"):
        probe_layers({"resid.1": np.zeros((3, 2))}, pd.DataFrame({"item": [1, 2], "label": [0, 1], "text": "a"}),
                     "label")


def test_missing_labels_are_counted(probed):
    features, meta, _ = probed
    holes = meta.copy()
    holes.loc[holes.index[:7], "number"] = None
    table = probe_layers({"resid.3": features["resid.3"]}, holes, "number", n_permutations=0)
    assert (table["n_excluded"] == 7).all() and (table["n"] == len(meta) - 7).all()
    assert "p_value" not in set(table["metric"])


def test_layer_curve_png(probed, tmp_path):
    _, _, table = probed
    path = layer_curve(table, ["accuracy", "control_accuracy", "selectivity"], tmp_path / "probe.png", "number")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(PsylingError, match="no values for metric"):
        layer_curve(table, ["r2"], tmp_path / "none.png", "none")
