"""The ServiceNow client over httpx's mock transport: URLs, answers, in-process retries, and
streamed uploads and downloads on the same path."""

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stamina.instrumentation
from structlog.testing import capture_logs

from servicenow_worker.errors import (
    InputError,
    ServiceNowRejected,
    ServiceNowThrottled,
    ServiceNowUnavailable,
)
from servicenow_worker.flow_control import FlowControl, FlowSettings
from servicenow_worker.inputs import InputRules, RecordRequest, parse_record_request
from servicenow_worker.servicenow import (
    ERROR_BODY_LIMIT,
    ApiCall,
    RetryPolicy,
    TableClient,
    Upload,
    build_url,
    checked,
    parse_retry_after,
)

RULES = InputRules("https://{instance}.service-now.com", ("*.service-now.com",), 1000)


def request(**inputs: Any) -> RecordRequest:
    base = {
        "instance": "dev1",
        "authentication": {"username": "u", "password": "p"},
        "table": "incident",
    }
    return parse_record_request({**base, **inputs}, RULES)


def client(handler: Callable[[httpx.Request], httpx.Response], attempts: int = 3) -> TableClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TableClient(
        http, retry=RetryPolicy(attempts=attempts, wait_initial=0.001), attempt_timeout=1
    )


def deadline() -> float:
    return time.monotonic() + 60


