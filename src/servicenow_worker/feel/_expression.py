"""Compiled expressions and the compile cache."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from servicenow_worker.feel._compiler import Evaluator, Scope, compile_tree
from servicenow_worker.feel._errors import FeelEvaluationError, FeelSyntaxError
from servicenow_worker.feel._parser import parse
from servicenow_worker.feel._values import from_json, to_json_value

# Expressions come from task headers, so there are few distinct ones; the bound only keeps
# a process that is fed many from growing without limit.
CACHE_SIZE: Final = 1024


class Expression:
    """A FEEL expression parsed and compiled once; evaluate it as often as needed."""

    __slots__ = ("_evaluator", "text")

    def __init__(self, text: str, evaluator: Evaluator) -> None:
        self.text = text
        self._evaluator = evaluator

    def evaluate(self, context: Mapping[str, Any] | None = None) -> Any:
        """The value of the expression for these variables, as plain JSON-like Python.

        `context` holds JSON-like values (dict, list, str, int, float, bool, None). Faults FEEL
        defines as null give None; FeelEvaluationError is raised for the others.
        """
        try:
            scope = Scope(from_json(context) if context else {})
            return to_json_value(self._evaluator(scope))
        except FeelEvaluationError as error:
            if error.expression is not None:
                raise
            raise FeelEvaluationError(str(error), expression=self.text) from error
        except RecursionError:
            raise FeelEvaluationError(
                "the expression or its data is nested too deeply", expression=self.text
            ) from None

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


@lru_cache(maxsize=CACHE_SIZE)
def compile_expression(text: str) -> Expression:
    """Parse and compile a FEEL expression; the same text gives the same Expression object.

    A leading `=` (as the Camunda Modeler writes FEEL) is accepted. Raises FeelSyntaxError
    (with line and column) for text that is not FEEL, and its subclass FeelUnsupportedError
    for FEEL outside the supported subset, including a call of an unknown function.
    """
    source = _without_equals_sign(text)
    try:
        evaluator = compile_tree(parse(source), text)
    except FeelSyntaxError as error:
        # Quote the text as given, with its `=`.
        raise type(error)(
            error.reason, expression=text, line=error.line, column=error.column
        ) from None
    except RecursionError:
        raise FeelSyntaxError(
            "the expression is nested too deeply", expression=text, line=1, column=1
        ) from None
    return Expression(text, evaluator)


def _without_equals_sign(text: str) -> str:
    """The text with a leading `=` blanked out, so positions still count from the original."""
    stripped = text.lstrip()
    if not stripped.startswith("="):
        return text
    index = len(text) - len(stripped)
    return text[:index] + " " + text[index + 1 :]
