"""The host allow-list (SERVICENOW_ALLOWED_HOSTS, docs/contract.md §2, §7): an instance given as a
URL goes only to an allowed host, and credentials never travel anywhere else.

Each case below is a way to make a URL look as if it pointed at ServiceNow while it does not:
look-alike domains, suffix tricks, userinfo, a path or query or fragment that holds the real
domain, look-alike Unicode characters and dots, IP addresses, a trailing dot.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker.errors import InputError
from servicenow_worker.inputs import InputRules, resolve_base_url
from servicenow_worker.settings import Settings
from tests.e2e.conftest import AUTH, JOB_TYPE, StartWorker

RULES = InputRules(
    "https://{instance}.service-now.com", ("*.service-now.com", "snow.acme.example"), 1000
)

REFUSED = [
    # Look-alike and suffix tricks.
    "https://evil-service-now.com",
    "https://acmeservice-now.com",
    "https://service-now.com.evil.com",
    "https://acme.service-now.com.evil.com",
    "https://acme.service-now.co",
    "https://acme.service-now.com.",  # a trailing dot: another name to TLS and to cookies
    "https://service-now.com",  # the bare domain is not *.service-now.com
    "https://.service-now.com",
    "https://snow.acme.example.evil.com",
    "https://evilsnow.acme.example",
    "https://x.snow.acme.example",  # an exact host allows no sub-domain
    # Userinfo: credentials in the URL, or the allowed name as a user name.
    "https://x@acme.service-now.com",
    "https://x:y@acme.service-now.com",
    "https://acme.service-now.com@evil.com",
    "https://acme.service-now.com:443@evil.com",
    "https://acme.service-now.com\\@evil.com",
    # The allowed name outside the host.
    "https://evil.com/.service-now.com",
    "https://evil.com?.service-now.com",
    "https://evil.com#.service-now.com",
    "https://evil.com\\.service-now.com",
    # Unicode: look-alike dots and letters (IDNA would map some of them to the allowed name).
    "https://acme\u3002service-now.com",  # ideographic full stop
    "https://acme\uff0eservice-now.com",  # fullwidth full stop
    "https://acme.\u0455ervice-now.com",  # Cyrillic dze for "s"
    "https://acme.service-now.com\u2024evil.com",  # one dot leader
    "https://xn--acme-9za.xn--service-now-xyz.com",
    # Not HTTPS, not a host name, a bad port, more than an origin.
    "http://acme.service-now.com",
    "ftp://acme.service-now.com",
    "//acme.service-now.com",
    "https://127.0.0.1",
    "https://[::1]",
    "https://acme.service-now.com:99999",
    "https://acme.service-now.com:-1",
    "https://acme.service-now.com:https",
    "https://acme.service-now.com/api/now/table/incident",
    "https://acme.service-now.com/?x=1",
    "acme.service-now.com",
    "https://",
    "https://:443",
    "https://acme.service-now.com#x",
    "https://\u00e1cme.service-now.com",  # non-ASCII under the allowed domain: give its punycode
]


@pytest.mark.parametrize("instance", REFUSED)
def test_refused(instance: str) -> None:
    """Refused before anything is sent, naming the instance input."""
    with pytest.raises(InputError) as caught:
        resolve_base_url(instance, RULES)
    assert caught.value.field == "instance"


@pytest.mark.parametrize(
    ("instance", "base_url"),
    [
        ("https://acme.service-now.com", "https://acme.service-now.com"),
        ("https://acme.service-now.com/", "https://acme.service-now.com"),
        ("  https://ACME.Service-Now.COM  ", "https://acme.service-now.com"),
        ("https://a.b.service-now.com", "https://a.b.service-now.com"),
        ("https://a.service-now.com", "https://a.service-now.com"),  # the shortest sub-domain
        ("https://xn--cme-2la.service-now.com", "https://xn--cme-2la.service-now.com"),
        ("https://acme.service-now.com:8443", "https://acme.service-now.com:8443"),
        ("https://snow.acme.example", "https://snow.acme.example"),
        ("https://SNOW.acme.example:443", "https://snow.acme.example:443"),
        # A name is put into the template, lower-cased; it cannot hold a dot or a slash.
        ("Dev12345", "https://dev12345.service-now.com"),
        ("acme-test", "https://acme-test.service-now.com"),
    ],
)
def test_accepted(instance: str, base_url: str) -> None:
    """The allowed forms, reduced to the origin the calls go to."""
    assert resolve_base_url(instance, RULES) == base_url


def test_nothing_allowed_refuses_every_url() -> None:
    """With an empty allow-list only instance names (the template) are accepted."""
    rules = InputRules(RULES.url_template, (), 1000)
    with pytest.raises(
        InputError, match=r"names host acme\.service-now\.com, which is not allowed"
    ):
        resolve_base_url("https://acme.service-now.com", rules)
    assert resolve_base_url("acme", rules) == "https://acme.service-now.com"


def test_operator_setting_is_split_trimmed_and_lower_cased() -> None:
    """SERVICENOW_ALLOWED_HOSTS as an operator writes it: comma-separated, any case."""
    settings = Settings(servicenow_allowed_hosts=" *.Service-Now.com, SNOW.acme.example ,")
    assert settings.servicenow_allowed_hosts == ("*.service-now.com", "snow.acme.example")


@pytest.mark.parametrize(
    "pattern", ["*", "*.", "evil.com/x", "*.*.com", "a b.com", "https://x.com"]
)
def test_operator_setting_refuses_what_is_not_a_host(pattern: str) -> None:
    """A pattern that would match more than hosts under one domain is a start-up error."""
    with pytest.raises(ValueError, match="is not a host name or a"):
        Settings(servicenow_allowed_hosts=pattern)


# -- credentials never sent to a host that is not allowed -------------------------------------


class ConnectionCounter:
    """A TCP server that counts the connections made to it (and answers none)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture(name="elsewhere")
