"""A ServiceNow Table API emulator: a real HTTP server on loopback for tests, benchmarks and demos.

It answers `/api/now[/v1|/v2]/table/{table}[/{sys_id}]` the way a ServiceNow instance does (as ServiceNow's
REST API reference documents it, and as seen on real instances): the JSON envelopes and exact error
bodies, basic authentication, OAuth 2.0 (`/oauth_token.do`, bearer tokens, see `oauth`), API keys
(`x-sn-apikey`), optionally over TLS with client certificates (`ssl_context`), string-typed
records with `number` and `sys_*` fields, encoded
queries, pagination headers, display values and reference links; rows hidden by ACLs after the
page limit (`hidden_sys_ids`: short pages in the middle, X-Total-Count still counting them); the
Aggregate API (`/api/now[/v1]/stats/{table}`, `_aggregate.py`) and the Batch API
(`/api/now/v1/batch`, `_batch.py`, its limits and knobs under `batch`). Tests program faults
(`Fault`), inspect every request (`RecordedRequest`) and the stored records, and wait for
requests without sleeping.

    async with ServiceNowEmulator(users={"admin": "secret"}) as emulator:
        client = httpx.AsyncClient(base_url=emulator.base_url, auth=("admin", "secret"))
        emulator.inject(Fault.rate_limited(retry_after=5, method="POST"))
        ...

A busy instance: `capacity=Capacity(slots=16, queue=50)` serves 16 requests at once (each taking
`latency`), queues 50 and answers 429 beyond; `rate_limit_rules=[RateLimitRule(1000)]` allows each
user 1000 requests an hour, with ServiceNow's `X-RateLimit-*` headers (see `_capacity`).

Standalone (demo mode, docker-compose):
`python -m servicenow_emulators.table_api --host 0.0.0.0 --port 8089 --user admin:admin`
(`--capacity-slots 16 --capacity-queue 50 --latency 0.05`, `--rate-limit 1000` for a busy one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote

from aiohttp import web

from ._aggregate import stats
from ._attachments import AttachmentApi
from ._batch import BatchApi
from ._capacity import Capacity, RateLimitRule, Throttling
from ._rest import ApiError
from ._table_clock import InstanceClock, parse_stamp, stamp_of
from ._table_faults import (
    HIBERNATION_PAGE,
    Fault,
    FaultKind,
    FaultMatch,
    rate_limit_rule_id,
    truncated_json_body,
)
from ._table_oauth import TOKEN_PATH, OAuthClient, OAuthServer, TokenRequest
from ._table_query import InvalidQueryPolicy
from ._table_schema import Dynamic, Field, FieldType, TableSchema
from ._table_store import DisplayMode, Record, TableStore

__all__ = [
    "MAX_BODY_BYTES",
    "ApiKeyChecker",
    "AuthResult",
    "BasicAuthChecker",
    "BearerChecker",
    "Capacity",
    "CredentialChecker",
    "Dynamic",
    "Fault",
    "FaultKind",
    "FaultMatch",
    "Field",
    "FieldType",
    "InstanceClock",
    "InvalidQueryPolicy",
    "OAuthClient",
    "OAuthServer",
    "RateLimitRule",
    "RecordedRequest",
    "ServiceNowEmulator",
    "TokenRequest",
    "main",
]

MAX_BODY_BYTES = 10 * 1024 * 1024  # glide.rest.max_content_length default
DEFAULT_LIMIT = 10000  # sysparm_limit default per current docs
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"

# Headers a real instance sends on every REST answer (reference A4, recording R1).
_STATIC_HEADERS: Mapping[str, str] = {
    "Server": "ServiceNow",
    "Cache-Control": "no-cache,no-store,must-revalidate,max-age=-1",
    "Pragma": "no-store,no-cache",
    "Expires": "0",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Server-Timing": "sem_wait;dur=0, sesh_wait;dur=0",
}
_COLLECTION_METHODS = ("GET", "HEAD", "POST")
_RECORD_METHODS = ("GET", "HEAD", "PUT", "PATCH", "DELETE")
_ROUTE_COLLECTION = "sn-table-collection"
_ROUTE_RECORD = "sn-table-record"
_NOT_FOUND_DETAIL = "Record doesn't exist or ACL restricts the record retrieval"
_DATE_LITERAL = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_V1_EMPTY_DETAIL = "Records matching query not found. Check query parameter or offset parameter"


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def error_body(message: str, detail: str | None) -> bytes:
    """ServiceNow's error envelope, used by every error the REST layer produces."""
    return _json_bytes({"error": {"message": message, "detail": detail}, "status": "failure"})


