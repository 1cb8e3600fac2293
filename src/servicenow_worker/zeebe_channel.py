"""The gRPC channel to the Zeebe gateway, built from settings alone (pyzeebe reads no environment).

Four ways to reach a gateway, combinable where it makes sense:

* plaintext (the default: ``ZEEBE_ADDRESS=localhost:26500``, Camunda's local compose files);
* TLS, with the system's CAs or ``ZEEBE_CA_CERTIFICATE_PATH`` (``ZEEBE_TLS=true``, an ``https://``
  address, or a CA file turns it on);
* OAuth 2.0 client credentials (``ZEEBE_CLIENT_ID``/``_SECRET``/``ZEEBE_AUTHORIZATION_SERVER_URL``), over
  TLS or plaintext;
* Camunda SaaS (``CAMUNDA_CLUSTER_ID``): TLS to ``<id>.<region>.zeebe.camunda.io:443`` and OAuth with
  SaaS's token URL and audience.

OAuth is done here rather than by pyzeebe's ``create_oauth2_client_credentials_channel``: that one
fetches tokens with requests-oauthlib inside gRPC's metadata-plugin thread, refuses ``http://`` token
URLs (usual for a local Keycloak), and sends call credentials over secure channels only, so a
plaintext gateway such as ``zeebe:26500`` in Docker never gets its token
(`pyzeebe/channel/oauth_channel.py` in 4.7.0). Here an async token source (httpx) feeds an ``authorization`` metadata
interceptor, one interceptor object per call kind (grpc.aio files each interceptor under one kind
only), on TLS and plaintext channels alike. A token endpoint that cannot be reached surfaces as an
UNAVAILABLE call and refused credentials as UNAUTHENTICATED, so the job loop logs them and backs
off as for any gateway error; a token the gateway rejects is dropped and fetched anew.
"""

import asyncio
import ipaddress
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import grpc
import httpx
import structlog

from servicenow_worker import __version__
from servicenow_worker.settings import Settings

log = structlog.get_logger("servicenow_worker.zeebe")

# Transient gateway statuses are retried by gRPC itself, inside each call's deadline, so a blip does
# not reach the worker's own back-off (pyzeebe issue #140).
RETRY_SERVICE_CONFIG: Final = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "gateway_protocol.Gateway"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS: Final = (
    ("grpc.service_config", RETRY_SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 45_000),
    # Reconnect quickly after a gateway restart instead of gRPC's default of up to 2 minutes.
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
)

SAAS_DEFAULT_REGION: Final = "bru-2"
SAAS_TOKEN_URL: Final = "https://login.cloud.camunda.io/oauth/token"  # noqa: S105 - a URL
SAAS_AUDIENCE: Final = "zeebe.camunda.io"
TOKEN_REQUEST_TIMEOUT: Final = 10.0
# A token is renewed this long before it expires (at most a quarter of its lifetime).
TOKEN_RENEW_MARGIN: Final = 60.0
_SCHEMES: Final = {"http": False, "grpc": False, "https": True, "grpcs": True}


@dataclass(frozen=True)
class OAuthCredentials:
    token_url: str
    client_id: str
    client_secret: str
    audience: str | None
    scope: str | None

    def __repr__(self) -> str:  # never the secret
        return f"OAuthCredentials(token_url={self.token_url!r}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class ZeebeConnection:
    """Where and how the worker reaches the gateway, resolved from the settings."""

    address: str
    tls: bool
    ca_certificate: Path | None = None
    oauth: OAuthCredentials | None = None
    saas: bool = False

    @property
    def mode(self) -> str:
        """A short name for logs: plaintext, tls, plaintext+oauth, tls+oauth or saas."""
        if self.saas:
            return "saas"
        return ("tls" if self.tls else "plaintext") + ("+oauth" if self.oauth else "")


def resolve_connection(settings: Settings) -> ZeebeConnection:
    """The gateway address, transport security and credentials that `settings` ask for."""
    saas = settings.camunda_cluster_id is not None
    address, scheme_tls = _split_address(settings.zeebe_address)
    if saas and "zeebe_address" not in settings.model_fields_set:
        region = settings.camunda_cluster_region or SAAS_DEFAULT_REGION
        address = f"{settings.camunda_cluster_id}.{region}.zeebe.camunda.io:443"
    if saas or settings.zeebe_ca_certificate_path is not None:
        tls = True
    elif settings.zeebe_tls is not None:
        tls = settings.zeebe_tls
    else:
        tls = bool(scheme_tls)
    oauth = None
    if settings.zeebe_client_id is not None and settings.zeebe_client_secret is not None:
        oauth = OAuthCredentials(
            token_url=settings.zeebe_authorization_server_url or SAAS_TOKEN_URL,
            client_id=settings.zeebe_client_id,
            client_secret=settings.zeebe_client_secret.get_secret_value(),
            audience=settings.zeebe_token_audience or (SAAS_AUDIENCE if saas else None),
            scope=settings.zeebe_token_scope,
        )
    return ZeebeConnection(
        address=address,
        tls=tls,
        ca_certificate=settings.zeebe_ca_certificate_path,
        oauth=oauth,
        saas=saas,
    )


