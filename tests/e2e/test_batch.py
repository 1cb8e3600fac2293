"""`batch`: several Table API requests through ServiceNow's Batch API (docs/contract.md §9)."""

import base64
import json
from typing import Any

import pytest

from servicenow_emulators.table_api import Fault, RecordedRequest, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

from .conftest import JOB_TYPE, RunJob, StartWorker, job_variables

BATCH = "/api/now/v1/batch"


def batch(*requests: dict[str, Any]) -> dict[str, Any]:
    return job_variables(operation="batch", requests=list(requests))


def batch_calls(servicenow: ServiceNowEmulator) -> list[RecordedRequest]:
    return [r for r in servicenow.requests if r.path == BATCH]


def carried_ids(call: RecordedRequest) -> list[str]:
    return [item["id"] for item in call.body["rest_requests"]]


def create(short: str) -> dict[str, Any]:
    return {"operation": "create", "table": "incident", "payload": {"short_description": short}}


async def test_one_request_answered_404_and_one_left_unserviced(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """A 404 stays in its entry (the job completes, errorCount says it); the request
    ServiceNow left unserviced is sent again, alone; the entries keep the input order."""
    existing = servicenow.insert("incident", {"short_description": "there"})
    servicenow.batch.leave_unserviced(1)
    outcome = await run_job(
        batch(
            {
                "operation": "read",
                "table": "incident",
                "sysId": existing["sys_id"],
                "fields": "number",
            },
            {"operation": "delete", "table": "incident", "sysId": "0" * 32},
            {
                "operation": "update",
                "table": "incident",
                "sysId": existing["sys_id"],
                "payload": {"state": "2"},
                "fields": "state",
            },
        ),
        {"resultVariable": "answers"},
    )
    assert outcome.kind == "complete", outcome
    answers = outcome.variables["answers"]
    assert answers["status"] == 200
    assert answers["errorCount"] == 1
    assert answers["result"] == [
        {"status": 200, "result": {"number": existing["number"]}},
        {
            "status": 404,
            "error": {
                "message": "No Record found",
                "detail": "Record doesn't exist or ACL restricts the record retrieval",
            },
        },
        {"status": 200, "result": {"state": "2"}},
    ]
    first, second = batch_calls(servicenow)
    assert carried_ids(first) == ["0", "1", "2"]
    assert carried_ids(second) == ["2"]
    assert len(servicenow.requests) == 2


async def test_reads_by_query_answer_as_a_read_does(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    for n in range(3):
        servicenow.insert("incident", {"short_description": f"row {n}"})
    outcome = await run_job(
        batch(
            {"operation": "read", "table": "incident", "limit": 2, "fields": "short_description"}
        ),
        {"resultVariable": "answers"},
    )
    assert outcome.kind == "complete", outcome
    assert outcome.variables["answers"]["result"] == [
        {
            "status": 200,
            "result": [{"short_description": "row 0"}, {"short_description": "row 1"}],
            "count": 2,
            "totalCount": 3,
            "hasMore": True,
        }
    ]


async def test_a_lost_answer_with_idempotency_field_inserts_nothing_twice(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """The Batch call is processed but its answer lost; the worker looks the creates' keys up
    and answers them with the records they made: each record exists once."""
    servicenow.inject(Fault.drop_after_processing(path=BATCH, times=1))
    outcome = await run_job(
        batch(create("first"), create("second"), {"operation": "read", "table": "sys_user"}),
        {"resultVariable": "answers", "idempotencyField": "correlation_id"},
    )
    assert outcome.kind == "complete", outcome
    records = servicenow.records("incident")
    assert sorted(r["short_description"] for r in records) == ["first", "second"]
    keys = {r["short_description"]: r["correlation_id"] for r in records}
    job = outcome.variables["answers"]["result"]
    assert [entry["status"] for entry in job] == [200, 200, 200]
    assert [entry.get("deduplicated") for entry in job] == [True, True, None]
    assert keys["first"].endswith("-0") and keys["second"].endswith("-1")
    assert keys["first"].startswith("camunda-")
    first, second = batch_calls(servicenow)
    assert carried_ids(first) == ["0", "1", "2"]
    assert carried_ids(second) == ["2"]  # the creates were answered by the lookup


async def test_keys_are_looked_up_once_when_nothing_was_lost(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """One lookup before the first call; a request left unserviced was not carried out, so
    sending it again needs none."""
    servicenow.batch.leave_unserviced(1)
    outcome = await run_job(
        batch(create("one"), create("two")),
        {"resultVariable": "answers", "idempotencyField": "correlation_id"},
    )
    assert outcome.kind == "complete", outcome
    assert [e["status"] for e in outcome.variables["answers"]["result"]] == [201, 201]
    lookups = [r for r in servicenow.requests if r.method == "GET"]
    records = sorted(servicenow.records("incident"), key=lambda r: r["short_description"])
    keys = [r["correlation_id"] for r in records]  # "one" is request 0, "two" request 1
    # One read for every create's key, in the order of the requests.
    assert [r.query["sysparm_query"] for r in lookups] == ["correlation_idIN" + ",".join(keys)]
    assert [carried_ids(call) for call in batch_calls(servicenow)] == [["0", "1"], ["1"]]
    assert len(records) == 2


async def test_a_retried_job_inserts_nothing_twice(
    start_worker: StartWorker, gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    """No in-process retry (SERVICENOW_RETRY_ATTEMPTS=1): the lost answer fails the job, Zeebe
    hands it out again, and the keys (the same for every run of the task) keep the create from
    happening twice."""
    servicenow.inject(Fault.drop_after_processing(path=BATCH, times=1))
    await start_worker(servicenow_retry_attempts=1)
    key = gateway.create_job(
        JOB_TYPE,
        batch(create("once")),
        {"resultVariable": "answers", "idempotencyField": "correlation_id", "retryBackoff": "PT0S"},
        3,
    )
    failed, completed = await gateway.wait_for_outcomes(key, 2)
    assert (failed.kind, failed.retries) == ("fail", 2)
    assert completed.kind == "complete", completed
    assert [r["short_description"] for r in servicenow.records("incident")] == ["once"]
    assert completed.variables["answers"]["result"][0]["deduplicated"] is True


async def test_a_lost_answer_without_keys_is_not_resent_in_process(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """Creates without idempotencyField may have been made: the job fails, to be retried."""
    servicenow.inject(Fault.drop_after_processing(path=BATCH, times=1))
    outcome = await run_job(batch(create("maybe")))
    assert (outcome.kind, outcome.retries) == ("fail", 2)
    assert len(batch_calls(servicenow)) == 1


async def test_a_lost_answer_of_reads_and_deletes_is_resent(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """Sent again in-process; the delete done by the lost call answers 204 (its 404 means done)."""
    record = servicenow.insert("incident", {})
    servicenow.inject(Fault.drop_after_processing(path=BATCH, times=1))
    outcome = await run_job(
        batch(
            {"operation": "delete", "table": "incident", "sysId": record["sys_id"]},
            {"operation": "read", "table": "incident", "limit": 1},
        ),
        {"resultVariable": "answers"},
    )
    assert outcome.kind == "complete", outcome
    assert [e["status"] for e in outcome.variables["answers"]["result"]] == [204, 200]
    assert outcome.variables["answers"]["errorCount"] == 0
    assert len(batch_calls(servicenow)) == 2


async def test_batch_of_200_creates_takes_at_least_5_times_fewer_round_trips(
    start_worker: StartWorker, gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    """200 creates as 200 jobs against one batch job: HTTP requests counted at the emulator."""
    await start_worker()
    keys = [
        gateway.create_job(JOB_TYPE, job_variables(**create(f"single {n}")), {}, 3)
        for n in range(200)
    ]
    for key in keys:
        [outcome] = await gateway.wait_for_outcomes(key, 1)
        assert outcome.kind == "complete"
    singles = len(servicenow.requests)
    servicenow.clear_requests()

    key = gateway.create_job(JOB_TYPE, batch(*(create(f"batched {n}") for n in range(200))), {}, 3)
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    assert outcome.kind == "complete", outcome
    batched = len(servicenow.requests)

    assert len(servicenow.records("incident")) == 400
    assert (singles, batched) == (200, 1)
    assert singles >= 5 * batched


async def test_requests_are_validated_before_anything_is_sent(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    outcome = await run_job(
        batch(create("fine"), {"operation": "update", "table": "incident", "payload": {}})
    )
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert outcome.error_message == "requests[1].sysId is required for update"
    assert servicenow.requests == []


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ('[{"operation": "read"}]', "requests[0].table is required"),
        ([{"operation": "aggregate", "table": "incident"}], "requests[0].operation must be"),
        ([{"operation": "read", "table": "incident", "instance": "x"}], "requests[0].instance"),
        ([{"operation": "read", "table": "inc ident"}], "requests[0].table must be a table"),
        ([create("a"), "text"], "requests[1] must be an object"),
        ([], "requests must hold 1 to 200 requests"),
    ],
)
async def test_invalid_requests(
    run_job: RunJob, servicenow: ServiceNowEmulator, requests: Any, message: str
) -> None:
    outcome = await run_job(job_variables(operation="batch", requests=requests))
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert message in outcome.error_message
    assert servicenow.requests == []


async def test_the_operators_ceiling(
    start_worker: StartWorker, gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    await start_worker(servicenow_max_batch=2)
    key = gateway.create_job(JOB_TYPE, batch(create("a"), create("b"), create("c")), {}, 3)
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert "requests must hold 1 to 2 requests (got 3" in outcome.error_message
    assert servicenow.requests == []


async def test_requests_never_serviced_fail_the_job(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    servicenow.batch.leave_unserviced(1, times=5)
    outcome = await run_job(batch({"operation": "read", "table": "incident"}))
    assert (outcome.kind, outcome.retries) == ("fail", 2)
    assert "serviced none of the 1 requests" in outcome.error_message
    assert len(batch_calls(servicenow)) == 1


async def test_bodies_are_base64_and_headers_left_out_except_for_lists(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    outcome = await run_job(batch(create("x"), {"operation": "read", "table": "incident"}))
    assert outcome.kind == "complete", outcome
    [call] = batch_calls(servicenow)
    post, read = call.body["rest_requests"]
    assert json.loads(base64.b64decode(post["body"])) == {"short_description": "x"}
    assert (post["method"], post["url"], post["exclude_response_headers"]) == (
        "POST",
        "/api/now/table/incident",
        True,
    )
    assert read["exclude_response_headers"] is False
    assert read["url"] == "/api/now/table/incident?sysparm_limit=100&sysparm_offset=0"
