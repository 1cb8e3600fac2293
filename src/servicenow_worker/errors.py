"""Why a job did not succeed, as the worker's own exception tree.

    WorkerError                      every failure of a job; its message never holds a credential
    ├── InputError                   the job's inputs are wrong: fail with retries 0, nothing sent
    ├── ExpressionFailed             resultExpression failed: retries 0
    ├── ResultTooLarge               the answer would not fit into Zeebe's variables: retries 0
    ├── TooManyRecords               read with returnAll matched more than maxRecords: retries 0
    ├── ServiceNowRejected           ServiceNow answered 4xx (not 408/429): fail with retries 0
    ├── UnexpectedAnswer             ServiceNow answered, but not what the request asked for
    │                                (records outside a changes window): retries 0
    ├── AuthenticationFailed         ServiceNow's token endpoint refused the OAuth client or user:
    │                                fail with retries 0 (code AUTH_FAILED)
    ├── DocumentRefused              Camunda's document store refused a document for good
    │                                (unknown or expired, hash mismatch, too large, 4xx): retries 0
    └── ServiceNowUnavailable        408, 5xx, timeouts, dropped connections, non-JSON 200:
        │                            fail with retries - 1 after a back-off
        ├── ServiceNowThrottled      429, or no turn before the job's deadline (flow control):
        │                            fail with retries unchanged after a back-off
        └── DocumentStoreUnavailable the same faults of Camunda's document store

Each error carries the `code` that an `errorExpression` sees as `error.code`: the HTTP status as a
string, or one of the worker's own codes below.
"""

from typing import Any, Final

INVALID_INPUT: Final = "INVALID_INPUT"
TIMEOUT: Final = "TIMEOUT"
CONNECTION_ERROR: Final = "CONNECTION_ERROR"
INVALID_RESPONSE: Final = "INVALID_RESPONSE"
RESULT_TOO_LARGE: Final = "RESULT_TOO_LARGE"
AUTH_FAILED: Final = "AUTH_FAILED"
DOCUMENT_NOT_FOUND: Final = "DOCUMENT_NOT_FOUND"
DOCUMENT_HASH_MISMATCH: Final = "DOCUMENT_HASH_MISMATCH"
DOCUMENT_REFUSED: Final = "DOCUMENT_REFUSED"
FILE_TOO_LARGE: Final = "FILE_TOO_LARGE"
TOO_MANY_ATTACHMENTS: Final = "TOO_MANY_ATTACHMENTS"
NOT_CONFIGURED: Final = "NOT_CONFIGURED"
TOO_MANY_RECORDS: Final = "TOO_MANY_RECORDS"
BATCH_UNSERVICED: Final = "BATCH_UNSERVICED"
#: The worker held the request back (flow control, docs/contract.md §12) until the job's deadline.
THROTTLED: Final = "THROTTLED"


class WorkerError(Exception):
    """A job's failure, with a message fit for an incident and the code for `errorExpression`."""

    code: str = INVALID_INPUT

    def __init__(self, message: str, *, variables: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.variables: dict[str, Any] = variables or {}


class InputError(WorkerError):
    """An input is missing or invalid; `field` names it. No request was sent."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class ExpressionFailed(WorkerError):
    """resultExpression did not parse, failed, or gave something other than a context."""


class ResultTooLarge(WorkerError):
    """ServiceNow answered, but the variables would exceed what Zeebe accepts in one message."""

    code = RESULT_TOO_LARGE


class TooManyRecords(WorkerError):
    """More records match than the job may gather (`maxRecords`); nothing past that was fetched."""

    code = TOO_MANY_RECORDS


class ServiceNowRejected(WorkerError):
    """ServiceNow refused the request for good (4xx other than 408 and 429)."""

    def __init__(self, status: int, message: str, *, variables: dict[str, Any]) -> None:
        super().__init__(message, variables=variables)
        self.status = status
        self.code = str(status)


class UnexpectedAnswer(WorkerError):
    """ServiceNow's answer contradicts the request (a retry would get the same): retries 0."""

    code = INVALID_RESPONSE


class AuthenticationFailed(WorkerError):
    """ServiceNow's token endpoint (`/oauth_token.do`) refused the grant: a retry cannot fix it."""

    code = AUTH_FAILED

    def __init__(self, message: str, *, status: int, variables: dict[str, Any]) -> None:
        super().__init__(message, variables=variables)
        self.status = status


class ServiceNowUnavailable(WorkerError):
    """A fault that may pass: the job is retried, after `retry_after` seconds when ServiceNow said."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        variables: dict[str, Any] | None = None,
        never_sent: bool = False,
    ) -> None:
        super().__init__(message, variables=variables)
        self.code = code
        self.status = status
        self.retry_after = retry_after
        # True when the request certainly never reached ServiceNow (no connection was made).
        self.never_sent = never_sent


class DocumentRefused(WorkerError):
    """Camunda's document store refused the document for good, or a file exceeds a limit."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message, variables={"status": status} if status is not None else None)
        self.code = code
        self.status = status


class DocumentStoreUnavailable(ServiceNowUnavailable):
    """Camunda's document store failed in a way that may pass (5xx, timeouts, broken streams)."""


class ServiceNowThrottled(ServiceNowUnavailable):
    """ServiceNow is busy: it answered 429, or the request's turn did not come before the job's
    deadline. The job is retried without spending one of its retries (docs/contract.md §12)."""
