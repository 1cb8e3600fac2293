"""The ServiceNow client: the one way to ServiceNow's HTTP APIs (Table, Aggregate, Batch).

`send` takes one `RecordRequest` (a Table API request) to a `TableResponse`; `call` takes any
`ApiCall` (method, URL, body, and how its successful answer is read) to what that answer becomes.
Both go through the same authentication, in-process retries and error translation. It knows
nothing of Zeebe. Every httpx exception and every unwelcome answer is translated here, and only
here, into the error tree of `errors.py`.
"""

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote, urlencode

import httpx
import stamina
import structlog

from servicenow_worker.auth import Authenticator, TokenCache
from servicenow_worker.errors import (
    CONNECTION_ERROR,
    INVALID_RESPONSE,
    THROTTLED,
    TIMEOUT,
    InputError,
    ServiceNowRejected,
    ServiceNowThrottled,
    ServiceNowUnavailable,
)
from servicenow_worker.flow_control import (
    Destination,
    FlowControl,
    FlowSettings,
    http_date,
    parse_retry_after,
)
from servicenow_worker.inputs import DestinationInputs, Operation, RecordRequest

log = structlog.get_logger(__name__)

METHODS: Final = {
    Operation.CREATE: "POST",
    Operation.READ: "GET",
    Operation.UPDATE: "PATCH",
    Operation.DELETE: "DELETE",
}
RETRYABLE_STATUSES: Final = frozenset({408, 429})
# glide.rest.max_content_length: ServiceNow rejects larger request bodies with a 400.
MAX_BODY_BYTES: Final = 10 * 1024 * 1024
DETAIL_LIMIT: Final = 300
# A Retry-After longer than this is not waited out in-process: the job is failed with that back-off.
IN_PROCESS_WAIT_LIMIT: Final = 5.0
JSON_HEADERS: Final = {"Accept": "application/json"}
BODY_HEADERS: Final = {"Accept": "application/json", "Content-Type": "application/json"}


Answer = TypeVar("Answer")


@dataclass(frozen=True)
class ApiCall(Generic[Answer]):
    """One HTTP request to ServiceNow, whichever API, and what its answer becomes.

    `answer` reads the response (any status: it raises the worker's errors for the unwelcome
    ones, see `checked`); `what` names the request in messages ("read on incident").
    """

    method: str
    url: str
    what: str
    answer: Callable[[httpx.Response], Answer]
    body: bytes | None = None


@dataclass(frozen=True)
class TableResponse:
    """What ServiceNow answered, as the job's response variable shows it (docs/contract.md §4)."""

    status: int
    result: Any
    is_list: bool = False
    total_count: int | None = None
    has_more: bool = False
    deduplicated: bool = False
    # Size of the body ServiceNow sent: a cheap bound on the size of the variables it becomes.
    body_bytes: int = 0
    # ServiceNow's own clock when it answered (its `Date` header), None when it sent none.
    server_time: datetime | None = None
    # read with returnAll: how many pages it took (docs/contract.md §9)
    pages: int | None = None

    def as_variable(self) -> dict[str, Any]:
        variable: dict[str, Any] = {"status": self.status, "result": self.result}
        if self.deduplicated:
            variable["deduplicated"] = True
        if self.is_list:
            variable["count"] = len(self.result) if isinstance(self.result, list) else 0
            variable["totalCount"] = self.total_count
            variable["hasMore"] = self.has_more
        if self.pages is not None:
            variable["pages"] = self.pages
        return variable


@dataclass(frozen=True)
class RetryPolicy:
    """In-process retries of one request, before the job itself is failed and retried by Zeebe."""

    attempts: int = 3
    wait_initial: float = 0.2
    wait_max: float = IN_PROCESS_WAIT_LIMIT


