"""Programmable faults for the ServiceNow Table API emulator.

Each `Fault` models one way a real instance, or the network in front of it, misbehaves
(reference A5 and A7): an error status with ServiceNow's JSON envelope (429 with rate-limit
headers, 500 transaction cancelled, 502/503, 403 ACL), a slow answer, the HTML page of a
hibernating developer instance, a 200 whose JSON is cut off (with or without the trailing
`"error"` object ServiceNow appends when a transaction is cancelled mid-stream), and
connections that drop before, during or after the request was processed.

A fault matches on method, table, path and query parameters (None matches anything) and fires
`times` times (None: until removed). Faults are consulted in the order they were injected.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

__all__ = ["Fault", "FaultKind", "FaultMatch"]


class FaultKind(enum.Enum):
    """What the emulator does instead of (or on top of) answering normally."""

    ERROR = "error"  # answer `status` with a JSON error body; the request is not processed
    DELAY = "delay"  # wait `seconds` (before or after processing), then answer normally
    HIBERNATING = "hibernating"  # 200 text/html "Instance Hibernating page"; not processed
    TRUNCATED_JSON = "truncated_json"  # processed; partial `result` then an `"error"` object
    TRUNCATED_BODY = "truncated_body"  # processed; the JSON body cut in half, nothing appended
    CONNECTION_RESET = "connection_reset"  # processed; headers and part of the body, then drop
    DROP_BEFORE = "drop_before"  # connection closed without an answer; not processed
    DROP_AFTER = "drop_after"  # processed (the write happened), then closed without an answer


class FaultMatch(TypedDict, total=False):
    """Keyword arguments every `Fault` constructor accepts to choose the requests it hits."""

    method: str | None
    table: str | None
    path: str | None
    query: Mapping[str, str] | None
    times: int | None


TRANSACTION_CANCELLED = "Transaction cancelled: maximum execution time exceeded"
TRANSACTION_CANCELLED_DETAIL = (
    "Transaction cancelled: maximum execution time exceeded. Check logs for error trace or "
    "enable glide.rest.debug property to verify REST request processing"
)

HIBERNATION_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ServiceNow Developers | Instance Hibernating page</title>
</head>
<body>
<h1>Your instance is hibernating</h1>
<p>Personal developer instances hibernate when they are not used. Sign in to the developer
portal to wake it up.</p>
<a href="https://developer.servicenow.com/dev.do">Wake up your instance</a>
</body>
</html>
"""


