"""Changes since the last look (`changes`, docs/contract.md §10): a change feed with a cursor.

Records come in ServiceNow's change order, (`sys_updated_on`, `sys_id`), from one Table API read
per call, ordered and bounded by ServiceNow's own operators:

    <query>^sys_updated_on>T^NQ<query>^sys_updated_on=T^sys_id>ID^ORDERBYsys_updated_on^ORDERBYsys_id

so records that share the cursor's second are neither skipped nor repeated. The date-time
literal `T` is UTC, as stored: ServiceNow compares a plain literal with the stored (UTC) value
whatever the integration user's time zone (docs/changes.md, with sources); an answer holding
records from before the cursor (a literal read in another zone) fails the job rather than be
handed out.

Settling: a change stamped less than `SERVICENOW_CHANGES_SETTLE` seconds before ServiceNow's clock
(its `Date` header, less the request's round trip, since the query ran before the header was
written) is held back, and the cursor never passes it: a transaction that committed late is
still seen. One record more than `limit` is read, so `hasMore` is exact.
"""

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Self

from pydantic import BeforeValidator, Field, model_validator

from servicenow_worker import change_cursor
from servicenow_worker.change_cursor import Position, stamp_of
from servicenow_worker.errors import INVALID_RESPONSE, ServiceNowUnavailable, UnexpectedAnswer
from servicenow_worker.inputs import (
    DEFAULT_LIMIT,
    SYS_ID,
    DestinationInputs,
    DisplayValue,
    EncodedQuery,
    FieldList,
    Flag,
    Operation,
    PageSize,
    RecordRequest,
    TableName,
)
from servicenow_worker.operations.family import JobContext, OperationFamily
from servicenow_worker.servicenow import TableResponse, stored_value

ALWAYS_READ: Final = ("sys_id", "sys_updated_on")
ORDER: Final = "ORDERBYsys_updated_on^ORDERBYsys_id"
# Parts of an encoded query that would change what the feed's own conditions mean.
_FOREIGN_PARTS: Final = re.compile(r"(?:^|\^)(NQ|ORDERBY|EQ(?:\^|$))")


def _extra_query(value: Any) -> Any:
    if isinstance(value, str) and _FOREIGN_PARTS.search(value.replace("^^", "")):
        raise ValueError(
            "is an extra condition here (priority=1^active=true): ^NQ, ^EQ and ORDERBY are "
            "not allowed, the feed adds its own order and bounds"
        )
    return value


def _instant(value: Any) -> Any:
    """`since`: ISO 8601 (`2026-01-31T08:00:00Z`, an offset, or none: UTC) or ServiceNow's
    `2026-01-31 08:00:00` (UTC); a FEEL zone id suffix (`…+01:00[Europe/Berlin]`) is allowed."""
    if isinstance(value, str):
        text = re.sub(r"\[[A-Za-z0-9/_+-]+\]$", "", value.strip())
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise ValueError(
        "must be a date-time such as 2026-01-31T08:00:00Z or 2026-01-31 08:00:00 (UTC) "
        f"(got {value!r})"
    )


ExtraQuery = Annotated[EncodedQuery, BeforeValidator(_extra_query)]
Instant = Annotated[datetime, BeforeValidator(_instant)]


class ChangesInputs(DestinationInputs):
    """`changes`: a table (and extra query), where to start, and how the records come back."""

    table: TableName
    query: ExtraQuery | None = None
    cursor: str | None = None
    since: Instant | None = None
    limit: PageSize = DEFAULT_LIMIT
    fields: FieldList | None = None
    display_value: DisplayValue | None = Field(default=None, alias="displayValue")
    exclude_reference_link: Flag | None = Field(default=None, alias="excludeReferenceLink")

    @model_validator(mode="after")
    def _cursor_for_this_feed(self) -> Self:
        self.start()  # a cursor that is not one is an input error before anything is sent
        return self

    def start(self) -> Position | None:
        """Where this call starts: the cursor's position, else after `since`, else None (now)."""
        if self.cursor is not None:
            return change_cursor.decode(self.cursor, self.table, self.query)
        if self.since is not None:
            return Position(stamp_of(self.since.timestamp()))
        return None


@dataclass(frozen=True)
class ChangesResponse:
    """One call's records, and the cursor the next call starts from (docs/contract.md §10)."""

    status: int
    result: list[Any]
    cursor: str
    has_more: bool
    body_bytes: int = 0

    def as_variable(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "result": self.result,
            "count": len(self.result),
            "cursor": self.cursor,
            "hasMore": self.has_more,
        }


