"""The change feed's guarantee (docs/contract.md §10), shown the way a process lives it.

Writers create and update incidents, many within one second and some committed late (stamped up
to `settle` seconds before they become visible), while a watcher loop calls `changes` through the
real worker process (worker process → Zeebe gateway emulator → ServiceNow emulator) with a small
`limit`, passing each returned cursor to the next call. The instance clock is driven by the test,
never slept on. After every call the feed's position is checked against the emulator's records:
every record whose current change lies at or before that position has been handed out with that
change, exactly once, in order. The sibling test runs the same writers against the loop processes
usually write (`read` with `sys_updated_on>last`) and shows it losing records: the check can fail.
"""

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker.change_cursor import Position, decode, parse_stamp, stamp_of

from .conftest import JOB_TYPE, job_variables
from .worker_process import WorkerProcess

SETTLE = 10  # the default SERVICENOW_CHANGES_SETTLE
LIMIT = 50
STEPS = 75
START = datetime(2026, 1, 31, 8, 0, 0, tzinfo=UTC).timestamp()

Change = tuple[str, str]  # (sys_updated_on, sys_id): the feed's order
Call = Callable[[], Awaitable[list[Change]]]


@pytest.fixture(name="worker")
async def _worker(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(
        ZEEBE_ADDRESS=gateway.address,
        SERVICENOW_URL_TEMPLATE=servicenow.base_url,
        WORKER_POLL_TIMEOUT="0.5",
        HEALTH_PORT="0",
    )
    await process.start()
    yield process
    await process.kill()


@dataclass
class Writers:
    """Creates and updates at the instance clock's current second; some commit late."""

    servicenow: ServiceNowEmulator
    rng: random.Random
    # every change made: sys_id → the stamps it held, and which of them were late commits
    history: dict[str, list[str]] = field(default_factory=dict)
    late: set[Change] = field(default_factory=set)
    count: int = 0

    def burst(self, size: int) -> None:
        now = self.servicenow.wall_clock.now()
        for _ in range(size):
            late = self.rng.random() < 0.08
            updated_on = stamp_of(now - self.rng.randint(1, SETTLE - 1)) if late else None
            sys_id = None
            if self.history and self.rng.random() < 0.6:
                sys_id = self.rng.choice(list(self.history))
            record = self.servicenow.write(
                "incident",
                {"short_description": f"change {self.count}"},
                sys_id=sys_id,
                updated_on=updated_on,
            )
            self.history.setdefault(record["sys_id"], []).append(record["sys_updated_on"])
            if late:
                self.late.add((record["sys_updated_on"], record["sys_id"]))
            self.count += 1


async def drive(servicenow: ServiceNowEmulator, call: Call, check: Callable[[], None]) -> Writers:
    """The writers and the watcher in turns: a burst, then calls until the watcher has caught up
    (at most three); the clock moves 0 to 2 s a step. Then the writers stop and the clock passes
    the settle window, and the watcher drains."""
    rng = random.Random(17)
    servicenow.wall_clock.set(START)
    writers = Writers(servicenow, rng)
    await call()  # the watcher starts from now
    for _ in range(STEPS):
        writers.burst(rng.randint(20, 120))
        for _ in range(3):
            caught_up = not await call()
            check()
            if caught_up:
                break
        servicenow.wall_clock.advance(rng.choice((0, 1, 1, 2)))
    servicenow.wall_clock.advance(SETTLE + 60)
    while await call():
        check()
    check()
    return writers


async def answer(gateway: ZeebeGatewayEmulator, variables: dict[str, Any]) -> dict[str, Any]:
    """One job through the worker process; its response variable."""
    key = gateway.create_job(JOB_TYPE, variables, {"resultVariable": "response"})
    outcome = await gateway.wait_for_outcome(key, timeout=30)
    assert outcome.kind == "complete", outcome.error_message
    response: dict[str, Any] = outcome.variables["response"]
    return response


@dataclass
class Feed:
    """The watcher loop of the README: `changes` with the last cursor, through the worker."""

    gateway: ZeebeGatewayEmulator
    servicenow: ServiceNowEmulator
    cursor: str | None = None
    position: Position | None = None
    handed_out: list[Change] = field(default_factory=list)
    calls: int = 0

    async def call(self) -> list[Change]:
        """One call; the changes it handed out when more wait (hasMore), else []."""
        inputs: dict[str, Any] = {"operation": "changes", "table": "incident", "limit": LIMIT}
        if self.cursor is not None:
            inputs["cursor"] = self.cursor
        clock = self.servicenow.wall_clock.now()
        response = await answer(self.gateway, job_variables(**inputs))
        self.calls += 1
        got = [(r["sys_updated_on"], r["sys_id"]) for r in response["result"]]
        self.handed_out.extend(got)
        self.cursor = response["cursor"]
        self.position = decode(self.cursor, "incident", None)
        # the cursor never passes a change younger than the settle time
        assert self.position.instant <= clock - SETTLE
        return got if response["hasMore"] else []

    def check(self) -> None:
        """Every record whose current change is at or before the feed's position was handed out
        with it; nothing twice; in the feed's order."""
        assert self.handed_out == sorted(set(self.handed_out)), "repeated or out of order"
        assert self.position is not None
        handed_out = set(self.handed_out)
        for record in self.servicenow.records("incident"):
            change = (record["sys_updated_on"], record["sys_id"])
            if _at_or_before(change, self.position):
                assert change in handed_out, f"{change} was skipped"


def _at_or_before(change: Change, position: Position) -> bool:
    if position.sys_id is None:
        return change[0] <= position.updated_on
    return change <= (position.updated_on, position.sys_id)


async def test_every_change_is_handed_out_once_and_in_order(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, worker: WorkerProcess
) -> None:
    feed = Feed(gateway, servicenow)
    writers = await drive(servicenow, feed.call, feed.check)

    assert writers.count >= 5000
    assert feed.calls >= 50
    # drained: the feed's last settle bound lies after every change, so all final states are in
    assert feed.position is not None and feed.position.sys_id is None
    assert feed.position.updated_on >= max(
        r["sys_updated_on"] for r in servicenow.records("incident")
    )
    for change in feed.handed_out:
        assert change[0] in writers.history[change[1]], f"{change} was never written"
    assert writers.late & set(feed.handed_out), "no late commit was handed out"
    print(
        f"\n{writers.count} changes ({len(writers.late)} committed late) to "
        f"{len(writers.history)} records; {feed.calls} changes calls handed out "
        f"{len(feed.handed_out)} changes"
    )


@dataclass
class NaiveLoop:
    """What a process does without `changes`: read `sys_updated_on>last`, remember the newest."""

    gateway: ZeebeGatewayEmulator
    last: str = stamp_of(START - 1)
    handed_out: list[Change] = field(default_factory=list)
    calls: int = 0

    async def call(self) -> list[Change]:
        variables = job_variables(
            operation="read",
            table="incident",
            limit=LIMIT,
            query=f"sys_updated_on>{self.last}^ORDERBYsys_updated_on^ORDERBYsys_id",
        )
        page = await answer(self.gateway, variables)
        self.calls += 1
        got = [(r["sys_updated_on"], r["sys_id"]) for r in page["result"]]
        self.handed_out.extend(got)
        if got:
            self.last = got[-1][0]
        return got if page["hasMore"] else []


async def test_a_naive_loop_over_the_same_writes_loses_changes(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, worker: WorkerProcess
) -> None:
    """Pages that end inside a second lose the rest of that second; late commits land behind
    `last`. The same check the feed passes fails here."""
    naive = NaiveLoop(gateway)
    writers = await drive(servicenow, naive.call, lambda: None)

    handed_out = set(naive.handed_out)
    lost = [
        (r["sys_updated_on"], r["sys_id"])
        for r in servicenow.records("incident")
        if (r["sys_updated_on"], r["sys_id"]) not in handed_out
    ]
    lost_late = [change for change in lost if change in writers.late]
    lost_to_ties = [change for change in lost if change not in writers.late]
    print(
        f"\nnaive loop: {naive.calls} calls, {len(lost)} of {len(writers.history)} records' "
        f"last changes lost ({len(lost_late)} late commits, {len(lost_to_ties)} inside a second)"
    )
    assert lost_late, "a late commit behind `last` should be lost"
    assert lost_to_ties, "records of a second cut by a page end should be lost"
    assert naive.calls >= 50
    assert parse_stamp(naive.last) > START
