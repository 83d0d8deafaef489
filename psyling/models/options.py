"""The settings of the model stage as frozen, hashable values: which model to load (``ModelSpec``) and how to
score with it (``ScoringOptions``). ``psyling.config.RunConfig`` composes them with the run's other settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..errors import ModelError
from .embedded import DEFAULT_MODEL
from .hooks import CaptureSpec

PADDING_SIDES = ("left", "right")
MASKED_VARIANTS = ("pll", "l2r")


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: an alias, local folder, .gguf file or hub id, with the loading settings."""
    name: str = DEFAULT_MODEL
    revision: Optional[str] = None
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ScoringOptions:
    """How a scorer computes: context token (None: BOS, else EOS), ``batch_size`` (sequences per padded batch),
    ``max_tokens`` (tokens per forward batch; None: from the vocabulary size), ``padding_side``,
    ``reuse_prefix`` (None: the convention's default), ``convention``, ``masked_variant`` (masked LMs),
    ``capture`` (activation sites recorded in the pass: a CaptureSpec, or kinds such as "resid,mlp") and ``lens_layers`` (logit lens; "all": every layer)."""
    context_token: Union[str, int, None] = None
    batch_size: int = 32
    max_tokens: Optional[int] = None
    padding_side: str = "right"
    reuse_prefix: Optional[bool] = None
    convention: str = "psyling"
    masked_variant: str = "pll"
    capture: Optional[CaptureSpec] = None
    lens_layers: Union[tuple[int, ...], str, None] = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ModelError("batch size must be at least 1")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ModelError("max tokens must be at least 1")
        if self.padding_side not in PADDING_SIDES:
            raise ModelError("padding side must be 'left' or 'right'")
        if self.masked_variant not in MASKED_VARIANTS:
            raise ModelError(f"unknown masked-LM scoring variant {self.masked_variant!r} "
                             f"(choose from {', '.join(MASKED_VARIANTS)})")
        if isinstance(self.capture, str):
            object.__setattr__(self, "capture", CaptureSpec(tuple(k.strip() for k in self.capture.split(","))))
        if self.capture is not None and not isinstance(self.capture, CaptureSpec):
            raise ModelError(f"activations must be site kinds such as 'resid,mlp' or a CaptureSpec "
                             f"(got {type(self.capture).__name__})")
        if isinstance(self.lens_layers, list):
            object.__setattr__(self, "lens_layers", tuple(self.lens_layers))
        if isinstance(self.lens_layers, str) and self.lens_layers != "all":
            raise ModelError(f"lens layers must be layer numbers or 'all' (got {self.lens_layers!r})")
