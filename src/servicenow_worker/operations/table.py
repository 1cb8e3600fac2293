"""Create, read, update and delete one record or a page of records (the Table API), and read
every page of a query (`returnAll`, docs/contract.md §9)."""

from typing import Any, Final

from servicenow_worker.errors import ResultTooLarge, TooManyRecords
from servicenow_worker.idempotency import create_once, idempotency_key
from servicenow_worker.inputs import Operation, RecordRequest
from servicenow_worker.operations.family import JobContext, OperationFamily
from servicenow_worker.servicenow import TableResponse, stored_value

STABLE_ORDER: Final = "ORDERBYsys_id"


async def run(context: JobContext, request: RecordRequest) -> TableResponse:
    """One Table API request; a create with `idempotencyField` looks its key up first; a read
    with `returnAll` reads every page."""
    field = context.options.idempotency_field
    if request.operation is Operation.CREATE and field:
        key = idempotency_key(context.process_instance_key, context.element_instance_key)
        return await create_once(context.servicenow, request, field, key, deadline=context.deadline)
    if request.return_all:
        return await read_all(context, request)
    return await context.servicenow.send(request, deadline=context.deadline)


async def read_all(context: JobContext, request: RecordRequest) -> TableResponse:
    """Every record of the query, page by page, or an error: never a part of them.

    The end is where ServiceNow says it is (`hasMore` from Link and X-Total-Count), never a short
    page: ACLs remove rows after the page limit. Records seen twice (moved between pages while
    paging) are kept once, by sys_id, which is therefore always asked for.
    """
    fields = request.fields
    if fields is not None and "sys_id" not in fields:
        fields = (*fields, "sys_id")
    page = request.model_copy(update={"query": stable_query(request.query), "fields": fields})
    records: dict[Any, dict[str, Any]] = {}
    pages = body_bytes = 0
    offset = request.offset
    while True:
        answer = await context.servicenow.send(
            page.model_copy(update={"offset": offset}), deadline=context.deadline
        )
        pages += 1
        body_bytes += answer.body_bytes
        for record in answer.result:
            records.setdefault(stored_value(record, "sys_id") or len(records), record)
        _check_count(request, answer.total_count, len(records))
        _check_size(context, body_bytes, len(records), pages)
        if not answer.has_more:
            break
        offset += page.limit
        context.check_time(f"{len(records)} records read, more to come")
    result = list(records.values())
    if fields is not request.fields:
        result = [{k: v for k, v in r.items() if k != "sys_id"} for r in result]
    return TableResponse(
        status=200,
        result=result,
        is_list=True,
        total_count=answer.total_count,
        has_more=False,
        body_bytes=body_bytes,
        pages=pages,
    )


def stable_query(query: str | None) -> str:
    """The query ordered by sys_id, unless it orders its records itself (ORDERBY, ORDERBYDESC)."""
    if not query:
        return STABLE_ORDER
    if any(term.startswith("ORDERBY") for term in query.split("^")):
        return query
    return f"{query}^{STABLE_ORDER}"


def _check_count(request: RecordRequest, total: int | None, gathered: int) -> None:
    """Before the next page: more matching records than maxRecords fails the job for good."""
    matching = total - request.offset if total is not None else gathered
    if matching > request.max_records:
        raise TooManyRecords(
            f"the query matches {matching} records{' (X-Total-Count)' if total else ''}, more "
            f"than maxRecords {request.max_records}: narrow the query, or raise maxRecords "
            "(up to the operator's SERVICENOW_MAX_RECORDS)"
        )


def _check_size(context: JobContext, body_bytes: int, records: int, pages: int) -> None:
    """As pages arrive: records that cannot become the result variable stop the paging."""
    limit = context.settings.worker_max_result_bytes
    if context.options.result_variable and body_bytes > limit:
        raise ResultTooLarge(
            f"the {records} records of the first {pages} pages are already {body_bytes} bytes, "
            f"more than Zeebe takes as variables ({limit}, setting WORKER_MAX_RESULT_BYTES): ask "
            "for fewer fields, narrow the query, or keep what is needed with resultExpression "
            "instead of resultVariable"
        )


TABLE: OperationFamily[RecordRequest] = OperationFamily(model=RecordRequest, run=run)
