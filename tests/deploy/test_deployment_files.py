"""docker-compose.yml, .env.example, the Dockerfile and deploy/kubernetes.yaml agree with each other
and with the worker: the checks a schema cannot make, and the schema check itself."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from servicenow_worker.health import DEFAULT_PORT
from servicenow_worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
KUBERNETES = ROOT / "deploy" / "kubernetes.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
CHECK_JSONSCHEMA = shutil.which("check-jsonschema") or str(
    Path(__import__("sys").executable).with_name("check-jsonschema")
)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME; $$ is a dollar.
VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class UndefinedVariable(Exception):
    pass


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, setting = line.partition("=")
            values[name.strip()] = setting.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation; an unset variable with no default is an error (compose would
    substitute an empty string and only warn)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, argument = match.group("op"), match.group("arg") or ""
        setting = env.get(name)
        empty = setting is None or (op is not None and op.startswith(":") and setting == "")
        if op in {":-", "-"}:
            return argument if empty else setting or ""
        if setting is None or (op == ":?" and setting == ""):
            raise UndefinedVariable(f"{name}: {argument or 'not set and no default'}")
        return setting

    return VARIABLE.sub(substitute, text)


def rendered_compose(env: dict[str, str] | None = None, text: str | None = None) -> dict[str, Any]:
    """The compose file as compose sees it: YAML parsed, then every string value interpolated."""
    source = COMPOSE.read_text() if text is None else text
    environment = env_example() if env is None else env

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return interpolate(node, environment)
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    document = walk(YAML(typ="safe").load(source))
    assert isinstance(document, dict)
    return document


def schema_errors(document: dict[str, Any], tmp_path: Path) -> str:
    """check-jsonschema's verdict on a compose document against the Compose spec schema."""
    path = tmp_path / "compose.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


# -- compose -------------------------------------------------------------------------------------


def test_compose_file_with_the_example_environment_is_valid(tmp_path: Path) -> None:
    assert schema_errors(rendered_compose(), tmp_path) == ""


def test_every_compose_variable_has_a_default_or_is_in_env_example() -> None:
    rendered_compose()  # raises UndefinedVariable naming the variable
    required = {
        match.group("braced")
        for match in VARIABLE.finditer(COMPOSE.read_text())
        if match.group("op") in {":?", "?"} or (match.group("braced") and not match.group("op"))
    }
    assert required <= env_example().keys()


def test_a_variable_missing_from_env_example_is_caught() -> None:
    with pytest.raises(UndefinedVariable, match="SERVICENOW_PASSWORD"):
        rendered_compose({k: v for k, v in env_example().items() if k != "SERVICENOW_PASSWORD"})
    with pytest.raises(UndefinedVariable, match="TYPO_VERSION"):
        rendered_compose(text=COMPOSE.read_text().replace("CAMUNDA_VERSION", "TYPO_VERSION"))


@pytest.mark.parametrize(
    ("mistake", "replacement"),
    [
        # ports not given as a list (which port goes where is checked by the test below: the
        # schema takes any string as a port, since it may hold a variable)
        ('    ports:\n      - "127.0.0.1:${SERVICENOW_EMULATOR_PUBLISHED_PORT:-8089}:8089"', "    ports: 8089"),
        # a misspelt key
        ("    stop_grace_period: 40s", "    stop_grace_periode: 40s"),
        # a healthcheck interval that is not a duration string
        ("      interval: 15s\n      timeout: 5s\n      retries: 3\n      start_period: 30s",
         "      interval: [15]\n      timeout: 5s\n      retries: 3\n      start_period: 30s"),
        # a depends_on condition that does not exist
        ("        condition: service_healthy\n    restart: unless-stopped\n\n  servicenow",
         "        condition: service_ready\n    restart: unless-stopped\n\n  servicenow"),
    ],
)  # fmt: skip
def test_the_schema_check_catches_compose_mistakes(
    tmp_path: Path, mistake: str, replacement: str
) -> None:
    source = COMPOSE.read_text()
    assert source.count(mistake) == 1, mistake
    broken = rendered_compose(text=source.replace(mistake, replacement))
    assert schema_errors(broken, tmp_path) != ""


