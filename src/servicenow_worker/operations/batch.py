"""Several Table API requests at once: ServiceNow's Batch API (docs/contract.md §9),
`POST /api/now/v1/batch`.

Each request is validated by the model a single create, read, update or delete uses
(`RecordRequest`), with the job's instance and authentication, before anything is sent. They go
out in as few Batch API calls as ServiceNow's limits allow (one, unless their bodies pass the
10 MB a REST request may carry); what ServiceNow leaves in `unserviced_requests` is sent again.
An answer lost on the way is sent again in-process only where that cannot do a thing twice:
reads, updates, deletes (a 404 then means done) and, with `idempotencyField`, creates, whose
keys are looked up first (`camunda-<processInstanceKey>-<elementInstanceKey>-<index>`).
"""

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import httpx
import structlog
from pydantic import ValidationInfo, field_validator

from servicenow_worker.errors import BATCH_UNSERVICED, InputError, ServiceNowUnavailable
from servicenow_worker.idempotency import existing_records, idempotency_key
from servicenow_worker.inputs import (
    TABLE_OPERATIONS,
    DestinationInputs,
    InputRules,
    Operation,
    RecordRequest,
    gather_inputs,
    operation_named,
    parsed_json,
    validated,
)
from servicenow_worker.operations.family import JobContext, OperationFamily
from servicenow_worker.servicenow import (
    DETAIL_LIMIT,
    METHODS,
    ApiCall,
    TableResponse,
    checked,
    encoded_payload,
    json_body,
    relative_url,
    table_response,
)

log = structlog.get_logger(__name__)

BATCH_PATH: Final = "/api/now/v1/batch"
# The inputs one request of a batch may hold (docs/contract.md §9).
REQUEST_INPUTS: Final = (
    "operation",
    "table",
    "sysId",
    "payload",
    "query",
    "fields",
    "limit",
    "offset",
    "displayValue",
    "excludeReferenceLink",
)
# glide.rest.batch.max.inputSize: the body of one request of a batch.
MAX_REQUEST_BODY_BYTES: Final = 5 * 1024 * 1024
# glide.rest.max_content_length: the batch call itself is one REST request.
MAX_CALL_BYTES: Final = 10 * 1024 * 1024
# Keys per idempotency lookup: keeps its URL well under what proxies accept.
KEYS_PER_LOOKUP: Final = 100
JSON_ACCEPT: Final = [{"name": "Accept", "value": "application/json"}]
JSON_BODY: Final = [*JSON_ACCEPT, {"name": "Content-Type", "value": "application/json"}]


class BatchRequest(DestinationInputs):
    """The batch operation's validated inputs: its requests, each a `RecordRequest`."""

    requests: tuple[RecordRequest, ...]

    @field_validator("requests", mode="before")
    @classmethod
    def _each_request(cls, value: Any, info: ValidationInfo) -> Any:
        items = _request_list(value, info.context)
        if "authentication" not in info.data:
            return ()  # the job's authentication is invalid: that error is reported
        job = {"authentication": info.data["authentication"], "instance": info.data["instance"]}
        return tuple(
            _one_request(index, item, job, info.context) for index, item in enumerate(items)
        )


def _request_list(value: Any, rules: Any) -> list[Any]:
    value = parsed_json(value)
    if not isinstance(value, list):
        raise ValueError(
            'must be a list of requests, e.g. [{"operation": "create", "table": "incident", '
            '"payload": {"short_description": "…"}}]'
        )
    ceiling = rules.max_batch if isinstance(rules, InputRules) else 0
    if not 1 <= len(value) <= ceiling:
        raise ValueError(
            f"must hold 1 to {ceiling} requests (got {len(value)}; the operator's "
            "SERVICENOW_MAX_BATCH is the ceiling): split them over several tasks"
        )
    return value


def _one_request(index: int, item: Any, job: Mapping[str, Any], rules: Any) -> RecordRequest:
    """One request of the batch, validated as a single operation would be; errors name it."""
    where = f"requests[{index}]"
    if not isinstance(item, dict):
        raise InputError(where, 'must be an object such as {"operation": "read", "table": …}')
    unknown = [name for name in item if name not in REQUEST_INPUTS]
    if unknown:
        raise InputError(
            f"{where}.{unknown[0]}",
            f"is not an input of a batch request, which takes {', '.join(REQUEST_INPUTS)} "
            "(instance and authentication are the job's)",
        )
    operation = item.get("operation")
    if not isinstance(operation, str) or operation_named(operation) not in TABLE_OPERATIONS:
        raise InputError(
            f"{where}.operation", f"must be create, read, update or delete (got {operation!r})"
        )
    try:
        request = validated(RecordRequest, {**gather_inputs({}, item), **job}, rules)
        encoded_payload(request, MAX_REQUEST_BODY_BYTES)
    except InputError as error:
        raise InputError(f"{where}.{error.field}", error.problem) from None
    return request


