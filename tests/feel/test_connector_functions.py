"""bpmnError, jobError and ignoreError, and how an errorExpression's result is read."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from servicenow_worker.feel import (
    BpmnErrorRequest,
    ErrorExpressionResultError,
    FeelEvaluationError,
    IgnoreErrorRequest,
    JobErrorRequest,
    compile_expression,
    interpret_error_expression_result,
)

NOT_FOUND = {
    "error": {"code": "404", "message": "No Record found", "variables": {"status": 404}},
    "job": {"retries": 3},
}


def outcome(text: str, context: dict[str, Any] | None = None) -> Any:
    """What the worker gets from an errorExpression header."""
    return interpret_error_expression_result(compile_expression(text).evaluate(context or {}))


class TestTheFunctions:
    def test_bpmn_error_has_the_runtime_shape(self) -> None:
        """The context carries Camunda's keys: errorType, errorCode, errorMessage, variables."""
        assert compile_expression('bpmnError("X", "m", {a: 1})').evaluate() == {
            "errorType": "bpmnError",
            "errorCode": "X",
            "errorMessage": "m",
            "variables": {"a": 1},
        }
        assert compile_expression('bpmnError("X")').evaluate() == {
            "errorType": "bpmnError",
            "errorCode": "X",
        }

    def test_job_error_fills_in_the_defaults(self) -> None:
        """jobError(message) has variables {}, retries 0 and backoff PT0S."""
        assert compile_expression('jobError("m")').evaluate() == {
            "errorType": "jobError",
            "errorMessage": "m",
            "variables": {},
            "retries": 0,
            "retryBackoff": "PT0S",
        }

    def test_ignore_error_with_and_without_variables(self) -> None:
        """ignoreError() and ignoreError({…})."""
        assert compile_expression("ignoreError()").evaluate() == {"errorType": "ignoreError"}
        assert compile_expression("ignoreError({a: 1})").evaluate() == {
            "errorType": "ignoreError",
            "variables": {"a": 1},
        }

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ('bpmnError(404, "m")', "'errorCode' of function 'bpmnError' must be a string"),
            ("bpmnError(null)", "'errorCode' of function 'bpmnError' must be a string"),
            ('bpmnError("X", 1)', "'errorMessage' of function 'bpmnError' must be a string"),
            ('bpmnError("X", "m", [1])', "'variables' of function 'bpmnError' must be a context"),
            ("jobError(1)", "'errorMessage' of function 'jobError' must be a string"),
            ('jobError("m", "v")', "'variables' of function 'jobError' must be a context"),
            ('jobError("m", {}, "3")', "'retries' of function 'jobError' must be a number"),
            ('jobError("m", {}, 3, "soon")', "'retryBackoff' of function 'jobError'"),
            ('jobError("m", {}, 3, @"P1M")', "'retryBackoff' of function 'jobError'"),
            ('jobError("m", {}, 3, 30)', "got number"),
            ('ignoreError("x")', "'variables' of function 'ignoreError' must be a context"),
        ],
    )
    def test_a_wrong_argument_type_fails_the_evaluation(self, text: str, fragment: str) -> None:
        """As Camunda's functions do, a wrong argument type is an error naming the parameter."""
        with pytest.raises(FeelEvaluationError, match=fragment):
            compile_expression(text).evaluate()

    def test_null_optional_arguments_count_as_left_out(self) -> None:
        """`jobError(error.message, null)` keeps the defaults instead of failing."""
        assert outcome('jobError("m", null, null, null)') == JobErrorRequest("m")


