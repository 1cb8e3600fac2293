"""Each way of reaching a Zeebe gateway, end to end: the real worker against the gateway emulator."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from servicenow_emulators.camunda_documents import CamundaDocumentsEmulator
from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker.app import open_worker
from servicenow_worker.settings import Settings
from servicenow_worker.zeebe import JobPump
from servicenow_worker.zeebe_channel import (
    SAAS_AUDIENCE,
    SAAS_TOKEN_URL,
    resolve_connection,
)

from ..e2e.conftest import JOB_TYPE, PASSWORD, USER, job_variables
from .conftest import Certificates, TokenEndpoint

CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})
Run = Callable[..., Awaitable[JobPump]]


@pytest.fixture(name="servicenow")
async def _servicenow() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emulator:
        yield emulator


@pytest.fixture(name="run_worker")
async def _run_worker(servicenow: ServiceNowEmulator) -> AsyncIterator[Run]:
    """Start the worker in-process with these settings; stopped (and drained) at the test's end."""
    async with AsyncExitStack() as stack:
        runs: list[tuple[JobPump, asyncio.Task[None]]] = []

        async def run(**settings: Any) -> JobPump:
            values: dict[str, Any] = {
                "servicenow_url_template": servicenow.base_url,
                "worker_poll_timeout": 0.5,
                "worker_job_timeout": 30,
                "servicenow_connect_timeout": 2,
                "servicenow_read_timeout": 5,
                **settings,
            }
            pump = await stack.enter_async_context(open_worker(Settings(**values)))
            runs.append((pump, asyncio.create_task(pump.run())))
            return pump

        yield run
        for pump, task in runs:
            pump.request_stop(at_once=True)
            await task


async def complete_one(gateway: ZeebeGatewayEmulator, **create: Any) -> None:
    key = gateway.create_job(JOB_TYPE, CREATE, {"resultVariable": "incident"}, **create)
    outcome = await gateway.wait_for_outcome(key, timeout=20)
    assert outcome.kind == "complete", outcome


async def test_plaintext(run_worker: Run) -> None:
    async with ZeebeGatewayEmulator() as gateway:
        settings = Settings(zeebe_address=gateway.address)
        assert resolve_connection(settings).mode == "plaintext"
        await run_worker(zeebe_address=gateway.address)
        await complete_one(gateway)


async def test_tls_with_a_custom_ca(run_worker: Run, certificates: Certificates) -> None:
    """ZEEBE_CA_CERTIFICATE_PATH turns TLS on and trusts that CA (the system's CAs would refuse)."""
    async with ZeebeGatewayEmulator(
        server_certificate_chain=certificates.chain, private_key=certificates.key
    ) as gateway:
        settings = {"zeebe_address": gateway.address, "zeebe_ca_certificate_path": certificates.ca}
        assert resolve_connection(Settings(**settings)).mode == "tls"
        await run_worker(**settings)
        await complete_one(gateway)


async def test_tls_refuses_a_gateway_the_ca_did_not_sign(
    run_worker: Run, certificates: Certificates
) -> None:
    """With the system's CAs only, the handshake fails: no call reaches the gateway."""
    async with ZeebeGatewayEmulator(
        server_certificate_chain=certificates.chain, private_key=certificates.key
    ) as gateway:
        pump = await run_worker(zeebe_address=f"https://{gateway.address}")
        failed = await gateway_error_event(pump)
        await asyncio.wait_for(failed.wait(), timeout=20)
        assert pump.gateway_failures >= 1
        assert gateway.rpc_counts["ActivateJobs"] == 0


async def gateway_error_event(pump: JobPump) -> asyncio.Event:
    """Set when the loop counts a failed gateway call (through its metric hook)."""
    failed = asyncio.Event()
    count = pump.metrics.gateway_error

    def counted(error: str) -> None:
        count(error)
        failed.set()

    pump.metrics.gateway_error = counted  # type: ignore[method-assign]
    if pump.gateway_failures:
        failed.set()
    return failed


async def test_oauth_client_credentials_over_plaintext(
    run_worker: Run, token_endpoint: TokenEndpoint
) -> None:
    """The pitfall of the reference notes: gRPC sends call credentials over TLS only. Our
    interceptor puts the token on every call kind, plaintext included (ActivateJobs is
    unary-stream, CompleteJob unary-unary)."""
    async with ZeebeGatewayEmulator(require_bearer_token=token_endpoint.token) as gateway:
        await run_worker(
            zeebe_address=gateway.address,
            zeebe_client_id=token_endpoint.client_id,
            zeebe_client_secret=token_endpoint.client_secret,
            zeebe_authorization_server_url=token_endpoint.url,
            zeebe_token_audience="zeebe-api",
            zeebe_token_scope="camunda",
        )
        await complete_one(gateway)
        assert gateway.unauthenticated_calls == 0
    assert token_endpoint.requests == [
        {
            "grant_type": "client_credentials",
            "client_id": token_endpoint.client_id,
            "client_secret": token_endpoint.client_secret,
            "audience": "zeebe-api",
            "scope": "camunda",
        }
    ]