@dataclass(frozen=True)
class BatchResponse:
    """One entry per request, in input order, and how many of them ServiceNow refused."""

    results: list[dict[str, Any]]
    body_bytes: int
    status: int = 200

    def as_variable(self) -> dict[str, Any]:
        errors = sum(1 for entry in self.results if entry["status"] >= 400)
        return {"status": self.status, "result": self.results, "errorCount": errors}


@dataclass
class _Batch:
    """The requests of one job on their way: what each is, and what has been answered."""

    requests: Sequence[RecordRequest]
    carried: list[dict[str, Any]]
    # indexes of creates that carry an idempotency key, by key
    keys: dict[str, int]
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    # indexes sent in a call whose answer was lost: they may have been carried out already
    maybe_done: set[int] = field(default_factory=set)
    body_bytes: int = 0

    @property
    def pending(self) -> list[int]:
        return [i for i in range(len(self.requests)) if i not in self.answers]

    def resend_is_safe(self, indexes: Sequence[int]) -> bool:
        """Whether sending these again after a lost answer can do nothing twice."""
        keyed = set(self.keys.values())
        return all(
            self.requests[i].operation is not Operation.CREATE or i in keyed for i in indexes
        )


async def run(context: JobContext, request: BatchRequest) -> BatchResponse:
    """Send every request, in as few Batch API calls as the limits allow, until each is
    answered; a lost answer is sent again in-process where that is safe (see the module)."""
    batch = _prepare(context, request.requests)
    failures = 0
    # keys are looked up before the first call (an earlier run of the job may have sent it) and
    # after a call whose answer was lost; requests left unserviced were not carried out
    look_up = bool(batch.keys)
    while pending := batch.pending:
        if look_up:
            await _answer_existing_creates(context, batch, pending)
            look_up = False
            pending = batch.pending
            if not pending:
                break
        context.check_time(f"{len(pending)} requests of the batch not answered")
        chunk = _chunk(batch, pending)
        try:
            answer = await context.servicenow.call(
                request, _batch_call(request, batch, chunk, context), deadline=context.deadline
            )
        except ServiceNowUnavailable as error:
            failures += 1
            if failures >= context.settings.servicenow_retry_attempts or not (
                error.never_sent or batch.resend_is_safe(chunk)
            ):
                raise
            if not error.never_sent:
                batch.maybe_done.update(chunk)
                look_up = bool(batch.keys)
            log.info("batch_call_failed_resending", requests=len(chunk), code=error.code)
            continue
        _take_answers(batch, chunk, answer)
        if all(i in batch.pending for i in chunk):
            raise ServiceNowUnavailable(
                BATCH_UNSERVICED,
                f"ServiceNow serviced none of the {len(chunk)} requests of a batch call (from "
                f"request {chunk[0]} on): one may take longer than the Batch API's 30 s or answer "
                "more than its 10 MB per request; ask for fewer records or fields",
            )
    results = [batch.answers[i] for i in range(len(batch.requests))]
    return BatchResponse(results=results, body_bytes=batch.body_bytes)


def _prepare(context: JobContext, requests: Sequence[RecordRequest]) -> _Batch:
    field_name = context.options.idempotency_field
    prefix = idempotency_key(context.process_instance_key, context.element_instance_key)
    keys: dict[str, int] = {}
    carried = []
    for index, request in enumerate(requests):
        if field_name and request.operation is Operation.CREATE:
            key = f"{prefix}-{index}"
            keys[key] = index
            payload = {**(request.payload or {}), field_name: key}
            request = request.model_copy(update={"payload": payload})  # noqa: PLW2901
        carried.append(_carried(index, request))
    return _Batch(requests=requests, carried=carried, keys=keys)


