"""Failures end to end (docs/contract.md §5, §6): the job's outcome, its retries and back-off, its message."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

from .conftest import AUTH, JOB_TYPE, PASSWORD, RunJob, StartWorker, job_variables

CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})


def no_secret_in(text: str) -> None:
    assert PASSWORD not in text
    assert "Pa55" not in text


class TestInvalidInput:
    @pytest.mark.parametrize(
        ("variables", "message"),
        [
            ({"operation": None}, "operation is required"),
            (
                {"operation": "merge"},
                "operation must be one of create, read, update, delete, changes, aggregate, "
                "batch, attach, listAttachments, download, deleteAttachment (got 'merge')",
            ),
            ({"table": "incident/../../sys_user"}, "table must be a table name"),
            ({"operation": "update", "sysId": None}, "sysId is required for update"),
            ({"operation": "delete", "payload": None}, "sysId is required for delete"),
            (
                {"operation": "read", "sysId": "abc", "query": "active=true"},
                "query cannot be combined with sysId",
            ),
            ({"payload": None}, "payload is required for create"),
            ({"payload": "[]"}, "payload must be a JSON object"),
            (
                {"operation": "read", "limit": 5000},
                "limit must be an integer from 1 to 1000 (got 5000)",
            ),
            ({"operation": "read", "offset": -5}, "offset must be an integer of 0 or more"),
            ({"authentication": None}, "authentication is required"),
            (
                {"authentication": {**AUTH, "password": "{{secrets.snPwd}}"}},
                "refers to secret snPwd, which is missing",
            ),
        ],
    )
    async def test_fails_with_no_retries_and_sends_nothing(
        self,
        run_job: RunJob,
        servicenow: ServiceNowEmulator,
        variables: dict[str, Any],
        message: str,
    ) -> None:
        """Bad input raises an incident at once, names the field, and never reaches ServiceNow."""
        inputs = {k: v for k, v in {**CREATE, **variables}.items() if v is not None}
        outcome = await run_job(inputs)
        assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 0, 0)
        assert message in outcome.error_message
        assert servicenow.requests == []

    async def test_instance_host_not_allowed(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """A full-URL instance on a host outside SERVICENOW_ALLOWED_HOSTS is refused."""
        await start_worker(servicenow_url_template="https://{instance}.service-now.com")
        key = gateway.create_job(JOB_TYPE, {**CREATE, "instance": "https://attacker.example"})
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "names host attacker.example, which is not allowed" in outcome.error_message

    async def test_authentication_header_refused(self, run_job: RunJob) -> None:
        """Credentials in a task header (visible in the BPMN) are refused."""
        outcome = await run_job(CREATE, {"authentication": '{"username": "a", "password": "b"}'})
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "authentication must come from an input mapping" in outcome.error_message

    async def test_bad_retry_backoff_header(self, run_job: RunJob) -> None:
        """A malformed header fails the job at once, naming it."""
        outcome = await run_job(CREATE, {"retryBackoff": "30 seconds"})
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert outcome.error_message.startswith("retryBackoff must be an ISO-8601 duration")


class TestSecrets:
    async def test_secret_from_environment(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """{{secrets.NAME}} is replaced from SECRET_NAME before the call."""
        monkeypatch.setenv("SECRET_snPwd", PASSWORD)
        await start_worker()
        auth = {"username": "{{secrets.snUser}}", "password": "{{secrets.snPwd}}"}
        monkeypatch.setenv("SECRET_snUser", "camunda")
        key = gateway.create_job(JOB_TYPE, {**CREATE, "authentication": auth})
        outcome = await gateway.wait_for_outcome(key)
        # SECRET_snUser was set after start: the environment is read once, at start.
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "refers to secret snUser" in outcome.error_message
        assert servicenow.requests == []

    async def test_secret_from_file(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
        tmp_path: Path,
    ) -> None:
        """A secret file in SECRETS_DIR (one trailing newline dropped) provides the password."""
        (tmp_path / "snPwd").write_text(PASSWORD + "\n", encoding="utf-8")
        await start_worker(secrets_dir=tmp_path)
        auth = {"username": "camunda", "password": "{{secrets.snPwd}}"}
        key = gateway.create_job(JOB_TYPE, {**CREATE, "authentication": auth})
        assert (await gateway.wait_for_outcome(key)).kind == "complete"
        assert servicenow.requests[0].user == "camunda"

    async def test_wrong_password_never_echoed(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A 401 fails at once; neither the message nor the variables hold the password."""
        outcome = await run_job({**CREATE, "authentication": {**AUTH, "password": PASSWORD + "x"}})
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert outcome.error_message == (
            "ServiceNow answered 401 to create on incident: "
            "User Not Authenticated - Required to provide Auth information"
        )
        no_secret_in(outcome.error_message + repr(outcome.variables))


