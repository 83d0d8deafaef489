"""Where the parts of a supported model are: its blocks, each block's attention and MLP, the attention output
projection (whose input holds the heads side by side), the MLP down projection (whose input holds the neurons),
the final norm; and the model's own read-out (``LensHead``) for the logit lens."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import ModelError


@dataclass(frozen=True)
class Layout:
    """Attribute paths of one family: the ModuleList of blocks; within a block the attention, MLP, attention
    output projection and MLP down projection; the final norm (None for encoders)."""
    blocks: str
    attn: str
    mlp: str
    attn_out: str
    mlp_down: str
    norm: Optional[str]


LAYOUTS = {
    "llama-like": Layout("model.layers", "self_attn", "mlp", "self_attn.o_proj", "mlp.down_proj", "model.norm"),
    "gpt2": Layout("transformer.h", "attn", "mlp", "attn.c_proj", "mlp.c_proj", "transformer.ln_f"),
    "gpt-neox": Layout("gpt_neox.layers", "attention", "mlp", "attention.dense", "mlp.dense_4h_to_h",
                       "gpt_neox.final_layer_norm"),
    "bert": Layout("bert.encoder.layer", "attention", "output", "attention.output.dense", "output.dense", None),
}


def get_path(root: Any, path: str) -> Any:
    """``root.a.b.c`` for path "a.b.c", or None where a part is missing."""
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


@dataclass(frozen=True)
class Architecture:
    """A loaded model's family, layout and blocks, with its head count and head width."""
    family: str
    layout: Layout
    blocks: torch.nn.ModuleList
    n_heads: int
    head_dim: int

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def n_neurons(self) -> int:
        """MLP hidden units per layer: the input width of the down projection."""
        module = self.module(1, "mlp_down")
        weight = module.weight
        return weight.shape[0] if type(module).__name__ == "Conv1D" else weight.shape[1]

    def module(self, layer: int, part: str) -> torch.nn.Module:
        """Block ``layer`` (1-based) itself ("block") or one of its parts ("attn", "mlp", "attn_out", "mlp_down")."""
        block = self.blocks[layer - 1]
        return block if part == "block" else get_path(block, getattr(self.layout, part))


def architecture(model: Any) -> Architecture:
    """The architecture of a supported model; a one-line error names the supported families otherwise."""
    for family, layout in LAYOUTS.items():
        found = get_path(model, layout.blocks)
        if isinstance(found, torch.nn.ModuleList) and len(found):
            cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
            n_heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head"))
            hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd"))
            head_dim = int(getattr(cfg, "head_dim", None) or hidden // n_heads)
            return Architecture(family, layout, found, n_heads, head_dim)
    raise ModelError(f"psyling does not know the block layout of {type(model).__name__} "
                     f"(supported: {', '.join(LAYOUTS)})")


def n_layers(model: Any) -> int:
    return architecture(model).n_layers


class LensHead:
    """The model's own read-out (final norm, unembedding, any logit soft-capping) applied to a residual stream:
    the logit lens. At the last layer it reproduces the model's logits."""

    def __init__(self, model: Any) -> None:
        norm = architecture(model).layout.norm
        self.norm = get_path(model, norm) if norm else None
        if self.norm is None:
            raise ModelError(f"the logit lens needs a causal LM with a final norm; {type(model).__name__} has none")
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.norm(resid))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits
