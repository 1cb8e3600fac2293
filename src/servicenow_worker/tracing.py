"""OpenTelemetry traces, when the standard `OTEL_*` variables ask for them (docs/operations.md).

A span per job, with a child span per HTTP request the worker sends (to ServiceNow, its token
endpoint, Camunda's REST API) that carries W3C `traceparent` to the server. Configured only by
OpenTelemetry's own variables: traces are on when `OTEL_TRACES_EXPORTER` names an exporter, or an
OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), unless
`OTEL_SDK_DISABLED=true`; everything else (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_PROPAGATORS`, the exporter's settings) is read by OpenTelemetry.

Off, this module is all there is: opentelemetry is never imported (`_otel.py` is, only when on),
the HTTP transport is not wrapped, and a job costs one no-op context manager.
"""

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    from pyzeebe import Job

    from servicenow_worker.outcome import Outcome

EXPORTER_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class JobSpan(Protocol):
    def finished(self, outcome: "Outcome | None") -> None:
        """The job's outcome; None: handed back unrun at shutdown."""


class Tracing(Protocol):
    def job(self, job: "Job") -> AbstractContextManager[JobSpan]: ...

    def describe_job(self, operation: str, table: str | None) -> None: ...

    def instrument(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport: ...


class _NoJobSpan:
    """Both the context manager and the span when tracing is off: one object, no work."""

    def __enter__(self) -> "_NoJobSpan":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def finished(self, outcome: "Outcome | None") -> None:
        return None


class _NoTracing:
    _span = _NoJobSpan()

    def job(self, job: "Job") -> _NoJobSpan:
        return self._span

    def describe_job(self, operation: str, table: str | None) -> None:
        return None

    def instrument(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return transport


class _Active:
    """The tracing in force: none until `configure` or `use` says otherwise."""

    tracing: Tracing = _NoTracing()


def job(job: "Job") -> AbstractContextManager[JobSpan]:
    """The span of one job; the HTTP requests made inside it become its children."""
    return _Active.tracing.job(job)


def describe_job(operation: str, table: str | None) -> None:
    """What the job does, on its span (known once its inputs are read)."""
    _Active.tracing.describe_job(operation, table)


def instrument(transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """`transport` with a client span per request and `traceparent` sent; itself when off."""
    return _Active.tracing.instrument(transport)


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether OpenTelemetry's variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(environ.get(name, "").strip() for name in EXPORTER_VARIABLES)


def configure(environ: Mapping[str, str]) -> Callable[[], None]:
    """Turn traces on if `environ` asks for them; the function that flushes them at exit.

    Raises ValueError, naming the variable, when traces are asked for but cannot be had (the
    `otel` extra missing, an exporter or protocol OpenTelemetry's Python SDK does not have).
    """
    if not enabled(environ):
        return lambda: None
    try:
        from servicenow_worker import _otel
    except ImportError as error:
        raise ValueError(
            "OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
            "pip install 'servicenow-worker[otel]'"
        ) from error
    provider = _otel.provider_from_environment(environ)
    use(provider)
    return provider.shutdown


def use(provider: Any) -> None:
    """Trace with this OpenTelemetry `TracerProvider` (tests give one with an in-memory exporter)."""
    from servicenow_worker import _otel

    _Active.tracing = _otel.OtelTracing(provider)


def off() -> None:
    """Back to no tracing (tests)."""
    _Active.tracing = _NoTracing()
