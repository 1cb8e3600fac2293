"""resultExpression and errorExpression end to end (docs/contract.md §3, issue #8)."""

from servicenow_emulators.table_api import Fault, ServiceNowEmulator

from .conftest import RunJob, job_variables

CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})
READ_MISSING = job_variables(operation="read", table="incident", sysId="0" * 32)
NOT_FOUND_TO_BPMN = (
    '=if error.code = "404" then bpmnError("NOT_FOUND", "No such record", '
    "{lookedFor: error.variables.status}) else null"
)


async def test_result_expression_picks_fields(run_job: RunJob) -> None:
    """The expression sees the response's entries directly and under `response`."""
    outcome = await run_job(
        CREATE,
        {
            "resultExpression": "={incidentNumber: response.result.number, id: result.sys_id, "
            "created: status = 201}",
            "resultVariable": "raw",
        },
    )
    assert outcome.kind == "complete"
    assert outcome.variables["incidentNumber"].startswith("INC")
    assert outcome.variables["id"] == outcome.variables["raw"]["result"]["sys_id"]
    assert outcome.variables["created"] is True


async def test_not_found_becomes_a_bpmn_error(run_job: RunJob) -> None:
    """A 404 is thrown as a BPMN error a boundary event catches by code."""
    outcome = await run_job(READ_MISSING, {"errorExpression": NOT_FOUND_TO_BPMN})
    assert (outcome.kind, outcome.error_code) == ("error", "NOT_FOUND")
    assert outcome.error_message == "No such record"
    assert outcome.variables == {"lookedFor": 404}


async def test_rate_limit_becomes_a_job_error(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """jobError sets the new retry count and back-off itself."""
    servicenow.inject(Fault.rate_limited(retry_after=600, method="GET"))
    outcome = await run_job(
        job_variables(operation="read", table="incident"),
        {
            "errorExpression": '=if error.code = "429" then '
            'jobError("ServiceNow is rate limiting", {}, job.retries + 2, @"PT10S") else null'
        },
    )
    assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 5, 10_000)
    assert outcome.error_message == "ServiceNow is rate limiting"


async def test_ignore_error_completes(run_job: RunJob) -> None:
    """ignoreError completes the job with its variables only."""
    outcome = await run_job(READ_MISSING, {"errorExpression": "=ignoreError({found: false})"})
    assert (outcome.kind, outcome.variables) == ("complete", {"found": False})


async def test_business_error_on_success(run_job: RunJob) -> None:
    """On success error is null and the response is in scope: an empty read can be an error."""
    outcome = await run_job(
        job_variables(operation="read", table="problem", query="active=true"),
        {
            "errorExpression": '=if error = null and count(result) = 0 then bpmnError("EMPTY", '
            '"no open problems") else null'
        },
    )
    assert (outcome.kind, outcome.error_code, outcome.error_message) == (
        "error",
        "EMPTY",
        "no open problems",
    )


async def test_input_error_reaches_error_expression(run_job: RunJob) -> None:
    """An input error has the code INVALID_INPUT and can be mapped too."""
    outcome = await run_job(
        {**CREATE, "payload": "[]"},
        {"errorExpression": "=bpmnError(error.code, error.message)"},
    )
    assert (outcome.kind, outcome.error_code) == ("error", "INVALID_INPUT")
    assert outcome.error_message.startswith("payload must be a JSON object")


async def test_null_keeps_the_default_outcome(run_job: RunJob) -> None:
    """An expression that gives null leaves the contract's outcome in place."""
    outcome = await run_job(
        READ_MISSING, {"errorExpression": NOT_FOUND_TO_BPMN.replace("404", "500")}
    )
    assert (outcome.kind, outcome.retries) == ("fail", 0)


async def test_expression_syntax_error_fails_before_sending(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """A broken expression fails the job at once, quoting it with the position, and sends nothing."""
    outcome = await run_job(CREATE, {"resultExpression": "={number: result.number"})
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert outcome.error_message.startswith("resultExpression is not a FEEL expression")
    assert "line 1, column" in outcome.error_message
    assert servicenow.requests == []


async def test_result_expression_must_give_a_context(run_job: RunJob) -> None:
    """A result expression that gives a string is refused, naming what it gave."""
    outcome = await run_job(CREATE, {"resultExpression": "=result.number"})
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert outcome.error_message.startswith("resultExpression must give a context")


async def test_wrong_type_in_connector_function(run_job: RunJob) -> None:
    """jobError with a non-number retries fails the job with a clear message."""
    outcome = await run_job(READ_MISSING, {"errorExpression": '=jobError("x", {}, "many")'})
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert outcome.error_message.startswith("errorExpression failed:")
    assert "retries" in outcome.error_message
