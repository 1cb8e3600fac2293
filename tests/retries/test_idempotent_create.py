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
    key = gateway.create_job(JOB_TYPE, create(fields="number,short_description"), HEADERS)
    outcome = await gateway.wait_for_outcome(key)
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
    first = gateway.create_job(JOB_TYPE, variables, HEADERS)
    created = (await gateway.wait_for_outcome(first)).variables["incident"]["result"]
    # The same task instance delivered again: the job's keys make the same idempotency key.
    job = gateway.job(first)
    again = gateway.create_job(
        JOB_TYPE,
        variables,
        HEADERS,
        process_instance_key=job.process_instance_key,
        element_instance_key=job.element_instance_key,
    )
    response = (await gateway.wait_for_outcome(again)).variables["incident"]
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
