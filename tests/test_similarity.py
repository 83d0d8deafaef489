"""Representational similarity per layer on synthetic condition geometry (psyling.interp.similarity)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from psyling.errors import PsylingError
from psyling.interp import condition_rdms, factor_rdm, layer_rsa
from psyling.report.interp_plots import layer_curve

CONDITIONS = [f"c{k}" for k in range(6)]
N_ITEMS, DIM, PLANTED = 30, 32, 2


def synthetic(seed: int = 3) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """30 items x 6 conditions x 3 regions. Every layer: an item vector + noise; resid.2 adds the condition's
    position on a line (k - 2.5) along one direction, so its geometry follows the theory |i - j|."""
    rng = np.random.default_rng(seed)
    rows = [(item, cond, region) for item in range(N_ITEMS) for cond in CONDITIONS for region in (1, 2, 3)]
    meta = pd.DataFrame(rows, columns=["item", "condition", "position"]).assign(set="toy", pool="region", text="x")
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    items = rng.normal(size=(N_ITEMS, DIM))
    step = meta["condition"].str[1:].astype(int).to_numpy() - 2.5
    features = {}
    for layer in range(5):
        x = items[meta["item"]] + 0.5 * rng.normal(size=(len(meta), DIM))
        if layer == PLANTED:
            x += step[:, None] * direction
        features[f"resid.{layer}"] = x
    return features, meta


def line_theory() -> pd.DataFrame:
    return pd.DataFrame(np.abs(np.subtract.outer(range(6), range(6))).astype(float), index=CONDITIONS,
                        columns=CONDITIONS)


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
def test_planted_geometry_matches_theory(data, metric):
    features, meta = data
    table = layer_rsa(features, meta, line_theory(), position=2, metric=metric).set_index("layer")
    assert table["rho"].idxmax() == PLANTED
    # the ranks of the item-averaged distances match |i - j| exactly; rho < 1 only because the theory has ties
    theory = np.array([1, 2, 3, 4, 5, 1, 2, 3, 4, 1, 2, 3, 1, 2, 1], dtype=float)  # upper triangle, row-major
    best = spearmanr(theory + 0.01 * np.arange(15), theory).statistic  # untied ranks in the theory's order
    assert table.loc[PLANTED, "rho"] == pytest.approx(best, abs=1e-12)
    assert table.loc[PLANTED, "rho"] == pytest.approx(0.968246, abs=1e-6)
    # exact test over all 720 relabellings: only the identity and the reversal keep the line -> p = 2/720
    assert bool(table.loc[PLANTED, "exact"]) and table.loc[PLANTED, "n_permutations"] == 720
    assert table.loc[PLANTED, "p_value"] == pytest.approx(2 / 720)
    assert (table["rho"].drop(PLANTED).abs() < 0.4).all()
    assert (table["p_value"].drop(PLANTED) > 0.05).all()


def test_rho_recomputed_independently(data):
    """1 - Pearson r per item on region 2, averaged over items, Spearman with the theory over the upper triangle."""
    features, meta = data
    table = layer_rsa(features, meta, line_theory(), position=2).set_index("site")
    upper = np.triu_indices(6, k=1)
    for site, x in features.items():
        per_item = []
        for item in range(N_ITEMS):
            region = meta[(meta["item"] == item) & (meta["position"] == 2)]
            rows = [region.index[region["condition"] == c][0] for c in CONDITIONS]
            vectors = x[rows]
            per_item.append(1 - np.corrcoef(vectors))
        rdm = np.mean(per_item, axis=0)
        expected = spearmanr(rdm[upper], line_theory().to_numpy()[upper]).statistic
        assert table.loc[site, "rho"] == pytest.approx(expected, abs=1e-12)
        assert np.allclose(condition_rdms({site: x}, meta, CONDITIONS, position=2)[site].to_numpy(), rdm)


def test_sentence_vectors_and_random_permutations(data):
    features, meta = data
    table = layer_rsa(features, meta, line_theory(), n_permutations=200, seed=1).set_index("layer")
    assert not table["exact"].any() and (table["n_permutations"] == 200).all()
    assert table["rho"].idxmax() == PLANTED and table.loc[PLANTED, "p_value"] <= 3 / 201
    # sentence vector = mean of the three region vectors of an item and condition
    sentence = meta.groupby(["item", "condition"], sort=False).ngroup().to_numpy()
    pooled = np.stack([features["resid.2"][sentence == k].mean(axis=0) for k in range(sentence.max() + 1)])
    first = meta.drop_duplicates(["item", "condition"])
    rdm = condition_rdms({"resid.2": features["resid.2"]}, meta, CONDITIONS, metric="euclidean")["resid.2"]
    for a, b in [("c0", "c5"), ("c1", "c2")]:
        distances = [np.linalg.norm(pooled[(first["item"] == i) & (first["condition"] == a)][0]
                                    - pooled[(first["item"] == i) & (first["condition"] == b)][0])
                     for i in range(N_ITEMS)]
        assert rdm.loc[a, b] == pytest.approx(np.mean(distances), rel=1e-10)


def test_incomplete_items_are_counted(data):
    features, meta = data
    dropped = meta[~((meta["item"] < 4) & (meta["condition"] == "c3"))]
    kept = {site: x[dropped.index.to_numpy()] for site, x in features.items()}
    table = layer_rsa(kept, dropped.reset_index(drop=True), line_theory(), position=2)
    assert (table["n_items"] == N_ITEMS - 4).all() and (table["n_items_excluded"] == 4).all()


def test_factor_rdm_and_errors(data):
    conditions = ["sg_match", "sg_mismatch", "pl_match", "pl_mismatch"]
    factors = {"number": ["sg", "sg", "pl", "pl"], "agreement": ["match", "mismatch", "match", "mismatch"]}
    both = factor_rdm(factors, conditions)
    assert both.to_numpy().tolist() == [[0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 1], [2, 1, 1, 0]]
    assert factor_rdm(factors, conditions, "number").loc["sg_match"].tolist() == [0, 0, 1, 1]
    features, meta = data
    with pytest.raises(PsylingError, match="at least three conditions"):
        layer_rsa(features, meta, line_theory().iloc[:2, :2])
    with pytest.raises(PsylingError, match="symmetric"):
        layer_rsa(features, meta, line_theory() + np.triu(np.ones((6, 6))))
    with pytest.raises(PsylingError, match="several sets"):
        layer_rsa(features, meta.assign(set=np.where(meta["item"] < 5, "a", "b")), line_theory())
    with pytest.raises(PsylingError, match="unknown metric"):
        layer_rsa(features, meta, line_theory(), metric="cosine")


def test_rsa_curve_png(data, tmp_path):
    features, meta = data
    table = layer_rsa(features, meta, line_theory(), position=2)
    path = layer_curve(table, ["rho"], tmp_path / "rsa.png", "toy RSA", chance=0.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