def _split_address(address: str) -> tuple[str, bool | None]:
    """`host:port` and the security its scheme names (`https://` TLS, `http://` plaintext)."""
    scheme, separator, rest = address.partition("://")
    if not separator:
        return address, None
    return rest.rstrip("/"), _SCHEMES[scheme.lower()]


def token_source(settings: Settings) -> "TokenSource | None":
    """The OAuth token source of the configured client, or None without one. One per worker:
    the gateway channel and Camunda's REST API (document store) share its cached token."""
    connection = resolve_connection(settings)
    if connection.oauth is None:
        return None
    return TokenSource(connection.oauth, ca_certificate=connection.ca_certificate)


def build_channel(settings: Settings, tokens: "TokenSource | None" = None) -> grpc.aio.Channel:
    """A channel to the gateway that `settings` name, authorised by `tokens` where given."""
    connection = resolve_connection(settings)
    _warn_if_credentials_travel_in_clear(connection)
    log.info(
        "zeebe_connection",
        address=connection.address,
        mode=connection.mode,
        ca_certificate=str(connection.ca_certificate) if connection.ca_certificate else None,
        oauth_url=connection.oauth.token_url if connection.oauth else None,
        tenant_ids=list(settings.zeebe_tenant_ids) or None,
    )
    interceptors: list[Any] = []
    if connection.oauth is not None:
        tokens = tokens or TokenSource(connection.oauth, ca_certificate=connection.ca_certificate)
        interceptors = bearer_token_interceptors(tokens)
    if not connection.tls:
        return grpc.aio.insecure_channel(
            connection.address, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    root_certificates = (
        connection.ca_certificate.read_bytes() if connection.ca_certificate is not None else None
    )
    return grpc.aio.secure_channel(
        connection.address,
        grpc.ssl_channel_credentials(root_certificates=root_certificates),
        options=CHANNEL_OPTIONS,
        interceptors=interceptors,
    )


def _warn_if_credentials_travel_in_clear(connection: ZeebeConnection) -> None:
    if connection.oauth is None:
        return
    if not connection.tls and not _is_loopback(connection.address.rpartition(":")[0]):
        log.warning(
            "zeebe_token_over_plaintext",
            address=connection.address,
            hint="the bearer token crosses the network unencrypted: set ZEEBE_TLS=true "
            "unless the gateway is only reachable on a private network",
        )
    token_url = urlsplit(connection.oauth.token_url)
    if token_url.scheme != "https" and not _is_loopback(token_url.hostname or ""):
        log.warning(
            "zeebe_token_url_plaintext",
            oauth_url=connection.oauth.token_url,
            hint="the client secret crosses the network unencrypted",
        )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenSource:
    """OAuth 2.0 client-credentials access tokens, fetched on demand and cached until near expiry.

    Concurrent callers share one fetch. Failures raise `grpc.aio.AioRpcError`, the error type every
    caller of a gateway call already handles: UNAUTHENTICATED when the token endpoint refuses the
    credentials, UNAVAILABLE when it cannot be reached or answers nonsense.
    """

    def __init__(self, credentials: OAuthCredentials, *, ca_certificate: Path | None) -> None:
        self._credentials = credentials
        self._ca_certificate = ca_certificate
        self._header: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def authorization(self) -> str:
        """`Bearer <token>`, fetching a token if there is none or it is about to expire."""
        header = self._header
        if header is not None and time.monotonic() < self._renew_at:
            return header
        async with self._lock:
            if self._header is None or time.monotonic() >= self._renew_at:
                await self._fetch()
            assert self._header is not None
            return self._header

    def reject(self, header: str) -> None:
        """The gateway refused `header`: the next call fetches a new token."""
        if self._header == header:
            log.warning("zeebe_token_rejected", oauth_url=self._credentials.token_url)
            self._header = None

    async def _fetch(self) -> None:
        credentials = self._credentials
        form = {
            "grant_type": "client_credentials",
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
        }
        if credentials.audience:
            form["audience"] = credentials.audience
        if credentials.scope:
            form["scope"] = credentials.scope
        try:
            async with httpx.AsyncClient(
                timeout=TOKEN_REQUEST_TIMEOUT,
                verify=self._verify(),
                trust_env=False,
                headers={"User-Agent": f"servicenow-worker/{__version__}"},
            ) as http:
                response = await http.post(
                    credentials.token_url, data=form, headers={"Accept": "application/json"}
                )
        except httpx.HTTPError as error:
            raise self._failure(
                grpc.StatusCode.UNAVAILABLE, f"unreachable ({type(error).__name__})"
            ) from None
        if response.status_code in {400, 401, 403}:
            raise self._failure(
                grpc.StatusCode.UNAUTHENTICATED,
                f"refused the client credentials of {credentials.client_id!r}: "
                f"{response.status_code} {_oauth_error(response)}",
            )
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(token, str) or not token:
            raise self._failure(
                grpc.StatusCode.UNAVAILABLE,
                f"answered {response.status_code} without an access_token",
            )
        lifetime = _lifetime(body)
        self._header = f"Bearer {token}"
        self._renew_at = time.monotonic() + lifetime - min(TOKEN_RENEW_MARGIN, lifetime / 4)
        self.fetches += 1
        log.info("zeebe_token_fetched", oauth_url=credentials.token_url, expires_in=lifetime)

    def _verify(self) -> ssl.SSLContext | bool:
        if self._ca_certificate is None:
            return True
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=self._ca_certificate)
        return context

    def _failure(self, code: grpc.StatusCode, problem: str) -> grpc.aio.AioRpcError:
        details = f"token endpoint {self._credentials.token_url} {problem}"
        log.warning("zeebe_token_failed", status=code.name, detail=details)
        return grpc.aio.AioRpcError(
            code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string=None
        )