def attach_call(*, content_length: int | None) -> ApiCall[int]:
    """An attach of a.txt whose 3 bytes ("abc") arrive in two chunks."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"c"

    return ApiCall(
        "POST",
        "https://dev1.service-now.com/api/now/attachment/file?file_name=a.txt",
        "attach of a.txt",
        lambda response: checked("attach of a.txt", response).status_code,
        Upload(chunks(), content_type="text/plain", content_length=content_length),
    )


class TestBuildUrl:
    def test_query_keeps_spaces_and_carets(self) -> None:
        """The encoded query is sent as given: spaces stay spaces (%20), never stripped."""
        url = build_url(
            request(operation="read", query="short_descriptionLIKEdisk full^active=true")
        )
        assert "sysparm_query=short_descriptionLIKEdisk%20full%5Eactive%3Dtrue" in url
        assert url.startswith("https://dev1.service-now.com/api/now/table/incident?")

    def test_sys_id_is_percent_encoded_in_path(self) -> None:
        """A sys_id becomes one path segment."""
        assert build_url(request(operation="delete", sysId="glide.maint")).endswith(
            "/api/now/table/incident/glide.maint"
        )

    def test_delete_sends_no_read_options(self) -> None:
        """fields, displayValue and excludeReferenceLink do not apply to delete."""
        url = build_url(
            request(operation="delete", sysId="a1", fields="number", displayValue="all")
        )
        assert "?" not in url

    def test_read_options(self) -> None:
        """Every read option becomes its sysparm parameter."""
        url = build_url(
            request(
                operation="read",
                fields=["number", "caller_id.name"],
                limit=5,
                offset=10,
                displayValue="all",
                excludeReferenceLink=True,
            )
        )
        for part in (
            "sysparm_fields=number%2Ccaller_id.name",
            "sysparm_limit=5",
            "sysparm_offset=10",
            "sysparm_display_value=all",
            "sysparm_exclude_reference_link=true",
        ):
            assert part in url


class TestAnswers:
    async def test_list_read_reports_totals(self) -> None:
        """A list read reports count, X-Total-Count and whether a next page exists."""

        def handler(_: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200,
                json={"result": [{"number": "INC1"}]},
                headers={
                    "X-Total-Count": "625",
                    "Link": '<https://x>;rel="next"',
                    "Date": "Wed, 02 Dec 2026 12:00:00 GMT",
                },
            )

        response = await client(handler).send(
            request(operation="read", limit=1), deadline=deadline()
        )
        # ServiceNow's own clock: what a change's conflict check compares against (changes.py).
        assert response.server_time == datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
        assert response.as_variable() == {
            "status": 200,
            "result": [{"number": "INC1"}],
            "count": 1,
            "totalCount": 625,
            "hasMore": True,
        }

    @pytest.mark.parametrize(
        ("offset", "limit", "total", "has_more"),
        [
            (0, 10, "10", False),  # offset + limit = total: this page is the last
            (0, 10, "11", True),
            (5, 10, "15", False),
            (5, 10, "16", True),
            (0, 1000, "1000", False),  # the largest page the operator allows
            (20, 10, "15", False),  # past the end
            (0, 10, None, False),  # no X-Total-Count: only Link could say
            (0, 10, "many", False),
        ],
    )
    async def test_has_more_at_the_page_boundary(
        self, offset: int, limit: int, total: str | None, has_more: bool
    ) -> None:
        """Without Link's rel="next", a next page exists when offset + limit < X-Total-Count."""
        seen: list[str] = []

        def handler(req: httpx.Request) -> httpx.Response:
            seen.append(str(req.url))
            headers = {"X-Total-Count": total} if total is not None else {}
            headers["Link"] = '<https://x/?sysparm_offset=0>;rel="first"'
            return httpx.Response(200, json={"result": []}, headers=headers)

        response = await client(handler).send(
            request(operation="read", offset=offset, limit=limit), deadline=deadline()
        )
        variable = response.as_variable()
        assert variable["hasMore"] is has_more
        assert variable["totalCount"] == (int(total) if total and total.isdigit() else None)
        assert f"sysparm_limit={limit}&sysparm_offset={offset}" in seen[0]

    async def test_link_next_says_more_without_a_total(self) -> None:
        """ServiceNow's Link rel="next" is enough (ACLs can make a page short, totals absent)."""
        link = '<https://x/?sysparm_offset=10>;rel="next",<https://x/?sysparm_offset=0>;rel="first"'
        response = await client(
            lambda _: httpx.Response(200, json={"result": []}, headers={"Link": link})
        ).send(request(operation="read", limit=10), deadline=deadline())
        assert (response.has_more, response.total_count) == (True, None)

    @pytest.mark.parametrize(
        ("operation", "inputs"),
        [
            ("create", {"payload": {}}),
            ("read", {"sysId": "1"}),
            ("update", {"sysId": "1", "payload": {}}),
        ],
    )
    async def test_one_record_is_not_a_list(self, operation: str, inputs: dict[str, Any]) -> None:
        """A create, update or read by sysId gives the record: no count, totalCount or hasMore;
        its size is the body's (the result-size check relies on it)."""
        body = b'{"result": {"sys_id": "1", "number": "INC1"}}'
        response = await client(
            lambda _: httpx.Response(
                200, content=body, headers={"Content-Type": "application/json"}
            )
        ).send(request(operation=operation, **inputs), deadline=deadline())
        assert response.as_variable() == {
            "status": 200,
            "result": {"sys_id": "1", "number": "INC1"},
        }
        assert response.body_bytes == len(body)

    async def test_hibernating_instance_is_retryable(self) -> None:
        """A 200 HTML page is not a success: the instance is asleep."""

        def handler(_: httpx.Request) -> httpx.Response:
            html = b"<html><title>Instance Hibernating page</title></html>"
            return httpx.Response(200, content=html, headers={"Content-Type": "text/html"})

        with pytest.raises(ServiceNowUnavailable, match="hibernating") as caught:
            await client(handler, attempts=1).send(request(operation="read"), deadline=deadline())
        assert caught.value.code == "INVALID_RESPONSE"

    async def test_cut_off_json_is_retryable(self) -> None:
        """A body that stops mid-JSON is reported as INVALID_RESPONSE."""

        def handler(_: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200, content=b'{"result":[{"a":"1"},', headers={"Content-Type": "application/json"}
            )

        with pytest.raises(ServiceNowUnavailable, match="not complete JSON"):
            await client(handler, attempts=1).send(request(operation="read"), deadline=deadline())

    async def test_error_envelope_in_message(self) -> None:
        """A 4xx gives ServiceNow's error message and detail, operation and table."""

        def handler(_: httpx.Request) -> httpx.Response:
            body = {
                "error": {"message": "Invalid table incidnt", "detail": None},
                "status": "failure",
            }
            return httpx.Response(400, json=body)

        with pytest.raises(ServiceNowRejected) as caught:
            await client(handler).send(request(operation="read"), deadline=deadline())
        assert (
            caught.value.message
            == "ServiceNow answered 400 to read on incident: Invalid table incidnt"
        )
        assert caught.value.code == "400"


