"""The composition root: settings, logs, the ServiceNow client, the gateway channel, the job loop.

The command line (`cli.py`) runs `serve`; the demo (`demo.py`) runs `open_worker` against its
emulators. Neither is imported here.

Exit codes: 0 after a requested stop with every job reported; 1 when the loop ends unasked or the
grace period runs out; 2 for invalid settings.
"""

import asyncio
import gc
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import structlog
from pydantic import ValidationError
from pyzeebe.grpc_internals.zeebe_adapter import ZeebeAdapter

from servicenow_worker import __version__, tracing
from servicenow_worker.auth import Authenticator, TokenCache
from servicenow_worker.camunda_documents import DocumentStore
from servicenow_worker.flow_control import FlowControl, FlowSettings
from servicenow_worker.handler import JobHandler
from servicenow_worker.health import HealthServer
from servicenow_worker.http_transport import AiohttpTransport, NoCookieJar
from servicenow_worker.inputs import InputRules
from servicenow_worker.metrics import WorkerMetrics
from servicenow_worker.secrets import SecretStore
from servicenow_worker.servicenow import RetryPolicy, TableClient
from servicenow_worker.settings import Settings
from servicenow_worker.zeebe import DrainTimeout, JobPump, PumpSettings
from servicenow_worker.zeebe_channel import build_channel, token_source

log = structlog.get_logger("servicenow_worker")

EXIT_INVALID_SETTINGS = 2


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop where it is installed (not on Windows), else on asyncio's own loop.

    uvloop took about 10 % off the worker's CPU per job in the benchmark (docs/performance.md).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    return uvloop.run(main)


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 with one line naming the variable."""
    try:
        return Settings()
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        name = "_".join(str(part) for part in first["loc"]).upper()
        message = first["msg"].removeprefix("Value error, ")
        where = f"invalid setting {name}" if name else "invalid settings"
        print(f"servicenow-worker: {where}: {message}", file=sys.stderr)
        sys.exit(EXIT_INVALID_SETTINGS)


def build_http_client(
    settings: Settings, metrics: WorkerMetrics | None = None
) -> httpx.AsyncClient:
    """One pooled client for every job: keep-alive connections, TLS verified, no environment."""
    # aiohttp's pool under httpx's API: httpcore's pool costs CPU per request that grows with the
    # pool (docs/performance.md).
    transport: httpx.AsyncBaseTransport = AiohttpTransport(
        max_connections=settings.worker_max_jobs_in_flight,
        verify=settings.servicenow_tls_context() or True,
    )
    if metrics is not None:
        transport = metrics.instrument(transport)  # times each request to ServiceNow
    # A client span per request, with traceparent, when traces are on; else unchanged.
    transport = tracing.instrument(transport)
    return _pooled_client(settings, transport)


def build_documents_client(settings: Settings) -> httpx.AsyncClient:
    """The client for Camunda's REST API (the document store): a pool of its own, trusting the
    system's CAs or ZEEBE_CA_CERTIFICATE_PATH, never showing ServiceNow's client certificate."""
    ca_file = settings.zeebe_ca_certificate_path
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
    )
    return _pooled_client(
        settings,
        AiohttpTransport(max_connections=settings.worker_max_jobs_in_flight, verify=verify),
    )


def _pooled_client(settings: Settings, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=settings.servicenow_connect_timeout,
            read=settings.servicenow_read_timeout,
            write=settings.servicenow_read_timeout,
            pool=settings.servicenow_connect_timeout,
        ),
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": f"servicenow-worker/{__version__}"},
        cookies=NoCookieJar(),
    )


def build_flow_control(settings: Settings, metrics: WorkerMetrics | None = None) -> FlowControl:
    """The worker's destinations (docs/contract.md §12), reported in `metrics`."""
    flow = FlowControl(
        FlowSettings(
            max_concurrency=settings.servicenow_max_concurrency,
            adaptive=settings.servicenow_adaptive_concurrency,
            retry_after_cap=settings.servicenow_retry_after_cap,
        ),
        metrics,
    )
    if metrics is not None:
        metrics.watch_destinations(flow)
    return flow


def build_handler(
    settings: Settings,
    http: httpx.AsyncClient,
    secrets: Mapping[str, str] | None = None,
    tokens: TokenCache | None = None,
    documents: DocumentStore | None = None,
    flow: FlowControl | None = None,
) -> JobHandler:
    return JobHandler(
        table_client=TableClient(
            http,
            retry=RetryPolicy(attempts=settings.servicenow_retry_attempts),
            attempt_timeout=settings.servicenow_connect_timeout + settings.servicenow_read_timeout,
            # OAuth tokens live as long as the worker, shared by all its jobs.
            authenticator=Authenticator(http, tokens if tokens is not None else TokenCache()),
            flow=flow if flow is not None else build_flow_control(settings),
        ),
        rules=InputRules(
            url_template=settings.servicenow_url_template,
            allowed_hosts=settings.servicenow_allowed_hosts,
            max_limit=settings.servicenow_max_limit,
            max_records=settings.servicenow_max_records,
            max_batch=settings.servicenow_max_batch,
        ),
        secrets=SecretStore(
            environment=settings.secrets_from_environment() if secrets is None else secrets,
            directory=settings.secrets_dir,
            env_prefix=settings.secrets_env_prefix,
        ),
        settings=settings,
        documents=documents,
    )


