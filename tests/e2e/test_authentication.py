"""Authentication end to end (issue #7): every type, the token cache, failures, mTLS, redaction.

The real worker against both emulators. OAuth token lifetimes run on a clock shared by the
emulator and the worker's token cache, so a test moves time instead of waiting for it.
"""

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator, TokenRequest
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator
from servicenow_worker.app import open_worker
from servicenow_worker.auth import TokenCache
from servicenow_worker.zeebe import JobPump

from .conftest import JOB_TYPE, PASSWORD, USER, worker_settings
from .worker_process import WorkerProcess

CLIENT_ID, CLIENT_SECRET = "camunda-client", "Cl1ent-S3cret ö"
API_KEY = "sn-apikey-0123456789abcdef"
READ = {"operation": "read", "table": "incident", "limit": 1}
CREATE = {"operation": "create", "table": "incident", "payload": {"short_description": "x"}}
PASSWORD_GRANT = {
    "type": "oauth-password",
    "clientId": CLIENT_ID,
    "clientSecret": CLIENT_SECRET,
    "username": USER,
    "password": PASSWORD,
}
CLIENT_CREDENTIALS = {
    "type": "oauth-client-credentials",
    "clientId": CLIENT_ID,
    "clientSecret": CLIENT_SECRET,
}


class Clock:
    """Monotonic time that only the test moves."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


Launch = Callable[..., Awaitable[JobPump]]
Run = Callable[..., Awaitable[JobOutcome]]


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="instance")
def _instance(servicenow: ServiceNowEmulator, clock: Clock) -> ServiceNowEmulator:
    """The conftest emulator with an OAuth client, an API key and the test's clock."""
    servicenow.oauth.clock = clock
    servicenow.oauth.add_client(CLIENT_ID, CLIENT_SECRET, application_user=USER)
    servicenow.oauth.add_api_key(API_KEY, USER)
    return servicenow


@pytest.fixture(name="launch")
async def _launch(
    gateway: ZeebeGatewayEmulator, instance: ServiceNowEmulator, clock: Clock
) -> AsyncIterator[Launch]:
    """Start the real job loop with a token cache on the test's clock; stopped at the end."""
    async with AsyncExitStack() as stack:
        runs: list[tuple[JobPump, asyncio.Task[None]]] = []

        async def launch(servicenow: ServiceNowEmulator | None = None, **overrides: Any) -> JobPump:
            settings = worker_settings(gateway, servicenow or instance, **overrides)
            tokens = TokenCache(clock=clock)
            pump = await stack.enter_async_context(open_worker(settings, tokens=tokens))
            runs.append((pump, asyncio.create_task(pump.run())))
            return pump

        yield launch
        for pump, run in runs:
            pump.request_stop(at_once=True)
            await run


