"""Authentication: input shapes, headers, the token cache, token requests and the TLS settings."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import ValidationError

from servicenow_worker.app import load_settings
from servicenow_worker.auth import (
    NO_FLOW,
    Authenticator,
    OAuthFlow,
    Token,
    TokenCache,
    TokenKey,
    tls_context,
)
from servicenow_worker.errors import (
    AUTH_FAILED,
    AuthenticationFailed,
    InputError,
    ServiceNowUnavailable,
)
from servicenow_worker.inputs import InputRules, RecordRequest, parse_record_request
from servicenow_worker.outcome import Fail, for_error
from servicenow_worker.servicenow import RetryPolicy, TableClient
from servicenow_worker.settings import Settings

from ..e2e.test_authentication import Pki, make_pki

RULES = InputRules("https://{instance}.service-now.com", ("*.service-now.com",), 1000)
BASE = "https://dev1.service-now.com"
PASSWORD_AUTH = {
    "type": "oauth-password",
    "clientId": "cid",
    "clientSecret": "c-secret",
    "username": "camunda",
    "password": "p-secret",
}
CLIENT_AUTH = {"type": "oauth-client-credentials", "clientId": "cid", "clientSecret": "c-secret"}


def request(authentication: Any, **inputs: Any) -> RecordRequest:
    base = {"instance": "dev1", "operation": "read", "table": "incident"}
    return parse_record_request({**base, "authentication": authentication, **inputs}, RULES)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestInputs:
    @pytest.mark.parametrize(
        ("authentication", "message"),
        [
            (
                {"type": "oauth-client-credentials", "clientSecret": "s"},
                "authentication.clientId is required",
            ),
            ({**PASSWORD_AUTH, "username": None}, "authentication.username is required"),
            ({"type": "api-key"}, "authentication.apiKey is required"),
            ({"type": "bearer"}, "authentication.token is required"),
            (
                {"type": "saml"},
                "authentication has type 'saml', which is not supported; use one of basic, oauth-client-credentials, oauth-password, api-key, bearer",
            ),
            (
                {"username": "u", "password": "p", "clientId": "c"},
                "authentication.clientId is not used by authentication type basic (check type)",
            ),
        ],
    )
    def test_messages_name_the_field(self, authentication: dict[str, Any], message: str) -> None:
        clean = {k: v for k, v in authentication.items() if v is not None}
        with pytest.raises(InputError) as raised:
            request(clean)
        assert str(raised.value) == message

    @pytest.mark.parametrize(
        "authentication",
        [
            {"type": "api-key", "apiKey": "two words-s3cr3t"},
            {"type": "bearer", "token": "line\nbreak-s3cr3t"},
        ],
    )
    def test_bad_header_values_never_echoed(self, authentication: dict[str, Any]) -> None:
        """A key or token that cannot go into a header is refused without showing it."""
        with pytest.raises(InputError) as raised:
            request(authentication)
        assert "s3cr3t" not in str(raised.value)
        assert "printable characters without spaces" in str(raised.value)

    def test_type_any_case_and_empty_scope(self) -> None:
        parsed = request({**CLIENT_AUTH, "type": "OAuth-Client-Credentials", "scope": ""})
        assert parsed.authentication.type == "oauth-client-credentials"
        assert parsed.authentication.scope is None  # type: ignore[union-attr]


class TestHeaders:
    def credentials(self, authentication: dict[str, Any]) -> httpx.Headers:
        http = httpx.AsyncClient()
        return httpx.Headers(
            Authenticator(http, TokenCache()).credentials(request(authentication)).headers
        )

    def test_basic_matches_httpx(self) -> None:
        """The precomputed header is what httpx's BasicAuth sends (UTF-8, as before)."""
        headers = self.credentials({"username": "camunda", "password": 'Pa55:w"rd ö€'})
        expected = httpx.BasicAuth("camunda", 'Pa55:w"rd ö€')._auth_header
        assert headers["Authorization"] == expected

    def test_api_key(self) -> None:
        headers = self.credentials({"type": "api-key", "apiKey": "k-1"})
        assert dict(headers) == {"x-sn-apikey": "k-1"}

    def test_bearer_prefix_allowed(self) -> None:
        headers = self.credentials({"type": "bearer", "token": "Bearer abc.def"})
        assert headers["Authorization"] == "Bearer abc.def"


