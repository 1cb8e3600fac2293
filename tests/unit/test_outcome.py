"""The outcome table of docs/contract.md §6: which command Zeebe receives for each kind of failure."""

from datetime import timedelta

import pytest

from servicenow_worker import outcome
from servicenow_worker.errors import (
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