@pytest.fixture(name="run")
async def _run(gateway: ZeebeGatewayEmulator, launch: Launch) -> Run:
    """Create one job (a worker started on first use) and return its first outcome."""
    started: list[JobPump] = []

    async def run(
        authentication: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> JobOutcome:
        if not started:
            started.append(await launch())
        variables = {"authentication": authentication, **(inputs or READ)}
        key = gateway.create_job(JOB_TYPE, variables, headers or {})
        [first] = await gateway.wait_for_outcomes(key, 1)
        return first

    return run


def table_requests(servicenow: ServiceNowEmulator) -> list[Any]:
    return [r for r in servicenow.requests if r.table is not None]


class TestEachType:
    async def test_basic(self, run: Run, instance: ServiceNowEmulator) -> None:
        outcome = await run({"type": "basic", "username": USER, "password": PASSWORD})
        assert outcome.kind == "complete"
        [call] = table_requests(instance)
        assert (call.user, call.headers["authorization"][:6]) == (USER, "Basic ")

    async def test_api_key(self, run: Run, instance: ServiceNowEmulator) -> None:
        outcome = await run({"type": "api-key", "apiKey": API_KEY})
        assert outcome.kind == "complete"
        [call] = table_requests(instance)
        assert (call.user, call.headers["x-sn-apikey"]) == (USER, API_KEY)
        assert "authorization" not in call.headers

    async def test_bearer(self, run: Run, instance: ServiceNowEmulator) -> None:
        """A token obtained elsewhere (here: straight from the emulator) is sent as it is."""
        token = instance.oauth.issue(USER)
        outcome = await run({"type": "bearer", "token": token})
        assert outcome.kind == "complete"
        [call] = table_requests(instance)
        assert (call.user, call.headers["authorization"]) == (USER, f"Bearer {token}")
        assert instance.oauth.token_requests == []

    async def test_oauth_password(self, run: Run, instance: ServiceNowEmulator) -> None:
        outcome = await run(PASSWORD_GRANT, CREATE, {"resultVariable": "incident"})
        assert outcome.kind == "complete"
        assert outcome.variables["incident"]["result"]["sys_created_by"] == USER
        assert instance.oauth.token_requests == [TokenRequest("password", CLIENT_ID, USER, 200)]
        [call] = table_requests(instance)
        assert call.headers["authorization"].startswith("Bearer ")

    async def test_oauth_client_credentials(self, run: Run, instance: ServiceNowEmulator) -> None:
        outcome = await run({**CLIENT_CREDENTIALS, "scope": "useraccount"})
        assert outcome.kind == "complete"
        assert instance.oauth.token_requests == [
            TokenRequest("client_credentials", CLIENT_ID, None, 200)
        ]
        assert table_requests(instance)[0].user == USER

    async def test_secrets_in_every_field(
        self,
        launch: Launch,
        gateway: ZeebeGatewayEmulator,
        instance: ServiceNowEmulator,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Every authentication field takes {{secrets.NAME}}."""
        for name, value in {
            "cid": CLIENT_ID,
            "csec": CLIENT_SECRET,
            "user": USER,
            "pw": PASSWORD,
        }.items():
            monkeypatch.setenv(f"SECRET_{name}", value)
        await launch()
        auth = {
            "type": "oauth-password",
            "clientId": "{{secrets.cid}}",
            "clientSecret": "{{secrets.csec}}",
            "username": "{{secrets.user}}",
            "password": "{{secrets.pw}}",
        }
        key = gateway.create_job(JOB_TYPE, {"authentication": auth, **READ})
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
        assert instance.oauth.count("password") == 1


class TestTokenCache:
    async def test_200_concurrent_jobs_one_token_request(
        self, launch: Launch, gateway: ZeebeGatewayEmulator, instance: ServiceNowEmulator
    ) -> None:
        """200 jobs in flight with the same client, while the token request is held: exactly one
        token request, and all 200 calls carry its token."""
        instance.oauth.hold = asyncio.Event()
        await launch(worker_max_jobs_in_flight=200)
        keys = gateway.create_jobs(JOB_TYPE, 200, {"authentication": CLIENT_CREDENTIALS, **READ})
        await instance.wait_for_request(lambda r: r.path == "/oauth_token.do")
        await gateway.wait_until(
            lambda: all(gateway.job(key).activated_at for key in keys),
            what="all 200 jobs activated",
        )
        instance.oauth.hold.set()
        outcomes = await gateway.wait_for_all(keys, timeout=60)
        assert {o.kind for o in outcomes.values()} == {"complete"}
        assert instance.oauth.count() == 1
        calls = table_requests(instance)
        assert len(calls) == 200
        assert len({c.headers["authorization"] for c in calls}) == 1

    async def test_token_expires_between_calls_and_is_refreshed(
        self, run: Run, clock: Clock, instance: ServiceNowEmulator
    ) -> None:
        """Past its lifetime the worker renews the token with the refresh token before the call:
        no 401, no failed job."""
        assert (await run(PASSWORD_GRANT)).kind == "complete"
        clock.now += 1801  # expired for ServiceNow too: using it would get a 401
        assert (await run(PASSWORD_GRANT)).kind == "complete"
        assert [r.grant_type for r in instance.oauth.token_requests] == [
            "password",
            "refresh_token",
        ]
        assert [c.status for c in table_requests(instance)] == [200, 200]
        first, second = table_requests(instance)
        assert first.headers["authorization"] != second.headers["authorization"]

    async def test_renewed_shortly_before_expiry(
        self, run: Run, clock: Clock, instance: ServiceNowEmulator
    ) -> None:
        """A token is not sent in its last minute (it could expire on the way): with 61 s left it
        is used, with 55 s left it is renewed first."""
        assert (await run(PASSWORD_GRANT)).kind == "complete"
        clock.now += 1800 - 61
        assert (await run(PASSWORD_GRANT)).kind == "complete"
        assert instance.oauth.count() == 1
        clock.now += 6
        assert (await run(PASSWORD_GRANT)).kind == "complete"
        assert [r.grant_type for r in instance.oauth.token_requests] == [
            "password",
            "refresh_token",
        ]

    async def test_client_credentials_requested_again_on_expiry(
        self, run: Run, clock: Clock, instance: ServiceNowEmulator
    ) -> None:
        """No refresh token was issued, so the grant itself is asked again."""
        assert (await run(CLIENT_CREDENTIALS)).kind == "complete"
        clock.now += 1801
        assert (await run(CLIENT_CREDENTIALS)).kind == "complete"
        assert instance.oauth.count("client_credentials") == 2

    async def test_revoked_token_refreshed_once_and_the_call_succeeds(
        self, run: Run, instance: ServiceNowEmulator
    ) -> None:
        """ServiceNow revokes the token: the 401 drops it, one refresh, the call is sent again."""
        assert (await run(PASSWORD_GRANT, CREATE)).kind == "complete"
        instance.oauth.revoke()
        assert (await run(PASSWORD_GRANT, CREATE)).kind == "complete"
        assert [c.status for c in table_requests(instance)] == [201, 401, 201]
        assert [r.grant_type for r in instance.oauth.token_requests] == [
            "password",
            "refresh_token",
        ]
        assert len(instance.records("incident")) == 2

    async def test_revoked_refresh_token_falls_back_to_the_grant(
        self, run: Run, instance: ServiceNowEmulator
    ) -> None:
        assert (await run(PASSWORD_GRANT)).kind == "complete"
        instance.oauth.revoke(refresh=True)
        assert (await run(PASSWORD_GRANT)).kind == "complete"
        assert [(r.grant_type, r.status) for r in instance.oauth.token_requests] == [
            ("password", 200),
            ("refresh_token", 401),
            ("password", 200),
        ]


class TestFailures:
    @pytest.mark.parametrize(
        ("authentication", "message"),
        [
            (
                {**CLIENT_CREDENTIALS, "clientSecret": "wrong"},
                "ServiceNow refused an OAuth token for the client_credentials grant (clientId "
                "camunda-client): 401 server_error: access_denied; if clientId and clientSecret "
                "are right, the instance may not allow the client credentials grant: set the "
                "system property glide.oauth.inbound.client.credential.grant_type.enabled to true",
            ),
            (
                {**PASSWORD_GRANT, "password": "wrong"},
                "ServiceNow refused an OAuth token for the password grant (clientId camunda-client, "
                "username camunda): 401 server_error: access_denied; check clientId, clientSecret, "
                "username and password",
            ),
        ],
        ids=["client-credentials", "password"],
    )
    async def test_token_refused_fails_with_no_retries(
        self, run: Run, instance: ServiceNowEmulator, authentication: dict[str, Any], message: str
    ) -> None:
        outcome = await run(authentication)
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert outcome.error_message.startswith(message)
        assert table_requests(instance) == []
        assert instance.oauth.count() == 1

    async def test_client_credentials_disabled_on_the_instance(
        self, run: Run, instance: ServiceNowEmulator
    ) -> None:
        instance.oauth.client_credentials_enabled = False
        outcome = await run(CLIENT_CREDENTIALS)
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "glide.oauth.inbound.client.credential.grant_type.enabled" in outcome.error_message

    async def test_error_expression_sees_auth_failed(
        self, run: Run, instance: ServiceNowEmulator
    ) -> None:
        """errorExpression gets code AUTH_FAILED and the token endpoint's error in variables."""
        expression = (
            '=if error.code = "AUTH_FAILED" then bpmnError("SN_AUTH", error.message, '
            "{why: error.variables.body.error_description}) else null"
        )
        outcome = await run(
            {**CLIENT_CREDENTIALS, "clientSecret": "wrong"}, headers={"errorExpression": expression}
        )
        assert (outcome.kind, outcome.error_code) == ("error", "SN_AUTH")
        assert outcome.variables == {"why": "access_denied"}

    async def test_token_endpoint_503_is_retried(
        self, run: Run, instance: ServiceNowEmulator
    ) -> None:
        """A token endpoint that is down for a moment: tried again in-process, the job completes
        (a create too: it was never sent)."""
        instance.inject(Fault.service_unavailable(path="/oauth_token.do"))
        assert (await run(CLIENT_CREDENTIALS, CREATE)).kind == "complete"
        assert [r.status for r in instance.oauth.token_requests] == [200]  # the 503 came first
        assert [r.status for r in instance.requests] == [503, 200, 201]

    async def test_token_endpoint_down_fails_retryable(
        self, run: Run, instance: ServiceNowEmulator
    ) -> None:
        instance.inject(Fault.service_unavailable(path="/oauth_token.do", times=None))
        outcome = await run(CLIENT_CREDENTIALS, CREATE, {"retryBackoff": "PT5S"})
        assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 2, 5000)
        assert outcome.error_message.startswith(
            "ServiceNow's token endpoint answered 503 to the client_credentials grant"
        )
        assert outcome.error_message.endswith("(will be retried in 5 s)")
        assert table_requests(instance) == []

    async def test_token_endpoint_timeout_is_retryable(
        self, launch: Launch, gateway: ZeebeGatewayEmulator, instance: ServiceNowEmulator
    ) -> None:
        await launch(servicenow_read_timeout=0.2, servicenow_retry_attempts=1)
        instance.inject(Fault.delay(30, path="/oauth_token.do"))
        key = gateway.create_job(JOB_TYPE, {"authentication": CLIENT_CREDENTIALS, **READ})
        [outcome] = await gateway.wait_for_outcomes(key, 1)
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert "token endpoint did not answer the client_credentials grant in time" in (
            outcome.error_message
        )

    @pytest.mark.parametrize(
        "authentication",
        [{"type": "api-key", "apiKey": "unknown"}, {"type": "bearer", "token": "made-up"}],
        ids=["api-key", "bearer"],
    )
    async def test_refused_key_or_token_is_a_401(
        self, run: Run, authentication: dict[str, Any]
    ) -> None:
        outcome = await run(authentication)
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert outcome.error_message.startswith("ServiceNow answered 401 to read on incident")


# -- mutual TLS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A test CA and the server and client certificates it signed (PEM files)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """Generate the certificates with the openssl CLI (P-256 keys, valid two days)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *new_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, extension in extensions.items():
        (directory / f"{name}.ext").write_text(extension)
        openssl("req", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=servicenow-worker-{name}")  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        )  # fmt: skip
    return Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


def encrypted_key(pki: Pki, path: Path, password: str) -> Path:
    """The client key of `pki`, encrypted with `password` (AES-256) into `path`."""
    subprocess.run(
        ["openssl", "pkey", "-in", pki.client_key, "-aes256", "-passout", f"pass:{password}",
         "-out", path],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return path


@pytest.fixture(name="pki", scope="module")
def _pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(name="tls_instance")
async def _tls_instance(pki: Pki) -> AsyncIterator[ServiceNowEmulator]:
    """An HTTPS instance that requires a client certificate signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_cert)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    emulator = ServiceNowEmulator(users={USER: PASSWORD}, ssl_context=context)
    emulator.oauth.add_client(CLIENT_ID, CLIENT_SECRET, application_user=USER)
    async with emulator:
        yield emulator


class TestMutualTls:
    async def test_client_certificate_on_every_call(
        self,
        launch: Launch,
        gateway: ZeebeGatewayEmulator,
        tls_instance: ServiceNowEmulator,
        pki: Pki,
    ) -> None:
        """With the certificate, the CA bundle and OAuth, the token request and the call both go
        over mutual TLS."""
        assert tls_instance.base_url.startswith("https://")
        await launch(
            tls_instance,
            servicenow_client_cert=pki.client_cert,
            servicenow_client_key=pki.client_key,
            servicenow_ca_bundle=pki.ca_cert,
        )
        key = gateway.create_job(JOB_TYPE, {"authentication": CLIENT_CREDENTIALS, **CREATE})
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
        assert [r.path for r in tls_instance.requests] == [
            "/oauth_token.do",
            "/api/now/table/incident",
        ]

    async def test_without_the_certificate_nothing_gets_through(
        self,
        launch: Launch,
        gateway: ZeebeGatewayEmulator,
        tls_instance: ServiceNowEmulator,
        pki: Pki,
    ) -> None:
        await launch(tls_instance, servicenow_ca_bundle=pki.ca_cert, servicenow_retry_attempts=1)
        auth = {"type": "basic", "username": USER, "password": PASSWORD}
        key = gateway.create_job(JOB_TYPE, {"authentication": auth, **READ})
        [outcome] = await gateway.wait_for_outcomes(key, 1)
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert tls_instance.requests == []


# -- redaction --------------------------------------------------------------------------------

REDACTION_SECRETS = {
    "cid": "client-id-7c1d",
    "csec": "Cl13nt-S3cr3t-9f2e",
    "user": "camunda",
    "pw": 'Us3r-P4ss"w0rd-41aa',
    "key": "ApiK3y-5d0b-77e1",
    "tok": "B34rer-T0ken-0c9a",
}
NOT_SECRET = {"cid", "user"}


async def test_no_secret_in_logs_messages_or_variables(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> None:
    """For every type, succeeding and failing: the worker's output (DEBUG), the failure messages
    and the completed variables hold no secret value and no token ServiceNow issued."""
    s = REDACTION_SECRETS
    servicenow.add_user(s["user"], s["pw"])
    servicenow.oauth.add_client(s["cid"], s["csec"], application_user=s["user"])
    servicenow.oauth.add_api_key(s["key"], s["user"])
    servicenow.oauth.issue(s["user"], value=s["tok"])
    placeholders = {
        "basic": {"username": "{{secrets.user}}", "password": "{{secrets.pw}}"},
        "oauth-password": {
            "clientId": "{{secrets.cid}}",
            "clientSecret": "{{secrets.csec}}",
            "username": "{{secrets.user}}",
            "password": "{{secrets.pw}}",
        },
        "oauth-client-credentials": {
            "clientId": "{{secrets.cid}}",
            "clientSecret": "{{secrets.csec}}",
        },
        "api-key": {"apiKey": "{{secrets.key}}"},
        "bearer": {"token": "{{secrets.tok}}"},
    }
    wrong = {
        "basic": {"password": "{{secrets.csec}}"},
        "oauth-password": {"password": "{{secrets.csec}}"},
        "oauth-client-credentials": {"clientSecret": "{{secrets.pw}}"},
        "api-key": {"apiKey": "{{secrets.csec}}"},
        "bearer": {"token": "{{secrets.csec}}"},
    }
    worker = WorkerProcess(
        ZEEBE_ADDRESS=gateway.address,
        SERVICENOW_URL_TEMPLATE=servicenow.base_url,
        WORKER_POLL_TIMEOUT="0.5",
        SERVICENOW_CONNECT_TIMEOUT="2",
        SERVICENOW_READ_TIMEOUT="5",
        WORKER_JOB_TIMEOUT="30",
        LOG_LEVEL="DEBUG",
        **{f"SECRET_{name}": value for name, value in s.items()},
    )
    await worker.start()
    try:
        outcomes: list[JobOutcome] = []
        for kind, fields in placeholders.items():
            for variant in (fields, {**fields, **wrong[kind]}):
                auth = {"type": kind, **variant}
                key = gateway.create_job(
                    JOB_TYPE,
                    {"authentication": auth, **CREATE},
                    {"resultVariable": "incident"},
                )
                outcomes.append(await gateway.wait_for_outcome(key, timeout=30))
        worker.send()
        assert await worker.exit_code() == 0
        stderr = await worker.stderr()
    finally:
        await worker.kill()

    assert [o.kind for o in outcomes] == ["complete", "fail"] * 5
    issued = [t.value for t in servicenow.oauth.tokens.values() if t.value != s["tok"]]
    assert issued  # the OAuth types did get tokens
    seen = "".join(worker.raw_stdout) + stderr
    seen += "".join(o.error_message + repr(o.variables) for o in outcomes)
    for name, value in s.items():
        if name not in NOT_SECRET:
            assert value not in seen, name
    for token in issued:
        assert token not in seen
    assert "oauth_token_issued" in seen  # the DEBUG log was really captured