@dataclass(eq=False)
class Fault:
    """One programmed fault. Build it with a class method, e.g. `Fault.rate_limited(30)`.

    Matching: `method` (case-insensitive), `table`, `path` (the exact request path, e.g.
    `/api/now/table/incident`) and `query` (parameters the request carries with these values,
    e.g. `{"sysparm_offset": "10"}` for one page) narrow the requests it hits; None matches
    any. `times` is how many matching requests it hits (None: all of them until
    `clear_faults`). `hits` counts the requests it has hit so far.
    """

    kind: FaultKind
    method: str | None = None
    table: str | None = None
    path: str | None = None
    # query parameters the request must carry with these values (e.g. one page's offset)
    query: Mapping[str, str] | None = None
    times: int | None = 1
    status: int = 200
    message: str = ""
    detail: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_after: int | None = None
    rate_limit: int | None = None  # adds X-RateLimit-* headers when set
    seconds: float = 0.0
    process_first: bool = True  # DELAY only: the write happens before the wait
    rst: bool = False  # drops: send a TCP reset instead of an orderly close
    hits: int = 0

    def __post_init__(self) -> None:
        if self.method is not None:
            self.method = self.method.upper()
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1, or None for every matching request")

    @property
    def exhausted(self) -> bool:
        """Whether the fault has hit all the requests it was meant to."""
        return self.times is not None and self.hits >= self.times

    def matches(
        self, method: str, table: str | None, path: str, query: Mapping[str, str] | None = None
    ) -> bool:
        """Whether a request with this method, table, path and query is hit by the fault."""
        return (
            (self.method is None or self.method == method)
            and (self.table is None or self.table == table)
            and (self.path is None or self.path == path)
            and all((query or {}).get(k) == v for k, v in (self.query or {}).items())
        )

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        detail: str | None = None,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        **match: Unpack[FaultMatch],
    ) -> Fault:
        """Answer `status` with `{"error":{"message","detail"},"status":"failure"}`."""
        return cls(
            FaultKind.ERROR,
            status=status,
            message=message,
            detail=detail,
            retry_after=retry_after,
            headers=dict(headers or {}),
            **match,
        )

    @classmethod
    def rate_limited(
        cls, retry_after: int = 60, *, limit: int = 100, **match: Unpack[FaultMatch]
    ) -> Fault:
        """429 `Rate limit exceeded` with `Retry-After` and `X-RateLimit-Limit/Reset/Rule`."""
        return cls(
            FaultKind.ERROR,
            status=429,
            message="Rate limit exceeded",
            detail=f"Rate limit of {limit} requests per hour for Table API exceeded",
            retry_after=retry_after,
            rate_limit=limit,
            **match,
        )

    @classmethod
    def transaction_cancelled(cls, **match: Unpack[FaultMatch]) -> Fault:
        """500 `Transaction cancelled: maximum execution time exceeded` (the 60 s quota)."""
        return cls(
            FaultKind.ERROR,
            status=500,
            message=TRANSACTION_CANCELLED,
            detail=TRANSACTION_CANCELLED_DETAIL,
            **match,
        )

    @classmethod
    def bad_gateway(cls, **match: Unpack[FaultMatch]) -> Fault:
        """502 from the load balancer in front of the instance."""
        return cls(
            FaultKind.ERROR,
            status=502,
            message="Bad Gateway",
            detail="The instance did not answer the load balancer",
            **match,
        )

    @classmethod
    def service_unavailable(
        cls, retry_after: int | None = None, **match: Unpack[FaultMatch]
    ) -> Fault:
        """503 (node restarting or upgrading, semaphores exhausted), optionally `Retry-After`."""
        return cls(
            FaultKind.ERROR,
            status=503,
            message="Service Unavailable",
            detail="The instance is temporarily unable to handle the request",
            retry_after=retry_after,
            **match,
        )

    @classmethod
    def acl_denied(cls, **match: Unpack[FaultMatch]) -> Fault:
        """403 `User Not Authorized` / `Failed API level ACL Validation`."""
        return cls(
            FaultKind.ERROR,
            status=403,
            message="User Not Authorized",
            detail="Failed API level ACL Validation",
            **match,
        )

    @classmethod
    def delay(
        cls, seconds: float, *, process_first: bool = True, **match: Unpack[FaultMatch]
    ) -> Fault:
        """Answer late. With `process_first` the write is done before the wait, so a client
        that gives up still leaves a record behind (the duplicate-create case)."""
        return cls(FaultKind.DELAY, seconds=seconds, process_first=process_first, **match)

    @classmethod
    def hibernating(cls, **match: Unpack[FaultMatch]) -> Fault:
        """200 `text/html` page titled `… Instance Hibernating page`."""
        return cls(FaultKind.HIBERNATING, **match)

    @classmethod
    def truncated_json(cls, **match: Unpack[FaultMatch]) -> Fault:
        """Processed, then a 200 (or the real status) whose `result` is cut off and followed
        by `"error":{"message":"Transaction cancelled: …"}`: not valid JSON."""
        return cls(FaultKind.TRUNCATED_JSON, **match)

    @classmethod
    def truncated_body(cls, **match: Unpack[FaultMatch]) -> Fault:
        """Processed, then the real answer's body cut in half (a complete HTTP message)."""
        return cls(FaultKind.TRUNCATED_BODY, **match)

    @classmethod
    def connection_reset(cls, *, rst: bool = False, **match: Unpack[FaultMatch]) -> Fault:
        """Processed, then headers and half the body go out and the connection drops."""
        return cls(FaultKind.CONNECTION_RESET, rst=rst, **match)

    @classmethod
    def drop_before_processing(cls, *, rst: bool = False, **match: Unpack[FaultMatch]) -> Fault:
        """The connection closes without an answer; nothing was written."""
        return cls(FaultKind.DROP_BEFORE, rst=rst, **match)

    @classmethod
    def drop_after_processing(cls, *, rst: bool = False, **match: Unpack[FaultMatch]) -> Fault:
        """The request is processed (a POST inserts its record), then the connection closes
        without an answer: the client sees a network error for a write that happened."""
        return cls(FaultKind.DROP_AFTER, rst=rst, **match)


def rate_limit_rule_id() -> str:
    """A sys_id-shaped id for `X-RateLimit-Rule`."""
    return uuid.uuid4().hex


def truncated_json_body(body: bytes) -> bytes:
    """The body of a transaction cancelled mid-stream: part of `result`, then the error.

    Shaped after a recorded cmdb_ci response: whole records, one record cut off, stray
    characters, then `"error"` and `"status"`; no JSON parser accepts it.
    """
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    result = parsed.get("result") if isinstance(parsed, dict) else None
    records = result if isinstance(result, list) else [result] if result is not None else []
    kept = records[: len(records) // 2]
    cut = records[len(kept)] if len(kept) < len(records) else {}
    whole = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "," for r in kept)
    partial = json.dumps(cut, ensure_ascii=False, separators=(",", ":"))
    partial = partial[: max(1, len(partial) // 2)]
    error = json.dumps(
        {"detail": TRANSACTION_CANCELLED_DETAIL, "message": TRANSACTION_CANCELLED},
        separators=(",", ":"),
    )
    text = f'{{"result":[{whole}{partial}}}""],"error":{error},"status":"failure"}}'
    return text.encode()
