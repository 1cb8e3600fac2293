"""Prometheus metrics of one worker, cheap enough to update on every job.

Every labelled series is created up front (so it reads 0 before the first event, and `rate()` and
alerts work from the start) and kept in a dict, so a job costs a few dict lookups and counter
increments, with no label parsing. Label values come from fixed sets only (an operation is one of
`create`/`read`/`update`/`delete` or `unknown`, never a table name, sys_id or free text), except
`destination`: the ServiceNow base URL a job resolved to (validated; it never holds credentials),
whose series appear when the worker first sends to it.

The registry is the worker's own (several workers can live in one test process); `/metrics` also
serves the process-wide default registry: process CPU, memory and file descriptors, Python's GC,
and stamina's `stamina_retries_total` (in-process ServiceNow retries, see docs/operations.md).
"""

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Protocol

import httpx
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from servicenow_worker import __version__, errors
from servicenow_worker.http_transport import WrappingTransport
from servicenow_worker.inputs import Operation, resolve_operation
from servicenow_worker.outcome import Complete, Fail, Outcome, ThrowError

OPERATION_LABELS: Final = (*(op.value for op in Operation), "unknown")
#: How a job ended, as the worker reported it to Zeebe.
OUTCOMES: Final = ("completed", "failed", "incident", "bpmn_error", "handed_back")
STATUS_CLASSES: Final = ("2xx", "3xx", "4xx", "5xx", "error")
# The Table API operation each HTTP method carries out (an idempotency lookup is a read).
METHOD_OPERATIONS: Final = {"POST": "create", "GET": "read", "PATCH": "update", "DELETE": "delete"}
REQUEST_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS: Final = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
THROTTLE_STATUSES: Final = ("429", "503")
NOT_REPORTED_REASONS: Final = ("job_gone", "gateway_unavailable")
# Error codes whose series exist from the start (alerts use them); others appear when first seen.
ERROR_CODES: Final = (
    errors.INVALID_INPUT,
    errors.TIMEOUT,
    errors.CONNECTION_ERROR,
    errors.INVALID_RESPONSE,
    errors.RESULT_TOO_LARGE,
    errors.AUTH_FAILED,
    "429",
)
# A label value: one of the worker's own codes or an HTTP status; never free text.
ERROR_CODE_LABEL: Final = re.compile(r"[A-Z][A-Z_]{0,39}|[1-5][0-9][0-9]")

# No `*_created` series: they double the page and nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class PumpView(Protocol):
    """What the metrics read from the job loop at scrape time."""

    @property
    def jobs_in_flight(self) -> int: ...

    gateway_failures: int
    last_gateway_contact: float | None


class DestinationView(Protocol):
    """What the gauges read from a flow-control destination at scrape time."""

    base_url: str
    limit: float
    in_flight: int

    @property
    def waiting(self) -> int: ...


