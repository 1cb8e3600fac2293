"""Attempts of one request per failure and operation, counted where the request leaves the
worker (httpx's transport): the failures no server can count, a refused connection and a connect
timeout, next to the others (tests/retries/test_requests_received.py counts those at ServiceNow)."""

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from servicenow_worker.errors import ServiceNowUnavailable
from servicenow_worker.inputs import InputRules, RecordRequest, parse_record_request
from servicenow_worker.servicenow import RetryPolicy, TableClient

RULES = InputRules("https://{instance}.service-now.com", ("*.service-now.com",), 1000)
ATTEMPTS = 3
SYS_ID = "a" * 32


def request(operation: str) -> RecordRequest:
    inputs: dict[str, Any] = {
        "create": {"payload": {"short_description": "x"}},
        "read": {"sysId": SYS_ID},
        "update": {"sysId": SYS_ID, "payload": {"state": "2"}},
        "delete": {"sysId": SYS_ID},
    }[operation]
    base = {"instance": "dev1", "authentication": {"username": "u", "password": "p"}}
    return parse_record_request(
        {**base, "operation": operation, "table": "incident", **inputs}, RULES
    )


def raises(error: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(req: httpx.Request) -> httpx.Response:
        raise error("failed", request=req)

    return handler


def answers(status: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, headers=headers, json={"error": {"message": "m"}})


# failure -> (transport behaviour, attempts for a create, for a read/update/delete)
FAILURES = {
    "connection refused": (raises(httpx.ConnectError), ATTEMPTS, ATTEMPTS),
    "connect timeout": (raises(httpx.ConnectTimeout), ATTEMPTS, ATTEMPTS),
    "no free connection in the pool": (raises(httpx.PoolTimeout), ATTEMPTS, ATTEMPTS),
    "read timeout": (raises(httpx.ReadTimeout), 1, ATTEMPTS),
    "write timeout": (raises(httpx.WriteTimeout), 1, ATTEMPTS),
    "dropped after sending": (raises(httpx.RemoteProtocolError), 1, ATTEMPTS),
    "read error": (raises(httpx.ReadError), 1, ATTEMPTS),
    "408": (answers(408), 1, ATTEMPTS),
    "500": (answers(500), 1, ATTEMPTS),
    "502": (answers(502), 1, ATTEMPTS),
    "503": (answers(503), 1, ATTEMPTS),
    "503 with Retry-After": (answers(503, **{"Retry-After": "0"}), ATTEMPTS, ATTEMPTS),
    "504": (answers(504), 1, ATTEMPTS),
    "429 with Retry-After": (answers(429, **{"Retry-After": "0"}), ATTEMPTS, ATTEMPTS),
}


@pytest.mark.parametrize("operation", ["create", "read", "update", "delete"])
@pytest.mark.parametrize("failure", FAILURES)
async def test_attempts_per_failure_and_operation(operation: str, failure: str) -> None:
    """A create is sent again only when it certainly did not arrive or was refused unprocessed."""
    behaviour, for_create, for_others = FAILURES[failure]
    sent: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(req.method)
        return behaviour(req)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = TableClient(
        http, retry=RetryPolicy(attempts=ATTEMPTS, wait_initial=0.001), attempt_timeout=1
    )
    with pytest.raises(ServiceNowUnavailable):
        await client.send(request(operation), deadline=time.monotonic() + 60)
    assert len(sent) == (for_create if operation == "create" else for_others)


async def test_retry_after_longer_than_the_in_process_limit_is_left_to_zeebe() -> None:
    """A create refused with Retry-After above five seconds is not waited for in-process."""
    sent: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(req.method)
        return httpx.Response(429, headers={"Retry-After": "6"}, json={})

    client = TableClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        retry=RetryPolicy(attempts=ATTEMPTS, wait_initial=0.001),
        attempt_timeout=1,
    )
    with pytest.raises(ServiceNowUnavailable) as caught:
        await client.send(request("create"), deadline=time.monotonic() + 60)
    assert (sent, caught.value.retry_after) == (["POST"], 6)
