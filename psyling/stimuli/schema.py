"""Typed stimulus objects (schema v1): a set is items x conditions x regions.

The sentence of an item in a condition is its non-empty regions joined by single spaces; an optional prefix
(context such as a prime) precedes it and is conditioned on but not scored.
"""
from __future__ import annotations

import re

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import StimulusError
from .formula import FormulaError, Node, Term, parse_expression, parse_formula, terms

SCHEMA_VERSION = 1
WHOLE_SENTENCE = "*"
SEGMENTATIONS = ("whitespace", "none")
# the only spellings of a set's human.measure (checked when a manifest is read)
HUMAN_MEASURES = ("SPR", "eye-tracking", "ERP-N400", "ERP-P600", "acceptability", "cloze", "other")


_SAFE_NAME = re.compile(r"[^\W_][\w\-. ]*")  # no path separators, markup or control characters


def _check_name(name: str, err: Any) -> None:
    """A set name names output files: no path separators, markup or control characters."""
    if not name:
        raise err("the set has no name", field="name")
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise err(f"set name {name!r} must start with a letter or digit and hold only letters, digits, "
                  "_ - . or spaces (it names output files)", field="name")

@dataclass(frozen=True)
class HumanFinding:
    """The human result a set tests: measure, critical region, direction, size (with CI) and source."""
    measure: str
    region: Optional[str]
    direction: str
    source: str
    size: Optional[float] = None
    unit: Optional[str] = None
    ci: Optional[tuple[float, float]] = None
    # the human effect as an expression over (region; condition) cells, oriented so that the human effect is
    # positive (slower reading, larger N400 / P600, lower acceptability in the first term); size/ci refer to it
    effect: Optional[str] = None
    size_source: Optional[str] = None  # where size/ci come from, when not from ``source``

    @property
    def effect_tree(self) -> Optional[Node]:
        return parse_expression(self.effect) if self.effect else None


@dataclass(frozen=True)
class Prediction:
    """A SyntaxGym-style formula over (region; condition) cells, parsed once."""
    formula: str
    tree: Node = field(compare=False, repr=False)

    @classmethod
    def parse(cls, formula: str) -> "Prediction":
        return cls(formula, parse_formula(formula))

    @property
    def terms(self) -> list[Term]:
        return terms(self.tree)


@dataclass(frozen=True)
class Condition:
    """One item in one condition: the text of each region (in the set's region order) and a prefix."""
    name: str
    regions: tuple[str, ...]
    prefix: str = ""
    separator: str = " "  # "" for scripts written without spaces (e.g. Chinese)
    attached: frozenset[int] = frozenset()  # regions joined to the previous one without a separator

    @property
    def text(self) -> str:
        out = ""
        for index, region in enumerate(self.regions):
            if region:
                out += ("" if not out or index in self.attached else self.separator) + region
        return out