async def run(context: JobContext, inputs: ChangesInputs) -> ChangesResponse:
    """Read the settled changes after the start position, at most `limit` of them."""
    settle = context.settings.servicenow_changes_settle
    start = inputs.start()
    if inputs.cursor is None:
        # A feed's first call: check once that ServiceNow reads a literal as UTC.
        response, bound = await _check_literals_read_as_utc(context, inputs, settle)
        if start is None:  # a watcher starts from now
            cursor = change_cursor.encode(Position(stamp_of(bound)), inputs.table, inputs.query)
            return ChangesResponse(response.status, [], cursor, False, response.body_bytes)
    assert start is not None

    fields = tuple(dict.fromkeys((*inputs.fields, *ALWAYS_READ))) if inputs.fields else None
    # With display values only, sys_updated_on would come in the user's zone and format: ask
    # for both, keep the stored value for the order, and hand out the display values.
    display_value = "all" if inputs.display_value == "true" else inputs.display_value
    request = _read(
        inputs,
        window_query(inputs.query, start),
        limit=inputs.limit + 1,
        fields=fields,
        display_value=display_value,
    )
    response, bound = await _send(context, request, settle)
    page, position, has_more = _settled_page(response, start, bound, inputs)
    if inputs.display_value == "true":
        page = [_display_values(row) for row in page]
    cursor = change_cursor.encode(position, inputs.table, inputs.query)
    return ChangesResponse(response.status, page, cursor, has_more, response.body_bytes)


async def _check_literals_read_as_utc(
    context: JobContext, inputs: ChangesInputs, settle: int
) -> tuple[TableResponse, int]:
    """Read the table's oldest change and find it again by its stamp written as a plain
    literal: found, ServiceNow reads literals as UTC (docs/changes.md); not found while the
    record still holds that stamp, it reads them in another zone, and a feed would skip or
    repeat changes. Returns the first answer and its settle bound."""
    response, bound = await _send(context, _one_record(inputs, ORDER), settle)
    oldest = _first_position(response)
    if oldest is None:
        return response, bound  # an empty table (or unreadable fields): nothing to check with
    by_literal = f"sys_id={oldest.sys_id}^sys_updated_on={oldest.updated_on}"
    found = await context.servicenow.send(
        _one_record(inputs, by_literal), deadline=context.deadline
    )
    if _first_position(found) is not None:
        return response, bound
    again = await context.servicenow.send(
        _one_record(inputs, f"sys_id={oldest.sys_id}"), deadline=context.deadline
    )
    if _first_position(again) == oldest:
        raise UnexpectedAnswer(
            f"ServiceNow does not find record {oldest.sys_id} of {inputs.table} by its "
            f"sys_updated_on {oldest.updated_on} (UTC) written in a query: the instance does not "
            "read the date-time literal as UTC, and changes would skip or repeat records; set "
            "the integration user's time zone to GMT (README, React to ServiceNow)"
        )
    return response, bound  # it changed meanwhile: nothing learned


def _one_record(inputs: ChangesInputs, query: str) -> RecordRequest:
    return _read(inputs, query, limit=1, fields=ALWAYS_READ, display_value=None)


def _first_position(response: TableResponse) -> Position | None:
    rows = response.result if isinstance(response.result, list) else []
    return _position_of(rows[0]) if rows else None


def _position_of(row: Any) -> Position | None:
    """A row's place in change order; None when its sys_updated_on or sys_id is unreadable."""
    fields = row if isinstance(row, dict) else {}
    stamp, sys_id = stored_value(fields, "sys_updated_on"), stored_value(fields, "sys_id")
    readable = isinstance(stamp, str) and change_cursor.STAMP.fullmatch(stamp)
    if readable and isinstance(sys_id, str) and SYS_ID.fullmatch(sys_id):
        return Position(stamp, sys_id)
    return None


