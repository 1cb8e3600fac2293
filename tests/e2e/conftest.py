"""End-to-end fixtures: the real worker against the Zeebe gateway and ServiceNow emulators."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator
from servicenow_worker.app import open_worker
from servicenow_worker.settings import Settings
from servicenow_worker.zeebe import JobPump

from .worker_process import WorkerProcess

JOB_TYPE = "servicenow:1"
USER = "camunda"
PASSWORD = 'Pa55:w"rd ö€'
AUTH = {"type": "basic", "username": USER, "password": PASSWORD}

StartWorker = Callable[..., Awaitable[JobPump]]
RunJob = Callable[..., Awaitable[JobOutcome]]


@pytest.fixture(name="servicenow")
async def _servicenow() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emulator:
        yield emulator


@pytest.fixture(name="gateway")
async def _gateway() -> AsyncIterator[ZeebeGatewayEmulator]:
    async with ZeebeGatewayEmulator() as emulator:
        yield emulator


def worker_settings(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, **overrides: Any
) -> Settings:
    """Settings as an operator would set them for the emulators, with short test timeouts."""
    values: dict[str, Any] = {
        "zeebe_address": gateway.address,
        "servicenow_url_template": servicenow.base_url,
        "worker_poll_timeout": 0.5,
        "worker_job_timeout": 30,
        "servicenow_connect_timeout": 2,
        "servicenow_read_timeout": 5,
        "worker_shutdown_grace_period": 5,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(name="start_worker")
async def _start_worker(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> AsyncIterator[StartWorker]:
    """Start the real job loop in-process; it is stopped (and must drain) when the test ends,
    at once: no job can arrive in its open long-poll then."""
    async with AsyncExitStack() as stack:
        runs: list[tuple[JobPump, asyncio.Task[None]]] = []

        async def start(**overrides: Any) -> JobPump:
            settings = worker_settings(gateway, servicenow, **overrides)
            pump = await stack.enter_async_context(open_worker(settings))
            runs.append((pump, asyncio.create_task(pump.run())))
            return pump

        yield start
        for pump, run in runs:
            pump.request_stop(at_once=True)
            await run


@pytest.fixture(name="run_job")
async def _run_job(gateway: ZeebeGatewayEmulator, start_worker: StartWorker) -> RunJob:
    """Create one job, with a worker running, and return its first outcome."""
    started: list[JobPump] = []

    async def run(
        variables: dict[str, Any], headers: dict[str, Any] | None = None, retries: int = 3
    ) -> JobOutcome:
        if not started:
            started.append(await start_worker())
        key = gateway.create_job(JOB_TYPE, variables, headers or {}, retries)
        [first] = await gateway.wait_for_outcomes(key, 1)
        return first

    return run


def job_variables(**inputs: Any) -> dict[str, Any]:
    """The variables a template-built task sends: instance is not needed with the emulator URL."""
    return {"authentication": AUTH, **inputs}


Spawn = Callable[..., WorkerProcess]


@pytest.fixture(name="spawn")
async def _spawn(servicenow: ServiceNowEmulator) -> AsyncIterator[Spawn]:
    """Worker processes (the console script) for the emulators, killed when the test ends."""
    processes: list[WorkerProcess] = []

    def spawn(zeebe_address: str, **settings: str) -> WorkerProcess:
        defaults = {
            "ZEEBE_ADDRESS": zeebe_address,
            "SERVICENOW_URL_TEMPLATE": servicenow.base_url,
            "WORKER_POLL_TIMEOUT": "0.5",
            "HEALTH_PORT": "0",
            "SERVICENOW_CONNECT_TIMEOUT": "2",
            "SERVICENOW_READ_TIMEOUT": "5",
            "WORKER_JOB_TIMEOUT": "30",
        }
        process = WorkerProcess(**{**defaults, **settings})
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        await process.kill()