@dataclass(frozen=True)
class Item:
    id: str
    conditions: dict[str, Condition]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StimulusSet:
    """A stimulus set with its metadata, items, predictions and the human finding it tests."""
    name: str
    regions: tuple[str, ...]
    conditions: tuple[str, ...]
    items: list[Item]
    predictions: list[Prediction]
    source: str
    version: str = "1"
    description: str = ""
    phenomenon: str = ""
    language: str = "en"
    license: str = ""
    citation: str = ""
    human: Optional[HumanFinding] = None
    # factorial designs: factor name -> one level per condition (in ``conditions`` order)
    factors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    metric: str = "sum"
    segmentation: str = "whitespace"  # words are whitespace-delimited; "none": no words, regions only
    schema_version: int = SCHEMA_VERSION
    metadata: dict[str, Any] = field(default_factory=dict)

    def region_index(self, ref: str) -> Optional[int]:
        """0-based index of a region given by 1-based number or name; None for the whole sentence."""
        if ref == WHOLE_SENTENCE:
            return None
        if ref.isdigit() and 1 <= int(ref) <= len(self.regions):
            return int(ref) - 1
        if ref in self.regions:
            return self.regions.index(ref)
        raise KeyError(ref)

    def validate(self) -> "StimulusSet":
        """Check internal consistency; raise StimulusError naming file, item, condition and field."""
        def err(msg: str, **where: Any) -> StimulusError:
            return StimulusError(msg, file=self.source, **where)

        _check_name(self.name, err)
        if not self.regions:
            raise err("no regions declared", field="regions")
        if len(set(self.regions)) != len(self.regions):
            dup = next(r for r in self.regions if self.regions.count(r) > 1)
            raise err(f"region {dup!r} is declared twice", field="regions")
        if not self.conditions:
            raise err("no conditions declared", field="conditions")
        if self.segmentation not in SEGMENTATIONS:
            raise err(f"unknown segmentation {self.segmentation!r} (choose from {', '.join(SEGMENTATIONS)})",
                      field="segmentation")
        if self.metric != "sum":
            raise err(f"unsupported metric {self.metric!r} (only 'sum' is supported)", field="metric")
        if not self.items:
            raise err("the set has no items", field="items")
        seen: set[str] = set()
        for item in self.items:
            if not item.id:
                raise err("empty item id", field="item")
            if item.id in seen:
                raise err("duplicate item id", item=item.id, field="item")
            seen.add(item.id)
            for cond in self.conditions:
                if cond not in item.conditions:
                    raise err(f"condition {cond!r} is missing", item=item.id, condition=cond, field="condition")
            for cond in item.conditions.values():
                if cond.name not in self.conditions:
                    raise err(f"unknown condition (declared: {', '.join(self.conditions)})",
                              item=item.id, condition=cond.name, field="condition")
                if len(cond.regions) != len(self.regions):
                    raise err(f"{len(cond.regions)} regions given, {len(self.regions)} declared",
                              item=item.id, condition=cond.name, field="regions")
                for region, text in zip(self.regions, cond.regions):
                    if not isinstance(text, str):
                        raise err("region text is not a string", item=item.id, condition=cond.name, field=region)
                    if self.segmentation == "whitespace" and text != " ".join(text.split()):
                        raise err("region text has leading, trailing or repeated whitespace",
                                  item=item.id, condition=cond.name, field=region)
                if not cond.text:
                    raise err("all regions are empty", item=item.id, condition=cond.name, field="regions")
        for pred in self.predictions:
            for term in pred.terms:
                try:
                    self.region_index(term.region)
                except KeyError:
                    raise err(f"prediction {pred.formula!r} names unknown region {term.region!r}",
                              field="predictions") from None
                if term.condition not in self.conditions:
                    raise err(f"prediction {pred.formula!r} names unknown condition {term.condition!r}",
                              field="predictions")
        for factor, levels in self.factors.items():
            if len(levels) != len(self.conditions):
                raise err(f"{len(levels)} levels given for {len(self.conditions)} conditions",
                          field=f"factors.{factor}")
            if len(set(levels)) < 2:
                raise err("a factor needs at least two levels", field=f"factors.{factor}")
        if self.human is not None and self.human.effect:
            try:
                tree = self.human.effect_tree
            except FormulaError as exc:
                raise err(str(exc), field="human.effect") from None
            for term in terms(tree):
                if term.condition not in self.conditions:
                    raise err(f"names unknown condition {term.condition!r}", field="human.effect")
                try:
                    self.region_index(term.region)
                except KeyError:
                    raise err(f"names unknown region {term.region!r}", field="human.effect") from None
        if self.human is not None and self.human.region not in (None, WHOLE_SENTENCE) \
                and self.human.region not in self.regions:
            raise err(f"human finding names unknown region {self.human.region!r}", field="human.region")
        return self


def parse_predictions(formulas: list[Any], source: str) -> list[Prediction]:
    """Parse a list of formula strings, naming the file and formula on error."""
    out = []
    for i, formula in enumerate(formulas):
        if not isinstance(formula, str):
            raise StimulusError(f"prediction {i + 1} is not a string", file=source, field="predictions")
        try:
            out.append(Prediction.parse(formula))
        except FormulaError as exc:
            raise StimulusError(f"prediction {i + 1}: {exc}", file=source, field="predictions") from None
    return out
