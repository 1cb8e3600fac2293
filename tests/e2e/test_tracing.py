"""OpenTelemetry traces: a span per job with a client span per HTTP request under it, W3C
traceparent sent to ServiceNow; configured only by OTEL_* variables; nothing loaded when off."""

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker import tracing

from .conftest import JOB_TYPE, PASSWORD, USER, RunJob, StartWorker, job_variables
from .worker_process import WorkerProcess


class SpanRecorder(InMemorySpanExporter):
    """The in-memory exporter, awaitable: a job's span ends after its outcome reached Zeebe."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: list[asyncio.Future[None]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        return result

    async def jobs(self, count: int) -> list[ReadableSpan]:
        """The first `count` job spans, once they have ended."""
        async with asyncio.timeout(10):
            while len(job_spans(self)) < count:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter
        return job_spans(self)


@pytest.fixture(name="spans")
def _spans() -> Iterator[SpanRecorder]:
    """Traces on, into memory, for the worker the test then starts."""
    exporter = SpanRecorder()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.off()
    provider.shutdown()


def job_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if span.kind is SpanKind.CONSUMER]


def children(spans: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        span
        for span in spans.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_a_job_span_with_a_client_span_per_request(
    spans: SpanRecorder,
    run_job: RunJob,
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
) -> None:
    done = await run_job(
        job_variables(operation="create", table="incident", payload={"short_description": "x"})
    )
    assert done.kind == "complete"
    [job] = await spans.jobs(1)
    snapshot = gateway.job(done.job_key)
    assert job.name == f"job {JOB_TYPE}"
    assert job.attributes is not None
    assert (
        dict(job.attributes).items()
        >= {
            "camunda.job.key": done.job_key,
            "camunda.job.type": JOB_TYPE,
            "camunda.process_instance.key": snapshot.process_instance_key,
            "camunda.element.id": snapshot.element_id,
            "servicenow.operation": "create",
            "servicenow.table": "incident",
            "servicenow_worker.outcome": "completed",
        }.items()
    )
    assert job.status.status_code is StatusCode.UNSET

    [request] = children(spans, job)
    assert (request.name, request.kind) == ("POST", SpanKind.CLIENT)
    assert request.context.trace_id == job.context.trace_id
    assert request.attributes is not None
    host, port = servicenow.base_url.removeprefix("http://").split(":")
    assert dict(request.attributes) == {
        "http.request.method": "POST",
        "url.full": f"{servicenow.base_url}/api/now/table/incident",
        "url.scheme": "http",
        "server.address": host,
        "server.port": int(port),
        "http.response.status_code": 201,
    }
    # ServiceNow received the client span's context (and the query stayed out of url.full).
    [received] = [r for r in servicenow.requests if r.method == "POST"]
    assert received.headers["traceparent"] == traceparent(request)


async def test_a_failed_job_span_and_its_retried_requests(
    spans: SpanRecorder, run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """A read of a missing record: 404, an incident; the span says so, with the code."""
    failed = await run_job(
        job_variables(operation="read", table="incident", sysId="0" * 32, fields="number")
    )
    assert (failed.kind, failed.retries) == ("fail", 0)
    [job] = await spans.jobs(1)
    assert job.attributes is not None
    assert job.attributes["servicenow_worker.outcome"] == "incident"
    assert job.attributes["error.type"] == "404"
    assert job.status.status_code is StatusCode.ERROR
    [request] = children(spans, job)
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 404
    assert request.attributes["error.type"] == "404"
    assert "?" not in str(request.attributes["url.full"])  # sysparm_fields is not recorded
    [received] = servicenow.requests
    assert received.query.get("sysparm_fields") == "number"
    assert received.headers["traceparent"] == traceparent(request)


async def test_every_job_has_its_own_trace(spans: SpanRecorder, run_job: RunJob) -> None:
    for _ in range(3):
        await run_job(job_variables(operation="read", table="incident", limit=1))
    jobs = await spans.jobs(3)
    assert len({span.context.trace_id for span in jobs}) == 3
    for job in jobs:
        assert [span.kind for span in children(spans, job)] == [SpanKind.CLIENT]


async def test_a_job_handed_back_at_the_stop_has_its_span(
    spans: SpanRecorder, gateway: ZeebeGatewayEmulator, start_worker: StartWorker
) -> None:
    """A job that arrives after the stop is returned unrun; its span says so, without error."""
    pump = await start_worker(worker_poll_timeout=30)
    await gateway.wait_for_long_polls(JOB_TYPE)
    pump.request_stop()
    key = gateway.create_job(JOB_TYPE, job_variables(operation="read", table="incident"))
    [job] = await spans.jobs(1)
    assert job.attributes is not None
    assert job.attributes["servicenow_worker.outcome"] == "handed_back"
    assert job.attributes["camunda.job.key"] == key
    assert job.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_on_only_when_the_otel_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.enabled(environ) is on


# Runs the demo (the real worker, six jobs against the built-in emulators) through the console
# script's main, then prints which opentelemetry modules were loaded and the client's transport.
OFF_PROBE = """
import sys
from servicenow_worker import cli
from servicenow_worker.app import build_http_client
from servicenow_worker.settings import Settings
try:
    cli.main(["--demo"])
