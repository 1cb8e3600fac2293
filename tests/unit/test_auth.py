"""Authentication: input shapes, headers, the token cache, token requests and the TLS settings."""

import asyncio
import gc
import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

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
    ServiceNowThrottled,
    ServiceNowUnavailable,
)
from servicenow_worker.inputs import InputRules, RecordRequest, parse_record_request
from servicenow_worker.outcome import Fail, for_error
from servicenow_worker.servicenow import RetryPolicy, TableClient
from servicenow_worker.settings import Settings

from ..e2e.test_authentication import Pki, encrypted_key, make_pki

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

    def test_other_credentials_other_identity(self) -> None:
        """Credentials that differ in any part are separate destinations (flow control: one
        user's 429 must not hold back another user's requests)."""
        variants = [
            {"username": "camunda", "password": "one"},
            {"username": "camunda", "password": "two"},
            {"type": "api-key", "apiKey": "key-one"},
            {"type": "api-key", "apiKey": "key-two"},
            CLIENT_AUTH,
            {**CLIENT_AUTH, "clientSecret": "other"},
            {**CLIENT_AUTH, "clientId": "other"},
            {**CLIENT_AUTH, "scope": "useraccount"},
            {**CLIENT_AUTH, "scope": "other"},
            PASSWORD_AUTH,
            {**PASSWORD_AUTH, "username": "other"},
            {**PASSWORD_AUTH, "clientId": "other"},
        ]
        assert len({self.identity(v) for v in variants}) == len(variants)

    def test_digest_is_salted(self) -> None:
        """A leaked identity cannot be checked against guessed passwords: the digest is keyed with
        a salt of this run, not the plain digest of the header."""
        header = httpx.BasicAuth("camunda", "p-secret")._auth_header
        plain = hashlib.blake2b(header.encode() + b"\0", digest_size=16).digest()
        assert self.identity({"username": "camunda", "password": "p-secret"}) != plain


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

    @pytest.mark.parametrize("max_entries", [4, None], ids=["4", "default-10000"])
    async def test_full_cache_forgets_the_oldest_half(self, max_entries: int | None) -> None:
        """The cache is bounded: a new key when it is full forgets the oldest half (and one more) of
        the keys; they need a new token request, the newer keys do not."""
        limit = max_entries or 10_000
        cache = TokenCache(clock=Clock(), **({"max_entries": max_entries} if max_entries else {}))
        requested: list[str] = []

        def obtain_for(name: str) -> Callable[[str | None], Any]:
            async def obtain(refresh: str | None) -> Token:
                requested.append(name)
                return Token(name, 10_000)

            return obtain

        keys = [
            TokenKey(BASE, f"c{n}", "client_credentials", None, None, b"x") for n in range(limit)
        ]
        for key in keys:
            await cache.get(key, obtain_for(key.client_id))
        assert len(cache) == limit
        assert await cache.get(keys[0], obtain_for("again")) == ("c0", True)  # full, not over

        newest = TokenKey(BASE, "new", "client_credentials", None, None, b"x")
        await cache.get(newest, obtain_for("new"))
        assert len(cache) == limit - (limit // 2 + 1) + 1
        forgotten, kept = keys[limit // 2], keys[limit // 2 + 1]
        requested.clear()
        assert await cache.get(kept, obtain_for("again")) == (kept.client_id, True)
        assert await cache.get(newest, obtain_for("again")) == ("new", True)
        assert await cache.get(forgotten, obtain_for("again")) == ("again", False)
        assert requested == ["again"]

    async def test_key_with_a_request_in_flight_is_not_forgotten(self) -> None:
        """Pruning skips a key whose token request is in flight: its waiters' token is kept."""
        clock, release = Clock(), asyncio.Event()
        cache = TokenCache(clock=clock, max_entries=2)
        requested: list[str] = []

        async def slow(refresh: str | None) -> Token:
            requested.append("slow")
            await release.wait()
            return Token("t-slow", clock() + 100)

        async def fast(refresh: str | None) -> Token:
            requested.append("fast")
            return Token("t-fast", clock() + 100)

        other = [TokenKey(BASE, f"c{n}", "client_credentials", None, None, b"x") for n in range(2)]
        waiting = asyncio.create_task(cache.get(KEY, slow))
        await asyncio.sleep(0)  # KEY's request is in flight
        await cache.get(other[0], fast)
        await cache.get(other[1], fast)  # full: other[0] goes, KEY stays
        release.set()
        assert await waiting == ("t-slow", False)
        assert await cache.get(KEY, slow) == ("t-slow", True)
        assert requested == ["slow", "fast", "fast"]

    @pytest.mark.parametrize("how", ["fails", "is-cancelled"])
    async def test_request_nobody_waits_for_logs_no_asyncio_error(
        self, how: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every job waiting for a token was cancelled, then the request failed (or was itself
        cancelled, as at shutdown): nothing reaches asyncio's error log."""
        gc.collect()  # what earlier tests left behind is not this test's to report
        caplog.set_level(logging.ERROR, logger="asyncio")
        started, release = asyncio.Event(), asyncio.Event()
        requests: list[asyncio.Task[Any] | None] = []

        async def obtain(refresh: str | None) -> Token:
            requests.append(asyncio.current_task())
            started.set()
            await release.wait()
            raise ServiceNowUnavailable("503", "down", never_sent=True)

        cache = TokenCache(clock=Clock())
        waiter = asyncio.create_task(cache.get(KEY, obtain))
        await started.wait()
        waiter.cancel()
        [request] = requests
        assert request is not None
        if how == "fails":
            release.set()
        else:
            request.cancel()
        await asyncio.wait([request])
        await asyncio.sleep(0)  # its done callbacks run now
        del request, requests[:]
        gc.collect()  # a failure never retrieved is logged when its task is collected
        assert [r.getMessage() for r in caplog.records] == []

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
    """A mock instance: `/oauth_token.do` answers from `answers` (a transport error class: that
    error instead of an answer); the Table API checks tokens."""

    def __init__(self, *answers: httpx.Response | type[httpx.TransportError]) -> None:
        self.answers = list(answers)
        self.forms: list[dict[str, str]] = []
        self.table_tokens: list[str] = []
        self.refused: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth_token.do":
            assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
            # ServiceNow answers in JSON when asked to; without Accept it may not.
            assert request.headers["Accept"] == "application/json"
            self.forms.append(dict(parse_qsl(request.content.decode())))
            answer = self.answers.pop(0)
            if isinstance(answer, httpx.Response):
                return answer
            raise answer("no answer", request=request)
        token = request.headers["Authorization"].removeprefix("Bearer ")
        self.table_tokens.append(token)
        if token in self.refused:
            return httpx.Response(401, json={"error": {"message": "User Not Authenticated"}})
        return httpx.Response(200, json={"result": []})


OMITTED: Any = object()


def issued(access: str, refresh: str | None = None, expires_in: Any = 1799) -> httpx.Response:
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
    if expires_in is not OMITTED:
        body["expires_in"] = expires_in
    if refresh is not None:
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


def exactly(text: str) -> str:
    """A `pytest.raises(match=…)` pattern for exactly this message."""
    return f"^{re.escape(text)}$"


def deadline() -> float:
    return time.monotonic() + 60


async def table_call(
    endpoint: TokenEndpoint, authentication: dict[str, Any], cache: TokenCache | None = None
) -> None:
    """One Table API call with the job's credentials, as TableClient makes it (no retries)."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    authenticator = Authenticator(http, TokenCache() if cache is None else cache)
    credentials = authenticator.credentials(request(authentication))
    await http.get(f"{BASE}/api/now/table/incident", auth=credentials.flow)


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

    @pytest.mark.parametrize(
        ("authentication", "refresh", "grants"),
        [
            (PASSWORD_AUTH, "r1", ["password", "refresh_token"]),
            (CLIENT_AUTH, None, ["client_credentials", "client_credentials"]),
        ],
        ids=["password", "client-credentials"],
    )
    async def test_revoked_token_renewed_once(
        self, authentication: dict[str, Any], refresh: str | None, grants: list[str]
    ) -> None:
        """A 401 to a cached token: renew it, send again, the call succeeds, and the log says why
        (without the token)."""
        endpoint = TokenEndpoint(issued("t1", refresh), issued("t2"))
        client = table_client(endpoint, TokenCache())
        await client.send(request(authentication), deadline=deadline())
        endpoint.refused.add("t1")
        with capture_logs() as logs:
            response = await client.send(request(authentication), deadline=deadline())
        assert response.status == 200
        assert endpoint.table_tokens == ["t1", "t1", "t2"]
        assert [f["grant_type"] for f in endpoint.forms] == grants
        assert endpoint.forms[1].get("refresh_token") == refresh
        refused = {"grant": grants[0], "instance": BASE, "log_level": "info"}
        assert {**refused, "event": "oauth_token_refused_by_servicenow"} in logs

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
        with capture_logs() as logs:
            await client.send(request(PASSWORD_AUTH), deadline=deadline())
        assert [f["grant_type"] for f in endpoint.forms] == [
            "password",
            "refresh_token",
            "password",
        ]
        assert endpoint.table_tokens == ["t1", "t2"]
        refused = {"event": "oauth_refresh_refused", "grant": "password", "status": 401}
        assert {**refused, "log_level": "info"} in logs

    @pytest.mark.parametrize("new_refresh", [None, ""], ids=["omitted", "empty"])
    async def test_refresh_answer_without_a_refresh_token_keeps_ours(
        self, new_refresh: str | None
    ) -> None:
        """ServiceNow may answer a refresh without a new refresh token: the old one still works
        and is used for the next renewal (not the password again)."""
        clock = Clock()
        cache = TokenCache(clock=clock)
        endpoint = TokenEndpoint(
            issued("t1", "r1", expires_in=100),
            issued("t2", new_refresh, expires_in=100),
            issued("t3", "r3"),
        )
        for _ in range(3):
            await table_call(endpoint, PASSWORD_AUTH, cache)
            clock.now += 100
        assert [(f["grant_type"], f.get("refresh_token")) for f in endpoint.forms] == [
            ("password", None),
            ("refresh_token", "r1"),
            ("refresh_token", "r1"),
        ]
        assert endpoint.table_tokens == ["t1", "t2", "t3"]

    @pytest.mark.parametrize("authentication", [PASSWORD_AUTH, CLIENT_AUTH], ids=["password", "cc"])
    async def test_refresh_form(self, authentication: dict[str, Any]) -> None:
        """The refresh request carries the client's id and secret; for client credentials too,
        when the instance issued a refresh token for that grant."""
        clock = Clock()
        cache = TokenCache(clock=clock)
        endpoint = TokenEndpoint(issued("t1", "r1", expires_in=100), issued("t2"))
        await table_call(endpoint, authentication, cache)
        clock.now += 100
        await table_call(endpoint, authentication, cache)
        assert endpoint.forms[1] == {
            "grant_type": "refresh_token",
            "client_id": "cid",
            "client_secret": "c-secret",
            "refresh_token": "r1",
        }
        assert endpoint.table_tokens == ["t1", "t2"]

    async def test_token_issued_is_logged_without_the_token(self) -> None:
        endpoint = TokenEndpoint(issued("t-s3cret", "r-s3cret"))
        with capture_logs() as logs:
            await table_call(endpoint, PASSWORD_AUTH, TokenCache(clock=Clock()))
        assert logs == [
            {
                "event": "oauth_token_issued",
                "grant": "password",
                "instance": BASE,
                "renew_in_s": 1739,  # 1799 s, renewed a minute before the end
                "log_level": "info",
            }
        ]

    @pytest.mark.parametrize(
        ("expires_in", "renew_after"),
        [
            (1799, 1739),  # a minute before the end
            (300, 270),  # a tenth of a short lifetime before the end
            ("600", 540),  # a number in a string
            (OMITTED, 1740),  # ServiceNow's default lifetime, 1800 s
            (None, 1740),
            ("soon", 1740),
            (True, 1740),
        ],
    )
    async def test_token_renewed_before_it_expires(self, expires_in: Any, renew_after: int) -> None:
        clock = Clock()
        cache = TokenCache(clock=clock)
        endpoint = TokenEndpoint(issued("t1", expires_in=expires_in), issued("t2"))
        await table_call(endpoint, CLIENT_AUTH, cache)
        clock.now += renew_after - 0.5
        await table_call(endpoint, CLIENT_AUTH, cache)
        clock.now += 0.5
        await table_call(endpoint, CLIENT_AUTH, cache)
        assert endpoint.table_tokens == ["t1", "t1", "t2"]

    @pytest.mark.parametrize("expires_in", [0, -5])
    async def test_token_without_lifetime_serves_one_call(self, expires_in: int) -> None:
        """A token that expires at once is used for the call it was asked for, and not again."""
        cache = TokenCache(clock=Clock())
        endpoint = TokenEndpoint(issued("t1", expires_in=expires_in), issued("t2"))
        await table_call(endpoint, CLIENT_AUTH, cache)
        await table_call(endpoint, CLIENT_AUTH, cache)
        assert endpoint.table_tokens == ["t1", "t2"]

    @pytest.mark.parametrize(
        ("authentication", "wrong"),
        [
            (CLIENT_AUTH, {"clientSecret": "wrong"}),
            (PASSWORD_AUTH, {"clientSecret": "wrong"}),
            (PASSWORD_AUTH, {"password": "wrong"}),
        ],
        ids=["client-secret", "password-grant-client-secret", "password"],
    )
    async def test_other_secret_other_token(
        self, authentication: dict[str, Any], wrong: dict[str, str]
    ) -> None:
        """A job with a wrong secret never rides on another job's token."""
        endpoint = TokenEndpoint(issued("t1"), denied())
        client = table_client(endpoint, TokenCache())
        await client.send(request(authentication), deadline=deadline())
        with pytest.raises(AuthenticationFailed):
            await client.send(request({**authentication, **wrong}), deadline=deadline())

    @pytest.mark.parametrize(
        ("first", "second", "field"),
        [
            (PASSWORD_AUTH, {**PASSWORD_AUTH, "username": "other"}, "username"),
            ({**CLIENT_AUTH, "scope": "one"}, {**CLIENT_AUTH, "scope": "two"}, "scope"),
        ],
        ids=["username", "scope"],
    )
    async def test_other_user_or_scope_other_token(
        self, first: dict[str, Any], second: dict[str, Any], field: str
    ) -> None:
        """A token acts as one user, with one scope: a job for another gets a token of its own,
        even with the same client and secrets."""
        endpoint = TokenEndpoint(issued("t1"), issued("t2"))
        cache = TokenCache()
        await table_call(endpoint, first, cache)
        await table_call(endpoint, second, cache)
        assert [f[field] for f in endpoint.forms] == [first[field], second[field]]
        assert endpoint.table_tokens == ["t1", "t2"]

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
        ("answer", "reason", "body"),
        [
            (
                httpx.Response(400, json={"error": "invalid_request", "error_description": "bad"}),
                "400 invalid_request: bad",
                {"error": "invalid_request", "error_description": "bad"},
            ),
            (httpx.Response(403, json={"error": "access_denied"}), "403 access_denied", None),
            (httpx.Response(401, text="<html>Log in</html>"), "401", {}),
            (httpx.Response(401, json=["not", "an", "object"]), "401", {}),
        ],
        ids=["400", "403-error-only", "401-html", "401-json-list"],
    )
    async def test_refusal_reason(
        self, answer: httpx.Response, reason: str, body: dict[str, str] | None
    ) -> None:
        """Any 4xx but 408 and 429 is a refusal; the message gives ServiceNow's reason as far as
        it gave one."""
        with pytest.raises(AuthenticationFailed) as raised:
            await table_call(TokenEndpoint(answer), CLIENT_AUTH)
        error = raised.value
        assert error.message.startswith(
            "ServiceNow refused an OAuth token for the client_credentials grant (clientId cid): "
            f"{reason}; if clientId and clientSecret are right"
        )
        expected = {"error": "access_denied"} if body is None else body
        assert (error.status, error.variables) == (
            answer.status_code,
            {"status": answer.status_code, "body": expected},
        )

    @pytest.mark.parametrize(
        ("answer", "kind", "code", "said", "retry_after"),
        [
            (httpx.Response(408), ServiceNowUnavailable, "408", "", None),
            (
                httpx.Response(429, headers={"Retry-After": "120"}),
                ServiceNowThrottled,
                "429",
                "",
                120.0,
            ),
            (
                httpx.Response(500, json={"error": "server_error", "error_description": "later"}),
                ServiceNowUnavailable,
                "500",
                " (server_error: later)",
                None,
            ),
            (
                httpx.Response(503, headers={"Retry-After": " 7 "}, json={"error": "busy"}),
                ServiceNowUnavailable,
                "503",
                " (busy)",
                7.0,
            ),
            (
                # an HTTP date (here: past) as Retry-After, as for the Table API (contract §6)
                httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
                ServiceNowUnavailable,
                "503",
                "",
                0.0,
            ),
            (
                httpx.Response(503, headers={"Retry-After": "soon"}),
                ServiceNowUnavailable,
                "503",
                "",
                None,
            ),
            (httpx.Response(302, headers={"Location": "/login.do"}), None, "", "", None),
            (
                httpx.Response(200, text="<html>Instance Hibernating page</html>"),
                None,
                "",
                "",
                None,
            ),
            (httpx.Response(200, json=["t1"]), None, "", "", None),
            (httpx.Response(200, json={"access_token": ""}), None, "", "", None),
            (httpx.Response(200, json={"access_token": 123}), None, "", "", None),
        ],
        ids=[
            "408",
            "429",
            "500",
            "503-seconds",
            "503-date",
            "503-bad-retry-after",
            "302-login",
            "200-html",
            "200-list",
            "200-empty-token",
            "200-number-token",
        ],
    )
    async def test_passing_fault(
        self,
        answer: httpx.Response,
        kind: type[ServiceNowUnavailable] | None,
        code: str,
        said: str,
        retry_after: float | None,
    ) -> None:
        """408, 429 and 5xx, and an answer without a token (a login or hibernation page): the job
        fails for a retry (retries unchanged for 429), with ServiceNow's Retry-After; the call
        itself is never sent."""
        endpoint = TokenEndpoint(answer)
        with pytest.raises(ServiceNowUnavailable) as raised:
            await table_call(endpoint, CLIENT_AUTH)
        error, status = raised.value, answer.status_code
        if kind is None:  # answered, but not with a token
            kind, code = ServiceNowUnavailable, "INVALID_RESPONSE"
            said = (
                " without an access token: the instance may be hibernating or a proxy may stand "
                "in front of it"
            )
        assert type(error) is kind
        assert error.message == (
            f"ServiceNow's token endpoint answered {status} to the client_credentials grant{said}"
        )
        assert (error.code, error.status, error.retry_after) == (code, status, retry_after)
        assert error.never_sent
        assert endpoint.table_tokens == []
        outcome = for_error(error, job_retries=3, options=None, retry_after_cap=3600)
        assert isinstance(outcome, Fail)
        assert outcome.retries == (3 if status == 429 else 2)

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

    @pytest.mark.parametrize(
        ("fault", "code", "message"),
        [
            (
                httpx.ReadTimeout,
                "TIMEOUT",
                "ServiceNow's token endpoint did not answer the client_credentials grant in time "
                "(ReadTimeout)",
            ),
            (
                httpx.ConnectError,
                "CONNECTION_ERROR",
                "could not reach ServiceNow's token endpoint for the client_credentials grant "
                "(ConnectError)",
            ),
        ],
        ids=["timeout", "unreachable"],
    )
    async def test_token_endpoint_out_of_reach(
        self, fault: type[httpx.TransportError], code: str, message: str
    ) -> None:
        """No token, so the call was never sent: the job fails for a retry, and even a create is
        sent again in-process (docs/contract.md §6: a create only when ServiceNow certainly did
        not take it)."""
        with pytest.raises(ServiceNowUnavailable) as raised:
            await table_call(TokenEndpoint(fault), CLIENT_AUTH)
        assert (raised.value.code, raised.value.message) == (code, message)
        endpoint = TokenEndpoint(fault, issued("t1"))
        create = request(CLIENT_AUTH, operation="create", payload={"short_description": "x"})
        await table_client(endpoint, TokenCache()).send(create, deadline=deadline())
        assert (len(endpoint.forms), endpoint.table_tokens) == (2, ["t1"])


class TestTls:
    def test_nothing_set_keeps_httpx_default(self) -> None:
        assert tls_context() is None

    def test_key_without_certificate(self, tmp_path: Path) -> None:
        key = tmp_path / "k.pem"
        key.write_text("x")
        message = "SERVICENOW_CLIENT_KEY is set without SERVICENOW_CLIENT_CERT"
        with pytest.raises(ValueError, match=exactly(message)):
            tls_context(client_key=key)

    def test_client_certificate_and_ca_load(self, tmp_path: Path) -> None:
        pki: Pki = make_pki(tmp_path)
        context = tls_context(
            client_cert=pki.client_cert, client_key=pki.client_key, ca_bundle=pki.ca_cert
        )
        assert context is not None
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "Test CA"),),)]

    def test_encrypted_key_with_its_password(self, tmp_path: Path) -> None:
        pki = make_pki(tmp_path)
        encrypted = encrypted_key(pki, tmp_path / "encrypted.key", "k3y-pw")
        context = tls_context(
            client_cert=pki.client_cert, client_key=encrypted, client_key_password="k3y-pw"
        )
        assert context is not None
        with pytest.raises(ValueError, match="SERVICENOW_CLIENT_KEY_PASSWORD"):
            tls_context(client_cert=pki.client_cert, client_key=encrypted, client_key_password="x")

    CHECK: Final = (
        ": check SERVICENOW_CLIENT_CERT, SERVICENOW_CLIENT_KEY and SERVICENOW_CLIENT_KEY_PASSWORD"
    )

    def test_mismatched_key_is_refused(self, tmp_path: Path) -> None:
        pki = make_pki(tmp_path)
        message = (
            f"the client certificate {pki.client_cert} and key {pki.server_key} cannot be loaded "
            f"(KEY_VALUES_MISMATCH){self.CHECK}"
        )
        with pytest.raises(ValueError, match=exactly(message)):
            tls_context(client_cert=pki.client_cert, client_key=pki.server_key)

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        missing = tmp_path / "missing.pem"
        message = (
            f"the client certificate {missing} and key (in the same file) cannot be loaded "
            f"(No such file or directory){self.CHECK}"
        )
        with pytest.raises(ValueError, match=exactly(message)):
            tls_context(client_cert=missing)

    def test_certificate_without_its_key(self, tmp_path: Path) -> None:
        """Without SERVICENOW_CLIENT_KEY the key must be in the certificate's file; the message
        says where it was looked for (OpenSSL's own reason varies by version)."""
        pki = make_pki(tmp_path)
        with pytest.raises(ValueError, match="cannot be loaded") as raised:
            tls_context(client_cert=pki.client_cert)
        message = str(raised.value)
        assert message.startswith(
            f"the client certificate {pki.client_cert} and key (in the same file) cannot be loaded ("
        )
        assert message.endswith(f"){self.CHECK}")

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
