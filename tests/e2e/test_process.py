"""The console script as an operator runs it: start-up, lost gateway, logs, signals, exit codes."""

import signal

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator, free_port

from .conftest import JOB_TYPE, PASSWORD, Spawn, job_variables

CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})
JOB_FIELDS = {"job_key", "process_instance_key", "element_id", "operation", "table"}


async def test_gateway_down_at_start_then_up(spawn: Spawn, servicenow: ServiceNowEmulator) -> None:
    """With no gateway the worker says so and keeps trying; once it appears, jobs are done."""
    port = free_port()
    worker = await spawn(f"127.0.0.1:{port}").start()
    unreachable = await worker.wait_for_event("gateway_unreachable")
    assert unreachable["gateway"] == f"127.0.0.1:{port}"

    async with ZeebeGatewayEmulator() as gateway:
        await gateway.stop()
        await gateway.start(port=port)
        key = gateway.create_job(JOB_TYPE, CREATE, {"resultVariable": "incident"})
        outcome = await gateway.wait_for_outcome(key, timeout=30)
        assert outcome.kind == "complete"
        await worker.wait_for_event("gateway_reachable")
        completed = await worker.wait_for_event("job_completed", job_key=key)
        worker.send()
        assert await worker.exit_code() == 0

    assert completed.keys() >= JOB_FIELDS
    assert (completed["operation"], completed["table"]) == ("create", "incident")
    assert worker.not_json == []
    for event in worker.events:
        assert {"timestamp", "level", "event"} <= event.keys()
    assert PASSWORD not in "".join(worker.raw_stdout)
    assert len(servicenow.records("incident")) == 1


async def test_sigterm_drains_jobs_in_flight(spawn: Spawn, servicenow: ServiceNowEmulator) -> None:
    """SIGTERM stops taking jobs and finishes those in flight before exiting 0."""
    servicenow.inject(Fault.delay(1.0, method="POST", times=3))
    async with ZeebeGatewayEmulator() as gateway:
        worker = await spawn(gateway.address).start()
        keys = [gateway.create_job(JOB_TYPE, CREATE) for _ in range(3)]
        await servicenow.wait_for_requests(3)
        worker.send()
        assert await worker.exit_code() == 0
        outcomes = [gateway.outcomes_of(key) for key in keys]
    assert [[o.kind for o in job] for job in outcomes] == [["complete"]] * 3
    stopping = worker.position("worker_stopping")
    assert all(stopping < worker.position("job_completed", job_key=key) for key in keys)


async def test_grace_period_runs_out(spawn: Spawn, servicenow: ServiceNowEmulator) -> None:
    """When the grace period ends first, the worker names the jobs left and exits 1."""
    servicenow.inject(Fault.delay(25, method="POST"))
    async with ZeebeGatewayEmulator() as gateway:
        worker = await spawn(gateway.address, WORKER_SHUTDOWN_GRACE_PERIOD="0.2").start()
        key = gateway.create_job(JOB_TYPE, CREATE)
        await servicenow.wait_for_requests(1)
        worker.send()
        assert await worker.exit_code() == 1
    left = await worker.wait_for_event("worker_stopped_with_jobs_left")
    assert left["job_keys"] == [key]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("SERVICENOW_MAX_LIMIT", "many", "invalid setting SERVICENOW_MAX_LIMIT:"),
        ("LOG_FORMAT", "xml", "invalid setting LOG_FORMAT:"),
        ("SERVICENOW_URL_TEMPLATE", "ftp://x", "invalid setting SERVICENOW_URL_TEMPLATE:"),
        ("WORKER_JOB_TIMEOUT", "10", "WORKER_JOB_TIMEOUT must be at least twice"),
        ("SECRETS_DIR", "/does/not/exist", "invalid setting SECRETS_DIR:"),
    ],
)
async def test_invalid_setting_exits_2(
    spawn: Spawn, setting: str, value: str, message: str
) -> None:
    """A wrong setting stops the worker at once with one line on stderr naming it."""
    worker = spawn("127.0.0.1:1", **{setting: value})
    await worker.start()
    assert await worker.exit_code() == 2
    stderr = await worker.stderr()
    assert stderr.count("\n") == 1
    assert stderr.startswith("servicenow-worker: ")
    assert message in stderr
    assert worker.events == []


async def test_sigint_with_nothing_in_flight(spawn: Spawn) -> None:
    """Ctrl-C on an idle worker exits 0 at once."""
    async with ZeebeGatewayEmulator() as gateway:
        worker = await spawn(gateway.address).start()
        await worker.wait_for_event("worker_started")
        await gateway.wait_for_long_polls(JOB_TYPE)
        worker.send(signal.SIGINT)
        assert await worker.exit_code() == 0
