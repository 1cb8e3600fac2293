"""How a job ends: the one place that turns a response or an error into Zeebe's next command."""

import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final

from servicenow_worker.errors import ResultTooLarge, ServiceNowUnavailable, WorkerError
from servicenow_worker.inputs import OutputOptions
from servicenow_worker.secrets import ResolvedSecrets
from servicenow_worker.servicenow import TableResponse

# Zeebe keeps incident messages short; ours stay well under its limit.
MESSAGE_LIMIT: Final = 2000


@dataclass(frozen=True)
class Complete:
    """CompleteJob with these variables."""

    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    """FailJob: `retries` is the job's new count (0 raises an incident), after `backoff`."""

    message: str
    retries: int
    backoff: timedelta = timedelta(0)
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ThrowError:
    """ThrowError: a BPMN error the process can catch by `code`."""

    code: str
    message: str
    variables: dict[str, Any] = field(default_factory=dict)


Outcome = Complete | Fail | ThrowError


def for_response(response: TableResponse, options: OutputOptions, *, max_bytes: int) -> Outcome:
    """The outcome of a request that ServiceNow answered with success."""
    variables: dict[str, Any] = {}
    if options.result_variable:
        variables[options.result_variable] = response.as_variable()
        _check_size(variables, response, max_bytes)
    return Complete(variables)


def _check_size(variables: dict[str, Any], response: TableResponse, max_bytes: int) -> None:
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
    """The outcome of a failed job: retries 0 for what a retry cannot fix, else retries - 1."""
    if not isinstance(error, ServiceNowUnavailable):
        return Fail(_limited(error.message), retries=0)
    retries = max(job_retries - 1, 0)
    backoff = options.retry_backoff if options else timedelta(seconds=30)
    if error.retry_after is not None:
        backoff = max(backoff, timedelta(seconds=min(error.retry_after, retry_after_cap)))
    then = f"will be retried in {_seconds(backoff)}" if retries else "no retries left"
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