def _error(
    status: int, message: str, detail: str | None, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.Response(status=status, body=error_body(message, detail))
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    if headers:
        response.headers.update(headers)
    return response


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=_json_bytes(payload))
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    if headers:
        response.headers.update(headers)
    return response


# -- authentication ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What one credential checker concluded about a request.

    `user` set: accepted as that user. `challenge` set: the request carried credentials of
    this checker's kind and they were wrong; the 401 names this scheme in `WWW-Authenticate`
    (`BASIC`, `BEARER`). Neither: the request carried no credentials of this kind.
    """

    user: str | None = None
    challenge: str | None = None


NOT_PRESENTED = AuthResult()


class CredentialChecker(Protocol):
    """A pluggable credential check (basic today; bearer tokens and `x-sn-apikey` later).

    The emulator asks its checkers in order; the first `AuthResult` with a `user` wins.
    """

    def __call__(self, request: web.Request) -> AuthResult: ...


class BasicAuthChecker:
    """HTTP basic authentication against a live `username → password` mapping."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = users

    def __call__(self, request: web.Request) -> AuthResult:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return NOT_PRESENTED
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return AuthResult(challenge="BASIC")
        name, sep, password = decoded.partition(":")
        if sep and name in self.users and self.users[name] == password:
            return AuthResult(user=name)
        return AuthResult(challenge="BASIC")


class BearerChecker:
    """`Authorization: Bearer <token>` with an unexpired, unrevoked token of `oauth`."""

    def __init__(self, oauth: OAuthServer) -> None:
        self.oauth = oauth

    def __call__(self, request: web.Request) -> AuthResult:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return NOT_PRESENTED
        token = self.oauth.valid(value.strip(), "access")
        return AuthResult(user=token.user) if token else AuthResult(challenge="BEARER")


class ApiKeyChecker:
    """`x-sn-apikey` as a header or a query parameter, one of `oauth.api_keys`."""

    def __init__(self, oauth: OAuthServer) -> None:
        self.oauth = oauth

    def __call__(self, request: web.Request) -> AuthResult:
        key = request.headers.get("x-sn-apikey") or request.query.get("x-sn-apikey")
        if key is None:
            return NOT_PRESENTED
        user = self.oauth.api_keys.get(key)
        # An unknown key names no scheme of its own: the 401 carries the default challenge.
        return AuthResult(user=user) if user else NOT_PRESENTED


# -- recording --------------------------------------------------------------------------------


@dataclass(slots=True)
class RecordedRequest:
    """One request as the emulator received it.

    `headers` has lower-case names. `query` holds the query parameters (the first value of a
    repeated one). `body` is the parsed JSON body, or None when there was none or it was not
    JSON. `user` is the authenticated user (None when no credential checker accepted the
    request). `status` is the status the emulator answered (None while in flight, or when a
    fault dropped the connection before an answer); `fault` is the kind of the fault that hit
    the request, if any.
    """

    method: str
    path: str
    table: str | None
    sys_id: str | None
    api_version: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    user: str | None
    transaction_id: str
    status: int | None = None
    fault: FaultKind | None = None


class _Drop(Exception):
    """Close the connection without (or partway through) an answer."""


# -- the emulator -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """A Table API request past routing, authentication and body parsing."""

    request: web.Request
    method: str
    table: str
    sys_id: str | None
    version: str | None
    user: str
    body: Any
    body_invalid: bool
    api: str = "table"  # or "stats": the Aggregate API


class ServiceNowEmulator:
    """An emulated ServiceNow instance serving the Table API over real HTTP.

    `users` maps user names to passwords for basic auth (each also gets a `sys_user` record,
    so `opened_by` and `caller_id` can point at it); `latency` adds seconds to every request;
    `invalid_query` decides what a query on an unknown field does; `credential_checkers`
    replaces the default basic, bearer and API key checkers. `oauth` is the OAuth provider
    (clients, API keys, issued tokens, token request counts); its tokens expire on `clock`.
    With `ssl_context` the emulator serves HTTPS (and may require client certificates).
    `wall_clock` is the instance's own time: `sys_*_on` stamps and the `Date` header read it,
    and tests may set and advance it.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        invalid_query: InvalidQueryPolicy = InvalidQueryPolicy.IGNORE,
        max_body_bytes: int = MAX_BODY_BYTES,
        credential_checkers: Sequence[CredentialChecker] | None = None,
        clock: Callable[[], float] = time.monotonic,
        ssl_context: ssl.SSLContext | None = None,
        capacity: Capacity | None = None,
        rate_limit_rules: Sequence[RateLimitRule] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.invalid_query = invalid_query
        self.max_body_bytes = max_body_bytes
        self.ssl_context = ssl_context
        self.users: dict[str, str] = {}
        self.oauth = OAuthServer(self.users, clock=clock)
        self.credential_checkers: list[CredentialChecker] = (
            list(credential_checkers)
            if credential_checkers is not None
            else [
                BasicAuthChecker(self.users),
                BearerChecker(self.oauth),
                ApiKeyChecker(self.oauth),
            ]
        )
        # Paths answered without authentication.
        self.public_paths: set[str] = {TOKEN_PATH}
        # sys_ids that are counted in X-Total-Count and take a slot of the page but are never
        # returned: rows a real instance removes by ACL after applying sysparm_limit.
        self.hidden_sys_ids: set[str] = set()
        # The Aggregate API answers 403 when any row of the table is hidden (as ServiceNow does
        # from Washington DC on); by default it counts hidden rows, as GlideAggregate does.
        self.aggregate_needs_every_row = False
        self.batch = BatchApi(_error)
        # Seconds east of UTC in which a date-time literal of a query is read (0: as UTC, what
        # ServiceNow documents for a plain literal); lets tests play an instance that differs.
        self.date_literal_offset = 0
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.wall_clock = InstanceClock()
        self._store = TableStore(self.wall_clock.stamp)
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._base_url: str | None = None
        for name, password in (users if users is not None else {"admin": "admin"}).items():
            self.add_user(name, password)
        # Capacity and rate-limit rules; `throttling.counts` says what they did.
        self.throttling = Throttling(capacity, rate_limit_rules, clock=self.wall_clock.now)
        self.app = web.Application(
            middlewares=[self.throttling.middleware, self._pipeline],
            client_max_size=max_body_bytes + 1,
        )
        for prefix in ("/api/now", "/api/now/{version:v1|v2}"):
            self.app.router.add_route("*", prefix + "/table/{table}", _unreachable)
            self.app.router.add_route("*", prefix + "/table/{table}/{sys_id}", _unreachable)
            self.app.router.add_route("*", prefix + "/{api:stats}/{table}", _unreachable)
        self.app.router.add_post("/api/now/v1/batch", self._batch)
        self.app.router.add_post(TOKEN_PATH, self.oauth.token_endpoint)
        # The Attachment API (`_attachments.py`), on the same records.
        self.attachments = AttachmentApi(self._store, lambda r: self._authenticate(r).user)
        self.attachments.add_routes(self.app.router)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http(s)://127.0.0.1:<port>`, the instance URL clients use (valid after `start`)."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not running; await start() first")
        return self._base_url

    async def start(self) -> str:
        """Listen (on `port`, or a free one the first time) and return the base URL.

        After `stop`, `start` listens again on the same port, so a test can make the instance
        unreachable for a while. Add routes to `app` before the first start.
        """
        if self._runner is not None:
            return self.base_url
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
            self.host, self.host
        )
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.ssl_context is not None else "http"
        self._base_url = f"{scheme}://{host}:{self.port}"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening; requests held by a delay fault are dropped, not answered."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()
        self._base_url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- data -------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, **fields: str) -> Record:
        """Accept `name:password` for basic auth and give the user a `sys_user` record."""
        self.users[name] = password
        existing = self._store.user_sys_id(name)
        if existing:
            return dict(self._store.rows["sys_user"][existing])
        values: dict[str, object] = {"user_name": name, "name": name}
        if name == "admin":
            values.update(first_name="System", last_name="Administrator")
            values["name"] = "System Administrator"
        values.update(fields)
        return self.insert("sys_user", values)

    def add_table(
        self,
        name: str,
        fields: Iterable[Field | str] = (),
        *,
        number_prefix: str | None = None,
        display_field: str | None = None,
    ) -> None:
        """Create a table (plain strings are string fields; sys_* fields come with it), or add
        fields to an existing one. Names must be lower case, `[a-z0-9_]+`."""
        self._store.add_table(
            TableSchema.build(
                name, fields, number_prefix=number_prefix, display_field=display_field
            )
        )

    @property
    def tables(self) -> list[str]:
        """The names of every table the instance knows."""
        return list(self._store.schemas)

    def insert(self, table: str, fields: Mapping[str, object], *, user: str = "admin") -> Record:
        """Seed a record (a copy is returned). Defaults, numbering, sys_* fields and business
        rules (incident priority from impact and urgency, `active` from the state) fill in what
        `fields` leaves out; what it gives is kept as given, sys_* fields (even sys_id)
        included. Unknown fields raise KeyError."""
        if table not in self._store.schemas:
            raise KeyError(f"unknown table {table!r}; add_table() it first")
        return dict(self._store.insert(table, fields, user=user, from_rest=False))

    def update(self, table: str, sys_id: str, fields: Mapping[str, object]) -> Record:
        """Change stored fields directly (no sys_* bookkeeping); KeyError if absent."""
        record = self._store.update(table, sys_id, fields, user="admin", from_rest=False)
        if record is None:
            raise KeyError(f"no {table} record {sys_id}")
        return dict(record)

    def write(
        self,
        table: str,
        fields: Mapping[str, object],
        *,
        sys_id: str | None = None,
        user: str = "admin",
        updated_on: float | str | None = None,
    ) -> Record:
        """Create (no `sys_id`) or update a record as a REST write does: business rules and
        sys_* bookkeeping, stamped by `wall_clock`; a copy is returned. `updated_on` (epoch
        seconds or a stored stamp, in the past) makes it a late commit: a transaction that
        began then and becomes visible only now. KeyError for an unknown record."""
        stamp = stamp_of(updated_on) if isinstance(updated_on, float | int) else updated_on
        if sys_id is None:
            record = self._store.insert(table, fields, user=user, from_rest=True, updated_on=stamp)
        else:
            found = self._store.update(
                table, sys_id, fields, user=user, from_rest=True, updated_on=stamp
            )
            if found is None:
                raise KeyError(f"no {table} record {sys_id}")
            record = found
        return dict(record)

    def delete(self, table: str, sys_id: str) -> bool:
        """Remove a stored record; False when there was none."""
        return self._store.delete(table, sys_id)

    def user_sys_id(self, user_name: str) -> str:
        """The sys_id of the `sys_user` record with this `user_name` ("" when there is none)."""
        return self._store.user_sys_id(user_name)

    def records(self, table: str) -> list[Record]:
        """Copies of every stored record of `table`, in insertion order."""
        return [dict(r) for r in self._store.rows[table].values()]

    def record(self, table: str, sys_id: str) -> Record | None:
        """A copy of one stored record, or None."""
        found = self._store.rows[table].get(sys_id)
        return None if found is None else dict(found)

    def seed_demo_data(self) -> None:
        """A few users, a group, a CI and incidents, so the demo shows references resolving."""
        abel = self.insert(
            "sys_user",
            {
                "user_name": "abel.tuter",
                "first_name": "Abel",
                "last_name": "Tuter",
                "name": "Abel Tuter",
                "email": "abel.tuter@example.com",
            },
        )
        beth = self.insert(
            "sys_user",
            {
                "user_name": "beth.anglin",
                "first_name": "Beth",
                "last_name": "Anglin",
                "name": "Beth Anglin",
                "email": "beth.anglin@example.com",
            },
        )
        group = self.insert("sys_user_group", {"name": "Service Desk"})
        server = self.insert("cmdb_ci", {"name": "mail-server-01", "ip_address": "10.0.0.25"})
        for short, state, impact in (
            ("Email server not responding", "2", "1"),
            ("Cannot connect to VPN", "1", "2"),
            ("Printer out of toner", "6", "3"),
        ):
            self.insert(
                "incident",
                {
                    "short_description": short,
                    "state": state,
                    "impact": impact,
                    "urgency": impact,
                    "caller_id": abel["sys_id"],
                    "assigned_to": beth["sys_id"],
                    "assignment_group": group["sys_id"],
                    "cmdb_ci": server["sys_id"],
                },
            )

    # -- faults -----------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each request takes the first unexhausted one that matches it."""
        self.faults.extend(faults)

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        self.faults.clear()

    def _take_fault(
        self, method: str, table: str | None, path: str, query: Mapping[str, str]
    ) -> Fault | None:
        for fault in self.faults:
            if not fault.exhausted and fault.matches(method, table, path, query):
                fault.hits += 1
                if fault.exhausted:
                    self.faults.remove(fault)
                return fault
        return None

    # -- recorded requests ------------------------------------------------------------------

    def clear_requests(self) -> None:
        """Forget the recorded requests (counts in `wait_for_requests` start again at 0)."""
        self.requests.clear()

    # A default deadline (ASYNC109): a test waiting for a request that never comes fails
    # instead of hanging the suite.
    async def wait_for_requests(
        self,
        count: int,
        *,
        timeout: float | None = 10.0,  # noqa: ASYNC109
    ) -> list[RecordedRequest]:
        """Wait until at least `count` requests were received; returns all recorded so far.

        Requests are recorded when they arrive (after authentication), before any delay.
        """
        await self._wait(lambda: len(self.requests) >= count, timeout)
        return list(self.requests)

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool] = lambda r: True,
        *,
        timeout: float | None = 10.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """Wait for (or find) the first recorded request that satisfies `predicate`."""
        found: list[RecordedRequest] = []

        def check() -> bool:
            for recorded in self.requests:
                if predicate(recorded):
                    found.append(recorded)
                    return True
            return False

        await self._wait(check, timeout)
        return found[0]

    async def _wait(self, check: Callable[[], bool], deadline: float | None) -> None:
        if check():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (check, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(deadline):
                await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _record(self, recorded: RecordedRequest) -> None:
        self.requests.append(recorded)
        if self._waiters:
            for check, future in list(self._waiters):
                if not future.done() and check():
                    future.set_result(None)

    # -- request pipeline -------------------------------------------------------------------

    @web.middleware
    async def _pipeline(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every request: read the body, authenticate, record, add latency, apply a fault,
        answer, and put ServiceNow's headers on the answer."""
        transaction_id = os.urandom(6).hex()
        match_info = request.match_info
        table = match_info.get("table")
        sys_id = match_info.get("sys_id")
        version = match_info.get("version")
        method = request.headers.get("X-HTTP-Method-Override", request.method).upper()

        streamed = self.attachments.reads_own_body(request)  # an upload reads its own body
        body, body_invalid, oversize = (
            (None, False, None) if streamed else await self._read_body(request)
        )
        auth = self._authenticate(request)
        recorded = RecordedRequest(
            method=method,
            path=request.path,
            table=table,
            sys_id=sys_id,
            api_version=version,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            user=auth.user,
            transaction_id=transaction_id,
        )
        self._record(recorded)

        refusal = self.throttling.refusal(request, auth.user)
        if self.latency > 0 and refusal is None:
            await asyncio.sleep(self.latency)
        fault = refusal or self._take_fault(method, table, request.path, request.query)
        if fault is not None:
            recorded.fault = fault.kind

        async def answer() -> web.StreamResponse:
            if auth.user is None and request.path not in self.public_paths:
                return _error(
                    401,
                    "User Not Authenticated",
                    "Required to provide Auth information",
                    {"WWW-Authenticate": f'{auth.challenge or "BASIC"} realm="Service-now"'},
                )
            if oversize is not None:
                return _error(
                    400,
                    "Exception while reading request",
                    f"Rejected large REST payload with content-length = {oversize} bytes. "
                    f"Max allowed: {self.max_body_bytes} bytes.",
                )
            if table is None:
                routing_error = match_info.http_exception
                if routing_error is None:
                    return await handler(request)  # a route added to `app`, e.g. OAuth, batch
                if routing_error.status == 405:
                    return _error(
                        405, "Method not Supported", f"{method} method not supported for API"
                    )
                return _error(400, "Requested URI does not represent any resource", None)
            call = _Call(
                request,
                method,
                table,
                sys_id,
                version,
                auth.user or "",
                body,
                body_invalid,
                match_info.get("api", "table"),
            )
            return self._answer_call(call)

        try:
            response = await self._apply_fault(request, fault, answer)
        except _Drop:
            response = web.Response()  # never reaches the client: the transport is closed
            recorded.status = None
            return response
        response.headers["Date"] = self.wall_clock.http_date()
        response.headers["X-Transaction-ID"] = transaction_id
        response.headers.update(self.throttling.headers(request))
        response.headers["X-Is-Logged-In"] = "true" if auth.user else "false"
        for name, value in _STATIC_HEADERS.items():
            response.headers.setdefault(name, value)
        recorded.status = response.status
        return response

    async def _read_body(self, request: web.Request) -> tuple[Any, bool, int | None]:
        """(parsed JSON or None, whether the body was not JSON, size when over the limit)."""
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            # rejected on the header alone, as ServiceNow does, without reading the body
            return None, False, length
        if not request.body_exists:
            return None, False, None
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return None, False, length if length is not None else self.max_body_bytes + 1
        return (*_parse_json(raw), None)

    def _authenticate(self, request: web.Request) -> AuthResult:
        challenge: str | None = None
        for checker in self.credential_checkers:
            result = checker(request)
            if result.user is not None:
                return result
            challenge = challenge or result.challenge
        return AuthResult(challenge=challenge)

    async def _apply_fault(
        self,
        request: web.Request,
        fault: Fault | None,
        answer: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if fault is None:
            return await answer()
        kind = fault.kind
        if kind is FaultKind.ERROR:
            return _fault_error(fault)
        if kind is FaultKind.HIBERNATING:
            page = web.Response(status=200, text=HIBERNATION_PAGE)
            page.headers["Content-Type"] = "text/html;charset=UTF-8"
            return page
        if kind is FaultKind.DROP_BEFORE:
            self._close(request, rst=fault.rst)
            raise _Drop
        if kind is FaultKind.DELAY and not fault.process_first:
            await self._pause(request, fault.seconds)
            return await answer()
        response = await answer()
        if kind is FaultKind.DELAY:
            await self._pause(request, fault.seconds)
            return response
        return await self._spoil(request, fault, response)

    async def _spoil(
        self, request: web.Request, fault: Fault, response: web.StreamResponse
    ) -> web.StreamResponse:
        """Faults that strike after the request was processed."""
        if fault.kind is FaultKind.DROP_AFTER:
            self._close(request, rst=fault.rst)
            raise _Drop
        body = response.body if isinstance(response, web.Response) else None
        data = body if isinstance(body, bytes) else b""
        if fault.kind is not FaultKind.CONNECTION_RESET:
            if fault.kind is FaultKind.TRUNCATED_JSON:
                data = truncated_json_body(data)
            else:
                data = data[: len(data) // 2]
            spoiled = web.Response(status=response.status, body=data)
            spoiled.headers["Content-Type"] = JSON_CONTENT_TYPE
            return spoiled
        # the status line, headers and half the body, then the connection goes
        stream = web.StreamResponse(status=response.status)
        stream.headers["Content-Type"] = JSON_CONTENT_TYPE
        stream.content_length = max(len(data), 2)
        with contextlib.suppress(ConnectionError):
            await stream.prepare(request)
            await stream.write(data[: len(data) // 2] or b"{")
        self._close(request, rst=fault.rst)
        raise _Drop

    async def _pause(self, request: web.Request, seconds: float) -> None:
        """Hold the answer; cancelled when the client goes away, cut short by `stop()`."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return
        self._close(request, rst=False)
        raise _Drop

    @staticmethod
    def _close(request: web.Request, *, rst: bool) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    # -- the Aggregate and Batch APIs (_aggregate.py, _batch.py) ------------------------------

    def _answer_call(self, call: _Call) -> web.Response:
        return self._stats(call) if call.api == "stats" else self._table(call)

    def _stats(self, call: _Call) -> web.Response:
        if call.method not in ("GET", "HEAD"):
            return _error(
                405, "Method not Supported", f"{call.method} method not supported for API"
            )
        if call.table not in self._store.schemas:
            return _error(400, f"Invalid table {call.table}", None)
        rows = self._rows(call)
        if isinstance(rows, web.Response):
            return rows
        try:
            answer = stats(
                self._store,
                call.table,
                call.request.query,
                rows=rows,
                hidden=self.hidden_sys_ids,
                strict_acl=self.aggregate_needs_every_row,
            )
        except ApiError as error:
            return _error(error.status, error.message, error.detail)
        return _json(200, answer)

    async def _batch(self, request: web.Request) -> web.Response:
        user = self._authenticate(request).user or ""
        try:
            return _json(200, await self.batch.run(request, user, self._dispatch))
        except ApiError as error:
            return _error(error.status, error.message, error.detail)

    async def _dispatch(self, request: web.Request, user: str, raw: bytes) -> web.Response:
        """Answer a request the Batch API carries as if it had come alone (Table, Aggregate)."""
        match_info = await self.app.router.resolve(request)
        table = match_info.get("table")
        if match_info.http_exception is not None or table is None:
            return _error(400, "Requested URI does not represent any resource", None)
        body, body_invalid = _parse_json(raw)
        call = _Call(
            request,
            request.method,
            table,
            match_info.get("sys_id"),
            match_info.get("version"),
            user,
            body,
            body_invalid,
            match_info.get("api", "table"),
        )
        return self._answer_call(call)

    # -- the Table API ----------------------------------------------------------------------

    def _table(self, call: _Call) -> web.Response:
        allowed = _RECORD_METHODS if call.sys_id is not None else _COLLECTION_METHODS
        if call.method not in allowed:
            return _error(
                405,
                "Method not Supported",
                f"{call.method} method not supported for API",
                {"Allow": ", ".join(allowed)},
            )
        if call.table not in self._store.schemas:
            return _error(400, f"Invalid table {call.table}", None)
        if call.method in ("GET", "HEAD"):
            return self._list(call) if call.sys_id is None else self._get(call)
        handlers = {"POST": self._create, "DELETE": self._delete}
        return handlers.get(call.method, self._update)(call)

    def _link_base(self, call: _Call) -> str:
        request = call.request
        version = f"{call.version}/" if call.version else ""
        return f"{request.scheme}://{request.host}/api/now/{version}table/"

    def _renderer(self, call: _Call) -> Callable[[Record], dict[str, Any]]:
        query = call.request.query
        return self._store.renderer(
            call.table,
            query.get("sysparm_fields"),
            DisplayMode.parse(query.get("sysparm_display_value")),
            query.get("sysparm_exclude_reference_link", "").lower() == "true",
            self._link_base(call),
        )

    def _visible(self, table: str, sys_id: str | None) -> Record | None:
        if sys_id is None or sys_id in self.hidden_sys_ids:
            return None
        return self._store.rows[table].get(sys_id)

    def _rows(self, call: _Call) -> list[Record] | web.Response:
        """The rows `sysparm_query` (or name=value pairs) selects, hidden ones included."""
        query = call.request.query.get("sysparm_query")
        if not query:
            query = self._pairs_query(call)
        elif self.date_literal_offset:
            query = _DATE_LITERAL.sub(
                lambda m: stamp_of(parse_stamp(m[0]) - self.date_literal_offset), query
            )
        if not query:
            return list(self._store.rows[call.table].values())
        compiled = self._store.compiled(call.table, query, self.invalid_query)
        if compiled.forbidden:
            return _error(
                403,
                "Insufficient rights to query records",
                "Field(s) present in the query do not have permission to be read",
            )
        return self._store.select(call.table, compiled)

    def _list(self, call: _Call) -> web.Response:
        params = call.request.query
        rows = self._rows(call)
        if isinstance(rows, web.Response):
            return rows
        total = len(rows)
        limit = _int_param(params.get("sysparm_limit"), DEFAULT_LIMIT)
        if limit <= 0:
            limit = DEFAULT_LIMIT
        offset = max(0, _int_param(params.get("sysparm_offset"), 0))
        page = rows[offset : offset + limit]
        if self.hidden_sys_ids:
            page = [r for r in page if r["sys_id"] not in self.hidden_sys_ids]
        if call.version == "v1" and not page:
            return _error(404, "No Record found", _V1_EMPTY_DETAIL)
        render = self._renderer(call)
        headers: dict[str, str] = {}
        if params.get("sysparm_no_count", "").lower() != "true":
            headers["X-Total-Count"] = str(total)
        if params.get("sysparm_suppress_pagination_header", "").lower() != "true":
            link = _link_header(call.request, total, offset, limit)
            if link:
                headers["Link"] = link
        return _json(200, {"result": [render(r) for r in page]}, headers)

    def _pairs_query(self, call: _Call) -> str:
        """`&active=true&state=2` (name=value pairs) as the encoded query they stand for."""
        fields = self._store.schemas[call.table].fields
        terms = [
            f"{name}={value.replace('^', '^^')}"
            for name, value in call.request.query.items()
            if name in fields
        ]
        return "^".join(terms)

    def _get(self, call: _Call) -> web.Response:
        record = self._visible(call.table, call.sys_id)
        if record is None:
            return _error(404, "No Record found", _NOT_FOUND_DETAIL)
        return _json(200, {"result": self._renderer(call)(record)})

    def _body_values(self, call: _Call) -> Mapping[str, object] | web.Response:
        body = call.body
        if call.body_invalid:
            return _error(400, "Exception while reading request", "The payload is not valid JSON.")
        if isinstance(body, list):
            # ServiceNow processes only the first element of an array body
            body = body[0] if body else {}
        if body is None:
            return {}
        if not isinstance(body, dict):
            return _error(400, "Exception while reading request", "The payload is not valid JSON.")
        return body

    def _create(self, call: _Call) -> web.Response:
        values = self._body_values(call)
        if isinstance(values, web.Response):
            return values
        params = call.request.query
        record = self._store.insert(
            call.table,
            values,
            user=call.user,
            from_rest=True,
            input_display_value=params.get("sysparm_input_display_value", "").lower() == "true",
        )
        location = f"{self._link_base(call)}{call.table}/{record['sys_id']}"
        if call.request.headers.get("X-no-response-body", "").lower() == "true":
            response = web.Response(status=201)
            response.headers["Location"] = location
            return response
        return _json(201, {"result": self._renderer(call)(record)}, {"Location": location})

    def _update(self, call: _Call) -> web.Response:
        if self._visible(call.table, call.sys_id) is None:
            return _error(404, "No Record found", _NOT_FOUND_DETAIL)
        values = self._body_values(call)
        if isinstance(values, web.Response):
            return values
        assert call.sys_id is not None
        record = self._store.update(
            call.table,
            call.sys_id,
            values,
            user=call.user,
            from_rest=True,
            input_display_value=call.request.query.get("sysparm_input_display_value", "").lower()
            == "true",
        )
        assert record is not None
        if call.request.headers.get("X-no-response-body", "").lower() == "true":
            return web.Response(status=200)
        return _json(200, {"result": self._renderer(call)(record)})

    def _delete(self, call: _Call) -> web.Response:
        if self._visible(call.table, call.sys_id) is None:
            return _error(404, "No Record found", _NOT_FOUND_DETAIL)
        assert call.sys_id is not None
        self._store.delete(call.table, call.sys_id)
        return web.Response(status=204)


def _fault_error(fault: Fault) -> web.Response:
    headers = dict(fault.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.rate_limit is not None:
        headers["X-RateLimit-Limit"] = str(fault.rate_limit)
        headers["X-RateLimit-Reset"] = str(int(time.time()) + (fault.retry_after or 0))
        headers["X-RateLimit-Rule"] = rate_limit_rule_id()
    return _error(fault.status, fault.message, fault.detail, headers)


async def _unreachable(request: web.Request) -> web.StreamResponse:
    """Table routes are answered by the pipeline middleware; this exists for the router."""
    raise web.HTTPNotFound


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    """(the parsed JSON body or None when empty, whether it was not JSON)."""
    if not raw:
        return None, False
    try:
        return json.loads(raw), False
    except ValueError:
        return None, True


def _int_param(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        return int(text.strip())
    except ValueError:
        return default


def _link_header(request: web.Request, total: int, offset: int, limit: int) -> str:
    """`<url>;rel="first",<url>;rel="prev",<url>;rel="next",<url>;rel="last"` (no spaces),
    or "" when everything fits on one page."""
    if offset == 0 and total <= limit:
        return ""
    kept = "".join(
        f"{quote(name, safe='')}={quote(value, safe='')}&"
        for name, value in request.query.items()
        if name not in ("sysparm_limit", "sysparm_offset")
    )
    base = (
        f"{request.scheme}://{request.host}{request.rel_url.raw_path}?{kept}sysparm_limit={limit}"
    )
    last = ((total - 1) // limit) * limit if total > 0 else 0
    links = [f'<{base}&sysparm_offset=0>;rel="first"']
    if offset > 0:
        links.append(f'<{base}&sysparm_offset={max(0, offset - limit)}>;rel="prev"')
    if offset + limit < total:
        links.append(f'<{base}&sysparm_offset={offset + limit}>;rel="next"')
    links.append(f'<{base}&sysparm_offset={last}>;rel="last"')
    return ",".join(links)


# -- command line -----------------------------------------------------------------------------


def _parse_user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD, got {text!r}")
    return name, password


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m servicenow_emulators.table_api",
        description="Serve an emulated ServiceNow Table API until SIGTERM or SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port to bind (default 8089)")
    parser.add_argument(
        "--user",
        type=_parse_user,
        action="append",
        metavar="NAME:PASSWORD",
        help="a basic-auth user; repeat for more (default admin:admin)",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument(
        "--invalid-query",
        choices=[p.value for p in InvalidQueryPolicy],
        default=InvalidQueryPolicy.IGNORE.value,
        help="what a query on an unknown field does (default ignore)",
    )
    parser.add_argument(
        "--demo-data", action="store_true", help="seed users, a group, a CI and incidents"
    )
    parser.add_argument(
        "--capacity-slots",
        type=int,
        default=0,
        help="requests served at once, each taking --latency (default 0: no limit)",
    )
    parser.add_argument(
        "--capacity-queue", type=int, default=50, help="requests queued beyond them (default 50)"
    )
    parser.add_argument(
        "--capacity-retry-after",
        type=int,
        default=1,
        help="Retry-After of the 429 when the queue is full (default 1)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="a rate-limit rule for all users: requests per window per user (default: none)",
    )
    parser.add_argument(
        "--rate-limit-window",
        type=int,
        default=3600,
        help="the rule's window in seconds (default 3600, an hourly rule)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    users = dict(args.user) if args.user else {"admin": "admin"}
    emulator = ServiceNowEmulator(
        users,
        host=args.host,
        port=args.port,
        latency=args.latency,
        invalid_query=InvalidQueryPolicy(args.invalid_query),
        capacity=(
            Capacity(args.capacity_slots, args.capacity_queue, args.capacity_retry_after)
            if args.capacity_slots
            else None
        ),
        rate_limit_rules=(
            [RateLimitRule(args.rate_limit, args.rate_limit_window)]
            if args.rate_limit is not None
            else []
        ),
    )
    if args.demo_data:
        emulator.seed_demo_data()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await emulator.start()
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"ServiceNow Table API emulator listening on http://{host}:{emulator.port} "
        f"(users: {', '.join(users)})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator on its own until SIGTERM or SIGINT (demo mode, docker-compose)."""
    asyncio.run(_serve(_arguments(argv)))


if __name__ == "__main__":
    main()
