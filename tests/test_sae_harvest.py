"""Token harvesting for SAEs: the stored rows are the model's activations at each text token (context excluded),
the same with prefix reuse and with the forward pass stopped early; repeats dropped; the cap; shuffled reading."""
import numpy as np
import pytest
import torch

from psyling.errors import ModelError, PsylingError
from psyling.interp.activations import ActivationReader
from psyling.interp.sae_harvest import HarvestConfig, ReaderSource, harvest
from psyling.models.forward import ForwardRunner
from psyling.models.options import ScoringOptions
from psyling.models.scoring import CausalScorer
from psyling.models.scorer import set_requests
from psyling.stimuli.io import load_set
from test_circuits_cli import write_agreement_set


@pytest.fixture(scope="module")
def agr(tmp_path_factory):
    nouns = [("bird", "birds"), ("key", "keys"), ("dog", "dogs"), ("table", "tables")]
    return load_set(write_agreement_set(tmp_path_factory.mktemp("agr"), nouns))


def _reference_rows(lm, stim, site):
    """Each request's text-token activations from a full, unstopped pass of that sequence alone."""
    scorer = CausalScorer(lm, ScoringOptions(), progress=False)
    runner, out = ForwardRunner(lm), {}
    for request in set_requests(stim):
        enc = scorer.encode(request)
        forward = runner.run_sequences([enc.sequence], record=[site])
        out[request.key] = forward.at(site, 0)[len(enc.context):].numpy()
    return out


@pytest.mark.parametrize("reuse", [True, False])
def test_harvest_stores_each_text_token(tmp_path, bpe_llama, agr, reuse):
    stats = harvest(bpe_llama, [agr], tmp_path / "h", HarvestConfig(sites=("resid.1", "mlp.1")),
                    ScoringOptions(reuse_prefix=reuse), progress=False)
    reader = ActivationReader(tmp_path / "h")
    reference = _reference_rows(bpe_llama, agr, "resid.1")
    assert stats.n_tokens == len(reader) == sum(len(v) for v in reference.values())
    assert stats.n_repeats == 0 and stats.n_sequences == len(reference)
    assert set(reader.meta["pool"]) == {"token"}
    rows = reader.rows("resid.1")
    for (set_, item, cond), group in reader.meta.groupby(["set", "item", "condition"]):
        assert group["position"].tolist() == list(range(len(group)))
        np.testing.assert_allclose(rows[group.index.to_numpy()], reference[(set_, item, cond)], atol=1e-5)


def test_stop_layer_is_bitwise_and_checked(bpe_llama):
    runner = ForwardRunner(bpe_llama)
    seqs = [[1, 5, 9, 11], [1, 7, 3]]
    full = runner.run_sequences(seqs, record=["resid.1"])
    stopped = runner.run_sequences(seqs, record=["resid.1"], stop=1)
    assert stopped.logits is None
    assert torch.equal(full.recorded["resid.1"], stopped.recorded["resid.1"])
    with pytest.raises(ModelError, match="above the stop layer"):
        runner.run_sequences(seqs, record=["resid.2"], stop=1)
    after = runner.run_sequences(seqs, record=["resid.2"])  # the block list is restored
    assert after.logits is not None and "resid.2" in after.recorded


def test_repeats_dropped_and_cap(tmp_path, bpe_llama, agr):
    stats = harvest(bpe_llama, [agr, agr], tmp_path / "a", HarvestConfig(dtype="float16"), progress=False)
    assert stats.n_repeats == len(set_requests(agr)) and stats.n_sequences == len(set_requests(agr))
    assert ActivationReader(tmp_path / "a").rows("resid.1").dtype == np.float16
    capped = harvest(bpe_llama, [agr], tmp_path / "b", HarvestConfig(max_tokens=10), progress=False)
    first = CausalScorer(bpe_llama, ScoringOptions(), progress=False).encode(set_requests(agr)[0])
    assert 10 <= capped.n_tokens < 10 + 2 * len(first.ids)


def test_reader_source_shuffles_every_row_once(tmp_path, bpe_llama, agr):
    harvest(bpe_llama, [agr], tmp_path / "h", HarvestConfig(), progress=False)
    source = ReaderSource(tmp_path / "h")
    every = ActivationReader(tmp_path / "h").rows("resid.1")
    batches = list(source.batches(7, seed=3))
    shuffled = np.concatenate(batches)
    assert source.n_rows == len(every) and source.d_in == every.shape[1]
    assert not np.array_equal(shuffled, every)
    np.testing.assert_array_equal(np.sort(shuffled, axis=0), np.sort(every, axis=0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, source.batches(7, seed=3)))


def test_bad_config():
    with pytest.raises(PsylingError, match="not a site name"):
        HarvestConfig(sites=("resid",))
    with pytest.raises(PsylingError, match="unknown dtype"):
        HarvestConfig(dtype="int8")
