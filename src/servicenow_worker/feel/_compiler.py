"""Syntax tree to Python closures: each node becomes `Callable[[Scope], value]`, built once.

Evaluation follows feel-scala: a fault FEEL defines as null (a missing variable or entry, a
type mismatch, a failed built-in) gives None; only the faults FEEL cannot turn into null raise
FeelEvaluationError.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from datetime import timedelta
from decimal import Decimal
from functools import partial
from itertools import product
from typing import Any, Final

from servicenow_worker.feel import _ast as ast
from servicenow_worker.feel import _builtins, _connector_functions  # noqa: F401  (registration)
from servicenow_worker.feel import _temporal as temporal
from servicenow_worker.feel._errors import FeelEvaluationError, FeelUnsupportedError
from servicenow_worker.feel._registry import FUNCTIONS, UNSUPPORTED, Overload
from servicenow_worker.feel._values import (
    ARITHMETIC_ERRORS,
    NUMBER_CONTEXT,
    YearMonthDuration,
    compare,
    equals,
    feel_type_name,
    is_integral,
    number,
    same_value,
)

Evaluator = Callable[["Scope"], Any]

# The name under which a unary test finds the value left of `in` (`?` in FEEL).
INPUT: Final = "?"
# A range (`for x in 1..n`) longer than this is refused rather than built in memory.
MAX_RANGE: Final = 1_000_000


class Scope:
    """Variables visible to an evaluation: a mapping, then the enclosing scope's."""

    __slots__ = ("parent", "variables")

    def __init__(self, variables: Mapping[str, Any], parent: Scope | None = None) -> None:
        self.variables = variables
        self.parent = parent

    def lookup(self, name: str) -> Any:
        """The variable's value; None (FEEL null) when no scope has it."""
        scope: Scope | None = self
        while scope is not None:
            value = scope.variables.get(name, _ABSENT)
            if value is not _ABSENT:
                return value
            scope = scope.parent
        return None


_ABSENT: Final = object()


def compile_tree(node: ast.Node, text: str) -> Evaluator:
    """The evaluator of a whole expression; `text` is quoted by compile errors."""
    return _Compiler(text).compile(node)


# ================================================================ three-valued logic


def _at_least_one(thunks: Iterator[Callable[[], Any]]) -> bool | None:
    """feel-scala's `or`/`some`: true wins; otherwise null when any item is not a boolean."""
    result: bool | None = False
    for thunk in thunks:
        if result is True:
            break
        value = thunk()
        if result is None:
            result = True if value is True else None
        else:
            result = value if type(value) is bool else None
    return result


def _all(thunks: Iterator[Callable[[], Any]]) -> bool | None:
    """feel-scala's `and`/`every`: false wins; otherwise null when any item is not a boolean."""
    result: bool | None = True
    for thunk in thunks:
        if result is False:
            break
        value = thunk()
        if result is None:
            result = False if value is False else None
        else:
            result = value if type(value) is bool else None
    return result


# ================================================================ operators


def _add(left: Any, right: Any) -> Any:
    if type(left) is Decimal and type(right) is Decimal:
        return NUMBER_CONTEXT.add(left, right)
    if type(left) is str and type(right) is str:
        return left + right
    return temporal.add(left, right)


def _subtract(left: Any, right: Any) -> Any:
    if type(left) is Decimal and type(right) is Decimal:
        return NUMBER_CONTEXT.subtract(left, right)
    return temporal.subtract(left, right)


def _multiply(left: Any, right: Any) -> Any:
    if type(left) is Decimal:
        if type(right) is Decimal:
            return NUMBER_CONTEXT.multiply(left, right)
        if type(right) in (timedelta, YearMonthDuration):
            return temporal.multiply(right, left)
    elif type(right) is Decimal and type(left) in (timedelta, YearMonthDuration):
        return temporal.multiply(left, right)
    return None


def _divide(left: Any, right: Any) -> Any:
    if type(left) is Decimal and type(right) is Decimal:
        return NUMBER_CONTEXT.divide(left, right)
    return temporal.divide(left, right)


