"""Attribution patching against exact patching: on a GPT-2 with its nonlinearities removed (identity MLP
activation and norms, zero query/key weights so that attention is a uniform causal average, float64) the model is
affine in every activation and the logit difference is linear in the logits, so AtP must equal exact patching;
on an ordinary tiny model it only correlates."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from psyling.interp.attribution import AttributionConfig, atp_agreement, attribute_set
from psyling.interp.patching import PatchConfig, patch_set
from psyling.models.loading import LanguageModel
from psyling.stimuli.io import load_set
from test_circuits_cli import write_agreement_set
from tiny import byte_bpe_tokenizer, tiny_llama

SITES = ("resid", "attn", "mlp", "head")


def linear_gpt2(tokenizer) -> LanguageModel:
    """A 2-layer GPT-2 without nonlinearities: identity activation and norms, query/key weights zeroed."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     activation_function="linear", bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(cfg).double().eval()
    d = cfg.n_embd
    with torch.no_grad():
        for block in model.transformer.h:
            block.ln_1, block.ln_2 = torch.nn.Identity(), torch.nn.Identity()
            block.attn.c_attn.weight[:, :2 * d] = 0.0  # queries and keys: every score 0, uniform attention
            block.attn.c_attn.bias[:2 * d] = 0.0
        model.transformer.ln_f = torch.nn.Identity()
        model.transformer.wte.weight.mul_(8.0)  # tied with the output layer: larger, still linear, differences
    return LanguageModel(model, tokenizer, {"id": "linear-gpt2", "source": "test", "dtype": "float64",
                                            "device": "cpu", "class": "GPT2LMHeadModel",
                                            "vocab_size": cfg.vocab_size})


@pytest.fixture(scope="module")
def stim(tmp_path_factory):
    return load_set(write_agreement_set(tmp_path_factory.mktemp("set")))


def _exact_deltas(lm, stim) -> "pd.DataFrame":
    rows = patch_set(lm, stim, PatchConfig(sites=SITES, threshold=0.0), progress=False).rows
    target = np.where(rows["direction"] == "denoise", rows["logit_diff_corrupt"], rows["logit_diff_clean"])
    return rows.assign(delta=rows["logit_diff_patched"] - target)


def test_atp_equals_exact_patching_on_a_model_without_nonlinearities(stim):
    lm = linear_gpt2(byte_bpe_tokenizer())
    exact = _exact_deltas(lm, stim)
    atp = attribute_set(lm, stim, AttributionConfig(PatchConfig(sites=SITES, threshold=0.0), metric="logit_diff"),
                        progress=False).rows
    keys = ["item", "site", "region", "direction"]
    merged = exact.merge(atp[keys + ["delta_atp"]], on=keys)
    assert len(merged) == len(exact) == len(atp)  # every site, head, region and direction has both
    assert merged["delta"].abs().max() > 1e-2  # the patches do change the metric
    np.testing.assert_allclose(merged["delta_atp"], merged["delta"], rtol=0, atol=1e-6)


def test_atp_only_approximates_exact_patching_with_nonlinearities(stim):
    lm = tiny_llama(byte_bpe_tokenizer())
    config = PatchConfig(sites=SITES, threshold=0.0)
    exact = patch_set(lm, stim, config, progress=False).rows
    atp = attribute_set(lm, stim, AttributionConfig(config), progress=False).rows
    agreement = atp_agreement(atp, exact)
    assert set(agreement["kind"]) == set(SITES)
    assert agreement["r_items"].notna().all() and (agreement["r_items"] < 1 - 1e-6).any()
    merged = exact.merge(atp, on=["item", "site", "region", "direction"])
    assert np.abs(merged["effect"] - merged["effect_atp"]).max() > 1e-3  # a first-order estimate, not exact
