"""Throttling of the ServiceNow emulator: a node's REST semaphore and hourly rate-limit rules.

What a real instance does (ServiceNow's docs on semaphores and rate-limit rules):

- **Capacity** (`Capacity`): inbound REST runs in a semaphore pool (API_INT, typically 4 threads
  per node) with a queue of at most 50; when the queue is full, new requests are rejected with
  429. While a request holds a slot it takes the emulator's `latency` (its service time). Whether
  that 429 carries `Retry-After` and a JSON body is not documented: the emulator sends both (a
  guess, `Capacity.retry_after` seconds, and the body in `BUSY_MESSAGE`/`BUSY_DETAIL`).
- **Rate-limit rules** (`RateLimitRule`): requests per hour per user, for one user or for all
  users (a user's own rule wins over an all-users rule; among several, the lowest limit). Every
  answer a rule covers carries `X-RateLimit-Limit`, `X-RateLimit-Reset` (Unix time the window
  ends) and `X-RateLimit-Rule` (the rule's sys_id); no `X-RateLimit-Remaining`. A request over the
  limit gets 429 `Rate limit exceeded` with `Retry-After` (seconds until the reset) and is not
  counted. Windows are fixed and aligned to the clock (the top of the hour for 3600 s); a shorter
  `window` makes an "hourly" rule testable in seconds. A real instance counts per node and writes
  its counts every 30 s, so it may let a few more through; the emulator counts exactly.

The emulator wires `Throttling.middleware` in front of its request pipeline (a slot is held for
the whole answer) and asks `refusal` and `headers` inside it, so refused requests are recorded
like any other.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from ._table_faults import Fault

__all__ = ["Capacity", "RateLimitRule", "Throttling", "ThrottlingCounts"]

BUSY_MESSAGE = "Too Many Requests"
BUSY_DETAIL = "Rejecting request: the REST semaphore queue is full"
RATE_LIMITED_MESSAGE = "Rate limit exceeded"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Capacity:
    """`slots` requests served at once, `queue` more waiting in order; 429 beyond."""

    slots: int
    queue: int = 50
    retry_after: int = 1

    def __post_init__(self) -> None:
        if self.slots < 1 or self.queue < 0 or self.retry_after < 0:
            raise ValueError("slots must be at least 1, queue and retry_after at least 0")


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """At most `limit` requests per `window` seconds, per user (`user`: that user only)."""

    limit: int
    window: int = 3600
    user: str | None = None
    sys_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.limit < 0 or self.window < 1:
            raise ValueError("limit must be at least 0 and window at least 1 second")

    @property
    def per(self) -> str:
        return "hour" if self.window == 3600 else f"{self.window} s"


@dataclass(slots=True)
class ThrottlingCounts:
    """What the throttles did so far (tests and benchmarks read it)."""

    admitted: int = 0
    refused_busy: int = 0
    refused_rate: int = 0
    most_running: int = 0
    most_queued: int = 0


class Throttling:
    """The instance's capacity and rate-limit rules (both optional; `rules` may be changed)."""

    def __init__(
        self,
        capacity: Capacity | None = None,
        rules: Sequence[RateLimitRule] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity = capacity
        self.rules = list(rules)
        self.counts = ThrottlingCounts()
        self.running = 0
        self._clock = clock
        self._queue: deque[asyncio.Future[None]] = deque()
        # Requests counted per (rule, user, window start).
        self._used: dict[tuple[str, str, int], int] = {}
        # What was decided about each request being answered, by id(request).
        self._refusals: dict[int, Fault] = {}
        self._rule_headers: dict[int, dict[str, str]] = {}

    @property
    def queued(self) -> int:
        return len(self._queue)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Hold a slot for the whole answer, or mark the request refused (the pipeline answers)."""
        try:
            return await self._admitted(request, handler)
        finally:
            self._refusals.pop(id(request), None)
            self._rule_headers.pop(id(request), None)

    async def _admitted(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        capacity = self.capacity
        if capacity is None:
            return await handler(request)
        if self.running < capacity.slots:
            self.running += 1
            self.counts.most_running = max(self.counts.most_running, self.running)
        elif len(self._queue) < capacity.queue:
            await self._wait_for_slot()
        else:
            self.counts.refused_busy += 1
            self._refusals[id(request)] = Fault.error(
                429, BUSY_MESSAGE, BUSY_DETAIL, retry_after=capacity.retry_after
            )
            return await handler(request)
        try:
            return await handler(request)
        finally:
            self._release()

    async def _wait_for_slot(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        self.counts.most_queued = max(self.counts.most_queued, len(self._queue))
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._release()  # handed a slot while going away
            elif future in self._queue:
                self._queue.remove(future)
            raise

    def _release(self) -> None:
        while self._queue:
            future = self._queue.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes on: `running` stays
                return
        self.running -= 1

    def refusal(self, request: web.Request, user: str | None) -> Fault | None:
        """The 429 this request gets (queue full, or its rule used up), else None (counted)."""
        refused = self._refusals.get(id(request))
        if refused is not None:
            return refused
        rule = self._rule_for(user) if request.path.startswith("/api/") else None
        if rule is None or user is None:
            self.counts.admitted += 1
            return None
        now = self._clock()
        start = int(now // rule.window * rule.window)
        reset = start + rule.window
        headers = {
            "X-RateLimit-Limit": str(rule.limit),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Rule": rule.sys_id,
        }
        self._rule_headers[id(request)] = headers
        key = (rule.sys_id, user, start)
        used = self._used.get(key, 0)
        if used >= rule.limit:
            self.counts.refused_rate += 1
            return Fault.error(
                429,
                RATE_LIMITED_MESSAGE,
                f"Rate limit of {rule.limit} requests per {rule.per} for Table API exceeded",
                retry_after=max(1, math.ceil(reset - now)),
                headers=headers,
            )
        if not used:
            self._forget_before(rule, start)
        self._used[key] = used + 1
        self.counts.admitted += 1
        return None

    def headers(self, request: web.Request) -> Mapping[str, str]:
        """The rate-limit headers of the rule that covered this request (empty: none)."""
        return self._rule_headers.get(id(request), {})

    def _rule_for(self, user: str | None) -> RateLimitRule | None:
        own = [rule for rule in self.rules if rule.user is not None and rule.user == user]
        candidates = own or [rule for rule in self.rules if rule.user is None]
        return min(candidates, key=lambda rule: rule.limit, default=None)

    def _forget_before(self, rule: RateLimitRule, start: int) -> None:
        for key in [key for key in self._used if key[0] == rule.sys_id and key[2] < start]:
            del self._used[key]