def _lifetime(body: dict[str, Any]) -> float:
    expires_in = body.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    if isinstance(expires_in, str) and expires_in.isdigit() and int(expires_in) > 0:
        return float(expires_in)
    return 300.0  # no lifetime given: renew every five minutes


def _oauth_error(response: httpx.Response) -> str:
    """RFC 6749 `error` and `error_description`; never the request's secret."""
    try:
        body = response.json()
    except ValueError:
        return "(no OAuth error body)"
    if not isinstance(body, dict):
        return "(no OAuth error body)"
    parts = [str(body[key])[:200] for key in ("error", "error_description") if body.get(key)]
    return " - ".join(parts) or "(no OAuth error body)"


CallT = TypeVar("CallT")


def _with_authorization(details: grpc.aio.ClientCallDetails, header: str) -> Any:
    metadata = grpc.aio.Metadata()
    for key, value in details.metadata or ():
        if key != "authorization":
            metadata.add(key, value)
    metadata.add("authorization", header)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _BearerToken:
    """What every call kind's interceptor does: add the header, drop it if the gateway refuses it."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens
        self._checks: set[asyncio.Task[None]] = set()

    async def _call(
        self, details: grpc.aio.ClientCallDetails, start: Callable[[Any], Awaitable[CallT]]
    ) -> CallT:
        header = await self._tokens.authorization()
        call = await start(_with_authorization(details, header))
        add_done_callback = getattr(call, "add_done_callback", None)
        if add_done_callback is not None:
            add_done_callback(lambda finished: self._check(finished, header))
        return call

    def _check(self, call: Any, header: str) -> None:
        task = asyncio.ensure_future(self._reject_if_unauthenticated(call, header))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _reject_if_unauthenticated(self, call: Any, header: str) -> None:
        if await call.code() == grpc.StatusCode.UNAUTHENTICATED:
            self._tokens.reject(header)


class _UnaryUnary(_BearerToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._call(client_call_details, lambda d: continuation(d, request))


class _UnaryStream(_BearerToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._call(client_call_details, lambda d: continuation(d, request))


class _StreamUnary(_BearerToken, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await self._call(client_call_details, lambda d: continuation(d, request_iterator))


class _StreamStream(_BearerToken, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await self._call(client_call_details, lambda d: continuation(d, request_iterator))


def bearer_token_interceptors(tokens: TokenSource) -> list[Any]:
    """One interceptor per call kind: grpc.aio files an interceptor under its first kind only."""
    return [_UnaryUnary(tokens), _UnaryStream(tokens), _StreamUnary(tokens), _StreamStream(tokens)]
