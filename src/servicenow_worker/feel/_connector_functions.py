"""Camunda's connector functions for `errorExpression`, and what the worker makes of them.

As in Camunda's connector runtime (connector-feel `BpmnErrorFunction`, `JobErrorFunction`,
`IgnoreErrorFunction`), each function returns a context tagged by `errorType`:

    bpmnError(errorCode[, errorMessage[, variables]])
        {errorType: "bpmnError", errorCode, errorMessage?, variables?}
    jobError(errorMessage[, variables[, retries[, retryBackoff]]])
        {errorType: "jobError", errorMessage, variables ({}), retries (0), retryBackoff (PT0S)}
    ignoreError([variables])
        {errorType: "ignoreError", variables?}

`interpret_error_expression_result` turns what an errorExpression gave (after
`Expression.evaluate`) into a typed request, or None for "no error" (null or `{}`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final, NoReturn

from servicenow_worker.feel._errors import ErrorExpressionResultError, FeelEvaluationError
from servicenow_worker.feel._registry import function
from servicenow_worker.feel._temporal import parse_duration
from servicenow_worker.feel._values import YearMonthDuration, feel_type_name, number

ERROR_TYPE: Final = "errorType"
BPMN_ERROR: Final = "bpmnError"
JOB_ERROR: Final = "jobError"
IGNORE_ERROR: Final = "ignoreError"


@dataclass(frozen=True, slots=True)
class BpmnErrorRequest:
    """`bpmnError(…)`: throw a BPMN error the process can catch by `code`."""

    code: str
    message: str = ""
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobErrorRequest:
    """`jobError(…)`: fail the job with `retries` as its new count, retried after the backoff."""

    message: str
    variables: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    retry_backoff: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class IgnoreErrorRequest:
    """`ignoreError(…)`: complete the job with these variables only."""

    variables: dict[str, Any] = field(default_factory=dict)


ConnectorError = BpmnErrorRequest | JobErrorRequest | IgnoreErrorRequest


# ================================================================ the FEEL functions


def _argument_error(function_name: str, parameter: str, expected: str, value: Any) -> NoReturn:
    raise FeelEvaluationError(
        f"parameter '{parameter}' of function '{function_name}' must be {expected}, "
        f"got {feel_type_name(value)}"
    )


def _string(function_name: str, parameter: str, value: Any, *, required: bool) -> str | None:
    if type(value) is str or (value is None and not required):
        return value
    _argument_error(function_name, parameter, "a string", value)


def _context(function_name: str, value: Any) -> dict[str, Any] | None:
    if value is None or type(value) is dict:
        return value
    _argument_error(function_name, "variables", "a context", value)


@function(BPMN_ERROR, "errorCode")
def _bpmn_error_code(code: Any) -> dict[str, Any]:
    return _bpmn_error(code, None, None)


@function(BPMN_ERROR, "errorCode", "errorMessage")
def _bpmn_error_message(code: Any, message: Any) -> dict[str, Any]:
    return _bpmn_error(code, message, None)


@function(BPMN_ERROR, "errorCode", "errorMessage", "variables")
def _bpmn_error(code: Any, message: Any, variables: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        ERROR_TYPE: BPMN_ERROR,
        "errorCode": _string(BPMN_ERROR, "errorCode", code, required=True),
    }
    if message is not None:
        result["errorMessage"] = _string(BPMN_ERROR, "errorMessage", message, required=True)
    checked = _context(BPMN_ERROR, variables)
    if checked is not None:
        result["variables"] = checked
    return result


@function(JOB_ERROR, "errorMessage")
def _job_error_message(message: Any) -> dict[str, Any]:
    return _job_error(message, None, None, None)


@function(JOB_ERROR, "errorMessage", "variables")
def _job_error_variables(message: Any, variables: Any) -> dict[str, Any]:
    return _job_error(message, variables, None, None)


@function(JOB_ERROR, "errorMessage", "variables", "retries")
def _job_error_retries(message: Any, variables: Any, retries: Any) -> dict[str, Any]:
    return _job_error(message, variables, retries, None)


@function(JOB_ERROR, "errorMessage", "variables", "retries", "retryBackoff")
def _job_error(message: Any, variables: Any, retries: Any, backoff: Any) -> dict[str, Any]:
    if retries is not None and type(retries) is not Decimal:
        _argument_error(JOB_ERROR, "retries", "a number", retries)
    return {
        ERROR_TYPE: JOB_ERROR,
        "errorMessage": _string(JOB_ERROR, "errorMessage", message, required=True),
        "variables": _context(JOB_ERROR, variables) or {},
        "retries": number(0) if retries is None else retries,
        "retryBackoff": _backoff_argument(backoff),
    }


def _backoff_argument(value: Any) -> timedelta:
    """A duration value, or (beyond Camunda) its ISO-8601 text such as "PT3S"."""
    if value is None:
        return timedelta(0)
    parsed = parse_duration(value) if type(value) is str else value
    if type(parsed) is timedelta:
        return parsed
    return _argument_error(
        JOB_ERROR, "retryBackoff", 'a days-and-time duration (e.g. @"PT3S")', value
    )


@function(IGNORE_ERROR)
def _ignore_error() -> dict[str, Any]:
    return {ERROR_TYPE: IGNORE_ERROR}


@function(IGNORE_ERROR, "variables")
def _ignore_error_variables(variables: Any) -> dict[str, Any]:
    checked = _context(IGNORE_ERROR, variables)
    if checked is None:
        return _ignore_error()
    return {ERROR_TYPE: IGNORE_ERROR, "variables": checked}


# ================================================================ reading the result


def interpret_error_expression_result(value: Any) -> ConnectorError | None:
    """The connector error an errorExpression asked for, or None for no error (null or `{}`).

    `value` is what `Expression.evaluate` returned. Raises ErrorExpressionResultError when it is
    neither, or when a field has the wrong type (retries must be a whole number ≥ 0, the
    backoff a non-negative days-and-time duration such as `@"PT3S"` or `"PT3S"`).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ErrorExpressionResultError(
            "errorExpression must return a context (use bpmnError(), jobError() or "
            f"ignoreError()) or null, got {_describe(value)}"
        )
    if not value:
        return None
    error_type = value.get(ERROR_TYPE)
    reader = _READERS.get(error_type) if isinstance(error_type, str) else None
    if reader is None:
        raise ErrorExpressionResultError(
            "errorExpression returned a context that is no connector error: its 'errorType' "
            f"must be one of {', '.join(map(repr, _READERS))}, got {_describe(error_type)} "
            "(build it with bpmnError(), jobError() or ignoreError())"
        )
    return reader(value)