def test_worker_ports_agree_everywhere() -> None:
    """The port the worker binds, publishes, probes and exposes is one and the same."""
    compose = rendered_compose()
    worker = compose["services"]["worker"]
    port = int(worker["environment"]["HEALTH_PORT"])
    assert port == DEFAULT_PORT == Settings.model_fields["health_port"].default
    published = [str(mapping) for mapping in worker["ports"]]
    assert [mapping.rsplit(":", 1)[1] for mapping in published] == [str(port)]
    assert worker["healthcheck"]["test"] == [
        "CMD", "python", "-m", "servicenow_worker.health", "ready"
    ]  # fmt: skip
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile
    assert f"HEALTH_PORT={port}" in dockerfile
    emulator = compose["services"]["servicenow-emulator"]
    assert emulator["profiles"] == ["demo"]
    emulator_port = emulator["command"][emulator["command"].index("--port") + 1]
    assert [str(m).rsplit(":", 1)[1] for m in emulator["ports"]] == [emulator_port]
    assert env_example()["SERVICENOW_URL_TEMPLATE"] == f"http://servicenow-emulator:{emulator_port}"
    orchestration = compose["services"]["orchestration"]
    assert {str(m) for m in orchestration["ports"]} == {"26500:26500", "8080:8080", "9600:9600"}
    assert worker["environment"]["ZEEBE_ADDRESS"] == "orchestration:26500"


def test_worker_settings_in_compose_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's environment, as compose renders it from .env.example, starts the worker."""
    worker = rendered_compose()["services"]["worker"]
    for name, setting in worker["environment"].items():
        monkeypatch.setenv(name, str(setting))
    monkeypatch.setenv("SECRETS_DIR", str(ROOT))  # /run/secrets does not exist here
    settings = Settings()
    assert settings.worker_shutdown_grace_period < _seconds(worker["stop_grace_period"])
    assert worker["secrets"] == ["snUser", "snPwd"]


def test_no_credential_is_written_into_the_compose_file() -> None:
    compose = rendered_compose({name: f"<{name}>" for name in env_example()})
    worker = compose["services"]["worker"]
    for name, setting in worker["environment"].items():
        if name.endswith(("_SECRET", "_PASSWORD", "_TOKEN")):
            assert setting in ("", f"<{name}>"), name
    assert compose["secrets"] == {
        "snUser": {"environment": "SERVICENOW_USER"},
        "snPwd": {"environment": "SERVICENOW_PASSWORD"},
    }


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match.group(1))


# -- Dockerfile ----------------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(
        Path(__import__("sys").executable).with_name("hadolint")
    )
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_deployment_probes_secrets_and_resources() -> None:
    documents = list(YAML(typ="safe").load_all(KUBERNETES.read_text()))
    [config] = [d for d in documents if d["kind"] == "ConfigMap"]
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    port = int(config["data"]["HEALTH_PORT"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert pod["terminationGracePeriodSeconds"] > float(
        config["data"]["WORKER_SHUTDOWN_GRACE_PERIOD"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Secrets come from a Secret, never from the ConfigMap.
    assert not any(key.endswith(("_SECRET", "_PASSWORD")) for key in config["data"])
    [secret_env] = container["env"]
    assert secret_env["valueFrom"]["secretKeyRef"]["key"] == "ZEEBE_CLIENT_SECRET"
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == config["data"]["SECRETS_DIR"]
    # The ConfigMap holds valid settings.
    data = {**config["data"], "ZEEBE_CLIENT_SECRET": "x", "SECRETS_DIR": str(ROOT)}
    Settings(**{name.lower(): setting for name, setting in data.items()})


# -- docs ----------------------------------------------------------------------------------------


def test_docker_quick_start_names_every_variable_the_user_must_set() -> None:
    docs = OPERATIONS.read_text()
    quick_start = docs.split("## Run with Docker", 1)[1].split("\n## ", 1)[0]
    required = {
        match.group("braced")
        for match in VARIABLE.finditer(COMPOSE.read_text())
        if match.group("op") in {":?", "?"}
    }
    assert required
    for name in required:
        assert f"`{name}`" in quick_start, name


def test_every_setting_is_documented() -> None:
    docs = OPERATIONS.read_text()
    for name in (
        "HEALTH_PORT", "HEALTH_HOST", "ZEEBE_TLS", "ZEEBE_CA_CERTIFICATE_PATH", "ZEEBE_TENANT_IDS",
        "ZEEBE_CLIENT_ID", "ZEEBE_CLIENT_SECRET", "ZEEBE_AUTHORIZATION_SERVER_URL",
        "ZEEBE_TOKEN_AUDIENCE", "ZEEBE_TOKEN_SCOPE", "CAMUNDA_CLUSTER_ID", "CAMUNDA_CLUSTER_REGION",
    ):  # fmt: skip
        assert f"`{name}`" in docs, name
