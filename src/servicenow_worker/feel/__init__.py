"""FEEL for the connector headers `resultExpression` and `errorExpression`.

    expression = compile_expression("= {incidentNumber: response.result.number}")
    expression.evaluate({"response": {...}})            # plain JSON-like values in and out

    error = compile_expression('if error.code = "404" then bpmnError("NOT_FOUND", "…") else null')
    request = interpret_error_expression_result(error.evaluate({"error": {...}}))

The semantics are Camunda's FEEL (camunda/feel-scala): numbers are decimals, most faults give
null. `docs/feel.md` lists the supported subset and the differences to other interpreters.
"""

from servicenow_worker.feel._connector_functions import (
    BpmnErrorRequest,
    ConnectorError,
    IgnoreErrorRequest,
    JobErrorRequest,
    interpret_error_expression_result,
)
from servicenow_worker.feel._errors import (
    ErrorExpressionResultError,
    FeelError,
    FeelEvaluationError,
    FeelSyntaxError,
    FeelUnsupportedError,
)
from servicenow_worker.feel._expression import Expression, compile_expression
from servicenow_worker.feel._values import to_json_value

__all__ = [
    "BpmnErrorRequest",
    "ConnectorError",
    "ErrorExpressionResultError",
    "Expression",
    "FeelError",
    "FeelEvaluationError",
    "FeelSyntaxError",
    "FeelUnsupportedError",
    "IgnoreErrorRequest",
    "JobErrorRequest",
    "compile_expression",
    "interpret_error_expression_result",
    "to_json_value",
]
