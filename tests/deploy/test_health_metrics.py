"""/livez, /readyz and /metrics while the real worker processes jobs through both emulators."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker.app import open_worker, start_health_server
from servicenow_worker.health import HealthServer, probe
from servicenow_worker.inputs import Operation
from servicenow_worker.metrics import WorkerMetrics, operation_label
from servicenow_worker.zeebe import JobPump

from ..e2e.conftest import JOB_TYPE, PASSWORD, USER, job_variables, worker_settings
from .conftest import delta, get, scrape, value


@pytest.fixture(name="servicenow")
async def _servicenow() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emulator:
        yield emulator


@pytest.fixture(name="gateway")
async def _gateway() -> AsyncIterator[ZeebeGatewayEmulator]:
    async with ZeebeGatewayEmulator() as gateway:
        yield gateway


@pytest.fixture(name="worker")
async def _worker(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> AsyncIterator[tuple[JobPump, HealthServer]]:
    """The worker as `serve` runs it, health server included, on a free port."""
    settings = worker_settings(gateway, servicenow, health_port=0, health_host="127.0.0.1")
    async with open_worker(settings) as pump:
        health = await start_health_server(settings, pump)
        assert health is not None and health.port
        running = asyncio.create_task(pump.run())
        try:
            yield pump, health
        finally:
            health.draining()
            pump.request_stop(at_once=True)
            await running
            await health.stop()


async def wait_ready(gateway: ZeebeGatewayEmulator, pump: JobPump) -> None:
    """Until the first long poll has come back (the gateway records the next one)."""
    await gateway.wait_until(lambda: pump.last_gateway_contact is not None, what="a gateway answer")


async def test_metrics_move_by_the_jobs_the_worker_did(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    worker: tuple[JobPump, HealthServer],
) -> None:
    pump, health = worker
    assert health.port is not None
    await wait_ready(gateway, pump)
    before = await scrape(health.port)

    created = gateway.create_job(
        JOB_TYPE,
        job_variables(operation="Create", table="incident", payload={"short_description": "x"}),
        {"resultVariable": "incident"},
    )
    [done] = await gateway.wait_for_outcomes(created, 1)
    sys_id = done.variables["incident"]["result"]["sys_id"]
    # A read of a record that does not exist: 404, no retry, incident.
    missing = gateway.create_job(
        JOB_TYPE, job_variables(operation="read", table="incident", sysId="0" * 32), {}
    )
    # An input error: no request at all.
    invalid = gateway.create_job(JOB_TYPE, job_variables(operation="explode", table="incident"), {})
    # A 503 on a delete: retried in-process (stamina) and then answered.
    servicenow.inject(Fault.service_unavailable(method="DELETE", times=1))
    deleted = gateway.create_job(
        JOB_TYPE, {**job_variables(table="incident", sysId=sys_id)}, {"operation": "delete"}
    )
    for key in (missing, invalid, deleted):
        await gateway.wait_for_outcomes(key, 1)
    # Retry-After beyond the in-process limit: the job fails with its retries (Zeebe retries it),
    # and the destination pauses (so this one comes last).
    servicenow.inject(Fault.rate_limited(retry_after=600, method="PATCH", times=1))
    updated = gateway.create_job(
        JOB_TYPE,
        job_variables(operation="update", table="incident", sysId=sys_id, payload={"urgency": "1"}),
        {},
        retries=3,
    )
    await gateway.wait_for_outcomes(updated, 1)

    after = await scrape(health.port)
    changed = delta(before, after)
    finished = "servicenow_worker_jobs_finished_total"
    requests = "servicenow_worker_servicenow_request_duration_seconds_count"
    errors = "servicenow_worker_job_errors_total"
    expected = {
        ("servicenow_worker_jobs_activated_total", frozenset()): 5,
        (finished, frozenset({("operation", "create"), ("outcome", "completed")})): 1,
        (finished, frozenset({("operation", "read"), ("outcome", "incident")})): 1,
        (finished, frozenset({("operation", "unknown"), ("outcome", "incident")})): 1,
        (finished, frozenset({("operation", "delete"), ("outcome", "completed")})): 1,
        (finished, frozenset({("operation", "update"), ("outcome", "failed")})): 1,
        (requests, frozenset({("operation", "create"), ("status_class", "2xx")})): 1,
        (requests, frozenset({("operation", "read"), ("status_class", "4xx")})): 1,
        (requests, frozenset({("operation", "delete"), ("status_class", "5xx")})): 1,
        (requests, frozenset({("operation", "delete"), ("status_class", "2xx")})): 1,
        (requests, frozenset({("operation", "update"), ("status_class", "4xx")})): 1,
        (
            "servicenow_worker_servicenow_throttled_total",
            frozenset({("destination", servicenow.base_url), ("status", "429")}),
        ): 1,
        (
            "servicenow_worker_servicenow_throttled_total",
            frozenset({("destination", servicenow.base_url), ("status", "503")}),
        ): 1,
        # Every request took its turn: create, read, delete twice, update.
        (
            "servicenow_worker_servicenow_wait_seconds_count",
            frozenset({("destination", servicenow.base_url)}),
        ): 5,
        # The code errorExpression would see: ServiceNow's status, or the worker's own.
        (errors, frozenset({("code", "404")})): 1,
        (errors, frozenset({("code", "INVALID_INPUT")})): 1,
        (errors, frozenset({("code", "429")})): 1,
    }
    for key, moved in expected.items():
        assert changed.pop(key, 0) == moved, key
    # What is left is histogram buckets, the stamina retry and gauges read at scrape time.
    for (name, _), _moved in changed.items():
        assert (
            name.endswith("_bucket")
            or name
            in {
                "stamina_retries_total",
                "servicenow_worker_gateway_last_contact_timestamp_seconds",
                "servicenow_worker_servicenow_wait_seconds_sum",
                "servicenow_worker_servicenow_concurrency_limit",
            }
            or name.startswith(("process_", "python_"))
        ), name
    assert (
        value(
            after,
            "stamina_retries_total",
            callable="<context block>",
            retry_num="1",
            error_type="servicenow_worker.errors.ServiceNowUnavailable",
        )
        - value(
            before,
            "stamina_retries_total",
            callable="<context block>",
            retry_num="1",
            error_type="servicenow_worker.errors.ServiceNowUnavailable",
        )
        == 1
    )
    assert value(after, "servicenow_worker_jobs_in_flight") == 0
    destination = {"destination": servicenow.base_url}
    assert value(after, "servicenow_worker_servicenow_requests_in_flight", **destination) == 0
    assert value(after, "servicenow_worker_servicenow_requests_waiting", **destination) == 0
    assert 1 <= value(after, "servicenow_worker_servicenow_concurrency_limit", **destination) <= 32
    assert value(after, "servicenow_worker_max_jobs_in_flight") == 128
    assert value(after, "servicenow_worker_info", version="0.1.0") == 1


async def test_batch_aggregate_and_attachment_requests_have_their_own_label(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    worker: tuple[JobPump, HealthServer],
) -> None:
    """A Batch API call is a batch (not a create), an Aggregate API call an aggregate, an
    Attachment API call the attachment operation it carries out."""
    pump, health = worker
    assert health.port is not None
    await wait_ready(gateway, pump)
    record = servicenow.insert("incident", {"short_description": "with files"})
    kept = servicenow.attachments.add("incident", record["sys_id"], "kept.txt", b"kept")
    before = await scrape(health.port)
    for inputs in (
        {"operation": "batch", "requests": [{"operation": "read", "table": "incident"}]},
        {"operation": "aggregate", "table": "incident"},
        {"operation": "listAttachments", "table": "incident", "sysId": record["sys_id"]},
        {"operation": "deleteAttachment", "attachmentSysId": kept["sys_id"]},
        {
            "operation": "attach",
            "table": "incident",
            "sysId": record["sys_id"],
            "content": "notes",
            "fileName": "notes.txt",
        },
    ):
        key = gateway.create_job(JOB_TYPE, job_variables(**inputs), {})
        [done] = await gateway.wait_for_outcomes(key, 1)
        assert done.kind == "complete", done
    changed = delta(before, await scrape(health.port))
    requests = "servicenow_worker_servicenow_request_duration_seconds_count"
    assert {labels for (name, labels), moved in changed.items() if name == requests and moved} == {
        frozenset({("operation", "batch"), ("status_class", "2xx")}),
        frozenset({("operation", "aggregate"), ("status_class", "2xx")}),
        frozenset({("operation", "listattachments"), ("status_class", "2xx")}),
        frozenset({("operation", "deleteattachment"), ("status_class", "2xx")}),
        frozenset({("operation", "attach"), ("status_class", "2xx")}),
    }


async def test_label_values_stay_bounded(
    gateway: ZeebeGatewayEmulator, worker: tuple[JobPump, HealthServer]
) -> None:
    """Table names, sys_ids and free-text operations never become label values."""
    pump, health = worker
    assert health.port is not None
    await wait_ready(gateway, pump)
    keys = [
        gateway.create_job(
            JOB_TYPE,
            job_variables(operation=f"op-{n}", table=f"x_custom_{n}", sysId=f"{n:032x}"),
            {},
        )
        for n in range(20)
    ]
    for key in keys:
        await gateway.wait_for_outcomes(key, 1)
    samples = await scrape(health.port)
    labels = {
        pair for (name, pairs) in samples if name.startswith("servicenow_worker_") for pair in pairs
    }
    assert {value for name, value in labels if name == "operation"} <= {
        *(operation.value for operation in Operation), "unknown"
    }  # fmt: skip
    assert not any(name == "table" or "x_custom" in value for name, value in labels)
    assert (
        value(
            samples,
            "servicenow_worker_jobs_finished_total",
            operation="unknown",
            outcome="incident",
        )
        == 20
    )


async def test_liveness_and_readiness(
    gateway: ZeebeGatewayEmulator, worker: tuple[JobPump, HealthServer]
) -> None:
    pump, health = worker
    assert health.port is not None
    assert (await get(health.port, "/livez"))[0] == 200
    await wait_ready(gateway, pump)
    status, body = await get(health.port, "/readyz")
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["gateway_failures_in_a_row"] == 0
    # The probe of the Docker HEALTHCHECK, the same way (run in a thread: it blocks).
    assert await asyncio.to_thread(probe, "ready", host="127.0.0.1", port=health.port) == 0
    assert await asyncio.to_thread(probe, "live", host="127.0.0.1", port=health.port) == 0

    health.draining()  # what SIGTERM does first
    status, body = await get(health.port, "/readyz")
    assert (status, body["status"]) == (503, "shutting down")
    assert (await get(health.port, "/livez"))[0] == 200
    assert await asyncio.to_thread(probe, "ready", host="127.0.0.1", port=health.port) == 1


def test_readiness_rules() -> None:
    """Not ready before the first answer, after a gateway failure, or when answers stop coming;
    ready with an old answer when every slot is busy (no poll is due then)."""

    class Pump:
        jobs_in_flight = 0
        gateway_failures = 0
        last_gateway_contact: float | None = None

    pump = Pump()
    health = HealthServer(
        pump, WorkerMetrics(), host="127.0.0.1", port=0, max_jobs_in_flight=2, poll_timeout=1
    )
    assert health.ready()[1]["status"] == "gateway not reached yet"
    pump.last_gateway_contact = time.monotonic()
    assert health.ready()[0]
    pump.gateway_failures = 1
    assert health.ready()[1]["status"] == "gateway unreachable"
    pump.gateway_failures = 0
    pump.last_gateway_contact = time.monotonic() - 60
    assert health.ready()[1]["status"] == "no answer from the gateway recently"
    pump.jobs_in_flight = 2
    assert health.ready()[0]


def test_probe_fails_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    from servicenow_emulators.zeebe_gateway import free_port

    assert probe("live", host="127.0.0.1", port=free_port()) == 1
    assert "no answer" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("headers", "variables", "label"),
    [
        ({"operation": "Update"}, {"operation": "read"}, "update"),
        ({"operation": ""}, {"operation": "DELETE"}, "delete"),
        ({}, {"operation": "{{secrets.OP}}"}, "unknown"),
        ({}, {"operation": ["create"]}, "unknown"),
        ({}, {}, "unknown"),
    ],
)
def test_operation_label(headers: dict[str, Any], variables: dict[str, Any], label: str) -> None:
    assert operation_label(headers, variables) == label