def _settled_page(
    response: TableResponse, start: Position, bound: int, inputs: ChangesInputs
) -> tuple[list[Any], Position, bool]:
    """The settled rows of the answer (at most `limit`), where the next call starts, hasMore."""
    rows = response.result if isinstance(response.result, list) else []
    positions = _checked_positions(rows, start, inputs.table, response.total_count)
    settled = sum(1 for position in positions if position.instant <= bound)
    page = rows[: min(settled, inputs.limit)]
    # More settled changes wait when one was read past the page, or when ServiceNow holds rows
    # past what it returned (rows its ACLs hid took places) and every row returned is settled.
    has_more = settled > inputs.limit or (response.has_more and settled == len(rows) > 0)
    if has_more:
        return page, positions[len(page) - 1], True
    # Every settled change after `start` is in this page: the cursor moves up to the bound.
    return page, max(start, Position(stamp_of(bound)), key=_order_key), False


def window_query(extra: str | None, start: Position) -> str:
    """The changes after `start`, oldest first, in ServiceNow's encoded-query language."""
    condition = f"{extra}^" if extra else ""
    after = f"{condition}sys_updated_on>{start.updated_on}"
    if start.sys_id is None:
        return f"{after}^{ORDER}"
    same_second = f"{condition}sys_updated_on={start.updated_on}^sys_id>{start.sys_id}"
    return f"{after}^NQ{same_second}^{ORDER}"


def _read(
    inputs: ChangesInputs,
    query: str | None,
    *,
    limit: int,
    fields: tuple[str, ...] | None,
    display_value: str | None,
) -> RecordRequest:
    # Built from validated inputs, so not validated again (limit + 1 may pass the maximum).
    return RecordRequest.model_construct(
        base_url=inputs.base_url,
        instance=inputs.instance,
        authentication=inputs.authentication,
        operation=Operation.READ,
        table=inputs.table,
        query=query,
        fields=fields,
        limit=limit,
        offset=0,
        display_value=display_value,
        exclude_reference_link=inputs.exclude_reference_link,
        payload=None,
        sys_id=None,
    )


async def _send(
    context: JobContext, request: RecordRequest, settle: int
) -> tuple[TableResponse, int]:
    """The answer, and the settle bound (epoch seconds): ServiceNow's clock when the query may
    have run (its Date header less the whole round trip), less the settle time."""
    sent = time.monotonic()
    response = await context.servicenow.send(request, deadline=context.deadline)
    round_trip = time.monotonic() - sent
    if response.server_time is None:
        raise ServiceNowUnavailable(
            INVALID_RESPONSE,
            f"ServiceNow's answer to changes on {request.table} has no Date header, and changes "
            "needs ServiceNow's clock (a proxy in between may drop it)",
        )
    now = math.floor(response.server_time.timestamp())
    return response, now - math.ceil(round_trip) - settle


def _checked_positions(
    rows: list[Any], start: Position, table: str, total_count: int | None
) -> list[Position]:
    """Each row's place in change order, checked to lie in the window, in order."""
    if not rows and total_count:
        raise UnexpectedAnswer(
            f"ServiceNow counts {total_count} changed records of {table} but returned none: "
            "its ACLs hide them from the integration user, and a feed cannot pass records it "
            "cannot see; let the user read them, or narrow the query"
        )
    positions: list[Position] = []
    for row in rows:
        position = _position_of(row)
        if position is None:
            raise UnexpectedAnswer(
                f"a record of {table} came back without a readable sys_updated_on and sys_id; "
                "changes orders by them, so the integration user must be able to read both"
            )
        stamp = position.updated_on
        if stamp < start.updated_on or (positions and stamp < positions[-1].updated_on):
            raise UnexpectedAnswer(
                f"ServiceNow returned a record of {table} changed at {stamp} for changes after "
                f"{start.updated_on} (UTC), or out of order: the instance does not read the "
                "date-time literal as UTC; set the integration user's time zone to GMT "
                "(README, React to ServiceNow)"
            )
        positions.append(position)
    return positions


def _display_values(row: dict[str, Any]) -> dict[str, Any]:
    """A row read with `all`, as ServiceNow gives it with `true`: the display value of each
    field, and of a reference {display_value, link} when it has a link."""
    shown: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, dict) and "display_value" in value:
            display = value["display_value"]
            shown[name] = (
                {"display_value": display, "link": value["link"]} if "link" in value else display
            )
        else:
            shown[name] = value
    return shown


def _order_key(position: Position) -> tuple[str, int, str]:
    # A whole second (sys_id None) comes after every record of that second.
    return (position.updated_on, position.sys_id is None, position.sys_id or "")


CHANGES: OperationFamily[ChangesInputs] = OperationFamily(model=ChangesInputs, run=run)