class TestInProcessRetries:
    @staticmethod
    def flaky(first: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[str]]:
        calls: list[str] = []

        def handler(req: httpx.Request) -> httpx.Response:
            calls.append(req.method)
            if len(calls) == 1:
                return first
            status = 201 if req.method == "POST" else 200
            return httpx.Response(status, json={"result": {"sys_id": "1"}})

        return handler, calls

    async def test_read_retried_after_502(self) -> None:
        """An idempotent request is tried again after a transient fault."""
        handler, calls = self.flaky(httpx.Response(502))
        response = await client(handler).send(
            request(operation="read", sysId="1"), deadline=deadline()
        )
        assert (response.status, calls) == (200, ["GET", "GET"])

    async def test_waits_between_attempts_grow_from_wait_initial_with_jitter(self) -> None:
        """The back-off stamina schedules (and logs, and counts) between attempts: wait_initial,
        then doubled, each plus up to wait_initial of jitter so that workers retrying the same
        instance do not come back at the same instant."""
        waits: list[float] = []
        previous = stamina.instrumentation.get_on_retry_hooks()
        stamina.instrumentation.set_on_retry_hooks([lambda details: waits.append(details.wait_for)])
        table_client = TableClient(
            httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(503))),
            retry=RetryPolicy(attempts=3, wait_initial=0.01),
            attempt_timeout=1,
        )
        try:
            with pytest.raises(ServiceNowUnavailable):
                await table_client.send(request(operation="read", sysId="1"), deadline=deadline())
        finally:
            stamina.instrumentation.set_on_retry_hooks(previous)
        assert len(waits) == 2
        assert 0.01 < waits[0] <= 0.02
        assert 0.02 < waits[1] <= 0.03

    async def test_create_not_retried_after_502(self) -> None:
        """A create that ServiceNow may have processed is not sent twice in-process."""
        handler, calls = self.flaky(httpx.Response(502))
        with pytest.raises(ServiceNowUnavailable):
            await client(handler).send(request(operation="create", payload={}), deadline=deadline())
        assert calls == ["POST"]

    async def test_create_retried_after_429_with_retry_after(self) -> None:
        """A 429 says ServiceNow refused the create, so sending it again is safe."""
        handler, calls = self.flaky(httpx.Response(429, headers={"Retry-After": "0"}))
        response = await client(handler).send(
            request(operation="create", payload={}), deadline=deadline()
        )
        assert (response.status, calls) == (201, ["POST", "POST"])

    async def test_create_retried_after_refused_connection(self) -> None:
        """A connection never made means the create never arrived."""
        calls: list[str] = []

        def handler(req: httpx.Request) -> httpx.Response:
            calls.append(req.method)
            if len(calls) == 1:
                raise httpx.ConnectError("refused", request=req)
            return httpx.Response(201, json={"result": {"sys_id": "1"}})

        response = await client(handler).send(
            request(operation="create", payload={}), deadline=deadline()
        )
        assert (response.status, calls) == (201, ["POST", "POST"])

    async def test_long_retry_after_is_left_to_zeebe(self) -> None:
        """A Retry-After longer than a few seconds fails the job with that back-off instead."""
        handler, calls = self.flaky(httpx.Response(429, headers={"Retry-After": "120"}))
        with pytest.raises(ServiceNowUnavailable) as caught:
            await client(handler).send(request(operation="read", sysId="1"), deadline=deadline())
        assert (caught.value.retry_after, calls) == (120, ["GET"])

    async def test_no_retry_when_deadline_too_close(self) -> None:
        """No attempt starts that could outlive the job's activation."""
        handler, calls = self.flaky(httpx.Response(503))
        with pytest.raises(ServiceNowUnavailable):
            await client(handler).send(
                request(operation="read", sysId="1"), deadline=time.monotonic() + 2
            )
        assert calls == ["GET"]

    async def test_bad_request_not_retried(self) -> None:
        """A 4xx is final."""
        handler, calls = self.flaky(httpx.Response(403, json={"error": {"message": "no"}}))
        with pytest.raises(ServiceNowRejected):
            await client(handler).send(request(operation="read", sysId="1"), deadline=deadline())
        assert calls == ["GET"]


