"""Container tests: the image built from this repository's Dockerfile, and the compose file, run by
a real container engine through the `docker` command line, as a user runs them.

With `CI=true` a missing engine fails the run; elsewhere these tests skip and say how to get one.
`SERVICENOW_WORKER_TEST_DOCKERFILE` builds the image from another Dockerfile (a broken one, to see
each test fail)."""

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator, free_port

from ..e2e.conftest import PASSWORD, USER
from ..e2e.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
PODMAN_SOCKET = Path("/run/podman/podman.sock")
HOW_TO_GET_AN_ENGINE = (
    "no container engine answers `docker info`: start Docker, or (no Docker) run "
    "a podman engine (as .ci/run does, see its comments) and export "
    "DOCKER_HOST=unix:///run/podman/podman.sock DOCKER_BUILDKIT=0"
)
# Short test timeouts; the rest is the image's own environment.
TEST_SETTINGS = {
    "WORKER_POLL_TIMEOUT": "0.5",
    "SERVICENOW_CONNECT_TIMEOUT": "2",
    "SERVICENOW_READ_TIMEOUT": "5",
    "WORKER_JOB_TIMEOUT": "30",
}


@dataclass(frozen=True)
class Docker:
    """The `docker` command line, with the environment that reaches the engine."""

    env: dict[str, str]

    def run(self, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """For what runs while no emulator needs the event loop (builds, one-off containers)."""
        return subprocess.run(
            ["docker", *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    async def call(self, *arguments: str, timeout: float = 120) -> tuple[int, str, str]:
        """For what runs beside the emulators: they answer the container from this event loop."""
        process = await asyncio.create_subprocess_exec(
            "docker",
            *arguments,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()

    def run_once(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """`docker run` of a container that exits by itself; its exit code as the engine recorded
        it (podman's Docker API loses it with `--rm`)."""
        name = container_name()
        ran = self.run("run", "--name", name, *arguments)
        try:
            exited = self.run("inspect", "--format", "{{.State.ExitCode}}", name)
            assert exited.returncode == 0, ran.stderr
            ran.returncode = int(exited.stdout)
        finally:
            self.run("rm", "--force", name)
        return ran

    async def inspect(self, what: str, template: str = "{{json .}}") -> Any:
        code, stdout, stderr = await self.call("inspect", "--format", template, what)
        assert code == 0, stderr
        return json.loads(stdout)

    async def health(self, container: str) -> str | None:
        state = await self.inspect(container, "{{json .State.Health}}")
        return None if state is None else str(state["Status"])

    async def wait_for_health(self, container: str, status: str, timeout: float = 90) -> None:
        """Wakes on the engine's health_status events, then reads the status (Docker's events
        name it, podman's do not)."""
        events = await asyncio.create_subprocess_exec(
            "docker", "events", "--filter", f"container={container}",
            "--filter", "event=health_status", "--format", "{{.Action}}",
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert events.stdout is not None
        seen: list[str | None] = []
        try:
            async with asyncio.timeout(timeout):
                while (current := await self.health(container)) != status:
                    seen.append(current)
                    if not await events.stdout.readline():
                        break
        except TimeoutError:
            pytest.fail(f"{container} never became {status}; health went {seen}")
        finally:
            events.kill()
            await events.wait()
        assert current == status, f"{container} never became {status}; health went {seen}"


def container_name() -> str:
    return f"servicenow-worker-test-{uuid.uuid4().hex[:10]}"


def _docker_answering(env: dict[str, str]) -> bool:
    if shutil.which("docker", path=env.get("PATH")) is None:
        return False
    info = subprocess.run(["docker", "info"], check=False, env=env, capture_output=True, timeout=60)
    return info.returncode == 0


def _find_docker() -> Docker | None:
    """The engine the environment names; else podman's socket as container-engine.sh leaves it."""
    candidates = [dict(os.environ)]
    if "DOCKER_HOST" not in os.environ and PODMAN_SOCKET.is_socket():
        podman = {"DOCKER_HOST": f"unix://{PODMAN_SOCKET}", "DOCKER_BUILDKIT": "0"}
        candidates.append({**os.environ, **podman})
    return next((Docker(env) for env in candidates if _docker_answering(env)), None)


@pytest.fixture(name="docker", scope="session")
def _docker() -> Docker:
    found = _find_docker()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: the container tests must run, but {HOW_TO_GET_AN_ENGINE}")
        pytest.skip(HOW_TO_GET_AN_ENGINE)
    return found


def build(docker: Docker, tag: str, dockerfile: Path) -> None:
    built = docker.run("build", "-t", tag, "-f", str(dockerfile), str(ROOT), timeout=1200)
    assert built.returncode == 0, f"docker build failed:\n{built.stdout[-3000:]}{built.stderr}"


@pytest.fixture(name="image", scope="session")
def _image(docker: Docker) -> str:
    """The image as `docker build` of this repository makes it."""
    tag = "servicenow-worker:container-tests"
    dockerfile = os.environ.get("SERVICENOW_WORKER_TEST_DOCKERFILE", str(ROOT / "Dockerfile"))
    build(docker, tag, Path(dockerfile))
    return tag


@pytest.fixture(name="servicenow")
async def _servicenow() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emulator:
        yield emulator


@pytest.fixture(name="gateway")
async def _gateway() -> AsyncIterator[ZeebeGatewayEmulator]:
    async with ZeebeGatewayEmulator() as emulator:
        yield emulator


class Container(WorkerProcess):
    """`docker run` of the image on the host network, its stdout read as the worker's log.

    Settings reach the container as `-e NAME` with the value in the docker command's own
    environment, so that no value (a secret) appears on a command line. No `--rm`: the exit code
    is read from the engine, and the `containers` fixture removes the container."""

    def __init__(self, docker: Docker, image: str, *options: str, **settings: str) -> None:
        self.name = container_name()
        self.docker = docker
        passed = [f"--env={name}" for name in settings]
        command = ["docker", "run", "--name", self.name, "--network=host"]
        super().__init__(*command, *passed, *options, image, **{**docker.env, **settings})

    async def exit_code(self, timeout: float = 30) -> int:
        await super().exit_code(timeout)
        return int(await self.docker.inspect(self.name, "{{.State.ExitCode}}"))

    async def stop(self, timeout: int = 40) -> int:
        """`docker stop -t timeout`; the container's exit code."""
        code, _, stderr = await self.docker.call("stop", "-t", str(timeout), self.name)
        assert code == 0, stderr
        return await self.exit_code(timeout=timeout + 30)

    async def execute(self, *command: str) -> tuple[int, str, str]:
        return await self.docker.call("exec", self.name, *command)

    async def remove(self) -> None:
        await self.docker.call("rm", "--force", self.name)
        await self.kill()


StartContainer = Callable[..., Awaitable[Container]]


@pytest.fixture(name="start_container")
async def _start_container(
    docker: Docker, image: str, gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> AsyncIterator[StartContainer]:
    """Start the image against both emulators (`docker run` options, then settings) and await
    `worker_started`; the test's containers are removed when it ends, however it ends."""
    started: list[Container] = []

    async def start(*options: str, **settings: str) -> Container:
        container = Container(
            docker,
            image,
            *options,
            ZEEBE_ADDRESS=gateway.address,
            SERVICENOW_URL_TEMPLATE=servicenow.base_url,
            HEALTH_PORT=str(free_port()),
            **{**TEST_SETTINGS, **settings},
        )
        started.append(container)
        await container.start()
        await container.wait_for_event("worker_started", timeout=60)
        return container

    yield start
    for container in started:
        await container.remove()


@pytest.fixture(name="secrets_dir")
def _secrets_dir(tmp_path: Path) -> Path:
    """Secret files as Docker and Kubernetes mount them: read-only for all, in a directory the
    container's unprivileged user may list."""
    where = tmp_path / "secrets"
    where.mkdir()
    where.chmod(0o755)
    for name, secret in {"snUser": USER, "snPwd": PASSWORD}.items():
        (where / name).write_text(secret)
        (where / name).chmod(0o444)
    return where
