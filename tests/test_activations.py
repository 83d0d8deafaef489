"""Activations captured in the scoring pass, pooled and stored; the logit lens."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import psyling
from psyling.errors import ModelError, PsylingError
from psyling.interp.activations import load_activations, pool_tokens
from psyling.interp.lens import emergence
from psyling.models import CaptureSpec, CausalScorer, ScoreRequest, load_model
from psyling.models.architecture import architecture, get_path

REPO = Path(__file__).resolve().parents[1]
SETS = [REPO / "stimuli" / "sets" / "garden_path_npz.yaml", REPO / "stimuli" / "sets" / "n400_cloze.yaml"]
TEXTS = ["The old keys to the cabinet were lost.", "While the villagers hunted the fox escaped.", "Dogs bark."]


def _captured(lm, texts, spec, prefix="", batch_size=2, reuse_prefix=False):
    """Token activations from the scoring pass, per request, via the consumer (padded path by default: batch
    size 1 is then each sequence alone; prefix reuse is compared with it in test_engine)."""
    seen = {}
    scorer = CausalScorer(lm, batch_size=batch_size, progress=False, capture=spec, reuse_prefix=reuse_prefix)
    requests = [ScoreRequest((i,), t, prefix) for i, t in enumerate(texts)]
    scores = scorer.score(requests, consumer=lambda batch: seen.update(
        {s.request.key: s.activations for s in batch}))
    return scorer, scores, seen


def _hidden_states(lm, scorer, text, prefix=""):
    """A separate forward with output_hidden_states=True; rows of the text's tokens."""
    enc = scorer.encode(ScoreRequest((0,), text, prefix))  # context: the context token, then the prefix
    with torch.no_grad():
        out = lm.model(torch.tensor([enc.sequence]), output_hidden_states=True)
    first = len(enc.context)
    return [h[0, first:].numpy() for h in out.hidden_states]


@pytest.mark.parametrize("fixture", ["bpe_llama", "sp_gpt2"])
def test_captured_residual_stream_equals_output_hidden_states(fixture, request):
    lm = request.getfixturevalue(fixture)
    arch = architecture(lm.model)
    norm, n_layers = get_path(lm.model, arch.layout.norm), arch.n_layers
    scorer, scores, seen = _captured(lm, TEXTS, CaptureSpec(("resid", "attn", "mlp")), prefix="A prime.")
    assert scorer.sites == ["resid.0"] + [f"{kind}.{layer}" for layer in range(1, n_layers + 1)
                                          for kind in ("resid", "attn", "mlp")]
    for i, text in enumerate(TEXTS):
        hidden = _hidden_states(lm, scorer, text, "A prime.")
        acts = seen[(i,)]
        assert acts["resid.0"].shape == (len(scores[i].token_ids), lm.model.config.hidden_size)
        for layer in range(n_layers):  # HF's hidden_states[l] is the residual stream after l blocks ...
            np.testing.assert_allclose(acts[f"resid.{layer}"], hidden[layer], atol=1e-5, rtol=0)
        # ... except the last, which HF returns after the final norm; ours is the raw stream
        with torch.no_grad():
            normed = norm(torch.from_numpy(acts[f"resid.{n_layers}"])).numpy()
        np.testing.assert_allclose(normed, hidden[n_layers], atol=1e-5, rtol=0)
        if fixture == "bpe_llama":  # pre-norm blocks: resid.l = resid.(l-1) + attn.l + mlp.l
            np.testing.assert_allclose(acts["resid.1"], acts["resid.0"] + acts["attn.1"] + acts["mlp.1"],
                                       atol=1e-5, rtol=0)
    assert all(s.activations is None for s in scores)  # dropped once the consumer has them