class TestServiceNowRejects:
    async def test_unknown_record(self, run_job: RunJob) -> None:
        """A 404 fails at once with ServiceNow's message, operation and table."""
        outcome = await run_job(job_variables(operation="read", table="incident", sysId="0" * 32))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert outcome.error_message == (
            "ServiceNow answered 404 to read on incident: No Record found - "
            "Record doesn't exist or ACL restricts the record retrieval"
        )

    async def test_invalid_table(self, run_job: RunJob) -> None:
        """ServiceNow answers 400 for an unknown table."""
        outcome = await run_job(job_variables(operation="read", table="incidnt"))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert (
            outcome.error_message
            == "ServiceNow answered 400 to read on incidnt: Invalid table incidnt"
        )

    async def test_acl_denied(self, run_job: RunJob, servicenow: ServiceNowEmulator) -> None:
        """A 403 is final too."""
        servicenow.inject(Fault.acl_denied(method="POST"))
        outcome = await run_job(CREATE)
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "ServiceNow answered 403 to create on incident" in outcome.error_message


class TestRetryable:
    async def test_create_not_repeated_after_502(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A create that may have been processed is left to Zeebe's retry, after retryBackoff."""
        servicenow.inject(Fault.bad_gateway(method="POST"))
        outcome = await run_job(CREATE, {"retryBackoff": "PT7S"})
        assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 2, 7000)
        assert outcome.error_message.startswith("ServiceNow answered 502 to create on incident")
        assert outcome.error_message.endswith("(will be retried in 7 s)")
        assert len(servicenow.requests) == 1

    async def test_rate_limit_backoff_from_retry_after(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A 429 with a long Retry-After fails with that back-off, not retryBackoff, and keeps
        the job's retries (docs/contract.md §12)."""
        servicenow.inject(Fault.rate_limited(retry_after=90, method="GET"))
        outcome = await run_job(job_variables(operation="read", table="incident"))
        assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 3, 90_000)
        assert "ServiceNow answered 429" in outcome.error_message
        assert "Rate limit exceeded" in outcome.error_message
        assert outcome.error_message.endswith("(retries unchanged, will be retried in 90 s)")

    async def test_read_retried_in_process(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A read that meets a 503 is tried again at once and the job completes."""
        servicenow.inject(Fault.service_unavailable(method="GET"))
        outcome = await run_job(job_variables(operation="read", table="incident"))
        assert outcome.kind == "complete"
        assert [r.status for r in servicenow.requests] == [503, 200]

    async def test_create_retried_after_429(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """ServiceNow refused the create with 429, so it is sent again: one record results."""
        servicenow.inject(Fault.rate_limited(retry_after=0, method="POST"))
        outcome = await run_job(CREATE)
        assert outcome.kind == "complete"
        assert len(servicenow.records("incident")) == 1

    @pytest.mark.parametrize(
        ("fault", "message"),
        [
            (Fault.hibernating, "the instance is hibernating"),
            (Fault.truncated_json, "is not complete JSON"),
            (Fault.connection_reset, "the connection to ServiceNow broke"),
        ],
    )
    async def test_broken_answers_retried_by_zeebe(
        self,
        run_job: RunJob,
        servicenow: ServiceNowEmulator,
        fault: Callable[..., Fault],
        message: str,
    ) -> None:
        """Answers that are not ServiceNow's JSON fail with retries - 1 once in-process tries end."""
        servicenow.inject(fault(method="GET", times=3))
        outcome = await run_job(job_variables(operation="read", table="incident"))
        assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 2, 30_000)
        assert message in outcome.error_message

    async def test_read_timeout(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """An answer slower than SERVICENOW_READ_TIMEOUT is a TIMEOUT, retried by Zeebe."""
        await start_worker(servicenow_read_timeout=0.2, servicenow_retry_attempts=1)
        servicenow.inject(Fault.delay(30, method="POST"))
        key = gateway.create_job(JOB_TYPE, CREATE, retries=1)
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert outcome.error_message == (
            "ServiceNow did not answer within the read timeout (no retries left)"
        )

    async def test_zeebe_retry_then_success(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """After a retryable failure Zeebe hands the job out again after the back-off; it completes."""
        await start_worker()
        servicenow.inject(Fault.bad_gateway(method="POST"))
        key = gateway.create_job(JOB_TYPE, CREATE, {"retryBackoff": "PT0.05S"})
        first, second = await gateway.wait_for_outcomes(key, 2)
        assert (first.kind, first.retries, second.kind) == ("fail", 2, "complete")
        assert len(servicenow.records("incident")) == 1
