"""Text to syntax tree: lark's LALR(1) parser over `_grammar.lark`, with FEEL-aware errors."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from importlib.resources import files
from typing import Any, Final, NoReturn, cast

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from servicenow_worker.feel import _ast as ast
from servicenow_worker.feel._errors import FeelSyntaxError, FeelUnsupportedError
from servicenow_worker.feel._temporal import parse_temporal_literal
from servicenow_worker.feel._values import number

# The shift/reduce conflicts of the grammar, as lark reports them (terminal, rule that could be
# reduced instead). Lark resolves each as shift, which is the greedy reading feel-scala's PEG
# parser takes: the right side of `in`, and an `else` branch, extend over a following `and`/`or`.
# A test keeps this set equal to what lark reports, so a grammar change cannot add a silent one.
EXPECTED_CONFLICTS: Final = frozenset(
    {
        "AND disjunction : conjunction",
        "AND disjunction : disjunction OR conjunction",
        "AND disjunction_np : conjunction_np",
        "AND disjunction_np : disjunction_np OR conjunction",
        "OR expression : disjunction",
        "OR expression_np : disjunction_np",
    }
)


@cache
def _parser() -> Lark:
    grammar = files("servicenow_worker.feel").joinpath("_grammar.lark").read_text("utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=False,
        transformer=_ToAst(),
    )


def parse(text: str) -> ast.Node:
    """Parse a FEEL expression (a leading `=` already blanked out) into a syntax tree."""
    if not text.strip():
        raise FeelSyntaxError("empty FEEL expression", expression=text, line=1, column=1)
    try:
        tree = cast(ast.Node, _parser().parse(text))
    except VisitError as error:  # lark may wrap what a transformer callback raised
        if isinstance(error.orig_exc, _Located):
            raise error.orig_exc.error(text) from None
        raise
    except _Located as located:
        raise located.error(text) from None
    except UnexpectedInput as error:
        raise _syntax_error(error, text) from None
    return tree


class _Located(Exception):
    """A fault found while building the tree; `parse` turns it into a FeelSyntaxError."""

    def __init__(self, kind: type[FeelSyntaxError], message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.kind, self.message, self.line, self.column = kind, message, line, column

    def error(self, text: str) -> FeelSyntaxError:
        return self.kind(self.message, expression=text, line=self.line, column=self.column)


def _fail(kind: type[FeelSyntaxError], message: str, line: int, column: int) -> NoReturn:
    raise _Located(kind, message, line, column)


def _syntax_error(error: UnexpectedInput, text: str) -> FeelSyntaxError:
    line, column = error.line, error.column
    if isinstance(error, UnexpectedCharacters):
        message = f"unexpected character {text[error.pos_in_stream or 0]!r}"
    elif isinstance(error, UnexpectedToken) and error.token.type != "$END":
        message = f"unexpected {error.token.value!r}" + _expected(error.accepts or error.expected)
    else:
        message = "unexpected end of expression"
        if isinstance(error, UnexpectedToken | UnexpectedEOF):
            message += _expected(getattr(error, "accepts", None) or error.expected)
        line, column = _end_position(text)
    if line < 1:  # lark gives -1 for the end of input
        line, column = _end_position(text)
    return FeelSyntaxError(message, expression=text, line=line, column=column)


def _end_position(text: str) -> tuple[int, int]:
    body = text.rstrip()
    lines = body.split("\n")
    return len(lines), len(lines[-1]) + 1


def _expected(names: Any) -> str:
    readable = sorted({text for name in names or () if (text := _readable(str(name)))})
    if not readable or len(readable) > 12:
        return ""
    return " (expected " + ", ".join(readable) + ")"


_TERMINAL_TEXT: Final = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "FUNCTION_NAME": "a function name",
    "PARAMETER_NAME": "a parameter name",
    "TIME_OFFSET": "a property",
    "INTERVAL_OPEN_END": "'['",
    "$END": "end of expression",
}


def _readable(terminal: str) -> str | None:
    if terminal in _TERMINAL_TEXT:
        return _TERMINAL_TEXT[terminal]
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:
        return None
    return repr(pattern.value) if pattern.type == "str" else None


def _position(token: Token) -> ast.Position:
    return ast.Position(token.line or 1, token.column or 1)


_ESCAPE: Final = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{6}|.)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
}


def _unescape(raw: str) -> str:
    """The value of a string literal; unknown escapes (a regex's `\\d`) stay as written."""

    def replace(match: re.Match[str]) -> str:
        code = match[1]
        if code[0] in "uU" and len(code) > 1:
            return chr(int(code[1:], 16))
        return _SIMPLE_ESCAPES.get(code, "\\" + code)

    return _ESCAPE.sub(replace, raw[1:-1])


def _name(token: Token) -> str:
    text = str(token)
    return text[1:-1] if text.startswith("`") else text


def _words(token: Token) -> str:
    """A name with spaces, its words joined by single spaces."""
    return " ".join(str(token).split())


@v_args(inline=True)
class _ToAst(Transformer[Token, ast.Node]):
    """Builds `_ast` nodes while lark parses (one pass, no intermediate tree)."""

    # ---- textual expressions

    def if_expr(self, condition: ast.Node, then: ast.Node, otherwise: ast.Node) -> ast.Node:
        return ast.If(condition, then, otherwise)

    def for_expr(self, iterators: tuple[ast.Iterator, ...], body: ast.Node) -> ast.Node:
        return ast.For(iterators, body)

    def quantified(
        self, quantifier: str, iterators: tuple[ast.Iterator, ...], condition: ast.Node
    ) -> ast.Node:
        return ast.Quantified(quantifier == "every", iterators, condition)

    def quantifier(self, token: Token) -> str:
        return str(token)

    def iterators(self, *iterators: ast.Iterator) -> tuple[ast.Iterator, ...]:
        return iterators

    def list_iterator(self, name: str, source: ast.Node) -> ast.Iterator:
        return ast.Iterator(name, source, None)

    def range_iterator(self, name: str, start: ast.Node, end: ast.Node) -> ast.Iterator:
        return ast.Iterator(name, start, end)

    def function_def(self, keyword: Token, *_rest: Any) -> NoReturn:
        _fail(
            FeelUnsupportedError,
            "function definitions (`function(x) …`) are not supported",
            keyword.line or 1,
            keyword.column or 1,
        )

    def or_(self, left: ast.Node, right: ast.Node) -> ast.Node:
        return ast.Disjunction(left, right)

    def and_(self, left: ast.Node, right: ast.Node) -> ast.Node:
        return ast.Conjunction(left, right)

    # ---- comparisons and unary tests

    def compare(self, left: ast.Node, operator: Token, right: ast.Node) -> ast.Node:
        return ast.Comparison(str(operator), left, right)

    def compare_op(self, token: Token) -> Token:
        return token

    def unary_op(self, token: Token) -> Token:
        return token

    def between(self, value: ast.Node, low: ast.Node, high: ast.Node) -> ast.Node:
        return ast.Between(value, low, high)

    def in_(self, value: ast.Node, test: ast.Node) -> ast.Node:
        return ast.In(value, test)

    def instance_of(self, value: ast.Node, type_name: str) -> ast.Node:
        return ast.InstanceOf(value, type_name)

    def type_name(self, *names: str | Token) -> str:
        return ".".join(_words(n) if isinstance(n, Token) else n for n in names)

    def unary_compare(self, operator: Token, operand: ast.Node) -> ast.Node:
        return ast.UnaryComparison(str(operator), operand, _position(operator))

    def interval(
        self, start: Token, low: ast.Node, _dots: Token, high: ast.Node, end: str
    ) -> ast.Node:
        return ast.Interval(low, high, start == "[", end == "]", _position(start))

    def interval_end(self, token: Token) -> str:
        return str(token)

    def test_list(self, tests: tuple[ast.Node, ...]) -> ast.Node:
        return ast.TestList(tests)

    def positive_unary_tests(self, *tests: ast.Node) -> tuple[ast.Node, ...]:
        return tests

    def input_equals(self, value: ast.Node) -> ast.Node:
        return ast.InputEquals(value)

    # ---- arithmetic

    def add(self, left: ast.Node, right: ast.Node) -> ast.Node:
        return ast.Arithmetic("+", left, right)

    def sub(self, left: ast.Node, right: ast.Node) -> ast.Node:
        return ast.Arithmetic("-", left, right)

    def mul(self, left: ast.Node, right: ast.Node) -> ast.Node:
        return ast.Arithmetic("*", left, right)

    def div(self, left: ast.Node, right: ast.Node) -> ast.Node:
        return ast.Arithmetic("/", left, right)

    def pow(self, left: ast.Node, right: ast.Node) -> ast.Node:
        return ast.Arithmetic("**", left, right)

    def neg(self, operand: ast.Node) -> ast.Node:
        if isinstance(operand, ast.Literal) and type(operand.value) is Decimal:
            # A negative number literal, as feel-scala reads `-1`.
            return ast.Literal(-operand.value)
        return ast.Negation(operand)

    # ---- postfix

    def path(self, base: ast.Node, key: str) -> ast.Node:
        return ast.Path(base, key)

    def path_name(self, token: Token) -> str:
        return _words(token) if token.type == "TIME_OFFSET" else _name(token)

    def filter(self, base: ast.Node, condition: ast.Node) -> ast.Node:
        return ast.Filter(base, condition)

    def qualified_call(self, _base: ast.Node, name: Token, *_arguments: Any) -> NoReturn:
        _fail(
            FeelUnsupportedError,
            f"calling a function held by a context (`….{name}(…)`) is not supported",
            name.line or 1,
            name.column or 1,
        )

    # ---- primaries

    def number(self, token: Token) -> ast.Node:
        try:
            return ast.Literal(number(str(token)))
        except ArithmeticError:  # beyond the exponent range of 34-digit decimals
            _fail(FeelSyntaxError, "number out of range", token.line or 1, token.column or 1)

    def string(self, token: Token) -> ast.Node:
        return ast.Literal(_unescape(str(token)))

    def null(self) -> ast.Node:
        return ast.Literal(None)

    def boolean(self, token: Token) -> ast.Node:
        return ast.BooleanLiteral(str(token) == "true")

    def temporal(self, token: Token) -> ast.Node:
        text = _unescape(str(token))
        value = parse_temporal_literal(text)
        if value is None:
            _fail(
                FeelSyntaxError,
                f"invalid temporal literal @{token}",
                token.line or 1,
                max((token.column or 2) - 1, 1),
            )
        return ast.Literal(value)

    def input_value(self, token: Token) -> ast.Node:
        return ast.InputValue(_position(token))

    def variable(self, name: str) -> ast.Node:
        return ast.Variable(name)

    def name(self, token: Token) -> str:
        return _name(token)

    def list(self, *items: ast.Node | Token) -> ast.Node:
        # `[]` arrives as one EMPTY_LIST token
        return ast.ListLiteral(tuple(i for i in items if isinstance(i, ast.Node)))

    def context(self, *entries: tuple[str, ast.Node]) -> ast.Node:
        return ast.ContextLiteral(entries)

    def context_entry(self, key: str | Token, value: ast.Node) -> tuple[str, ast.Node]:
        if isinstance(key, Token):  # a string literal key
            return _unescape(str(key)), value
        return key, value

    def call(self, function: Token, arguments: Any = None) -> ast.Node:
        name = _words(function) if function.type == "FUNCTION_NAME" else _name(function)
        position = _position(function)
        if arguments is None:
            return ast.Call(name, (), None, position)
        kind, values = arguments
        if kind == "named":
            return ast.Call(name, (), values, position)
        return ast.Call(name, values, None, position)

    def function_name(self, token: Token) -> Token:
        return token

    def positional_arguments(self, *values: ast.Node) -> tuple[str, tuple[ast.Node, ...]]:
        return "positional", values

    def named_arguments(
        self, *values: tuple[str, ast.Node]
    ) -> tuple[str, tuple[tuple[str, ast.Node], ...]]:
        return "named", values

    def named_argument(self, name: Token, value: ast.Node) -> tuple[str, ast.Node]:
        return (_words(name) if name.type == "PARAMETER_NAME" else _name(name)), value
