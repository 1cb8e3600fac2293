"""The outcome table of docs/contract.md §6: which command Zeebe receives for each kind of failure."""

from datetime import timedelta

import pytest

from servicenow_worker import outcome
from servicenow_worker.errors import (
    ExpressionFailed,
    InputError,
    ResultTooLarge,
    ServiceNowRejected,
    ServiceNowThrottled,
    ServiceNowUnavailable,
    WorkerError,
)
from servicenow_worker.inputs import parse_output_options
from servicenow_worker.secrets import ResolvedSecrets
from servicenow_worker.servicenow import TableResponse

OPTIONS = parse_output_options({"retryBackoff": "PT10S"})


def fail_for(error: WorkerError, retries: int = 3) -> outcome.Fail:
    result = outcome.for_error(error, job_retries=retries, options=OPTIONS, retry_after_cap=3600)
    assert isinstance(result, outcome.Fail)
    return result


class TestFailures:
    @pytest.mark.parametrize(
        "error",
        [
            InputError("sysId", "is required for update"),
            ServiceNowRejected(404, "ServiceNow answered 404", variables={}),
            ResultTooLarge("too large"),
        ],
    )
    def test_final_failures_raise_an_incident_at_once(self, error: WorkerError) -> None:
        """Bad input and 4xx fail with retries 0 and no back-off."""
        result = fail_for(error)
        assert (result.retries, result.backoff, result.message) == (0, timedelta(0), error.message)

    def test_transient_failure_uses_retry_backoff(self) -> None:
        """5xx and timeouts fail with retries - 1 after retryBackoff, and say so."""
        result = fail_for(ServiceNowUnavailable("503", "ServiceNow answered 503"))
        assert (result.retries, result.backoff) == (2, timedelta(seconds=10))
        assert result.message == "ServiceNow answered 503 (will be retried in 10 s)"

    def test_retry_after_longer_than_backoff_wins(self) -> None:
        """The back-off is max(retryBackoff, Retry-After)."""
        result = fail_for(ServiceNowUnavailable("429", "limited", retry_after=45))
        assert result.backoff == timedelta(seconds=45)
        shorter = fail_for(ServiceNowUnavailable("429", "limited", retry_after=2))
        assert shorter.backoff == timedelta(seconds=10)

    @pytest.mark.parametrize("retries", [3, 1])
    def test_throttling_spends_no_retry(self, retries: int) -> None:
        """A 429, or no turn before the deadline, keeps the job's retries (docs/contract.md §12),
        with the back-off until the destination accepts again."""
        result = fail_for(
            ServiceNowThrottled("429", "ServiceNow answered 429", retry_after=45), retries
        )
        assert (result.retries, result.backoff) == (retries, timedelta(seconds=45))
        assert result.message == (
            "ServiceNow answered 429 (retries unchanged, will be retried in 45 s)"
        )

    def test_retry_after_is_capped(self) -> None:
        """An absurd Retry-After is capped by the operator's setting."""
        error = ServiceNowUnavailable("429", "limited", retry_after=86_400)
        result = outcome.for_error(error, job_retries=3, options=OPTIONS, retry_after_cap=600)
        assert isinstance(result, outcome.Fail)
        assert result.backoff == timedelta(seconds=600)

    def test_last_retry_says_so(self) -> None:
        """With one retry left the job goes to 0 and the message does not promise a retry."""
        result = fail_for(ServiceNowUnavailable("TIMEOUT", "timed out"), retries=1)
        assert (result.retries, result.message) == (0, "timed out (no retries left)")


class TestSuccess:
    def test_result_variable(self) -> None:
        """The response lands in the variable that resultVariable names."""
        options = parse_output_options({"resultVariable": "incident"})
        result = outcome.for_response(
            TableResponse(201, {"number": "INC1"}), options, max_bytes=10**6, job_retries=3
        )
        assert result == outcome.Complete(
            {"incident": {"status": 201, "result": {"number": "INC1"}}}
        )

    def test_no_result_variable_no_variables(self) -> None:
        """Without resultVariable the job completes with no variables."""
        assert outcome.for_response(
            TableResponse(204, None), OPTIONS, max_bytes=10**6, job_retries=3
        ) == outcome.Complete({})

    def test_result_too_large(self) -> None:
        """A response Zeebe would refuse fails with advice instead of a RESOURCE_EXHAUSTED loop."""
        options = parse_output_options({"resultVariable": "page"})
        rows = [{"description": "ü" * 1000}] * 100
        response = TableResponse(200, rows, is_list=True, body_bytes=100_000)
        with pytest.raises(ResultTooLarge, match=r"ask for fewer records \(limit\)"):
            outcome.for_response(response, options, max_bytes=300_000, job_retries=3)


