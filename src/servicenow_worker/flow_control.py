"""Flow control toward ServiceNow: how many requests each destination gets at once, and when.

A destination is a ServiceNow base URL and a credential identity (a salted digest, never the
secret; docs/contract.md §12). Each has its own `Destination`:

- a concurrency limit L between 1 and SERVICENOW_MAX_CONCURRENCY, adapted by AIMD with a latency
  gate (docs/flow-control.md explains the choice and the constants): while the destination uses
  its limit and answers come back fast, +1 per answer (doubling per round trip) when nothing
  queues at ServiceNow, +1/L (+1 per round trip) while little does, nothing beyond; x
  BACKOFF_RATIO on a 429 that is not a rate-limit rule's, a 503 or a timeout, once per round trip;
- a pause: `Retry-After` on a 429 or 503 holds every request to the destination until then
  (capped by SERVICENOW_RETRY_AFTER_CAP), and so does a rate-limit rule (`X-RateLimit-Limit`,
  `X-RateLimit-Reset`, `X-RateLimit-Remaining` where sent) whose requests this window are used up;
- a FIFO queue: a request over the limit, or during a pause, waits for its turn until the job's
  deadline; one whose turn cannot come by then fails at once with `ServiceNowThrottled`.

Everything runs on the event loop, so no lock is needed: a turn taken without waiting costs a few
attribute updates and no await.
"""

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Final, Protocol

import structlog

from servicenow_worker.errors import THROTTLED, TIMEOUT, ServiceNowThrottled, ServiceNowUnavailable

log = structlog.get_logger(__name__)

#: The limit a destination starts with (lower when SERVICENOW_MAX_CONCURRENCY is lower): a
#: one-node instance runs 4 REST requests at once and queues 50, so 8 never overruns it.
INITIAL_LIMIT: Final = 8
#: A throttle signal multiplies the limit by this (TCP's choice: halving converges to a fair share
#: among workers that do not talk to each other).
BACKOFF_RATIO: Final = 0.5
#: The limit grows only on answers that waited (took longer than the fastest recent answer) at
#: most this multiple of the fastest one, or QUEUE_SLACK: beyond it, requests queue at ServiceNow
#: and more concurrency only adds waiting. The slack keeps scheduling noise of a few milliseconds
#: from stopping growth against a very fast instance.
LATENCY_TOLERANCE: Final = 1.0
QUEUE_SLACK: Final = 0.01
#: Answers that waited at most this share of that allowance: nothing queues at ServiceNow, so
#: the limit grows by 1 per answer (doubling per round trip) instead of 1/L.
UNQUEUED_SHARE: Final = 0.25
#: The fastest recent answer is the fastest of the last 30 to 60 s, so a slower instance (or a
#: slower mix of requests) raises it within a minute.
FLOOR_WINDOW: Final = 30.0
#: A rule's window is trusted to have ended this long after its X-RateLimit-Reset (clock skew).
RESET_MARGIN: Final = 0.5
#: Idle destinations are forgotten beyond this many (one per instance and credential in use).
MAX_DESTINATIONS: Final = 10_000

THROTTLE_STATUSES: Final = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """SERVICENOW_MAX_CONCURRENCY, SERVICENOW_ADAPTIVE_CONCURRENCY, SERVICENOW_RETRY_AFTER_CAP."""

    max_concurrency: int = 32
    adaptive: bool = True
    retry_after_cap: float = 3600.0


class DestinationObserver(Protocol):
    """Where a destination reports what metrics count (metrics.py implements it)."""

    def throttled(self, status: int) -> None: ...

    def waited(self, seconds: float) -> None: ...


class FlowObserver(Protocol):
    def destination(self, base_url: str) -> DestinationObserver: ...


class _Unobserved:
    def destination(self, base_url: str) -> DestinationObserver:
        return self

    def throttled(self, status: int) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass


