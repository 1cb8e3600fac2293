"""The OpenTelemetry side of `tracing.py`, imported only when traces are on.

Attribute names: OpenTelemetry's HTTP client semantic conventions for the request spans; for the
job span, `camunda.*` for what Zeebe says of the job and `servicenow.*` for what it asks of
ServiceNow.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import httpx
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pyzeebe import Job

from servicenow_worker import __version__
from servicenow_worker.http_transport import WrappingTransport
from servicenow_worker.metrics import outcome_label
from servicenow_worker.outcome import Outcome

SERVICE_NAME: Final = "servicenow-worker"
FAILED_OUTCOMES: Final = frozenset({"failed", "incident"})
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def provider_from_environment(environ: Mapping[str, str]) -> TracerProvider:
    """A provider as the OTEL_* variables describe it: resource, sampler, exporter, batching."""
    attributes: dict[str, str] = {"service.version": __version__}
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = SERVICE_NAME
    # The sampler (OTEL_TRACES_SAMPLER) and the batching (OTEL_BSP_*) are read by the SDK itself.
    provider = TracerProvider(resource=Resource.create(attributes))
    names = environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    for name in (part.strip() for part in names.split(",")):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    return provider


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not supported: otlp, console or none")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    # Each exporter reads its endpoint, headers, certificates and timeout from OTEL_EXPORTER_OTLP_*.
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    raise ValueError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported: http/protobuf or grpc"
    )


class OtelTracing:
    """`tracing.Tracing` with OpenTelemetry: spans of `provider`, context via the propagators
    OTEL_PROPAGATORS names (W3C trace context by default)."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer("servicenow_worker", __version__)

    @contextmanager
    def job(self, job: Job) -> Iterator["JobSpan"]:
        with self._tracer.start_as_current_span(
            f"job {job.type}",
            kind=SpanKind.CONSUMER,
            attributes={
                "camunda.job.key": job.key,
                "camunda.job.type": job.type,
                "camunda.job.retries": job.retries,
                "camunda.process_instance.key": job.process_instance_key,
                "camunda.bpmn_process_id": job.bpmn_process_id,
                "camunda.element.id": job.element_id,
                "camunda.element_instance.key": job.element_instance_key,
            },
        ) as span:
            yield JobSpan(span)

    def describe_job(self, operation: str, table: str | None) -> None:
        span = trace.get_current_span()
        span.set_attribute("servicenow.operation", operation)
        if table is not None:
            span.set_attribute("servicenow.table", table)

    def instrument(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return TracedTransport(transport, self._tracer)


class JobSpan:
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def finished(self, outcome: Outcome | None) -> None:
        label = outcome_label(outcome) if outcome is not None else "handed_back"
        self._span.set_attribute("servicenow_worker.outcome", label)
        if outcome is not None and outcome.error_code is not None:
            self._span.set_attribute("error.type", outcome.error_code)
        if label in FAILED_OUTCOMES:
            self._span.set_status(StatusCode.ERROR)


class TracedTransport(WrappingTransport):
    """A client span per request, from sending until the answer's headers (as OpenTelemetry's
    own httpx instrumentation does), with `traceparent` sent. The URL is recorded without its
    query: a ServiceNow query holds process data."""

    def __init__(self, inner: httpx.AsyncBaseTransport, tracer: trace.Tracer) -> None:
        super().__init__(inner)
        self._tracer = tracer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "url.full": str(url.copy_with(query=None, fragment=None)),
            "url.scheme": url.scheme,
            "server.address": url.host,
            "server.port": url.port or DEFAULT_PORTS.get(url.scheme, 0),
        }
        with self._tracer.start_as_current_span(
            request.method, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            propagate.inject(request.headers)
            try:
                response = await self._inner.handle_async_request(request)
            except Exception as error:
                span.set_attribute("error.type", type(error).__qualname__)
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(StatusCode.ERROR)
            return response