async def test_oauth_token_rejected_by_the_gateway_is_fetched_again(
    run_worker: Run, token_endpoint: TokenEndpoint
) -> None:
    """A token the gateway stops accepting (keys rotated, token revoked) is dropped at once."""
    async with ZeebeGatewayEmulator(require_bearer_token=token_endpoint.token) as gateway:
        await run_worker(
            zeebe_address=gateway.address,
            zeebe_client_id=token_endpoint.client_id,
            zeebe_client_secret=token_endpoint.client_secret,
            zeebe_authorization_server_url=token_endpoint.url,
        )
        await complete_one(gateway)
        token_endpoint.token = gateway.require_bearer_token = "token-2"
        await complete_one(gateway)
        assert gateway.unauthenticated_calls >= 1
    assert len(token_endpoint.requests) == 2


async def test_oauth_over_tls(
    run_worker: Run, token_endpoint: TokenEndpoint, certificates: Certificates
) -> None:
    async with ZeebeGatewayEmulator(
        server_certificate_chain=certificates.chain,
        private_key=certificates.key,
        require_bearer_token=token_endpoint.token,
    ) as gateway:
        settings = {
            "zeebe_address": gateway.address,
            "zeebe_ca_certificate_path": certificates.ca,
            "zeebe_client_id": token_endpoint.client_id,
            "zeebe_client_secret": token_endpoint.client_secret,
            "zeebe_authorization_server_url": token_endpoint.url,
        }
        assert resolve_connection(Settings(**settings)).mode == "tls+oauth"
        await run_worker(**settings)
        await complete_one(gateway)
        assert token_endpoint.requests


def test_saas_settings_build_camunda_clouds_address_and_token_request() -> None:
    settings = Settings(
        camunda_cluster_id="c0ffee",
        camunda_cluster_region="jfk-1",
        zeebe_client_id="id",
        zeebe_client_secret="secret",
    )
    connection = resolve_connection(settings)
    assert connection.address == "c0ffee.jfk-1.zeebe.camunda.io:443"
    assert connection.tls
    assert connection.mode == "saas"
    assert connection.oauth is not None
    assert (
        connection.oauth.token_url == SAAS_TOKEN_URL == "https://login.cloud.camunda.io/oauth/token"
    )
    assert connection.oauth.audience == SAAS_AUDIENCE == "zeebe.camunda.io"
    assert "secret" not in repr(connection)
    default_region = Settings(
        camunda_cluster_id="c0ffee", zeebe_client_id="id", zeebe_client_secret="secret"
    )
    assert resolve_connection(default_region).address == "c0ffee.bru-2.zeebe.camunda.io:443"


async def test_saas_end_to_end(
    run_worker: Run, token_endpoint: TokenEndpoint, certificates: Certificates
) -> None:
    """SaaS settings against the emulator: ZEEBE_ADDRESS (which Camunda's credentials file also
    holds) and the token URL point at the test's servers; TLS and the audience come from SaaS mode."""
    async with ZeebeGatewayEmulator(
        server_certificate_chain=certificates.chain,
        private_key=certificates.key,
        require_bearer_token=token_endpoint.token,
    ) as gateway:
        await run_worker(
            camunda_cluster_id="c0ffee",
            camunda_cluster_region="bru-2",
            zeebe_address=gateway.address,
            zeebe_ca_certificate_path=certificates.ca,
            zeebe_client_id=token_endpoint.client_id,
            zeebe_client_secret=token_endpoint.client_secret,
            zeebe_authorization_server_url=token_endpoint.url,
        )
        await complete_one(gateway)
    [request] = token_endpoint.requests
    assert request["audience"] == "zeebe.camunda.io"
    assert request["grant_type"] == "client_credentials"


async def test_tenant_ids_are_sent_and_only_those_tenants_jobs_are_taken(run_worker: Run) -> None:
    async with ZeebeGatewayEmulator() as gateway:
        other = gateway.create_job(JOB_TYPE, CREATE, {}, tenant_id="other")
        await run_worker(zeebe_address=gateway.address, zeebe_tenant_ids=("acme", "globex"))
        await complete_one(gateway, tenant_id="acme")
        await complete_one(gateway, tenant_id="globex")
        assert {request.tenant_ids for request in gateway.activate_requests} == {("acme", "globex")}
        assert gateway.outcomes_of(other) == ()


