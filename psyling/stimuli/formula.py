"""Prediction formulas in the SyntaxGym grammar.

A formula compares region statistics across conditions, e.g. ``(verb; %mismatch%) > (verb; %match%)``.
Terms are ``(REGION;%CONDITION%)`` where REGION is a 1-based region number, a region name or ``*`` (the whole
sentence); numbers; ``+ -`` and, beyond SyntaxGym, ``* /`` (arithmetic), ``< > =`` (comparison; ``=`` is
``numpy.isclose`` with SyntaxGym's tolerances) and ``& |`` (logic, left to right). Sub-expressions are grouped
with ``( )`` or, as in the 2020 SyntaxGym suites, with ``[ ]``. A human effect is an expression without a
comparison (``parse_expression``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Union

EQUALITY_RTOL = 1e-5  # SyntaxGym's tolerances for "="
EQUALITY_ATOL = 1e-3

_REGION_RE = re.compile(r"\(\s*([^;()\[\]%]+?)\s*;\s*%([^%]+)%\s*\)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?")


class FormulaError(ValueError):
    """A formula that does not parse or does not type-check."""


@dataclass(frozen=True)
class Term:
    """A (region; %condition%) reference; ``region`` is as written (number, name or ``*``)."""
    region: str
    condition: str


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

    def atom(self) -> Node:
        char = self.peek()
        if char == "(":
            match = _REGION_RE.match(self.text, self.pos)
            if match:
                self.pos = match.end()
                return Term(match.group(1).strip(), match.group(2).strip())
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
        raise self.error("expected a (region;%condition%) term, a number or a bracket" if char
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
