"""The emulated instance's clock: `sys_*_on` stamps, the `Date` header, and late commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest

from servicenow_emulators.table_api import ServiceNowEmulator

from .test_table_api import INCIDENTS, PASSWORD, USER, http_client

NOON = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def emulator() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emu:
        emu.wall_clock.set(NOON)
        yield emu


@pytest.fixture
async def client(emulator: ServiceNowEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(emulator.base_url) as c:
        yield c


async def test_rest_writes_are_stamped_by_the_clock_at_one_second_resolution(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    emulator.wall_clock.advance(0.75)  # 12:00:00.75 is stored as 12:00:00
    created = (await client.post(INCIDENTS, json={"short_description": "a"})).json()["result"]
    assert created["sys_created_on"] == created["sys_updated_on"] == "2026-01-31 12:00:00"
    assert created["opened_at"] == "2026-01-31 12:00:00"

    emulator.wall_clock.advance(61)
    updated = await client.patch(f"{INCIDENTS}/{created['sys_id']}", json={"state": "2"})
    assert updated.json()["result"]["sys_updated_on"] == "2026-01-31 12:01:01"
    assert updated.json()["result"]["sys_created_on"] == "2026-01-31 12:00:00"


async def test_many_records_share_one_second_while_the_clock_stands_still(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    for n in range(5):
        await client.post(INCIDENTS, json={"short_description": str(n)})
    stamps = {r["sys_updated_on"] for r in emulator.records("incident")}
    assert stamps == {"2026-01-31 12:00:00"}


async def test_the_date_header_is_the_instance_clock(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    first = await client.get(INCIDENTS)
    assert parsedate_to_datetime(first.headers["Date"]) == NOON
    emulator.wall_clock.advance(3600.9)
    later = await client.get(INCIDENTS)
    assert later.headers["Date"] == "Sat, 31 Jan 2026 13:00:00 GMT"
    # errors carry it too
    missing = await client.get(f"{INCIDENTS}/nope")
    assert missing.status_code == 404
    assert missing.headers["Date"] == "Sat, 31 Jan 2026 13:00:00 GMT"


async def test_an_unset_clock_follows_real_time() -> None:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emu, http_client(emu.base_url) as c:
        before = datetime.now(UTC).replace(microsecond=0)
        answer = await c.get(INCIDENTS)
        after = datetime.now(UTC)
        assert before <= parsedate_to_datetime(answer.headers["Date"]) <= after


async def test_a_late_commit_appears_now_with_an_earlier_stamp(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    emulator.wall_clock.advance(30)
    late = emulator.write(
        "incident", {"short_description": "slow transaction"}, updated_on=NOON.timestamp() + 5
    )
    assert late["sys_updated_on"] == "2026-01-31 12:00:05"
    assert late["number"].startswith("INC")  # a REST write: numbering and defaults apply

    changed = emulator.write(
        "incident", {"state": "2"}, sys_id=late["sys_id"], updated_on="2026-01-31 12:00:20"
    )
    assert changed["sys_updated_on"] == "2026-01-31 12:00:20"
    assert changed["sys_mod_count"] == "1"

    now = emulator.write("incident", {"state": "3"}, sys_id=late["sys_id"])
    assert now["sys_updated_on"] == "2026-01-31 12:00:30"

    answer = await client.get(
        INCIDENTS, params={"sysparm_query": "sys_updated_on>2026-01-31 12:00:29"}
    )
    assert [r["sys_id"] for r in answer.json()["result"]] == [late["sys_id"]]
    with pytest.raises(KeyError):
        emulator.write("incident", {}, sys_id="nope")


async def test_writes_and_order_by_updated_then_sys_id_page_through_a_second(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    """The query a change feed sends: after (second, sys_id), ties broken by sys_id."""
    ids = sorted(emulator.write("incident", {})["sys_id"] for _ in range(4))
    emulator.wall_clock.advance(1)
    later = emulator.write("incident", {})["sys_id"]
    query = (
        f"sys_updated_on>2026-01-31 12:00:00^NQsys_updated_on=2026-01-31 12:00:00^sys_id>{ids[1]}"
        "^ORDERBYsys_updated_on^ORDERBYsys_id"
    )
    answer = await client.get(INCIDENTS, params={"sysparm_query": query})
    assert [r["sys_id"] for r in answer.json()["result"]] == [ids[2], ids[3], later]


async def test_an_instance_may_read_date_literals_in_another_zone(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    """By default a literal is compared as UTC; `date_literal_offset` plays an instance that
    reads it that many seconds east of UTC (the stored values stay UTC)."""
    record = emulator.write("incident", {}, updated_on="2026-01-31 10:30:00")
    query = {"sysparm_query": "sys_updated_on>2026-01-31 12:00:00"}
    assert (await client.get(INCIDENTS, params=query)).json()["result"] == []
    emulator.date_literal_offset = 2 * 3600  # 12:00:00 read as 10:00:00 UTC
    [found] = (await client.get(INCIDENTS, params=query)).json()["result"]
    assert (found["sys_id"], found["sys_updated_on"]) == (record["sys_id"], "2026-01-31 10:30:00")
