"""Exactly-once creates: a key derived from the job marks the record, and is looked up first.

Zeebe delivers a job at least once: after a timeout, a lost answer or a retry, the same create can
arrive again. With `idempotencyField` set, the record carries `camunda-<processInstanceKey>-
<elementInstanceKey>`, the same for every delivery of the same task instance, and a create whose
key is already there returns that record instead of inserting a second one.

What remains: two deliveries working at the very same moment (a job that timed out at Zeebe while
this worker still worked on it) could both miss the key. The worker prevents that by never working
past its activation: WORKER_JOB_TIMEOUT is checked at start against the HTTP timeouts, and no
in-process retry starts that could end after the job's deadline.
"""

from collections.abc import Sequence

import structlog

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import Operation, RecordRequest
from servicenow_worker.servicenow import TableClient, TableResponse, stored_value

log = structlog.get_logger(__name__)


def idempotency_key(process_instance_key: int, element_instance_key: int) -> str:
    """The key of one task instance: stable across retries and re-activations of its job."""
    return f"camunda-{process_instance_key}-{element_instance_key}"


async def create_once(
    client: TableClient, request: RecordRequest, field: str, key: str, *, deadline: float
) -> TableResponse:
    """Return the record that already carries `key` in `field`, or create it with the key."""
    existing = await existing_records(client, request, field, [key], deadline=deadline)
    if key in existing:
        return existing[key]
    payload = {**(request.payload or {}), field: key}
    created = await client.send(request.model_copy(update={"payload": payload}), deadline=deadline)
    # With `fields` that leave the key's field out, the answer cannot show it: nothing to check.
    shown = not request.fields or field in request.fields
    if shown and isinstance(created.result, dict) and stored_value(created.result, field) != key:
        log.warning(
            "idempotency_field_not_stored",
            idempotency_field=field,
            hint="the table lacks this field or it is not readable: deduplication cannot work",
        )
    return created


async def existing_records(
    client: TableClient,
    request: RecordRequest,
    field: str,
    keys: Sequence[str],
    *,
    deadline: float,
) -> dict[str, TableResponse]:
    """The records of `request`'s table that carry one of `keys` in `field` (one read), by key,
    each as the answer a deduplicated create gives (status 200, `"deduplicated": true`)."""
    found = await client.send(_lookup(request, field, keys), deadline=deadline)
    existing: dict[str, TableResponse] = {}
    for record in found.result if isinstance(found.result, list) else []:
        value = stored_value(record, field)
        if value not in keys:
            raise InputError(
                "idempotencyField",
                f"names {field}, which table {request.table} does not have (ServiceNow ignored "
                "the lookup): name a field of this table such as correlation_id",
            )
        existing.setdefault(
            value,
            TableResponse(
                status=200, result=record, deduplicated=True, body_bytes=found.body_bytes
            ),
        )
    if existing:
        log.info("create_deduplicated", idempotency_field=field, records=len(existing))
    return existing


def _lookup(request: RecordRequest, field: str, keys: Sequence[str]) -> RecordRequest:
    fields = None
    if request.fields:
        fields = tuple(dict.fromkeys((*request.fields, "sys_id", field)))
    # `=` for one key: ServiceNow (and the emulator) look it up by index
    query = f"{field}={keys[0]}" if len(keys) == 1 else f"{field}IN{','.join(keys)}"
    return request.model_copy(
        update={
            "operation": Operation.READ,
            "query": query,
            "sys_id": None,
            "limit": len(keys),
            "offset": 0,
            "fields": fields,
            "payload": None,
        }
    )
