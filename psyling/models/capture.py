"""Selective activation capture inside the scoring forward pass, with architecture-independent site names.

Sites: ``resid.0`` is the residual stream entering the first block (embeddings, after any embedding scaling),
``resid.l`` the residual stream after block l (1..L, before the final norm), ``attn.l`` / ``mlp.l`` the outputs of
block l's attention and MLP sub-layers (what they add to the residual stream in pre-norm models). Only the
requested sites are hooked, so an uncaptured site costs nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import ModelError

KINDS = ("resid", "attn", "mlp")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
# (path to the ModuleList of blocks, attention attribute, MLP attribute, path to the final norm)
ARCHITECTURES = {
    "llama-like": ("model.layers", "self_attn", "mlp", "model.norm"),  # Llama, SmolLM, Gemma, Mistral, Qwen
    "gpt2": ("transformer.h", "attn", "mlp", "transformer.ln_f"),
    "gpt-neox": ("gpt_neox.layers", "attention", "mlp", "gpt_neox.final_layer_norm"),
    "bert": ("bert.encoder.layer", "attention", "output", None),
}
_SITE = re.compile(r"^(resid|attn|mlp)\.(\d+)$")


@dataclass(frozen=True)
class CaptureSpec:
    """What to capture: site kinds, layers (None: all) and the stored dtype."""
    kinds: tuple[str, ...] = ("resid",)
    layers: Optional[tuple[int, ...]] = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ModelError(f"unknown activation kind {unknown[0] if unknown else ''!r} "
                             f"(choose from {', '.join(KINDS)})")
        if self.dtype not in DTYPES:
            raise ModelError(f"unknown activation dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")

    def sites(self, n_layers: int) -> list[str]:
        """Site names in layer order; resid layers run 0..L, attn/mlp layers 1..L."""
        layers = range(n_layers + 1) if self.layers is None else self.layers
        bad = [layer for layer in layers if not 0 <= layer <= n_layers]
        if bad:
            raise ModelError(f"layer {bad[0]} does not exist (the model has layers 0..{n_layers})")
        return [f"{kind}.{layer}" for layer in sorted(set(layers)) for kind in self.kinds
                if kind == "resid" or layer > 0]


def limit_heap_fragmentation() -> bool:
    """Serve allocations of 1 MiB and more with mmap (glibc ``M_MMAP_THRESHOLD``), so that the variable-size
    batch tensors of a capture run go back to the system when freed. glibc's default threshold adapts upwards
    and then keeps them on the heap, where fragmentation grew the peak memory of a capture run 1.35x for 10x the
    stimuli (1.10x with this, for 1.10x the plain scoring time; a 64 KiB threshold cost 1.18x). A no-op (False)
    where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, 1024 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def parse_site(site: str) -> tuple[str, int]:
    """('resid', 3) from 'resid.3'."""
    match = _SITE.match(site)
    if not match:
        raise ModelError(f"not an activation site name: {site!r} (expected resid.N, attn.N or mlp.N)")
    return match.group(1), int(match.group(2))


def _get(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def architecture(model: Any) -> tuple[str, torch.nn.ModuleList, str, str, Optional[torch.nn.Module]]:
    """(family, blocks, attention attribute, MLP attribute, final norm) of a supported model."""
    for family, (blocks, attn, mlp, norm) in ARCHITECTURES.items():
        found = _get(model, blocks)
        if isinstance(found, torch.nn.ModuleList) and len(found):
            return family, found, attn, mlp, _get(model, norm) if norm else None
    raise ModelError(f"activation capture does not know the block layout of {type(model).__name__} "
                     f"(supported: {', '.join(ARCHITECTURES)})")


def n_layers(model: Any) -> int:
    return len(architecture(model)[1])


class Capture:
    """Hooks that record the requested sites during one forward pass: ``values[site]`` is [batch, seq, d]."""

    def __init__(self, model: Any, sites: list[str]) -> None:
        _, self.blocks, self.attn, self.mlp, _ = architecture(model)
        self.sites = sites
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def _record(self, site: str):
        def hook(module, args, output):
            self.values[site] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    def __enter__(self) -> "Capture":
        for site in self.sites:
            kind, layer = parse_site(site)
            if kind == "resid" and layer == 0:
                def pre(module, args, kwargs, site=site):
                    hidden = args[0] if args else kwargs["hidden_states"]
                    self.values[site] = hidden.detach()
                self._handles.append(self.blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
                continue
            block = self.blocks[layer - 1]
            module = block if kind == "resid" else getattr(block, self.attn if kind == "attn" else self.mlp)
            self._handles.append(module.register_forward_hook(self._record(site)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class LensHead:
    """The model's own read-out (final norm, unembedding, any logit soft-capping) applied to a residual stream:
    the logit lens. At the last layer it reproduces the model's logits."""

    def __init__(self, model: Any) -> None:
        _, _, _, _, self.norm = architecture(model)
        if self.norm is None:
            raise ModelError(f"the logit lens needs a causal LM with a final norm; {type(model).__name__} has none")
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.norm(resid))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits
