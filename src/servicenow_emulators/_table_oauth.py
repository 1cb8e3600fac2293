"""OAuth 2.0 and API keys for the Table API emulator (reference A8).

`OAuthServer` answers `POST /oauth_token.do` (form-encoded only) for the `password`,
`refresh_token` and `client_credentials` grants, and keeps the tokens and API keys that the
credential checkers of `table_api` (`BearerChecker`, `ApiKeyChecker`) accept. Tokens are opaque
random strings; lifetimes are set per client and measured on `clock`, which tests may replace to
let tokens expire without waiting. Every token request is counted in `token_requests`.

As on ServiceNow: a password or client credentials request made while the client's token for that
user is still valid returns the same access token; a refresh returns a new access token and the
current refresh token; a refused grant answers 401 `{"error":"server_error",
"error_description":"access_denied"}`, whatever the reason.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

TOKEN_PATH = "/oauth_token.do"  # noqa: S105 (a path)
ACCESS_LIFETIME = 1800  # ServiceNow's defaults (reference A8)
REFRESH_LIFETIME = 8_640_000
GRANTS = ("password", "refresh_token", "client_credentials")
_FORM = "application/x-www-form-urlencoded"


@dataclass(slots=True)
class OAuthClient:
    """An application registry entry. `application_user` is its "OAuth Application User": the user
    a client credentials token acts as (without one, that grant is refused, as on ServiceNow)."""

    client_id: str
    client_secret: str
    application_user: str | None = None
    access_lifetime: int = ACCESS_LIFETIME
    refresh_lifetime: int = REFRESH_LIFETIME


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One request to `/oauth_token.do`: its grant, client, user and the status it got."""

    grant_type: str
    client_id: str | None
    username: str | None
    status: int


@dataclass(slots=True)
class IssuedToken:
    value: str
    kind: Literal["access", "refresh"]
    client_id: str
    user: str
    expires_at: float
    revoked: bool = False


class OAuthServer:
    """The instance's OAuth provider and API keys; `users` is the emulator's live user mapping."""

    def __init__(
        self, users: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.users = users
        self.clock = clock
        self.clients: dict[str, OAuthClient] = {}
        self.api_keys: dict[str, str] = {}
        # glide.oauth.inbound.client.credential.grant_type.enabled
        self.client_credentials_enabled = True
        self.token_requests: list[TokenRequest] = []
        # While set and not yet released, token answers wait for it (concurrency tests).
        self.hold: asyncio.Event | None = None
        self.tokens: dict[str, IssuedToken] = {}

    # -- set-up -----------------------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        *,
        application_user: str | None = None,
        access_lifetime: int = ACCESS_LIFETIME,
        refresh_lifetime: int = REFRESH_LIFETIME,
    ) -> OAuthClient:
        client = OAuthClient(
            client_id, client_secret, application_user, access_lifetime, refresh_lifetime
        )
        self.clients[client_id] = client
        return client

    def issue(
        self, user: str, *, lifetime: float = ACCESS_LIFETIME, value: str | None = None
    ) -> str:
        """An access token for `user`, issued outside `/oauth_token.do` (the `bearer` case: a token
        the caller got elsewhere). Not counted as a token request."""
        token = IssuedToken(
            value or secrets.token_urlsafe(32), "access", "", user, self.clock() + lifetime
        )
        self.tokens[token.value] = token
        return token.value

    def add_api_key(self, key: str, user: str) -> None:
        """Accept `key` in `x-sn-apikey` as `user` (a REST API Key record)."""
        self.api_keys[key] = user

    def revoke(self, *, refresh: bool = False) -> int:
        """Revoke every access token (and refresh token too with `refresh`); returns how many."""
        revoked = 0
        for token in self.tokens.values():
            if not token.revoked and (token.kind == "access" or refresh):
                token.revoked = True
                revoked += 1
        return revoked

    def count(self, grant_type: str | None = None) -> int:
        """Token requests received, of one grant or all."""
        return sum(
            1 for r in self.token_requests if grant_type is None or r.grant_type == grant_type
        )

    def valid(self, value: str, kind: Literal["access", "refresh"]) -> IssuedToken | None:
        token = self.tokens.get(value)
        if token is None or token.kind != kind or token.revoked or token.expires_at <= self.clock():
            return None
        return token

    # -- the token endpoint ---------------------------------------------------------------------

    async def token_endpoint(self, request: web.Request) -> web.Response:
        form = await request.post() if request.content_type == _FORM else None

        def field(name: str) -> str:
            return str(form.get(name, "")) if form is not None else ""

        grant, client_id = field("grant_type"), field("client_id") or None
        username = field("username") or None if grant == "password" else None
        if self.hold is not None:
            await self.hold.wait()
        if form is None:
            response = _oauth_error(400, "invalid_request", "form-encoded body required")
        elif grant not in GRANTS:
            response = _oauth_error(400, "unsupported_grant_type", f"{grant or 'none'}")
        else:
            response = self._grant(grant, field)
        self.token_requests.append(TokenRequest(grant, client_id, username, response.status))
        return response

    def _grant(self, grant: str, field: Callable[[str], str]) -> web.Response:
        client = self.clients.get(field("client_id"))
        if client is None or not secrets.compare_digest(
            client.client_secret.encode(), field("client_secret").encode()
        ):
            return _access_denied()
        if grant == "password":
            user, password = field("username"), field("password")
            if user not in self.users or self.users[user] != password:
                return _access_denied()
            return self._issue(client, user, refresh=True, reuse=True)
        if grant == "client_credentials":
            if not self.client_credentials_enabled or client.application_user is None:
                return _access_denied()
            return self._issue(
                client, client.application_user, refresh=False, reuse=True, scope=field("scope")
            )
        refresh = self.valid(field("refresh_token"), "refresh")
        if refresh is None or refresh.client_id != client.client_id:
            return _access_denied()
        return self._issue(client, refresh.user, refresh=True, reuse=False, keep=refresh)

    def _issue(
        self,
        client: OAuthClient,
        user: str,
        *,
        refresh: bool,
        reuse: bool,
        keep: IssuedToken | None = None,
        scope: str = "",
    ) -> web.Response:
        now = self.clock()
        access = next(
            (
                t
                for t in self.tokens.values()
                if reuse
                and t.kind == "access"
                and t.client_id == client.client_id
                and t.user == user
                and self.valid(t.value, "access")
            ),
            None,
        ) or self._new("access", client, user, now + client.access_lifetime)
        body: dict[str, object] = {
            "access_token": access.value,
            "scope": scope or "useraccount",
            "token_type": "Bearer",
            "expires_in": max(int(access.expires_at - now), 0),
        }
        if refresh:
            refresh_token = keep or self._new(
                "refresh", client, user, now + client.refresh_lifetime
            )
            body["refresh_token"] = refresh_token.value
        return _json(200, body)

    def _new(
        self, kind: Literal["access", "refresh"], client: OAuthClient, user: str, until: float
    ) -> IssuedToken:
        token = IssuedToken(secrets.token_urlsafe(32), kind, client.client_id, user, until)
        self.tokens[token.value] = token
        return token


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return _json(status, {"error_description": description, "error": error})


def _access_denied() -> web.Response:
    return _oauth_error(401, "server_error", "access_denied")
