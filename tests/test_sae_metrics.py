"""SAE reconstruction metrics: exact on hand cases, the same however tokens are batched, and the legacy figures
of other tools as those tools define them."""
import math

import numpy as np
import pytest
import torch

from psyling.errors import PsylingError
from psyling.interp.sae import SAEConfig, SparseAutoencoder
from psyling.interp.sae_metrics import ReconstructionStats, evaluate_reconstruction, reconstruction_stats

BATCH_FREE = ("n_tokens", "l0", "l1", "fvu", "explained_variance", "mse", "saelens_mse", "dead_fraction",
              "dense_fraction", "relative_reconstruction_bias", "cosine_similarity", "l2_ratio",
              "legacy_saelens_explained_variance", "legacy_openai_nmse")


def stats_of(x, x_hat, z, batches=1, **kwargs):
    stats = ReconstructionStats(**kwargs)
    for rows in np.array_split(np.arange(len(x)), batches):
        stats.add(x[rows], x_hat[rows], z[rows])
    return stats


def random_case(n=1000, d=16, d_sae=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d) * 4  # a mean far from zero
    x_hat = 0.9 * x + rng.normal(scale=0.3, size=(n, d))
    z = np.where(rng.uniform(size=(n, d_sae)) < 0.1, rng.exponential(size=(n, d_sae)), 0.0)
    return x, x_hat, z


def test_perfect_reconstruction_has_no_unexplained_variance():
    x, _, z = random_case()
    result = stats_of(x, x, z, batches=7).result()
    assert result["fvu"] == 0.0 and result["explained_variance"] == 1.0 and result["mse"] == 0.0
    assert result["legacy_explained_variance"] == 1.0 and result["legacy_openai_nmse"] == 0.0


def test_the_mean_as_reconstruction_explains_nothing():
    x, _, z = random_case()
    mean = np.broadcast_to(x.mean(axis=0), x.shape)
    for batches in (1, 7):
        result = stats_of(x, mean, z, batches=batches).result()
        assert result["fvu"] == pytest.approx(1.0, rel=1e-12, abs=0)
        assert result["explained_variance"] == pytest.approx(0.0, abs=1e-12)


def test_hand_case():
    x = np.array([[2.0, 0.0], [0.0, 4.0]])
    x_hat = np.array([[2.0, 1.0], [0.0, 3.0]])
    z = np.array([[1.0, 0.0, 0.0], [0.5, -2.0, 0.0]])
    result = stats_of(x, x_hat, z).result()
    # mean (1, 2); sum ||x - mean||^2 = (1 + 4) + (1 + 4) = 10; sum ||x - x_hat||^2 = 1 + 1 = 2
    assert result["fvu"] == pytest.approx(0.2, rel=1e-15)
    assert result["explained_variance"] == pytest.approx(0.8, rel=1e-15)
    assert result["mse"] == 0.5  # 2 / (2 tokens x 2 dims)
    assert result["saelens_mse"] == 1.0  # 2 / 2 tokens, summed over dims
    # per token 1 - 1/5 and 1 - 1/5 (one batch: its mean is the mean)
    assert result["legacy_explained_variance"] == pytest.approx(0.8, rel=1e-15)
    # E||x||^2 = (4 + 16) / 2 = 10, (10 / 2)^2 = 25: "total variance" 10 - 25 = -15, so 1 - 1/(-15) = 16/15
    assert result["legacy_saelens_explained_variance"] == pytest.approx(16 / 15, rel=1e-15)
    # OpenAI: token 1 (1/2) / (4/2) = 1/4, token 2 (1/2) / (16/2) = 1/16; mean 5/32
    assert result["legacy_openai_nmse"] == pytest.approx(5 / 32, rel=1e-15)
    # cos: (2,0).(2,1) / (2 sqrt 5) = 2/sqrt(5), and 1; ||x_hat|| / ||x||: sqrt(5)/2 and 3/4
    assert result["cosine_similarity"] == pytest.approx((2 / math.sqrt(5) + 1) / 2, rel=1e-15)
    assert result["l2_ratio"] == pytest.approx((math.sqrt(5) / 2 + 0.75) / 2, rel=1e-15)
    # E||x_hat||^2 / E[x_hat . x] = (5 + 9) / (4 + 12)
    assert result["relative_reconstruction_bias"] == pytest.approx(14 / 16, rel=1e-15)
    assert result["l0"] == 1.5 and result["l1"] == 1.75  # nonzero latents 1 and 2; |z| sums 1 and 2.5
    assert result["n_tokens"] == 2 and result["d_in"] == 2 and result["d_sae"] == 3


def test_one_batch_and_seven_agree():
    x, x_hat, z = random_case()
    one, seven = stats_of(x, x_hat, z, 1).result(), stats_of(x, x_hat, z, 7).result()
    for name in BATCH_FREE:
        assert seven[name] == pytest.approx(one[name], rel=1e-12, abs=0), name
    assert 0.5 < one["explained_variance"] < 0.999  # a real, imperfect reconstruction
    residual, centred = ((x - x_hat) ** 2).sum(), ((x - x.mean(axis=0)) ** 2).sum()
    assert one["fvu"] == pytest.approx(residual / centred, rel=1e-12)


