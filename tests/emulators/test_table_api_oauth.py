"""The emulator's OAuth 2.0 token endpoint, bearer tokens and API keys (reference A8)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from servicenow_emulators.table_api import ServiceNowEmulator, TokenRequest

USER, PASSWORD = "integration", "pw"
CLIENT, SECRET = "client-1", "client-secret"
INCIDENTS = "/api/now/table/incident"
DENIED = {"error_description": "access_denied", "error": "server_error"}


class Clock:
    """A clock the test moves by hand: tokens expire without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="emulator")
async def _emulator(clock: Clock) -> AsyncIterator[ServiceNowEmulator]:
    emulator = ServiceNowEmulator(users={USER: PASSWORD}, clock=clock)
    emulator.oauth.add_client(CLIENT, SECRET, application_user=USER)
    async with emulator:
        yield emulator


@pytest.fixture(name="client")
async def _client(emulator: ServiceNowEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.base_url, verify=False) as client:
        yield client


async def token(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await client.post(
        "/oauth_token.do", data={"client_id": CLIENT, "client_secret": SECRET, **form}
    )


async def password_grant(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await token(client, grant_type="password", username=USER, password=PASSWORD)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class TestPasswordGrant:
    async def test_issues_access_and_refresh_tokens(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """ServiceNow's answer shape; the access token works as a bearer token for that user."""
        body = await password_grant(client)
        assert body.keys() == {"access_token", "refresh_token", "scope", "token_type", "expires_in"}
        assert (body["token_type"], body["expires_in"], body["scope"]) == (
            "Bearer",
            1800,
            "useraccount",
        )
        response = await client.post(INCIDENTS, json={}, headers=bearer(body["access_token"]))
        assert response.status_code == 201
        assert response.json()["result"]["sys_created_by"] == USER
        assert emulator.oauth.token_requests == [TokenRequest("password", CLIENT, USER, 200)]

    async def test_same_token_while_valid(self, clock: Clock, client: httpx.AsyncClient) -> None:
        """A second request within the lifetime returns the same access token, with less time."""
        first = await password_grant(client)
        clock.now += 100
        second = await password_grant(client)
        assert second["access_token"] == first["access_token"]
        assert second["expires_in"] == 1700

    @pytest.mark.parametrize(
        "form",
        [
            {"client_id": "unknown"},
            {"client_secret": "wrong"},
            {"password": "wrong"},
            {"username": "nobody"},
        ],
        ids=["unknown-client", "wrong-secret", "wrong-password", "unknown-user"],
    )
    async def test_refused_with_access_denied(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient, form: dict[str, str]
    ) -> None:
        """Any refusal is ServiceNow's 401 server_error / access_denied."""
        fields = {"grant_type": "password", "username": USER, "password": PASSWORD, **form}
        response = await token(client, **fields)
        assert (response.status_code, response.json()) == (401, DENIED)
        assert emulator.oauth.count() == 1

    async def test_json_body_refused(self, client: httpx.AsyncClient) -> None:
        """The token endpoint takes form-encoded bodies only."""
        response = await client.post(
            "/oauth_token.do", json={"grant_type": "password", "client_id": CLIENT}
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    async def test_unsupported_grant(self, client: httpx.AsyncClient) -> None:
        response = await token(client, grant_type="authorization_code")
        assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type")


class TestRefreshGrant:
    async def test_new_access_token_same_refresh_token(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        first = await password_grant(client)
        response = await token(
            client, grant_type="refresh_token", refresh_token=first["refresh_token"]
        )
        body = response.json()
        assert response.status_code == 200
        assert body["access_token"] != first["access_token"]
        assert body["refresh_token"] == first["refresh_token"]
        assert emulator.oauth.count("refresh_token") == 1

    async def test_refused_after_revocation(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        first = await password_grant(client)
        assert emulator.oauth.revoke(refresh=True) == 2
        response = await token(
            client, grant_type="refresh_token", refresh_token=first["refresh_token"]
        )
        assert (response.status_code, response.json()) == (401, DENIED)

    async def test_refresh_token_of_another_client_refused(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        first = await password_grant(client)
        emulator.oauth.add_client("other", "other-secret")
        response = await client.post(
            "/oauth_token.do",
            data={
                "grant_type": "refresh_token",
                "client_id": "other",
                "client_secret": "other-secret",
                "refresh_token": first["refresh_token"],
            },
        )
        assert response.status_code == 401


class TestClientCredentialsGrant:
    async def test_acts_as_the_application_user(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        response = await token(client, grant_type="client_credentials", scope="useraccount")
        body = response.json()
        assert response.status_code == 200
        assert "refresh_token" not in body
        await client.get(INCIDENTS, headers=bearer(body["access_token"]))
        assert emulator.requests[-1].user == USER

    async def test_disabled_on_the_instance(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """glide.oauth.inbound.client.credential.grant_type.enabled=false: 401 access_denied."""
        emulator.oauth.client_credentials_enabled = False
        response = await token(client, grant_type="client_credentials")
        assert (response.status_code, response.json()) == (401, DENIED)

    async def test_no_application_user(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        emulator.oauth.add_client("lonely", "s")
        response = await client.post(
            "/oauth_token.do",
            data={"grant_type": "client_credentials", "client_id": "lonely", "client_secret": "s"},
        )
        assert response.status_code == 401


class TestBearerTokens:
    async def test_expired_token_gets_401_with_bearer_challenge(
        self, clock: Clock, client: httpx.AsyncClient
    ) -> None:
        """After its lifetime (on the emulator's clock) a token is refused like a wrong one."""
        access = (await password_grant(client))["access_token"]
        assert (await client.get(INCIDENTS, headers=bearer(access))).status_code == 200
        clock.now += 1800
        response = await client.get(INCIDENTS, headers=bearer(access))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'BEARER realm="Service-now"'
        assert response.json()["error"]["message"] == "User Not Authenticated"

    async def test_revoked_token_gets_401(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        access = (await password_grant(client))["access_token"]
        assert emulator.oauth.revoke() == 1  # the access token only
        assert (await client.get(INCIDENTS, headers=bearer(access))).status_code == 401

    async def test_lifetimes_per_client(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        emulator.oauth.add_client(CLIENT, SECRET, application_user=USER, access_lifetime=60)
        body = (await token(client, grant_type="client_credentials")).json()
        assert body["expires_in"] == 60

    async def test_unknown_token_gets_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(INCIDENTS, headers=bearer("made-up"))
        assert response.status_code == 401

    async def test_held_token_answers(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """`hold` keeps token answers back until released (for single-flight tests)."""
        emulator.oauth.hold = asyncio.Event()
        pending = asyncio.create_task(password_grant(client))
        await emulator.wait_for_request(lambda r: r.path == "/oauth_token.do")
        assert not pending.done()
        emulator.oauth.hold.set()
        assert (await pending)["access_token"]


class TestApiKeys:
    async def test_header_and_query_parameter(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        emulator.oauth.add_api_key("k-123", USER)
        by_header = await client.get(INCIDENTS, headers={"x-sn-apikey": "k-123"})
        by_query = await client.get(INCIDENTS, params={"x-sn-apikey": "k-123"})
        assert (by_header.status_code, by_query.status_code) == (200, 200)
        assert [r.user for r in emulator.requests] == [USER, USER]

    async def test_unknown_key_gets_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(INCIDENTS, headers={"x-sn-apikey": "nope"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'BASIC realm="Service-now"'