def _read_bpmn_error(value: Mapping[str, Any]) -> BpmnErrorRequest:
    code = value.get("errorCode", value.get("code"))
    if not isinstance(code, str) or not code:
        raise ErrorExpressionResultError(
            f"bpmnError needs a non-empty string code, got {_describe(code)}"
        )
    message = value.get("errorMessage", value.get("message"))
    if message is not None and not isinstance(message, str):
        raise ErrorExpressionResultError(
            f"the message of bpmnError must be a string, got {_describe(message)}"
        )
    return BpmnErrorRequest(code, message or "", _read_variables(BPMN_ERROR, value))


def _read_job_error(value: Mapping[str, Any]) -> JobErrorRequest:
    message = value.get("errorMessage", value.get("message"))
    if not isinstance(message, str):
        raise ErrorExpressionResultError(
            f"the message of jobError must be a string, got {_describe(message)}"
        )
    return JobErrorRequest(
        message,
        _read_variables(JOB_ERROR, value),
        _read_retries(value.get("retries", 0)),
        _read_backoff(value.get("retryBackoff")),
    )


def _read_ignore_error(value: Mapping[str, Any]) -> IgnoreErrorRequest:
    return IgnoreErrorRequest(_read_variables(IGNORE_ERROR, value))


def _read_variables(error_type: str, value: Mapping[str, Any]) -> dict[str, Any]:
    variables = value.get("variables")
    if variables is None:
        return {}
    if not isinstance(variables, Mapping) or not all(isinstance(k, str) for k in variables):
        raise ErrorExpressionResultError(
            f"the variables of {error_type} must be a context, got {_describe(variables)}"
        )
    return dict(variables)


def _read_retries(retries: Any) -> int:
    whole: int | None = None
    if isinstance(retries, int) and not isinstance(retries, bool):
        whole = retries
    elif isinstance(retries, float | Decimal) and retries == retries // 1:
        whole = int(retries)
    if whole is None or whole < 0:
        raise ErrorExpressionResultError(
            f"the retries of jobError must be a whole number ≥ 0, got {_describe(retries)}"
        )
    return whole


def _read_backoff(backoff: Any) -> timedelta:
    parsed = parse_duration(backoff) if isinstance(backoff, str) else backoff
    if backoff is None:
        parsed = timedelta(0)
    if isinstance(parsed, YearMonthDuration) or not isinstance(parsed, timedelta):
        raise ErrorExpressionResultError(
            "the retryBackoff of jobError must be a days-and-time duration such as "
            f'@"PT3S", duration("PT3S") or "PT3S", got {_describe(backoff)}'
        )
    if parsed < timedelta(0):
        raise ErrorExpressionResultError(
            f"the retryBackoff of jobError must not be negative, got {_describe(backoff)}"
        )
    return parsed


_READERS: Final[dict[str, Callable[[Mapping[str, Any]], ConnectorError]]] = {
    BPMN_ERROR: _read_bpmn_error,
    JOB_ERROR: _read_job_error,
    IGNORE_ERROR: _read_ignore_error,
}


def _describe(value: Any) -> str:
    """A short, typed description of a value for messages (never the whole variables)."""
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"