def _carried(index: int, request: RecordRequest) -> dict[str, Any]:
    """One request as the Batch API carries it: relative URL, headers, base64 body."""
    body = encoded_payload(request, MAX_REQUEST_BODY_BYTES)
    listing = request.operation is Operation.READ and request.sys_id is None
    item: dict[str, Any] = {
        "id": str(index),
        "method": METHODS[request.operation],
        "url": relative_url(request),
        "headers": JSON_BODY if body is not None else JSON_ACCEPT,
        # a list needs X-Total-Count and Link for hasMore; the rest needs no headers
        "exclude_response_headers": not listing,
    }
    if body is not None:
        item["body"] = base64.b64encode(body).decode()
    return item


async def _answer_existing_creates(
    context: JobContext, batch: _Batch, pending: Sequence[int]
) -> None:
    """Creates whose key a record already carries are answered with that record, unsent."""
    field_name = context.options.idempotency_field
    assert field_name is not None
    by_table: dict[str, list[tuple[str, int]]] = {}
    for key, index in batch.keys.items():
        if index in pending:
            by_table.setdefault(batch.requests[index].table, []).append((key, index))
    for keyed in by_table.values():
        for start in range(0, len(keyed), KEYS_PER_LOOKUP):
            part = keyed[start : start + KEYS_PER_LOOKUP]
            existing = await existing_records(
                context.servicenow,
                batch.requests[part[0][1]],
                field_name,
                [key for key, _ in part],
                deadline=context.deadline,
            )
            for key, index in part:
                if key in existing:
                    batch.answers[index] = existing[key].as_variable()


def _chunk(batch: _Batch, pending: Sequence[int]) -> list[int]:
    """The pending requests, from the first, that fit into one Batch API call."""
    chunk: list[int] = []
    size = 0
    for index in pending:
        item_size = len(json.dumps(batch.carried[index])) + 2
        if chunk and size + item_size > MAX_CALL_BYTES - 1024:
            break
        chunk.append(index)
        size += item_size
    return chunk


@dataclass(frozen=True)
class _CallAnswer:
    body: dict[str, Any]
    size: int


def _batch_call(
    request: BatchRequest, batch: _Batch, chunk: Sequence[int], context: JobContext
) -> ApiCall[_CallAnswer]:
    what = f"batch of {len(chunk)} requests"
    body = {
        "batch_request_id": idempotency_key(
            context.process_instance_key, context.element_instance_key
        ),
        "rest_requests": [batch.carried[i] for i in chunk],
    }
    return ApiCall(
        "POST",
        request.base_url + BATCH_PATH,
        what,
        partial(_batch_answer, what),
        json.dumps(body, ensure_ascii=False).encode(),
    )


def _batch_answer(what: str, response: httpx.Response) -> _CallAnswer:
    body = json_body(what, checked(what, response), key="serviced_requests")
    return _CallAnswer(body, len(response.content))


def _take_answers(batch: _Batch, chunk: Sequence[int], answer: _CallAnswer) -> None:
    batch.body_bytes += answer.size
    sent = set(chunk)
    for serviced in answer.body.get("serviced_requests") or []:
        index = _index(serviced, sent)
        if index is not None:
            batch.answers[index] = _entry(
                batch.requests[index], serviced, maybe_done=index in batch.maybe_done
            )


def _index(serviced: Any, sent: set[int]) -> int | None:
    item_id = serviced.get("id") if isinstance(serviced, dict) else None
    index = int(item_id) if isinstance(item_id, str) and item_id.isdigit() else None
    return index if index in sent else None


def _entry(request: RecordRequest, serviced: dict[str, Any], *, maybe_done: bool) -> dict[str, Any]:
    """What one request's answer becomes: as a single operation's, or `{status, error}`."""
    status = serviced.get("status_code")
    if not isinstance(status, int):
        status = 500
    content = base64.b64decode(serviced.get("body") or "")
    if request.operation is Operation.DELETE and status == 404 and maybe_done:
        # the call whose answer was lost deleted it
        return {"status": 204, "result": None}
    if status >= 400:
        return {"status": status, "error": _error(content)}
    # left out on request (exclude_response_headers): the body is JSON, which it asked for
    headers = [
        (h["name"], h["value"]) for h in serviced.get("headers") or [] if isinstance(h, dict)
    ] or [("Content-Type", "application/json")]
    response = httpx.Response(status, headers=headers, content=content)
    answered: TableResponse = table_response(request, response)
    return answered.as_variable()


def _error(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return {"message": error.get("message"), "detail": error.get("detail")}
    return {"message": content[:DETAIL_LIMIT].decode(errors="replace") or None, "detail": None}


BATCH: OperationFamily[BatchRequest] = OperationFamily(model=BatchRequest, run=run)