def test_masked_message() -> None:
    """A secret value that slipped into a message is masked before Zeebe sees it."""
    failed = outcome.Fail("login hunter2 refused", retries=0)
    assert outcome.masked(failed, ResolvedSecrets({"hunter2"})) == outcome.Fail(
        "login *** refused", retries=0
    )


class TestMessagesAndBackOff:
    def test_message_at_the_limit_is_kept_whole(self) -> None:
        """Zeebe's incident shows up to 2000 characters: a message that fits is not cut."""
        assert fail_for(InputError("x", "y" * 1998)).message == "x " + "y" * 1998

    def test_longer_message_is_cut_with_an_ellipsis(self) -> None:
        message = fail_for(InputError("x", "y" * 5000)).message
        assert (len(message), message[-2:]) == (2000, "y…")

    def test_without_options_the_default_back_off(self) -> None:
        """A job whose headers could not be read still backs off the default 30 s."""
        error = ServiceNowUnavailable("503", "ServiceNow answered 503")
        result = outcome.for_error(error, job_retries=3, options=None, retry_after_cap=3600)
        assert result == outcome.Fail(
            "ServiceNow answered 503 (will be retried in 30 s)",
            retries=2,
            backoff=timedelta(seconds=30),
        )

    def test_fractions_of_a_second_are_said(self) -> None:
        options = parse_output_options({"retryBackoff": "PT0.5S"})
        error = ServiceNowUnavailable("503", "busy")
        result = outcome.for_error(error, job_retries=2, options=options, retry_after_cap=3600)
        assert isinstance(result, outcome.Fail)
        assert result.message == "busy (will be retried in 0.5 s)"

    def test_a_job_with_no_retries_left_stays_at_zero(self) -> None:
        result = fail_for(ServiceNowUnavailable("TIMEOUT", "timed out"), retries=0)
        assert (result.retries, result.message) == (0, "timed out (no retries left)")

    def test_retry_after_equal_to_the_back_off(self) -> None:
        result = fail_for(ServiceNowUnavailable("429", "limited", retry_after=10))
        assert result.backoff == timedelta(seconds=10)


class TestResultSize:
    OPTIONS = parse_output_options({"resultVariable": "r"})

    def complete(self, response: TableResponse, max_bytes: int) -> outcome.Outcome:
        return outcome.for_response(response, self.OPTIONS, max_bytes=max_bytes, job_retries=3)

    def test_exactly_the_limit_fits(self) -> None:
        """The variables may take exactly WORKER_MAX_RESULT_BYTES, one byte more fails."""
        response = TableResponse(200, {"d": "x" * 500}, body_bytes=500)
        size = len('{"r": {"status": 200, "result": {"d": "' + "x" * 500 + '"}}}')
        assert isinstance(self.complete(response, max_bytes=size), outcome.Complete)
        with pytest.raises(ResultTooLarge, match=f"the response is {size} bytes"):
            self.complete(response, max_bytes=size - 1)

    def test_measured_when_the_body_could_reach_the_limit(self) -> None:
        """Escaping can make the variables six times the body: at body * 6 = limit, measure."""
        response = TableResponse(200, {"d": "\u0001" * 100}, body_bytes=100)
        with pytest.raises(ResultTooLarge):
            self.complete(response, max_bytes=600)


