"""Authentication to ServiceNow: what each request carries, OAuth tokens, the client certificate.

- `basic`, `api-key`, `bearer`: one header, computed once per job (`Credentials.headers`).
- `oauth-client-credentials`, `oauth-password`: an httpx auth flow (`OAuthFlow`) that puts a bearer
  token from the worker's `TokenCache` on the request; a 401 to a token that came from the cache
  drops it and sends the request once more with a fresh one.
- Mutual TLS: the operator's client certificate goes into the shared client's SSL context
  (`tls_context`), so every call to ServiceNow, the token endpoint's included, presents it.

Tokens come from `<instance>/oauth_token.do` (form-encoded). The cache keeps one entry per
`TokenKey` for the worker's lifetime; a token is used until shortly before it expires, then renewed
with its refresh token when ServiceNow issued one (password grant), else requested again. At most
one token request per key is in flight: every job that needs that key meanwhile waits for it.
Neither a token nor a secret is ever logged or put into a message or variable.
"""

import asyncio
import base64
import hashlib
import os
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import certifi
import httpx
import structlog

from servicenow_worker.errors import (
    CONNECTION_ERROR,
    INVALID_RESPONSE,
    TIMEOUT,
    AuthenticationFailed,
    ServiceNowThrottled,
    ServiceNowUnavailable,
)
from servicenow_worker.flow_control import parse_retry_after
from servicenow_worker.inputs import (
    ApiKeyAuthentication,
    BasicAuthentication,
    BearerAuthentication,
    DestinationInputs,
    OAuthClientCredentials,
    OAuthPassword,
)

log = structlog.get_logger(__name__)

TOKEN_PATH: Final = "/oauth_token.do"  # noqa: S105 (a path, not a secret)
TOKEN_REQUEST_HEADERS: Final = {"Accept": "application/json"}
# ServiceNow's default access token lifetime, assumed when an answer leaves out expires_in.
DEFAULT_LIFETIME: Final = 1800.0
# A token is renewed this long before it expires (a tenth of its lifetime when that is shorter), so
# a call never leaves with a token that expires on the way.
RENEW_BEFORE: Final = 60.0
DESCRIPTION_LIMIT: Final = 200
CLIENT_CREDENTIALS_HINT: Final = (
    "; if clientId and clientSecret are right, the instance may not allow the client credentials "
    "grant: set the system property glide.oauth.inbound.client.credential.grant_type.enabled to "
    "true and give the application registry entry an OAuth Application User"
)
USER_GRANT_HINT: Final = (
    "; check clientId, clientSecret, username and password, and that the user is active"
)
# Keys hold a digest of the secrets, never the secrets; the salt makes it useless outside this run.
_FINGERPRINT_SALT: Final = os.urandom(16)


# httpx's no-op auth, shared: given None, httpx would look for credentials in each request's URL.
NO_FLOW: Final = httpx.Auth()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one job's requests carry: fixed headers, or an auth flow that adds a bearer token.

    `identity` tells credentials apart without holding them (a salted digest): flow control keeps
    one destination per base URL and identity.
    """

    headers: Mapping[str, str]
    identity: bytes
    flow: httpx.Auth = NO_FLOW


@dataclass(frozen=True, slots=True)
class TokenKey:
    """Which token a job needs. Jobs with equal keys share one token.

    Besides the instance, client id, grant and user, the scope and a digest of the client secret
    and password belong to it: a job with a wrong secret never rides on another job's token.
    """

    base_url: str
    client_id: str
    grant: str
    username: str | None
    scope: str | None
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and when to stop using it (a `TokenCache.clock` time)."""

    access: str
    use_until: float
    refresh: str | None = None


Obtain = Callable[[str | None], Awaitable[Token]]


class _Entry:
    __slots__ = ("pending", "refresh", "token")

    def __init__(self) -> None:
        self.token: Token | None = None
        self.refresh: str | None = None
        self.pending: asyncio.Task[Token] | None = None


