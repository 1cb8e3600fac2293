"""How a job ends: the one place that turns a response or an error into Zeebe's next command."""

import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final

from servicenow_worker import feel
from servicenow_worker.errors import (
    ExpressionFailed,
    ResultTooLarge,
    ServiceNowThrottled,
    ServiceNowUnavailable,
    WorkerError,
)
from servicenow_worker.inputs import OutputOptions
from servicenow_worker.operations.family import Answer
from servicenow_worker.secrets import ResolvedSecrets

# Zeebe keeps incident messages short; ours stay well under its limit.
MESSAGE_LIMIT: Final = 2000


@dataclass(frozen=True)
class Complete:
    """CompleteJob with these variables."""

    variables: dict[str, Any] = field(default_factory=dict)
    # The code of the worker error that led here (errors.py), whatever errorExpression made of it,
    # for the servicenow_worker_job_errors metric; None after a success. Zeebe is not told it.
    error_code: str | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class Fail:
    """FailJob: `retries` is the job's new count (0 raises an incident), after `backoff`."""

    message: str
    retries: int
    backoff: timedelta = timedelta(0)
    variables: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class ThrowError:
    """ThrowError: a BPMN error the process can catch by `code`."""

    code: str
    message: str
    variables: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = field(default=None, compare=False, kw_only=True)


Outcome = Complete | Fail | ThrowError


def for_response(
    response: Answer, options: OutputOptions, *, max_bytes: int, job_retries: int
) -> Outcome:
    """The outcome of a request that ServiceNow answered with success."""
    answer = response.as_variable()
    variables: dict[str, Any] = {}
    if options.result_variable:
        variables[options.result_variable] = answer
    if options.result_expression:
        variables.update(_result_expression_variables(options.result_expression, answer))
    if variables:
        _check_size(variables, response, max_bytes)
    completed = Complete(variables)
    if not options.error_expression:
        return completed
    scope = {**answer, "response": answer, "error": None, "job": {"retries": job_retries}}
    return _error_expression_outcome(options.error_expression, scope, completed)


def _result_expression_variables(expression: str, answer: dict[str, Any]) -> dict[str, Any]:
    """What resultExpression makes of the response: a context, whose entries become variables."""
    try:
        result = feel.compile_expression(expression).evaluate({**answer, "response": answer})
    except feel.FeelError as error:
        raise ExpressionFailed(f"resultExpression failed: {error}") from None
    if not isinstance(result, dict):
        raise ExpressionFailed(
            f"resultExpression must give a context such as {{number: result.number}}, "
            f"got {_feel_type(result)}: {expression}"
        )
    return result


def _error_expression_outcome(expression: str, scope: dict[str, Any], default: Outcome) -> Outcome:
    """What errorExpression decides: a BPMN error, a job error, ignoring the error, or the default."""
    try:
        request = feel.interpret_error_expression_result(
            feel.compile_expression(expression).evaluate(scope)
        )
    except feel.FeelError as error:
        return Fail(_limited(f"errorExpression failed: {error}"), retries=0)
    match request:
        case feel.BpmnErrorRequest(code=code, message=message, variables=variables):
            return ThrowError(code, _limited(message), variables)
        case feel.JobErrorRequest(
            message=message, variables=variables, retries=retries, retry_backoff=backoff
        ):
            return Fail(_limited(message), retries=retries, backoff=backoff, variables=variables)
        case feel.IgnoreErrorRequest(variables=variables):
            return Complete(variables)
        case None:
            return default


def _feel_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_size(variables: dict[str, Any], response: Answer, max_bytes: int) -> None:
    # Zeebe would refuse the completion (RESOURCE_EXHAUSTED) again at every retry: fail clearly.
    # Escaping can make the variables up to six times the body; measure only when that could matter.
    if response.body_bytes * 6 < max_bytes:
        return
    size = len(json.dumps(variables))
    if size > max_bytes:
        raise ResultTooLarge(
            f"the response is {size} bytes as process variables, more than Zeebe takes "
            f"({max_bytes}, setting WORKER_MAX_RESULT_BYTES): ask for fewer records (limit) "
            "or fewer fields (fields)"
        )


def for_error(
    error: WorkerError, *, job_retries: int, options: OutputOptions | None, retry_after_cap: float
) -> Outcome:
    """The outcome of a failed job: retries 0 for what a retry cannot fix, else retries - 1;
    unless errorExpression decides otherwise."""
    default = _default_failure(error, job_retries, options, retry_after_cap)
    if options is None or not options.error_expression:
        return replace(default, error_code=error.code)
    scope = {
        "error": {
            "code": error.code,
            "message": error.message,
            "type": type(error).__name__,
            "variables": error.variables,
        },
        "job": {"retries": job_retries},
    }
    decided = _error_expression_outcome(options.error_expression, scope, default)
    return replace(decided, error_code=error.code)


def _default_failure(
    error: WorkerError, job_retries: int, options: OutputOptions | None, retry_after_cap: float
) -> Fail:
    if not isinstance(error, ServiceNowUnavailable):
        return Fail(_limited(error.message), retries=0)
    # A busy ServiceNow slows processes down; it never uses up their retries (docs/contract.md §12).
    throttled = isinstance(error, ServiceNowThrottled)
    retries = job_retries if throttled else max(job_retries - 1, 0)
    backoff = options.retry_backoff if options else timedelta(seconds=30)
    if error.retry_after is not None:
        backoff = max(backoff, timedelta(seconds=min(error.retry_after, retry_after_cap)))
    then = f"will be retried in {_seconds(backoff)}" if retries else "no retries left"
    if throttled:
        then = f"retries unchanged, {then}"
    return Fail(_limited(f"{error.message} ({then})"), retries=retries, backoff=backoff)


def masked(outcome: Outcome, secrets: ResolvedSecrets) -> Outcome:
    """The outcome with every secret value the job used replaced in its message."""
    if not secrets.values or isinstance(outcome, Complete):
        return outcome
    return replace(outcome, message=secrets.mask(outcome.message))


def _limited(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def _seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g} s"
