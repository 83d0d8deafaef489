"""Latents that carry a contrast, top-activating contexts and k-sparse probes on hand-built latents
(psyling.interp.sae_features)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from psyling.errors import PsylingError
from psyling.interp.sae import SAEConfig, SparseAutoencoder
from psyling.interp.sae_features import (CONTRAST_COLUMNS, ContrastConfig, RunningTop, auroc, context_string,
                                         contrast_latents, effect_size_dz, mark_contexts, paired_p_values,
                                         sentences_of, sparse_probes, stimulus_top_contexts, text_top_contexts)
from psyling.stimuli.schema import Condition, Item, StimulusSet

CONDITIONS = ("sg_match", "sg_mismatch", "pl_match", "pl_mismatch")
FACTORS = {"number": ("sg", "sg", "pl", "pl"), "agreement": ("match", "mismatch", "match", "mismatch")}
N_ITEMS = 20
AGREEMENT, NULL, SILENT, NUMBER, ZERO_DIFF = 0, 1, 2, 3, 4  # the latents of ``planted``


def stimulus_set(name: str = "agr", factors: dict = FACTORS) -> StimulusSet:
    items = [Item(f"i{k}", {c: Condition(c, (f"the dog{'s' if 'pl' in c else ''}", "runs")) for c in CONDITIONS})
             for k in range(N_ITEMS)]
    return StimulusSet(name, ("subject", "verb"), CONDITIONS, items, [], "toy.yaml", factors=dict(factors))


def planted(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """20 items x 4 conditions x 5 latents. AGREEMENT: 0 at match, 1 + U(0, 1) at mismatch. NULL: match and
    mismatch differ by +d or -d in mirrored pairs of items (the differences are symmetric about 0). SILENT: 0
    everywhere. NUMBER: 2 + U(0, 1) at sg, U(0, 0.5) at pl. ZERO_DIFF: one value per item, the same in every
    condition."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame([(f"i{k}", c) for k in range(N_ITEMS) for c in CONDITIONS], columns=["item", "condition"])
    meta = meta.assign(set="agr", position=2)
    mismatch = meta["condition"].str.endswith("_mismatch").to_numpy()
    sg = meta["condition"].str.startswith("sg").to_numpy()
    item = meta["item"].str[1:].astype(int).to_numpy()
    latents = np.zeros((len(meta), 5))
    latents[:, AGREEMENT] = np.where(mismatch, 1 + rng.uniform(size=len(meta)), 0.0)
    step = np.where(item % 2 == 0, 1.0, -1.0) * (1 + item // 2)  # +1, -1, +2, -2, ...
    latents[:, NULL] = 20 + np.where(mismatch, step, 0.0)
    latents[:, NUMBER] = np.where(sg, 2 + rng.uniform(size=len(meta)), 0.5 * rng.uniform(size=len(meta)))
    latents[:, ZERO_DIFF] = 1 + item
    return latents, meta


@pytest.fixture(scope="module")
def contrast():
    latents, meta = planted()
    return latents, meta, contrast_latents(latents, meta, stimulus_set())


def row(table: pd.DataFrame, factor: str, latent: int) -> pd.Series:
    return table[(table["factor"] == factor) & (table["latent"] == latent)].iloc[0]


def test_planted_agreement_latent_is_found_with_the_right_sign(contrast):
    latents, meta, table = contrast
    agreement = table[table["factor"] == "agreement"]
    assert agreement.iloc[0]["latent"] == AGREEMENT  # sorted by q, then |d_z|: the planted latent first
    found = row(table, "agreement", AGREEMENT)
    assert (found["level_a"], found["level_b"]) == ("match", "mismatch")
    assert found["q_value"] == agreement["q_value"].min() and found["q_value"] < 0.001
    assert found["difference"] > 1 and found["d_z"] > 0 and found["auroc"] == 1.0
    assert found["active_a"] == 0.0 and found["active_b"] == 1.0 and found["n_items"] == N_ITEMS
    # the other factor is averaged out: the per-item difference is the mean of the two mismatch rows
    mismatch = latents[meta["condition"].str.endswith("_mismatch").to_numpy(), AGREEMENT].reshape(N_ITEMS, 2)
    assert math.isclose(found["difference"], mismatch.mean(axis=1).mean(), rel_tol=1e-12)
    assert math.isclose(found["mean_b"], mismatch.mean(), rel_tol=1e-12) and found["mean_a"] == 0.0
    number = row(table, "number", NUMBER)  # larger at sg (level_a): negative difference, AUROC 0
    assert number["difference"] < -1 and number["d_z"] < 0 and number["auroc"] == 0.0 and number["q_value"] < 0.001


def test_a_latent_that_does_not_differ_gets_a_large_p(contrast):
    _, _, table = contrast
    null = row(table, "agreement", NULL)
    assert null["p_value"] > 0.9 and not null["significant"]
    assert abs(null["difference"]) < 1e-12 and null["auroc"] == pytest.approx(0.5, abs=0.1)
    zero = row(table, "agreement", ZERO_DIFF)  # every per-item difference is exactly 0: p = 1, not NaN
    assert zero["p_value"] == 1.0 and math.isnan(zero["d_z"]) and zero["auroc"] == 0.5
    assert SILENT not in set(table["latent"])  # never active: not tested


def test_q_values_are_benjamini_hochberg_per_set_and_factor(contrast):
    _, _, table = contrast
    for _, rows in table.groupby("factor"):
        p = rows["p_value"].to_numpy()
        m = len(p)
        hand = [min(1.0, min(p[j] * m / (np.sum(p <= p[j])) for j in range(m) if p[j] >= p[i])) for i in range(m)]
        np.testing.assert_allclose(rows["q_value"].to_numpy(), hand, rtol=1e-12)


def test_exact_wilcoxon_p_and_its_q_by_hand():
    """20 items whose differences are all positive (and untied): the exact two-sided p is 2 / 2**20; with four
    latents tested (NULL and ZERO_DIFF have p = 1, NUMBER's agreement p is larger), its q is p * 4 / 1."""
    latents, meta = planted()
    table = contrast_latents(latents, meta, stimulus_set(factors={"agreement": FACTORS["agreement"]}))
    found = row(table, "agreement", AGREEMENT)
    assert found["p_value"] == pytest.approx(2 / 2**20, rel=1e-9)
    assert len(table) == 4 and found["q_value"] == pytest.approx(4 * 2 / 2**20, rel=1e-9)


def test_t_test_and_min_active():
    latents, meta = planted()
    table = contrast_latents(latents, meta, stimulus_set(), ContrastConfig(test="t", min_active=41))
    assert set(table["latent"]) == {NULL, NUMBER, ZERO_DIFF}  # AGREEMENT is active on 40 rows only
    assert set(table["test"]) == {"t"}
    assert row(table, "agreement", ZERO_DIFF)["p_value"] == 1.0
    assert row(table, "number", NUMBER)["p_value"] < 1e-10


def test_effect_size_auroc_and_p_hand_cases():
    assert effect_size_dz(np.array([[1.0], [2.0], [3.0]]))[0] == pytest.approx(2.0)  # mean 2, sd 1
    assert math.isnan(effect_size_dz(np.array([[1.0], [1.0]]))[0])  # sd 0
    assert auroc(np.ones((6, 1)), np.array([1, 1, 1, 0, 0, 0]))[0] == 0.5  # all tied
    values, positive = np.array([1.0, 2.0, 2.0, 0.0]), np.array([1, 1, 0, 0], dtype=bool)
    assert auroc(values[:, None], positive)[0] == 0.625  # (0 + 1 + 0.5 + 1) / 4
    rng = np.random.default_rng(3)
    many, labels = rng.integers(0, 4, size=(50, 3)).astype(float), rng.integers(0, 2, 50).astype(bool)
    np.testing.assert_allclose(auroc(many, labels), [roc_auc_score(labels, many[:, j]) for j in range(3)])
    for test in ("wilcoxon", "t"):
        assert paired_p_values(np.zeros((5, 2)), test).tolist() == [1.0, 1.0]


def test_bad_input_is_one_line():
    latents, meta = planted()
    with pytest.raises(PsylingError, match="set plain: declares no factors"):
        contrast_latents(latents, meta.assign(set="plain"), stimulus_set("plain", factors={}))
    with pytest.raises(PsylingError, match="shape"):
        contrast_latents(latents[:5], meta, stimulus_set())
    with pytest.raises(PsylingError, match="unknown paired test"):
        ContrastConfig(test="z")
    with pytest.raises(PsylingError, match="no rows"):
        contrast_latents(latents, meta, stimulus_set("other"))
    with pytest.raises(PsylingError, match="set agr: labels_from_conditions: condition.s. odd not among"):
        contrast_latents(latents, meta.assign(condition="odd"), stimulus_set())
    empty = contrast_latents(np.zeros_like(latents), meta, stimulus_set())  # no latent is ever active
    assert empty.empty and list(empty.columns) == CONTRAST_COLUMNS


def test_stimulus_top_contexts(contrast):
    latents, meta, _ = contrast
    top = stimulus_top_contexts(latents, meta, [AGREEMENT, SILENT], n=3)
    assert list(top["latent"]) == [AGREEMENT] * 3 and list(top["rank"]) == [1, 2, 3]  # SILENT: never active
    expected = np.sort(latents[:, AGREEMENT])[::-1][:3]
    np.testing.assert_array_equal(top["activation"].to_numpy(), expected)
    assert set(top["condition"]) <= {"sg_mismatch", "pl_mismatch"} and set(top["position"]) == {2}


def token_data(n_rows: int = 300, d_in: int = 8, seed: int = 0):
    """Random token rows of 30 ten-token texts; every text's first token is the same, large row (ties)."""
    rng = np.random.default_rng(seed)
    index = pd.DataFrame({"set": "corpus", "item": [f"s{r // 10}" for r in range(n_rows)], "condition": "text",
                          "position": np.arange(n_rows) % 10, "text": [f"t{r}" for r in range(n_rows)]})
    x = rng.normal(size=(n_rows, d_in)).astype(np.float32)
    x[::10] = 4 * x[0]
    return x, index


def full_sort(z: np.ndarray, chosen: list[int], n: int) -> list[tuple[int, int, float]]:
    """(latent, row, activation) of the true top n positive activations per latent, by a full sort."""
    out = []
    for latent in chosen:
        rows = sorted(np.flatnonzero(z[:, latent] > 0), key=lambda r: (-z[r, latent], r))[:n]
        out += [(latent, int(r), float(z[r, latent])) for r in rows]
    return out


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_text_top_contexts_keep_the_true_top_n_in_any_batching(architecture):
    x, index = token_data()
    sae = SparseAutoencoder.from_init(SAEConfig(d_in=8, d_sae=32, architecture=architecture, k=4), seed=1,
                                      dtype=torch.float64)
    z = sae.encode(torch.as_tensor(x)).detach().numpy()
    chosen, n = [0, 5, 17, 31, int(np.argmax(z[0]))], 6
    expected = full_sort(z, chosen, n)
    assert [row for latent, row, _ in expected if latent == chosen[-1]] == [0, 10, 20, 30, 40, 50]  # tied
    row_of = {text: r for r, text in enumerate(index["text"])}
    for size in (1, 7, 64, 300):
        order = np.random.default_rng(size).permutation(len(x))  # batches in a shuffled order, too
        batches = ((order[s:s + size], x[order[s:s + size]]) for s in range(0, len(x), size))
        top = text_top_contexts(sae, batches, index, chosen, n)
        got = [(int(latent), row_of[text], float(a)) for latent, text, a in zip(top["latent"], top["text"],
                                                                                  top["activation"])]
        assert got == expected, size
        assert list(top.columns[:8]) == ["latent", "rank", "activation", "set", "item", "condition", "position",
                                         "text"]
    assert len(expected) == n * len(chosen)


def test_running_top_memory_is_bounded_and_batch_topk_is_encoded_per_token():
    top = RunningTop(m=3, n=4)
    rng = np.random.default_rng(0)
    for start in range(0, 1000, 100):
        top.update(np.arange(start, start + 100), rng.normal(size=(100, 3)))
        assert top.values.shape == (3, 4)
    x, index = token_data(40)
    sae = SparseAutoencoder.from_init(SAEConfig(d_in=8, d_sae=16, architecture="batchtopk", k=2), dtype=torch.float64)
    sae.train()
    top = text_top_contexts(sae, [(np.arange(40), x)], index, [3], n=40)
    assert sae.training  # the mode is restored
    sae.eval()
    z = sae.encode(torch.as_tensor(x)).detach().numpy()[:, 3]  # inference: JumpReLU at the threshold (0), per token
    assert len(top) == int((z > 0).sum())


def test_context_strings():
    sentence = "The cats near the door sleep."
    assert context_string(sentence, ["The", " cats", " near"], 1) == "The« cats» near the door sleep."
    assert context_string(sentence, ["The", "cats", "near"], 2) == "The cats «near» the door sleep."
    assert context_string(sentence, ["The", "cats", "near"], 2, window=4) == "…ats «near» the…"
    assert context_string(sentence, ["Le", "chat"], 1) == "Le «chat»"  # not found in the sentence: a join
    with pytest.raises(PsylingError, match="position 3"):
        context_string(sentence, ["The"], 3)


def test_mark_contexts_uses_the_index_token_texts():
    stim = stimulus_set()
    sentences = sentences_of([stim])
    assert sentences[("agr", "i0", "pl_match")] == "the dogs runs"
    index = pd.DataFrame({"set": "agr", "item": "i0", "condition": "pl_match", "position": [2, 0, 1],
                          "text": ["runs", "the", "dogs"]})  # out of order on purpose
    top = pd.DataFrame({"latent": [1], "rank": [1], "activation": [2.0], "set": ["agr"], "item": ["i0"],
                        "condition": ["pl_match"], "position": [1], "text": ["dogs"]})
    assert mark_contexts(top, index, sentences)["context"].tolist() == ["the «dogs» runs"]
    with pytest.raises(PsylingError, match="no sentence for set=agr item=i0"):
        mark_contexts(top, index, {})
    with pytest.raises(PsylingError, match="no token at position 5 for set=agr item=i0"):
        mark_contexts(top.assign(position=5), index, sentences)


def probe_data(n_items: int = 60, d: int = 300, seed: int = 0, informative: int = 7):
    """n_items x 2 conditions; latents: sparse exponential noise; latent ``informative`` is 3 + noise at B and
    0 at A."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"item": np.repeat(np.arange(n_items), 2), "condition": np.tile(["a", "b"], n_items)})
    meta["label"] = meta["condition"]
    latents = rng.exponential(size=(len(meta), d)) * (rng.uniform(size=(len(meta), d)) < 0.3)
    latents[:, informative] = np.where(meta["label"] == "b", 3 + rng.uniform(size=len(meta)), 0.0)
    return latents, meta


def test_sparse_probe_finds_the_informative_latent_in_every_fold():
    latents, meta = probe_data()
    noise = np.random.default_rng(1).normal(size=(len(meta), 15))
    dense = {"resid.2": np.column_stack([latents[:, 7], noise])}  # one informative dimension of 16
    table = sparse_probes(latents, meta, "label", ks=(1, 4), folds=5, dense=dense)
    k1 = table[(table["probe"] == "sparse") & (table["k"] == 1)].iloc[0]
    assert k1["accuracy"] == 1.0 and k1["chosen"] == [[7]] * 5 and k1["in_every_fold"] == [7]
    assert k1["ci_low"] <= 1.0 <= k1["ci_high"] and k1["n"] == 120
    k4 = table[(table["probe"] == "sparse") & (table["k"] == 4)].iloc[0]
    assert all(len(c) == 4 and 7 in c for c in k4["chosen"])
    assert table.loc[table["probe"] == "majority", "accuracy"].iloc[0] <= 0.5
    dense_row = table[table["probe"] == "dense"].iloc[0]
    assert dense_row["site"] == "resid.2" and dense_row["k"] == 16 and dense_row["accuracy"] > 0.9


def leaky_accuracy(latents: np.ndarray, meta: pd.DataFrame, k: int) -> float:
    """The same probe with the latents chosen on all rows (leakage), to show the chance band can catch it."""
    y = (meta["label"] == "b").to_numpy()
    spread = np.abs(latents[y].mean(0) - latents[~y].mean(0))
    picked = np.argsort(-spread, kind="stable")[:k]
    return float(sparse_probes(latents[:, picked], meta, "label", ks=(k,))["accuracy"].iloc[0])


def test_sparse_probe_on_a_random_label_is_at_chance():
    latents, meta = probe_data(n_items=60, d=2000)
    meta["label"] = np.random.default_rng(5).permutation(meta["label"].to_numpy())  # unrelated to the latents
    latents[:, 7] = np.random.default_rng(6).permutation(latents[:, 7])
    table = sparse_probes(latents, meta, "label", ks=(1, 4, 16), folds=5)
    accuracy = table[table["probe"] == "sparse"]["accuracy"].to_numpy()
    assert ((accuracy > 0.35) & (accuracy < 0.65)).all(), accuracy
    assert leaky_accuracy(latents, meta, 16) > 0.7  # what choosing latents outside the folds would give


def test_sparse_probe_bad_input():
    latents, meta = probe_data(n_items=10, d=5, informative=2)
    with pytest.raises(PsylingError, match="k must lie in 1..5"):
        sparse_probes(latents, meta, "label", ks=(8,))
    with pytest.raises(PsylingError, match="lacks column"):
        sparse_probes(latents, meta, "number")
    with pytest.raises(PsylingError, match="fewer than two classes"):
        sparse_probes(latents, meta.assign(label="a"), "label", ks=(1,))
