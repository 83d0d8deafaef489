"""Causal mediation (Finlayson et al. 2021) on a tiny random model: TE from the scored verb probabilities, the
identities NIE(resid.L at every position) = TE and NIE(a head with no output weights) = 0, the multiplicative
relation of the effects, the top-k table, the CIs and the exclusions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from psyling.interp.mediation import MediationConfig, item_effects, mediate, mediation_effects
from psyling.interp.pairs import DesignError
from psyling.interp.patching import ROW_COLUMNS
from psyling.measures.surprisal import surprisal_tables
from psyling.models.scoring import CausalScorer
from psyling.models.scorer import ScoreRequest
from psyling.stimuli.schema import Condition, Item, Prediction, StimulusSet
from tiny import _lm, byte_bpe_tokenizer, tiny_llama

# nouns whose singular and plural take the same number of tokens, so that every region aligns token by token
NOUNS = [("bird", "birds"), ("foot", "feet"), ("tooth", "teeth")]
DETERMINERS = ("The", "My", "Her", "Our")
CONDITIONS = ("sg_match", "sg_mismatch", "pl_match", "pl_mismatch")


def agreement_set(verbs: tuple[str, str] = ("is", "are"), name: str = "toy_agreement") -> StimulusSet:
    """A 2x2 agreement set (number x agreement), 12 items: subject, verb (critical), continuation."""
    items = []
    for det in DETERMINERS:
        for sg, pl in NOUNS:
            conditions = {}
            for c in CONDITIONS:
                verb = verbs[0] if c in ("sg_match", "pl_mismatch") else verbs[1]
                conditions[c] = Condition(c, (f"{det} {sg if c.startswith('sg') else pl}", verb, "on the table."))
            items.append(Item(f"{det}-{sg}", conditions))
    prediction = "[(verb;%sg_mismatch%) > (verb;%sg_match%)] & [(verb;%pl_mismatch%) > (verb;%pl_match%)]"
    return StimulusSet(name, ("subject", "verb", "continuation"), CONDITIONS, items, [Prediction.parse(prediction)],
                       f"{name}.yaml", factors={"number": ("sg", "sg", "pl", "pl"),
                                                "agreement": ("match", "mismatch", "match", "mismatch")})


@pytest.fixture(scope="module")
def stim():
    return agreement_set()


def _scored_m(lm, stim) -> pd.DataFrame:
    """Per item, from ordinary scoring of the full sentences: M_clean = S(are | sg) - S(is | sg) and
    M_corrupt = S(are | pl) - S(is | pl) at the verb (the clean context is singular, the good verb "is")."""
    scorer = CausalScorer(lm, progress=False)
    requests = [ScoreRequest((stim.name, item.id, c), item.conditions[c].text) for item in stim.items
                for c in stim.conditions]
    scores = {s.request.key: s for s in scorer.score(requests, progress=False)}
    _, _, regions = surprisal_tables(stim, scores, scorer.markers, lm.tokenizer, scorer.word_correction)
    verb = regions[regions["region"] == "verb"].pivot(index="item", columns="condition", values="surprisal")
    return pd.DataFrame({"m_clean": verb["sg_mismatch"] - verb["sg_match"],
                         "m_corrupt": verb["pl_match"] - verb["pl_mismatch"]})


def test_total_effect_is_the_ratio_of_the_scored_verb_probabilities(bpe_llama, stim):
    result = mediate(bpe_llama, stim, MediationConfig(kinds=("attn",), layers=(2,), threshold=0.0), progress=False)
    assert result.region == "subject"  # the first region in which the two contexts differ
    scored = _scored_m(bpe_llama, stim)
    items = item_effects(result.rows).set_index("item").loc[scored.index]
    np.testing.assert_allclose(items["m_clean"], scored["m_clean"], atol=1e-4)
    np.testing.assert_allclose(items["m_corrupt"], scored["m_corrupt"], atol=1e-4)
    # y = P(wrong verb) / P(right verb) = 2 ** -M; TE = y(u') / y(u) - 1
    y_clean, y_corrupt = np.exp2(-scored["m_clean"]), np.exp2(-scored["m_corrupt"])
    expected = (y_corrupt / y_clean - 1).to_numpy()
    np.testing.assert_allclose(items["te"], expected, rtol=1e-3, atol=1e-6)
    (row,) = result.effects.to_dict("records")
    assert row["site"] == "attn.2" and row["component"] == "layer" and row["n_items"] == 12
    assert row["te"] == pytest.approx(expected.mean(), rel=1e-3)


def test_noising_the_whole_residual_stream_gives_the_total_effect(bpe_llama, stim):
    """Patching resid.L with the corrupted run's values at every position turns the clean run into the
    corrupted one: NIE = TE exactly; denoising everything gives the clean run: NDE = 0 exactly."""
    config = MediationConfig(kinds=("resid",), region="all", threshold=0.0)
    result = mediate(bpe_llama, stim, config, progress=False)
    items = item_effects(result.rows)
    assert sorted(items["site"].unique()) == ["resid.0", "resid.1", "resid.2"] and len(items) == 36
    assert (items["nie"] == items["te"]).all() and (items["nde"] == 0).all()
    assert (result.effects["nie"] == result.effects["te"]).all() and (result.effects["nde"] == 0).all()
    assert (result.effects["te"] != 0).all()


def test_a_head_without_output_weights_mediates_nothing(stim):
    lm = tiny_llama(byte_bpe_tokenizer())
    head_dim = lm.model.config.hidden_size // lm.model.config.num_attention_heads
    with torch.no_grad():
        lm.model.model.layers[1].self_attn.o_proj.weight[:, 1 * head_dim:2 * head_dim] = 0.0  # head.2.1
    config = MediationConfig(kinds=("head",), layers=(2,), threshold=0.0)
    effects = mediate(lm, stim, config, progress=False).effects.set_index("site")
    assert effects.loc["head.2.1", "nie"] == 0.0
    assert effects.loc["head.2.1", "nde"] == effects.loc["head.2.1", "te"]
    assert effects.loc["head.2.1", "nie_ci_low"] == effects.loc["head.2.1", "nie_ci_high"] == 0.0
    assert (effects.drop(index="head.2.1")["nie"].abs() > 1e-4).all()


def _synthetic_rows(m_clean, m_corrupt, m_noise, m_denoise, threshold: float = 0.0) -> pd.DataFrame:
    rows = []
    for k, values in enumerate(zip(m_clean, m_corrupt, m_noise, m_denoise)):
        clean, corrupt, noise, denoise = values
        for direction, patched in (("noise", noise), ("denoise", denoise)):
            excluded = abs(clean - corrupt) < threshold
            rows.append({"set": "s", "clean": "a", "corrupt": "b", "item": f"i{k}", "site": "mlp.1", "kind": "mlp",
                         "layer": 1, "head": -1, "region": "subject", "direction": direction, "m_clean": clean,
                         "m_corrupt": corrupt, "m_patched": patched, "effect": np.nan if excluded else 0.5,
                         "note": "excluded: below" if excluded else ""})
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def test_effects_multiply_where_the_metric_is_additive():
    """M = f(direct) + g(z): noising z moves M by -a, denoising moves M_corrupt by +(gap - a), so
    1 + TE = (1 + NIE)(1 + NDE) per item, and TE != NIE + NDE. (A transformer is not additive in this way
    -- the final norm and the softmax -- so the relation is checked on the algebra.)"""
    clean, corrupt, a = np.array([3.0, 2.0, 5.0]), np.array([-1.0, 0.5, 1.0]), np.array([1.0, 0.25, 3.0])
    items = item_effects(_synthetic_rows(clean, corrupt, clean - a, corrupt + a))
    np.testing.assert_allclose(items["te"], np.exp2(clean - corrupt) - 1)
    np.testing.assert_allclose(items["nie"], np.exp2(a) - 1)
    np.testing.assert_allclose(1 + items["te"], (1 + items["nie"]) * (1 + items["nde"]))
    assert not np.allclose(items["te"], items["nie"] + items["nde"])
    (row,) = mediation_effects(_synthetic_rows(clean, corrupt, clean - a, corrupt + a), n_boot=0).to_dict("records")
    assert row["nie"] == pytest.approx(np.mean(np.exp2(a) - 1)) and np.isnan(row["nie_ci_low"])


def test_excluded_items_are_counted_and_left_out():
    clean, corrupt = np.array([3.0, 2.0, 5.0, 1.0]), np.array([-1.0, 1.95, 1.0, 0.0])
    (row,) = mediation_effects(_synthetic_rows(clean, corrupt, clean - 1, corrupt + 1, threshold=0.1),
                               n_boot=100).to_dict("records")
    assert (row["n_items"], row["n_excluded"], row["n_not_patched"]) == (3, 1, 0)
    used = np.array([0, 2, 3])
    assert row["te"] == pytest.approx(np.mean(np.exp2(clean[used] - corrupt[used]) - 1))


def narrow_llama() -> object:
    """A tiny llama with 16 MLP units per layer: the fallback screen patches every unit of a layer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_bpe_tokenizer()
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=16, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _lm(LlamaForCausalLM(cfg), tokenizer, "narrow-llama")