class TestExpressions:
    def test_error_expression_sees_the_error_and_the_job(self) -> None:
        """error.code, .message, .type, .variables and job.retries, as docs/contract.md §3 says."""
        options = parse_output_options(
            {
                "errorExpression": '=bpmnError(error.code, error.type + ": " + error.message, '
                "{v: error.variables, left: job.retries})"
            }
        )
        error = ServiceNowRejected(404, "not there", variables={"status": 404})
        result = outcome.for_error(error, job_retries=2, options=options, retry_after_cap=3600)
        assert result == outcome.ThrowError(
            "404", "ServiceNowRejected: not there", {"v": {"status": 404}, "left": 2}
        )

    def test_error_expression_on_success_sees_the_response(self) -> None:
        options = parse_output_options(
            {
                "errorExpression": '=if count(result) = 0 then bpmnError("EMPTY", "none", '
                "{s: response.status, left: job.retries, e: error}) else null"
            }
        )
        result = outcome.for_response(
            TableResponse(200, [], is_list=True), options, max_bytes=10**6, job_retries=4
        )
        assert result == outcome.ThrowError("EMPTY", "none", {"s": 200, "left": 4, "e": None})

    def test_job_error_and_ignore_error(self) -> None:
        error = ServiceNowUnavailable("503", "busy")
        job_error = parse_output_options(
            {"errorExpression": '=jobError("later", {a: 1}, 7, @"PT2M")'}
        )
        assert outcome.for_error(
            error, job_retries=3, options=job_error, retry_after_cap=3600
        ) == outcome.Fail("later", retries=7, backoff=timedelta(minutes=2), variables={"a": 1})
        ignore = parse_output_options({"errorExpression": "=ignoreError({a: error.code})"})
        assert outcome.for_error(
            error, job_retries=3, options=ignore, retry_after_cap=3600
        ) == outcome.Complete({"a": "503"})

    def test_error_expression_that_fails_raises_an_incident(self) -> None:
        options = parse_output_options({"errorExpression": '=jobError("x", {}, "many")'})
        result = outcome.for_error(
            ServiceNowUnavailable("503", "busy"), job_retries=3, options=options, retry_after_cap=1
        )
        assert isinstance(result, outcome.Fail)
        assert result.retries == 0
        assert result.message.startswith("errorExpression failed: ")

    @pytest.mark.parametrize(
        ("expression", "got"), [("=[1]", "got list: =[1]"), ("=null", "got null: =null")]
    )
    def test_result_expression_must_give_a_context(self, expression: str, got: str) -> None:
        options = parse_output_options({"resultExpression": expression})
        with pytest.raises(ExpressionFailed) as caught:
            outcome.for_response(TableResponse(200, {}), options, max_bytes=10**6, job_retries=3)
        assert caught.value.message == (
            "resultExpression must give a context such as {number: result.number}, " + got
        )


def test_masking_leaves_a_completion_and_a_job_without_secrets_alone() -> None:
    complete = outcome.Complete({"note": "hunter2"})
    assert outcome.masked(complete, ResolvedSecrets({"hunter2"})) is complete
    failed = outcome.Fail("hunter2", retries=0)
    assert outcome.masked(failed, ResolvedSecrets()) is failed


def test_error_expression_returning_null_on_success_completes() -> None:
    options = parse_output_options(
        {"resultVariable": "r", "errorExpression": '=if status = 404 then bpmnError("X") else null'}
    )
    result = outcome.for_response(TableResponse(200, {}), options, max_bytes=10**6, job_retries=3)
    assert result == outcome.Complete({"r": {"status": 200, "result": {}}})


def test_result_too_large_says_what_to_do() -> None:
    options = parse_output_options({"resultVariable": "r"})
    response = TableResponse(200, {"d": "x" * 2000}, body_bytes=2000)
    with pytest.raises(ResultTooLarge) as caught:
        outcome.for_response(response, options, max_bytes=1000, job_retries=3)
    assert caught.value.message.endswith(
        "more than Zeebe takes (1000, setting WORKER_MAX_RESULT_BYTES): ask for fewer records "
        "(limit) or fewer fields (fields)"
    )


def test_result_expression_that_fails() -> None:
    options = parse_output_options(
        {"resultExpression": "={a: for i in 1..status * 10000 return i}"}
    )
    with pytest.raises(ExpressionFailed) as caught:
        outcome.for_response(TableResponse(200, {}), options, max_bytes=10**6, job_retries=3)
    assert caught.value.message.startswith(
        "resultExpression failed: the range 1..2000000 is longer"
    )


class TestErrorCode:
    """Each outcome of an error keeps the error's code for the servicenow_worker_job_errors metric,
    whatever errorExpression made of the error."""

    def test_the_default_failure_keeps_the_code(self) -> None:
        assert fail_for(ResultTooLarge("too large")).error_code == "RESULT_TOO_LARGE"
        assert fail_for(ServiceNowRejected(404, "no", variables={})).error_code == "404"

    @pytest.mark.parametrize(
        ("expression", "kind"),
        [
            ('=bpmnError("BIG", "too big")', outcome.ThrowError),
            ("=ignoreError()", outcome.Complete),
            ('=jobError("later", {}, 2)', outcome.Fail),
        ],
    )
    def test_what_error_expression_decided_keeps_the_code(
        self, expression: str, kind: type[outcome.Outcome]
    ) -> None:
        options = parse_output_options({"errorExpression": expression})
        result = outcome.for_error(
            ResultTooLarge("too large"), job_retries=3, options=options, retry_after_cap=3600
        )
        assert isinstance(result, kind)
        assert result.error_code == "RESULT_TOO_LARGE"

    def test_a_success_has_no_code(self) -> None:
        response = TableResponse(status=200, result={"number": "INC1"})
        result = outcome.for_response(response, OPTIONS, max_bytes=10_000, job_retries=3)
        assert result.error_code is None
