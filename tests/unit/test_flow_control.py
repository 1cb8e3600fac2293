"""The flow-control limiter (docs/flow-control.md), with a fake clock: how answers move the
limit, pauses, rate-limit rules, FIFO turns and deadlines."""

import asyncio
from collections.abc import Callable, Mapping

import pytest
from structlog.testing import capture_logs

from servicenow_worker.errors import THROTTLED, TIMEOUT, ServiceNowThrottled, ServiceNowUnavailable
from servicenow_worker.flow_control import (
    INITIAL_LIMIT,
    Destination,
    FlowControl,
    FlowSettings,
    Turn,
)

URL = "https://dev1.service-now.com"
NO_HEADERS: Mapping[str, str] = {}


class Clock:
    """Monotonic and wall time that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_800_000_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="destination")
def _destination(clock: Clock) -> Callable[..., Destination]:
    def make(**settings: object) -> Destination:
        flow = FlowControl(
            FlowSettings(**settings),  # type: ignore[arg-type]
            clock=clock.monotonic,
            wall_clock=clock.time,
        )
        return flow.destination(URL, b"identity")

    return make


FAR = 1e9  # a deadline that never comes


async def answer_all(
    destination: Destination,
    clock: Clock,
    count: int,
    *,
    latency: float = 0.05,
    status: int = 200,
    headers: Mapping[str, str] = NO_HEADERS,
) -> None:
    """`count` requests sent together (as far as the limit lets them), answered after `latency`."""
    turns = [await destination.turn(FAR) for _ in range(count)]
    clock.advance(latency)
    for turn in turns:
        turn.answered(status, headers)


class TestLimit:
    async def test_doubles_per_round_while_nothing_queues(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """Answers as fast as the fastest: each one to a request sent with at least half the
        limit in use adds 1, up to SERVICENOW_MAX_CONCURRENCY."""
        limited = destination()
        assert limited.limit == INITIAL_LIMIT
        await answer_all(limited, clock, INITIAL_LIMIT)
        assert limited.limit == INITIAL_LIMIT + 5  # sent 4th to 8th of 8
        for _ in range(3):
            await answer_all(limited, clock, int(limited.limit))
        assert limited.limit == 32  # SERVICENOW_MAX_CONCURRENCY's default caps it

    async def test_one_per_round_while_a_little_queues(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """Answers that waited a little (here 30 ms over the fastest, 50 ms) add 1/limit each:
        about 1 per round trip."""
        limited = destination()
        await answer_all(limited, clock, 1, latency=0.05)  # the fastest; one request: no growth
        await answer_all(limited, clock, INITIAL_LIMIT, latency=0.08)
        assert INITIAL_LIMIT + 0.5 < limited.limit < INITIAL_LIMIT + 1

    async def test_scheduling_noise_of_a_fast_instance_does_not_stop_growth(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """A 1 ms instance whose answers take 8 ms now and then: within the 10 ms slack."""
        limited = destination()
        await answer_all(limited, clock, 1, latency=0.001)
        await answer_all(limited, clock, INITIAL_LIMIT, latency=0.008)
        assert limited.limit > INITIAL_LIMIT

    async def test_no_growth_when_the_limit_is_not_used(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """Answers to fewer requests than the limit say nothing about a higher one."""
        limited = destination()
        for _ in range(50):
            await answer_all(limited, clock, 2)
        assert limited.limit == INITIAL_LIMIT

    async def test_no_growth_once_answers_slow_down(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """Answers slower than twice the fastest recent one: requests queue at ServiceNow."""
        limited = destination()
        await answer_all(limited, clock, INITIAL_LIMIT, latency=0.05)
        grown = limited.limit
        for _ in range(10):
            await answer_all(limited, clock, int(limited.limit), latency=0.2)
        assert limited.limit == grown

    async def test_additive_increase_after_the_first_decrease(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """After a decrease, the limit grows again as before (here: a round that waited a
        little adds less than 1)."""
        limited = destination()
        await answer_all(limited, clock, 1, status=503)
        assert limited.limit == INITIAL_LIMIT / 2
        await answer_all(limited, clock, 1, latency=0.05)
        await answer_all(limited, clock, 4, latency=0.08)
        assert 4.5 < limited.limit < 5

    @pytest.mark.parametrize("status", [429, 503])
    async def test_throttle_halves_once_per_round(
        self, destination: Callable[..., Destination], clock: Clock, status: int
    ) -> None:
        """Every request of a round may be refused: the limit halves once, not per answer."""
        limited = destination()
        await answer_all(limited, clock, INITIAL_LIMIT, status=status)
        assert limited.limit == INITIAL_LIMIT / 2
        await answer_all(limited, clock, 1, status=status)  # sent after the decrease
        assert limited.limit == INITIAL_LIMIT / 4

    async def test_timeout_halves_and_other_errors_do_not(
        self, destination: Callable[..., Destination]
    ) -> None:
        """A request that timed out is a throttle signal; a refused connection is not."""
        limited = destination()
        for code in ("CONNECTION_ERROR", TIMEOUT):
            turn = await limited.turn(FAR)
            with pytest.raises(ServiceNowUnavailable), turn:
                raise ServiceNowUnavailable(code, "x")
        assert (limited.limit, limited.in_flight) == (INITIAL_LIMIT / 2, 0)

    async def test_never_below_one(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        limited = destination()
        for _ in range(10):
            await answer_all(limited, clock, 1, status=429)
        assert limited.limit == 1

    async def test_fixed_concurrency(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """SERVICENOW_ADAPTIVE_CONCURRENCY=false: the limit is SERVICENOW_MAX_CONCURRENCY always."""
        fixed = destination(max_concurrency=20, adaptive=False)
        await answer_all(fixed, clock, 20, status=429)
        await answer_all(fixed, clock, 20)
        assert fixed.limit == 20


class TestPause:
    async def test_retry_after_pauses_every_request_and_logs_once(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """Retry-After: 5 holds every request for 5 s; one log event for the pause, however many
        answers said so; a turn that cannot come before its deadline fails at once."""
        paused = destination()
        with capture_logs() as logs:
            await answer_all(paused, clock, 3, status=429, headers={"Retry-After": "5"})
        assert [entry["event"] for entry in logs] == ["servicenow_throttled"]
        assert logs[0] | {"pause_s": None} == {
            "event": "servicenow_throttled",
            "log_level": "warning",
            "destination": URL,
            "reason": "retry_after",
            "status": 429,
            "pause_s": None,
            "limit": INITIAL_LIMIT // 2,
        }
        with pytest.raises(ServiceNowThrottled) as caught:
            await paused.turn(clock.now + 1)
        assert caught.value.code == THROTTLED
        assert caught.value.retry_after == pytest.approx(5, abs=0.1)
        assert "paused for 5 s more" in caught.value.message
        clock.advance(5)
        turn = await paused.turn(clock.now)
        turn.answered(200, NO_HEADERS)

    async def test_waiters_that_cannot_outlast_the_pause_fail_at_once(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """A request already waiting whose deadline comes before the pause ends fails when the
        pause begins, not at its deadline."""
        single = destination(max_concurrency=1)
        busy = await single.turn(FAR)
        short = asyncio.create_task(single.turn(clock.now + 5))
        long = asyncio.create_task(single.turn(FAR))
        await asyncio.sleep(0)
        busy.answered(429, {"Retry-After": "30"})
        with pytest.raises(ServiceNowThrottled, match="paused for 30 s more"):
            await short
        assert (single.waiting, long.done()) == (1, False)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long

    async def test_retry_after_is_capped(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """SERVICENOW_RETRY_AFTER_CAP bounds the pause."""
        paused = destination(retry_after_cap=60)
        await answer_all(paused, clock, 1, status=503, headers={"Retry-After": "86400"})
        assert paused.paused_until == pytest.approx(clock.now + 60, abs=0.1)

    async def test_waiters_go_at_the_end_of_the_pause(self, clock: Clock) -> None:
        """Requests that may wait past the pause are sent when it ends, in order (real time)."""
        flow = FlowControl(FlowSettings())
        paused = flow.destination(URL, b"identity")
        turn = await paused.turn(FAR)
        turn.answered(429, {"Retry-After": "0"})
        paused.paused_until = asyncio.get_running_loop().time() + 0.05
        order: list[int] = []

        async def send(number: int) -> None:
            (await paused.turn(FAR)).answered(200, NO_HEADERS)
            order.append(number)

        await asyncio.gather(*(send(n) for n in range(3)))
        assert order == [0, 1, 2]


class TestRateLimitRule:
    async def test_used_up_rule_pauses_until_the_reset(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """X-RateLimit-Limit 3: after three answers in the window, nothing is sent until
        X-RateLimit-Reset; then the next window's requests go."""
        ruled = destination()
        rule = {"X-RateLimit-Limit": "3", "X-RateLimit-Reset": str(int(clock.wall) + 10)}
        await answer_all(ruled, clock, 3, headers=rule)
        with capture_logs() as logs, pytest.raises(ServiceNowThrottled) as caught:
            await ruled.turn(clock.now + 5)
        assert caught.value.retry_after == pytest.approx(10, abs=0.6)
        assert logs[0]["reason"] == "rate_limit_rule"
        clock.advance(11)
        await answer_all(ruled, clock, 3)  # the new window

    async def test_remaining_is_believed_where_sent(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """A proxy's X-RateLimit-Remaining: 0 pauses at once."""
        ruled = destination()
        rule = {
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(clock.wall) + 30),
        }
        await answer_all(ruled, clock, 1, headers=rule)
        with pytest.raises(ServiceNowThrottled):
            await ruled.turn(clock.now + 5)

    async def test_rule_refusal_pauses_without_lowering_the_limit(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """A rule limits requests per hour, not at once: its 429 pauses but keeps the limit."""
        ruled = destination()
        refusal = {
            "Retry-After": "20",
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Reset": str(int(clock.wall) + 20),
        }
        await answer_all(ruled, clock, 1, status=429, headers=refusal)
        assert ruled.limit == INITIAL_LIMIT
        assert ruled.paused_until == pytest.approx(clock.now + 20, abs=0.6)


class TestTurns:
    async def test_over_the_limit_wait_in_order(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """With limit 1, requests are sent one after the other in the order they asked."""
        single = destination(max_concurrency=1)
        first = await single.turn(FAR)
        order: list[int] = []

        async def send(number: int) -> None:
            turn = await single.turn(FAR)
            order.append(number)
            await asyncio.sleep(0)
            turn.answered(200, NO_HEADERS)

        waiting = [asyncio.create_task(send(n)) for n in range(4)]
        await asyncio.sleep(0)
        assert (single.in_flight, single.waiting) == (1, 4)
        first.answered(200, NO_HEADERS)
        await asyncio.gather(*waiting)
        assert order == [0, 1, 2, 3]
        assert (single.in_flight, single.waiting) == (0, 0)

    async def test_no_turn_before_the_deadline(
        self, destination: Callable[..., Destination], clock: Clock
    ) -> None:
        """A request still waiting at its deadline fails THROTTLED and leaves the queue."""
        single = destination(max_concurrency=1)
        busy: Turn = await single.turn(FAR)
        with pytest.raises(ServiceNowThrottled) as caught:
            await single.turn(clock.now + 0.01)
        assert caught.value.code == THROTTLED
        assert caught.value.retry_after is None
        assert "has 1 requests in flight (its limit) and 0 waiting" in caught.value.message
        assert (single.in_flight, single.waiting) == (1, 0)
        busy.answered(200, NO_HEADERS)
        assert single.in_flight == 0

    async def test_cancelled_waiter_gives_its_place_back(
        self, destination: Callable[..., Destination]
    ) -> None:
        """A job cancelled while it waits leaves no slot taken and no place in the queue."""
        single = destination(max_concurrency=1)
        busy = await single.turn(FAR)
        waiter = asyncio.create_task(single.turn(FAR))
        await asyncio.sleep(0)
        waiter.cancel()
        busy.answered(200, NO_HEADERS)  # grants the cancelled waiter's turn first
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (single.in_flight, single.waiting) == (0, 0)


class TestDestinations:
    def test_one_per_base_url_and_identity(self) -> None:
        flow = FlowControl(FlowSettings())
        one = flow.destination(URL, b"a")
        assert flow.destination(URL, b"a") is one
        assert flow.destination(URL, b"b") is not one
        assert flow.destination("https://dev2.service-now.com", b"a") is not one
        assert len(list(flow)) == 3