class TokenCache:
    """OAuth access tokens by `TokenKey`, for the worker's lifetime (built by the composition root).

    `get` answers from memory while the token is fresh (no await, no lock); otherwise it starts
    one request for the key (or joins the one in flight) and waits for it.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000
    ) -> None:
        self.clock = clock
        self._max_entries = max_entries
        self._entries: dict[TokenKey, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: TokenKey, obtain: Obtain) -> tuple[str, bool]:
        """The access token for `key`, and whether it came from the cache (was not just issued).

        `obtain(refresh_token)` requests a token; it runs at most once at a time per key, in a task
        of its own, so a job that is cancelled meanwhile does not cancel it for the others.
        """
        entry = self._entries.get(key)
        if entry is not None:
            token = entry.token
            if token is not None and self.clock() < token.use_until:
                return token.access, True
        else:
            self._prune()  # before adding: the new entry is never the one pruned
            entry = self._entries[key] = _Entry()
        if entry.pending is None:
            entry.pending = asyncio.create_task(self._fill(entry, obtain))
            entry.pending.add_done_callback(_retrieve)
        token = await asyncio.shield(entry.pending)
        return token.access, False

    def drop(self, key: TokenKey, access: str) -> None:
        """Forget `access` (ServiceNow refused it), unless a newer token already replaced it."""
        entry = self._entries.get(key)
        if entry is not None and entry.token is not None and entry.token.access == access:
            entry.token = None

    async def _fill(self, entry: _Entry, obtain: Obtain) -> Token:
        refresh, entry.refresh = entry.refresh, None
        try:
            token = await obtain(refresh)
        except ServiceNowUnavailable:
            entry.refresh = refresh  # a passing fault: the refresh token may still be good
            raise
        finally:
            entry.pending = None
        entry.token = token
        entry.refresh = token.refresh
        return token

    def _prune(self) -> None:
        if len(self._entries) < self._max_entries:
            return
        idle = [key for key, entry in self._entries.items() if entry.pending is None]
        for key in idle[: len(idle) // 2 + 1]:  # the oldest half
            del self._entries[key]


def _retrieve(task: "asyncio.Task[Token]") -> None:
    # Every waiter may have been cancelled: mark the error seen so asyncio does not log it.
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True, slots=True)
class _Grant:
    """One job's OAuth grant: its cache key, its form, and how a message names it."""

    key: TokenKey
    form: Mapping[str, str]
    client_secret: str
    describe: str
    hint: str


