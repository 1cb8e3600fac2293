"""The README's "Run with Docker" section, followed as written: its commands, run as they stand
(the test only sets the variables the section exports), build the image, start the worker,
which connects and takes a job, and stop it, draining the call in flight."""

import asyncio
import json
import re
from pathlib import Path

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker import __version__

from ..e2e.conftest import JOB_TYPE, PASSWORD, USER, job_variables
from ..e2e.worker_process import WorkerProcess
from .conftest import ROOT, Docker

pytestmark = pytest.mark.container

README = ROOT / "README.md"


def docker_section() -> tuple[list[str], list[str]]:
    """The names the section exports, and its other commands, continuation lines joined."""
    section = README.read_text().split("### Run with Docker\n", 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    lines = [" ".join(line.split()) for line in "".join(blocks).replace("\\\n", " ").splitlines()]
    exported = [
        n for line in lines if line.startswith("export ") for n in re.findall(r"(\w+)=", line)
    ]
    return exported, [line for line in lines if line and not line.startswith("export ")]


async def shell(command: str, env: dict[str, str], cwd: Path = ROOT) -> None:
    process = await asyncio.create_subprocess_exec("bash", "-c", command, cwd=cwd, env=env)
    async with asyncio.timeout(900):
        assert await process.wait() == 0, command


async def test_the_readme_docker_commands(
    docker: Docker, gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    exported, (build, run, stop) = docker_section()
    assert (build.split()[:1], run.split()[:2], stop.split()[:2]) == (
        ["scripts/build-image"], ["docker", "run"], ["docker", "stop"],
    )  # fmt: skip
    values = {
        "ZEEBE_ADDRESS": gateway.address,
        "SERVICENOW_URL_TEMPLATE": servicenow.base_url,
        "SECRET_snUser": USER,
        "SECRET_snPwd": PASSWORD,
    }
    assert sorted(exported) == sorted(values)
    env = {**docker.env, **values}
    name = run.split("--name ", 1)[1].split()[0]
    assert stop.split()[-1] == name

    await shell(build, env)
    # scripts/build-image labels the image with pyproject.toml's version and the commit.
    tag = build.split("-t ", 1)[1].split()[0]
    labels = docker.run("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    assert labels.returncode == 0, labels.stderr
    assert json.loads(labels.stdout)["org.opencontainers.image.version"] == __version__
    worker = await WorkerProcess("bash", "-c", run, **env).start()
    try:
        await worker.wait_for_event("worker_started", timeout=60)
        auth = {"type": "basic", "username": "{{secrets.snUser}}", "password": "{{secrets.snPwd}}"}
        servicenow.inject(Fault.delay(2, method="POST", times=1))
        create = job_variables(
            operation="create", table="incident", payload={"x": "y"}, authentication=auth
        )
        key = gateway.create_job(JOB_TYPE, create)
        await servicenow.wait_for_requests(1)
        await shell(stop, env)
        await worker.exit_code(timeout=60)
    finally:
        await docker.call("rm", "--force", name)
        await worker.kill()

    assert [o.kind for o in gateway.outcomes_of(key)] == ["complete"]
    assert worker.position("worker_stopping") < worker.position("job_completed", job_key=key)
    await worker.wait_for_event("worker_stopped", jobs_left=0)
