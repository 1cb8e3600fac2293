"""Inputs an operation does not use change nothing (docs/contract.md §2).

Process variables are visible to every task in their scope: a `sysId` left by a read reaches the
next create, a `payload` reaches a delete. Each operation here runs twice against the emulator,
once with its own inputs and once with every other input present too (plausible leftovers as
variables, values that would not even validate as headers); ServiceNow must receive the same
request both times, and the job must complete both times.
"""

import json
from collections.abc import Callable
from typing import Any

import pytest

from servicenow_emulators.table_api import RecordedRequest, ServiceNowEmulator
from servicenow_worker import change_cursor
from servicenow_worker.inputs import USED_BY

from .conftest import RunJob, job_variables

# Leftovers of earlier tasks: each valid for the operation that uses it, so it would change the
# request if it were read.
LEFTOVER_VARIABLES: dict[str, Any] = {
    "payload": {"short_description": "left by an earlier create"},
    "query": "active=false",
    "sysId": "0123456789abcdef0123456789abcdef",
    "fields": "number",
    "limit": 1,
    "offset": 7,
    "displayValue": "all",
    "excludeReferenceLink": "true",
    "cursor": change_cursor.encode(
        change_cursor.Position("2026-01-31 08:00:00"), "incident", "active=false"
    ),
    "since": "2026-01-31T08:00:00Z",
    "table": "sys_user",
    "returnAll": True,
    "maxRecords": 5,
    # `count` is what a read's resultExpression {count: count} leaves behind
    "count": 3,
    "groupBy": "priority",
    "avgFields": "reassignment_count",
    "sumFields": "reassignment_count",
    "minFields": "number",
    "maxFields": "number",
    "having": "count^priority^>^1",
    "orderBy": "COUNT^DESC",
    "requests": [{"operation": "delete", "table": "incident", "sysId": "0123456789abcdef"}],
}
# As task headers: values no operation accepts (an operation that read them would fail with an
# input error), and a query, which any text is.
INVALID_HEADERS: dict[str, Any] = {
    "payload": "not json",
    "query": "active=false^ORDERBYnumber",
    "sysId": "../other",
    "fields": "a..b",
    "limit": "0",
    "offset": "-1",
    "displayValue": "maybe",
    "excludeReferenceLink": "perhaps",
    "cursor": "not a cursor",
    "since": "yesterday",
    "table": "../sys_user",
    "returnAll": "perhaps",
    "maxRecords": "0",
    "count": "several",
    "groupBy": "a..b",
    "avgFields": "a..b",
    "sumFields": "a..b",
    "minFields": "a..b",
    "maxFields": "a..b",
    "having": "nonsense",
    "orderBy": "not an order",
    "requests": "not json",
}

OwnInputs = Callable[[ServiceNowEmulator], dict[str, Any]]


def _create(_: ServiceNowEmulator) -> dict[str, Any]:
    return {"table": "incident", "payload": {"short_description": "new"}, "fields": "number"}


def _read(servicenow: ServiceNowEmulator) -> dict[str, Any]:
    servicenow.insert("incident", {"short_description": "seen", "active": "true"})
    return {"table": "incident", "query": "active=true", "limit": 5}


def _update(servicenow: ServiceNowEmulator) -> dict[str, Any]:
    record = servicenow.insert("incident", {"short_description": "old"})
    return {"table": "incident", "sysId": record["sys_id"], "payload": {"urgency": "1"}}


def _delete(servicenow: ServiceNowEmulator) -> dict[str, Any]:
    record = servicenow.insert("incident", {"short_description": "temp"})
    return {"table": "incident", "sysId": record["sys_id"]}


def _changes(servicenow: ServiceNowEmulator) -> dict[str, Any]:
    servicenow.insert("incident", {"short_description": "changed"})
    position = change_cursor.Position("2026-01-01 00:00:00")
    return {"table": "incident", "cursor": change_cursor.encode(position, "incident", None)}


def _read_all(servicenow: ServiceNowEmulator) -> dict[str, Any]:
    servicenow.insert("incident", {"short_description": "every page", "active": "true"})
    return {"table": "incident", "query": "active=true", "returnAll": True, "maxRecords": 50}


def _aggregate(_: ServiceNowEmulator) -> dict[str, Any]:
    return {"table": "incident", "query": "active=true", "groupBy": "priority", "count": True}


def _batch(servicenow: ServiceNowEmulator) -> dict[str, Any]:
    record = servicenow.insert("incident", {"short_description": "in a batch"})
    return {
        "requests": [
            {"operation": "read", "table": "incident", "sysId": record["sys_id"]},
            {"operation": "create", "table": "incident", "payload": {"urgency": "2"}},
        ]
    }


OPERATIONS: dict[str, OwnInputs] = {
    "create": _create,
    "read": _read,
    "read-returnAll": _read_all,
    "update": _update,
    "delete": _delete,
    "changes": _changes,
    "aggregate": _aggregate,
    "batch": _batch,
}


def _shape(request: RecordedRequest, own: dict[str, Any]) -> tuple[Any, ...]:
    """What ServiceNow received, with this job's own sys_ids written as a placeholder."""
    sys_ids = [own.get("sysId", "")] + [r.get("sysId", "") for r in own.get("requests", [])]
    body = request.body
    if isinstance(body, dict):  # a batch names itself after the job
        body = {k: v for k, v in body.items() if k != "batch_request_id"}
    text = json.dumps([request.path, request.query, body])
    for sys_id in filter(None, sys_ids):
        text = text.replace(sys_id, "{sysId}")
    return request.method, text


@pytest.mark.parametrize("case", list(OPERATIONS))
async def test_inputs_the_operation_does_not_use_change_nothing(
    case: str, run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    operation = case.removesuffix("-returnAll")
    foreign = {name for name, users in USED_BY.items() if operation not in users}
    assert foreign, "every operation leaves some input unused"
    assert foreign <= set(LEFTOVER_VARIABLES)

    first = OPERATIONS[case](servicenow)
    plain = await run_job(job_variables(operation=operation, **first))
    assert plain.kind == "complete"
    [expected] = servicenow.requests
    servicenow.clear_requests()

    own = OPERATIONS[case](servicenow)
    leftovers = {name: LEFTOVER_VARIABLES[name] for name in foreign}
    headers = {name: INVALID_HEADERS[name] for name in foreign}
    with_leftovers = await run_job(
        job_variables(operation=operation, **{**leftovers, **own}), headers
    )

    assert with_leftovers.kind == "complete", with_leftovers
    [received] = servicenow.requests
    assert _shape(received, own) == _shape(expected, first)
