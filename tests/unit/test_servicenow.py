"""The ServiceNow client over httpx's mock transport: URLs, answers, in-process retries, and
streamed uploads and downloads on the same path."""

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from servicenow_worker.errors import ServiceNowRejected, ServiceNowUnavailable
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
                headers={"X-Total-Count": "625", "Link": '<https://x>;rel="next"'},
            )

        response = await client(handler).send(
            request(operation="read", limit=1), deadline=deadline()
        )
        assert response.as_variable() == {
            "status": 200,
            "result": [{"number": "INC1"}],
            "count": 1,
            "totalCount": 625,
            "hasMore": True,
        }

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

        async def chunks() -> AsyncIterator[bytes]:
            yield b"ab"
            yield b"c"

        call = ApiCall(
            "POST",
            "https://dev1.service-now.com/api/now/attachment/file?file_name=a.txt",
            "attach of a.txt",
            lambda response: checked("attach of a.txt", response).status_code,
            Upload(chunks(), content_type="text/plain", content_length=3),
        )
        with pytest.raises(ServiceNowUnavailable) as caught:
            await client(handler).call(request(operation="read"), call, deadline=deadline())
        assert (caught.value.status, calls) == (429, [b"abc"])

    async def test_download_opened_again_after_503_then_read_in_chunks(self) -> None:
        calls: list[str] = []

        def handler(req: httpx.Request) -> httpx.Response:
            calls.append(req.headers["Accept"])
            if len(calls) == 1:
                return httpx.Response(503)
            return httpx.Response(200, content=b"file bytes")

        servicenow = client(handler)
        async with servicenow.download(
            request(operation="read"), self.FILE_URL, "download of a1", deadline=deadline()
        ) as answer:
            received = b"".join([chunk async for chunk in answer.chunks()])
        assert (received, calls) == (b"file bytes", ["*/*", "*/*"])

    async def test_refused_download_reads_a_bounded_error_body(self) -> None:
        """A 404 to a download is ServiceNow's error like any other, read from the first
        ERROR_BODY_LIMIT bytes of its body only (what follows them would spoil the JSON)."""
        envelope = {"error": {"message": "No Record found", "detail": "gone"}}

        def handler(_: httpx.Request) -> httpx.Response:
            beyond = b" " * ERROR_BODY_LIMIT + b"never read"
            return httpx.Response(404, content=json.dumps(envelope).encode() + beyond)

        with pytest.raises(ServiceNowRejected) as caught:
            async with client(handler).download(
                request(operation="read"), self.FILE_URL, "download of a1", deadline=deadline()
            ):
                pass  # pragma: no cover - never opened
        assert caught.value.message == (
            "ServiceNow answered 404 to download of a1: No Record found - gone"
        )
        assert caught.value.variables == {"status": 404, "body": envelope}


class TestRetryAfter:
    def test_seconds_and_http_date(self) -> None:
        """Retry-After comes in seconds or as an HTTP date."""
        assert parse_retry_after("30") == 30
        future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
        seconds = parse_retry_after(future)
        assert seconds is not None
        assert 90 < seconds <= 100
        assert parse_retry_after("soon") is None
