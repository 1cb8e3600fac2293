"""The emulator as a busy instance: its REST semaphore (capacity) and hourly rate-limit rules."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from servicenow_emulators._capacity import Throttling
from servicenow_emulators.table_api import (
    Capacity,
    Fault,
    RateLimitRule,
    ServiceNowEmulator,
)

from .test_table_api import INCIDENTS, PASSWORD, USER, error, http_client


class TestCapacity:
    async def test_slots_then_queue_then_429(self) -> None:
        """Two requests run, one waits its turn, the next is refused with 429 and Retry-After;
        the waiting one is served once a slot frees."""
        capacity = Capacity(slots=2, queue=1, retry_after=3)
        async with (
            ServiceNowEmulator(users={USER: PASSWORD}, capacity=capacity) as emulator,
            http_client(emulator.base_url) as client,
        ):
            emulator.inject(Fault.delay(1.5, method="GET", times=2))
            running = [asyncio.create_task(client.get(INCIDENTS)) for _ in range(2)]
            await emulator.wait_for_requests(2)  # both hold a slot now
            late = await asyncio.gather(client.get(INCIDENTS), client.get(INCIDENTS))
            assert sorted(r.status_code for r in late) == [200, 429]
            [refused] = [r for r in late if r.status_code == 429]
            assert refused.json() == error(
                "Too Many Requests", "Rejecting request: the REST semaphore queue is full"
            )
            assert refused.headers["Retry-After"] == "3"
            assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
        counts = emulator.throttling.counts
        assert (counts.most_running, counts.most_queued, counts.refused_busy) == (2, 1, 1)
        assert counts.admitted == 3
        # The refused request is recorded like any other, with the fault that answered it.
        assert sorted(r.status for r in emulator.requests) == [200, 200, 200, 429]

    async def test_no_capacity_no_limit(self) -> None:
        """Without `capacity` nothing waits and nothing is refused."""
        async with (
            ServiceNowEmulator(users={USER: PASSWORD}) as emulator,
            http_client(emulator.base_url) as client,
        ):
            statuses = [r.status_code for r in await asyncio.gather(
                *(client.get(INCIDENTS) for _ in range(20))
            )]  # fmt: skip
        assert statuses == [200] * 20
        assert emulator.throttling.counts.refused_busy == 0


class TestRateLimitRule:
    async def test_headers_then_429_when_used_up(self) -> None:
        """Answers a rule covers carry X-RateLimit-Limit/Reset/Rule (no Remaining); past the
        limit: 429, Retry-After until the reset, ServiceNow's body; not for another user."""
        rule = RateLimitRule(limit=2)
        async with (
            ServiceNowEmulator(
                users={USER: PASSWORD, "other": "pw"}, rate_limit_rules=[rule]
            ) as emulator,
            http_client(emulator.base_url) as client,
            http_client(emulator.base_url, ("other", "pw")) as other,
        ):
            first = await client.get(INCIDENTS)
            await client.post(INCIDENTS, json={})
            refused = await client.get(INCIDENTS)
            others = await other.get(INCIDENTS)
        assert first.status_code == 200
        reset = int(first.headers["X-RateLimit-Reset"])
        assert reset % 3600 == 0  # windows end at the top of the hour
        assert first.headers["X-RateLimit-Limit"] == "2"
        assert first.headers["X-RateLimit-Rule"] == rule.sys_id
        assert "X-RateLimit-Remaining" not in first.headers
        assert refused.status_code == 429
        assert refused.json() == error(
            "Rate limit exceeded", "Rate limit of 2 requests per hour for Table API exceeded"
        )
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        assert refused.headers["X-RateLimit-Reset"] == str(reset)
        assert others.status_code == 200
        assert emulator.throttling.counts.refused_rate == 1

    def test_window_resets_and_user_rule_wins(self) -> None:
        """A new window allows the limit again; a user's own rule wins over an all-users rule."""
        now = [7200.0 + 3590]
        rules = [RateLimitRule(limit=1, window=3600), RateLimitRule(limit=5, user="bulk")]
        throttling = Throttling(rules=rules, clock=lambda: now[0])

        def request() -> web.Request:
            return make_mocked_request("GET", INCIDENTS)

        assert throttling.refusal(request(), USER) is None
        refused = throttling.refusal(request(), USER)
        assert refused is not None and refused.status == 429 and refused.retry_after == 10
        assert all(throttling.refusal(request(), "bulk") is None for _ in range(5))
        now[0] += 10  # the top of the hour
        fresh = request()
        assert throttling.refusal(fresh, USER) is None
        assert throttling.headers(fresh)["X-RateLimit-Reset"] == str(3 * 3600 + 3600)

    def test_rule_needs_a_limit_and_a_window(self) -> None:
        with pytest.raises(ValueError, match="window"):
            RateLimitRule(limit=1, window=0)
        with pytest.raises(ValueError, match="slots"):
            Capacity(slots=0)


async def test_command_line_options() -> None:
    """`--capacity-slots 1 --capacity-queue 0 --latency 0.5 --rate-limit 2`: a second request at
    once is refused as busy; the third in the hour as rate-limited."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "servicenow_emulators.table_api",
        "--port", "0", "--user", "demo:pw", "--latency", "0.5",
        "--capacity-slots", "1", "--capacity-queue", "0", "--capacity-retry-after", "2",
        "--rate-limit", "2", "--rate-limit-window", "3600",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        url = re.search(r"http://\S+:\d+", line).group(0)  # type: ignore[union-attr]
        async with http_client(url, ("demo", "pw")) as client:
            together = await asyncio.gather(client.get(INCIDENTS), client.get(INCIDENTS))
            second = await client.get(INCIDENTS)
            third = await client.get(INCIDENTS)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    statuses = sorted((r.status_code, r.headers.get("Retry-After")) for r in together)
    assert statuses == [(200, None), (429, "2")]
    assert [r.headers["X-RateLimit-Limit"] for r in together if r.status_code == 200] == ["2"]
    assert second.status_code == 200
    assert third.status_code == 429
    assert third.json()["error"]["message"] == "Rate limit exceeded"
    assert third.headers["X-RateLimit-Reset"] == second.headers["X-RateLimit-Reset"]
