"""Reconstruction metrics of a sparse autoencoder, streamed over batches of tokens in float64.

Every figure except ``legacy_explained_variance`` is a ratio of sums over tokens, and the mean and spread of x are
combined across batches exactly (Chan, Golub and LeVeque's pairwise update), so the result does not depend on how
the tokens were batched (1 batch vs 7 agree to rounding, ~1e-15 relative). With r = x - x_hat, mu the mean of x
over all evaluated tokens, n tokens and d = d_in:

- ``fvu`` = sum ||r||^2 / sum ||x - mu||^2 and ``explained_variance`` = 1 - fvu (SAELens's ``explained_variance``
  since PR #665 fixed issue #659, checked against SAELens 6.54.12); ``mse`` = sum ||r||^2 / (n d), per token and
  dimension; ``saelens_mse`` = sum ||r||^2 / n, summed over dimensions (SAELens's ``mse`` since PR #711; before
  it SAELens and SAEBench core divided this again by the eval batch's token count, a figure that measures the
  batch size and is not reproduced);
- ``l0``: mean number of nonzero latents per token; ``l1``: mean sum of |z|;
- ``dead_fraction``: latents never nonzero on the evaluated tokens; ``dense_fraction``: latents nonzero on more
  than ``dense_threshold`` (recorded in the output) of them; ``firing_frequencies()`` per latent;
- ``relative_reconstruction_bias`` gamma = argmin_g E||x_hat / g - x||^2 = E[||x_hat||^2] / E[x_hat . x]
  (Rajamanoharan et al. 2024, Gated SAEs, eqs. 9-10; 1: unbiased, < 1: shrinkage), pooled over all tokens
  (SAELens/SAEBench take the ratio per eval batch and average the batches);
- ``cosine_similarity``: mean over tokens of cos(x, x_hat) (SAEBench core ``cossim``); ``l2_ratio``: mean of
  ||x_hat|| / ||x||, a norm under 1e-4 counted as 1 (SAEBench core ``l2_ratio``).

Legacy figures, as other tools computed them (compare published numbers with these, not with ``fvu``):

- ``legacy_explained_variance``: mean over tokens of 1 - ||r_i||^2 / ||x_i - mu_B||^2, mu_B the mean of the
  token's own batch: ``explained_variance_legacy`` of SAELens 6.x (6.54.12 too) and SAEBench core, their
  ``explained_variance`` before SAELens PR #443 / SAEBench PR #61, and the figure in the SAEBench paper (SAEBench
  issue #76). It depends on how tokens are grouped, through mu_B: here mu_B is the mean of each batch given to
  ``add`` (the tools use their eval batch, e.g. 16 prompts x 128 tokens); tokens are weighted equally, as the
  tools' concatenation does.
  A batch of one token has x_i = mu_B and gives nan, as in the tools.
- ``legacy_saelens_explained_variance``: 1 - E||r||^2 / (E||x||^2 - (E||x||^2 / d)^2), the ``explained_variance``
  of SAELens 6.0 from PR #443 until PR #665 (issue #659) and of SAEBench core as of May 2026, whose
  per-dimension term squared x once too often and then averaged over dimensions, so that it measures variance
  about zero (roughly). The tools average batch means; here E is over tokens (the same for equal batches).
- ``legacy_openai_nmse``: mean over tokens of mean_d r^2 / mean_d x^2 (OpenAI sparse_autoencoder,
  ``loss.normalized_mean_squared_error``, commit 4965b94), variance about zero per token.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch

from ..errors import PsylingError
from .sae import SparseAutoencoder

Array = Union[torch.Tensor, np.ndarray]
DENSE_THRESHOLD = 0.1
_SMALL_NORM = 1e-4  # SAEBench's guard for l2_ratio
# plain sums over tokens (float64): name -> per-token value computed by _token_sums
_SUMS = ("sq_error", "sq_x", "sq_x_hat", "dot", "l0", "l1", "cosine", "l2_ratio", "openai_nmse", "legacy_ev")


def _float64(values: Array, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values).detach().to("cpu", torch.float64)
    if tensor.ndim != 2:
        raise PsylingError(f"SAE metrics: {name} must be [tokens, width] (got shape {tuple(tensor.shape)})")
    return tensor


def _token_sums(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """Sums over this batch's tokens of the per-token quantities in ``_SUMS``."""
    error = (x - x_hat).pow(2).sum(dim=1)
    sq_x, sq_x_hat = x.pow(2).sum(dim=1), x_hat.pow(2).sum(dim=1)
    norm_x, norm_x_hat = sq_x.sqrt(), sq_x_hat.sqrt()
    centred = (x - x.mean(dim=0)).pow(2).sum(dim=1)
    per_token = {"sq_error": error, "sq_x": sq_x, "sq_x_hat": sq_x_hat, "dot": (x * x_hat).sum(dim=1),
                 "l0": (z != 0).sum(dim=1).double(), "l1": z.abs().sum(dim=1),
                 "cosine": (x / norm_x[:, None] * (x_hat / norm_x_hat[:, None])).sum(dim=1),
                 "l2_ratio": norm_x_hat / torch.where(norm_x < _SMALL_NORM, torch.ones_like(norm_x), norm_x),
                 "openai_nmse": error / sq_x, "legacy_ev": 1 - error / centred}
    return {name: float(per_token[name].sum()) for name in _SUMS}


