"""Exactly-once creates with idempotencyField (docs/contract.md §3): the lookup ServiceNow
receives, and what a delivery that finds its record returns, whatever the read options."""

from typing import Any

import structlog

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from tests.e2e.conftest import JOB_TYPE, StartWorker, job_variables

HEADERS = {"idempotencyField": "correlation_id", "resultVariable": "incident"}


def create(**options: Any) -> dict[str, Any]:
    return job_variables(
        operation="create", table="incident", payload={"short_description": "x"}, **options
    )


async def test_the_lookup_asks_for_one_record_with_the_key_and_the_fields(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, start_worker: StartWorker
) -> None:
    """With fields set the lookup also asks for sys_id and the key's field; one record, offset 0."""
    await start_worker()
    with structlog.testing.capture_logs() as logs:
        key = gateway.create_job(JOB_TYPE, create(fields="number,short_description"), HEADERS)
        outcome = await gateway.wait_for_outcome(key)
    assert "idempotency_field_not_stored" not in [e["event"] for e in logs]
    job = gateway.job(key)
    expected = f"camunda-{job.process_instance_key}-{job.element_instance_key}"
    lookup, insert = servicenow.requests
    assert (lookup.method, insert.method) == ("GET", "POST")
    assert lookup.path == "/api/now/table/incident"
    assert lookup.query == {
        "sysparm_query": f"correlation_id={expected}",
        "sysparm_fields": "number,short_description,sys_id,correlation_id",
        "sysparm_limit": "1",
        "sysparm_offset": "0",
    }
    assert lookup.body is None
    assert insert.body == {"short_description": "x", "correlation_id": expected}
    assert insert.query == {"sysparm_fields": "number,short_description"}
    assert outcome.variables["incident"]["status"] == 201


async def test_a_second_delivery_returns_the_record_with_display_values(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, start_worker: StartWorker
) -> None:
    """displayValue=all gives every field as {display_value, value}: the key is still found."""
    await start_worker()
    variables = create(displayValue="all")
    with structlog.testing.capture_logs() as logs:
        first = gateway.create_job(JOB_TYPE, variables, HEADERS)
        created = (await gateway.wait_for_outcome(first)).variables["incident"]["result"]
    # The key is read from {display_value, value}: it was stored, nothing to warn about.
    assert "idempotency_field_not_stored" not in [e["event"] for e in logs]
    # The same task instance delivered again: the job's keys make the same idempotency key.
    job = gateway.job(first)
    with structlog.testing.capture_logs() as logs:
        again = gateway.create_job(
            JOB_TYPE,
            variables,
            HEADERS,
            process_instance_key=job.process_instance_key,
            element_instance_key=job.element_instance_key,
        )
        response = (await gateway.wait_for_outcome(again)).variables["incident"]
    assert {
        "event": "create_deduplicated",
        "idempotency_field": "correlation_id",
        "records": 1,
        "log_level": "info",
    } in [
        {k: e.get(k) for k in ("event", "idempotency_field", "records", "log_level")} for e in logs
    ]
    assert (response["status"], response["deduplicated"]) == (200, True)
    assert response["result"]["sys_id"] == created["sys_id"]
    assert len(servicenow.records("incident")) == 1


async def test_a_field_that_is_not_stored_is_warned_about(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, start_worker: StartWorker
) -> None:
    """An empty table without the field: the create succeeds, and the log says dedup cannot work."""
    await start_worker()
    variables = job_variables(operation="create", table="sys_user_group", payload={"name": "g"})
    with structlog.testing.capture_logs() as logs:
        key = gateway.create_job(JOB_TYPE, variables, HEADERS)
        outcome = await gateway.wait_for_outcome(key)
    assert outcome.kind == "complete"
    [warning] = [e for e in logs if e["event"] == "idempotency_field_not_stored"]
    assert (warning["log_level"], warning["idempotency_field"]) == ("warning", "correlation_id")
    assert warning["hint"] == (
        "the table lacks this field or it is not readable: deduplication cannot work"
    )


async def test_a_found_record_too_large_for_zeebe_fails_like_a_created_one(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, start_worker: StartWorker
) -> None:
    """The record a second delivery finds is held to WORKER_MAX_RESULT_BYTES as well."""
    await start_worker(worker_max_result_bytes=1000)
    job = gateway.job(gateway.create_job(JOB_TYPE, {}, {}))  # keys for the task instance
    key = f"camunda-{job.process_instance_key}-{job.element_instance_key}"
    servicenow.insert("incident", {"description": "x" * 3000, "correlation_id": key})
    again = gateway.create_job(
        JOB_TYPE,
        create(),
        HEADERS,
        process_instance_key=job.process_instance_key,
        element_instance_key=job.element_instance_key,
    )
    outcome = await gateway.wait_for_outcome(again)
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert outcome.error_message.startswith("the response is ")
    assert len(servicenow.records("incident")) == 1
