"""Hook points with architecture-independent names, and the hooks that record or replace activations there.

Sites (layers are 1-based blocks; ``resid.0`` is the embedding layer):
- ``resid.L``: the residual stream after block L (before the final norm); ``resid.0`` enters the first block;
- ``attn.L`` / ``mlp.L``: the outputs of block L's attention and MLP (what they add in pre-norm models);
- ``head.L``: the input of block L's attention output projection, the heads side by side; ``head.L.H`` one
  head's slice of it (``head_dim`` wide);
- ``neuron.L``: the MLP hidden units before the down projection; ``neuron.L.N`` one unit.

A ``Hooks`` context records sites (``record``) and applies ``Intervention``s, which set, add to, scale or map
an activation at flat positions of the batch; the forward runner (``psyling.models.forward``) turns a
sequence's token positions into those flat positions. Interventions return new tensors (never in place), and
a no-op one leaves every output bitwise identical."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..errors import ModelError
from .architecture import Architecture, architecture

KINDS = ("resid", "attn", "mlp")  # what activation capture stores per word or region
OPS = ("set", "add", "scale", "map")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
_SITE = re.compile(r"^(resid|attn|mlp|head|neuron)\.(\d+)(?:\.(\d+))?$")
# where each kind is read: (module part, whether on its input (pre-hook) rather than its output)
_POINTS = {"resid": ("block", False), "attn": ("attn", False), "mlp": ("mlp", False),
           "head": ("attn_out", True), "neuron": ("mlp_down", True)}


@dataclass(frozen=True)
class Site:
    """A parsed site name: kind, layer, and a head or neuron index (None: the whole site)."""
    kind: str
    layer: int
    index: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}" + ("" if self.index is None else f".{self.index}")

    @property
    def whole(self) -> str:
        """The site whose tensor this one is a slice of (itself without an index)."""
        return f"{self.kind}.{self.layer}"


def parse_site(name: str) -> Site:
    """Site('resid', 3) from 'resid.3', Site('head', 2, 5) from 'head.2.5'; a one-line error otherwise."""
    match = _SITE.match(str(name))
    if not match or (match.group(3) is not None and match.group(1) not in ("head", "neuron")):
        raise ModelError(f"not a site name: {name!r} (expected resid.L, attn.L, mlp.L, head.L[.H] or neuron.L[.N])")
    index = match.group(3)
    return Site(match.group(1), int(match.group(2)), None if index is None else int(index))


COMPUTE_ORDER = ("head", "attn", "neuron", "mlp", "resid")  # within a block; resid.L is the block's output


def site_order(name: str) -> tuple[int, int, int]:
    """A sort key in the order the model computes sites: by layer, then head, attention, neuron, MLP and the
    block's residual output (``resid.0``, the embeddings, first), then the index."""
    site = parse_site(name)
    return site.layer, COMPUTE_ORDER.index(site.kind), -1 if site.index is None else site.index


@dataclass(frozen=True)
class CaptureSpec:
    """What activation capture stores: site kinds, layers (None: all) and the stored dtype."""
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
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))

    def sites(self, n_layers: int) -> list[str]:
        """Site names in layer order; resid layers run 0..L, attn/mlp layers 1..L."""
        layers = range(n_layers + 1) if self.layers is None else self.layers
        bad = [layer for layer in layers if not 0 <= layer <= n_layers]
        if bad:
            raise ModelError(f"layer {bad[0]} does not exist (the model has layers 0..{n_layers})")
        return [f"{kind}.{layer}" for layer in sorted(set(layers)) for kind in self.kinds
                if kind == "resid" or layer > 0]


