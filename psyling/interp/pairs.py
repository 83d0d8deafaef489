"""Patching pairs: which conditions of a set give the clean and corrupted contexts and the critical region's two
continuations, and how the token positions of the two contexts align, region by region.

A pair names four conditions: ``clean`` and ``corrupt`` supply the contexts (every region before the critical
one), ``good`` and ``bad`` the critical region's two continuations (``good`` agrees with the clean context).
A 2x2 set (context factor x continuation factor) supplies them from its factors and its first prediction:
``(critical; %bad%) > (critical; %good%)`` names the continuation factor (good and bad differ in it) and the
clean context's level of the other factor. Four sequences per item: each context followed by each
continuation, cut after the critical region (later tokens cannot change the metric)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import PsylingError
from ..stimuli.formula import BinOp, Node, Term
from ..stimuli.schema import StimulusSet

POSITION_TOKENS = ("first", "last", "all")  # or an integer k (0-based; negative from the end)
UNEQUAL = ("last", "first", "skip")  # how "all" aligns a region whose token counts differ


class DesignError(PsylingError):
    """A patching design that a set does not allow, or that the command line gives wrongly."""


@dataclass(frozen=True)
class Pair:
    """The conditions of one patching experiment, and its critical region (a region name)."""
    clean: str
    corrupt: str
    good: str
    bad: str
    critical: str

    def describe(self) -> str:
        return (f"context {self.clean} vs {self.corrupt}; continuations at {self.critical}: "
                f"{self.good} (good) vs {self.bad} (bad)")


@dataclass(frozen=True)
class PairSpec:
    """How pairs are chosen: all given (command line), the factor whose two levels are swapped (both orders),
    or None for the set's own design (the first comparison of its first prediction)."""
    clean: Optional[str] = None
    corrupt: Optional[str] = None
    good: Optional[str] = None
    bad: Optional[str] = None
    critical: Optional[str] = None
    factor: Optional[str] = None


def _comparisons(node: Node) -> list[tuple[Term, Term]]:
    """(greater, lesser) term pairs of a formula's comparisons between two single cells, left to right."""
    if not isinstance(node, BinOp):
        return []
    if node.op in ("<", ">") and isinstance(node.left, Term) and isinstance(node.right, Term):
        return [(node.left, node.right) if node.op == ">" else (node.right, node.left)]
    return _comparisons(node.left) + _comparisons(node.right)


def _levels(stim: StimulusSet, condition: str) -> dict[str, str]:
    index = stim.conditions.index(condition)
    return {factor: levels[index] for factor, levels in stim.factors.items()}


def _condition_with(stim: StimulusSet, levels: dict[str, str]) -> str:
    matches = [c for c in stim.conditions if _levels(stim, c) == levels]
    if len(matches) != 1:
        raise DesignError(f"{stim.source}: no single condition has the factor levels {levels}")
    return matches[0]


def _design_pairs(stim: StimulusSet) -> list[tuple[str, Pair]]:
    """(context factor, pair) for every comparison of the first prediction whose two cells differ in one
    factor: the lesser cell is the good continuation and clean context, the greater the bad continuation."""
    where = f"{stim.source}: field=factors"
    if len(stim.factors) != 2 or any(len(set(v)) != 2 for v in stim.factors.values()) or len(stim.conditions) != 4:
        raise DesignError(f"{where}: cannot derive a patching design (it needs a 2x2 set: two factors of two "
                          "levels); give --clean, --corrupt, --good, --bad and --critical")
    if not stim.predictions:
        raise DesignError(f"{stim.source}: field=predictions: the set has no prediction to read the design from")
    found = []
    for greater, lesser in _comparisons(stim.predictions[0].tree):
        good, bad = _levels(stim, lesser.condition), _levels(stim, greater.condition)
        differ = [f for f in stim.factors if good[f] != bad[f]]
        if greater.region != lesser.region or lesser.region == "*" or len(differ) != 1:
            continue
        context = next(f for f in stim.factors if f != differ[0])
        other = next(level for level in stim.factors[context] if level != good[context])
        corrupt = _condition_with(stim, {**good, context: other})
        region = stim.regions[stim.region_index(lesser.region)]
        found.append((context, Pair(lesser.condition, corrupt, lesser.condition, greater.condition, region)))
    if not found:
        raise DesignError(f"{stim.source}: field=predictions: its first prediction has no comparison of two cells "
                          "that differ in one factor; give --clean, --corrupt, --good, --bad and --critical")
    return found


def pairs_for(stim: StimulusSet, spec: PairSpec) -> list[Pair]:
    """The pairs of a set under a spec, checked: all five fields given (used as they are); else the set's
    design, filtered by the fields given (``factor``: every pair swapping that factor; nothing: the first)."""
    fields = ("clean", "corrupt", "good", "bad", "critical")
    given = {f: getattr(spec, f) for f in fields if getattr(spec, f) is not None}
    if len(given) == len(fields):
        pairs = [Pair(**given)]
    else:
        design = _design_pairs(stim)
        if spec.factor is not None and spec.factor not in stim.factors:
            raise DesignError(f"{stim.source}: field=factors: no factor {spec.factor!r} "
                              f"(the set has {', '.join(stim.factors)})")
        pairs = [p for factor, p in design if spec.factor in (None, factor)
                 and all(getattr(p, f) == v for f, v in given.items())]
        if not pairs:
            raise DesignError(f"{stim.source}: the set's design has no pair with {given or {'factor': spec.factor}}"
                              f" (its pairs: {'; '.join(p.describe() for _, p in design)})")
        if spec.factor is None and not given:
            pairs = pairs[:1]
    for pair in pairs:
        _check_pair(stim, pair)
    return pairs


def _check_pair(stim: StimulusSet, pair: Pair) -> None:
    for name in ("clean", "corrupt", "good", "bad"):
        if getattr(pair, name) not in stim.conditions:
            raise DesignError(f"{stim.source}: field=conditions: no condition {getattr(pair, name)!r} "
                              f"(--{name}; the set has {', '.join(stim.conditions)})")
    if pair.critical not in stim.regions:
        raise DesignError(f"{stim.source}: field=regions: the critical region must be one region of the set "
                          f"(got {pair.critical!r}; regions: {', '.join(stim.regions)})")
    if stim.regions.index(pair.critical) == 0 and not any(
            item.conditions[pair.clean].prefix for item in stim.items):
        raise DesignError(f"{stim.source}: field=regions: the critical region {pair.critical!r} is the first "
                          "region: there is no context before it to patch")
    if pair.clean == pair.corrupt:
        raise DesignError(f"{stim.source}: clean and corrupt are the same condition ({pair.clean})")


def token_spec(token: str) -> object:
    """'first', 'last', 'all' or an integer k (0-based within the region; negative counts from the end)."""
    if token in POSITION_TOKENS:
        return token
    try:
        return int(token)
    except ValueError:
        raise DesignError(f"token position {token!r}: choose first, last, all or an integer") from None
