"""The job loop on pyzeebe's gateway adapter: activate, run, report; survive the gateway; drain.

pyzeebe's `ZeebeWorker` loop is not used, for reasons its 4.7.0 source shows
(`pyzeebe/worker/job_poller.py` and `job_executor.py`): its connection-error counter never resets and ends the
worker silently, it sleeps a hard-coded 5 s after any gateway error and `poll_retry_delay`
whenever every slot is busy, its default exception handler logs whole jobs (credentials
included), and it can only fail a job with retries - 1. This loop keeps pyzeebe's channel, adapter,
`Job` and error types, and owns the rest.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import structlog
from pyzeebe import Job
from pyzeebe.errors import (
    JobAlreadyDeactivatedError,
    JobNotFoundError,
    PyZeebeError,
)
from pyzeebe.grpc_internals.zeebe_adapter import ZeebeAdapter

from servicenow_worker import tracing
from servicenow_worker.handler import JobHandler, JobView
from servicenow_worker.inputs import INPUT_NAMES
from servicenow_worker.metrics import WorkerMetrics
from servicenow_worker.outcome import Complete, Fail, Outcome, ThrowError

log = structlog.get_logger("servicenow_worker.zeebe")

GATEWAY_BACKOFF_INITIAL: Final = 0.2
GATEWAY_BACKOFF_MAX: Final = 10.0


@dataclass(frozen=True)
class PumpSettings:
    job_type: str
    worker_name: str
    max_jobs_in_flight: int
    job_timeout: float
    poll_timeout: float
    shutdown_grace_period: float
    gateway_address: str = ""
    tenant_ids: tuple[str, ...] = ()


class DrainTimeout(Exception):
    """The grace period ended with jobs still in flight."""


class JobPump:
    """Keeps up to `max_jobs_in_flight` jobs running, polling the gateway for more as slots free."""

    def __init__(
        self,
        adapter: ZeebeAdapter,
        handler: JobHandler,
        settings: PumpSettings,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.metrics = (
            metrics if metrics is not None else WorkerMetrics(settings.max_jobs_in_flight)
        )
        self._adapter = adapter
        self._handler = handler
        self._settings = settings
        # Task -> job key: a job activated again while its first run is still going (it outlived
        # its timeout) runs twice under one key, and each run holds a slot until it ends.
        self._in_flight: dict[asyncio.Task[None], int] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._cancel_poll = asyncio.Event()
        self._stop_deadline = 0.0
        self.last_gateway_contact: float | None = None
        self.gateway_failures = 0

    @property
    def jobs_in_flight(self) -> int:
        return len(self._in_flight)

    def request_stop(self, *, at_once: bool = False) -> None:
        """Stop taking jobs; `run` returns once the jobs in flight are reported.

        The open long-poll is left to end at the gateway (within WORKER_POLL_TIMEOUT): a call
        cancelled just as the gateway answers would lose the jobs it carried until their timeout,
        while jobs that arrive in an answer are handed back at once. `at_once`, or a second
        request (a second signal), cancels the poll instead."""
        if not self._stopping.is_set():
            log.info(
                "worker_stopping",
                jobs_in_flight=self.jobs_in_flight,
                open_poll_ends_within_s=self._settings.poll_timeout,
            )
            self._stopping.set()
            self._slot_freed.set()  # the loop may be waiting for a free slot
            # The grace period counts from the request and bounds the whole stop, poll included.
            grace = self._settings.shutdown_grace_period
            self._stop_deadline = time.monotonic() + grace
            asyncio.get_running_loop().call_later(grace, self._cancel_poll.set)
            if not at_once:
                return
        if not self._cancel_poll.is_set():
            log.info("worker_stopping_now", jobs_in_flight=self.jobs_in_flight)
            self._cancel_poll.set()

    async def run(self) -> None:
        """Poll and run jobs until asked to stop, then drain. Raises `DrainTimeout` if it cannot."""
        log.info(
            "worker_started",
            job_type=self._settings.job_type,
            max_jobs_in_flight=self._settings.max_jobs_in_flight,
        )
        backoff = GATEWAY_BACKOFF_INITIAL
        while not self._stopping.is_set():
            free = self._settings.max_jobs_in_flight - self.jobs_in_flight
            if free <= 0:
                await self._wait_for(self._slot_freed)
                continue
            if await self._poll_unless_cancelled(free):
                backoff = GATEWAY_BACKOFF_INITIAL
            else:
                await self._wait_for(self._stopping, at_most=backoff)
                backoff = min(backoff * 2, GATEWAY_BACKOFF_MAX)
        await self._drain()

    async def _poll_unless_cancelled(self, free: int) -> bool:
        """One long-poll, cancelled only by a stop at once. False on a gateway error."""
        poll = asyncio.create_task(self._poll(free))
        cancel = asyncio.create_task(self._cancel_poll.wait())
        await asyncio.wait({poll, cancel}, return_when=asyncio.FIRST_COMPLETED)
        cancel.cancel()
        if not poll.done():
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
            return True
        return poll.result()

    async def _poll(self, free: int) -> bool:
        try:
            async for job in self._adapter.activate_jobs(
                task_type=self._settings.job_type,
                worker=self._settings.worker_name,
                timeout=round(self._settings.job_timeout * 1000),
                max_jobs_to_activate=free,
                variables_to_fetch=INPUT_NAMES,
                request_timeout=round(self._settings.poll_timeout * 1000),
                tenant_ids=list(self._settings.tenant_ids) or None,
            ):
                self._start(job)
        except PyZeebeError as error:
            self.gateway_failures += 1
            log.warning(
                "gateway_unreachable",
                gateway=self._settings.gateway_address,
                error=type(error).__name__,
                detail=_grpc_detail(error),
                failures_in_a_row=self.gateway_failures,
            )
            self.metrics.gateway_error(type(error).__name__)
            return False
        if self.gateway_failures:
            log.info("gateway_reachable", after_failures=self.gateway_failures)
            self.metrics.gateway_reconnected()
        self.gateway_failures = 0
        self.last_gateway_contact = time.monotonic()
        return True

    def _start(self, job: Job) -> None:
        self.metrics.job_activated()
        if self._stopping.is_set():
            task = asyncio.create_task(self._hand_back(job))
        else:
            task = asyncio.create_task(self._execute(job))
        self._in_flight[task] = job.key
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._in_flight[task]
        self._slot_freed.set()

    async def _execute(self, job: Job) -> None:
        _bind_job_to_log(job)
        with tracing.job(job) as span:
            try:
                result = await self._handler.handle(
                    JobView(
                        key=job.key,
                        retries=job.retries,
                        deadline_ms=job.deadline,
                        process_instance_key=job.process_instance_key,
                        element_instance_key=job.element_instance_key,
                        bpmn_process_id=job.bpmn_process_id,
                        headers=job.custom_headers,
                        variables=job.variables,
                    )
                )
            except Exception as error:
                # A bug of ours: the message names only the exception type, never its (maybe
                # secret-bearing) text; the traceback goes to the log, which redacts.
                log.exception("job_crashed")
                result = Fail(
                    f"the worker failed unexpectedly ({type(error).__name__}); see the worker's log",
                    retries=max(job.retries - 1, 0),
                )
            self.metrics.job_finished(job.custom_headers, job.variables, result)
            span.finished(result)
            await self._report(job, result)

    async def _hand_back(self, job: Job) -> None:
        _bind_job_to_log(job)
        with tracing.job(job) as span:
            self.metrics.job_handed_back(job.custom_headers, job.variables)
            span.finished(None)
            # Activated after the stop began: return it untouched instead of letting it time out.
            await self._report(
                job,
                Fail("the worker is shutting down; job handed back", retries=job.retries),
            )

    async def _report(self, job: Job, result: Outcome) -> None:
        """Send the outcome, retrying gateway errors until the job's own deadline."""
        deadline = job.deadline / 1000
        delay = GATEWAY_BACKOFF_INITIAL
        while True:
            try:
                await self._send(job, result)
            except (JobNotFoundError, JobAlreadyDeactivatedError) as error:
                log.warning(
                    "job_gone_before_report",
                    error=type(error).__name__,
                    hint="the job timed out or was cancelled meanwhile; raise WORKER_JOB_TIMEOUT if it timed out",
                )
                self.metrics.job_not_reported("job_gone")
                return
            except PyZeebeError as error:
                if time.time() + delay >= deadline:
                    log.error("job_not_reported", error=type(error).__name__)
                    self.metrics.job_not_reported("gateway_unavailable")
                    return
                log.warning("report_retrying", error=type(error).__name__, in_seconds=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, GATEWAY_BACKOFF_MAX)
                continue
            _log_outcome(result)
            return

    async def _send(self, job: Job, result: Outcome) -> None:
        match result:
            case Complete(variables=variables):
                await self._adapter.complete_job(job_key=job.key, variables=variables)
            case Fail(message=message, retries=retries, backoff=backoff, variables=variables):
                await self._adapter.fail_job(
                    job_key=job.key,
                    retries=retries,
                    message=message,
                    retry_back_off_ms=_milliseconds(backoff),
                    variables=variables,
                )
            case ThrowError(code=code, message=message, variables=variables):
                await self._adapter.throw_error(
                    job_key=job.key, message=message, variables=variables, error_code=code
                )

    async def _drain(self) -> None:
        pending = set(self._in_flight)
        if not pending:
            log.info("worker_stopped", jobs_left=0)
            return
        log.info("worker_draining", jobs_in_flight=len(pending))
        grace_left = max(0.0, self._stop_deadline - time.monotonic())
        _, still_running = await asyncio.wait(pending, timeout=grace_left)
        if still_running:
            left = sorted(self._in_flight.values())
            log.error("worker_stopped_with_jobs_left", jobs_left=len(left), job_keys=left)
            for task in still_running:
                task.cancel()
            raise DrainTimeout(f"{len(left)} jobs still in flight after the grace period")
        log.info("worker_stopped", jobs_left=0)

    async def _wait_for(self, event: asyncio.Event, at_most: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), at_most)
        if event is self._slot_freed:
            event.clear()


def _bind_job_to_log(job: Job) -> None:
    """Every log line of this job's task names it (each job runs in a task of its own)."""
    structlog.contextvars.bind_contextvars(
        job_key=job.key,
        process_instance_key=job.process_instance_key,
        element_id=job.element_id,
        bpmn_process_id=job.bpmn_process_id,
    )


def _log_outcome(result: Outcome) -> None:
    match result:
        case Complete():
            log.info("job_completed")
        case Fail(message=message, retries=retries, backoff=backoff):
            log.warning(
                "job_failed", retries=retries, backoff_ms=_milliseconds(backoff), message=message
            )
        case ThrowError(code=code, message=message):
            log.info("job_error_thrown", error_code=code, message=message)


def _milliseconds(duration: timedelta) -> int:
    return round(duration.total_seconds() * 1000)


def _grpc_detail(error: PyZeebeError) -> str:
    cause = error.__cause__ or getattr(error, "grpc_error", None)
    details = getattr(cause, "details", None)
    return str(details()) if callable(details) else type(error).__name__
