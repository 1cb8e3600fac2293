"""A secret value never stands in a job's outcome, whichever way the job ends (docs/contract.md
§5, §6): the default failure (final or retried), a BPMN error's message and variables, a jobError's
message and variables, ignoreError's variables, a result too large; nor in the worker's log lines
at any level.

ServiceNow echoes what it was sent in some of its errors (a rejected field value, a business
rule's message), so a secret placed in a payload can come back inside an error: the faults below
make the emulator do that.
"""

from typing import Any

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator
from tests.e2e.conftest import JOB_TYPE, PASSWORD, USER, StartWorker, job_variables
from tests.e2e.worker_process import WorkerProcess

SECRET = "N0te-S3cr3t-7a41"  # resolved into the payload from SECRET_note
CREATE = job_variables(
    operation="create", table="incident", payload={"short_description": "{{secrets.note}}"}
)


def echo(status: int) -> Fault:
    """ServiceNow's error naming the value it refused, the secret included."""
    return Fault.error(
        status, f"Invalid value '{SECRET}'", f"short_description: {SECRET}", method="POST"
    )


EXPRESSIONS = {
    "bpmnError": '=bpmnError("REFUSED", error.message, {said: error.message, got: error.variables})',
    "jobError": '=jobError(error.message, {said: error.message, got: error.variables}, 0, @"PT1S")',
    "ignoreError": "=ignoreError({said: error.message, got: error.variables})",
}
# (status ServiceNow echoes the secret with, headers): every way a job ends.
PATHS: dict[str, tuple[int | None, dict[str, Any]]] = {
    "fail, final (400)": (400, {}),
    "fail, retried (500)": (500, {}),
    **{name: (400, {"errorExpression": e}) for name, e in EXPRESSIONS.items()},
    "result too large": (None, {"resultVariable": "r"}),
}


def assert_masked(outcome: JobOutcome) -> None:
    seen = outcome.error_message + repr(outcome.variables)
    assert SECRET not in seen
    assert "***" in seen


async def run(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    start_worker: StartWorker,
    status: int | None,
    headers: dict[str, Any],
) -> JobOutcome:
    if status is not None:
        servicenow.inject(echo(status))
    key = gateway.create_job(JOB_TYPE, CREATE, headers, retries=3)
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    return outcome


@pytest.mark.parametrize("path", [p for p in PATHS if p != "result too large"])
async def test_secret_echoed_by_servicenow_is_masked_in_the_outcome(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """The message and the variables show *** where ServiceNow's error held the secret."""
    monkeypatch.setenv("SECRET_note", SECRET)
    await start_worker()
    outcome = await run(gateway, servicenow, start_worker, *PATHS[path])
    assert outcome.kind == {"bpmnError": "error", "ignoreError": "complete"}.get(path, "fail")
    assert_masked(outcome)
    # The request itself carried the secret: only what comes back is masked.
    assert servicenow.requests[0].body == {"short_description": SECRET}


async def test_secret_in_a_result_too_large_is_not_in_the_message(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A created record too large for Zeebe fails with its size, not its content."""
    monkeypatch.setenv("SECRET_note", SECRET * 100)
    await start_worker(worker_max_result_bytes=1000)
    outcome = await run(gateway, servicenow, start_worker, None, {"resultVariable": "r"})
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert outcome.error_message.startswith("the response is ")
    assert SECRET not in outcome.error_message + repr(outcome.variables)


async def test_no_secret_in_log_lines_at_debug(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    """The worker's own output at DEBUG, over every path above, never holds the secret (nor the
    password of the basic authentication, itself a secret here)."""
    worker = WorkerProcess(
        ZEEBE_ADDRESS=gateway.address,
        SERVICENOW_URL_TEMPLATE=servicenow.base_url,
        WORKER_POLL_TIMEOUT="0.5",
        WORKER_JOB_TIMEOUT="30",
        SERVICENOW_CONNECT_TIMEOUT="2",
        SERVICENOW_READ_TIMEOUT="5",
        WORKER_MAX_RESULT_BYTES="1000",
        LOG_LEVEL="DEBUG",
        SECRET_note=SECRET,
        SECRET_pw=PASSWORD,
    )
    await worker.start()
    await worker.wait_for_event("worker_started")
    variables = {**CREATE, "authentication": {"username": USER, "password": "{{secrets.pw}}"}}
    outcomes = []
    try:
        for status, headers in PATHS.values():
            if status is not None:
                servicenow.inject(echo(status))
            if status is None:  # result too large: a record larger than WORKER_MAX_RESULT_BYTES
                payload = {**CREATE["payload"], "description": "x" * 2000}
                variables = {**variables, "payload": payload}
            key = gateway.create_job(JOB_TYPE, variables, headers, retries=3)
            [outcome] = await gateway.wait_for_outcomes(key, 1, timeout=30)
            outcomes.append(outcome)
        worker.send()
        assert await worker.exit_code() == 0
        stderr = await worker.stderr()
    finally:
        await worker.kill()
    assert [o.kind for o in outcomes] == ["fail", "fail", "error", "fail", "complete", "fail"]
    seen = "".join(worker.raw_stdout) + stderr
    assert SECRET not in seen
    assert PASSWORD not in seen
    # The lines that carry ServiceNow's message were written, and read here.
    assert any(e["event"] == "job_failed" and "'***'" in e["message"] for e in worker.events)