def pump_settings(settings: Settings) -> PumpSettings:
    return PumpSettings(
        job_type=settings.worker_job_type,
        worker_name=settings.worker_name,
        max_jobs_in_flight=settings.worker_max_jobs_in_flight,
        job_timeout=settings.worker_job_timeout,
        poll_timeout=settings.worker_poll_timeout,
        shutdown_grace_period=settings.worker_shutdown_grace_period,
        gateway_address=settings.zeebe_address,
        tenant_ids=settings.zeebe_tenant_ids,
    )


@asynccontextmanager
async def open_worker(
    settings: Settings,
    secrets: Mapping[str, str] | None = None,
    tokens: TokenCache | None = None,
) -> AsyncIterator[JobPump]:
    """The job loop with its HTTP client and gateway channel, closed on exit.

    `secrets` replaces the `SECRET_*` environment variables (the demo brings its own); `tokens`
    replaces the OAuth token cache (tests give one with their own clock).
    """
    metrics = WorkerMetrics(settings.worker_max_jobs_in_flight)
    # One OAuth client for Zeebe and Camunda's REST API: one cached token, renewed once.
    camunda_tokens = token_source(settings)
    async with (
        build_http_client(settings, metrics) as http,
        build_documents_client(settings) as documents_http,
    ):
        documents = (
            DocumentStore(documents_http, settings.camunda_rest_address, camunda_tokens)
            if settings.camunda_rest_address is not None
            else None
        )
        channel = build_channel(settings, camunda_tokens)
        try:
            pump = JobPump(
                ZeebeAdapter(channel, max_connection_retries=-1),
                build_handler(
                    settings,
                    http,
                    secrets,
                    tokens,
                    documents,
                    build_flow_control(settings, metrics),
                ),
                pump_settings(settings),
                metrics,
            )
            metrics.watch(pump)
            yield pump
        finally:
            await channel.close(grace=None)


# Objects allocated, less freed, before a young collection (CPython's default is 700).
GC_YOUNG_THRESHOLD: Final = 2000


def settle_garbage_collector() -> None:
    """Freeze what start-up built and collect less often (docs/performance.md).

    Every job allocates thousands of objects that live while it waits for ServiceNow, so the
    default thresholds promote them and run a full collection every few dozen jobs, each walking
    every module, schema and client made at start-up. Frozen, those are never walked again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def serve(settings: Settings) -> int:
    """Run the worker until SIGTERM or SIGINT; the process's exit code."""
    log.info(
        "worker_configured",
        version=__version__,
        zeebe_address=settings.zeebe_address,
        servicenow_url_template=settings.servicenow_url_template,
    )
    async with open_worker(settings) as pump:
        health = await start_health_server(settings, pump)
        if health is None:
            return 1

        def stop() -> None:
            health.draining()
            pump.request_stop()

        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, stop)
        settle_garbage_collector()
        try:
            return await supervise(pump)
        finally:
            await health.stop()


async def start_health_server(settings: Settings, pump: JobPump) -> HealthServer | None:
    """/livez, /readyz and /metrics on HEALTH_HOST:HEALTH_PORT; None (said on stderr) if it cannot bind."""
    health = HealthServer(
        pump,
        pump.metrics,
        host=settings.health_host,
        port=settings.health_port,
        max_jobs_in_flight=settings.worker_max_jobs_in_flight,
        poll_timeout=settings.worker_poll_timeout,
    )
    try:
        await health.start()
    except OSError as error:
        where = f"{settings.health_host}:{settings.health_port}"
        log.error("health_server_failed", address=where, error=str(error))
        print(
            f"servicenow-worker: cannot serve the health endpoint on {where} ({error}): "
            "set HEALTH_PORT to a free port",
            file=sys.stderr,
        )
        return None
    log.info("health_server_started", host=settings.health_host, port=health.port)
    return health


async def supervise(pump: JobPump) -> int:
    """Run the loop; a loop that ends without a stop request is a failure a supervisor must see."""
    try:
        await pump.run()
    except DrainTimeout:
        return 1
    except Exception:
        log.exception("worker_loop_crashed")
        return 1
    return 0