class Authenticator:
    """Turns a job's `authentication` into its `Credentials`; requests OAuth tokens over `http`."""

    def __init__(self, http: httpx.AsyncClient, tokens: TokenCache) -> None:
        self.http = http
        self.tokens = tokens

    def credentials(self, request: DestinationInputs) -> Credentials:
        auth = request.authentication
        if isinstance(auth, BasicAuthentication):
            header = basic_header(auth)
            return Credentials({"Authorization": header}, _fingerprint(header))
        if isinstance(auth, ApiKeyAuthentication):
            key = auth.api_key.get_secret_value()
            return Credentials({"x-sn-apikey": key}, _fingerprint("x-sn-apikey", key))
        if isinstance(auth, BearerAuthentication):
            header = "Bearer " + auth.token.get_secret_value()
            return Credentials({"Authorization": header}, _fingerprint(header))
        grant = _grant(request.base_url, auth)
        return Credentials({}, _identity(grant.key), OAuthFlow(self, grant))

    async def obtain(self, grant: _Grant, refresh: str | None) -> Token:
        """A token for `grant`: by its refresh token when there is one, else by the grant itself."""
        if refresh is not None:
            form = {
                "grant_type": "refresh_token",
                "client_id": grant.key.client_id,
                "client_secret": grant.client_secret,
                "refresh_token": refresh,
            }
            try:
                return await self._request_token(grant, form, refresh)
            except _Refused as refused:
                # Expired or revoked: the grant itself still works.
                log.info("oauth_refresh_refused", grant=grant.key.grant, status=refused.status)
        try:
            return await self._request_token(grant, grant.form, None)
        except _Refused as refused:
            raise AuthenticationFailed(
                f"ServiceNow refused an OAuth token for {grant.describe}: {refused.reason}"
                f"{grant.hint}",
                status=refused.status,
                variables={"status": refused.status, "body": refused.body},
            ) from None

    async def _request_token(
        self, grant: _Grant, form: Mapping[str, str], refresh: str | None
    ) -> Token:
        kind = form["grant_type"]
        started = self.tokens.clock()
        try:
            response = await self.http.post(
                grant.key.base_url + TOKEN_PATH, data=form, headers=TOKEN_REQUEST_HEADERS
            )
        except httpx.TimeoutException as error:
            raise ServiceNowUnavailable(
                TIMEOUT,
                f"ServiceNow's token endpoint did not answer the {kind} grant in time "
                f"({type(error).__name__})",
                never_sent=True,
            ) from None
        except httpx.TransportError as error:
            raise ServiceNowUnavailable(
                CONNECTION_ERROR,
                f"could not reach ServiceNow's token endpoint for the {kind} grant "
                f"({type(error).__name__})",
                never_sent=True,
            ) from None
        status = response.status_code
        if status == 200:
            token = _token(response, started, refresh)
            if token is not None:
                log.info(
                    "oauth_token_issued",
                    grant=kind,
                    instance=grant.key.base_url,
                    renew_in_s=round(token.use_until - started),
                )
                return token
        if status in {408, 429} or status >= 500 or status < 400:
            raise (ServiceNowThrottled if status == 429 else ServiceNowUnavailable)(
                INVALID_RESPONSE if status < 400 else str(status),
                f"ServiceNow's token endpoint answered {status} to the {kind} grant"
                + (
                    " without an access token: the instance may be hibernating or a proxy may "
                    "stand in front of it"
                    if status < 400
                    else _error_text(response)
                ),
                status=status,
                retry_after=_retry_after(response),
                never_sent=True,
            )
        raise _Refused(status, response)


def _grant(base_url: str, auth: OAuthClientCredentials | OAuthPassword) -> _Grant:
    secret = auth.client_secret.get_secret_value()
    if isinstance(auth, OAuthPassword):
        password = auth.password.get_secret_value()
        key = TokenKey(
            base_url,
            auth.client_id,
            "password",
            auth.username,
            None,
            _fingerprint(secret, password),
        )
        form = {
            "grant_type": "password",
            "client_id": auth.client_id,
            "client_secret": secret,
            "username": auth.username,
            "password": password,
        }
        describe = f"the password grant (clientId {auth.client_id}, username {auth.username})"
        return _Grant(key, form, secret, describe, USER_GRANT_HINT)
    key = TokenKey(
        base_url, auth.client_id, "client_credentials", None, auth.scope, _fingerprint(secret)
    )
    form = {
        "grant_type": "client_credentials",
        "client_id": auth.client_id,
        "client_secret": secret,
    }
    if auth.scope is not None:
        form["scope"] = auth.scope
    describe = f"the client_credentials grant (clientId {auth.client_id})"
    return _Grant(key, form, secret, describe, CLIENT_CREDENTIALS_HINT)


def _identity(key: TokenKey) -> bytes:
    return _fingerprint(
        key.client_id, key.grant, key.username or "", key.scope or "", key.fingerprint.hex()
    )


def _fingerprint(*secrets: str) -> bytes:
    digest = hashlib.blake2b(key=_FINGERPRINT_SALT, digest_size=16)
    for secret in secrets:
        digest.update(secret.encode())
        digest.update(b"\0")
    return digest.digest()


class OAuthFlow(httpx.Auth):
    """httpx's auth hook for one job: bearer token from the cache, one fresh try after a 401."""

    def __init__(self, authenticator: Authenticator, grant: _Grant) -> None:
        self._authenticator = authenticator
        self._grant = grant

    async def _obtain(self, refresh: str | None) -> Token:
        return await self._authenticator.obtain(self._grant, refresh)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        tokens, key = self._authenticator.tokens, self._grant.key
        access, cached = await tokens.get(key, self._obtain)
        request.headers["Authorization"] = "Bearer " + access
        response = yield request
        if response.status_code != 401 or not cached:
            return
        # Revoked or expired early: a 401 means ServiceNow did nothing, so sending again is safe.
        # Read the answer first, so its connection is free while the new token is requested.
        await response.aread()
        tokens.drop(key, access)
        log.info("oauth_token_refused_by_servicenow", grant=key.grant, instance=key.base_url)
        access, _ = await tokens.get(key, self._obtain)
        request.headers["Authorization"] = "Bearer " + access
        yield request


