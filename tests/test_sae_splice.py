"""Splicing an SAE into the forward pass: identities (x_hat = x recovers exactly 1, zeros 0, an untouched edit
reproduces the run bitwise), CE/KL against a hand loop, effect preservation and feature ablation."""
import numpy as np
import pytest
import torch

from psyling.interp.sae import SAEConfig, SparseAutoencoder
from psyling.interp.sae_effects import SAEEffectConfig, ablate_latents, effect_expression, preserve_effects, zero_latents
from psyling.interp.sae_splice import evaluate_sae, splice
from psyling.models.forward import ForwardRunner
from psyling.models.options import ScoringOptions
from psyling.models.scorer import set_requests
from psyling.models.scoring import CausalScorer
from psyling.stimuli.io import load_set
from test_circuits_cli import write_agreement_set

NOUNS = [("bird", "birds"), ("key", "keys"), ("dog", "dogs"), ("table", "tables"), ("cat", "cats")]


@pytest.fixture(scope="module")
def agr(tmp_path_factory):
    return load_set(write_agreement_set(tmp_path_factory.mktemp("agr"), NOUNS))


class Identity(SparseAutoencoder):
    """x_hat = x exactly (the metrics' identity case)."""
    def forward(self, x):
        return x


class Zeros(SparseAutoencoder):
    def forward(self, x):
        return torch.zeros_like(x)


def _sae(lm, cls=SparseAutoencoder, site="resid.1", k=4, seed=0):
    config = SAEConfig(d_in=lm.model.config.hidden_size, d_sae=64, k=k, site=site)
    return cls.from_init(config, seed=seed)


@pytest.mark.parametrize("site", ["resid.1", "mlp.1"])
def test_identity_and_zero_splices(bpe_llama, agr, site):
    identity = evaluate_sae(bpe_llama, _sae(bpe_llama, Identity, site), [agr], progress=False)
    assert identity["ce_recovered"] == 1.0 and identity["kl_recovered"] == 1.0 and identity["kl_sae"] == 0.0
    zeros = evaluate_sae(bpe_llama, _sae(bpe_llama, Zeros, site), [agr], progress=False)
    assert zeros["ce_recovered"] == 0.0 and zeros["kl_recovered"] == 0.0
    assert zeros["ce_zero"] > zeros["ce_clean"]
    assert identity["n_tokens"] == identity["n_predicted"] == zeros["n_tokens"]


def _hand_ce_kl(lm, sae, stim):
    """CE of clean / spliced and KL, one sequence at a time with a plain hook loop (float64)."""
    scorer = CausalScorer(lm, ScoringOptions(), progress=False)
    runner = ForwardRunner(lm)
    ce_clean = ce_sae = kl = n = 0.0
    for request in set_requests(stim):
        enc = scorer.encode(request)
        seq = enc.sequence
        clean = torch.log_softmax(runner.run_sequences([seq]).logits.double(), -1)
        spliced = torch.log_softmax(runner.run_sequences([seq], interventions=[splice(sae)]).logits.double(), -1)
        c = len(enc.context)
        for t, token in enumerate(enc.ids):
            ce_clean -= float(clean[c - 1 + t, token])
            ce_sae -= float(spliced[c - 1 + t, token])
            p = clean[c - 1 + t].exp()
            kl += float((p * (clean[c - 1 + t] - spliced[c - 1 + t])).sum())
            n += 1
    return ce_clean / n, ce_sae / n, kl / n


@pytest.mark.parametrize("reuse", [True, False])
def test_ce_kl_match_a_hand_loop(bpe_llama, agr, reuse):
    sae = _sae(bpe_llama)
    got = evaluate_sae(bpe_llama, sae, [agr], ScoringOptions(reuse_prefix=reuse), progress=False)
    ce_clean, ce_sae, kl = _hand_ce_kl(bpe_llama, sae, agr)
    assert got["ce_clean"] == pytest.approx(ce_clean, abs=1e-5)
    assert got["ce_sae"] == pytest.approx(ce_sae, abs=1e-5)
    assert got["kl_sae"] == pytest.approx(kl, abs=1e-5)
    assert 0 < got["l0"] <= 4.0  # TopK: at most k active (the ReLU of the top k may zero some)
    assert 0 < got["fvu"] and got["explained_variance"] == pytest.approx(1 - got["fvu"])


def test_untouched_edit_is_bitwise(bpe_llama, agr):
    sae = _sae(bpe_llama)
    scorer = CausalScorer(bpe_llama, ScoringOptions(), progress=False)
    requests = set_requests(agr)
    plain = scorer.score(requests, progress=False)
    edited = scorer.with_interventions([splice(sae, lambda z: z)]).score(requests, progress=False)
    assert all(np.array_equal(a.logprob, b.logprob, equal_nan=True) for a, b in zip(plain, edited))
    changed = scorer.with_interventions([splice(sae, zero_latents(range(64)))]).score(requests, progress=False)
    assert any(not np.allclose(a.logprob, b.logprob, equal_nan=True) for a, b in zip(plain, changed))


def test_effect_expression(agr):
    node = effect_expression(agr)
    assert node.op == "-" and "sg_mismatch" in str(node.left) and "sg_match" in str(node.right)


def test_effect_preservation_identity_and_real(bpe_llama, agr):
    same = preserve_effects(bpe_llama, _sae(bpe_llama, Identity), [agr], SAEEffectConfig(n_boot=50))
    row = same.iloc[0]
    assert row["accuracy_change"] == 0 and row["mcnemar_p"] == 1.0
    assert row["effect_ratio"] == 1.0 and row["ratio_ci_low"] == 1.0 and row["ratio_ci_high"] == 1.0
    other = preserve_effects(bpe_llama, _sae(bpe_llama), [agr], SAEEffectConfig(n_boot=50)).iloc[0]
    assert other["effect_ratio"] != 1.0 and other["effect"] == pytest.approx(row["effect"])


def test_feature_ablation(bpe_llama, agr):
    sae = _sae(bpe_llama)
    table = ablate_latents(bpe_llama, sae, agr, [3, 5], candidates=range(64), config=SAEEffectConfig(n_random=2))
    ours = table[table["latents"] == "3,5"]
    assert len(ours) == len(table[table["latents"] == "random-0"]) >= 1
    assert (table["k"] == 2).all()
    assert np.allclose(ours["change"], ours["m_ablated"] - ours["m_clean"])
    none = ablate_latents(bpe_llama, sae, agr, [7], config=SAEEffectConfig(n_random=0))
    assert set(none["latents"]) == {"7"}
