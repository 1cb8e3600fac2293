"""The ServiceNow client: the one way to ServiceNow's HTTP APIs (Table, Aggregate, Batch,
Attachment).

`send` takes one `RecordRequest` (a Table API request) to a `TableResponse`; `call` takes any
`ApiCall` (method, URL, body, and how its successful answer is read) to what that answer becomes;
`download` is a `call` whose answer's body is read chunk by chunk. All go through `call`: the same
authentication, in-process retries and error translation, and `_send_once` for each HTTP attempt.
It knows nothing of Zeebe. Every httpx exception and every unwelcome answer is translated here, and only
here, into the error tree of `errors.py`.
"""

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
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
# What the worker reads of an error answer to a streamed download: enough for ServiceNow's envelope.
ERROR_BODY_LIMIT: Final = 64 * 1024


@dataclass(frozen=True)
class Upload:
    """A request body sent chunk by chunk. It is sent once: a stream read halfway cannot be sent
    again in-process, so a failure is the job's to retry (docs/contract.md §6)."""

    chunks: AsyncIterator[bytes]
    content_type: str
    content_length: int | None = None


class Download:
    """A streamed answer: its headers now, its body chunk by chunk."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.headers = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a connection that breaks is a `ServiceNowUnavailable`."""
        with _translate_transport_errors():
            async for chunk in self._response.aiter_bytes():
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


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


Answer = TypeVar("Answer")


@dataclass(frozen=True)
class ApiCall(Generic[Answer]):
    """One HTTP request to ServiceNow, whichever API, and what its answer becomes.

    `answer` reads the response (any status: it raises the worker's errors for the unwelcome
    ones, see `checked`); `what` names the request in messages ("read on incident"). A `streamed`
    answer reaches `answer` with its body unread, and only when it is a success (2xx).
    """

    method: str
    url: str
    what: str
    answer: Callable[[httpx.Response], Answer]
    body: bytes | Upload | None = None
    streamed: bool = False


class TableClient:
    """Sends ServiceNow requests over one shared, pooled `httpx.AsyncClient`: the one seam."""

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
        method = call.method
        # Once per job, not per attempt: the credential headers and (OAuth) the token flow.
        credentials = self._authenticator.credentials(destination)
        headers = {**_content_headers(call), **credentials.headers}
        target = self._flow.destination(destination.base_url, credentials.identity)
        answer_lost = False
        budget = deadline - time.monotonic() - self._attempt_timeout - self._retry.wait_max
        once_only = budget <= 0 or isinstance(call.body, Upload)
        retrying = stamina.retry_context(
            on=lambda error: self._may_retry(method, error),
            attempts=1 if once_only else self._retry.attempts,
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

    @asynccontextmanager
    async def download(
        self, destination: DestinationInputs, url: str, what: str, *, deadline: float
    ) -> AsyncIterator[Download]:
        """A GET whose answer is read chunk by chunk by the caller: opened with in-process
        retries like any read; a break in the middle is a `ServiceNowUnavailable`."""
        call = ApiCall("GET", url, what, Download, streamed=True)
        answer = await self.call(destination, call, deadline=deadline)
        try:
            yield answer
        finally:
            await answer.aclose()

    async def _send_once(
        self,
        call: ApiCall[Answer],
        headers: dict[str, str],
        auth: httpx.Auth | None,
        target: Destination,
        deadline: float,
    ) -> Answer:
        """One HTTP attempt. Every request to ServiceNow (Table, Aggregate, Batch, Attachment;
        JSON, streamed upload or streamed download) passes here once per try, in its destination's
        turn (flow_control.py), which it waits for only as long as the answer could still come
        before `deadline`. A streamed download gives its turn back once its headers have come."""
        content = call.body.chunks if isinstance(call.body, Upload) else call.body
        turn = await target.turn(deadline - self._attempt_timeout)
        with turn, _translate_transport_errors():
            request = self._http.build_request(
                call.method, call.url, content=content, headers=headers
            )
            response = await self._http.send(request, auth=auth, stream=call.streamed)
            turn.answered(response.status_code, response.headers)
        if not call.streamed:
            return call.answer(response)
        try:
            if response.status_code >= 300:
                checked(call.what, await _read_bounded(response))
            return call.answer(response)
        except BaseException:
            await response.aclose()
            raise


def _content_headers(call: ApiCall[Any]) -> dict[str, str]:
    if call.streamed:
        return {"Accept": "*/*"}
    if isinstance(call.body, Upload):
        length = call.body.content_length
        return {
            **JSON_HEADERS,
            "Content-Type": call.body.content_type,
            **({"Content-Length": str(length)} if length is not None else {}),
        }
    return BODY_HEADERS if call.body is not None else JSON_HEADERS


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
    count = total_count(response)
    return TableResponse(
        status=status,
        result=body["result"],
        is_list=True,
        total_count=count,
        has_more=_has_more(request, response, count),
        body_bytes=len(response.content),
        server_time=http_date(response.headers.get("Date")),
    )


def total_count(response: httpx.Response) -> int | None:
    """`X-Total-Count`: how many records the query matches; None when absent or not a number."""
    total = response.headers.get("X-Total-Count")
    return int(total) if total is not None and total.isdigit() else None


async def _read_bounded(response: httpx.Response) -> httpx.Response:
    """A streamed error answer with at most `ERROR_BODY_LIMIT` bytes of its body read."""
    kept = bytearray()
    with _translate_transport_errors():
        async for chunk in response.aiter_bytes():
            kept += chunk
            if len(kept) >= ERROR_BODY_LIMIT:
                break
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(kept[:ERROR_BODY_LIMIT]),
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
