"""`changes` end to end (docs/contract.md §10): start, since, cursor, settling, hasMore, refusals."""

from datetime import UTC, datetime
from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator

from ..template.conftest import EXAMPLES
from ..template.test_examples import job_variables as task_variables
from ..template.test_examples import read_process
from .conftest import JOB_TYPE, PASSWORD, USER, RunJob, StartWorker, job_variables

NOON = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)
SETTLE = 10  # the default SERVICENOW_CHANGES_SETTLE


def changes(**inputs: Any) -> dict[str, Any]:
    return job_variables(operation="changes", table="incident", **inputs)


async def feed(run_job: RunJob, **inputs: Any) -> dict[str, Any]:
    """One changes call; its response variable."""
    outcome = await run_job(changes(**inputs), {"resultVariable": "changes"})
    assert outcome.kind == "complete", outcome.error_message
    response: dict[str, Any] = outcome.variables["changes"]
    assert response["count"] == len(response["result"])
    return response


async def failed(run_job: RunJob, **inputs: Any) -> JobOutcome:
    outcome = await run_job(changes(**inputs))
    assert outcome.kind == "fail"
    return outcome


def at(seconds: float) -> str:
    """NOON + seconds as ServiceNow stores it."""
    return datetime.fromtimestamp(NOON.timestamp() + seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(autouse=True)
def stopped_clock(servicenow: ServiceNowEmulator) -> None:
    servicenow.wall_clock.set(NOON)


def numbers(response: dict[str, Any]) -> list[str]:
    return [record["number"] for record in response["result"]]


async def test_without_cursor_or_since_a_watcher_starts_from_now(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """No records, a cursor at ServiceNow's now minus the settle time; then only later changes."""
    servicenow.wall_clock.set(NOON.timestamp() - 3600)
    old = servicenow.write("incident", {"short_description": "an hour ago"})["number"]
    servicenow.wall_clock.set(NOON)
    recent = servicenow.write("incident", {"short_description": "settling"})["number"]
    start = await feed(run_job)
    assert (start["result"], start["count"], start["hasMore"]) == ([], 0, False)
    assert start["status"] == 200

    servicenow.wall_clock.advance(SETTLE + 1)
    later = await feed(run_job, cursor=start["cursor"])
    assert numbers(later) == [recent]
    assert old not in numbers(later)


async def test_since_starts_after_that_instant(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    first = servicenow.write("incident", {}, updated_on=at(-120))["number"]
    second = servicenow.write("incident", {}, updated_on=at(-60))["number"]
    third = servicenow.write("incident", {}, updated_on=at(-59))["number"]
    for since in (at(-60), "2026-01-31T11:59:00Z", "2026-01-31T12:59:00+01:00"):
        assert numbers(await feed(run_job, since=since)) == [third]
    assert numbers(await feed(run_job, since="2026-01-31T11:58:59.5Z")) == [second, third]
    assert numbers(await feed(run_job, since=at(-3600))) == [first, second, third]


async def test_the_cursor_carries_on_where_the_last_call_stopped(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """Ties inside one second are resolved by sys_id: a page that ends mid-second goes on there."""
    same_second = sorted(
        (servicenow.write("incident", {}, updated_on=at(-30)) for _ in range(7)),
        key=lambda r: r["sys_id"],
    )
    later = servicenow.write("incident", {}, updated_on=at(-29))
    pages: list[list[str]] = []
    response = await feed(run_job, since=at(-31), limit=3)
    pages.append(numbers(response))
    while response["hasMore"]:
        response = await feed(run_job, cursor=response["cursor"], limit=3)
        pages.append(numbers(response))
    expected = [r["number"] for r in [*same_second, later]]
    assert pages == [expected[0:3], expected[3:6], expected[6:8]]
    # nothing new: the same cursor comes back to nothing
    again = await feed(run_job, cursor=response["cursor"], limit=3)
    assert (again["result"], again["hasMore"]) == ([], False)


async def test_has_more_is_exact(run_job: RunJob, servicenow: ServiceNowEmulator) -> None:
    """A full page says hasMore only when another settled change waits."""
    for _ in range(3):
        servicenow.write("incident", {}, updated_on=at(-60))
    exactly_full = await feed(run_job, since=at(-61), limit=3)
    assert (exactly_full["count"], exactly_full["hasMore"]) == (3, False)

    servicenow.write("incident", {})  # changed now: not settled yet
    still_full = await feed(run_job, since=at(-61), limit=3)
    assert (still_full["count"], still_full["hasMore"]) == (3, False)

    servicenow.write("incident", {}, updated_on=at(-50))  # settled: it waits
    more = await feed(run_job, since=at(-61), limit=3)
    assert (more["count"], more["hasMore"]) == (3, True)


async def test_changes_inside_the_settle_window_are_held_back(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """A late commit stamped inside the window is handed out once the window has passed it."""
    start = await feed(run_job)  # cursor at 11:59:49 (12:00:00 less settle, less a second)
    servicenow.wall_clock.advance(5)
    fresh = servicenow.write("incident", {"short_description": "fresh"})["number"]
    assert (await feed(run_job, cursor=start["cursor"]))["result"] == []

    servicenow.wall_clock.advance(SETTLE + 1)
    # a transaction that began 8 s ago commits only now, behind the fresh change
    late = servicenow.write("incident", {}, updated_on=at(8))["number"]
    response = await feed(run_job, cursor=start["cursor"])
    assert numbers(response) == [fresh]
    servicenow.wall_clock.advance(SETTLE)
    assert numbers(await feed(run_job, cursor=response["cursor"])) == [late]


async def test_query_fields_and_display_values(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """The extra query filters; fields always include sys_id and sys_updated_on; display values
    come as with read, also with displayValue true."""
    caller = servicenow.insert("sys_user", {"name": "Abel Tuter"})["sys_id"]
    wanted = servicenow.write(
        "incident", {"impact": "1", "urgency": "1", "caller_id": caller}, updated_on=at(-60)
    )
    servicenow.write("incident", {"impact": "3", "urgency": "3"}, updated_on=at(-60))
    response = await feed(
        run_job, since=at(-61), query="priority=1", fields="number,caller_id", displayValue="true"
    )
    [record] = response["result"]
    assert set(record) == {"number", "caller_id", "sys_id", "sys_updated_on"}
    assert record["number"] == wanted["number"]
    assert record["caller_id"]["display_value"] == "Abel Tuter"
    assert set(record["caller_id"]) == {"display_value", "link"}
    assert record["sys_updated_on"] == at(-60)
    [request] = [r for r in servicenow.requests if "sys_updated_on>" in r.query["sysparm_query"]]
    assert request.query["sysparm_display_value"] == "all"

    plain = await feed(
        run_job, since=at(-61), query="priority=1", fields="number", excludeReferenceLink=True
    )
    assert plain["result"] == [
        {"number": wanted["number"], "sys_id": wanted["sys_id"], "sys_updated_on": at(-60)}
    ]
    both = await feed(run_job, since=at(-61), query="priority=1", displayValue="all")
    assert both["result"][0]["sys_updated_on"] == {"display_value": at(-60), "value": at(-60)}


async def test_the_query_servicenow_receives(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """ServiceNow's own operators: ^NQ for the rest of the cursor's second, ORDERBY for the order,
    one record past the page for hasMore."""
    for _ in range(3):
        servicenow.write("incident", {"impact": "1", "urgency": "1"}, updated_on=at(-60))
    first = await feed(run_job, since=at(-61), limit=2, query="active=true")
    last_id = max(r["sys_id"] for r in first["result"])
    servicenow.clear_requests()
    await feed(run_job, cursor=first["cursor"], limit=2, query="active=true")
    [request] = servicenow.requests
    stamp = at(-60)
    assert request.query["sysparm_query"] == (
        f"active=true^sys_updated_on>{stamp}"
        f"^NQactive=true^sys_updated_on={stamp}^sys_id>{last_id}"
        "^ORDERBYsys_updated_on^ORDERBYsys_id"
    )
    assert request.query["sysparm_limit"] == "3"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda c: c[:-5], "was changed or cut short"),
        (lambda c: c[: len(c) // 2], "was changed or cut short"),
        (lambda c: c.replace(c[5], "A" if c[5] != "A" else "B", 1), "was changed or cut short"),
        (lambda c: "v2" + c[2:], "was made by another version of the worker (v2)"),
        (lambda c: "2026-01-31 12:00:00", "is not a cursor"),
    ],
    ids=["end cut off", "halved", "edited", "newer version", "a date"],
)
async def test_a_cursor_that_is_not_one_is_refused(
    run_job: RunJob, servicenow: ServiceNowEmulator, edit: Any, problem: str
) -> None:
    cursor = (await feed(run_job))["cursor"]
    servicenow.clear_requests()
    outcome = await failed(run_job, cursor=edit(cursor))
    assert outcome.retries == 0
    assert outcome.error_message.startswith(f"cursor {problem}: pass on the cursor")
    assert "opaque" in outcome.error_message
    assert servicenow.requests == []


async def test_a_cursor_of_another_table_or_query_is_refused(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    cursor = (await feed(run_job, query="priority=1"))["cursor"]
    assert (await feed(run_job, query="priority=1", cursor=cursor))["result"] == []
    for other in ({"query": "priority=2"}, {}, {"table": "problem", "query": "priority=1"}):
        inputs = {"query": "priority=1", **other} if other else {}
        variables = job_variables(**{"operation": "changes", "table": "incident", **inputs})
        outcome = await run_job({**variables, "cursor": cursor})
        assert outcome.kind == "fail"
        assert outcome.retries == 0
        assert "was made for another table or query" in outcome.error_message


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"since": "yesterday"}, "since must be a date-time such as 2026-01-31T08:00:00Z"),
        ({"query": "priority=1^ORDERBYnumber"}, "query is an extra condition here"),
        ({"query": "priority=1^NQpriority=2"}, "query is an extra condition here"),
        ({"query": "priority=1^EQ"}, "query is an extra condition here"),
        ({"limit": 0}, "limit must be an integer from 1 to 1000"),
    ],
)
async def test_invalid_inputs_fail_before_any_request(
    run_job: RunJob, servicenow: ServiceNowEmulator, inputs: dict[str, Any], message: str
) -> None:
    outcome = await failed(run_job, **inputs)
    assert outcome.retries == 0
    assert outcome.error_message.startswith(message)
    assert servicenow.requests == []


async def test_inputs_of_other_operations_are_ignored(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """A sysId, payload or offset left in scope by an earlier task changes nothing."""
    servicenow.write("incident", {}, updated_on=at(-60))
    plain = await feed(run_job, since=at(-61))
    foreign = await feed(
        run_job, since=at(-61), sysId="nope/..", payload="not json", offset=-4, idempotencyField=1
    )
    assert foreign == plain
    assert {r.path for r in servicenow.requests} == {"/api/now/table/incident"}
    assert {r.query.get("sysparm_offset") for r in servicenow.requests} == {"0"}


async def test_records_hidden_by_acls_take_places_but_nothing_is_skipped(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """ServiceNow applies the limit before ACLs: a hidden row takes a place of the page. The feed
    goes on after the rows it got, and says hasMore while ServiceNow holds rows past the page."""
    rows = sorted(
        (servicenow.write("incident", {}, updated_on=at(-60)) for _ in range(5)),
        key=lambda r: r["sys_id"],
    )
    servicenow.hidden_sys_ids.add(rows[0]["sys_id"])
    first = await feed(run_job, since=at(-61), limit=3)
    assert numbers(first) == [r["number"] for r in rows[1:4]]
    assert first["hasMore"] is True
    rest = await feed(run_job, cursor=first["cursor"], limit=3)
    assert (numbers(rest), rest["hasMore"]) == ([rows[4]["number"]], False)


async def test_a_window_of_hidden_records_fails_the_job(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """When ACLs hide every record ServiceNow counts, the feed cannot move past them: it says so
    instead of answering empty pages for ever."""
    for _ in range(3):
        servicenow.hidden_sys_ids.add(
            servicenow.write("incident", {}, updated_on=at(-60))["sys_id"]
        )
    outcome = await failed(run_job, since=at(-61))
    assert outcome.retries == 0
    assert "ACLs hide them from the integration user" in outcome.error_message


@pytest.mark.parametrize("offset", [-5 * 3600, 2 * 3600], ids=["west of UTC", "east of UTC"])
@pytest.mark.parametrize("start", [{}, {"since": at(-3600)}], ids=["from now", "since"])
async def test_a_feeds_first_call_checks_that_literals_are_read_as_utc(
    run_job: RunJob, servicenow: ServiceNowEmulator, offset: int, start: dict[str, Any]
) -> None:
    """The first call (no cursor) finds the table's oldest change again by its stamp: an
    instance that reads the literal in another zone fails it, in either direction, before a
    cursor exists."""
    oldest = servicenow.write("incident", {}, updated_on=at(-7200))
    servicenow.write("incident", {}, updated_on=at(-60))
    assert (await feed(run_job, **start))["status"] == 200
    [check, *_] = [r for r in servicenow.requests if r.query["sysparm_query"].startswith("sys_id=")]
    assert check.query["sysparm_query"] == f"sys_id={oldest['sys_id']}^sys_updated_on={at(-7200)}"

    servicenow.date_literal_offset = offset
    outcome = await failed(run_job, **start)
    assert outcome.retries == 0
    assert f"does not find record {oldest['sys_id']} of incident" in outcome.error_message
    assert "set the integration user's time zone to GMT" in outcome.error_message


async def test_records_before_the_cursor_fail_the_job(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """An instance that read the date-time literal in another zone would hand back records from
    before the cursor: the job fails with retries 0 rather than pass them on."""
    servicenow.write("incident", {}, updated_on=at(-3600))
    cursor = (await feed(run_job))["cursor"]
    servicenow.date_literal_offset = 2 * 3600  # reads `12:00:00` as 10:00:00 UTC
    outcome = await failed(run_job, cursor=cursor)
    assert outcome.retries == 0
    assert "does not read the date-time literal as UTC" in outcome.error_message


async def test_the_feed_example_works_as_written(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README pattern: the example's changes task, its inputs and headers as the BPMN file
    has them, called twice with the cursor it leaves; the integration user's own change is left
    out by its query."""
    monkeypatch.setenv("SECRET_snUser", USER)
    monkeypatch.setenv("SECRET_snPwd", PASSWORD)
    await start_worker()
    _, [task] = read_process(EXAMPLES / "servicenow-p1-incident-feed.bpmn")
    scope: dict[str, Any] = {}

    async def call() -> None:
        key = gateway.create_job(JOB_TYPE, task_variables(task, scope), task.headers)
        outcome = await gateway.wait_for_outcome(key)
        assert outcome.kind == "complete", outcome.error_message
        scope.update(outcome.variables)

    await call()
    assert (scope["incidents"], scope["moreWaiting"]) == ([], False)
    servicenow.add_user("abel.tuter", "secret")
    p1 = servicenow.write("incident", {"impact": "1", "urgency": "1"}, user="abel.tuter")
    servicenow.write("incident", {"impact": "1", "urgency": "1"}, user=USER)
    servicenow.write("incident", {"impact": "3", "urgency": "3"}, user="abel.tuter")
    servicenow.wall_clock.advance(SETTLE + 1)
    await call()
    [incident] = scope["incidents"]
    assert incident["number"] == p1["number"]
    assert set(incident) == {
        "number", "short_description", "state", "assigned_to", "sys_id", "sys_updated_on"
    }  # fmt: skip
    assert scope["moreWaiting"] is False
