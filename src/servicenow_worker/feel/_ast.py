"""The syntax tree the parser builds and the compiler turns into Python closures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column of a node's first character."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Node:
    """Base of all syntax-tree nodes."""


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A constant: null, boolean, number, string or temporal literal."""

    value: Any


@dataclass(frozen=True, slots=True)
class BooleanLiteral(Literal):
    """`true` or `false`: a unary test compares the input with it instead of evaluating it."""


@dataclass(frozen=True, slots=True)
class Variable(Node):
    """A name looked up in the evaluation scope."""

    name: str


@dataclass(frozen=True, slots=True)
class InputValue(Node):
    """`?`: the value left of `in`, inside a unary test."""

    position: Position


@dataclass(frozen=True, slots=True)
class Path(Node):
    """`base.key`: a context entry, a property, or (over a list) each item's entry."""

    base: Node
    key: str


@dataclass(frozen=True, slots=True)
class Filter(Node):
    """`base[condition]`: an index (1-based, negative from the end) or a filter."""

    base: Node
    condition: Node


@dataclass(frozen=True, slots=True)
class Call(Node):
    """`name(args)` with positional or named arguments."""

    name: str
    positional: tuple[Node, ...]
    named: tuple[tuple[str, Node], ...] | None
    position: Position


@dataclass(frozen=True, slots=True)
class ListLiteral(Node):
    """`[a, b, c]`."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class ContextLiteral(Node):
    """`{a: 1, "b c": 2}`; later entries can refer to earlier ones."""

    entries: tuple[tuple[str, Node], ...]


@dataclass(frozen=True, slots=True)
class Negation(Node):
    """`-x`."""

    operand: Node


@dataclass(frozen=True, slots=True)
class Arithmetic(Node):
    """`left op right` for + - * / **."""

    operator: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Comparison(Node):
    """`left op right` for = != < <= > >=."""

    operator: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Between(Node):
    """`value between low and high`."""

    value: Node
    low: Node
    high: Node


@dataclass(frozen=True, slots=True)
class Conjunction(Node):
    """`left and right` (three-valued)."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Disjunction(Node):
    """`left or right` (three-valued)."""

    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class In(Node):
    """`value in test`."""

    value: Node
    test: Node


@dataclass(frozen=True, slots=True)
class TestList(Node):
    """`(t1, t2, …)` right of `in`: true when one test is."""

    tests: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class InputEquals(Node):
    """A boolean literal right of `in`: the input equals it."""

    value: Node


@dataclass(frozen=True, slots=True)
class UnaryComparison(Node):
    """`< x`, `<= x`, `> x`, `>= x`: compares the input of a unary test."""

    operator: str
    operand: Node
    position: Position


@dataclass(frozen=True, slots=True)
class Interval(Node):
    """`[low..high]`, `(low..high)`, `]low..high[`…: the input lies within."""

    low: Node
    high: Node
    low_closed: bool
    high_closed: bool
    position: Position


@dataclass(frozen=True, slots=True)
class InstanceOf(Node):
    """`value instance of type`."""

    value: Node
    type_name: str


@dataclass(frozen=True, slots=True)
class If(Node):
    """`if condition then a else b`; a condition that is not true takes the else branch."""

    condition: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True, slots=True)
class Iterator(Node):
    """`name in source` or `name in start..end` of a for, some or every."""

    name: str
    source: Node
    range_end: Node | None


@dataclass(frozen=True, slots=True)
class For(Node):
    """`for x in xs, y in ys return body`."""

    iterators: tuple[Iterator, ...]
    body: Node


@dataclass(frozen=True, slots=True)
class Quantified(Node):
    """`some|every x in xs satisfies condition`."""

    every: bool
    iterators: tuple[Iterator, ...]
    condition: Node