class WorkerMetrics:
    """The worker's counters, gauges and histogram, in a registry of their own."""

    def __init__(self, max_jobs_in_flight: int = 0) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        info = Gauge(
            "servicenow_worker_info",
            "Always 1; the worker's version as a label.",
            ["version"],
            registry=registry,
        )
        info.labels(version=__version__).set(1)
        Gauge(
            "servicenow_worker_max_jobs_in_flight",
            "WORKER_MAX_JOBS_IN_FLIGHT: jobs the worker runs at once at most.",
            registry=registry,
        ).set(max_jobs_in_flight)
        self._activated = Counter(
            "servicenow_worker_jobs_activated",
            "Jobs received from the gateway.",
            registry=registry,
        )
        finished = Counter(
            "servicenow_worker_jobs_finished",
            "Jobs ended, by operation and outcome: completed, failed (Zeebe retries it after "
            "its back-off), incident (failed with no retries left), bpmn_error, handed_back "
            "(returned unrun at shutdown).",
            ["operation", "outcome"],
            registry=registry,
        )
        self._finished = {
            (operation, outcome): finished.labels(operation=operation, outcome=outcome)
            for operation in OPERATION_LABELS
            for outcome in OUTCOMES
        }
        not_reported = Counter(
            "servicenow_worker_jobs_not_reported",
            "Job outcomes that never reached Zeebe: job_gone (timed out or cancelled meanwhile), "
            "gateway_unavailable (the gateway failed until the job's deadline).",
            ["reason"],
            registry=registry,
        )
        self._not_reported = {
            reason: not_reported.labels(reason=reason) for reason in NOT_REPORTED_REASONS
        }
        self._job_errors = Counter(
            "servicenow_worker_job_errors",
            "Jobs whose operation ended in an error, by the code errorExpression sees as "
            "error.code (docs/contract.md §6): the worker's own (RESULT_TOO_LARGE, TIMEOUT, ...) "
            "or ServiceNow's HTTP status; counted whatever errorExpression then decided.",
            ["code"],
            registry=registry,
        )
        for code in ERROR_CODES:
            self._job_errors.labels(code=code)
        request_seconds = Histogram(
            "servicenow_worker_servicenow_request_duration_seconds",
            "Duration of each HTTP request to ServiceNow (every in-process retry is a request), "
            "until its body is read, by operation and status class (error: no HTTP answer).",
            ["operation", "status_class"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._request_seconds = {
            (operation, status_class): request_seconds.labels(
                operation=operation, status_class=status_class
            )
            for operation in OPERATION_LABELS
            for status_class in STATUS_CLASSES
        }
        self._gateway_errors = Counter(
            "servicenow_worker_gateway_errors",
            "Failed ActivateJobs calls (gateway unreachable, refusing or overloaded), by error.",
            ["error"],
            registry=registry,
        )
        self._gateway_reconnects = Counter(
            "servicenow_worker_gateway_reconnects",
            "Times the gateway answered again after one or more failed calls.",
            registry=registry,
        )
        self._in_flight = Gauge(
            "servicenow_worker_jobs_in_flight",
            "Jobs activated and not yet reported.",
            registry=registry,
        )
        self._failures_in_a_row = Gauge(
            "servicenow_worker_gateway_failures_in_a_row",
            "Failed ActivateJobs calls since the gateway last answered.",
            registry=registry,
        )
        self._throttled = Counter(
            "servicenow_worker_servicenow_throttled",
            "Answers of ServiceNow that throttled the worker (429, 503), by destination (the "
            "base URL) and status.",
            ["destination", "status"],
            registry=registry,
        )
        self._wait_seconds = Histogram(
            "servicenow_worker_servicenow_wait_seconds",
            "Time each request to ServiceNow waited for its turn (flow control), by destination.",
            ["destination"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._last_contact = Gauge(
            "servicenow_worker_gateway_last_contact_timestamp_seconds",
            "Unix time the gateway last answered an ActivateJobs call (0: never).",
            registry=registry,
        )

    # -- the job loop's hooks (each a dict lookup and an increment) ---------------------------

    def watch(self, pump: PumpView) -> None:
        """Read in-flight jobs and gateway state from `pump` whenever metrics are scraped."""
        self._in_flight.set_function(lambda: pump.jobs_in_flight)
        self._failures_in_a_row.set_function(lambda: pump.gateway_failures)
        self._last_contact.set_function(lambda: _wall_clock(pump.last_gateway_contact))

    def watch_destinations(self, destinations: Iterable[DestinationView]) -> None:
        """Report limit, in flight and waiting of each destination whenever metrics are scraped."""
        self.registry.register(_DestinationCollector(destinations))

    def destination(self, base_url: str) -> "DestinationMetrics":
        """The throttle counter and wait histogram of one destination (flow_control.py asks)."""
        return DestinationMetrics(
            {status: self._throttled.labels(base_url, status) for status in THROTTLE_STATUSES},
            self._wait_seconds.labels(base_url),
        )

    def job_activated(self) -> None:
        self._activated.inc()

    def job_finished(
        self, headers: Mapping[str, Any], variables: Mapping[str, Any], result: Outcome
    ) -> None:
        self._finished[operation_label(headers, variables), outcome_label(result)].inc()
        if result.error_code is not None:
            code = result.error_code if ERROR_CODE_LABEL.fullmatch(result.error_code) else "other"
            self._job_errors.labels(code=code).inc()

    def job_handed_back(self, headers: Mapping[str, Any], variables: Mapping[str, Any]) -> None:
        self._finished[operation_label(headers, variables), "handed_back"].inc()

    def job_not_reported(self, reason: str) -> None:
        self._not_reported[reason].inc()

    def gateway_error(self, error: str) -> None:
        self._gateway_errors.labels(error=error).inc()

    def gateway_reconnected(self) -> None:
        self._gateway_reconnects.inc()

    def observe_request(self, operation: str, status_class: str, seconds: float) -> None:
        self._request_seconds[operation, status_class].observe(seconds)

    def instrument(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        """`transport` with every request timed into the ServiceNow request histogram."""
        return _TimedTransport(transport, self)

    # -- exposition ----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format of this worker's metrics and the process-wide ones."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class DestinationMetrics:
    """One destination's series, looked up once when the destination is first used."""

    __slots__ = ("_throttled", "_waited")

    def __init__(self, throttled: Mapping[str, Counter], waited: Histogram) -> None:
        self._throttled = throttled
        self._waited = waited

    def throttled(self, status: int) -> None:
        self._throttled[str(status)].inc()

    def waited(self, seconds: float) -> None:
        self._waited.observe(seconds)


class _DestinationCollector(Collector):
    """The flow-control gauges, summed per base URL (over the credentials used with it)."""

    def __init__(self, destinations: Iterable[DestinationView]) -> None:
        self._destinations = destinations

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "limit": GaugeMetricFamily(
                "servicenow_worker_servicenow_concurrency_limit",
                "Requests the worker lets run at once toward a destination (adapted between 1 "
                "and SERVICENOW_MAX_CONCURRENCY).",
                labels=["destination"],
            ),
            "in_flight": GaugeMetricFamily(
                "servicenow_worker_servicenow_requests_in_flight",
                "Requests sent to a destination and not yet answered.",
                labels=["destination"],
            ),
            "waiting": GaugeMetricFamily(
                "servicenow_worker_servicenow_requests_waiting",
                "Requests waiting for their turn (over the limit, or the destination paused).",
                labels=["destination"],
            ),
        }
        totals: dict[str, list[float]] = {}
        for destination in self._destinations:
            sums = totals.setdefault(destination.base_url, [0.0, 0.0, 0.0])
            sums[0] += int(destination.limit)
            sums[1] += destination.in_flight
            sums[2] += destination.waiting
        for base_url, values in totals.items():
            for gauge, value in zip(gauges.values(), values, strict=True):
                gauge.add_metric([base_url], value)
        yield from gauges.values()


def operation_label(headers: Mapping[str, Any], variables: Mapping[str, Any]) -> str:
    """The job's operation as docs/contract.md §2 resolves it, or `unknown`."""
    operation = resolve_operation(headers, variables)
    return operation.value if operation is not None else "unknown"


def outcome_label(result: Outcome) -> str:
    match result:
        case Complete():
            return "completed"
        case Fail(retries=retries):
            return "failed" if retries > 0 else "incident"
        case ThrowError():
            return "bpmn_error"
    return "unknown"  # pragma: no cover - Outcome has no other kind


def request_operation(request: httpx.Request) -> str:
    """The operation an HTTP request to ServiceNow carries out: a Batch, Aggregate or Attachment
    API call by its path, a Table API request by its method (an idempotency lookup is a read)."""
    path = request.url.path
    if path.endswith("/batch"):
        return Operation.BATCH.value
    if "/stats/" in path:
        return Operation.AGGREGATE.value
    if "/api/now/attachment" in path:
        return _attachment_operation(request.method, path).value
    return METHOD_OPERATIONS.get(request.method, "unknown")


def _attachment_operation(method: str, path: str) -> Operation:
    """An upload attaches, a file's content is a download, a DELETE deletes an attachment; any
    other read lists attachments (also attach's look for an earlier copy)."""
    if method == "POST":
        return Operation.ATTACH
    if method == "DELETE":
        return Operation.DELETE_ATTACHMENT
    return Operation.DOWNLOAD if path.endswith("/file") else Operation.LIST_ATTACHMENTS


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 200 <= status < 600 else "error"


def _wall_clock(monotonic_moment: float | None) -> float:
    if monotonic_moment is None:
        return 0.0
    return time.time() - (time.monotonic() - monotonic_moment)


class _TimedTransport(WrappingTransport):
    """Times each request from sending to the end of its body (or to the error that ended it)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: WorkerMetrics) -> None:
        super().__init__(inner)
        self._metrics = metrics

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._metrics.observe_request(
                request_operation(request), "error", time.perf_counter() - started
            )
            raise
        response.stream = _TimedStream(
            response.stream,
            self._metrics,
            request_operation(request),
            status_class(response.status_code),
            started,
        )
        return response


class _TimedStream(httpx.AsyncByteStream):
    def __init__(
        self,
        inner: Any,
        metrics: WorkerMetrics,
        operation: str,
        status_class: str,
        started: float,
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._operation = operation
        self._status_class = status_class
        self._started = started
        self._observed = False

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self._inner:
                yield chunk
        except BaseException:
            self._observe("error")
            raise

    async def aclose(self) -> None:
        self._observe(self._status_class)
        await self._inner.aclose()

    def _observe(self, status_class: str) -> None:
        if not self._observed:
            self._observed = True
            self._metrics.observe_request(
                self._operation, status_class, time.perf_counter() - self._started
            )