class TestStreamed:
    """Uploads and downloads take the same path as every other request (`TableClient.call`)."""

    FILE_URL = "https://dev1.service-now.com/api/now/attachment/a1/file"

    async def test_upload_is_sent_once_even_when_a_retry_would_be_safe(self) -> None:
        """A 429 with Retry-After makes a create safe to send again, but a streamed body is read
        already: the job retries it, not the client."""
        calls: list[bytes] = []

        async def handler(req: httpx.Request) -> httpx.Response:
            calls.append(await req.aread())
            return httpx.Response(429, headers={"Retry-After": "0"})

        call = attach_call(content_length=3)
        with pytest.raises(ServiceNowUnavailable) as caught:
            await client(handler).call(request(operation="read"), call, deadline=deadline())
        assert (caught.value.status, calls) == (429, [b"abc"])

    async def test_download_opened_again_after_503_then_read_in_chunks(self) -> None:
        calls: list[str] = []

        def handler(req: httpx.Request) -> httpx.Response:
            calls.append(req.headers["Accept"])
            if len(calls) == 1:
                return httpx.Response(503)
            return httpx.Response(
                200, content=b"file bytes", headers={"Content-Type": "text/plain"}
            )

        servicenow = client(handler)
        async with servicenow.download(
            request(operation="read"), self.FILE_URL, "download of a1", deadline=deadline()
        ) as answer:
            received = b"".join([chunk async for chunk in answer.chunks()])
            content_type = answer.headers["Content-Type"]  # the attachment's, for the document
        assert (received, calls, content_type) == (b"file bytes", ["*/*", "*/*"], "text/plain")

    async def test_refused_download_reads_a_bounded_error_body(self) -> None:
        """A 404 to a download is ServiceNow's error like any other, read from the first
        ERROR_BODY_LIMIT bytes of its body only: of a 10 MB answer, no more is taken from the
        connection (what follows them would spoil the JSON, and would be held for nothing)."""
        envelope = {"error": {"message": "No Record found", "detail": "gone"}}
        piece = 16 * 1024  # ERROR_BODY_LIMIT is four pieces exactly
        first = json.dumps(envelope).encode().ljust(piece)
        body = Pieces(first, *(b" " * piece for _ in range(639)))

        with pytest.raises(ServiceNowRejected) as caught:
            async with client(lambda _: httpx.Response(404, stream=body)).download(
                request(operation="read"), self.FILE_URL, "download of a1", deadline=deadline()
            ):
                pass  # pragma: no cover - never opened
        assert caught.value.message == (
            "ServiceNow answered 404 to download of a1: No Record found - gone"
        )
        assert caught.value.variables == {"status": 404, "body": envelope}
        assert body.pulled == ERROR_BODY_LIMIT

    @pytest.mark.parametrize("encoding", [None, "gzip"])
    async def test_refused_download_keeps_servicenows_answer(self, encoding: str | None) -> None:
        """A 429 to a download, its envelope arriving in pieces, compressed or not: the message
        is ServiceNow's and its Retry-After becomes the job's back-off."""
        envelope = json.dumps({"error": {"message": "Too many requests", "detail": "wait"}})
        sent = gzip.compress(envelope.encode()) if encoding else envelope.encode()
        headers = {"Retry-After": "30", "Content-Type": "application/json"}
        if encoding:
            headers["Content-Encoding"] = encoding

        def handler(_: httpx.Request) -> httpx.Response:
            pieces = [sent[i : i + 8] for i in range(0, len(sent), 8)]
            return httpx.Response(429, headers=headers, stream=Pieces(*pieces))

        with pytest.raises(ServiceNowThrottled) as caught:
            async with client(handler).download(
                request(operation="read"), self.FILE_URL, "download of a1", deadline=deadline()
            ):
                pass  # pragma: no cover - never opened
        assert caught.value.message == (
            "ServiceNow answered 429 to download of a1: Too many requests - wait"
        )
        assert caught.value.retry_after == 30

    @pytest.mark.parametrize("status", [300, 302])
    async def test_redirected_download_is_not_a_file(self, status: int) -> None:
        """A redirect (a hibernating instance's login page) is refused as for any request, not
        handed on as the file's content."""

        def handler(_: httpx.Request) -> httpx.Response:
            return httpx.Response(status, headers={"Location": "https://login.x/"}, content=b"<")

        with pytest.raises(ServiceNowUnavailable) as caught:
            async with client(handler, attempts=1).download(
                request(operation="read"), self.FILE_URL, "download of a1", deadline=deadline()
            ):
                pass  # pragma: no cover - never opened
        assert (caught.value.code, caught.value.status) == ("INVALID_RESPONSE", status)
        assert caught.value.message.startswith(
            "ServiceNow redirected download of a1 to https://login.x/"
        )

    @pytest.mark.parametrize(
        ("length", "framing"),
        [(3, {"Content-Length": "3"}), (None, {"Transfer-Encoding": "chunked"})],
    )
    async def test_upload_says_its_type_and_length(
        self, length: int | None, framing: dict[str, str]
    ) -> None:
        """ServiceNow stores an attachment with the Content-Type it receives; a size known
        beforehand goes as Content-Length, an unknown one as a chunked body."""
        seen: list[httpx.Request] = []

        async def handler(req: httpx.Request) -> httpx.Response:
            await req.aread()
            seen.append(req)
            return httpx.Response(201, json={"result": {}})

        call = attach_call(content_length=length)
        await client(handler).call(request(operation="read"), call, deadline=deadline())
        sent = seen[0].headers
        assert (sent["Accept"], sent["Content-Type"]) == ("application/json", "text/plain")
        assert {name: sent.get(name) for name in ("Content-Length", "Transfer-Encoding")} == {
            "Content-Length": None,
            "Transfer-Encoding": None,
            **framing,
        }
        assert seen[0].content == b"abc"


