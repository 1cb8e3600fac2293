"""How many times ServiceNow receives one job's request when the transport fails, with the
in-process retries on as by default (SERVICENOW_RETRY_ATTEMPTS 3; docs/contract.md §6).

A create is sent again only when ServiceNow certainly did not take it (connection refused, connect
timeout, 429, 503 with Retry-After): anything else could leave two records. Reads, updates and
deletes are sent again on every transient fault. Every fault here lasts, so the counts are the
attempts the worker makes; the job's own retries (and, for 429, their count) are another matter.
"""

from typing import Any

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from tests.e2e.conftest import JOB_TYPE, StartWorker, job_variables

ATTEMPTS = 3  # Settings.servicenow_retry_attempts's default
METHODS = {"create": "POST", "read": "GET", "update": "PATCH", "delete": "DELETE"}


def inputs(operation: str, sys_id: str) -> dict[str, Any]:
    by_operation: dict[str, dict[str, Any]] = {
        "create": {"payload": {"short_description": "new"}},
        "read": {"sysId": sys_id},
        "update": {"sysId": sys_id, "payload": {"state": "2"}},
        "delete": {"sysId": sys_id},
    }
    return job_variables(operation=operation, table="incident", **by_operation[operation])


# (fault, requests received for a create, for a read/update/delete)
FAULTS = {
    "dropped before an answer": (Fault.drop_before_processing, 1, ATTEMPTS),
    "dropped after processing": (Fault.drop_after_processing, 1, ATTEMPTS),
    "reset mid-answer": (Fault.connection_reset, 1, ATTEMPTS),
    "500 transaction cancelled": (Fault.transaction_cancelled, 1, ATTEMPTS),
    "502 bad gateway": (Fault.bad_gateway, 1, ATTEMPTS),
    "503 without Retry-After": (Fault.service_unavailable, 1, ATTEMPTS),
    "503 with Retry-After": (lambda **m: Fault.service_unavailable(0, **m), ATTEMPTS, ATTEMPTS),
    "429 with Retry-After": (lambda **m: Fault.rate_limited(0, **m), ATTEMPTS, ATTEMPTS),
}


@pytest.mark.parametrize("operation", METHODS)
@pytest.mark.parametrize("fault_name", FAULTS)
async def test_requests_received_per_fault_and_operation(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    start_worker: StartWorker,
    operation: str,
    fault_name: str,
) -> None:
    """ServiceNow sees a create once unless it certainly refused it, anything else ATTEMPTS times;
    the job then fails for Zeebe to retry, and never leaves a second record."""
    make_fault, for_create, for_others = FAULTS[fault_name]
    record = servicenow.insert("incident", {"short_description": "old"})
    await start_worker()
    method = METHODS[operation]
    servicenow.inject(make_fault(method=method, times=None))
    key = gateway.create_job(JOB_TYPE, inputs(operation, record["sys_id"]))
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    received = [r for r in servicenow.requests if r.method == method]
    assert len(received) == (for_create if operation == "create" else for_others)
    assert outcome.kind == "fail"
    assert len(servicenow.records("incident")) <= 2  # the seeded one and at most one created


@pytest.mark.parametrize("operation", METHODS)
async def test_read_timeout(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    start_worker: StartWorker,
    operation: str,
) -> None:
    """No answer within SERVICENOW_READ_TIMEOUT: the request may have been processed, so a create
    is not sent again; the others are."""
    record = servicenow.insert("incident", {"short_description": "old"})
    await start_worker(servicenow_read_timeout=0.2)
    method = METHODS[operation]
    servicenow.inject(Fault.delay(5, method=method, times=None))
    key = gateway.create_job(JOB_TYPE, inputs(operation, record["sys_id"]))
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    received = [r for r in servicenow.requests if r.method == method]
    assert len(received) == (1 if operation == "create" else ATTEMPTS)
    assert (outcome.kind, outcome.retries) == ("fail", 2)
    assert outcome.error_message.startswith("ServiceNow did not answer within the read timeout")


@pytest.mark.parametrize("operation", METHODS)
async def test_connection_refused(
    gateway: ZeebeGatewayEmulator, start_worker: StartWorker, operation: str
) -> None:
    """Nothing listens where ServiceNow should be: the job fails for Zeebe to retry (the attempts
    are counted in tests/retries/test_attempts.py, where the refusals can be counted)."""
    async with ServiceNowEmulator() as gone:
        url = gone.base_url
    await start_worker(servicenow_url_template=url)
    key = gateway.create_job(JOB_TYPE, inputs(operation, "0" * 32))
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    assert (outcome.kind, outcome.retries) == ("fail", 2)
    assert outcome.error_message.startswith("could not connect to ServiceNow (ConnectError)")


@pytest.mark.parametrize(
    ("make_fault", "operation", "received", "records"),
    [
        # The lost answer of a create is not repaired by sending it again: one record, job failed.
        (Fault.drop_after_processing, "create", 1, 2),
        # A create refused by 429 goes through on the next attempt.
        (lambda **m: Fault.rate_limited(0, **m), "create", 2, 2),
        # A delete whose answer was lost is found gone on the next attempt: done.
        (Fault.drop_after_processing, "delete", 2, 0),
        (Fault.bad_gateway, "update", 2, 1),
    ],
)
async def test_one_fault_then_recovery(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    start_worker: StartWorker,
    make_fault: Any,
    operation: str,
    received: int,
    records: int,
) -> None:
    """One fault, then ServiceNow answers: what it received and what the table holds after."""
    record = servicenow.insert("incident", {"short_description": "old"})
    await start_worker()
    method = METHODS[operation]
    servicenow.inject(make_fault(method=method))
    key = gateway.create_job(JOB_TYPE, inputs(operation, record["sys_id"]))
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    assert len([r for r in servicenow.requests if r.method == method]) == received
    assert len(servicenow.records("incident")) == records
    assert outcome.kind == ("fail" if received == 1 else "complete")