class TableClient:
    """Sends Table API requests over one shared, pooled `httpx.AsyncClient`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        retry: RetryPolicy,
        attempt_timeout: float,
        authenticator: Authenticator | None = None,
        flow: FlowControl | None = None,
    ) -> None:
        self._http = http
        self._retry = retry
        # The composition root passes one with the worker's token cache; tests may leave it out.
        self._authenticator = authenticator or Authenticator(http, TokenCache())
        # The composition root's, with the worker's settings and metrics.
        self._flow = flow or FlowControl(FlowSettings())
        # The longest one attempt can take (connect + read timeouts): no attempt starts unless it
        # can finish before the job's deadline.
        self._attempt_timeout = attempt_timeout

    async def send(self, request: RecordRequest, *, deadline: float) -> TableResponse:
        """Send one Table API request (see `call`)."""
        call = ApiCall(
            METHODS[request.operation],
            build_url(request),
            f"{request.operation} on {request.table}",
            partial(table_response, request),
            encoded_payload(request),
        )
        return await self.call(request, call, deadline=deadline)

    async def call(
        self, destination: DestinationInputs, call: ApiCall[Answer], *, deadline: float
    ) -> Answer:
        """Send `call` to `destination`'s instance as its user, retrying in-process where that is
        safe, until `deadline` (monotonic)."""
        method, body = call.method, call.body
        # Once per job, not per attempt: the credential headers and (OAuth) the token flow.
        credentials = self._authenticator.credentials(destination)
        headers = {**(BODY_HEADERS if body is not None else JSON_HEADERS), **credentials.headers}
        target = self._flow.destination(destination.base_url, credentials.identity)
        answer_lost = False
        budget = deadline - time.monotonic() - self._attempt_timeout - self._retry.wait_max
        retrying = stamina.retry_context(
            on=lambda error: self._may_retry(method, error),
            attempts=self._retry.attempts if budget > 0 else 1,
            timeout=budget if budget > 0 else None,
            wait_initial=self._retry.wait_initial,
            wait_max=self._retry.wait_max,
            wait_jitter=self._retry.wait_initial,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await self._send_once(call, headers, credentials.flow, target, deadline)
                except ServiceNowRejected as rejected:
                    if method == "DELETE" and rejected.status == 404 and answer_lost:
                        # The earlier attempt deleted it; only its answer was lost.
                        log.info("delete_already_done", what=call.what)
                        return call.answer(httpx.Response(204))
                    raise
                except ServiceNowUnavailable as unavailable:
                    answer_lost = answer_lost or not unavailable.never_sent
                    raise
        raise AssertionError("unreachable: stamina raises the last error")  # pragma: no cover

    def _may_retry(self, method: str, error: Exception) -> bool | float:
        """Whether (and when) to try again: never a create that ServiceNow may have taken."""
        if not isinstance(error, ServiceNowUnavailable) or error.code == THROTTLED:
            return False  # THROTTLED: the job's deadline came first
        retry_after = error.retry_after
        if retry_after is not None and retry_after > IN_PROCESS_WAIT_LIMIT:
            return False
        certainly_not_processed = error.status in {429, 503} and retry_after is not None
        if method == "POST" and not (certainly_not_processed or error.never_sent):
            return False
        return retry_after if retry_after is not None else True

    async def _send_once(
        self,
        call: ApiCall[Answer],
        headers: dict[str, str],
        auth: httpx.Auth | None,
        target: Destination,
        deadline: float,
    ) -> Answer:
        # Every request to ServiceNow is sent here, in its destination's turn (flow_control.py),
        # which it waits for only as long as the answer could still come before `deadline`.
        turn = await target.turn(deadline - self._attempt_timeout)
        with turn, _translate_transport_errors():
            response = await self._http.request(
                call.method, call.url, content=call.body, headers=headers, auth=auth
            )
            turn.answered(response.status_code, response.headers)
        return call.answer(response)


def stored_value(record: dict[str, Any], field: str) -> Any:
    """A field's stored value in a record as ServiceNow returned it: with displayValue=all every
    field is {"display_value": …, "value": …}."""
    value = record.get(field)
    return value.get("value") if isinstance(value, dict) else value


def encoded_payload(request: RecordRequest, max_bytes: int = MAX_BODY_BYTES) -> bytes | None:
    """The JSON body of a create or update, refused before sending when ServiceNow would refuse it
    (more than `max_bytes`: 10 MB for a request, 5 MB for one request of a batch)."""
    if request.operation not in {Operation.CREATE, Operation.UPDATE}:
        return None
    body = json.dumps(request.payload, ensure_ascii=False).encode()
    if len(body) > max_bytes:
        raise InputError(
            "payload",
            f"is {len(body)} bytes of JSON; ServiceNow accepts at most {max_bytes} bytes "
            f"({max_bytes // 2**20} MB) in one request: split the data or attach large content "
            "as a file",
        )
    return body


def build_url(request: RecordRequest) -> str:
    """`<base>/api/now/table/<table>[/<sys_id>]?sysparm_…`, every part encoded."""
    return request.base_url + relative_url(request)


def relative_url(request: RecordRequest) -> str:
    """`/api/now/table/<table>[/<sys_id>]?sysparm_…`, every part encoded."""
    path = f"/api/now/table/{request.table}"
    if request.sys_id is not None:
        path += "/" + quote(request.sys_id, safe="")
    params: dict[str, str] = {}
    if request.operation is not Operation.DELETE:
        if request.fields:
            params["sysparm_fields"] = ",".join(request.fields)
        if request.display_value is not None:
            params["sysparm_display_value"] = request.display_value
        if request.exclude_reference_link is not None:
            params["sysparm_exclude_reference_link"] = str(request.exclude_reference_link).lower()
    if request.operation is Operation.READ and request.sys_id is None:
        if request.query is not None:
            params["sysparm_query"] = request.query
        params["sysparm_limit"] = str(request.limit)
        params["sysparm_offset"] = str(request.offset)
    return path + query_string(params)


def query_string(params: dict[str, str]) -> str:
    """`?name=value&…` ("" for none); quote, not quote_plus: a space in a query stays a space
    (%20) whatever the server's decoder."""
    return f"?{urlencode(params, quote_via=quote)}" if params else ""


