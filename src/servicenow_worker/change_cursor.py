"""The `changes` cursor (docs/contract.md §10): where a change feed stands, as an opaque string.

A position is a point in ServiceNow's change order, (`sys_updated_on`, `sys_id`): every change at
or before it has been handed out. `sys_id` None means "the whole second": every change stamped
at or before `updated_on`.

The cursor is `v1.<payload>.<digest>`: the payload (base64url JSON) holds the position and a
fingerprint of the table and query it was made for; the digest is SHA-256 over the payload. This
makes a cursor tamper-evident, not secret: an edit by hand, a cut-off copy, or a cursor passed to a
task that watches another table or query is detected and refused. It is no signature: someone who
reads this code can make a valid cursor, which gains nothing that the `since` input does not
already give (a start position on a table the process can read anyway).
"""

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import SYS_ID

VERSION: Final = "v1"
STAMP_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
STAMP: Final = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
# Domain separation: a digest of some other string never passes for a cursor's.
_DIGEST_DOMAIN: Final = b"servicenow-worker changes cursor\n"
_DIGEST_BYTES: Final = 16
_WHAT_A_CURSOR_IS: Final = (
    "pass on the cursor of the previous changes result unchanged (an opaque string made for "
    "one table and query), or start again with since (an instant) or with neither (from now)"
)


@dataclass(frozen=True, order=True)
class Position:
    """A point in change order; `sys_id` None stands after every record of that second."""

    updated_on: str  # ServiceNow's stored form: UTC, `YYYY-MM-DD HH:MM:SS`
    sys_id: str | None = None

    @property
    def instant(self) -> float:
        """`updated_on` in epoch seconds."""
        return parse_stamp(self.updated_on)


def stamp_of(seconds: float) -> str:
    """Epoch seconds as ServiceNow stores a date-time (whole seconds, truncated)."""
    return datetime.fromtimestamp(int(seconds // 1), UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> float:
    """A stored date-time (UTC) in epoch seconds; ValueError when it is not one."""
    if not STAMP.fullmatch(text):
        raise ValueError(f"not a date-time of the form YYYY-MM-DD HH:MM:SS: {text!r}")
    return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC).timestamp()


def encode(position: Position, table: str, query: str | None) -> str:
    """The cursor for `position` in the feed of `table` filtered by `query`."""
    content = {"at": position.updated_on, "id": position.sys_id, "for": _scope(table, query)}
    payload = _b64(json.dumps(content, separators=(",", ":")).encode())
    return f"{VERSION}.{payload}.{_b64(_digest(payload))}"


def decode(cursor: str, table: str, query: str | None) -> Position:
    """The position a cursor holds; InputError (naming what is wrong) for anything else."""
    version, _, rest = cursor.strip().partition(".")
    if version != VERSION:
        if re.fullmatch(r"v\d+", version):
            raise _refused(f"was made by another version of the worker ({version})")
        raise _refused("is not a cursor")
    payload, _, digest = rest.partition(".")
    try:
        intact = _b64(_digest(payload)) == digest
        content: Any = json.loads(_unb64(payload)) if intact else None
    except (ValueError, binascii.Error):
        intact = False
    if not intact or not isinstance(content, dict):
        raise _refused("was changed or cut short")
    if content.get("for") != _scope(table, query):
        raise _refused("was made for another table or query")
    updated_on, sys_id = content.get("at"), content.get("id")
    if not isinstance(updated_on, str) or not STAMP.fullmatch(updated_on):
        raise _refused("holds no valid position")
    if sys_id is not None and (not isinstance(sys_id, str) or not SYS_ID.fullmatch(sys_id)):
        raise _refused("holds no valid position")
    return Position(updated_on, sys_id)


def _refused(problem: str) -> InputError:
    return InputError("cursor", f"{problem}: {_WHAT_A_CURSOR_IS}")


def _scope(table: str, query: str | None) -> str:
    return _b64(hashlib.sha256(f"{table}\n{query or ''}".encode()).digest()[:9])


def _digest(payload: str) -> bytes:
    return hashlib.sha256(_DIGEST_DOMAIN + payload.encode()).digest()[:_DIGEST_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