class Pieces(httpx.AsyncByteStream):
    """An answer's body as it comes off the connection, counting what the worker took."""

    def __init__(self, *pieces: bytes) -> None:
        self._pieces: Iterator[bytes] = iter(pieces)
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            self.pulled += len(piece)
            yield piece


class TestDestinations:
    """Flow control's destinations (docs/contract.md §12), as requests reach them."""

    async def test_one_destination_per_instance_and_user(self) -> None:
        """Each instance, and each user on it, has its own limit and pause."""
        flow = FlowControl(FlowSettings())
        table_client = TableClient(
            httpx.AsyncClient(
                transport=httpx.MockTransport(lambda _: httpx.Response(200, json={"result": {}}))
            ),
            retry=RetryPolicy(),
            attempt_timeout=1,
            flow=flow,
        )
        for instance, user in [("dev1", "u"), ("dev1", "u"), ("dev1", "v"), ("dev2", "u")]:
            authentication = {"username": user, "password": "p"}
            read = request(
                operation="read", sysId="1", instance=instance, authentication=authentication
            )
            await table_client.send(read, deadline=deadline())
        assert sorted(destination.base_url for destination in flow) == [
            "https://dev1.service-now.com",
            "https://dev1.service-now.com",
            "https://dev2.service-now.com",
        ]

    async def test_no_request_while_paused_past_the_deadline(self) -> None:
        """ServiceNow asked for 5 s of quiet; a job due in 4 s, of which one attempt may take 3,
        cannot be answered in time: it fails at once as THROTTLED, and nothing is sent."""
        sent: list[httpx.Request] = []

        def handler(req: httpx.Request) -> httpx.Response:
            sent.append(req)
            return httpx.Response(429, headers={"Retry-After": "5"})

        table_client = TableClient(
            httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            retry=RetryPolicy(attempts=1),
            attempt_timeout=3,
            flow=FlowControl(FlowSettings()),
        )
        read = request(operation="read", sysId="1")
        with pytest.raises(ServiceNowThrottled):
            await table_client.send(read, deadline=deadline())
        with pytest.raises(ServiceNowThrottled) as caught:
            await table_client.send(read, deadline=time.monotonic() + 4)
        assert caught.value.code == "THROTTLED"
        assert len(sent) == 1


class TestRetryAfter:
    def test_seconds_and_http_date(self) -> None:
        """Retry-After comes in seconds or as an HTTP date."""
        assert parse_retry_after("30") == 30
        future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
        seconds = parse_retry_after(future)
        assert seconds is not None
        assert 90 < seconds <= 100
        assert parse_retry_after("soon") is None


async def failure(response: httpx.Response, operation: str = "read") -> ServiceNowUnavailable:
    """The retryable error that one answer of ServiceNow (or what stands in its place) gives."""
    inputs = {"operation": operation}
    if operation != "read":
        inputs.update(sysId="1", payload={})  # type: ignore[dict-item]
    with pytest.raises(ServiceNowUnavailable) as caught:
        await client(lambda _: response, attempts=1).send(request(**inputs), deadline=deadline())
    return caught.value


