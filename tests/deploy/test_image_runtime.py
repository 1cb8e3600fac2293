"""What the image runs, run here: the installed console script with the Dockerfile's environment,
its HEALTHCHECK command and its STOPSIGNAL (no container engine needed)."""

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

from ..e2e.conftest import JOB_TYPE, PASSWORD, USER, job_variables
from ..e2e.worker_process import CONSOLE_SCRIPT, WorkerProcess
from .conftest import TokenEndpoint, delta, scrape

ROOT = Path(__file__).resolve().parents[2]
CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    instructions = [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def image_environment() -> dict[str, str]:
    """The ENV of the final stage (PATH aside: here the venv's scripts stand in for /opt/venv)."""
    env: dict[str, str] = {}
    for name, arguments in dockerfile_instructions():
        if name == "ENV":
            for pair in shlex.split(arguments):
                key, _, setting = pair.partition("=")
                if key != "PATH":
                    env[key] = setting
    return env


def exec_form(instruction: str) -> list[str]:
    [arguments] = [args for name, args in dockerfile_instructions() if name == instruction]
    if instruction == "HEALTHCHECK":
        arguments = arguments.split(" CMD ", 1)[1]
    command = json.loads(arguments)
    assert isinstance(command, list)
    return command


def test_the_image_runs_the_console_script_this_package_installs() -> None:
    assert exec_form("ENTRYPOINT") == [CONSOLE_SCRIPT.name] == ["servicenow-worker"]
    [stop] = [args for name, args in dockerfile_instructions() if name == "STOPSIGNAL"]
    assert stop == "SIGTERM"
    [user] = [args for name, args in dockerfile_instructions() if name == "USER"]
    assert not user.startswith(("0", "root"))
    version = subprocess.run(
        [str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("servicenow-worker ")


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command with the image's environment ("python" is this interpreter)."""
    command = exec_form("HEALTHCHECK")
    assert command[:3] == ["python", "-m", "servicenow_worker.health"]
    env = {"PATH": os.environ["PATH"], **image_environment(), "HEALTH_PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(name="servicenow")
async def _servicenow() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emulator:
        yield emulator


def worker(zeebe_address: str, servicenow: ServiceNowEmulator, **settings: str) -> WorkerProcess:
    test_settings = {
        "ZEEBE_ADDRESS": zeebe_address,
        "SERVICENOW_URL_TEMPLATE": servicenow.base_url,
        "WORKER_POLL_TIMEOUT": "0.5",
        "SERVICENOW_CONNECT_TIMEOUT": "2",
        "SERVICENOW_READ_TIMEOUT": "5",
        "WORKER_JOB_TIMEOUT": "30",
    }
    return WorkerProcess(**{**image_environment(), **test_settings, **settings})


async def test_container_lifecycle(servicenow: ServiceNowEmulator) -> None:
    """Healthy once the gateway answers, unhealthy while it is gone, counters move with the jobs,
    reconnects counted, and the stop signal drains the job in flight before exit 0."""
    async with ZeebeGatewayEmulator() as gateway:
        # Port 0: the system picks a free one, and the log says which (no race for a port).
        process = await worker(gateway.address, servicenow, HEALTH_PORT="0").start()
        try:
            port = (await process.wait_for_event("health_server_started"))["port"]
            assert port > 0
            await gateway.wait_until(lambda: len(gateway.activate_requests) >= 2)
            assert healthcheck(port).returncode == 0
            before = await scrape(port)

            keys = [gateway.create_job(JOB_TYPE, CREATE, {}) for _ in range(3)]
            for key in keys:
                assert (await gateway.wait_for_outcome(key)).kind == "complete"
            await process.wait_for_event("job_completed", job_key=keys[-1])
            moved = delta(before, await scrape(port))
            finished = frozenset({("operation", "create"), ("outcome", "completed")})
            assert moved[("servicenow_worker_jobs_activated_total", frozenset())] == 3
            assert moved[("servicenow_worker_jobs_finished_total", finished)] == 3

            await gateway.stop()
            await process.wait_for_event("gateway_unreachable")
            unhealthy = healthcheck(port)
            assert unhealthy.returncode == 1
            assert "gateway unreachable" in unhealthy.stdout
            await gateway.start()
            await process.wait_for_event("gateway_reachable")
            samples = await scrape(port)
            assert samples[("servicenow_worker_gateway_reconnects_total", frozenset())] == 1

            servicenow.inject(Fault.delay(1.0, method="POST", times=1))
            key = gateway.create_job(JOB_TYPE, CREATE, {})
            await servicenow.wait_for_requests(4)
            process.send(signal.SIGTERM)  # the Dockerfile's STOPSIGNAL
            assert await process.exit_code() == 0
        finally:
            await process.kill()
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
    assert process.position("worker_stopping") < process.position("job_completed", job_key=key)


async def test_health_port_in_use_is_a_start_up_error(servicenow: ServiceNowEmulator) -> None:
    async with ZeebeGatewayEmulator() as gateway:
        first = await worker(gateway.address, servicenow, HEALTH_PORT="0").start()
        try:
            port = (await first.wait_for_event("health_server_started"))["port"]
            second = await worker(gateway.address, servicenow, HEALTH_PORT=str(port)).start()
            assert await second.exit_code() == 1
            assert "HEALTH_PORT" in await second.stderr()
        finally:
            await first.kill()


async def test_token_endpoint_refusal_is_logged_and_retried_without_the_secret(
    servicenow: ServiceNowEmulator, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.status = 401
    async with ZeebeGatewayEmulator(require_bearer_token=token_endpoint.token) as gateway:
        process = await worker(
            gateway.address,
            servicenow,
            HEALTH_PORT="0",
            ZEEBE_CLIENT_ID=token_endpoint.client_id,
            ZEEBE_CLIENT_SECRET=token_endpoint.client_secret,
            ZEEBE_AUTHORIZATION_SERVER_URL=token_endpoint.url,
        ).start()
        try:
            failed = await process.wait_for_event("gateway_unreachable")
            assert "refused the client credentials" in failed["detail"]
            assert "unauthorized_client" in failed["detail"]
            token_endpoint.status = 200
            await process.wait_for_event("gateway_reachable")
            key = gateway.create_job(JOB_TYPE, CREATE, {})
            assert (await gateway.wait_for_outcome(key)).kind == "complete"
            process.send(signal.SIGTERM)
            assert await process.exit_code() == 0
        finally:
            await process.kill()
    assert token_endpoint.client_secret not in "".join(process.raw_stdout)
    assert gateway.rpc_counts["ActivateJobs"] >= 1