@dataclass
class ReconstructionStats:
    """Streaming sums for the metrics of the module docstring: ``add`` batches, then ``result()``."""
    dense_threshold: float = DENSE_THRESHOLD
    n_tokens: int = 0
    mean_x: Optional[np.ndarray] = None  # [d_in], the running mean of x
    centred_sq_x: float = 0.0  # sum ||x - mean_x||^2 over the tokens so far
    fire_counts: Optional[np.ndarray] = None  # [d_sae] tokens on which each latent is nonzero
    sums: Optional[dict[str, float]] = None

    def add(self, x: Array, x_hat: Array, z: Array) -> None:
        """Add a batch: activations x and reconstructions x_hat [n, d_in], latents z [n, d_sae]."""
        x, x_hat, z = _float64(x, "x"), _float64(x_hat, "x_hat"), _float64(z, "z")
        if x.shape != x_hat.shape or z.shape[0] != x.shape[0]:
            raise PsylingError(f"SAE metrics: x {tuple(x.shape)}, x_hat {tuple(x_hat.shape)} and z "
                               f"{tuple(z.shape)} must have the same tokens (and x, x_hat the same width)")
        if x.shape[0] == 0:
            return
        batch = ReconstructionStats(self.dense_threshold, x.shape[0], x.mean(dim=0).numpy(),
                                    float((x - x.mean(dim=0)).pow(2).sum()), (z != 0).sum(dim=0).numpy(),
                                    _token_sums(x, x_hat, z))
        self.merge(batch)

    def merge(self, other: "ReconstructionStats") -> None:
        """Fold another set of sums into this one (exact pairwise update of the mean and spread of x)."""
        if other.n_tokens == 0:
            return
        if self.n_tokens == 0:
            self.n_tokens, self.mean_x, self.centred_sq_x = other.n_tokens, other.mean_x, other.centred_sq_x
            self.fire_counts, self.sums = other.fire_counts.copy(), dict(other.sums)
            return
        if other.mean_x.shape != self.mean_x.shape or other.fire_counts.shape != self.fire_counts.shape:
            raise PsylingError(f"SAE metrics: batch widths (d_in {other.mean_x.size}, d_sae "
                               f"{other.fire_counts.size}) differ from earlier batches (d_in {self.mean_x.size}, "
                               f"d_sae {self.fire_counts.size})")
        n_a, n_b = self.n_tokens, other.n_tokens
        n = n_a + n_b
        delta = other.mean_x - self.mean_x
        self.mean_x = self.mean_x + delta * (n_b / n)
        self.centred_sq_x += other.centred_sq_x + float(delta @ delta) * n_a * n_b / n
        self.n_tokens = n
        self.fire_counts = self.fire_counts + other.fire_counts
        self.sums = {name: self.sums[name] + other.sums[name] for name in _SUMS}

    def firing_frequencies(self) -> np.ndarray:
        """Per latent, the fraction of evaluated tokens on which it is nonzero ([d_sae])."""
        self._check_some()
        return self.fire_counts / self.n_tokens

    def _check_some(self) -> None:
        if self.n_tokens == 0:
            raise PsylingError("SAE metrics: no tokens were evaluated")

    def result(self) -> dict[str, Any]:
        """The metrics (floats, and counts as ints) of the module docstring."""
        frequencies = self.firing_frequencies()
        n, d_in, s = self.n_tokens, self.mean_x.size, self.sums
        fvu = s["sq_error"] / self.centred_sq_x if self.centred_sq_x > 0 else float("nan")
        mean_sq_x = s["sq_x"] / n  # the #659 formula's "total variance": E||x||^2 - (E||x||^2 / d)^2
        zero_centred_variance = mean_sq_x - (mean_sq_x / d_in) ** 2
        return {"n_tokens": n, "d_in": d_in, "d_sae": int(frequencies.size),
                "l0": s["l0"] / n, "l1": s["l1"] / n, "fvu": fvu, "explained_variance": 1 - fvu,
                "mse": s["sq_error"] / (n * d_in), "saelens_mse": s["sq_error"] / n,
                "dead_fraction": float(np.mean(self.fire_counts == 0)),
                "dense_fraction": float(np.mean(frequencies > self.dense_threshold)),
                "dense_threshold": self.dense_threshold,
                "relative_reconstruction_bias": s["sq_x_hat"] / s["dot"],
                "cosine_similarity": s["cosine"] / n, "l2_ratio": s["l2_ratio"] / n,
                "legacy_explained_variance": s["legacy_ev"] / n,
                "legacy_saelens_explained_variance": 1 - (s["sq_error"] / n) / zero_centred_variance,
                "legacy_openai_nmse": s["openai_nmse"] / n}


def reconstruction_stats(sae: SparseAutoencoder, batches: Iterable[Array],
                         dense_threshold: float = DENSE_THRESHOLD) -> ReconstructionStats:
    """Run the SAE (a float64 copy, in inference mode; ``sae`` itself is left as it is) over batches of
    activations ([..., d_in] each) and return the filled ``ReconstructionStats``."""
    evaluator = copy.deepcopy(sae).to(torch.float64).eval()
    stats = ReconstructionStats(dense_threshold)
    with torch.no_grad():
        for batch in batches:
            x = torch.as_tensor(batch).to(torch.float64)
            if x.ndim < 1 or x.shape[-1] != sae.config.d_in:
                raise PsylingError(f"SAE metrics: activations of shape {tuple(x.shape)} do not match the SAE's "
                                   f"d_in {sae.config.d_in} (site {sae.config.site})")
            x = x.reshape(-1, x.shape[-1])
            z = evaluator.encode(x)
            stats.add(x, evaluator.decode(z), z)
    return stats


def evaluate_reconstruction(sae: SparseAutoencoder, batches: Iterable[Array],
                            dense_threshold: float = DENSE_THRESHOLD) -> dict[str, Any]:
    """The metrics of the module docstring for an SAE over batches of activations (``reconstruction_stats``)."""
    return reconstruction_stats(sae, batches, dense_threshold).result()