def _power(base: Any, exponent: Any) -> Any:
    if type(base) is not Decimal or type(exponent) is not Decimal:
        return None
    if is_integral(exponent):
        return NUMBER_CONTEXT.power(base, int(exponent))
    # feel-scala falls back to doubles for a fractional exponent.
    result = math.pow(float(base), float(exponent))
    return number(repr(result)) if math.isfinite(result) else None


_ARITHMETIC: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": _add,
    "-": _subtract,
    "*": _multiply,
    "/": _divide,
    "**": _power,
}


def _safely(operation: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    try:
        return operation(left, right)
    except ARITHMETIC_ERRORS:
        return None


def _order(operator: str, left: Any, right: Any) -> bool | None:
    """`<`, `<=`, `>`, `>=`: null unless both values have the same, ordered type."""
    order = compare(left, right)
    if order is None:
        return None
    if operator == "<":
        return order < 0
    if operator == "<=":
        return order <= 0
    if operator == ">":
        return order > 0
    return order >= 0


def _compare(operator: str, left: Any, right: Any) -> bool | None:
    if operator == "=":
        return equals(left, right)
    if operator == "!=":
        result = equals(left, right)
        return None if result is None else not result
    return _order(operator, left, right)


# ================================================================ paths and filters


def _path(value: Any, key: str) -> Any:
    """`value.key`: a context entry, each list item's entry, or a temporal property."""
    kind = type(value)
    if kind is dict:
        return value.get(key)
    if kind is list:
        return [_path(item, key) for item in value]
    if value is None:
        return None
    found = temporal.property_of(value, key)
    return None if temporal.is_missing(found) else found


def _item_at(values: list[Any], index: Decimal) -> Any:
    """The item at a 1-based (negative: from the end) position, or null when out of range."""
    position = index - 1 if index > 0 else len(values) + index
    if position < 0 or position >= len(values):
        return None
    return values[int(position)]


def _item_scope(scope: Scope, item: Any) -> Scope:
    """A filter sees `item`, and a context item's entries by their names."""
    with_item = Scope({"item": item}, scope)
    return Scope(item, with_item) if type(item) is dict else with_item


def _filter_by(values: list[Any], condition: Evaluator, scope: Scope) -> Any:
    """feel-scala's filter: the first item decides between an index and a boolean filter."""
    if not values:
        return []
    first = condition(_item_scope(scope, values[0]))
    if type(first) is Decimal:
        return _item_at(values, first)
    kept = [values[0]] if first is True else []
    kept.extend(v for v in values[1:] if condition(_item_scope(scope, v)) is True)
    return kept


# ================================================================ unary tests


def _unary_test_expression(value: Any, found: Any) -> bool | None:
    """How feel-scala matches the input of `in` against an expression's value."""
    if found is True:
        return True
    if type(found) is list and any(same_value(item, value) for item in found):
        return True
    matched = equals(value, found)
    if matched is True:
        return True
    if found is False or type(found) is list:
        return False
    return None if matched is None else False


def _boolean_or_null(value: Any) -> bool | None:
    return value if type(value) is bool else None


def _uses_input(node: ast.Node) -> bool:
    """True when the test refers to the input as `?`."""
    if isinstance(node, ast.InputValue):
        return True
    for field in fields(node):
        value = getattr(node, field.name)
        for child in value if isinstance(value, tuple) else (value,):
            # a (name, node) pair of a context entry or a named argument
            candidate = child[-1] if isinstance(child, tuple) else child
            if isinstance(candidate, ast.Node) and _uses_input(candidate):
                return True
    return False


def _in_interval(
    value: Any, low: Any, high: Any, low_closed: bool, high_closed: bool
) -> bool | None:
    above = compare(value, low)
    below = compare(value, high)
    if above is None or below is None or compare(low, high) is None:
        return None
    return (above >= 0 if low_closed else above > 0) and (below <= 0 if high_closed else below < 0)


# ================================================================ the compiler


class _Compiler:
    """Turns one syntax tree into closures; checks what can be checked before evaluation."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._in_unary_test = 0

    def _unsupported(self, message: str, position: ast.Position) -> FeelUnsupportedError:
        return FeelUnsupportedError(
            message, expression=self._text, line=position.line, column=position.column
        )

    def compile(self, node: ast.Node) -> Evaluator:
        method: Callable[[ast.Node], Evaluator] = getattr(self, "_" + type(node).__name__)
        return method(node)

    # ---- values

    def _Literal(self, node: ast.Literal) -> Evaluator:
        value = node.value
        return lambda _scope: value

    _BooleanLiteral = _Literal

    def _Variable(self, node: ast.Variable) -> Evaluator:
        name = node.name
        return lambda scope: scope.lookup(name)

    def _InputValue(self, node: ast.InputValue) -> Evaluator:
        self._require_unary_test("`?` (the value left of `in`)", node.position)
        return lambda scope: scope.lookup(INPUT)

    def _ListLiteral(self, node: ast.ListLiteral) -> Evaluator:
        items = [self.compile(item) for item in node.items]
        return lambda scope: [item(scope) for item in items]

    def _ContextLiteral(self, node: ast.ContextLiteral) -> Evaluator:
        entries = [(key, self.compile(value)) for key, value in node.entries]

        def evaluate(scope: Scope) -> dict[str, Any]:
            result: dict[str, Any] = {}
            inner = Scope(result, scope)  # later entries see earlier ones
            for key, value in entries:
                result[key] = value(inner)
            return result

        return evaluate

    def _Path(self, node: ast.Path) -> Evaluator:
        base, key = self.compile(node.base), node.key
        return lambda scope: _path(base(scope), key)

    def _Filter(self, node: ast.Filter) -> Evaluator:
        base = self.compile(node.base)
        condition_node = node.condition
        if isinstance(condition_node, ast.Literal) and type(condition_node.value) is Decimal:
            index = condition_node.value

            def by_index(scope: Scope) -> Any:
                values = base(scope)
                return _item_at(values, index) if type(values) is list else None

            return by_index
        condition = self.compile(condition_node)
        # feel-scala evaluates any other condition once outside the items: a number is an index.
        per_item = isinstance(condition_node, ast.Comparison | ast.Call)

        def evaluate(scope: Scope) -> Any:
            values = base(scope)
            if type(values) is not list:
                return None
            if not per_item:
                outside = condition(scope)
                if type(outside) is Decimal:
                    return _item_at(values, outside)
            return _filter_by(values, condition, scope)

        return evaluate

    # ---- operators

    def _Negation(self, node: ast.Negation) -> Evaluator:
        operand = self.compile(node.operand)

        def evaluate(scope: Scope) -> Any:
            value = operand(scope)
            return NUMBER_CONTEXT.minus(value) if type(value) is Decimal else None

        return evaluate

    def _Arithmetic(self, node: ast.Arithmetic) -> Evaluator:
        operation = _ARITHMETIC[node.operator]
        left, right = self.compile(node.left), self.compile(node.right)
        return lambda scope: _safely(operation, left(scope), right(scope))

    def _Comparison(self, node: ast.Comparison) -> Evaluator:
        operator = node.operator
        left, right = self.compile(node.left), self.compile(node.right)
        return lambda scope: _compare(operator, left(scope), right(scope))

    def _Between(self, node: ast.Between) -> Evaluator:
        value, low, high = self.compile(node.value), self.compile(node.low), self.compile(node.high)

        def evaluate(scope: Scope) -> bool | None:
            subject = value(scope)
            return _all(
                iter(
                    (
                        lambda: _order(">=", subject, low(scope)),
                        lambda: _order("<=", subject, high(scope)),
                    )
                )
            )

        return evaluate

    def _Conjunction(self, node: ast.Conjunction) -> Evaluator:
        left, right = self.compile(node.left), self.compile(node.right)
        return lambda scope: _all(iter((lambda: left(scope), lambda: right(scope))))

    def _Disjunction(self, node: ast.Disjunction) -> Evaluator:
        left, right = self.compile(node.left), self.compile(node.right)
        return lambda scope: _at_least_one(iter((lambda: left(scope), lambda: right(scope))))

    def _InstanceOf(self, node: ast.InstanceOf) -> Evaluator:
        value = self.compile(node.value)
        expected = _TYPE_ALIASES.get(node.type_name, node.type_name)
        if expected == "Any":
            return lambda scope: value(scope) is not None
        return lambda scope: feel_type_name(value(scope)) == expected

    # ---- unary tests (the right side of `in`)

    def _In(self, node: ast.In) -> Evaluator:
        value = self.compile(node.value)
        test = self._unary_test(node.test)
        return lambda scope: test(Scope({INPUT: value(scope)}, scope))

    def _unary_test(self, node: ast.Node) -> Evaluator:
        """An evaluator of a positive unary test; it finds the input under `INPUT`."""
        self._in_unary_test += 1
        try:
            if isinstance(node, ast.TestList):
                tests = [self._single_test(test) for test in node.tests]
                return lambda scope: _at_least_one(partial(test, scope) for test in tests)
            return self._single_test(node)
        finally:
            self._in_unary_test -= 1

    def _single_test(self, node: ast.Node) -> Evaluator:
        """One positive unary test, matched against the input as feel-scala does."""
        if isinstance(node, ast.InputEquals):
            node = node.value
        if isinstance(node, ast.BooleanLiteral):
            expected = node.value
            return lambda scope: equals(scope.lookup(INPUT), expected)
        expression = self.compile(node)
        if isinstance(node, ast.UnaryComparison | ast.Interval):
            return expression  # compares the input itself: true, false or null
        if _uses_input(node):
            # A test written with `?` must give a boolean; anything else is null.
            return lambda scope: _boolean_or_null(expression(scope))
        return lambda scope: _unary_test_expression(scope.lookup(INPUT), expression(scope))

    def _UnaryComparison(self, node: ast.UnaryComparison) -> Evaluator:
        self._require_unary_test(f"the unary test `{node.operator} …`", node.position)
        operator, operand = node.operator, self.compile(node.operand)
        return lambda scope: _order(operator, scope.lookup(INPUT), operand(scope))

    def _Interval(self, node: ast.Interval) -> Evaluator:
        self._require_unary_test("the interval `[a..b]`", node.position)
        low, high = self.compile(node.low), self.compile(node.high)
        low_closed, high_closed = node.low_closed, node.high_closed
        return lambda scope: _in_interval(
            scope.lookup(INPUT), low(scope), high(scope), low_closed, high_closed
        )

    def _require_unary_test(self, what: str, position: ast.Position) -> None:
        if not self._in_unary_test:
            raise self._unsupported(
                f"{what} can only stand right of `in` (as in `x in < 5`)", position
            )

    # ---- control

    def _If(self, node: ast.If) -> Evaluator:
        condition = self.compile(node.condition)
        then, otherwise = self.compile(node.then), self.compile(node.otherwise)
        return lambda scope: then(scope) if condition(scope) is True else otherwise(scope)

    def _iterations(self, iterators: tuple[ast.Iterator, ...]) -> Callable[[Scope], Any]:
        """Evaluates the sources (all in the outer scope, as feel-scala does) to the bindings
        of each iteration, or None when a source is not a list."""
        names = [it.name for it in iterators]
        sources = [self._source(it) for it in iterators]

        def bindings(scope: Scope) -> list[dict[str, Any]] | None:
            lists = [source(scope) for source in sources]
            if any(type(values) is not list for values in lists):
                return None
            return [dict(zip(names, combo, strict=True)) for combo in product(*lists)]

        return bindings

    def _source(self, iterator: ast.Iterator) -> Evaluator:
        start = self.compile(iterator.source)
        if iterator.range_end is None:
            return start
        end = self.compile(iterator.range_end)
        return lambda scope: _range(start(scope), end(scope))

    def _For(self, node: ast.For) -> Evaluator:
        iterations, body = self._iterations(node.iterators), self.compile(node.body)

        def evaluate(scope: Scope) -> list[Any] | None:
            bindings = iterations(scope)
            if bindings is None:
                return None
            results: list[Any] = []
            for variables in bindings:
                variables["partial"] = list(results)
                results.append(body(Scope(variables, scope)))
            return results

        return evaluate

    def _Quantified(self, node: ast.Quantified) -> Evaluator:
        iterations, condition = self._iterations(node.iterators), self.compile(node.condition)
        combine = _all if node.every else _at_least_one

        def evaluate(scope: Scope) -> bool | None:
            bindings = iterations(scope)
            if bindings is None:
                return None
            return combine(partial(_in_scope, condition, v, scope) for v in bindings)

        return evaluate

    # ---- functions

    def _Call(self, node: ast.Call) -> Evaluator:
        overloads = FUNCTIONS.get(node.name)
        if overloads is None:
            raise self._unsupported(_unknown_function(node.name), node.position)
        if node.named is not None:
            return self._named_call(node, overloads)
        arguments = [self.compile(argument) for argument in node.positional]
        overload = _by_arity(overloads, len(arguments))
        if overload is None:
            raise self._unsupported(
                _no_overload(node.name, overloads, f"{len(arguments)} argument(s)"), node.position
            )
        return _positional_call(overload, arguments)

    def _named_call(self, node: ast.Call, overloads: list[Overload]) -> Evaluator:
        assert node.named is not None
        given = {name for name, _ in node.named}
        candidates = [o for o in overloads if given <= set(o.params)]
        if not candidates:
            given_text = "the parameters " + ", ".join(sorted(given))
            raise self._unsupported(_no_overload(node.name, overloads, given_text), node.position)
        overload = min(candidates, key=lambda o: len(o.params))
        by_name = {name: self.compile(value) for name, value in node.named}
        arguments = [by_name.get(param, _null) for param in overload.params]
        impl = overload.impl
        return lambda scope: _invoke(impl, [argument(scope) for argument in arguments])


def _in_scope(evaluator: Evaluator, variables: dict[str, Any], scope: Scope) -> Any:
    return evaluator(Scope(variables, scope))


def _null(_scope: Scope) -> None:
    return None


def _range(start: Any, end: Any) -> list[Decimal] | None:
    """`start..end` of a for or quantifier: numbers stepping by 1 up or down."""
    if type(start) is not Decimal or type(end) is not Decimal:
        return None
    count = abs(end - start) + 1
    if count > MAX_RANGE:
        raise FeelEvaluationError(f"the range {start}..{end} is longer than {MAX_RANGE:,} items")
    step = Decimal(1) if end >= start else Decimal(-1)
    return [NUMBER_CONTEXT.add(start, step * i) for i in range(int(count))]


def _by_arity(overloads: list[Overload], count: int) -> Overload | None:
    for overload in overloads:
        if not overload.varargs and len(overload.params) == count:
            return overload
    for overload in overloads:
        if overload.varargs and count >= len(overload.params) - 1:
            return overload
    return None


def _positional_call(overload: Overload, arguments: list[Evaluator]) -> Evaluator:
    impl = overload.impl
    if not overload.varargs:
        return lambda scope: _invoke(impl, [argument(scope) for argument in arguments])
    fixed = len(overload.params) - 1

    def evaluate(scope: Scope) -> Any:
        values = [argument(scope) for argument in arguments]
        rest = values[fixed:]
        # feel-scala: a single list argument of a one-parameter varargs function is that list.
        variadic = rest[0] if fixed == 0 and len(rest) == 1 and type(rest[0]) is list else rest
        return _invoke(impl, [*values[:fixed], variadic])

    return evaluate


def _invoke(impl: Callable[..., Any], arguments: list[Any]) -> Any:
    try:
        return impl(*arguments)
    except (*ARITHMETIC_ERRORS, re.error):
        # A built-in that cannot complete gives null, as in feel-scala.
        return None


def _unknown_function(name: str) -> str:
    reason = UNSUPPORTED.get(name)
    if reason is not None:
        return f"the function '{name}' is not supported: {reason}"
    message = f"unknown function '{name}'"
    similar = difflib.get_close_matches(name, list(FUNCTIONS), n=3)
    if similar:
        message += " (did you mean " + " or ".join(f"'{s}'" for s in similar) + "?)"
    return message


def _no_overload(name: str, overloads: list[Overload], given: str) -> str:
    known = "; ".join(o.signature() for o in overloads)
    return f"function '{name}' takes no {given}; it is called as {known}"


_TYPE_ALIASES: Final = {
    "date time": "date and time",
    "year-month-duration": "years and months duration",
    "day-time-duration": "days and time duration",
}
