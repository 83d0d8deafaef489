"""Prediction formulas in the SyntaxGym grammar.

A formula compares region statistics across conditions, e.g. ``(verb; %mismatch%) > (verb; %match%)``.
Terms are ``(REGION;%CONDITION%)`` where REGION is a 1-based region number, a region name or ``*`` (the whole
sentence); numbers; ``+ -`` and, beyond SyntaxGym, ``* /`` (arithmetic), ``< > =`` (comparison; ``=`` is
``numpy.isclose`` with SyntaxGym's tolerances) and ``& |`` (logic, left to right). Sub-expressions are grouped
with ``( )`` or, as in the 2020 SyntaxGym suites, with ``[ ]``. A human effect is an expression without a
comparison (``parse_expression``).

A bare term takes the run's prediction measure (``--measure``, default ``surprisal``). A term wrapped in a measure
function takes that measure whatever the run's, so a set can state its paper's criterion, e.g.
``mean(*;%good%) < mean(*;%bad%)`` or ``slor(*;%good%) < slor(*;%bad%)``; the functions are the ``MEASURES``
(``psyling.stats.predictions`` defines them) and take exactly one ``(REGION;%CONDITION%)`` term.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional, Union

EQUALITY_RTOL = 1e-5  # SyntaxGym's tolerances for "="
EQUALITY_ATOL = 1e-3
# the prediction measures, also the grammar's function names (definitions: psyling.stats.predictions)
MEASURES = ("surprisal", "surprisal_raw", "mean", "slor")

_REGION_RE = re.compile(r"\(\s*([^;()\[\]%]+?)\s*;\s*%([^%]+)%\s*\)")
_FUNCTION_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?=\()")
_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?")


class FormulaError(ValueError):
    """A formula that does not parse or does not type-check."""


@dataclass(frozen=True)
class Term:
    """A (region; %condition%) reference; ``region`` is as written (number, name or ``*``); ``measure``: the
    function it was wrapped in (one of ``MEASURES``), None for a bare term (the run's measure)."""
    region: str
    condition: str
    measure: Optional[str] = None


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Negate:
    operand: "Node"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Node"
    right: "Node"


Node = Union[Term, Number, Negate, BinOp]
_ARITH, _PRODUCT, _COMPARE, _LOGIC = ("+", "-"), ("*", "/"), ("<", ">", "="), ("&", "|")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def error(self, message: str) -> FormulaError:
        return FormulaError(f"{message} at character {self.pos + 1} of {self.text!r}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def parse(self) -> Node:
        node = self.logic()
        if self.peek():
            raise self.error(f"unexpected {self.peek()!r}")
        return node

    def chain(self, operand, ops: tuple[str, ...]) -> Node:
        """Left-associative chain of binary operators of one precedence level."""
        node = operand()
        while self.peek() in ops:
            op = self.text[self.pos]
            self.pos += 1
            node = BinOp(op, node, operand())
        return node

    def logic(self) -> Node:
        return self.chain(self.compare, _LOGIC)

    def compare(self) -> Node:  # non-associative: a < b < c is an error
        node = self.arith()
        if self.peek() in _COMPARE:
            op = self.text[self.pos]
            self.pos += 1
            node = BinOp(op, node, self.arith())
        return node

    def arith(self) -> Node:
        return self.chain(self.product, _ARITH)

    def product(self) -> Node:
        return self.chain(self.unary, _PRODUCT)

    def unary(self) -> Node:
        if self.peek() == "-":
            self.pos += 1
            return Negate(self.unary())
        return self.atom()

    def region_term(self, measure: Optional[str] = None) -> Optional[Term]:
        """The ``(REGION;%CONDITION%)`` term at the current position, or None."""
        self.skip()
        match = _REGION_RE.match(self.text, self.pos)
        if not match:
            return None
        self.pos = match.end()
        return Term(match.group(1).strip(), match.group(2).strip(), measure)

    def function(self) -> Term:
        """``NAME(REGION;%CONDITION%)``: a term with its own measure."""
        match = _FUNCTION_RE.match(self.text, self.pos)
        name = match.group(1)
        if name not in MEASURES:
            raise self.error(f"unknown function {name!r} (measure functions: {', '.join(MEASURES)})")
        self.pos = match.end()
        term = self.region_term(name)
        if term is None:
            raise self.error(f"{name}(...) takes one (region;%condition%) term")
        return term

    def atom(self) -> Node:
        char = self.peek()
        if _FUNCTION_RE.match(self.text, self.pos):
            return self.function()
        if char == "(":
            term = self.region_term()
            if term is not None:
                return term
            self.pos += 1
            node = self.logic()
            self.expect(")")
            return node
        if char == "[":
            self.pos += 1
            node = self.logic()
            self.expect("]")
            return node
        match = _NUMBER_RE.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return Number(float(match.group()))
        raise self.error("expected a (region;%condition%) term, a measure function, a number or a bracket" if char
                         else "unexpected end of formula")


def _kind(node: Node) -> str:
    """Type-check a node: 'num' or 'bool'."""
    if isinstance(node, (Term, Number)):
        return "num"
    if isinstance(node, Negate):
        if _kind(node.operand) != "num":
            raise FormulaError("'-' applies to numbers, not to a comparison")
        return "num"
    left, right = _kind(node.left), _kind(node.right)
    want = "bool" if node.op in _LOGIC else "num"
    if left != want or right != want:
        raise FormulaError(f"'{node.op}' needs {'comparisons' if want == 'bool' else 'numbers'} on both sides")
    return "num" if node.op in _ARITH + _PRODUCT else "bool"


def terms(node: Node) -> list[Term]:
    """All region terms of a formula, left to right."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Negate):
        return terms(node.operand)
    if isinstance(node, BinOp):
        return terms(node.left) + terms(node.right)
    return []


def _parse_typed(text: str, kind: str, what: str, wrong: str) -> Node:
    if not isinstance(text, str) or not text.strip():
        raise FormulaError(f"empty {what}")
    node = _Parser(text).parse()
    if _kind(node) != kind:
        raise FormulaError(f"{what} {text!r} {wrong}")
    return node


def parse_formula(text: str) -> Node:
    """Parse and type-check a formula; raise FormulaError naming the problem."""
    return _parse_typed(text, "bool", "formula", "is not a comparison (it has no < > =)")


def parse_expression(text: str) -> Node:
    """Parse an arithmetic expression over region terms (no comparison), e.g. a human effect contrast."""
    return _parse_typed(text, "num", "expression",
                        "is a comparison; give a difference such as (r;%a%) - (r;%b%)")


def evaluate(node: Node, lookup: Callable[[Term], float]) -> Union[bool, float]:
    """Evaluate a parsed formula; ``lookup`` returns the statistic of a term."""
    if isinstance(node, Term):
        return lookup(node)
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Negate):
        return -evaluate(node.operand, lookup)
    left, right = evaluate(node.left, lookup), evaluate(node.right, lookup)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if node.op == "/":
        return left / right if right else float("nan")
    if node.op == "<":
        return bool(left < right)
    if node.op == ">":
        return bool(left > right)
    if node.op == "=":
        return bool(abs(left - right) <= EQUALITY_ATOL + EQUALITY_RTOL * abs(right))
    if node.op == "&":
        return bool(left and right)
    return bool(left or right)