class FlowControl:
    """Every destination of one worker, by base URL and credential identity."""

    def __init__(
        self,
        settings: FlowSettings,
        observer: FlowObserver | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._observer: FlowObserver = observer or _Unobserved()
        self._clock = clock
        self._wall_clock = wall_clock
        self._destinations: dict[tuple[str, bytes], Destination] = {}

    def destination(self, base_url: str, identity: bytes) -> "Destination":
        """The destination of requests to `base_url` with the credentials `identity` stands for."""
        key = (base_url, identity)
        found = self._destinations.get(key)
        if found is None:
            self._prune()
            found = self._destinations[key] = Destination(
                base_url,
                self.settings,
                self._observer.destination(base_url),
                clock=self._clock,
                wall_clock=self._wall_clock,
            )
        return found

    def __iter__(self) -> Iterator["Destination"]:
        return iter(list(self._destinations.values()))

    def _prune(self) -> None:
        if len(self._destinations) < MAX_DESTINATIONS:
            return
        now = self._clock()
        idle = [key for key, found in self._destinations.items() if found.idle(now)]
        for key in idle[: len(idle) // 2 + 1]:  # the oldest half
            del self._destinations[key]


class Turn:
    """One request's permission to be sent; reports how it went when the answer (or error) comes.

    Used as `with turn:` around the request: leaving it without `answered` (an error, a
    cancellation) gives the slot back, counting a timeout as a throttle signal.
    """

    __slots__ = ("_destination", "_done", "_epoch", "_load", "_started")

    def __init__(self, destination: "Destination", started: float) -> None:
        self._destination = destination
        self._started = started
        self._epoch = destination._epoch
        self._load = destination.in_flight  # this request included
        self._done = False

    def answered(self, status: int, headers: Mapping[str, str]) -> None:
        if not self._done:
            self._done = True
            self._destination._answered(self, status, headers)

    def __enter__(self) -> "Turn":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._done:
            self._done = True
            timed_out = isinstance(exc, ServiceNowUnavailable) and exc.code == TIMEOUT
            self._destination._ended(self._epoch, timed_out=timed_out)


class Destination:
    """The limit, pause, rule budget and queue of one ServiceNow base URL and credential."""

    def __init__(
        self,
        base_url: str,
        settings: FlowSettings,
        observer: DestinationObserver,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url
        self._settings = settings
        self._observer = observer
        self._clock = clock
        self._wall_clock = wall_clock
        start = min(INITIAL_LIMIT, settings.max_concurrency) if settings.adaptive else None
        self.limit = float(start or settings.max_concurrency)
        self.in_flight = 0
        #: Monotonic time until which nothing is sent (0: not paused).
        self.paused_until = 0.0
        self._waiters: deque[_Waiter] = deque()
        self._wake_timer: asyncio.TimerHandle | None = None
        self._floor = _RollingMinimum(FLOOR_WINDOW)
        # Decreases so far; a signal about a request sent before the last one is not acted on again.
        self._epoch = 0
        self._rule = _RuleBudget()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def idle(self, now: float) -> bool:
        return not self.in_flight and not self._waiters and now >= self.paused_until

    async def turn(self, deadline: float) -> Turn:
        """Wait, in order, for this request's turn; `deadline` is the monotonic time by which it
        must be sent. Raises `ServiceNowThrottled` when the turn cannot come by then."""
        now = self._clock()
        if not self._waiters and self._open(now):
            self.in_flight += 1
            self._observer.waited(0.0)
            return Turn(self, now)
        if max(self.paused_until, now) > deadline:
            self._observer.waited(0.0)
            raise self._no_turn(now)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), deadline)
        self._waiters.append(waiter)
        self._wake_later(now)
        try:
            async with asyncio.timeout(deadline - now):
                await waiter.future
        except BaseException as error:
            if waiter.granted:
                self._ended(self._epoch, timed_out=False)  # granted, but no longer wanted
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            self._observer.waited(self._clock() - now)
            if isinstance(error, TimeoutError):
                raise self._no_turn(self._clock()) from None
            raise
        started = self._clock()
        self._observer.waited(started - now)
        return Turn(self, started)

    # -- what answers say ------------------------------------------------------------------------

    def _answered(self, turn: Turn, status: int, headers: Mapping[str, str]) -> None:
        now = self._clock()
        self.in_flight -= 1
        is_rule = self._rule.observe(status, headers, self._wall_clock())
        if status in THROTTLE_STATUSES:
            self._observer.throttled(status)
            if not is_rule:  # a rule limits requests per hour, not at once
                self._decrease(turn._epoch)
            retry_after = parse_retry_after(headers.get("Retry-After"))
            if retry_after is not None:
                pause = min(retry_after, self._settings.retry_after_cap)
                self._pause(now, now + pause, status=status, reason="retry_after")
        elif status < 500:
            self._grow(now - turn._started, turn._load, now)
        self._wake()

    def _ended(self, epoch: int, *, timed_out: bool) -> None:
        self.in_flight -= 1
        if timed_out:
            self._decrease(epoch)
        self._wake()

    def _decrease(self, epoch: int) -> None:
        if not self._settings.adaptive or epoch != self._epoch:
            return
        self._epoch += 1
        self.limit = max(1.0, self.limit * BACKOFF_RATIO)

    def _grow(self, latency: float, load: int, now: float) -> None:
        floor = self._floor.add(latency, now)
        if not self._settings.adaptive:
            return
        waited = latency - floor
        allowance = max(floor * LATENCY_TOLERANCE, QUEUE_SLACK)
        if waited > allowance:
            return  # requests queue at ServiceNow: more at once would only wait longer
        if load * 2 < self.limit:
            return  # half the limit was unused when it was sent: no evidence that more would work
        step = 1.0 if waited <= allowance * UNQUEUED_SHARE else 1.0 / self.limit
        self.limit = min(float(self._settings.max_concurrency), self.limit + step)

    def _pause(self, now: float, until: float, *, status: int | None, reason: str) -> None:
        if until <= self.paused_until:
            return
        was_paused = now < self.paused_until
        self.paused_until = until
        # Requests that cannot wait that long fail now rather than at their deadline.
        for waiter in [waiter for waiter in self._waiters if waiter.deadline < until]:
            self._waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(self._no_turn(now))
        if not was_paused:
            log.warning(
                "servicenow_throttled",
                destination=self.base_url,
                reason=reason,
                status=status,
                pause_s=round(until - now, 3),
                limit=int(self.limit),
            )

    # -- turns -----------------------------------------------------------------------------------

    def _open(self, now: float) -> bool:
        if now < self.paused_until or self.in_flight >= int(self.limit):
            return False
        wall = self._wall_clock()
        reset = self._rule.exhausted_until(self.in_flight, wall)
        if reset is None:
            return True
        self._pause(now, now + reset - wall + RESET_MARGIN, status=None, reason="rate_limit_rule")
        return False

    def _wake(self) -> None:
        self._wake_timer = None
        if not self._waiters:
            return
        now = self._clock()
        while self._waiters and self._open(now):
            future = self._waiters.popleft().future
            if not future.done():  # a cancelled waiter has not left the queue yet
                self.in_flight += 1
                future.set_result(None)
        self._wake_later(now)

    def _wake_later(self, now: float) -> None:
        """At the end of a pause, nothing else would wake the queue: a timer does."""
        if self._waiters and now < self.paused_until and self._wake_timer is None:
            loop = asyncio.get_running_loop()
            self._wake_timer = loop.call_later(self.paused_until - now, self._wake)

    def _no_turn(self, now: float) -> ServiceNowThrottled:
        paused_for = self.paused_until - now
        if paused_for > 0:
            why = f"is paused for {math.ceil(paused_for)} s more, as ServiceNow asked"
        else:
            why = f"has {self.in_flight} requests in flight (its limit) and {self.waiting} waiting"
        return ServiceNowThrottled(
            THROTTLED,
            f"the request to {self.base_url} did not get its turn before the job's deadline: "
            f"the destination {why}",
            retry_after=paused_for if paused_for > 0 else None,
            never_sent=True,
        )


class _Waiter:
    """A request waiting for its turn, and the time by which it must have it."""

    __slots__ = ("deadline", "future")

    def __init__(self, future: "asyncio.Future[None]", deadline: float) -> None:
        self.future = future
        self.deadline = deadline

    @property
    def granted(self) -> bool:
        future = self.future
        return future.done() and not future.cancelled() and future.exception() is None


class _RollingMinimum:
    """The smallest sample of the current and the previous window."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._current = math.inf
        self._previous = math.inf
        self._started = -math.inf

    def add(self, sample: float, now: float) -> float:
        if now - self._started >= self._window:
            recent = now - self._started < 2 * self._window
            self._previous = self._current if recent else math.inf
            self._current = math.inf
            self._started = now
        self._current = min(self._current, sample)
        return min(self._current, self._previous)


class _RuleBudget:
    """What a rate-limit rule still allows this window, as far as this worker can tell.

    ServiceNow sends `X-RateLimit-Limit` (requests per window) and `X-RateLimit-Reset` (Unix time
    of the window's end) on every answer a rule covers, but no count of what is left: the worker
    counts its own answers in the window (and believes `X-RateLimit-Remaining` where a proxy sends
    it). Other workers' requests count too, unseen: their first 429 pauses this one as well.
    """

    def __init__(self) -> None:
        self.limit: int | None = None
        self.reset = 0
        self.used = 0

    def observe(self, status: int, headers: Mapping[str, str], wall: float) -> bool:
        """Count an answer; whether it carried a rule's headers."""
        limit = _integer(headers.get("X-RateLimit-Limit"))
        reset = _integer(headers.get("X-RateLimit-Reset"))
        if limit is None or reset is None:
            return False
        if reset > self.reset:
            self.reset, self.used = reset, 0
        elif reset < self.reset:
            return True  # an answer from the window before
        self.limit = limit
        self.used += 1
        remaining = _integer(headers.get("X-RateLimit-Remaining"))
        if status == 429:
            remaining = 0
        if remaining is not None:
            self.used = max(self.used, limit - remaining)
        return True

    def exhausted_until(self, in_flight: int, wall: float) -> float | None:
        """The Unix time the window ends, when its requests are used up; else None."""
        if self.limit is None or wall >= self.reset or self.used + in_flight < self.limit:
            return None
        return float(self.reset)


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from `Retry-After` in seconds or as an HTTP date; None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    moment = http_date(value)
    return None if moment is None else max(0.0, moment.timestamp() - time.time())


def http_date(value: str | None) -> datetime | None:
    """An HTTP date header (`Retry-After`, `Date`) as a datetime; None when absent or bad."""
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None