class TestAnswersThatAreNotServiceNows:
    """What a user reads in the incident (and errorExpression in error.code/message/variables)
    when the answer is not ServiceNow's JSON."""

    @pytest.mark.parametrize("status", [300, 301, 302, 307, 399])
    async def test_redirect(self, status: int) -> None:
        """A redirect (a hibernating instance's login page, a wrong URL) is not followed."""
        error = await failure(httpx.Response(status, headers={"Location": "https://login.x/"}))
        assert (error.code, error.status) == ("INVALID_RESPONSE", status)
        assert error.message == (
            "ServiceNow redirected read on incident to https://login.x/: the instance may be "
            "hibernating (wake it at developer.servicenow.com) or the URL may be wrong"
        )

    async def test_redirect_without_location(self) -> None:
        error = await failure(httpx.Response(302))
        assert "ServiceNow redirected read on incident to another page: " in error.message

    @pytest.mark.parametrize(
        ("content_type", "body", "said", "hint"),
        [
            (
                "text/html",
                b"<title>Instance Hibernating page</title>",
                "text/html",
                "the instance is hibernating: wake it at developer.servicenow.com",
            ),
            (
                "text/html; charset=utf-8",
                b"<title>Sign in</title>",
                "text/html; charset=utf-8",
                "a proxy or login page may stand in front of the instance",
            ),
            (None, b"plain", "no content type", "a proxy or login page may stand in front"),
        ],
    )
    async def test_not_json(
        self, content_type: str | None, body: bytes, said: str, hint: str
    ) -> None:
        """A 200 that is not JSON names what came and what it likely means."""
        headers = {"Content-Type": content_type} if content_type else {}
        error = await failure(httpx.Response(200, content=body, headers=headers))
        assert (error.code, error.status) == ("INVALID_RESPONSE", 200)
        assert error.message.startswith(
            f"ServiceNow answered 200 with {said}, not JSON, to read on incident: {hint}"
        )

    async def test_cut_off_json(self) -> None:
        error = await failure(
            httpx.Response(
                200, content=b'{"result":[{"a":', headers={"Content-Type": "application/json"}
            )
        )
        assert (error.code, error.status) == ("INVALID_RESPONSE", 200)
        assert error.message == (
            "ServiceNow's answer to read on incident is not complete JSON (cut off, often a "
            "transaction cancelled after 60 s: narrow the query or lower limit)"
        )

    @pytest.mark.parametrize(
        ("body", "tail"),
        [
            # A result with ServiceNow's error appended: the transaction was cancelled mid-way.
            (
                {"result": [], "error": {"message": "Transaction cancelled"}},
                ": Transaction cancelled",
            ),
            ({"records": []}, ""),
            ({"error": {"message": "m", "detail": "d"}}, ": m - d"),
            ([{"result": []}], ""),
        ],
    )
    async def test_json_without_a_result(self, body: Any, tail: str) -> None:
        error = await failure(httpx.Response(200, json=body))
        assert (error.code, error.status) == ("INVALID_RESPONSE", 200)
        assert error.message == f"ServiceNow's answer to read on incident holds no result{tail}"

    async def test_empty_200_is_a_success_without_result(self) -> None:
        response = await client(lambda _: httpx.Response(200)).send(
            request(operation="read", sysId="1"), deadline=deadline()
        )
        assert (response.status, response.result) == (200, None)


class TestErrorStatuses:
    @pytest.mark.parametrize("status", [408, 429, 500, 501, 502, 503, 504, 599])
    async def test_retryable(self, status: int) -> None:
        """ServiceNow's envelope, status and the body become error.code and error.variables."""
        envelope = {"error": {"message": "m", "detail": "d"}, "status": "failure"}
        error = await failure(httpx.Response(status, json=envelope, headers={"Retry-After": "9"}))
        assert (error.code, error.status, error.retry_after) == (str(status), status, 9)
        assert error.variables == {"status": status, "body": envelope}
        assert error.message == f"ServiceNow answered {status} to read on incident: m - d"

    async def test_body_that_is_not_json_is_kept_as_text(self) -> None:
        error = await failure(httpx.Response(502, text="<html>Bad Gateway</html>"))
        assert error.variables == {"status": 502, "body": "<html>Bad Gateway</html>"}
        assert error.message == "ServiceNow answered 502 to read on incident"

    @pytest.mark.parametrize(
        "envelope", [{}, {"error": "text"}, {"error": {}}, {"error": {"message": ""}}, None]
    )
    async def test_no_error_text_adds_nothing(self, envelope: Any) -> None:
        error = await failure(httpx.Response(500, json=envelope))
        assert error.message == "ServiceNow answered 500 to read on incident"

    async def test_long_error_text_is_cut(self) -> None:
        error = await failure(httpx.Response(500, json={"error": {"message": "x" * 1000}}))
        assert error.message == "ServiceNow answered 500 to read on incident: " + "x" * 300


