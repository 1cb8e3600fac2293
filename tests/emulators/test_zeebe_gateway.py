"""The Zeebe gateway emulator, driven by a real pyzeebe 4.7.0 worker and by raw gRPC stubs.

No test sleeps to wait for an event: each awaits the emulator's own awaitables (or a gRPC call),
and ``asyncio.wait_for`` bounds only calls that would otherwise hang if the emulator were broken.

No ``from __future__ import annotations`` here: it would turn the ``job: Job`` annotations of the
task functions into strings, and pyzeebe would then not inject the job (pyzeebe notes 1.4).
"""

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyzeebe import Job, ZeebeWorker, create_insecure_channel, create_secure_channel
from pyzeebe.errors import BusinessError
from pyzeebe.proto import gateway_pb2 as pb
from pyzeebe.proto.gateway_pb2_grpc import GatewayStub

from servicenow_emulators.zeebe_gateway import (
    DEFAULT_TENANT_ID,
    GATEWAY_SERVICE_NAME,
    GatewayWaitTimeout,
    JobState,
    ZeebeGatewayEmulator,
    free_port,
)

if TYPE_CHECKING:
    from pyzeebe.proto.gateway_pb2_grpc import GatewayAsyncStub
else:
    GatewayAsyncStub = Any

JOB_TYPE = "servicenow"

# The gRPC retry policy of pyzeebe notes 1.13, plus waitForReady and short reconnect back-offs so
# that a gateway restart or a late start costs milliseconds instead of pyzeebe's hard-coded 5-s
# pause after a connection error.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "gateway_protocol.Gateway"}],
                "waitForReady": True,
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
)
RESILIENT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
)

WorkerFactory = Callable[..., Awaitable[ZeebeWorker]]


# ---------------------------------------------------------------------- fixtures and helpers


GatewayFactory = Callable[..., Awaitable[ZeebeGatewayEmulator]]


@pytest.fixture(name="new_gateway")
async def _new_gateway() -> AsyncIterator[GatewayFactory]:
    """A factory of started gateways, all stopped when the test ends (after its workers)."""
    started: list[ZeebeGatewayEmulator] = []

    async def new_gateway(*, port: int | None = None, **kwargs: Any) -> ZeebeGatewayEmulator:
        gateway = ZeebeGatewayEmulator(**kwargs)
        await gateway.start(port=port)
        started.append(gateway)
        return gateway

    yield new_gateway
    for gateway in started:
        await gateway.stop()


@pytest.fixture(name="gateway")
async def _gateway(new_gateway: GatewayFactory) -> ZeebeGatewayEmulator:
    return await new_gateway()


@pytest.fixture(name="stub")
async def _stub(gateway: ZeebeGatewayEmulator) -> AsyncIterator[GatewayAsyncStub]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield cast(GatewayAsyncStub, GatewayStub(channel))


@pytest.fixture(name="start_worker")
async def _start_worker(new_gateway: GatewayFactory) -> AsyncIterator[WorkerFactory]:
    """A factory that runs a real pyzeebe worker until the test ends (created in the loop).

    It depends on ``new_gateway`` so that workers stop before their gateways do.
    """
    running: list[tuple[ZeebeWorker, asyncio.Task[None], grpc.aio.Channel]] = []

    async def start(
        address: str,
        register: Callable[[ZeebeWorker], None],
        *,
        channel: grpc.aio.Channel | None = None,
        request_timeout: int = 300,
        **kwargs: Any,
    ) -> ZeebeWorker:
        channel = channel or create_insecure_channel(
            grpc_address=address, channel_options=RESILIENT_OPTIONS
        )
        worker = ZeebeWorker(
            channel,
            name="test-worker",
            request_timeout=request_timeout,
            max_connection_retries=-1,
            **kwargs,
        )
        register(worker)
        running.append((worker, asyncio.create_task(worker.work()), channel))
        return worker

    yield start
    for worker, task, channel in running:
        await worker.stop()
        await asyncio.wait_for(task, 10)
        await channel.close(None)


def complete_with_inputs(worker: ZeebeWorker) -> None:
    """Register a task that echoes its input and the job's headers."""

    @worker.task(JOB_TYPE, timeout_ms=5_000)
    async def handle(table: str, job: Job) -> dict[str, Any]:
        return {"table_seen": table, "headers_seen": dict(job.custom_headers)}


