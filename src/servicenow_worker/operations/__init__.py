"""The operations a job can ask for, each with its family's input model and function.

The handler looks the job's operation up here and knows nothing else of it. A new operation is a
module with its model and run function, its entries below, its rows in `inputs.USED_BY`, and its
looks in `template.py`.
"""

from collections.abc import Mapping
from typing import Any, Final

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import (
    InputRules,
    Operation,
    operation_named,
    unknown_operation,
    validated,
)
from servicenow_worker.operations import aggregate, batch, changes, table
from servicenow_worker.operations.family import Answer, JobContext, OperationFamily

__all__ = ["OPERATIONS", "Answer", "JobContext", "OperationFamily", "parse_inputs"]

OPERATIONS: Final[Mapping[Operation, OperationFamily[Any]]] = {
    Operation.CREATE: table.TABLE,
    Operation.READ: table.TABLE,
    Operation.UPDATE: table.TABLE,
    Operation.DELETE: table.TABLE,
    Operation.CHANGES: changes.CHANGES,
    Operation.AGGREGATE: aggregate.AGGREGATE,
    Operation.BATCH: batch.BATCH,
}


def parse_inputs(
    gathered: Mapping[str, Any], rules: InputRules
) -> tuple[OperationFamily[Any], Any]:
    """The operation's family and the gathered inputs validated by its model."""
    value = gathered.get("operation")
    if value is None:
        raise InputError("operation", "is required")
    operation = operation_named(value) if isinstance(value, str) else None
    if operation is None:
        raise InputError("operation", unknown_operation(value))
    family = OPERATIONS[operation]
    return family, validated(family.model, gathered, rules)