class TestTransportErrors:
    @pytest.mark.parametrize(
        ("raised", "code", "message"),
        [
            (
                httpx.ConnectError,
                "CONNECTION_ERROR",
                "could not connect to ServiceNow (ConnectError)",
            ),
            (
                httpx.ConnectTimeout,
                "TIMEOUT",
                "timed out connecting to ServiceNow (ConnectTimeout)",
            ),
            (httpx.PoolTimeout, "TIMEOUT", "timed out connecting to ServiceNow (PoolTimeout)"),
            (httpx.ReadTimeout, "TIMEOUT", "ServiceNow did not answer within the read timeout"),
            (
                httpx.RemoteProtocolError,
                "CONNECTION_ERROR",
                "the connection to ServiceNow broke (RemoteProtocolError)",
            ),
        ],
    )
    async def test_code_and_message(
        self, raised: type[httpx.TransportError], code: str, message: str
    ) -> None:
        def handler(req: httpx.Request) -> httpx.Response:
            raise raised("x", request=req)

        with pytest.raises(ServiceNowUnavailable) as caught:
            await client(handler, attempts=1).send(request(operation="read"), deadline=deadline())
        assert (caught.value.code, caught.value.message) == (code, message)


class TestRetryDecision:
    """When the worker tries again in-process, and how long it waits (the Retry-After)."""

    @staticmethod
    def may_retry(method: str, status: int | None, retry_after: float | None) -> bool | float:
        table_client = client(lambda _: httpx.Response(200))
        error = ServiceNowUnavailable("x", "x", status=status, retry_after=retry_after)
        return table_client._may_retry(method, error)

    @pytest.mark.parametrize(
        ("method", "status", "retry_after", "decision"),
        [
            ("GET", 503, 5.0, 5.0),  # the longest Retry-After waited for in-process
            ("GET", 503, 5.5, False),  # longer: left to Zeebe with that back-off
            ("GET", 503, 0.0, 0.0),
            ("GET", 502, None, True),  # stamina's back-off
            ("POST", 429, 2.0, 2.0),
            ("POST", 503, 2.0, 2.0),
            ("POST", 503, None, False),
            ("POST", 500, 2.0, False),  # a 500 may have processed the create
            ("POST", 504, 2.0, False),
            ("POST", 502, None, False),
        ],
    )
    def test_decision(
        self, method: str, status: int, retry_after: float | None, decision: bool | float
    ) -> None:
        assert self.may_retry(method, status, retry_after) == decision

    def test_a_rejection_is_never_retried(self) -> None:
        table_client = client(lambda _: httpx.Response(200))
        rejected = ServiceNowRejected(400, "x", variables={})
        assert table_client._may_retry("GET", rejected) is False


def test_retry_after_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after(None) is None


class TestWhatIsSent:
    async def test_content_type_only_with_a_body(self) -> None:
        """A read or delete says what it accepts; a create or update also what it sends."""
        seen: list[httpx.Request] = []

        def handler(req: httpx.Request) -> httpx.Response:
            seen.append(req)
            return httpx.Response(200, json={"result": {}})

        for operation in ("read", "delete", "create", "update"):
            inputs: dict[str, Any] = {"payload": {"a": 1}}
            if operation != "create":
                inputs["sysId"] = "1"
            await client(handler).send(request(operation=operation, **inputs), deadline=deadline())
        assert [(r.headers["Accept"], r.headers.get("Content-Type")) for r in seen] == [
            ("application/json", None),
            ("application/json", None),
            ("application/json", "application/json"),
            ("application/json", "application/json"),
        ]

    async def test_payload_is_utf8_json(self) -> None:
        """Non-ASCII text goes as UTF-8, not as \\u escapes (which would count six times toward
        ServiceNow's 10 MB limit)."""
        bodies: list[bytes] = []

        def handler(req: httpx.Request) -> httpx.Response:
            bodies.append(req.content)
            return httpx.Response(201, json={"result": {}})

        await client(handler).send(
            request(operation="create", payload={"d": "Grüße €"}), deadline=deadline()
        )
        assert bodies == ['{"d": "Grüße €"}'.encode()]

    async def test_payload_up_to_ten_megabytes(self) -> None:
        """ServiceNow takes 10 MB of JSON in one request: exactly that is sent, one byte more is
        refused before sending, naming the size."""
        sent: list[int] = []

        def handler(req: httpx.Request) -> httpx.Response:
            sent.append(len(req.content))
            return httpx.Response(201, json={"result": {}})

        limit = 10 * 1024 * 1024
        fits = {"a": "x" * (limit - len('{"a": ""}'))}
        await client(handler).send(request(operation="create", payload=fits), deadline=deadline())
        assert sent == [limit]
        with pytest.raises(InputError) as caught:
            await client(handler).send(
                request(operation="create", payload={"a": fits["a"] + "x"}), deadline=deadline()
            )
        assert (caught.value.field, caught.value.message) == (
            "payload",
            f"payload is {limit + 1} bytes of JSON; ServiceNow accepts at most {limit} bytes "
            "(10 MB) in one request: split the data or attach large content as a file",
        )
        assert sent == [limit]

    async def test_oauth_token_requested_with_the_clients_own_http(self) -> None:
        """Without an authenticator passed in, the client requests OAuth tokens itself and sends
        the token on the call."""
        calls: list[tuple[str, str | None]] = []

        def handler(req: httpx.Request) -> httpx.Response:
            calls.append((req.url.path, req.headers.get("Authorization")))
            if req.url.path == "/oauth_token.do":
                return httpx.Response(
                    200, json={"access_token": "tok", "expires_in": 1800, "token_type": "Bearer"}
                )
            return httpx.Response(200, json={"result": {}})

        oauth = {"type": "oauth-client-credentials", "clientId": "c", "clientSecret": "s"}
        await client(handler).send(
            request(operation="read", sysId="1", authentication=oauth), deadline=deadline()
        )
        assert calls[-1] == ("/api/now/table/incident/1", "Bearer tok")
        assert calls[0][0] == "/oauth_token.do"