def test_capture_leaves_surprisal_unchanged_and_pools_per_word_and_region(tmp_path, bpe_llama):
    plain = psyling.run(bpe_llama, SETS, progress=False, max_items=4)
    spec = CaptureSpec(("resid",), layers=(0, 1), dtype="float16")
    captured = psyling.run(bpe_llama, SETS, out=tmp_path / "w", progress=False, max_items=4, activations=spec)
    pd.testing.assert_frame_equal(plain.words, captured.words)
    assert captured.manifest["activations"]["sites"] == ["resid.0", "resid.1"]
    meta, features = load_activations(tmp_path / "w")
    assert set(features) == {"resid.0", "resid.1"} and features["resid.1"].dtype == np.float16
    # one row per word of every item x condition, in the same order for every site
    assert len(meta) == len(captured.words) == len(features["resid.0"])
    words = captured.words.set_index(["set", "item", "condition", "word_index"])["word"]
    assert (meta.set_index(["set", "item", "condition", "position"])["text"] == words.loc[
        list(meta.set_index(["set", "item", "condition", "position"]).index)].to_numpy()).all()
    # the stored row of a word is the mean of its tokens' states (recomputed from a plain forward)
    row = meta[(meta["set"] == "n400_cloze") & (meta["position"] == 1)].index[0]
    key = meta.loc[row]
    stim_text = " ".join(captured.words[(captured.words["set"] == key["set"]) & (captured.words["item"] == key["item"])
                                        & (captured.words["condition"] == key["condition"])]["word"])
    scorer = CausalScorer(bpe_llama, progress=False)
    hidden = _hidden_states(bpe_llama, scorer, stim_text)
    tokens = captured.tokens
    mine = tokens[(tokens["set"] == key["set"]) & (tokens["item"] == key["item"])
                  & (tokens["condition"] == key["condition"])]
    rows = np.flatnonzero(mine["word_index"].to_numpy() == 1)
    assert len(rows) >= 1
    np.testing.assert_allclose(features["resid.1"][row], hidden[1][rows].mean(0), atol=2e-3)  # float16
    regions = psyling.run(bpe_llama, SETS[:1], out=tmp_path / "r", progress=False, max_items=2,
                          activations=CaptureSpec(layers=(1,)), pool="region", pool_method="last")
    meta_r, feats_r = load_activations(tmp_path / "r")
    assert len(meta_r) == len(regions.regions) and set(meta_r["pool"]) == {"region"}


def test_pooling_methods_and_empty_units():
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    pooled = pool_tokens(values, [0, 0, 2, 2], 3, "mean")
    np.testing.assert_array_equal(pooled[0], [1.5, 2.5, 3.5])
    assert np.isnan(pooled[1]).all()
    np.testing.assert_array_equal(pool_tokens(values, [0, 0, 2, 2], 3, "first")[2], values[2])
    np.testing.assert_array_equal(pool_tokens(values, [0, 0, 2, 2], 3, "last")[0], values[1])


def test_bad_capture_requests_get_clear_errors(tmp_path, bpe_llama):
    with pytest.raises(ModelError, match="layer 9 does not exist"):
        CausalScorer(bpe_llama, capture=CaptureSpec(layers=(0, 9)))
    with pytest.raises(ModelError, match="unknown activation kind 'heads'"):
        CaptureSpec(("heads",))
    with pytest.raises(PsylingError, match="needs an output folder"):
        psyling.run(bpe_llama, SETS[:1], activations=CaptureSpec(), progress=False)
    psyling.run(bpe_llama, SETS[:1], out=tmp_path, progress=False, max_items=1, activations=CaptureSpec(layers=(1,)))
    with pytest.raises(PsylingError, match="'resid.2' was not captured"):
        load_activations(tmp_path, sites=["resid.2"])
    with pytest.raises(PsylingError, match="no activations here"):
        load_activations(tmp_path / "nowhere")


