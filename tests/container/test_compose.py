"""docker-compose.yml as the compose command line reads it, with .env.example as the user's .env:
every profile valid, every service the repository builds built, and the demo profile's ServiceNow
emulator started and answering. (Camunda's image cannot be pulled here: its service is checked by
`config` only.)"""

import uuid
from collections.abc import Iterator

import httpx
import pytest
from ruamel.yaml import YAML

from servicenow_emulators.zeebe_gateway import free_port

from ..deploy.test_deployment_files import COMPOSE, ENV_EXAMPLE, env_example
from .conftest import ROOT, Docker

pytestmark = pytest.mark.container


def profiles() -> list[str]:
    services = YAML(typ="safe").load(COMPOSE.read_text())["services"]
    return sorted({p for service in services.values() for p in service.get("profiles", [])})


class Compose:
    """`docker compose` on this repository under a project name of its own, torn down after."""

    def __init__(self, docker: Docker, **variables: str) -> None:
        self.docker = Docker({**docker.env, **variables})
        self.project = f"servicenow-worker-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *arguments: str, timeout: float = 600) -> str:
        ran = self.docker.run(
            "compose", "--project-directory", str(ROOT), "--file", str(COMPOSE),
            "--env-file", str(ENV_EXAMPLE), "--project-name", self.project, *arguments,
            timeout=timeout,
        )  # fmt: skip
        assert ran.returncode == 0, f"docker compose {' '.join(arguments)}:\n{ran.stderr}"
        return ran.stdout + ran.stderr


@pytest.fixture(name="compose")
def _compose(docker: Docker) -> Iterator[Compose]:
    compose = Compose(
        docker,
        WORKER_IMAGE_TAG=f"compose-test-{uuid.uuid4().hex[:8]}",
        SERVICENOW_EMULATOR_PUBLISHED_PORT=str(free_port()),
    )
    yield compose
    compose("--profile", "*", "down", "--volumes", "--remove-orphans", "--timeout", "10")
    compose.docker.run("rmi", f"servicenow-worker:{compose.docker.env['WORKER_IMAGE_TAG']}")


def test_there_is_a_demo_profile() -> None:
    assert profiles() == ["demo"]


@pytest.mark.parametrize("profile", [None, *profiles()])
def test_compose_config_is_valid(compose: Compose, profile: str | None) -> None:
    """Every variable set or defaulted: compose would warn of one it substitutes with nothing."""
    selected = [] if profile is None else ["--profile", profile]
    output = compose(*selected, "config", "--quiet")
    assert "variable is not set" not in output


def test_compose_builds_and_the_demo_emulator_answers(compose: Compose) -> None:
    output = compose("--profile", "demo", "build")
    built = compose("--profile", "demo", "config", "--images").split()
    tag = f"servicenow-worker:{compose.docker.env['WORKER_IMAGE_TAG']}"
    assert tag in built
    assert compose.docker.run("image", "inspect", tag).returncode == 0, output

    compose("--profile", "demo", "up", "--detach", "--wait", "servicenow-emulator")
    port = compose.docker.env["SERVICENOW_EMULATOR_PUBLISHED_PORT"]
    user = env_example()["SERVICENOW_USER"], env_example()["SERVICENOW_PASSWORD"]
    response = httpx.get(
        f"http://127.0.0.1:{port}/api/now/table/incident",
        params={"sysparm_limit": "1"},
        auth=user,
        trust_env=False,
    )
    assert response.status_code == 200
    assert len(response.json()["result"]) == 1
    assert int(response.headers["X-Total-Count"]) >= 1