def test_tenant_ids_setting_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEEBE_TENANT_IDS", " acme, globex ,")
    assert Settings().zeebe_tenant_ids == ("acme", "globex")


async def test_a_streaming_gateway_is_still_polled(run_worker: Run) -> None:
    """Streaming is not used (docs/operations.md says why): jobs arrive by long polling, and a
    gateway that offers StreamActivatedJobs changes nothing."""
    async with ZeebeGatewayEmulator(streaming=True) as gateway:
        await run_worker(zeebe_address=gateway.address)
        key = gateway.create_job(JOB_TYPE, CREATE, {})
        await gateway.wait_for_outcome(key, timeout=20)
        assert gateway.job(key).activated_via == ("poll",)
        assert gateway.stream_requests == ()


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"ZEEBE_CLIENT_ID": "id"}, "ZEEBE_CLIENT_SECRET"),
        (
            {"ZEEBE_CLIENT_ID": "id", "ZEEBE_CLIENT_SECRET": "s"},
            "ZEEBE_AUTHORIZATION_SERVER_URL",
        ),
        ({"CAMUNDA_CLUSTER_ID": "c0ffee"}, "ZEEBE_CLIENT_ID"),
        ({"ZEEBE_ADDRESS": "ftp://gateway:26500"}, "host:port"),
        ({"ZEEBE_CA_CERTIFICATE_PATH": "/nonexistent/ca.pem"}, "not a file"),
    ],
)
def test_incomplete_connection_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, setting in environment.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(ValueError, match=message):
        Settings()


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker compose passes `ZEEBE_CLIENT_ID: ${ZEEBE_CLIENT_ID:-}` as an empty string."""
    for name in (
        "ZEEBE_CLIENT_ID",
        "ZEEBE_CLIENT_SECRET",
        "ZEEBE_TENANT_IDS",
        "CAMUNDA_CLUSTER_ID",
    ):
        monkeypatch.setenv(name, "")
    assert resolve_connection(Settings()).mode == "plaintext"


@pytest.mark.parametrize(
    ("settings", "mode", "address"),
    [
        ({"zeebe_address": "https://zeebe.example.com:443"}, "tls", "zeebe.example.com:443"),
        ({"zeebe_address": "http://zeebe:26500"}, "plaintext", "zeebe:26500"),
        ({"zeebe_address": "zeebe:26500", "zeebe_tls": True}, "tls", "zeebe:26500"),
        ({"zeebe_address": "https://zeebe:26500", "zeebe_tls": False}, "plaintext", "zeebe:26500"),
    ],
)
def test_transport_security_from_the_address_and_zeebe_tls(
    settings: dict[str, Any], mode: str, address: str
) -> None:
    connection = resolve_connection(Settings(**settings))
    assert (connection.mode, connection.address) == (mode, address)


async def test_document_store_shares_the_zeebe_token(
    run_worker: Run, token_endpoint: TokenEndpoint, servicenow: ServiceNowEmulator
) -> None:
    """Camunda's REST API (the document store) gets the Zeebe OAuth client's token: one token,
    fetched once, for the gateway and the store (docs/contract.md §11). A token the store
    refuses is dropped and the job retried with a new one."""
    sys_id = servicenow.insert("incident", {"short_description": "x"})["sys_id"]
    async with (
        ZeebeGatewayEmulator(require_bearer_token=token_endpoint.token) as gateway,
        CamundaDocumentsEmulator(bearer_tokens={token_endpoint.token}) as documents,
    ):
        await run_worker(
            zeebe_address=gateway.address,
            zeebe_client_id=token_endpoint.client_id,
            zeebe_client_secret=token_endpoint.client_secret,
            zeebe_authorization_server_url=token_endpoint.url,
            camunda_rest_address=documents.rest_address,
        )
        reference = documents.add(b"%PDF-1.7", file_name="a.pdf")
        variables = job_variables(operation="attach", table="incident", sysId=sys_id)
        key = gateway.create_job(JOB_TYPE, {**variables, "document": reference}, {})
        outcome = await gateway.wait_for_outcome(key, timeout=20)
        assert outcome.kind == "complete", outcome.error_message
        assert [r.headers.get("authorization") for r in documents.requests] == [
            f"Bearer {token_endpoint.token}"
        ]
        assert len(token_endpoint.requests) == 1

        documents.bearer_tokens = {"token-2"}  # the store stops taking the token
        key = gateway.create_job(JOB_TYPE, {**variables, "document": reference}, {}, retries=3)
        [refused] = await gateway.wait_for_outcomes(key, 1)
        assert (refused.kind, refused.retries) == ("fail", 2)
        assert "document store answered 401" in refused.error_message
        # The failure was reported to the gateway with a token fetched after the refusal.
        assert len(token_endpoint.requests) == 2