class TestReadingTheResult:
    @pytest.mark.parametrize("value", [None, {}])
    def test_null_or_an_empty_context_is_no_error(self, value: Any) -> None:
        """The runtime's "no error" values."""
        assert interpret_error_expression_result(value) is None

    def test_the_typical_recipes(self) -> None:
        """The errorExpression recipes of the contract give typed requests."""
        text = 'if error.code = "404" then bpmnError("NOT_FOUND", "No such record") else null'
        assert outcome(text, NOT_FOUND) == BpmnErrorRequest("NOT_FOUND", "No such record")
        assert outcome(text, {"error": None}) is None
        retry = (
            'jobError(error.message, {status: error.variables.status}, job.retries - 1, @"PT3S")'
        )
        assert outcome(retry, NOT_FOUND) == JobErrorRequest(
            "No Record found", {"status": 404}, 2, timedelta(seconds=3)
        )
        assert outcome("ignoreError({found: false})") == IgnoreErrorRequest({"found": False})

    @pytest.mark.parametrize(
        "backoff",
        ['@"PT3S"', 'duration("PT3S")', '"PT3S"', '@"PT0.5S" * 6', 'duration("PT1S") * 3'],
    )
    def test_every_form_of_backoff_is_a_timedelta(self, backoff: str) -> None:
        """A duration value, duration("…") and the ISO text all give the same backoff."""
        request = outcome(f'jobError("m", {{}}, 1, {backoff})')
        assert isinstance(request, JobErrorRequest)
        assert request.retry_backoff == timedelta(seconds=3)

    def test_a_fraction_of_a_second_is_kept(self) -> None:
        """PT0.5S stays half a second through the JSON boundary."""
        request = outcome('jobError("m", {}, 1, @"PT0.5S")')
        assert isinstance(request, JobErrorRequest)
        assert request.retry_backoff == timedelta(milliseconds=500)

    def test_values_built_by_hand_are_read_too(self) -> None:
        """A context literal with the runtime's keys, or code/message, is a request as well."""
        assert outcome('{errorType: "bpmnError", code: "C", message: "M"}') == BpmnErrorRequest(
            "C", "M"
        )
        raw = {"errorType": "jobError", "errorMessage": "m", "retries": Decimal(2)}
        assert interpret_error_expression_result(raw) == JobErrorRequest("m", retries=2)
        with_timedelta = {**raw, "retryBackoff": timedelta(minutes=1), "retries": 2.0}
        request = interpret_error_expression_result(with_timedelta)
        assert request == JobErrorRequest("m", retries=2, retry_backoff=timedelta(minutes=1))

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ("not an error", "must return a context"),
            ([1, 2], "must return a context"),
            (3, "must return a context"),
            ({"foo": 1}, "no connector error"),
            ({"errorType": "panic"}, "no connector error"),
            ({"errorType": "bpmnError"}, "non-empty string code"),
            ({"errorType": "bpmnError", "errorCode": ""}, "non-empty string code"),
            ({"errorType": "bpmnError", "errorCode": 404}, "non-empty string code"),
            ({"errorType": "bpmnError", "errorCode": "X", "errorMessage": 1}, "message"),
            ({"errorType": "bpmnError", "errorCode": "X", "variables": [1]}, "variables"),
            ({"errorType": "jobError"}, "message of jobError must be a string"),
            ({"errorType": "jobError", "errorMessage": "m", "retries": -1}, "whole number"),
            ({"errorType": "jobError", "errorMessage": "m", "retries": 1.5}, "whole number"),
            ({"errorType": "jobError", "errorMessage": "m", "retries": "3"}, "whole number"),
            ({"errorType": "jobError", "errorMessage": "m", "retries": True}, "whole number"),
            ({"errorType": "jobError", "errorMessage": "m", "retryBackoff": "P1M"}, "days-and"),
            ({"errorType": "jobError", "errorMessage": "m", "retryBackoff": "3s"}, "days-and"),
            ({"errorType": "jobError", "errorMessage": "m", "retryBackoff": 30}, "days-and"),
            ({"errorType": "jobError", "errorMessage": "m", "retryBackoff": "-PT3S"}, "negative"),
            ({"errorType": "ignoreError", "variables": "x"}, "variables of ignoreError"),
        ],
    )
    def test_a_wrong_type_is_a_clear_error(self, value: Any, fragment: str) -> None:
        """Anything that is not a well-formed connector error raises with what is wrong."""
        with pytest.raises(ErrorExpressionResultError, match=fragment):
            interpret_error_expression_result(value)

    def test_the_message_shows_the_offending_value_briefly(self) -> None:
        """The wrong value is named with its type and cut short, never dumped whole."""
        with pytest.raises(ErrorExpressionResultError) as caught:
            interpret_error_expression_result("x" * 500)
        assert "str 'xxxx" in str(caught.value)
        assert len(str(caught.value)) < 250
