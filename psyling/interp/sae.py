"""Sparse autoencoders on a model's activations at one site: x -> z = act((x - b_dec) W_enc + b_enc) ->
x_hat = z W_dec + b_dec, with W_enc [d_in, d_sae] and W_dec [d_sae, d_in] as SAELens stores them.

Activations (``SAEConfig.architecture``):
- ``topk`` (Gao et al. 2024): the k largest pre-activations of each token, through a ReLU; the rest 0;
- ``batchtopk`` (Bussmann et al. 2024): while training, the k x n largest pre-activations of a batch of n tokens;
  at inference a JumpReLU with the threshold estimated in training (``threshold``), so tokens are independent;
- ``relu``: ReLU (trained with an L1 penalty);
- ``jumprelu``: z = relu(pre) * (pre > threshold), as SAELens (loaded from SAELens files; not trained here).

Splicing into the model (``psyling.models.hooks.Intervention`` "map" functions): ``reconstruction`` replaces x by
x_hat; ``edit`` keeps the reconstruction error and changes only latents, x -> x + (z' - z) W_dec, which is x
exactly (bitwise) when the edit leaves z as it is."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch

from ..errors import PsylingError
from ..models.hooks import parse_site

ARCHITECTURES = ("topk", "batchtopk", "relu", "jumprelu")
SPARSE_K = ("topk", "batchtopk")


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE is: input and dictionary widths, activation (``ARCHITECTURES``), k for the TopK kinds, the
    psyling site and model it reads, whether b_dec is subtracted before encoding, and provenance (free-form,
    e.g. the training tokens and config) kept in the saved files."""
    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: Optional[int] = 32
    site: str = "resid.1"
    model: str = ""
    apply_b_dec_to_input: bool = True
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise PsylingError(f"unknown SAE architecture {self.architecture!r} (choose from "
                               f"{', '.join(ARCHITECTURES)})")
        if self.d_in < 1 or self.d_sae < 1:
            raise PsylingError(f"SAE widths must be positive (d_in={self.d_in}, d_sae={self.d_sae})")
        if self.architecture in SPARSE_K and not (self.k and 1 <= self.k <= self.d_sae):
            raise PsylingError(f"{self.architecture} SAE: k must be in 1..{self.d_sae} (got {self.k})")
        parse_site(self.site)

    def to_dict(self) -> dict:
        return asdict(self)


class SparseAutoencoder(torch.nn.Module):
    """An SAE with SAELens's parameter names and shapes. ``training`` (``.train()``) switches BatchTopK to its
    batch-level selection; ``.eval()`` (the default after ``from_init``) selects per token."""

    def __init__(self, config: SAEConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = config
        d_in, d_sae = config.d_in, config.d_sae
        self.W_enc = torch.nn.Parameter(torch.zeros(d_in, d_sae, dtype=dtype))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = torch.nn.Parameter(torch.zeros(d_sae, d_in, dtype=dtype))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.register_buffer("threshold", torch.zeros(d_sae, dtype=dtype))
        self.eval()

    @classmethod
    def from_init(cls, config: SAEConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> "SparseAutoencoder":
        """Gao et al.'s initialisation: random unit-norm decoder rows, the encoder their transpose, biases 0."""
        sae = cls(config, dtype)
        generator = torch.Generator().manual_seed(seed)
        w = torch.randn(config.d_sae, config.d_in, generator=generator, dtype=torch.float64)
        w = w / w.norm(dim=1, keepdim=True)
        with torch.no_grad():
            sae.W_dec.copy_(w.to(dtype))
            sae.W_enc.copy_(w.T.to(dtype))
        return sae

    @property
    def k(self) -> Optional[int]:
        return self.config.k

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(x - b_dec) W_enc + b_enc ([..., d_sae]); x is cast to the SAE's dtype."""
        x = x.to(self.W_enc.dtype)
        if self.config.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Latent activations z from pre-activations (see the module docstring)."""
        kind = self.config.architecture
        if kind == "topk" or (kind == "batchtopk" and self.training):
            return _topk(pre, self.k) if kind == "topk" else _batch_topk(pre, self.k)
        if kind == "relu":
            return torch.relu(pre)
        return torch.relu(pre) * (pre > self.threshold)  # jumprelu (as SAELens), and batchtopk at inference

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre_activations(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruction(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A "map" function that replaces activation rows by their reconstruction (in the rows' dtype)."""
        def splice(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self(x).to(x.dtype)
        return splice

    def edit(self, change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """A "map" function that changes the latents z -> ``change(z)`` and keeps the reconstruction error:
        x + (change(z) - z) W_dec."""
        def splice(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                z = self.encode(x)
                return x + ((change(z) - z) @ self.W_dec).to(x.dtype)
        return splice


def _topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of each row's k largest entries, the rest 0."""
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def _batch_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of the k x n largest entries of a batch of n rows, the rest 0."""
    flat = pre.reshape(-1)
    n_rows = flat.numel() // pre.shape[-1]
    values, indices = flat.topk(min(k * n_rows, flat.numel()))
    return torch.zeros_like(flat).scatter(0, indices, torch.relu(values)).view_as(pre)