def test_merge_equals_adding_everything():
    x, x_hat, z = random_case(n=300)
    first, second = stats_of(x[:100], x_hat[:100], z[:100], 3), stats_of(x[100:], x_hat[100:], z[100:], 2)
    first.merge(second)
    whole = stats_of(x, x_hat, z, 5)
    for name in BATCH_FREE:
        assert first.result()[name] == pytest.approx(whole.result()[name], rel=1e-12, abs=0), name


def test_legacy_explained_variance_uses_each_batch_mean():
    x, x_hat, z = random_case(n=210)
    expected = []
    for rows in np.array_split(np.arange(len(x)), 7):
        centred = ((x[rows] - x[rows].mean(axis=0)) ** 2).sum(axis=1)
        expected.extend(1 - ((x[rows] - x_hat[rows]) ** 2).sum(axis=1) / centred)
    seven = stats_of(x, x_hat, z, 7).result()["legacy_explained_variance"]
    one = stats_of(x, x_hat, z, 1).result()["legacy_explained_variance"]
    assert seven == pytest.approx(np.mean(expected), rel=1e-12)
    assert abs(seven - one) > 1e-6  # batch-dependent by construction, as documented


def test_relative_reconstruction_bias_measures_shrinkage():
    x, _, z = random_case()
    assert stats_of(x, 0.5 * x, z, 3).result()["relative_reconstruction_bias"] == pytest.approx(0.5, rel=1e-12)
    assert stats_of(x, x, z).result()["relative_reconstruction_bias"] == pytest.approx(1.0, rel=1e-15)


def test_dead_and_dense_latents():
    z = np.zeros((10, 4))
    z[3, 1] = 2.0  # latent 1 on 1 token of 10: a frequency of 0.1 is not above 0.1
    z[[0, 5], 2] = 1.0  # latent 2 on 2 of 10
    z[:, 3] = 0.5  # latent 3 always; latent 0 never (dead)
    x = np.arange(20.0).reshape(10, 2)
    stats = stats_of(x, x, z, 3)
    np.testing.assert_array_equal(stats.firing_frequencies(), [0.0, 0.1, 0.2, 1.0])
    result = stats.result()
    assert result["dead_fraction"] == 0.25 and result["dense_fraction"] == 0.5 and result["dense_threshold"] == 0.1
    loose = stats_of(x, x, z, 2, dense_threshold=0.05).result()
    assert loose["dense_fraction"] == 0.75 and loose["dense_threshold"] == 0.05


def test_topk_gives_k_latents_on_every_token():
    sae = SparseAutoencoder.from_init(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=5), seed=1)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # every pre-activation positive, so exactly k survive the ReLU
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert ((sae.encode(x) != 0).sum(dim=1) == 5).all()
    result = evaluate_reconstruction(sae, x.split(64))
    assert result["l0"] == 5.0 and result["n_tokens"] == 300


def test_evaluation_runs_a_float64_copy_and_leaves_the_sae_alone():
    sae = SparseAutoencoder.from_init(SAEConfig(d_in=8, d_sae=32, architecture="batchtopk", k=4), seed=2)
    with torch.no_grad():
        sae.threshold.fill_(0.2)
    sae.train()
    before = {name: tensor.clone() for name, tensor in sae.state_dict().items()}
    x = np.random.default_rng(3).normal(size=(5, 40, 8)).astype(np.float32)  # [batch, tokens, d_in] arrays
    stats = reconstruction_stats(sae, list(x))
    assert sae.training and sae.W_enc.dtype == torch.float32
    assert all(torch.equal(before[name], tensor) for name, tensor in sae.state_dict().items())
    reference = sae.double().eval()
    x64 = torch.as_tensor(x.reshape(-1, 8), dtype=torch.float64)
    z = reference.encode(x64)  # inference: the JumpReLU threshold, not the batch selection
    expected = ReconstructionStats()
    expected.add(x64, reference.decode(z), z)
    for name in BATCH_FREE:
        assert stats.result()[name] == pytest.approx(expected.result()[name], rel=1e-12, abs=0), name


def test_bad_input_is_a_one_line_error():
    with pytest.raises(PsylingError, match="no tokens were evaluated"):
        ReconstructionStats().result()
    with pytest.raises(PsylingError, match="same tokens"):
        ReconstructionStats().add(np.ones((3, 2)), np.ones((3, 2)), np.ones((4, 5)))
    stats = ReconstructionStats()
    stats.add(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 5)))
    with pytest.raises(PsylingError, match="differ from earlier batches"):
        stats.add(np.ones((3, 4)), np.ones((3, 4)), np.ones((3, 5)))
    sae = SparseAutoencoder.from_init(SAEConfig(d_in=8, d_sae=16, k=2))
    with pytest.raises(PsylingError, match="d_in 8"):
        evaluate_reconstruction(sae, [np.ones((3, 7))])