except SystemExit as stop:
    assert stop.code == 0, stop.code
transport = build_http_client(Settings(zeebe_address="127.0.0.1:1"))._transport
print(type(transport).__name__)
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""


def test_off_nothing_is_loaded_and_nothing_wraps_the_transport() -> None:
    ran = subprocess.run(
        [sys.executable, "-c", OFF_PROBE],
        env={"PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    *_, transport, modules = ran.stdout.strip().splitlines()
    assert modules == "[]"
    assert transport == "_TimedTransport" or transport == "AiohttpTransport"


def test_the_probe_would_see_opentelemetry() -> None:
    """The test above can fail: with traces on, the same probe finds opentelemetry loaded."""
    ran = subprocess.run(
        [sys.executable, "-c", OFF_PROBE],
        env={"PATH": "", "OTEL_TRACES_EXPORTER": "console"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "opentelemetry.sdk.trace" in ran.stdout
    assert "TracedTransport" in ran.stdout


@pytest.fixture(name="collector")
async def _collector() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP receiver: what the worker exports to /v1/traces, decoded."""
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received.append(export)
        return web.Response(content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", received
    await runner.cleanup()


async def test_the_worker_exports_over_otlp_as_the_variables_say(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    collector: tuple[str, list[ExportTraceServiceRequest]],
) -> None:
    """The console script with OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME: the spans
    reach the collector by the time the worker has stopped."""
    endpoint, received = collector
    worker = await WorkerProcess(
        ZEEBE_ADDRESS=gateway.address,
        SERVICENOW_URL_TEMPLATE=servicenow.base_url,
        HEALTH_PORT="0",
        WORKER_POLL_TIMEOUT="0.5",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="servicenow-worker-test",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    ).start()
    try:
        await worker.wait_for_event("worker_started")
        key = gateway.create_job(
            JOB_TYPE,
            {"authentication": {"username": USER, "password": PASSWORD}},
            {"operation": "read", "table": "incident", "limit": "1"},
        )
        await gateway.wait_for_outcomes(key, 1)
        worker.send()
        assert await worker.exit_code() == 0
    finally:
        await worker.kill()
    spans = [
        (resource.resource, span)
        for export in received
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    by_name: dict[str, Any] = {span.name: (res, span) for res, span in spans}
    assert set(by_name) == {f"job {JOB_TYPE}", "GET"}
    resource, job = by_name[f"job {JOB_TYPE}"]
    _, request = by_name["GET"]
    attributes = {a.key: a.value for a in resource.attributes}
    assert attributes["service.name"].string_value == "servicenow-worker-test"
    assert attributes["deployment.environment"].string_value == "test"
    assert request.parent_span_id == job.span_id and request.trace_id == job.trace_id
    job_attributes = {a.key: a.value for a in job.attributes}
    assert job_attributes["camunda.job.key"].int_value == key
    assert job_attributes["servicenow.operation"].string_value == "read"
    [received_request] = servicenow.requests
    version, trace_id, span_id, _flags = received_request.headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", request.trace_id.hex(), request.span_id.hex())


async def test_traces_asked_for_but_not_to_be_had_stop_the_worker() -> None:
    worker = await WorkerProcess(ZEEBE_ADDRESS="127.0.0.1:1", OTEL_TRACES_EXPORTER="zipkin").start()
    assert await worker.exit_code() == 2
    assert "OTEL_TRACES_EXPORTER: 'zipkin' is not supported" in await worker.stderr()
