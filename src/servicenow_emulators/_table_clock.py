"""The emulated instance's wall clock: what `sys_created_on`/`sys_updated_on` and the `Date`
answer header read.

It follows real time until a test sets it; from then on it moves only when the test advances it,
so a test can put many changes into one second, or step past a settle window, without sleeping.
ServiceNow stores date-times at one-second resolution, in UTC, as `YYYY-MM-DD HH:MM:SS`
(reference A4), and an HTTP `Date` header carries whole seconds too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import formatdate

__all__ = ["InstanceClock", "parse_stamp", "stamp_of"]

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def stamp_of(seconds: float) -> str:
    """An instant (epoch seconds) as ServiceNow stores it: UTC, whole seconds (truncated)."""
    return datetime.fromtimestamp(int(seconds // 1), UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> float:
    """The instant a stored `YYYY-MM-DD HH:MM:SS` (UTC) value stands for, in epoch seconds."""
    return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC).timestamp()


class InstanceClock:
    """Real time, or a fixed instant once `set`; `advance` moves either forward."""

    def __init__(self) -> None:
        self._fixed: float | None = None
        self._offset = 0.0

    def now(self) -> float:
        """The instance's current time, in epoch seconds."""
        if self._fixed is not None:
            return self._fixed
        return time.time() + self._offset

    def set(self, when: float | datetime | str) -> None:
        """Stop the clock at `when` (epoch seconds, an aware datetime, or a stored stamp)."""
        if isinstance(when, datetime):
            self._fixed = when.timestamp()
        elif isinstance(when, str):
            self._fixed = parse_stamp(when)
        else:
            self._fixed = float(when)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (a set clock stays stopped at the new instant)."""
        if self._fixed is not None:
            self._fixed += seconds
        else:
            self._offset += seconds

    def stamp(self) -> str:
        """The current time as a stored date-time value."""
        return stamp_of(self.now())

    def http_date(self) -> str:
        """The current time as an HTTP `Date` header (RFC 9110 IMF-fixdate)."""
        return formatdate(int(self.now() // 1), usegmt=True)