class TestIdentity:
    """Flow control keys destinations by the credentials' identity: a digest, never a secret."""

    def identity(self, authentication: dict[str, Any]) -> bytes:
        http = httpx.AsyncClient()
        return Authenticator(http, TokenCache()).credentials(request(authentication)).identity

    @pytest.mark.parametrize(
        "authentication",
        [
            {"username": "camunda", "password": "p-secret"},
            {"type": "api-key", "apiKey": "p-secret"},
            {"type": "bearer", "token": "p-secret"},
            PASSWORD_AUTH,
            CLIENT_AUTH,
        ],
    )
    def test_same_credentials_same_identity_without_the_secret(
        self, authentication: dict[str, Any]
    ) -> None:
        identity = self.identity(authentication)
        assert identity == self.identity(dict(authentication))
        assert len(identity) == 16
        assert b"secret" not in identity

    def test_another_secret_another_identity(self) -> None:
        identities = {
            self.identity({"username": "camunda", "password": "one"}),
            self.identity({"username": "camunda", "password": "two"}),
            self.identity({**CLIENT_AUTH, "clientSecret": "other"}),
            self.identity(CLIENT_AUTH),
            self.identity(PASSWORD_AUTH),
        }
        assert len(identities) == 5


KEY = TokenKey(BASE, "cid", "password", "camunda", None, b"x")


class TestTokenCache:
    async def test_one_request_for_many_waiters(self) -> None:
        """However many jobs need a token at once, one request is made and all get its token."""
        clock, release = Clock(), asyncio.Event()
        cache = TokenCache(clock=clock)
        calls: list[str | None] = []

        async def obtain(refresh: str | None) -> Token:
            calls.append(refresh)
            await release.wait()
            return Token("t1", clock() + 100, "r1")

        asyncio.get_running_loop().call_soon(release.set)
        results = await asyncio.gather(*(cache.get(KEY, obtain) for _ in range(50)))
        assert calls == [None]
        assert set(results) == {("t1", False)}
        assert await cache.get(KEY, obtain) == ("t1", True)

    async def test_renewed_with_the_refresh_token_before_expiry(self) -> None:
        clock = Clock()
        cache = TokenCache(clock=clock)
        issued = iter([Token("t1", clock() + 100, "r1"), Token("t2", clock() + 300, "r1")])
        calls: list[str | None] = []

        async def obtain(refresh: str | None) -> Token:
            calls.append(refresh)
            return next(issued)

        assert await cache.get(KEY, obtain) == ("t1", False)
        clock.now += 99
        assert await cache.get(KEY, obtain) == ("t1", True)
        clock.now += 1
        assert await cache.get(KEY, obtain) == ("t2", False)
        assert calls == [None, "r1"]

    async def test_drop_only_the_refused_token(self) -> None:
        """A 401 drops the token it was sent with, not a newer one another job fetched."""
        clock = Clock()
        cache = TokenCache(clock=clock)
        tokens = iter(["t1", "t2"])

        async def obtain(refresh: str | None) -> Token:
            return Token(next(tokens), clock() + 100)

        await cache.get(KEY, obtain)
        cache.drop(KEY, "t1")
        assert await cache.get(KEY, obtain) == ("t2", False)
        cache.drop(KEY, "t1")  # late: t1 is long gone
        assert await cache.get(KEY, obtain) == ("t2", True)

    async def test_failure_reaches_every_waiter_and_the_next_call_tries_again(self) -> None:
        cache = TokenCache(clock=Clock())
        outcomes: list[Token | Exception] = [
            AuthenticationFailed("refused", status=401, variables={}),
            Token("t1", 10_000),
        ]

        async def obtain(refresh: str | None) -> Token:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        results = await asyncio.gather(
            *(cache.get(KEY, obtain) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, AuthenticationFailed) for r in results)
        assert await cache.get(KEY, obtain) == ("t1", False)

    async def test_refresh_token_kept_after_a_passing_fault(self) -> None:
        clock = Clock()
        cache = TokenCache(clock=clock)
        calls: list[str | None] = []
        outcomes: list[Token | Exception] = [
            Token("t1", clock() + 10, "r1"),
            ServiceNowUnavailable("503", "down", never_sent=True),
            Token("t2", clock() + 1000, "r1"),
        ]

        async def obtain(refresh: str | None) -> Token:
            calls.append(refresh)
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        await cache.get(KEY, obtain)
        clock.now += 10
        with pytest.raises(ServiceNowUnavailable):
            await cache.get(KEY, obtain)
        assert await cache.get(KEY, obtain) == ("t2", False)
        assert calls == [None, "r1", "r1"]

    async def test_cancelled_waiter_does_not_cancel_the_request(self) -> None:
        clock, release = Clock(), asyncio.Event()
        cache = TokenCache(clock=clock)

        async def obtain(refresh: str | None) -> Token:
            await release.wait()
            return Token("t1", clock() + 100)

        first = asyncio.create_task(cache.get(KEY, obtain))
        second = asyncio.create_task(cache.get(KEY, obtain))
        await asyncio.sleep(0)  # both are waiting now
        first.cancel()
        release.set()
        assert await second == ("t1", False)
        assert first.cancelled()