@pytest.mark.parametrize("fixture", ["bpe_llama", "sp_gpt2"])
def test_logit_lens_at_the_last_layer_is_the_model(fixture, request):
    lm = request.getfixturevalue(fixture)
    n_layers = architecture(lm.model).n_layers
    result = psyling.run(lm, SETS, progress=False, max_items=4, lens_layers=list(range(n_layers + 1)))
    lens = result.lens["lens_regions"]
    assert sorted(lens["layer"].unique()) == list(range(n_layers + 1))
    last = lens[lens["layer"] == n_layers].set_index(["set", "item", "condition", "region_number"])
    own = result.regions.set_index(["set", "item", "condition", "region_number"]).loc[last.index]
    assert np.max(np.abs(last["surprisal"] - own["surprisal"])) <= 1e-4
    assert np.max(np.abs(last["surprisal_raw"] - own["surprisal_raw"])) <= 1e-4
    early = lens[lens["layer"] == 0].set_index(["set", "item", "condition", "region_number"])
    assert np.max(np.abs(early["surprisal"] - own["surprisal"])) > 0.1  # the lens does read earlier layers
    final = result.lens["lens_predictions"].query(f"layer == {n_layers}")
    assert (final["passed"].to_numpy() == result.predictions["passed"].to_numpy()).all()


def test_emergence_is_the_first_layer_from_which_a_prediction_keeps_holding():
    rows = [("s", "1", 0, "f", layer, passed) for layer, passed in enumerate([False, True, False, True, True])]
    rows += [("s", "2", 0, "f", layer, passed) for layer, passed in enumerate([True, True, True, True, False])]
    rows += [("s", "3", 0, "f", layer, True) for layer in range(5)]
    table = emergence(pd.DataFrame(rows, columns=["set", "item", "prediction_index", "prediction", "layer",
                                                  "passed"])).set_index("item")
    assert table.loc["1", "emerges_at"] == 3 and table.loc["1", "final_passed"]
    assert np.isnan(table.loc["2", "emerges_at"]) and not table.loc["2", "final_passed"]
    assert table.loc["3", "emerges_at"] == 0


@pytest.mark.slow
def test_smollm2_capture_and_lens_match_the_model():
    lm = load_model("smollm2-135m")
    # the same sequence alone: identical to output_hidden_states; in a padded batch of 3 or in packed rows
    # (prefix reuse): float32 rounding only, relative to the size of the states (|resid.15| reaches ~150 here,
    # and one of its tokens differs by 1e-3 in a batch of 3)
    for batch_size, reuse, tolerance in ((1, False, 1e-6), (3, False, 2e-5), (3, True, 2e-5)):
        scorer, scores, seen = _captured(lm, TEXTS, CaptureSpec(layers=(0, 15, 30)), batch_size=batch_size,
                                         reuse_prefix=reuse)
        for i, text in enumerate(TEXTS):
            hidden = _hidden_states(lm, scorer, text)
            for layer in (0, 15):
                scale = np.abs(hidden[layer]).max()
                np.testing.assert_allclose(seen[(i,)][f"resid.{layer}"], hidden[layer], atol=tolerance * scale,
                                           rtol=0)
    result = psyling.run(lm, SETS, progress=False, max_items=2, lens_layers=[15, 30])
    lens = result.lens["lens_regions"].query("layer == 30").set_index(["set", "item", "condition", "region_number"])
    own = result.regions.set_index(["set", "item", "condition", "region_number"]).loc[lens.index]
    assert np.max(np.abs(lens["surprisal"] - own["surprisal"])) <= 1e-4


def test_writer_flushes_bounded_shards_and_loads_them_in_order(tmp_path):
    from psyling.interp.activations import ActivationWriter
    from psyling.measures.alignment import Alignment

    writer = ActivationWriter(tmp_path, ["resid.0", "resid.1"], shard_bytes=3 * 2 * 4 * 4)  # ~3 words per shard
    for k in range(4):
        tokens = np.full((2, 4), float(k), dtype=np.float32)
        alignment = Alignment(["a", "b"], [(0, 1), (2, 3)], [0, 1], [0, 0], [0, 0])
        writer.add(("s", str(k), "c"), {"resid.0": tokens, "resid.1": tokens + 10}, alignment, ["a b"])
    writer.close({})
    assert len(list((tmp_path / "resid.0").glob("shard-*.npy"))) == 2  # flushed after 4 rows (3 fit), twice
    meta, features = load_activations(tmp_path)
    assert list(meta["item"]) == ["0", "0", "1", "1", "2", "2", "3", "3"]
    np.testing.assert_array_equal(features["resid.1"][:, 0], [10, 10, 11, 11, 12, 12, 13, 13])
