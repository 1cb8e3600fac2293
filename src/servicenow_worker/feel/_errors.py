"""The exceptions of the FEEL evaluator.

    FeelError
    ├── FeelSyntaxError          the text is not a FEEL expression (position of the fault given)
    │   └── FeelUnsupportedError valid FEEL, but outside the supported subset (or an unknown function)
    ├── FeelEvaluationError      evaluation failed in a way FEEL does not turn into null
    └── ErrorExpressionResultError
                                 an errorExpression gave something that is no connector error

Every message quotes the expression it is about, so a log line or an incident names it.
"""

from __future__ import annotations


class FeelError(Exception):
    """Base of every error this package raises."""


class FeelSyntaxError(FeelError):
    """The expression cannot be parsed; `line` and `column` (1-based) locate the fault."""

    def __init__(self, message: str, *, expression: str, line: int, column: int) -> None:
        super().__init__(_with_excerpt(message, expression, line, column))
        self.reason = message
        self.expression = expression
        self.line = line
        self.column = column


class FeelUnsupportedError(FeelSyntaxError):
    """The expression is FEEL, but uses something this evaluator does not support."""


class FeelEvaluationError(FeelError):
    """Evaluation failed (not one of the many faults FEEL answers with null)."""

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        text = message if expression is None else f"{message} (in FEEL expression {expression!r})"
        super().__init__(text)
        self.expression = expression


class ErrorExpressionResultError(FeelError):
    """An errorExpression returned a value that is neither "no error" nor a connector error."""


def _with_excerpt(message: str, expression: str, line: int, column: int) -> str:
    """The message, the expression and a caret under the faulty column."""
    lines = expression.splitlines() or [""]
    source_line = lines[min(max(line, 1), len(lines)) - 1]
    caret = " " * (max(column, 1) - 1) + "^"
    return (
        f"{message} at line {line}, column {column} of FEEL expression {expression!r}\n"
        f"    {source_line}\n    {caret}"
    )
