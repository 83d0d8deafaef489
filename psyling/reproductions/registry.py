"""What a reproduction is: the published figures it checks, the data it reads, and the function measuring them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from ..errors import PsylingError

LONG_MINUTES = 5.0  # a reproduction longer than this on a 2-core CPU is "long": left out of `all` unless asked
KINDS = ("near", "above", "below", "within")


@dataclass(frozen=True)
class Figure:
    """A published figure and the test its measured value must pass.

    ``near``: within ``tolerance`` of ``published``; ``above`` / ``below``: strictly beyond ``published`` (a
    bound); ``within``: inside [``low``, ``high``] (e.g. a published 95% interval around ``published``).
    ``differs``: why the figure is known not to reproduce (its failure is then reported as a known difference,
    with this reason, and does not fail the run)."""
    name: str
    published: float
    tolerance: float = 0.0
    kind: str = "near"
    low: float = -math.inf
    high: float = math.inf
    differs: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PsylingError(f"figure {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")

    def passes(self, measured: float) -> bool:
        """Whether ``measured`` passes; NaN never does."""
        if math.isnan(measured):
            return False
        if self.kind == "near":
            return abs(measured - self.published) <= self.tolerance
        if self.kind == "above":
            return measured > self.published
        if self.kind == "below":
            return measured < self.published
        return self.low <= measured <= self.high

    @property
    def criterion(self) -> str:
        """The test as text: "±0.0005", "> 0", "< 0.05", "in [9.05, 30.7]"."""
        if self.kind == "near":
            return f"±{self.tolerance:g}"
        if self.kind in ("above", "below"):
            return f"{'>' if self.kind == 'above' else '<'} {self.published:g}"
        return f"in [{self.low:.4g}, {self.high:.4g}]"


def near(name: str, published: float, tolerance: float) -> Figure:
    return Figure(name, published, tolerance)


def above(name: str, bound: float, differs: str = "") -> Figure:
    return Figure(name, bound, kind="above", differs=differs)


def below(name: str, bound: float, differs: str = "") -> Figure:
    return Figure(name, bound, kind="below", differs=differs)


def within(name: str, published: float, low: float, high: float) -> Figure:
    return Figure(name, published, kind="within", low=low, high=high)


@dataclass(frozen=True)
class Reproduction:
    """A published result recomputed by psyling.

    ``data``: the folder under the data root it reads; ``measure(data_root)`` returns the measured value of
    every figure by name; ``minutes``: its run time on a quiet 2-core CPU; ``hub_model``: the Hugging Face
    model whose weights it needs (skipped when they are not in the local cache, e.g. offline)."""
    name: str
    citation: str
    data: str
    figures: tuple[Figure, ...]
    measure: Callable[[Path], Mapping[str, float]]
    minutes: float
    hub_model: Optional[str] = None

    @property
    def long(self) -> bool:
        return self.minutes > LONG_MINUTES


def hub_weights_cached(model_id: str) -> bool:
    """Whether the Hugging Face cache holds ``model_id`` (its config.json), so it loads without the network."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model_id, "config.json"), str)


def skip_reason(reproduction: Reproduction, run_long: bool) -> Optional[str]:
    """Why ``reproduction`` is not run (None: it is)."""
    if reproduction.hub_model and not hub_weights_cached(reproduction.hub_model):
        return (f"needs the weights of {reproduction.hub_model!r} from the Hugging Face hub, which are not in "
                f"the local cache (offline)")
    if reproduction.long and not run_long:
        return f"long (~{reproduction.minutes:.0f} min on a 2-core CPU): run it by name or with --long"
    return None
