"""What an operator sees of the settings: the README's table of every variable and its default,
a value out of range refused at start naming the variable, TLS settings that present the client
certificate, and the secrets read from the environment."""

import re
import ssl
from pathlib import Path
from typing import Final

import pytest
from pydantic_core import PydanticUndefined

from servicenow_worker.app import load_settings
from servicenow_worker.settings import Settings

from ..e2e.test_authentication import encrypted_key, make_pki

ROOT: Final = Path(__file__).resolve().parents[2]
README: Final = ROOT / "README.md"
# Defaults the model leaves unset and the worker fills in where it uses them.
APPLIED_ELSEWHERE: Final = {
    "CAMUNDA_CLUSTER_REGION": "bru-2",  # zeebe_channel, for CAMUNDA_CLUSTER_ID
    "WORKER_NAME": "host name",  # socket.gethostname() at start
}


def documented_defaults(path: Path = README) -> dict[str, str]:
    """The settings tables ("| variable | default | meaning |"): variable -> its default cell."""
    defaults: dict[str, str] = {}
    for table in path.read_text(encoding="utf-8").split("| variable | default | meaning |")[1:]:
        for row in table.split("\n\n")[0].splitlines()[2:]:
            names, default, _ = row.strip("|").split(" | ", 2)
            for name in re.findall(r"`([A-Z0-9_]+)`", names):
                defaults[name] = default
    return defaults


def variable(field: str) -> str:
    """The environment variable an operator sets: the first alias, else the field's name."""
    alias = Settings.model_fields[field].validation_alias
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else field.upper()


def shown(default: object) -> str | None:
    """A model default as the README writes it (None: unset)."""
    if default is None or default == ():
        return None
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return ",".join(default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(field: str) -> None:
    """An operator reads the README to learn what a variable does when left unset."""
    name = variable(field)
    documented = documented_defaults()
    assert name in documented, f"{name} is missing from the README's settings table"
    cell = documented[name]
    if name in APPLIED_ELSEWHERE:
        assert APPLIED_ELSEWHERE[name] in cell
        return
    default = Settings.model_fields[field].default
    assert default is not PydanticUndefined
    expected = shown(default)
    if expected is None:
        assert cell.startswith(("unset", "SaaS:")), f"{name}: the README says {cell}"
    else:
        first = re.match(r"`([^`]*)`", cell)
        assert first is not None, f"{name}: the README says {cell}"
        assert first.group(1) == expected


def test_operations_guide_gives_the_readmes_defaults() -> None:
    """docs/operations.md repeats some of the README's rows: the same defaults."""
    guide = documented_defaults(ROOT / "docs" / "operations.md")
    readme = documented_defaults()
    assert guide
    assert {name: readme.get(name) for name in guide} == guide


@pytest.mark.parametrize(
    ("name", "refused", "accepted"),
    [
        # README: "(0 to 3600)".
        ("SERVICENOW_CHANGES_SETTLE", ["-1", "3601"], ["0", "3600"]),
        # docs/contract.md §7: "1 to 10 000".
        ("SERVICENOW_MAX_CONCURRENCY", ["0", "10001"], ["1", "10000"]),
        # README: "`0` picks a free port".
        ("HEALTH_PORT", ["-1", "65536"], ["0", "65535"]),
        # README: "at least twice connect + read timeout" (10 + 30 by default).
        ("WORKER_JOB_TIMEOUT", ["79.9"], ["80"]),
        # The template's page-size and maxRecords patterns stop at these ceilings.
        ("SERVICENOW_MAX_LIMIT", ["0", "10001"], ["1", "10000"]),
        ("SERVICENOW_MAX_RECORDS", ["0", "1000001"], ["1", "1000000"]),
    ],
)
def test_a_value_out_of_range_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    refused: list[str],
    accepted: list[str],
) -> None:
    for value in accepted:
        monkeypatch.setenv(name, value)
        load_settings()
    for value in refused:
        monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as exited:
            load_settings()
        assert exited.value.code == 2
        line = capsys.readouterr().err
        assert line.startswith("servicenow-worker: invalid setting"), line
        assert name in line


def tls_handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> object:
    """A TLS handshake in memory; the certificate the server received from the client."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    while not all(done.values()):
        for side, connection in (("client", client_side), ("server", server_side)):
            if not done[side]:
                try:
                    connection.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    return server_side.getpeercert()


def test_tls_settings_present_the_client_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SERVICENOW_CLIENT_CERT, an encrypted SERVICENOW_CLIENT_KEY with its password and
    SERVICENOW_CA_BUNDLE: an instance that requires a client certificate accepts the worker's."""
    pki = make_pki(tmp_path)
    encrypted = encrypted_key(pki, tmp_path / "encrypted.key", "k3y-pw")
    monkeypatch.setenv("SERVICENOW_CLIENT_CERT", str(pki.client_cert))
    monkeypatch.setenv("SERVICENOW_CLIENT_KEY", str(encrypted))
    monkeypatch.setenv("SERVICENOW_CLIENT_KEY_PASSWORD", "k3y-pw")
    monkeypatch.setenv("SERVICENOW_CA_BUNDLE", str(pki.ca_cert))
    client = load_settings().servicenow_tls_context()
    assert client is not None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_cert)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    server.verify_mode = ssl.CERT_REQUIRED
    peer = tls_handshake(client, server)
    assert isinstance(peer, dict)
    assert peer["subject"] == ((("commonName", "servicenow-worker-client"),),)


def test_secrets_are_only_the_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SECRETS_ENV_PREFIX=SNTEST_, SNTEST_snPwd is the secret snPwd; other variables and
    empty ones are not secrets (docs/contract.md §5)."""
    monkeypatch.setenv("SECRETS_ENV_PREFIX", "SNTEST_")
    monkeypatch.setenv("SNTEST_snPwd", "pw")
    monkeypatch.setenv("SNTEST_snEmpty", "")
    monkeypatch.setenv("NOT_SNTEST_X", "other")
    assert load_settings().secrets_from_environment() == {"snPwd": "pw"}