class _Refused(Exception):
    """The token endpoint refused the grant (a 4xx other than 408 and 429)."""

    def __init__(self, status: int, response: httpx.Response) -> None:
        super().__init__(status)
        self.status = status
        self.body = _oauth_error(response)
        parts = [self.body.get("error"), self.body.get("error_description")]
        said = ": ".join(str(part) for part in parts if part)
        self.reason = f"{status} {said}" if said else str(status)


def _oauth_error(response: httpx.Response) -> dict[str, Any]:
    """`error` and `error_description` of a token endpoint's refusal, cut short; nothing else."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return {}
    return {
        name: str(body[name])[:DESCRIPTION_LIMIT]
        for name in ("error", "error_description")
        if body.get(name)
    }


def _error_text(response: httpx.Response) -> str:
    error = _oauth_error(response)
    said = ": ".join(error.values())
    return f" ({said})" if said else ""


def _retry_after(response: httpx.Response) -> float | None:
    # In seconds or as an HTTP date, as for the Table API (docs/contract.md §6).
    return parse_retry_after(response.headers.get("Retry-After"))


def _token(response: httpx.Response, started: float, refresh: str | None) -> Token | None:
    """The token of a 200 answer, or None when the answer holds none (a login or hibernation page)."""
    try:
        body = response.json()
    except ValueError:
        return None
    access = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(access, str) or not access:
        return None
    lifetime = _seconds(body.get("expires_in"))
    issued_refresh = body.get("refresh_token")
    return Token(
        access=access,
        use_until=started + lifetime - min(RENEW_BEFORE, lifetime / 10),
        # A refresh within the refresh token's lifetime may answer without a new one: keep ours.
        refresh=issued_refresh if isinstance(issued_refresh, str) and issued_refresh else refresh,
    )


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        return DEFAULT_LIFETIME
    if isinstance(value, int | float):
        return max(float(value), 0.0)
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    return DEFAULT_LIFETIME


def basic_header(auth: BasicAuthentication) -> str:
    """`Basic base64(user:password)`, UTF-8 encoded as httpx's own BasicAuth does."""
    pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def tls_context(
    *,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    client_key_password: str | None = None,
    ca_bundle: Path | None = None,
) -> ssl.SSLContext | None:
    """The SSL context for calls to ServiceNow; None keeps httpx's default (certifi's roots).

    `ca_bundle` replaces the trusted roots (a company CA, a test CA); `client_cert` (a PEM file that
    may hold the key too) and `client_key` present a client certificate on every connection.
    Raises ValueError, naming the setting, when a file cannot be loaded.
    """
    if client_cert is None and client_key is None and ca_bundle is None:
        return None
    if client_key is not None and client_cert is None:
        raise ValueError("SERVICENOW_CLIENT_KEY is set without SERVICENOW_CLIENT_CERT")
    cafile = str(ca_bundle) if ca_bundle is not None else certifi.where()
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"SERVICENOW_CA_BUNDLE {ca_bundle} holds no usable PEM certificates ({error})"
        ) from None
    if client_cert is not None:
        try:
            context.load_cert_chain(client_cert, client_key, password=client_key_password)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"the client certificate {client_cert} and key {client_key or '(in the same file)'} "
                f"cannot be loaded ({_ssl_reason(error)}): check SERVICENOW_CLIENT_CERT, "
                "SERVICENOW_CLIENT_KEY and SERVICENOW_CLIENT_KEY_PASSWORD"
            ) from None
    return context


def _ssl_reason(error: OSError) -> str:
    return str(getattr(error, "reason", None) or error.strerror or error)