class TestLostAnswers:
    """Only a delete whose earlier attempt lost its answer turns a 404 into done."""

    @staticmethod
    def answers(*steps: httpx.Response | type[httpx.TransportError]) -> Any:
        queue = list(steps)

        def handler(req: httpx.Request) -> httpx.Response:
            step = queue.pop(0)
            if isinstance(step, httpx.Response):
                return step
            raise step("lost", request=req)

        return handler

    async def test_delete_found_gone_after_a_lost_answer_is_done(self) -> None:
        handler = self.answers(httpx.RemoteProtocolError, httpx.Response(404, json={}))
        with capture_logs() as logs:
            response = await client(handler).send(
                request(operation="delete", sysId="1"), deadline=deadline()
            )
        assert (response.status, response.result) == (204, None)
        assert {
            "event": "delete_already_done",
            "what": "delete on incident",
            "log_level": "info",
        } in logs

    async def test_delete_of_a_missing_record_is_a_404(self) -> None:
        handler = self.answers(httpx.Response(404, json={}))
        with pytest.raises(ServiceNowRejected) as caught:
            await client(handler).send(request(operation="delete", sysId="1"), deadline=deadline())
        assert caught.value.status == 404

    async def test_delete_refused_after_a_lost_answer_stays_refused(self) -> None:
        handler = self.answers(httpx.RemoteProtocolError, httpx.Response(403, json={}))
        with pytest.raises(ServiceNowRejected) as caught:
            await client(handler).send(request(operation="delete", sysId="1"), deadline=deadline())
        assert caught.value.status == 403

    async def test_read_not_found_after_a_lost_answer_is_a_404(self) -> None:
        handler = self.answers(httpx.RemoteProtocolError, httpx.Response(404, json={}))
        with pytest.raises(ServiceNowRejected):
            await client(handler).send(request(operation="read", sysId="1"), deadline=deadline())

    async def test_never_sent_then_404_is_a_404(self) -> None:
        """A refused connection lost no answer: the delete never happened, the 404 stands."""
        handler = self.answers(httpx.ConnectError, httpx.Response(404, json={}))
        with pytest.raises(ServiceNowRejected):
            await client(handler).send(request(operation="delete", sysId="1"), deadline=deadline())


class TestDeadline:
    """No in-process retry starts that could end after the job's deadline (docs/contract.md §6)."""

    @staticmethod
    async def calls_until(seconds_left: float, slow: float = 0.0) -> int:
        calls: list[int] = []

        async def handler(_: httpx.Request) -> httpx.Response:
            calls.append(1)
            if slow:
                await asyncio.sleep(slow)  # the answer takes this long
            return httpx.Response(503)

        table_client = TableClient(
            httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            retry=RetryPolicy(attempts=3, wait_initial=0.001, wait_max=5.0),
            attempt_timeout=1.0,
        )
        with pytest.raises(ServiceNowUnavailable):
            await table_client.send(
                request(operation="read", sysId="1"), deadline=time.monotonic() + seconds_left
            )
        return len(calls)

    async def test_one_attempt_when_a_retry_could_not_finish_in_time(self) -> None:
        """Left: one attempt (1 s) and the longest wait (5 s) do not fit in 5.5 s."""
        assert await self.calls_until(5.5) == 1

    async def test_retries_when_they_fit(self) -> None:
        assert await self.calls_until(6.5) == 3

    async def test_retries_stop_when_the_budget_is_spent(self) -> None:
        """0.3 s of budget and answers that take 0.4 s: no second attempt."""
        assert await self.calls_until(6.3, slow=0.4) == 1