Value = Union[torch.Tensor, float, Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class Intervention:
    """Replace an activation at a site: ``op`` "set" (to ``value``), "add" (``value``), "scale" (by
    ``value``) or "map" (``value`` is a function of the activation rows). ``sequence`` is the index of a
    sequence in the runner's input (None: every sequence) and ``positions`` its token positions, context token
    included (None: all; a ``slice`` selects from each sequence's positions, e.g. ``slice(1, None)``: all
    but the context token). For "set" and "add", ``value`` is [n_positions, width] or [width]."""
    site: str
    op: str
    value: Value
    sequence: Optional[int] = None
    positions: Union[Sequence[int], slice, None] = None

    def __post_init__(self) -> None:
        parse_site(self.site)
        if self.op not in OPS:
            raise ModelError(f"unknown intervention {self.op!r} (choose from {', '.join(OPS)})")
        if (self.op == "map") != callable(self.value):
            raise ModelError(f"intervention {self.op!r} at {self.site}: "
                             + ("'map' needs a function" if self.op == "map" else "the value must be a tensor or number"))


@dataclass(frozen=True)
class Placed:
    """An intervention with its flat positions in the batch ([rows * width] indexing)."""
    intervention: Intervention
    flat: torch.Tensor


def _apply(x: torch.Tensor, placed: Sequence[Placed], site_width: Optional[int]) -> torch.Tensor:
    """A copy of activation ``x`` [rows, width, d] with the interventions applied (a site with an index acts on
    its slice of the last dimension, ``site_width`` wide)."""
    flat = x.reshape(-1, x.shape[-1]).clone()
    for p in placed:
        site = parse_site(p.intervention.site)
        cols = slice(None) if site.index is None else slice(site.index * site_width, (site.index + 1) * site_width)
        index = p.flat.to(x.device)
        current = flat[index, cols]
        value = p.intervention.value
        op = p.intervention.op
        if op == "map":
            new = value(current)
        elif op == "scale":
            new = current * (value.to(x.device, x.dtype) if torch.is_tensor(value) else value)
        else:
            value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            if not _fits(value.shape, current.shape):
                raise ModelError(f"intervention {op!r} at {site}: a value of shape {tuple(value.shape)} does not "
                                 f"fit the {tuple(current.shape)} activations it replaces (positions x width)")
            new = value.expand_as(current) if op == "set" else current + value
        flat[index, cols] = new.to(x.dtype)
    return flat.view_as(x)


def _fits(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a value of ``shape`` broadcasts to ``target`` without changing it."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


class Hooks:
    """Record and replace activations at sites during the forward passes run inside the context.
    ``recorded[site]`` is the last pass's activation [rows, width, d] (an indexed site: its slice);
    ``grad`` keeps recorded tensors in the autograd graph (whole sites only, for gradient mode)."""

    def __init__(self, model: Any, record: Sequence[str] = (), interventions: Sequence[Placed] = (),
                 grad: bool = False) -> None:
        self.arch: Architecture = architecture(model)
        self.record = list(dict.fromkeys(record))
        self.interventions = list(interventions)
        self.grad = grad
        self.recorded: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        for name in self.record + [p.intervention.site for p in self.interventions]:
            site = parse_site(name)
            top, first = self.arch.n_layers, 0 if site.kind == "resid" else 1
            if not first <= site.layer <= top:
                raise ModelError(f"site {name}: layer {site.layer} does not exist ({site.kind} layers run "
                                 f"{first}..{top})")
            if self.arch.family == "bert" and site.kind != "resid":
                raise ModelError(f"site {name}: BERT's sub-layer outputs include the residual and its norm; "
                                 "psyling hooks only its residual stream (resid.L)")
            if site.index is not None and site.index >= self._index_limit(site):
                raise ModelError(f"site {name}: index {site.index} out of range (0..{self._index_limit(site) - 1})")
            if grad and site.index is not None and name in self.record:
                raise ModelError(f"gradient mode records whole sites: record {site.whole} and slice it")

    def _index_limit(self, site: Site) -> int:
        return self.arch.n_heads if site.kind == "head" else self.arch.n_neurons

    def _slice_width(self, site: Site) -> Optional[int]:
        return self.arch.head_dim if site.kind == "head" else 1 if site.kind == "neuron" else None

    def _transform(self, whole: str, x: torch.Tensor) -> torch.Tensor:
        """Record the requested sites of tensor ``x`` (the whole site ``whole``) and apply its interventions."""
        mine = [p for p in self.interventions if parse_site(p.intervention.site).whole == whole]
        if mine:
            x = _apply(x, mine, self._slice_width(parse_site(whole)))
        for name in self.record:
            site = parse_site(name)
            if site.whole != whole:
                continue
            value = x if self.grad else x.detach()
            if site.index is not None:
                width = self._slice_width(site)
                value = value[..., site.index * width:(site.index + 1) * width]
            self.recorded[name] = value
        return x

    def _points(self) -> dict[str, tuple[torch.nn.Module, bool]]:
        """Whole site -> (module, pre-hook?) for every site touched."""
        points = {}
        for name in self.record + [p.intervention.site for p in self.interventions]:
            site = parse_site(name)
            if site.kind == "resid" and site.layer == 0:
                points[site.whole] = (self.arch.blocks[0], True)
            else:
                part, pre = _POINTS[site.kind]
                points[site.whole] = (self.arch.module(site.layer, part), pre)
        return points

    def __enter__(self) -> "Hooks":
        for whole, (module, pre) in self._points().items():
            if pre:
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(whole), with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(self._post_hook(whole)))
        return self

    def _pre_hook(self, whole: str):
        def hook(module, args, kwargs):
            if args:
                return (self._transform(whole, args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self._transform(whole, kwargs["hidden_states"])}
        return hook

    def _post_hook(self, whole: str):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (self._transform(whole, output[0]), *output[1:])
            return self._transform(whole, output)
        return hook

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