@contextmanager
def _translate_transport_errors() -> Iterator[None]:
    try:
        yield
    except (httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        raise _unreachable(TIMEOUT, "timed out connecting to ServiceNow", error) from None
    except httpx.ConnectError as error:
        raise _unreachable(CONNECTION_ERROR, "could not connect to ServiceNow", error) from None
    except httpx.TimeoutException:
        raise ServiceNowUnavailable(
            TIMEOUT, "ServiceNow did not answer within the read timeout"
        ) from None
    except httpx.TransportError as error:
        raise ServiceNowUnavailable(
            CONNECTION_ERROR, f"the connection to ServiceNow broke ({type(error).__name__})"
        ) from None


def _unreachable(code: str, message: str, error: Exception) -> ServiceNowUnavailable:
    return ServiceNowUnavailable(code, f"{message} ({type(error).__name__})", never_sent=True)


def checked(what: str, response: httpx.Response) -> httpx.Response:
    """`response` when it is a success (2xx), else the worker's error for it."""
    status = response.status_code
    if 300 <= status < 400:
        raise ServiceNowUnavailable(
            INVALID_RESPONSE,
            f"ServiceNow redirected {what} to "
            f"{response.headers.get('Location', 'another page')}: the instance may be hibernating "
            "(wake it at developer.servicenow.com) or the URL may be wrong",
            status=status,
        )
    if status >= 400:
        raise status_error(what, response)
    return response


def table_response(request: RecordRequest, response: httpx.Response) -> TableResponse:
    """ServiceNow's answer to a Table API request, or the worker's error for it."""
    status = checked(f"{request.operation} on {request.table}", response).status_code
    if status == 204 or not response.content:
        return TableResponse(status=status, result=None)
    body = json_body(f"{request.operation} on {request.table}", response)
    is_list = request.operation is Operation.READ and request.sys_id is None
    if not is_list:
        return TableResponse(status=status, result=body["result"], body_bytes=len(response.content))
    total = response.headers.get("X-Total-Count")
    total_count = int(total) if total is not None and total.isdigit() else None
    return TableResponse(
        status=status,
        result=body["result"],
        is_list=True,
        total_count=total_count,
        has_more=_has_more(request, response, total_count),
        body_bytes=len(response.content),
        server_time=http_date(response.headers.get("Date")),
    )


def json_body(where: str, response: httpx.Response, key: str = "result") -> dict[str, Any]:
    """The JSON object of a successful answer, which must hold `key` and no `error`."""
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type.lower():
        hibernating = b"Hibernating" in response.content[:4096]
        hint = (
            "the instance is hibernating: wake it at developer.servicenow.com"
            if hibernating
            else "a proxy or login page may stand in front of the instance"
        )
        raise ServiceNowUnavailable(
            INVALID_RESPONSE,
            f"ServiceNow answered {response.status_code} with {content_type or 'no content type'}, "
            f"not JSON, to {where}: {hint}",
            status=response.status_code,
        )
    try:
        body = json.loads(response.content)
    except ValueError:
        raise ServiceNowUnavailable(
            INVALID_RESPONSE,
            f"ServiceNow's answer to {where} is not complete JSON (cut off, "
            "often a transaction cancelled after 60 s: narrow the query or lower limit)",
            status=response.status_code,
        ) from None
    if not isinstance(body, dict) or key not in body or "error" in body:
        raise ServiceNowUnavailable(
            INVALID_RESPONSE,
            f"ServiceNow's answer to {where} holds no {key}{_error_text(body)}",
            status=response.status_code,
        )
    return body


def _has_more(request: RecordRequest, response: httpx.Response, total: int | None) -> bool:
    # Link's rel="next" is ServiceNow's own word; a page can be short (ACLs filter after the
    # limit), so its length says nothing.
    if 'rel="next"' in response.headers.get("Link", ""):
        return True
    return total is not None and request.offset + request.limit < total


def status_error(what: str, response: httpx.Response) -> ServiceNowRejected | ServiceNowUnavailable:
    """The worker's error for an answer of 400 or more."""
    status = response.status_code
    body = _parse_error_body(response)
    message = f"ServiceNow answered {status} to {what}{_error_text(body)}"
    variables = {"status": status, "body": body}
    if status in RETRYABLE_STATUSES or status >= 500:
        return (ServiceNowThrottled if status == 429 else ServiceNowUnavailable)(
            str(status),
            message,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            variables=variables,
        )
    return ServiceNowRejected(status, message, variables=variables)


def _parse_error_body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return response.text[:DETAIL_LIMIT] or None


def _error_text(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    parts = [str(error[key]) for key in ("message", "detail") if error.get(key)]
    return (": " + " - ".join(parts))[: DETAIL_LIMIT + 2] if parts else ""