class TokenEndpoint:
    """A mock instance: `/oauth_token.do` answers from `answers`; the Table API checks tokens."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.forms: list[dict[str, str]] = []
        self.table_tokens: list[str] = []
        self.refused: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth_token.do":
            assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
            self.forms.append(dict(parse_qsl(request.content.decode())))
            return self.answers.pop(0)
        token = request.headers["Authorization"].removeprefix("Bearer ")
        self.table_tokens.append(token)
        if token in self.refused:
            return httpx.Response(401, json={"error": {"message": "User Not Authenticated"}})
        return httpx.Response(200, json={"result": []})


def issued(access: str, refresh: str | None = None, expires_in: int = 1799) -> httpx.Response:
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }
    if refresh:
        body["refresh_token"] = refresh
    return httpx.Response(200, json=body)


def denied() -> httpx.Response:
    return httpx.Response(401, json={"error_description": "access_denied", "error": "server_error"})


def table_client(
    handler: Callable[[httpx.Request], httpx.Response], cache: TokenCache
) -> TableClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TableClient(
        http,
        retry=RetryPolicy(attempts=2, wait_initial=0.001),
        attempt_timeout=1,
        authenticator=Authenticator(http, cache),
    )


def deadline() -> float:
    return time.monotonic() + 60


class TestOAuthCalls:
    async def test_password_grant_form_and_reuse(self) -> None:
        endpoint = TokenEndpoint(issued("t1", "r1"))
        client = table_client(endpoint, TokenCache())
        for _ in range(3):
            await client.send(request(PASSWORD_AUTH), deadline=deadline())
        assert endpoint.forms == [
            {
                "grant_type": "password",
                "client_id": "cid",
                "client_secret": "c-secret",
                "username": "camunda",
                "password": "p-secret",
            }
        ]
        assert endpoint.table_tokens == ["t1"] * 3

    async def test_client_credentials_form_with_scope(self) -> None:
        endpoint = TokenEndpoint(issued("t1"))
        await table_client(endpoint, TokenCache()).send(
            request({**CLIENT_AUTH, "scope": "useraccount"}), deadline=deadline()
        )
        assert endpoint.forms == [
            {
                "grant_type": "client_credentials",
                "client_id": "cid",
                "client_secret": "c-secret",
                "scope": "useraccount",
            }
        ]

    async def test_revoked_token_refreshed_once(self) -> None:
        """A 401 to a cached token: refresh, send again, and the call succeeds."""
        endpoint = TokenEndpoint(issued("t1", "r1"), issued("t2"))
        client = table_client(endpoint, TokenCache())
        await client.send(request(PASSWORD_AUTH), deadline=deadline())
        endpoint.refused.add("t1")
        response = await client.send(request(PASSWORD_AUTH), deadline=deadline())
        assert response.status == 200
        assert endpoint.table_tokens == ["t1", "t1", "t2"]
        assert [f["grant_type"] for f in endpoint.forms] == ["password", "refresh_token"]
        assert endpoint.forms[1]["refresh_token"] == "r1"

    async def test_401_to_a_fresh_token_is_final(self) -> None:
        """A token just issued and refused is not a stale token: no second token request."""
        endpoint = TokenEndpoint(issued("t1"))
        endpoint.refused.add("t1")
        client = table_client(endpoint, TokenCache())
        with pytest.raises(Exception, match="401"):
            await client.send(request(CLIENT_AUTH), deadline=deadline())
        assert len(endpoint.forms) == 1

    async def test_refused_refresh_falls_back_to_the_grant(self) -> None:
        clock = Clock()
        endpoint = TokenEndpoint(issued("t1", "r1", expires_in=100), denied(), issued("t2", "r2"))
        client = table_client(endpoint, TokenCache(clock=clock))
        await client.send(request(PASSWORD_AUTH), deadline=deadline())
        clock.now += 100
        await client.send(request(PASSWORD_AUTH), deadline=deadline())
        assert [f["grant_type"] for f in endpoint.forms] == [
            "password",
            "refresh_token",
            "password",
        ]
        assert endpoint.table_tokens == ["t1", "t2"]

    async def test_other_secret_other_token(self) -> None:
        """A job with a different client secret never rides on another job's token."""
        endpoint = TokenEndpoint(issued("t1"), denied())
        client = table_client(endpoint, TokenCache())
        await client.send(request(CLIENT_AUTH), deadline=deadline())
        with pytest.raises(AuthenticationFailed):
            await client.send(
                request({**CLIENT_AUTH, "clientSecret": "wrong"}), deadline=deadline()
            )

    @pytest.mark.parametrize(
        ("authentication", "message"),
        [
            (
                CLIENT_AUTH,
                "ServiceNow refused an OAuth token for the client_credentials grant (clientId cid): "
                "401 server_error: access_denied; if clientId and clientSecret are right, the "
                "instance may not allow the client credentials grant: set the system property "
                "glide.oauth.inbound.client.credential.grant_type.enabled to true",
            ),
            (
                PASSWORD_AUTH,
                "ServiceNow refused an OAuth token for the password grant (clientId cid, username "
                "camunda): 401 server_error: access_denied; check clientId, clientSecret, username "
                "and password",
            ),
        ],
    )
    async def test_refusal_is_final_and_says_which_grant(
        self, authentication: dict[str, Any], message: str
    ) -> None:
        client = table_client(TokenEndpoint(denied()), TokenCache())
        with pytest.raises(AuthenticationFailed) as raised:
            await client.send(request(authentication), deadline=deadline())
        error = raised.value
        assert error.message.startswith(message)
        assert (error.code, error.status) == (AUTH_FAILED, 401)
        assert error.variables == {
            "status": 401,
            "body": {"error": "server_error", "error_description": "access_denied"},
        }
        assert "secret" not in error.message
        outcome = for_error(error, job_retries=3, options=None, retry_after_cap=60)
        assert isinstance(outcome, Fail) and outcome.retries == 0

    @pytest.mark.parametrize(
        ("answer", "code"),
        [
            (httpx.Response(503, json={}), "503"),
            (
                httpx.Response(200, text="<html>Instance Hibernating page</html>"),
                "INVALID_RESPONSE",
            ),
        ],
    )
    async def test_passing_faults_are_retryable(self, answer: httpx.Response, code: str) -> None:
        """A token endpoint that is down or not itself is retried (in-process, then by Zeebe)."""
        endpoint = TokenEndpoint(answer, answer)
        with pytest.raises(ServiceNowUnavailable) as raised:
            await table_client(endpoint, TokenCache()).send(
                request(CLIENT_AUTH), deadline=deadline()
            )
        assert raised.value.code == code
        assert raised.value.never_sent
        assert len(endpoint.forms) == 2  # RetryPolicy(attempts=2)
        assert endpoint.table_tokens == []

    async def test_timeout_is_retryable(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        with pytest.raises(ServiceNowUnavailable) as raised:
            await table_client(handler, TokenCache()).send(
                request(CLIENT_AUTH), deadline=deadline()
            )
        assert raised.value.code == "TIMEOUT"
        assert "token endpoint" in raised.value.message


class TestTls:
    def test_nothing_set_keeps_httpx_default(self) -> None:
        assert tls_context() is None

    def test_key_without_certificate(self, tmp_path: Path) -> None:
        key = tmp_path / "k.pem"
        key.write_text("x")
        with pytest.raises(ValueError, match="SERVICENOW_CLIENT_KEY is set without"):
            tls_context(client_key=key)

    def test_client_certificate_and_ca_load(self, tmp_path: Path) -> None:
        pki: Pki = make_pki(tmp_path)
        context = tls_context(
            client_cert=pki.client_cert, client_key=pki.client_key, ca_bundle=pki.ca_cert
        )
        assert context is not None
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "Test CA"),),)]

    def test_mismatched_key_is_refused(self, tmp_path: Path) -> None:
        pki = make_pki(tmp_path)
        with pytest.raises(ValueError, match="cannot be loaded") as raised:
            tls_context(client_cert=pki.client_cert, client_key=pki.server_key)
        assert "SERVICENOW_CLIENT_CERT" in str(raised.value)

    def test_settings_name_a_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ValidationError, match="is not a readable file"):
            Settings(servicenow_client_cert=tmp_path / "missing.pem")

    def test_start_exits_2_with_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("SERVICENOW_CLIENT_CERT", str(tmp_path / "missing.pem"))
        with pytest.raises(SystemExit) as raised:
            load_settings()
        assert raised.value.code == 2
        line = capsys.readouterr().err
        assert line.startswith("servicenow-worker: invalid setting SERVICENOW_CLIENT_CERT: ")
        assert "missing.pem is not a readable file" in line
        assert line.count("\n") == 1

    def test_unusable_ca_bundle(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        bundle = tmp_path / "ca.pem"
        bundle.write_text("not a certificate")
        monkeypatch.setenv("SERVICENOW_CA_BUNDLE", str(bundle))
        with pytest.raises(SystemExit):
            load_settings()
        assert "SERVICENOW_CA_BUNDLE" in capsys.readouterr().err


def test_cache_keys_hold_no_secret() -> None:
    """The token cache's keys hold a salted digest of the secrets, never the secrets."""
    flow = Authenticator(httpx.AsyncClient(), TokenCache()).credentials(request(PASSWORD_AUTH)).flow
    assert isinstance(flow, OAuthFlow)
    key = flow._grant.key
    assert "c-secret" not in repr(key)
    assert "p-secret" not in repr(key)


@pytest.mark.parametrize(
    "authentication",
    [
        {"username": "u", "password": "p"},
        {"type": "api-key", "apiKey": "k"},
        {"type": "bearer", "token": "t"},
    ],
)
def test_fixed_credentials_need_no_flow(authentication: dict[str, Any]) -> None:
    """Basic, API key and bearer are a header computed once per job, and httpx's shared no-op auth."""
    credentials = Authenticator(httpx.AsyncClient(), TokenCache()).credentials(
        request(authentication)
    )
    assert credentials.flow is NO_FLOW
