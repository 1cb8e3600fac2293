"""The job loop (zeebe.JobPump) against the Zeebe gateway emulator, with a scripted handler.

What an operator sees of the loop: what reaches Zeebe (CompleteJob, FailJob, ThrowError and their
fields), the log events docs/operations.md lists (names and fields), the metrics, and how the
loop behaves when the gateway fails and when it is stopped. The handler is scripted so that each
outcome, a crash or a job still running at the stop can be had at will.
"""

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import grpc
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from pyzeebe.grpc_internals.zeebe_adapter import ZeebeAdapter
from structlog.testing import capture_logs
from structlog.typing import EventDict, WrappedLogger

from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker.handler import JobHandler, JobView
from servicenow_worker.inputs import INPUT_NAMES
from servicenow_worker.metrics import WorkerMetrics
from servicenow_worker.outcome import Complete, Fail, Outcome, ThrowError
from servicenow_worker.zeebe import DrainTimeout, JobPump, PumpSettings

JOB_TYPE = "servicenow:1"
WAIT_S = 10.0


@dataclass
class ScriptedHandler:
    """Answers every job with `outcome` (raised if it is an exception), after `hold` is set."""

    outcome: Outcome | Exception = field(default_factory=Complete)
    hold: asyncio.Event | None = None
    seen: list[JobView] = field(default_factory=list)
    entered: asyncio.Queue[JobView] = field(default_factory=asyncio.Queue)

    async def next_job(self) -> JobView:
        """The next job the handler is given (bounded: a broken loop may never give one)."""
        async with asyncio.timeout(WAIT_S):
            return await self.entered.get()

    async def handle(self, job: JobView) -> Outcome:
        self.seen.append(job)
        self.entered.put_nowait(job)
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class Logs:
    """The log events, as structlog hands them to the renderer (job context merged in)."""

    def __init__(self) -> None:
        self.entries: list[EventDict] = []
        self._changed = asyncio.Event()
        self.on_event: dict[str, Callable[[], None]] = {}

    def _note(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        self._changed.set()
        if (react := self.on_event.get(event["event"])) is not None:
            react()
        return event

    @contextmanager
    def capture(self) -> Iterator[None]:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars, self._note]) as got:
            self.entries = got
            yield

    def named(self, name: str) -> list[EventDict]:
        return [entry for entry in self.entries if entry["event"] == name]

    def names(self) -> list[str]:
        return [str(entry["event"]) for entry in self.entries]

    async def wait_for(self, name: str, count: int = 1) -> list[EventDict]:
        async with asyncio.timeout(WAIT_S):
            while len(self.named(name)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.named(name)


@dataclass
class Running:
    pump: JobPump
    run: asyncio.Task[None]
    metrics: WorkerMetrics

    async def stopped(self) -> None:
        """Wait for `run` to return (or raise), bounded: a broken loop may never end."""
        done, _ = await asyncio.wait({self.run}, timeout=WAIT_S)
        assert done, "the job loop did not end"
        await self.run

    def sample(self, name: str, **labels: str) -> float:
        """One sample of the worker's /metrics, as Prometheus would scrape it (0 when absent)."""
        text = self.metrics.exposition().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0


Start = Callable[..., Awaitable[Running]]


@pytest.fixture(name="gateway")
async def _gateway() -> AsyncIterator[ZeebeGatewayEmulator]:
    async with ZeebeGatewayEmulator() as emulator:
        yield emulator


@pytest.fixture(name="logs")
def _logs() -> Iterator[Logs]:
    logs = Logs()
    with logs.capture():
        yield logs


@pytest.fixture(name="start")
async def _start(gateway: ZeebeGatewayEmulator) -> AsyncIterator[Start]:
    """Start the job loop on its own channel; stopped at once when the test ends."""
    async with AsyncExitStack() as stack:
        runs: list[Running] = []

        async def start(
            handler: ScriptedHandler, *, own_metrics: bool = False, **overrides: Any
        ) -> Running:
            values: dict[str, Any] = {
                "job_type": JOB_TYPE,
                "worker_name": "pump-under-test",
                "max_jobs_in_flight": 4,
                "job_timeout": 30.0,
                "poll_timeout": 0.5,
                "shutdown_grace_period": 5.0,
                "gateway_address": gateway.address,
            }
            settings = PumpSettings(**{**values, **overrides})
            channel = grpc.aio.insecure_channel(gateway.address)
            stack.push_async_callback(channel.close)
            # Without metrics of its own the pump makes them (what a caller without metrics gets).
            given = None if own_metrics else WorkerMetrics(settings.max_jobs_in_flight)
            pump = JobPump(
                ZeebeAdapter(channel, max_connection_retries=-1),
                cast(JobHandler, handler),
                settings,
                given,
            )
            pump.metrics.watch(pump)
            running = Running(pump, asyncio.create_task(pump.run()), given or pump.metrics)
            runs.append(running)
            return running

        yield start
        for running in runs:
            running.pump.request_stop(at_once=True)
            done, _ = await asyncio.wait({running.run}, timeout=WAIT_S)
            if not done:
                running.run.cancel()
            # A test that expected a DrainTimeout has seen it already.
            with contextlib.suppress(DrainTimeout, asyncio.CancelledError):
                await running.run
            assert done, "the job loop did not end when stopped at once"


def job_context(snapshot_key: int, gateway: ZeebeGatewayEmulator) -> dict[str, Any]:
    """The fields every log line of a job carries (docs/operations.md)."""
    job = gateway.job(snapshot_key)
    return {
        "job_key": job.key,
        "process_instance_key": job.process_instance_key,
        "element_id": job.element_id,
        "bpmn_process_id": job.bpmn_process_id,
    }


def without_time(entry: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in {"timestamp"}}


class TestOutcomes:
    """Each outcome reaches Zeebe with its fields, and its log event says what was sent."""

    @pytest.mark.parametrize(
        ("outcome", "sent", "event", "metric_outcome"),
        [
            (
                Complete({"incident": {"number": "INC0010001"}}),
                {"kind": "complete", "variables": {"incident": {"number": "INC0010001"}}},
                {"event": "job_completed", "log_level": "info"},
                "completed",
            ),
            (
                Fail(
                    "ServiceNow answered 503",
                    retries=2,
                    backoff=timedelta(seconds=1.5),
                    variables={"error": {"code": "503"}},
                ),
                {
                    "kind": "fail",
                    "retries": 2,
                    "retry_backoff_ms": 1500,
                    "error_message": "ServiceNow answered 503",
                    "variables": {"error": {"code": "503"}},
                },
                {
                    "event": "job_failed",
                    "log_level": "warning",
                    "retries": 2,
                    "backoff_ms": 1500,
                    "message": "ServiceNow answered 503",
                },
                "failed",
            ),
            (
                ThrowError("NOT_FOUND", "no such record", {"error": {"code": "404"}}),
                {
                    "kind": "error",
                    "error_code": "NOT_FOUND",
                    "error_message": "no such record",
                    "variables": {"error": {"code": "404"}},
                },
                {
                    "event": "job_error_thrown",
                    "log_level": "info",
                    "error_code": "NOT_FOUND",
                    "message": "no such record",
                },
                "bpmn_error",
            ),
        ],
        ids=["complete", "fail", "throw_error"],
    )
    async def test_the_outcome_reaches_zeebe_and_the_log(
        self,
        gateway: ZeebeGatewayEmulator,
        start: Start,
        logs: Logs,
        outcome: Outcome,
        sent: dict[str, Any],
        event: dict[str, Any],
        metric_outcome: str,
    ) -> None:
        running = await start(ScriptedHandler(outcome))
        key = gateway.create_job(
            JOB_TYPE,
            {"operation": "read"},
            {"note": "x"},
            retries=3,
            bpmn_process_id="order-process",
            element_id="CreateIncident",
        )
        [reported] = await gateway.wait_for_outcomes(key, 1)
        assert {name: getattr(reported, name) for name in sent} == sent
        [logged] = await logs.wait_for(str(event["event"]))
        assert without_time(logged) == {**event, **job_context(key, gateway)}
        assert running.sample(
            "servicenow_worker_jobs_finished_total", operation="read", outcome=metric_outcome
        ) == pytest.approx(1)

    async def test_the_handler_sees_the_job_as_activated(
        self, gateway: ZeebeGatewayEmulator, start: Start
    ) -> None:
        handler = ScriptedHandler(hold=asyncio.Event())
        await start(handler)
        key = gateway.create_job(
            JOB_TYPE, {"operation": "read"}, {"h": "1"}, retries=5, bpmn_process_id="p-1"
        )
        seen = await handler.next_job()
        job = gateway.job(key)  # while activated: its deadline is set
        assert seen == JobView(
            key=key,
            retries=5,
            deadline_ms=job.deadline_ms,
            process_instance_key=job.process_instance_key,
            element_instance_key=job.element_instance_key,
            headers={"h": "1"},
            variables={"operation": "read"},
            bpmn_process_id="p-1",
        )

    @pytest.mark.parametrize(("retries", "left"), [(3, 2), (1, 0)])
    async def test_a_crash_fails_the_job_with_one_retry_less_naming_only_the_type(
        self,
        gateway: ZeebeGatewayEmulator,
        start: Start,
        logs: Logs,
        retries: int,
        left: int,
    ) -> None:
        running = await start(ScriptedHandler(RuntimeError("password=hunter2")))
        key = gateway.create_job(JOB_TYPE, {"operation": "read"}, retries=retries)
        [reported] = await gateway.wait_for_outcomes(key, 1)
        assert (reported.kind, reported.retries, reported.error_message) == (
            "fail",
            left,
            "the worker failed unexpectedly (RuntimeError); see the worker's log",
        )
        [crashed] = logs.named("job_crashed")
        assert crashed["log_level"] == "error"
        assert crashed["exc_info"] is True
        assert crashed["job_key"] == key
        assert running.sample(
            "servicenow_worker_jobs_finished_total",
            operation="read",
            outcome="failed" if left else "incident",
        ) == pytest.approx(1)


class TestReporting:
    """docs/operations.md: report_retrying, job_not_reported, job_gone_before_report."""

    async def test_gateway_errors_while_reporting_are_retried_with_growing_back_off(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        await start(ScriptedHandler(ThrowError("E", "m")))
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        gateway.inject_fault("ThrowError", grpc.StatusCode.UNAVAILABLE, times=3, job_key=key)
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.kind, outcome.error_code) == ("error", "E")
        retrying = logs.named("report_retrying")
        assert [(e["error"], e["in_seconds"], e["log_level"]) for e in retrying] == [
            ("ZeebeGatewayUnavailableError", 0.2, "warning"),
            ("ZeebeGatewayUnavailableError", 0.4, "warning"),
            ("ZeebeGatewayUnavailableError", 0.8, "warning"),
        ]
        await logs.wait_for("job_error_thrown")

    async def test_the_report_is_given_up_at_the_jobs_deadline(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        # A job timeout of 4.5 s: retries after 0.2, 0.4, 0.8 and 1.6 s (3.0 s in all); the next
        # wait, 3.2 s, would end after the deadline, so the worker gives up (Zeebe hands the job
        # out again after its timeout).
        running = await start(ScriptedHandler(), job_timeout=4.5)
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        gateway.inject_fault("CompleteJob", grpc.StatusCode.UNAVAILABLE, times=100, job_key=key)
        [given_up] = await logs.wait_for("job_not_reported")
        assert [e["in_seconds"] for e in logs.named("report_retrying")] == [0.2, 0.4, 0.8, 1.6]
        assert (given_up["log_level"], given_up["error"]) == (
            "error",
            "ZeebeGatewayUnavailableError",
        )
        assert given_up["job_key"] == key
        assert not logs.named("job_completed")
        assert running.sample(
            "servicenow_worker_jobs_not_reported_total", reason="gateway_unavailable"
        ) == pytest.approx(1)

    @pytest.mark.parametrize(
        ("code", "error"),
        [
            (grpc.StatusCode.NOT_FOUND, "JobNotFoundError"),
            (grpc.StatusCode.FAILED_PRECONDITION, "JobAlreadyDeactivatedError"),
        ],
    )
    async def test_a_job_gone_before_its_report_is_not_retried(
        self,
        gateway: ZeebeGatewayEmulator,
        start: Start,
        logs: Logs,
        code: grpc.StatusCode,
        error: str,
    ) -> None:
        running = await start(ScriptedHandler(Fail("m", retries=1)))
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        gateway.inject_fault("FailJob", code, job_key=key)
        [gone] = await logs.wait_for("job_gone_before_report")
        assert without_time(gone) == {
            "event": "job_gone_before_report",
            "log_level": "warning",
            "error": error,
            "hint": "the job timed out or was cancelled meanwhile;"
            " raise WORKER_JOB_TIMEOUT if it timed out",
            **job_context(key, gateway),
        }
        assert gateway.rpc_counts["FailJob"] == 1
        assert not logs.named("report_retrying")
        assert not logs.named("job_failed")
        assert running.sample(
            "servicenow_worker_jobs_not_reported_total", reason="job_gone"
        ) == pytest.approx(1)


class TestPolling:
    async def test_the_activate_request_says_what_the_settings_say(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        running = await start(
            ScriptedHandler(),
            own_metrics=True,
            max_jobs_in_flight=3,
            job_timeout=12.5,
            poll_timeout=0.75,
            tenant_ids=("tenant-a", "tenant-b"),
        )
        await gateway.wait_for_long_polls(JOB_TYPE)
        request = gateway.activate_requests[0]
        assert (
            request.type,
            request.worker,
            request.timeout_ms,
            request.max_jobs_to_activate,
            request.fetch_variable,
            request.request_timeout_ms,
            request.tenant_ids,
        ) == (JOB_TYPE, "pump-under-test", 12500, 3, INPUT_NAMES, 750, ("tenant-a", "tenant-b"))
        [started] = logs.named("worker_started")
        assert without_time(started) == {
            "event": "worker_started",
            "log_level": "info",
            "job_type": JOB_TYPE,
            "max_jobs_in_flight": 3,
        }
        # Without metrics given, the pump's own show the same.
        assert running.sample("servicenow_worker_max_jobs_in_flight") == 3
        # A gateway that answered without a job is not a reconnection.
        assert not logs.named("gateway_reachable")

    async def test_no_more_jobs_than_free_slots_are_asked_for(
        self, gateway: ZeebeGatewayEmulator, start: Start
    ) -> None:
        hold = asyncio.Event()
        handler = ScriptedHandler(hold=hold)
        running = await start(handler, max_jobs_in_flight=2)
        first = gateway.create_job(JOB_TYPE, {"operation": "read"})
        await handler.next_job()
        await gateway.wait_for_long_polls(JOB_TYPE)
        assert gateway.activate_requests[-1].max_jobs_to_activate == 1
        assert running.sample("servicenow_worker_jobs_in_flight") == 1
        second = gateway.create_job(JOB_TYPE, {"operation": "read"})
        await handler.next_job()
        # Both slots taken: no request for zero jobs, none at all until one is free.
        third = gateway.create_job(JOB_TYPE, {"operation": "read"})
        hold.set()
        outcomes = await gateway.wait_for_all([first, second, third])
        assert {o.kind for o in outcomes.values()} == {"complete"}
        assert all(r.max_jobs_to_activate >= 1 for r in gateway.activate_requests)
        running.pump.request_stop(at_once=True)
        await running.stopped()
        assert running.sample("servicenow_worker_jobs_in_flight") == 0
        assert running.sample("servicenow_worker_jobs_activated_total") == 3

    async def test_one_job_at_a_time_runs_them_all(
        self, gateway: ZeebeGatewayEmulator, start: Start
    ) -> None:
        await start(ScriptedHandler(), max_jobs_in_flight=1)
        keys = [gateway.create_job(JOB_TYPE, {"operation": "read"}) for _ in range(3)]
        outcomes = await gateway.wait_for_all(keys)
        assert {o.kind for o in outcomes.values()} == {"complete"}

    async def test_an_answered_poll_is_followed_by_the_next_without_a_pause(
        self, gateway: ZeebeGatewayEmulator, start: Start
    ) -> None:
        # The back-off is for gateway errors only: eight empty long-polls of 50 ms follow each
        # other (a back-off after each would take over 25 s for the same).
        await start(ScriptedHandler(), poll_timeout=0.05)
        await gateway.wait_for_rpc("ActivateJobs", 8)

    async def test_a_job_activated_again_while_still_running_holds_two_slots(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        # A job that outlives WORKER_JOB_TIMEOUT is activated again, here to the same worker:
        # both runs take a slot and the stop waits for both, whichever ends first.
        hold = asyncio.Event()
        handler = ScriptedHandler(hold=hold)
        running = await start(handler, job_timeout=0.3, max_jobs_in_flight=2)
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        first, again = await handler.next_job(), await handler.next_job()
        assert first.key == again.key == key
        assert running.sample("servicenow_worker_jobs_in_flight") == 2
        logs.on_event["worker_draining"] = hold.set
        running.pump.request_stop()
        await running.stopped()
        assert [e["jobs_in_flight"] for e in logs.named("worker_draining")] == [2]
        # The first report completes the job; the second finds it gone.
        assert len(logs.named("job_completed")) == 1
        assert len(logs.named("job_gone_before_report")) == 1
        assert logs.names()[-1] == "worker_stopped"
        assert running.pump.jobs_in_flight == 0


class TestGatewayErrors:
    """docs/operations.md: gateway_unreachable, gateway_reachable; the loop never gives up."""

    async def test_failures_are_logged_counted_backed_off_and_recovered_from(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        gateway.inject_fault(
            "ActivateJobs", grpc.StatusCode.UNAVAILABLE, times=3, details="broker is restarting"
        )
        running = await start(ScriptedHandler())
        await logs.wait_for("gateway_unreachable", 3)
        # Not answered yet: the last contact is "never".
        assert running.sample("servicenow_worker_gateway_last_contact_timestamp_seconds") == 0
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        await gateway.wait_for_outcome(key)
        unreachable = logs.named("gateway_unreachable")
        assert [without_time(e) for e in unreachable] == [
            {
                "event": "gateway_unreachable",
                "log_level": "warning",
                "gateway": gateway.address,
                "error": "ZeebeGatewayUnavailableError",
                "detail": "broker is restarting",
                "failures_in_a_row": n,
            }
            for n in (1, 2, 3)
        ]
        [reachable] = logs.named("gateway_reachable")
        assert without_time(reachable) == {
            "event": "gateway_reachable",
            "log_level": "info",
            "after_failures": 3,
        }
        # Waits of at least 0.2, 0.4 and 0.8 s between the calls (lower bounds only: a loaded
        # machine may wait longer, never shorter).
        calls = [call.received_at for call in gateway.activate_requests]
        gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
        assert [gap >= wait for gap, wait in zip(gaps, (0.2, 0.4, 0.8), strict=False)] == [
            True,
            True,
            True,
        ]
        assert running.sample(
            "servicenow_worker_gateway_errors_total", error="ZeebeGatewayUnavailableError"
        ) == pytest.approx(3)
        assert running.sample("servicenow_worker_gateway_reconnects_total") == pytest.approx(1)
        assert running.sample("servicenow_worker_gateway_failures_in_a_row") == 0
        assert running.sample("servicenow_worker_gateway_last_contact_timestamp_seconds") > 0
        assert running.pump.gateway_failures == 0

    async def test_each_outage_is_recovered_from(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        await start(ScriptedHandler())
        for outage in (1, 2):
            gateway.inject_fault("ActivateJobs", grpc.StatusCode.RESOURCE_EXHAUSTED)
            await logs.wait_for("gateway_unreachable", outage)
            key = gateway.create_job(JOB_TYPE, {"operation": "read"})
            await gateway.wait_for_outcome(key)
        assert [e["error"] for e in logs.named("gateway_unreachable")] == [
            "ZeebeBackPressureError",
            "ZeebeBackPressureError",
        ]
        assert [e["after_failures"] for e in logs.named("gateway_reachable")] == [1, 1]

    async def test_a_refused_request_names_the_gateways_reason(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        gateway.inject_fault(
            "ActivateJobs", grpc.StatusCode.INVALID_ARGUMENT, details="tenant not authorised"
        )
        running = await start(ScriptedHandler())
        [refused] = await logs.wait_for("gateway_unreachable")
        assert (refused["error"], refused["detail"]) == (
            "ActivateJobsRequestInvalidError",
            "tenant not authorised",
        )
        assert running.sample(
            "servicenow_worker_gateway_errors_total", error="ActivateJobsRequestInvalidError"
        ) == pytest.approx(1)

    async def test_a_stop_during_an_outage_ends_the_loop(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        gateway.inject_fault("ActivateJobs", grpc.StatusCode.UNAVAILABLE, times=1000)
        running = await start(ScriptedHandler(), poll_timeout=30.0, shutdown_grace_period=60.0)
        await logs.wait_for("gateway_unreachable", 2)
        running.pump.request_stop()
        await running.stopped()
        assert logs.names()[-1] == "worker_stopped"


class TestStop:
    """docs/operations.md: worker_stopping, worker_draining, worker_stopped, worker_stopping_now,
    worker_stopped_with_jobs_left; jobs in flight are reported before the loop ends."""

    async def test_jobs_in_flight_are_reported_before_the_loop_ends(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        hold = asyncio.Event()
        handler = ScriptedHandler(hold=hold)
        running = await start(handler, poll_timeout=0.5)
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        await handler.next_job()
        running.pump.request_stop()
        logs.on_event["worker_draining"] = hold.set
        await running.stopped()
        assert gateway.job(key).outcomes[0].kind == "complete"
        stop_events = [
            without_time(e)
            for e in logs.entries
            if e["event"] in {"worker_stopping", "worker_draining", "worker_stopped"}
        ]
        assert stop_events == [
            {
                "event": "worker_stopping",
                "log_level": "info",
                "jobs_in_flight": 1,
                "open_poll_ends_within_s": 0.5,
            },
            {"event": "worker_draining", "log_level": "info", "jobs_in_flight": 1},
            {"event": "worker_stopped", "log_level": "info", "jobs_left": 0},
        ]
        assert logs.names().index("job_completed") < logs.names().index("worker_stopped")

    async def test_with_nothing_in_flight_the_loop_just_stops(
        self, start: Start, gateway: ZeebeGatewayEmulator, logs: Logs
    ) -> None:
        running = await start(ScriptedHandler(), poll_timeout=0.2)
        await gateway.wait_for_long_polls(JOB_TYPE)
        running.pump.request_stop()
        await running.stopped()
        assert [without_time(e) for e in logs.entries if e["event"].startswith("worker_stop")][
            -1
        ] == {"event": "worker_stopped", "log_level": "info", "jobs_left": 0}
        assert not logs.named("worker_draining")

    async def test_a_job_that_arrives_after_the_stop_is_handed_back_untouched(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        handler = ScriptedHandler()
        running = await start(handler, poll_timeout=5.0)
        await gateway.wait_for_long_polls(JOB_TYPE)
        running.pump.request_stop()
        key = gateway.create_job(JOB_TYPE, {"operation": "read"}, retries=4)
        await running.stopped()
        [handed_back] = gateway.job(key).outcomes
        assert (
            handed_back.kind,
            handed_back.retries,
            handed_back.retry_backoff_ms,
            handed_back.error_message,
        ) == ("fail", 4, 0, "the worker is shutting down; job handed back")
        assert not handler.seen
        assert running.sample(
            "servicenow_worker_jobs_finished_total", operation="read", outcome="handed_back"
        ) == pytest.approx(1)

    async def test_a_second_request_cancels_the_open_poll(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        hold = asyncio.Event()
        handler = ScriptedHandler(hold=hold)
        # A long-poll of a minute and a grace period of a minute: only the cancel ends it soon.
        running = await start(handler, poll_timeout=60.0, shutdown_grace_period=60.0)
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        await handler.next_job()
        await gateway.wait_for_long_polls(JOB_TYPE)
        running.pump.request_stop()
        running.pump.request_stop()
        running.pump.request_stop()  # a third changes nothing more
        await gateway.wait_until(lambda: gateway.long_polls_waiting(JOB_TYPE) == 0)
        hold.set()
        await running.stopped()
        assert gateway.job(key).outcomes[0].kind == "complete"
        assert [without_time(e) for e in logs.named("worker_stopping_now")] == [
            {"event": "worker_stopping_now", "log_level": "info", "jobs_in_flight": 1}
        ]
        assert len(logs.named("worker_stopping")) == 1

    async def test_at_once_cancels_the_open_poll(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        running = await start(ScriptedHandler(), poll_timeout=60.0, shutdown_grace_period=60.0)
        await gateway.wait_for_long_polls(JOB_TYPE)
        running.pump.request_stop(at_once=True)
        await running.stopped()
        assert [e["event"] for e in logs.entries if e["event"].startswith("worker_stop")] == [
            "worker_stopping",
            "worker_stopping_now",
            "worker_stopped",
        ]

    async def test_the_grace_period_also_ends_the_open_poll(
        self, gateway: ZeebeGatewayEmulator, start: Start
    ) -> None:
        # One stop request, a long-poll of a minute, a grace period of 0.3 s: the poll is
        # cancelled when the grace period ends.
        running = await start(ScriptedHandler(), poll_timeout=60.0, shutdown_grace_period=0.3)
        await gateway.wait_for_long_polls(JOB_TYPE)
        running.pump.request_stop()
        await running.stopped()

    async def test_jobs_left_at_the_end_of_the_grace_period_are_named(
        self, gateway: ZeebeGatewayEmulator, start: Start, logs: Logs
    ) -> None:
        # No grace at all: the job, released as the drain begins, still has its report to
        # send when the grace period (0 s) is over.
        hold = asyncio.Event()
        handler = ScriptedHandler(hold=hold)
        running = await start(handler, shutdown_grace_period=0.0)
        key = gateway.create_job(JOB_TYPE, {"operation": "read"})
        await handler.next_job()
        logs.on_event["worker_draining"] = hold.set
        running.pump.request_stop()
        with pytest.raises(DrainTimeout, match=r"^1 jobs still in flight after the grace period$"):
            await running.stopped()
        [left] = logs.named("worker_stopped_with_jobs_left")
        assert without_time(left) == {
            "event": "worker_stopped_with_jobs_left",
            "log_level": "error",
            "jobs_left": 1,
            "job_keys": [key],
        }
        assert not logs.named("worker_stopped")