def test_top_heads_and_units_by_nie_with_cis_around_the_means(stim):
    config = MediationConfig(screen="layers", top_k=3, threshold=0.0, n_boot=200, items_per_batch=12)
    result = mediate(narrow_llama(), stim, config, progress=False)
    effects = result.effects
    counts = effects["component"].value_counts().to_dict()
    assert counts == {"layer": 4, "head": 8, "neuron": 16}  # the fallback screen: every unit of one layer
    best_layer = effects[effects["kind"] == "mlp"].sort_values("nie")["layer"].iloc[-1]
    assert set(result.screen["layer"]) == {best_layer}
    for component in ("head", "neuron"):
        top = result.top[result.top["component"] == component]
        assert list(top["rank"]) == [1, 2, 3]
        expected = effects[effects["component"] == component]["nie"].nlargest(3).to_numpy()
        np.testing.assert_array_equal(top["nie"].to_numpy(), expected)
    for effect in ("nie", "nde"):
        assert (effects[f"{effect}_ci_low"] <= effects[effect]).all()
        assert (effects[effect] <= effects[f"{effect}_ci_high"]).all()
    assert (effects["n_items"] == 12).all() and (effects["n_excluded"] == 0).all()


def test_attribution_screen_patches_its_top_units_exactly(bpe_llama, stim):
    config = MediationConfig(kinds=("neuron",), screen="atp", top_k=4, threshold=0.0, n_boot=0)
    result = mediate(bpe_llama, stim, config, progress=False)
    assert len(result.screen) == 4 and (result.screen["score"].diff().dropna() <= 0).all()
    assert sorted(result.effects["site"]) == sorted(result.screen["site"])
    assert list(result.top["rank"]) == [1, 2, 3, 4]
    assert result.effects["nie"].notna().all() and (result.effects["nie"] != 0).all()


def test_bad_settings_are_one_line_errors():
    with pytest.raises(DesignError, match="screen 'exact'"):
        MediationConfig(screen="exact")
    with pytest.raises(DesignError, match="mediation kind 'heads'"):
        MediationConfig(kinds=("heads",))
    with pytest.raises(DesignError, match="top_k"):
        MediationConfig(top_k=0)
