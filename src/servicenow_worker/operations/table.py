"""Create, read, update and delete one record or a page of records (the Table API)."""

from servicenow_worker.idempotency import create_once, idempotency_key
from servicenow_worker.inputs import Operation, RecordRequest
from servicenow_worker.operations.family import JobContext, OperationFamily
from servicenow_worker.servicenow import TableResponse


async def run(context: JobContext, request: RecordRequest) -> TableResponse:
    """One Table API request; a create with `idempotencyField` looks its key up first."""
    field = context.options.idempotency_field
    if request.operation is Operation.CREATE and field:
        key = idempotency_key(context.process_instance_key, context.element_instance_key)
        return await create_once(context.servicenow, request, field, key, deadline=context.deadline)
    return await context.servicenow.send(request, deadline=context.deadline)


TABLE: OperationFamily[RecordRequest] = OperationFamily(model=RecordRequest, run=run)