async def _elsewhere() -> AsyncIterator[ConnectionCounter]:
    counter = ConnectionCounter()
    counter.server = await asyncio.start_server(counter._accept, "127.0.0.1", 0)
    async with counter.server:
        yield counter


OAUTH = {"type": "oauth-client-credentials", "clientId": "id", "clientSecret": "S3cret-0f-client"}


@pytest.mark.parametrize("authentication", [AUTH, OAUTH], ids=["basic", "oauth"])
@pytest.mark.parametrize(
    "instance",
    [
        "https://127.0.0.1:{port}",
        "http://127.0.0.1:{port}",
        "https://localhost:{port}",
        "https://LOCALHOST.:{port}",
        "https://acme.service-now.com@127.0.0.1:{port}",
        "https://camunda:pw@localhost:{port}",
    ],
)
async def test_no_connection_to_a_host_not_allowed(
    gateway: ZeebeGatewayEmulator,
    start_worker: StartWorker,
    elsewhere: ConnectionCounter,
    instance: str,
    authentication: dict[str, Any],
) -> None:
    """The job fails with retries 0 and not one connection (token request included) is made."""
    await start_worker(servicenow_url_template="https://{instance}.service-now.com")
    variables = {
        "authentication": authentication,
        "instance": instance.format(port=elsewhere.port),
        "operation": "read",
        "table": "incident",
    }
    key = gateway.create_job(JOB_TYPE, variables)
    outcome = await gateway.wait_for_outcome(key)
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert outcome.error_message.startswith("instance ")
    assert elsewhere.connections == 0


async def test_the_counter_sees_an_allowed_host(
    gateway: ZeebeGatewayEmulator, start_worker: StartWorker, elsewhere: ConnectionCounter
) -> None:
    """The same server, once allowed, is connected to: the count above can fail."""
    await start_worker(
        servicenow_url_template="https://{instance}.service-now.com",
        servicenow_allowed_hosts="localhost",
        servicenow_retry_attempts=1,
    )
    variables = {
        "authentication": AUTH,
        "instance": f"https://localhost:{elsewhere.port}",
        "operation": "read",
        "table": "incident",
    }
    key = gateway.create_job(JOB_TYPE, variables)
    [outcome] = await gateway.wait_for_outcomes(key, 1)
    assert outcome.kind == "fail"
    assert elsewhere.connections >= 1
