"""The image, built and run for real: a container on the host network takes jobs from the Zeebe
gateway emulator and calls the ServiceNow emulator, as it would beside Zeebe and an instance."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobState, ZeebeGatewayEmulator

from ..e2e.conftest import JOB_TYPE, PASSWORD, USER, job_variables
from .conftest import Docker, StartContainer

pytestmark = pytest.mark.container

CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})
# docs/contract.md §8: every line has these; each job's lines also the job's own fields.
LINE_FIELDS = {"timestamp", "level", "event"}
JOB_FIELDS = {"job_key", "process_instance_key", "element_id", "operation", "table"}


async def test_the_container_completes_a_job_and_logs_json_lines(
    start_container: StartContainer,
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
) -> None:
    """A FEEL result expression too: the image must carry the package's data (its grammar)."""
    container = await start_container()
    expression = "={incident: response, number: result.number}"
    key = gateway.create_job(JOB_TYPE, CREATE, {"resultExpression": expression})

    outcome = await gateway.wait_for_outcome(key, timeout=60)
    assert outcome.kind == "complete"
    [record] = servicenow.records("incident")
    assert outcome.variables["incident"]["result"]["sys_id"] == record["sys_id"]
    assert outcome.variables["number"] == record["number"]
    completed = await container.wait_for_event("job_completed", job_key=key)
    assert await container.stop() == 0

    assert container.not_json == []
    assert all(event.keys() >= LINE_FIELDS for event in container.events)
    assert completed.keys() >= JOB_FIELDS
    assert (completed["operation"], completed["table"]) == ("create", "incident")
    assert PASSWORD not in "".join(container.raw_stdout)


async def test_docker_stop_finishes_the_call_in_flight_and_exits_0(
    start_container: StartContainer,
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
) -> None:
    """The stop signal reaches the worker (PID 1, exec-form entrypoint): it finishes the job whose
    ServiceNow call is under way, takes no new job, and exits 0 before `docker stop` would kill."""
    servicenow.inject(Fault.delay(3, method="POST", times=1))
    container = await start_container(WORKER_SHUTDOWN_GRACE_PERIOD="20")
    in_flight = gateway.create_job(JOB_TYPE, CREATE)
    await servicenow.wait_for_requests(1)

    stopping = asyncio.create_task(container.stop(timeout=30))
    await container.wait_for_event("worker_stopping")
    late = gateway.create_jobs(JOB_TYPE, 3, CREATE)
    assert await stopping == 0

    assert [o.kind for o in gateway.outcomes_of(in_flight)] == ["complete"]
    assert len(servicenow.records("incident")) == 1
    completed = container.position("job_completed", job_key=in_flight)
    assert container.position("worker_stopping") < completed
    for key in late:
        # Not taken, or handed back at once: activatable again with its retries, none used.
        job = gateway.job(key)
        assert (job.state, job.retries) == (JobState.ACTIVATABLE, 3)
        assert all((o.kind, o.retries, o.retry_backoff_ms) == ("fail", 3, 0) for o in job.outcomes)


async def test_healthcheck_follows_the_gateway(
    start_container: StartContainer, gateway: ZeebeGatewayEmulator
) -> None:
    """The image's HEALTHCHECK passes while the worker is connected and fails while the gateway
    is away; /readyz says why."""
    container = await start_container()
    health_port = int(container.env["HEALTH_PORT"])
    healthcheck = await container.docker.inspect(container.name, "{{json .Config.Healthcheck}}")
    assert healthcheck is not None, "the image has no HEALTHCHECK"
    kind, *command = healthcheck["Test"]
    check = command if kind == "CMD" else ["sh", "-c", *command]

    await container.docker.wait_for_health(container.name, "healthy")
    assert (await container.execute(*check))[0] == 0

    await gateway.stop()
    await container.wait_for_event("gateway_unreachable")
    async with httpx.AsyncClient(trust_env=False) as http:
        ready = await http.get(f"http://127.0.0.1:{health_port}/readyz")
    assert (ready.status_code, ready.json()["status"]) == (503, "gateway unreachable")
    code, stdout, _ = await container.execute(*check)
    assert (code, "gateway unreachable" in stdout) == (1, True)

    await gateway.start()
    await container.wait_for_event("gateway_reachable")
    assert (await container.execute(*check))[0] == 0
    assert await container.stop() == 0


async def test_the_worker_is_pid_1_and_not_root(
    start_container: StartContainer, docker: Docker, image: str
) -> None:
    """PID 1 is the worker itself (so the stop signal reaches it), running as an unprivileged
    user with a numeric id (Kubernetes' runAsNonRoot checks that)."""
    container = await start_container()
    _, cmdline, _ = await container.execute("cat", "/proc/1/cmdline")
    assert cmdline.split("\0")[1].endswith("/servicenow-worker")
    _, status, _ = await container.execute("cat", "/proc/1/status")
    [uids] = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
    assert "0" not in uids
    user = await docker.inspect(image, "{{json .Config.User}}")
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    assert await container.stop() == 0


def test_a_bad_setting_stops_the_container_at_once_with_exit_2(docker: Docker, image: str) -> None:
    ran = docker.run_once("--network=host", "--env=WORKER_MAX_JOBS_IN_FLIGHT=lots", image)
    assert ran.returncode == 2
    assert ran.stdout == ""
    [line] = ran.stderr.splitlines()
    assert line.startswith("servicenow-worker: invalid setting WORKER_MAX_JOBS_IN_FLIGHT:")


async def test_secrets_mounted_as_files(
    start_container: StartContainer,
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    secrets_dir: Path,
) -> None:
    """{{secrets.NAME}} reads /run/secrets/NAME, mounted read-only as Docker and Kubernetes do."""
    container = await start_container(
        f"--volume={secrets_dir}:/run/secrets:ro", SECRETS_DIR="/run/secrets"
    )
    auth = {"type": "basic", "username": "{{secrets.snUser}}", "password": "{{secrets.snPwd}}"}
    key = gateway.create_job(JOB_TYPE, {**CREATE, "authentication": auth})

    assert (await gateway.wait_for_outcome(key, timeout=60)).kind == "complete"
    [record] = servicenow.records("incident")
    assert record["sys_created_by"] == USER
    assert await container.stop() == 0
    assert PASSWORD not in "".join(container.raw_stdout)


def test_the_image_holds_only_what_runs(docker: Docker, image: str) -> None:
    """No compiler, cache or build file in the final image, and the worker's environment holds
    no package tools (the base image keeps its own pip)."""
    probe = (
        "import importlib.util, json, os, pathlib, shutil, sys;"
        "print(json.dumps({"
        "'tools': [t for t in ('gcc', 'cc', 'make', 'git') if shutil.which(t)],"
        "'modules': [m for m in ('pip', 'setuptools', 'wheel') if importlib.util.find_spec(m)],"
        "'paths': [p for p in ('/src', '/dist', '/root/.cache', '/tmp/pip') if os.path.exists(p)],"
        "'wheels': [str(p) for p in pathlib.Path('/opt').rglob('*.whl')],"
        "'venv': sys.prefix}))"
    )
    # As root, so that nothing is hidden from the probe (/root/.cache); python is the venv's.
    ran = docker.run_once("--user=0", "--entrypoint", "python", image, "-c", probe)
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert found == {"tools": [], "modules": [], "paths": [], "wheels": [], "venv": "/opt/venv"}