async def activate(
    stub: GatewayAsyncStub,
    job_type: str = JOB_TYPE,
    *,
    worker: str = "raw-client",
    timeout: int = 60_000,
    max_jobs: int = 32,
    fetch: tuple[str, ...] = (),
    request_timeout: int = -1,
    tenant_ids: tuple[str, ...] = (),
) -> list[pb.ActivatedJob]:
    """One ActivateJobs call; ``request_timeout=-1`` answers at once (no long poll)."""
    request = pb.ActivateJobsRequest(
        type=job_type,
        worker=worker,
        timeout=timeout,
        maxJobsToActivate=max_jobs,
        fetchVariable=fetch,
        requestTimeout=request_timeout,
        tenantIds=tenant_ids,
    )
    jobs: list[pb.ActivatedJob] = []
    async for response in stub.ActivateJobs(request, timeout=30):
        jobs.extend(response.jobs)
    return jobs


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# ---------------------------------------------------------------------- ActivateJobs


class TestLongPolling:
    async def test_holds_the_call_then_ends_it_empty(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """With nothing to activate, ActivateJobs is held and then ends with no jobs."""
        call = asyncio.create_task(activate(stub, request_timeout=200))
        await gateway.wait_for_long_polls(JOB_TYPE)
        assert not call.done()
        assert await call == []
        assert gateway.long_polls_waiting() == 0

    async def test_zero_request_timeout_uses_the_gateway_default(self) -> None:
        """requestTimeout=0 holds for the gateway's default (10 s in Zeebe; shortened here)."""
        gateway = ZeebeGatewayEmulator(long_poll_default_ms=100)
        async with gateway, grpc.aio.insecure_channel(gateway.address) as channel:
            stub = cast(GatewayAsyncStub, GatewayStub(channel))
            call = asyncio.create_task(activate(stub, request_timeout=0))
            await gateway.wait_for_long_polls(JOB_TYPE)
            assert await call == []

    async def test_a_job_created_during_a_long_poll_wakes_it(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """A held call returns as soon as a job of its type is created, not at its timeout."""
        call = asyncio.create_task(activate(stub, request_timeout=60_000))
        await gateway.wait_for_long_polls(JOB_TYPE)
        gateway.create_job("other-type", {})
        assert not call.done()
        key = gateway.create_job(JOB_TYPE, {"table": "incident"})
        jobs = await asyncio.wait_for(call, 10)
        assert [job.key for job in jobs] == [key]
        assert len(gateway.activate_requests) == 1

    async def test_cancelled_long_poll_ends_quietly(
        self,
        gateway: ZeebeGatewayEmulator,
        stub: GatewayAsyncStub,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A client that goes away during a long-poll leaves no parked call and no error log."""
        caplog.set_level(logging.WARNING)
        call = asyncio.create_task(activate(stub, request_timeout=60_000))
        await gateway.wait_for_long_polls(JOB_TYPE)
        call.cancel()
        await gateway.wait_until(lambda: gateway.long_polls_waiting() == 0, what="poll ended")
        key = gateway.create_job(JOB_TYPE, {})
        assert gateway.job(key).state is JobState.ACTIVATABLE
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

    async def test_stop_ends_held_long_polls_with_an_empty_answer(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """Stopping the gateway answers held calls empty (OK), as their timeout would."""
        call = asyncio.create_task(activate(stub, request_timeout=60_000))
        await gateway.wait_for_long_polls(JOB_TYPE)
        await gateway.stop()
        assert await asyncio.wait_for(call, 10) == []


class TestActivation:
    async def test_activated_job_carries_the_job_fields(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """Worker, deadline, retries, JSON headers and variables, keys and tenant are filled."""
        key = gateway.create_job(
            JOB_TYPE,
            {"table": "incident", "secretish": "x", "n": 3},
            {"operation": "create"},
            retries=5,
            element_id="CreateIncident",
        )
        before_ms = int(time.time() * 1000)
        [job] = await activate(stub, worker="w-7", timeout=30_000, fetch=("table", "n", "absent"))
        after_ms = int(time.time() * 1000)

        assert job.key == key
        assert job.type == JOB_TYPE
        assert job.worker == "w-7"
        assert job.retries == 5
        assert before_ms + 30_000 <= job.deadline <= after_ms + 30_000
        assert json.loads(job.customHeaders) == {"operation": "create"}
        assert json.loads(job.variables) == {"table": "incident", "n": 3}
        assert job.tenantId == DEFAULT_TENANT_ID
        assert job.elementId == "CreateIncident"
        assert job.bpmnProcessId == "servicenow-demo"
        snapshot = gateway.job(key)
        assert job.processInstanceKey == snapshot.process_instance_key
        assert job.elementInstanceKey == snapshot.element_instance_key
        assert snapshot.state is JobState.ACTIVATED
        assert snapshot.activated_by == ("w-7",)

    async def test_empty_fetch_variable_means_all_variables(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """As in Zeebe, an empty fetchVariable list hands out every variable."""
        gateway.create_job(JOB_TYPE, {"a": 1, "b": [2]})
        [job] = await activate(stub)
        assert json.loads(job.variables) == {"a": 1, "b": [2]}

    async def test_request_is_recorded(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """Every ActivateJobs request is recorded with its fields and arrival time."""
        before = time.monotonic()
        await activate(stub, worker="w", timeout=1234, max_jobs=7, fetch=("x",), tenant_ids=("t",))
        [call] = gateway.activate_requests
        assert (call.type, call.worker, call.timeout_ms, call.max_jobs_to_activate) == (
            JOB_TYPE,
            "w",
            1234,
            7,
        )
        assert (call.fetch_variable, call.request_timeout_ms, call.tenant_ids) == (
            ("x",),
            -1,
            ("t",),
        )
        assert before <= call.received_at <= time.monotonic()
        assert call.injected_status is None

    async def test_a_job_is_not_handed_out_twice(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """At most maxJobsToActivate per call, and an activated job is not activated again."""
        keys = [gateway.create_job(JOB_TYPE, {"i": i}) for i in range(3)]
        first = await activate(stub, max_jobs=2)
        second = await activate(stub, max_jobs=2)
        third = await activate(stub, max_jobs=2)
        assert [job.key for job in first] == keys[:2]
        assert [job.key for job in second] == keys[2:]
        assert third == []

    async def test_tenant_ids_filter_jobs(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """No tenantIds means the default tenant; other tenants' jobs need their tenant id."""
        acme = gateway.create_job(JOB_TYPE, {}, tenant_id="acme")
        default = gateway.create_job(JOB_TYPE, {})
        assert [job.key for job in await activate(stub)] == [default]
        [job] = await activate(stub, tenant_ids=("acme", "globex"))
        assert (job.key, job.tenantId) == (acme, "acme")

    async def test_invalid_request_is_rejected(self, stub: GatewayAsyncStub) -> None:
        """maxJobsToActivate < 1 is INVALID_ARGUMENT, as Zeebe validates it."""
        error = await rpc_error(activate(stub, max_jobs=0))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


class TestJobTimeout:
    async def test_an_expired_activation_makes_the_job_activatable_again(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """When the activation deadline passes, a waiting long-poll receives the job again."""
        key = gateway.create_job(JOB_TYPE, {})
        [first] = await activate(stub, worker="slow", timeout=50)
        [again] = await asyncio.wait_for(activate(stub, worker="fast", request_timeout=60_000), 10)
        assert first.key == again.key == key
        snapshot = gateway.job(key)
        assert snapshot.activated_by == ("slow", "fast")
        assert len(snapshot.available_at) == 2
        assert snapshot.retries == 3

    async def test_a_late_completion_is_still_accepted(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """Zeebe accepts completing a timed-out job that nobody else finished (at-least-once)."""
        key = gateway.create_job(JOB_TYPE, {})
        await activate(stub, timeout=1)
        await gateway.wait_until(
            lambda: gateway.job(key).state is JobState.ACTIVATABLE, what="deadline passed"
        )
        await stub.CompleteJob(pb.CompleteJobRequest(jobKey=key, variables="{}"))
        assert (await gateway.wait_for_outcome(key)).kind == "complete"

    async def test_update_job_timeout_moves_the_deadline(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """UpdateJobTimeout sets the deadline to now + timeout; only for activated jobs."""
        key = gateway.create_job(JOB_TYPE, {})
        unactivated = await rpc_error(
            stub.UpdateJobTimeout(pb.UpdateJobTimeoutRequest(jobKey=key, timeout=1))
        )
        assert unactivated.code() is grpc.StatusCode.FAILED_PRECONDITION
        await activate(stub, timeout=3_600_000)
        await stub.UpdateJobTimeout(pb.UpdateJobTimeoutRequest(jobKey=key, timeout=1))
        [again] = await asyncio.wait_for(activate(stub, request_timeout=60_000), 10)
        assert again.key == key
        unknown = await rpc_error(
            stub.UpdateJobTimeout(pb.UpdateJobTimeoutRequest(jobKey=12345, timeout=1))
        )
        assert unknown.code() is grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------- job commands


class TestCommands:
    async def test_complete_is_recorded_and_a_second_complete_is_not_found(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """A completed job is gone: completing it again answers NOT_FOUND, as Zeebe does."""
        key = gateway.create_job(JOB_TYPE, {})
        await activate(stub)
        await stub.CompleteJob(pb.CompleteJobRequest(jobKey=key, variables='{"sysId": "abc"}'))
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.job_key, outcome.kind, outcome.variables) == (
            key,
            "complete",
            {"sysId": "abc"},
        )
        assert (outcome.retries, outcome.retry_backoff_ms, outcome.error_code) == (None, None, "")
        again = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=key)))
        assert again.code() is grpc.StatusCode.NOT_FOUND
        assert "no such job was found" in (again.details() or "")
        snapshot = gateway.job(key)
        assert snapshot.state is JobState.COMPLETED
        assert snapshot.finished_at == outcome.at
        assert gateway.outcomes == (outcome,)

    async def test_unknown_key_is_not_found(self, stub: GatewayAsyncStub) -> None:
        """Commands on a key the gateway never handed out answer NOT_FOUND."""
        error = await rpc_error(stub.FailJob(pb.FailJobRequest(jobKey=42, retries=1)))
        assert error.code() is grpc.StatusCode.NOT_FOUND

    async def test_variables_must_be_a_json_object(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """Variables that are not a JSON object are INVALID_ARGUMENT and change nothing."""
        key = gateway.create_job(JOB_TYPE, {})
        await activate(stub)
        error = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=key, variables="[]")))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert gateway.job(key).state is JobState.ACTIVATED

    async def test_fail_with_retries_and_back_off_reactivates_after_the_back_off(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """After FailJob(retries>0, retryBackOff) a poll gets the job again with those retries
        and the failure's variables."""
        key = gateway.create_job(JOB_TYPE, {"table": "incident"})
        await activate(stub)
        await stub.FailJob(
            pb.FailJobRequest(
                jobKey=key,
                retries=2,
                errorMessage="ServiceNow returned 503",
                retryBackOff=50,
                variables='{"lastError": "503"}',
            )
        )
        [outcome] = await gateway.wait_for_outcomes(key, 1)
        assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 2, 50)
        assert outcome.error_message == "ServiceNow returned 503"
        assert not outcome.is_final
        [job] = await asyncio.wait_for(activate(stub, request_timeout=60_000), 10)
        assert (job.key, job.retries) == (key, 2)
        assert json.loads(job.variables) == {"table": "incident", "lastError": "503"}

    async def test_a_job_backing_off_is_neither_activatable_nor_commandable(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """During its back-off a job is in Zeebe's FAILED state: FAILED_PRECONDITION."""
        key = gateway.create_job(JOB_TYPE, {})
        await activate(stub)
        await stub.FailJob(pb.FailJobRequest(jobKey=key, retries=1, retryBackOff=3_600_000))
        assert gateway.job(key).state is JobState.BACKING_OFF
        assert await activate(stub) == []
        error = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=key)))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION

    async def test_fail_with_no_retries_raises_an_incident(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """FailJob(retries=0) is final: an incident, not activatable, FAILED_PRECONDITION after."""
        key = gateway.create_job(JOB_TYPE, {})
        await activate(stub)
        await stub.FailJob(pb.FailJobRequest(jobKey=key, retries=0, errorMessage="bad input"))
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.kind, outcome.retries, outcome.is_final) == ("fail", 0, True)
        await gateway.wait_until_idle()
        assert gateway.job(key).state is JobState.INCIDENT
        assert await activate(stub) == []
        error = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=key)))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION

        gateway.resolve_incident(key, retries=1)
        assert [job.key for job in await activate(stub)] == [key]

    async def test_throw_error_is_recorded_with_code_and_variables(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """ThrowError finishes the job with its code, message and variables."""
        key = gateway.create_job(JOB_TYPE, {})
        await activate(stub)
        missing_code = await rpc_error(stub.ThrowError(pb.ThrowErrorRequest(jobKey=key)))
        assert missing_code.code() is grpc.StatusCode.INVALID_ARGUMENT
        await stub.ThrowError(
            pb.ThrowErrorRequest(
                jobKey=key,
                errorCode="SNOW_NOT_FOUND",
                errorMessage="record missing",
                variables='{"status": 404}',
            )
        )
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.kind, outcome.error_code, outcome.error_message) == (
            "error",
            "SNOW_NOT_FOUND",
            "record missing",
        )
        assert outcome.variables == {"status": 404}
        assert gateway.job(key).state is JobState.ERROR_THROWN
        gone = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=key)))
        assert gone.code() is grpc.StatusCode.NOT_FOUND

    async def test_update_job_retries(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """UpdateJobRetries sets retries > 0 and rejects anything else."""
        key = gateway.create_job(JOB_TYPE, {})
        await stub.UpdateJobRetries(pb.UpdateJobRetriesRequest(jobKey=key, retries=7))
        assert gateway.job(key).retries == 7
        error = await rpc_error(
            stub.UpdateJobRetries(pb.UpdateJobRetriesRequest(jobKey=key, retries=0))
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT

    async def test_topology_and_health(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """Topology describes one healthy broker; the health service says SERVING."""
        topology = await stub.Topology(pb.TopologyRequest())
        assert (topology.clusterSize, topology.partitionsCount) == (1, 1)
        assert topology.brokers[0].port == gateway.port
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE_NAME))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------- with a pyzeebe worker


class TestWithPyzeebeWorker:
    async def test_worker_completes_a_job(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """A pyzeebe worker activates, runs and completes a job; the timeline is recorded."""
        key = gateway.create_job(JOB_TYPE, {"table": "incident", "other": 1}, {"op": "create"})
        await start_worker(gateway.address, complete_with_inputs)
        outcome = await gateway.wait_for_outcome(key)
        assert outcome.kind == "complete"
        assert outcome.variables == {"table_seen": "incident", "headers_seen": {"op": "create"}}
        request = gateway.activate_requests[0]
        assert (request.worker, request.timeout_ms, request.request_timeout_ms) == (
            "test-worker",
            5_000,
            300,
        )
        assert request.fetch_variable == ("table",)
        snapshot = gateway.job(key)
        assert snapshot.finished_at is not None
        assert snapshot.created_at <= snapshot.activated_at[0] <= snapshot.finished_at
        assert snapshot.activated_via == ("poll",)

    async def test_failures_count_down_to_an_incident(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """pyzeebe fails with retries - 1 each time; the third failure is the final outcome."""

        def register(worker: ZeebeWorker) -> None:
            @worker.task(JOB_TYPE)
            async def handle(job: Job) -> None:
                raise RuntimeError("ServiceNow returned 503")

        key = gateway.create_job(JOB_TYPE, {})
        await start_worker(gateway.address, register)
        outcomes = await gateway.wait_for_outcomes(key, 3)
        assert [outcome.retries for outcome in outcomes] == [2, 1, 0]
        assert await gateway.wait_for_outcome(key) == outcomes[2]
        assert "ServiceNow returned 503" in outcomes[0].error_message

    async def test_business_error_throws_a_bpmn_error(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """A BusinessError becomes ThrowError with its code."""

        def register(worker: ZeebeWorker) -> None:
            @worker.task(JOB_TYPE)
            async def handle(job: Job) -> None:
                raise BusinessError("SNOW_NOT_FOUND", "record missing")

        key = gateway.create_job(JOB_TYPE, {})
        await start_worker(gateway.address, register)
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.kind, outcome.error_code) == ("error", "SNOW_NOT_FOUND")

    async def test_a_batch_of_jobs(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """create_jobs makes many jobs at once; wait_for_all returns every final outcome."""

        def register(worker: ZeebeWorker) -> None:
            # Above max_running_jobs pyzeebe pauses poll_retry_delay (5 s) before polling again.
            @worker.task(JOB_TYPE, max_jobs_to_activate=100, max_running_jobs=400)
            async def handle(table: str) -> dict[str, str]:
                return {"table_seen": table}

        keys = gateway.create_jobs(JOB_TYPE, 200, {"table": "incident"}, {"op": "read"})
        assert keys == sorted(keys)
        assert len(set(keys)) == 200
        await start_worker(gateway.address, register)
        outcomes = await gateway.wait_for_all(keys)
        assert {outcome.kind for outcome in outcomes.values()} == {"complete"}
        await gateway.wait_until_idle()
        assert all(len(gateway.job(key).activated_at) == 1 for key in keys)

    async def test_healthcheck(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """pyzeebe's worker.healthcheck() reaches the health service."""
        worker = await start_worker(gateway.address, complete_with_inputs)
        answer = await worker.healthcheck()
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------- fault injection


class TestFaults:
    async def test_injected_status_answers_the_next_calls(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """The next N calls of an RPC answer the injected status; then service resumes."""
        gateway.create_job(JOB_TYPE, {})
        gateway.inject_fault("ActivateJobs", grpc.StatusCode.UNAVAILABLE, times=2)
        for _ in range(2):
            error = await rpc_error(activate(stub))
            assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert gateway.pending_faults == 0
        assert len(await activate(stub)) == 1
        statuses = [call.injected_status for call in gateway.activate_requests]
        assert statuses == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, None]

    async def test_worker_with_a_retry_policy_rides_out_unavailable(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """Three UNAVAILABLE answers are retried by gRPC; the job completes without the 5-s
        pause pyzeebe takes after a connection error."""
        gateway.inject_fault("ActivateJobs", grpc.StatusCode.UNAVAILABLE, times=3)
        key = gateway.create_job(JOB_TYPE, {"table": "incident"})
        await start_worker(gateway.address, complete_with_inputs)
        assert (await gateway.wait_for_outcome(key, timeout=4)).kind == "complete"
        assert gateway.rpc_counts["ActivateJobs"] >= 4

    async def test_fault_for_one_job_key(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """A fault limited to one job key leaves commands on other jobs alone."""
        first, second = gateway.create_job(JOB_TYPE, {}), gateway.create_job(JOB_TYPE, {})
        await activate(stub)
        gateway.inject_fault("CompleteJob", grpc.StatusCode.NOT_FOUND, job_key=first)
        await stub.CompleteJob(pb.CompleteJobRequest(jobKey=second))
        error = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=first)))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert gateway.job(first).state is JobState.ACTIVATED
        await stub.CompleteJob(pb.CompleteJobRequest(jobKey=first))
        assert (await gateway.wait_for_outcome(first)).kind == "complete"

    async def test_worker_whose_completion_is_refused_gets_the_job_again(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """A refused CompleteJob leaves the job activated until its timeout; then it runs again."""
        runs: list[int] = []

        def register(worker: ZeebeWorker) -> None:
            @worker.task(JOB_TYPE, timeout_ms=100)
            async def handle(job: Job) -> None:
                runs.append(job.key)

        key = gateway.create_job(JOB_TYPE, {})
        gateway.inject_fault("CompleteJob", grpc.StatusCode.NOT_FOUND, job_key=key)
        await start_worker(gateway.address, register)
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
        assert runs == [key, key]
        assert len(gateway.job(key).activated_at) == 2

    async def test_after_apply_loses_only_the_answer(
        self, gateway: ZeebeGatewayEmulator, stub: GatewayAsyncStub
    ) -> None:
        """With after_apply the command takes effect but the client sees the fault."""
        key = gateway.create_job(JOB_TYPE, {})
        await activate(stub)
        gateway.inject_fault("CompleteJob", grpc.StatusCode.UNAVAILABLE, after_apply=True)
        lost = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=key)))
        assert lost.code() is grpc.StatusCode.UNAVAILABLE
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
        retry = await rpc_error(stub.CompleteJob(pb.CompleteJobRequest(jobKey=key)))
        assert retry.code() is grpc.StatusCode.NOT_FOUND

    async def test_wait_timeout_names_the_job(self, gateway: ZeebeGatewayEmulator) -> None:
        """A wait that runs out raises GatewayWaitTimeout naming the job and its state."""
        key = gateway.create_job(JOB_TYPE, {})
        with pytest.raises(GatewayWaitTimeout, match=rf"job {key} .*state activatable"):
            await gateway.wait_for_outcome(key, timeout=0.01)


class TestRestart:
    async def test_worker_keeps_going_across_a_restart_on_the_same_port(
        self, gateway: ZeebeGatewayEmulator, start_worker: WorkerFactory
    ) -> None:
        """Stop and start again on the same port: the worker reconnects and takes new jobs."""
        address = gateway.address
        await start_worker(address, complete_with_inputs)
        before = gateway.create_job(JOB_TYPE, {"table": "incident"})
        await gateway.wait_for_outcome(before)
        await gateway.wait_for_long_polls(JOB_TYPE)
        await gateway.stop()
        assert not gateway.is_serving
        assert await gateway.start() == address
        after = gateway.create_job(JOB_TYPE, {"table": "problem"})
        outcome = await gateway.wait_for_outcome(after)
        assert outcome.variables["table_seen"] == "problem"

    async def test_activated_jobs_keep_their_state_across_a_restart(
        self, gateway: ZeebeGatewayEmulator
    ) -> None:
        """A job activated before the restart can be completed after it, as on a broker."""
        key = gateway.create_job(JOB_TYPE, {})
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = cast(GatewayAsyncStub, GatewayStub(channel))
            await activate(stub)
            await gateway.stop()
            await gateway.start()
            await asyncio.wait_for(
                stub.CompleteJob(pb.CompleteJobRequest(jobKey=key), wait_for_ready=True), 10
            )
        assert (await gateway.wait_for_outcome(key)).kind == "complete"

    async def test_worker_started_before_the_gateway(
        self, new_gateway: GatewayFactory, start_worker: WorkerFactory
    ) -> None:
        """A worker may start first; once the gateway listens on the chosen port it gets jobs."""
        port = free_port()
        address = f"127.0.0.1:{port}"
        channel = create_insecure_channel(grpc_address=address, channel_options=RESILIENT_OPTIONS)
        await start_worker(address, complete_with_inputs, channel=channel)
        # Wait (on connectivity events, not on time) until the worker has found nobody there.
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            await asyncio.wait_for(channel.wait_for_state_change(state), 10)
            state = channel.get_state()
        gateway = await new_gateway(port=port)
        assert gateway.address == address
        key = gateway.create_job(JOB_TYPE, {"table": "incident"})
        assert (await gateway.wait_for_outcome(key)).kind == "complete"


# ---------------------------------------------------------------------- streaming


class TestStreaming:
    async def test_streaming_off_answers_unimplemented(self, stub: GatewayAsyncStub) -> None:
        """Without streaming=True, StreamActivatedJobs is UNIMPLEMENTED, as on old gateways."""
        request = pb.StreamActivatedJobsRequest(type=JOB_TYPE, worker="w", timeout=1000)
        error = await rpc_error(anext(aiter(stub.StreamActivatedJobs(request, timeout=10))))
        assert error.code() is grpc.StatusCode.UNIMPLEMENTED

    async def test_pyzeebe_streaming_worker_crashes_on_a_gateway_without_streams(
        self, gateway: ZeebeGatewayEmulator
    ) -> None:
        """pyzeebe's work() ends with an ExceptionGroup on UNIMPLEMENTED (pyzeebe notes 1.11)."""
        async with create_insecure_channel(grpc_address=gateway.address) as channel:
            worker = ZeebeWorker(channel, request_timeout=300, stream_enabled=True)
            complete_with_inputs(worker)
            with pytest.raises(ExceptionGroup):
                await asyncio.wait_for(worker.work(), 10)

    async def test_jobs_are_pushed_to_an_open_stream(
        self, new_gateway: GatewayFactory, start_worker: WorkerFactory
    ) -> None:
        """With streaming on, a job created while a stream is open is pushed through it."""
        gateway = await new_gateway(streaming=True)
        await start_worker(gateway.address, complete_with_inputs, stream_enabled=True)
        await gateway.wait_for_streams(JOB_TYPE)
        key = gateway.create_job(JOB_TYPE, {"table": "incident"})
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
        assert gateway.job(key).activated_via == ("stream",)
        [call] = gateway.stream_requests
        assert (call.type, call.worker, call.fetch_variable) == (
            JOB_TYPE,
            "test-worker",
            ("table",),
        )

    async def test_closed_stream_leaves_jobs_to_polling(self) -> None:
        """Once the client closes its stream, new jobs wait for ActivateJobs again; a stop ends
        open streams cleanly."""
        gateway = ZeebeGatewayEmulator(streaming=True)
        async with gateway, grpc.aio.insecure_channel(gateway.address) as channel:
            stub = cast(GatewayAsyncStub, GatewayStub(channel))
            request = pb.StreamActivatedJobsRequest(type=JOB_TYPE, worker="w", timeout=1000)
            closed = stub.StreamActivatedJobs(request, timeout=60)
            await gateway.wait_for_streams(JOB_TYPE)
            closed.cancel()
            await gateway.wait_until(lambda: gateway.streams_open() == 0, what="stream closed")
            key = gateway.create_job(JOB_TYPE, {})
            assert gateway.job(key).state is JobState.ACTIVATABLE

            kept = stub.StreamActivatedJobs(request, timeout=60)
            await gateway.wait_for_streams(JOB_TYPE)
            await gateway.stop()
            assert [job async for job in kept] == []


# ---------------------------------------------------------------------- security


class TestBearerToken:
    async def test_calls_without_the_token_are_unauthenticated(self) -> None:
        """Every call needs ``authorization: Bearer <token>``; health checks included."""
        async with ZeebeGatewayEmulator(require_bearer_token="s3cret") as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = cast(GatewayAsyncStub, GatewayStub(channel))
                missing = await rpc_error(stub.Topology(pb.TopologyRequest()))
                assert missing.code() is grpc.StatusCode.UNAUTHENTICATED
                wrong = await rpc_error(
                    activate_with_metadata(stub, (("authorization", "Bearer nope"),))
                )
                assert wrong.code() is grpc.StatusCode.UNAUTHENTICATED
                health = health_pb2_grpc.HealthStub(channel)
                unhealthy = await rpc_error(health.Check(health_pb2.HealthCheckRequest()))
                assert unhealthy.code() is grpc.StatusCode.UNAUTHENTICATED
                good = await activate_with_metadata(stub, (("authorization", "Bearer s3cret"),))
                assert good == []
            assert gateway.unauthenticated_calls == 3

    async def test_worker_with_call_credentials_gets_jobs(
        self, new_gateway: GatewayFactory, start_worker: WorkerFactory
    ) -> None:
        """A worker sending the token (local credentials on loopback) completes jobs."""
        gateway = await new_gateway(require_bearer_token="s3cret")
        credentials = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
            grpc.access_token_call_credentials("s3cret"),
        )
        channel = grpc.aio.secure_channel(gateway.address, credentials)
        key = gateway.create_job(JOB_TYPE, {"table": "incident"})
        await start_worker(gateway.address, complete_with_inputs, channel=channel)
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
        assert gateway.unauthenticated_calls == 0


async def activate_with_metadata(
    stub: GatewayAsyncStub, metadata: tuple[tuple[str, str], ...]
) -> list[pb.ActivatedJob]:
    request = pb.ActivateJobsRequest(
        type=JOB_TYPE, worker="w", timeout=1000, maxJobsToActivate=1, requestTimeout=-1
    )
    return [job async for r in stub.ActivateJobs(request, metadata=metadata) for job in r.jobs]


@pytest.fixture(name="tls_files", scope="module")
def _tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test CA")
    tmp = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return {name: (tmp / name).read_bytes() for name in ("ca.pem", "server.pem", "server.key")}


class TestTls:
    async def test_worker_over_tls_with_a_test_ca(
        self,
        tls_files: dict[str, bytes],
        new_gateway: GatewayFactory,
        start_worker: WorkerFactory,
    ) -> None:
        """With certificate and key the gateway speaks TLS; a worker trusting the CA works."""
        gateway = await new_gateway(
            server_certificate_chain=tls_files["server.pem"], private_key=tls_files["server.key"]
        )
        channel = create_secure_channel(
            grpc_address=gateway.address,
            channel_credentials=grpc.ssl_channel_credentials(tls_files["ca.pem"]),
        )
        key = gateway.create_job(JOB_TYPE, {"table": "incident"})
        await start_worker(gateway.address, complete_with_inputs, channel=channel)
        assert (await gateway.wait_for_outcome(key)).kind == "complete"

    async def test_plaintext_client_cannot_talk_to_the_tls_gateway(
        self, tls_files: dict[str, bytes]
    ) -> None:
        """A plaintext channel to the TLS gateway fails with UNAVAILABLE."""
        gateway = ZeebeGatewayEmulator(
            server_certificate_chain=tls_files["server.pem"], private_key=tls_files["server.key"]
        )
        async with gateway, grpc.aio.insecure_channel(gateway.address) as channel:
            stub = cast(GatewayAsyncStub, GatewayStub(channel))
            error = await rpc_error(stub.Topology(pb.TopologyRequest(), timeout=5))
            assert error.code() is grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------------- command line


def test_module_runs_on_its_own(tmp_path: Path) -> None:
    """``python -m servicenow_emulators.zeebe_gateway`` serves jobs until SIGTERM."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "servicenow_emulators.zeebe_gateway", "--port", str(port),
         "--job", JOB_TYPE, "--variables", '{"table": "incident"}'],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    async def fetch_job() -> list[pb.ActivatedJob]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = cast(GatewayAsyncStub, GatewayStub(channel))
            request = pb.ActivateJobsRequest(
                type=JOB_TYPE, worker="w", timeout=1000, maxJobsToActivate=5, requestTimeout=-1
            )
            responses = stub.ActivateJobs(request, timeout=20, wait_for_ready=True)
            return [job async for response in responses for job in response.jobs]

    try:
        [job] = asyncio.run(fetch_job())
        assert json.loads(job.variables) == {"table": "incident"}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "serving on 127.0.0.1" in stderr
