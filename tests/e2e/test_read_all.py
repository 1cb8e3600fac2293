"""`read` with `returnAll`: every page, or a failure, never a part (docs/contract.md §9)."""

from typing import Any

import pytest

from servicenow_emulators.table_api import Fault, RecordedRequest, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

from .conftest import JOB_TYPE, RunJob, StartWorker, job_variables

INCIDENTS = "/api/now/table/incident"


def seed(servicenow: ServiceNowEmulator, count: int, **fields: str) -> list[str]:
    """`count` incidents; their sys_ids in the order ORDERBYsys_id returns them."""
    return sorted(servicenow.insert("incident", dict(fields))["sys_id"] for _ in range(count))


def pages(servicenow: ServiceNowEmulator) -> list[RecordedRequest]:
    return [r for r in servicenow.requests if r.path == INCIDENTS and r.method == "GET"]


def read_all(**inputs: Any) -> dict[str, Any]:
    return job_variables(operation="read", table="incident", returnAll=True, **inputs)


async def test_pages_short_in_the_middle_do_not_end_the_read(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """ACLs hide rows after the page limit: a short page and an empty page in the middle,
    X-Total-Count still counting them; the worker reads on to where ServiceNow says the end is."""
    ids = seed(servicenow, 25, active="true")
    hidden = {ids[3], *ids[10:20]}  # page 1 short, page 2 empty
    servicenow.hidden_sys_ids.update(hidden)

    outcome = await run_job(
        read_all(query="active=true", limit=10, fields="sys_id,number"),
        {"resultVariable": "incidents"},
    )

    assert outcome.kind == "complete", outcome
    incidents = outcome.variables["incidents"]
    assert [r["sys_id"] for r in incidents["result"]] == [i for i in ids if i not in hidden]
    assert incidents["count"] == 14
    assert incidents["totalCount"] == 25
    assert incidents["hasMore"] is False
    assert incidents["pages"] == 3
    sent = pages(servicenow)
    assert [r.query["sysparm_offset"] for r in sent] == ["0", "10", "20"]
    assert {r.query["sysparm_query"] for r in sent} == {"active=true^ORDERBYsys_id"}


async def test_records_inserted_while_paging_come_once(
    start_worker: StartWorker, gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    """Records inserted before the next page shift it: what appears twice is returned once, in
    order, and every record there before the read is returned."""
    ids = seed(servicenow, 30)
    originals = [(servicenow.record("incident", i) or {})["number"] for i in ids]
    # Each answer waits a moment after its request is recorded: the inserts below land between
    # the second page's request and its answer.
    servicenow.latency = 0.01
    await start_worker()
    key = gateway.create_job(
        JOB_TYPE, read_all(limit=10, fields="number"), {"resultVariable": "incidents"}, 3
    )
    await servicenow.wait_for_request(lambda r: r.query.get("sysparm_offset") == "10")
    for n in range(3):  # sorted before every other sys_id: the pages after shift by three
        servicenow.insert("incident", {"sys_id": f"{n:032d}", "number": f"NEW{n}"})
    [outcome] = await gateway.wait_for_outcomes(key, 1)

    assert outcome.kind == "complete", outcome
    records = outcome.variables["incidents"]["result"]
    assert [r["number"] for r in records] == originals  # each once, none lost
    assert all("sys_id" not in r for r in records)  # asked for to drop duplicates, then removed
    assert [r.query["sysparm_fields"] for r in pages(servicenow)] == ["number,sys_id"] * 4


async def test_more_records_than_max_records_fail_before_the_next_page(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    seed(servicenow, 30)
    outcome = await run_job(read_all(limit=10, maxRecords=25))
    assert outcome.kind == "fail"
    assert outcome.retries == 0
    assert "30 records" in outcome.error_message
    assert "maxRecords 25" in outcome.error_message
    assert len(pages(servicenow)) == 1


async def test_too_many_records_is_a_code_for_error_expression(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    seed(servicenow, 3)
    outcome = await run_job(
        read_all(limit=1, maxRecords=2),
        {
            "errorExpression": 'if error.code = "TOO_MANY_RECORDS" then bpmnError("BIG", "x") else null'
        },
    )
    assert (outcome.kind, outcome.error_code) == ("error", "BIG")


async def test_a_page_that_keeps_failing_fails_the_job_without_a_partial_result(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """The second page answers 503 on every in-process try: the job fails to be retried."""
    seed(servicenow, 25)
    servicenow.inject(Fault.service_unavailable(query={"sysparm_offset": "10"}, times=None))
    outcome = await run_job(read_all(limit=10), {"resultVariable": "incidents"})
    assert outcome.kind == "fail"
    assert outcome.retries == 2
    assert "503" in outcome.error_message
    assert [r.query["sysparm_offset"] for r in pages(servicenow)] == ["0", "10", "10", "10"]


async def test_a_page_retried_in_process_completes(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    ids = seed(servicenow, 25)
    servicenow.inject(Fault.bad_gateway(query={"sysparm_offset": "20"}, times=1))
    outcome = await run_job(read_all(limit=10), {"resultVariable": "incidents"})
    assert outcome.kind == "complete", outcome
    assert [r["sys_id"] for r in outcome.variables["incidents"]["result"]] == ids


async def test_result_size_is_checked_as_pages_arrive(
    start_worker: StartWorker, gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    """Pages that already exceed WORKER_MAX_RESULT_BYTES stop the read (retries 0)."""
    seed(servicenow, 30, description="x" * 500)
    await start_worker(worker_max_result_bytes=5_000)
    key = gateway.create_job(JOB_TYPE, read_all(limit=10), {"resultVariable": "incidents"}, 3)
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    assert outcome.kind == "fail"
    assert outcome.retries == 0
    assert "WORKER_MAX_RESULT_BYTES" in outcome.error_message
    assert len(pages(servicenow)) == 1


async def test_an_order_of_the_query_is_kept(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """ORDERBYDESC in the query: nothing is appended, the records come in that order."""
    for n in range(5):
        servicenow.insert("incident", {"short_description": f"row {n}"})
    outcome = await run_job(
        read_all(query="ORDERBYDESCshort_description", limit=2, fields="short_description"),
        {"resultVariable": "incidents"},
    )
    assert outcome.kind == "complete", outcome
    assert [r["short_description"] for r in outcome.variables["incidents"]["result"]] == [
        f"row {n}" for n in (4, 3, 2, 1, 0)
    ]
    assert {r.query["sysparm_query"] for r in pages(servicenow)} == {"ORDERBYDESCshort_description"}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"sysId": "abc"}, "returnAll reads every record of a query"),
        ({"maxRecords": 0}, "maxRecords must be an integer from 1 to 10000"),
        ({"maxRecords": 10_001}, "maxRecords must be an integer from 1 to 10000"),
    ],
)
async def test_invalid_inputs(
    run_job: RunJob, servicenow: ServiceNowEmulator, inputs: dict[str, Any], message: str
) -> None:
    outcome = await run_job(read_all(**inputs))
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert message in outcome.error_message
    assert servicenow.requests == []
