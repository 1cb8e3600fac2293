"""Delivery guarantees under faults (issue #5): nothing lost, nothing duplicated."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from pyzeebe import Job
from pyzeebe.grpc_internals.zeebe_adapter import ZeebeAdapter

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobState, ZeebeGatewayEmulator
from servicenow_worker.zeebe import JobPump

from .conftest import JOB_TYPE, StartWorker, job_variables

CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})
DEDUPLICATED = {
    "idempotencyField": "correlation_id",
    "resultVariable": "incident",
    "retryBackoff": "PT0.05S",
}


class TestExactlyOnceCreate:
    async def test_lost_answer_then_retry_returns_the_same_record(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """ServiceNow inserts but the answer is lost: Zeebe's retry finds the record, no duplicate."""
        await start_worker()
        servicenow.inject(Fault.drop_after_processing(method="POST"))
        key = gateway.create_job(JOB_TYPE, CREATE, DEDUPLICATED)
        first, second = await gateway.wait_for_outcomes(key, 2)
        assert (first.kind, first.retries) == ("fail", 2)
        assert "the connection to ServiceNow broke" in first.error_message
        assert second.kind == "complete"
        [record] = servicenow.records("incident")
        snapshot = gateway.job(key)
        expected_key = f"camunda-{snapshot.process_instance_key}-{snapshot.element_instance_key}"
        assert record["correlation_id"] == expected_key
        response = second.variables["incident"]
        assert (response["status"], response["deduplicated"]) == (200, True)
        assert response["result"]["sys_id"] == record["sys_id"]

    async def test_without_the_field_a_lost_answer_duplicates(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """The contrast that makes idempotencyField worth setting: at-least-once delivery."""
        await start_worker()
        servicenow.inject(Fault.drop_after_processing(method="POST"))
        key = gateway.create_job(JOB_TYPE, CREATE, {"retryBackoff": "PT0.05S"})
        await gateway.wait_for_outcomes(key, 2)
        assert len(servicenow.records("incident")) == 2

    async def test_first_create_carries_the_key(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """A create looks the key up, finds nothing, inserts once with the key."""
        await start_worker()
        key = gateway.create_job(JOB_TYPE, CREATE, DEDUPLICATED)
        outcome = await gateway.wait_for_outcome(key)
        assert outcome.variables["incident"]["status"] == 201
        assert "deduplicated" not in outcome.variables["incident"]
        assert [(r.method, r.query.get("sysparm_query")) for r in servicenow.requests] == [
            (
                "GET",
                outcome.variables["incident"]["result"]["correlation_id"].join(
                    ["correlation_id=", ""]
                ),
            ),
            ("POST", None),
        ]

    async def test_field_missing_on_table(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """A field the table lacks makes ServiceNow ignore the lookup: the job says so at once."""
        await start_worker()
        variables = job_variables(operation="create", table="sys_user", payload={"name": "x"})
        key = gateway.create_job(JOB_TYPE, variables, DEDUPLICATED)
        outcome = await gateway.wait_for_outcome(key)
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert outcome.error_message == (
            "idempotencyField names correlation_id, which table sys_user does not have "
            "(ServiceNow ignored the lookup): name a field of this table such as correlation_id"
        )
        assert all(r.method == "GET" for r in servicenow.requests)


async def test_delete_whose_answer_was_lost_counts_as_done(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator, start_worker: StartWorker
) -> None:
    """The delete happened, its answer was lost, the retry meets 404: the job completes."""
    await start_worker()
    record = servicenow.insert("incident", {"short_description": "temp"})
    servicenow.inject(Fault.drop_after_processing(method="DELETE"))
    variables = job_variables(operation="delete", table="incident", sysId=record["sys_id"])
    key = gateway.create_job(JOB_TYPE, variables, {"resultVariable": "deleted"})
    outcome = await gateway.wait_for_outcome(key)
    assert outcome.variables == {"deleted": {"status": 204, "result": None}}
    assert [r.status for r in servicenow.requests] == [None, 404]


class TestGateway:
    async def test_gateway_restart_mid_run(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """Jobs in flight while the gateway restarts are reported once it is back; none twice."""
        await start_worker()
        servicenow.inject(Fault.delay(0.5, method="POST", times=5))
        keys = [gateway.create_job(JOB_TYPE, CREATE) for _ in range(5)]
        await servicenow.wait_for_requests(5)
        await gateway.stop()
        await gateway.start()
        outcomes = await gateway.wait_for_all(keys, timeout=30)
        assert {o.kind for o in outcomes.values()} == {"complete"}
        assert all(len(gateway.outcomes_of(key)) == 1 for key in keys)
        assert len(servicenow.records("incident")) == 5

    async def test_completion_answered_not_found_is_survived(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """A job that timed out meanwhile (NOT_FOUND on CompleteJob) is logged; work goes on."""
        await start_worker()
        first = gateway.create_job(JOB_TYPE, CREATE)
        gateway.inject_fault("CompleteJob", grpc.StatusCode.NOT_FOUND, job_key=first)
        await gateway.wait_for_rpc("CompleteJob")
        second = gateway.create_job(JOB_TYPE, CREATE)
        assert (await gateway.wait_for_outcome(second)).kind == "complete"
        assert gateway.outcomes_of(first) == ()

    async def test_lost_completion_answer_is_not_sent_twice_in_effect(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """The gateway applies CompleteJob but the answer is lost: the retry finds it done."""
        await start_worker()
        key = gateway.create_job(JOB_TYPE, CREATE)
        gateway.inject_fault(
            "CompleteJob", grpc.StatusCode.UNAVAILABLE, job_key=key, after_apply=True, times=5
        )
        outcome = await gateway.wait_for_outcome(key)
        assert outcome.kind == "complete"
        await asyncio.wait_for(gateway.wait_until_idle(), 10)
        assert len(gateway.outcomes_of(key)) == 1
        assert len(servicenow.records("incident")) == 1

    async def test_jobs_that_arrive_after_the_stop_are_handed_back(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The stop comes while a batch of three is being taken: the first job runs to its end,
        the other two go back to Zeebe at once with their retries and no back-off, unsent."""
        pumps: list[JobPump] = []
        activate_jobs = ZeebeAdapter.activate_jobs

        async def stop_after_the_first_job(*args: Any, **kwargs: Any) -> AsyncIterator[Job]:
            async for job in activate_jobs(*args, **kwargs):
                yield job
                pumps[0].request_stop()

        monkeypatch.setattr(ZeebeAdapter, "activate_jobs", stop_after_the_first_job)
        first, *late = gateway.create_jobs(JOB_TYPE, 3, CREATE)
        pumps.append(await start_worker())

        assert (await gateway.wait_for_outcome(first)).kind == "complete"
        for key in late:
            await gateway.wait_for_outcomes(key, 1)
            assert [(o.kind, o.retries, o.retry_backoff_ms) for o in gateway.outcomes_of(key)] == [
                ("fail", 3, 0)
            ]
            assert gateway.job(key).state is JobState.ACTIVATABLE
        assert len(servicenow.records("incident")) == 1

    async def test_a_job_created_after_the_stop_is_handed_back_not_lost(
        self,
        gateway: ZeebeGatewayEmulator,
        servicenow: ServiceNowEmulator,
        start_worker: StartWorker,
    ) -> None:
        """After a stop the open long-poll is left to end at the gateway, so a job it brings is
        returned at once instead of being lost in a cancelled call until its timeout."""
        pump = await start_worker(worker_poll_timeout=30)
        await gateway.wait_for_long_polls(JOB_TYPE)
        pump.request_stop()
        key = gateway.create_job(JOB_TYPE, CREATE)
        [outcome] = await gateway.wait_for_outcomes(key, 1)
        assert (outcome.kind, outcome.retries, outcome.retry_backoff_ms) == ("fail", 3, 0)
        assert gateway.job(key).state is JobState.ACTIVATABLE
        assert servicenow.records("incident") == []

    async def test_a_second_stop_cancels_the_open_poll(
        self,
        gateway: ZeebeGatewayEmulator,
        start_worker: StartWorker,
    ) -> None:
        """A second signal means now: the worker does not wait out a long poll timeout."""
        pump = await start_worker(worker_poll_timeout=600)
        await gateway.wait_for_long_polls(JOB_TYPE)
        pump.request_stop()
        pump.request_stop()
        # Raises if the poll is still open after the wait's few seconds (not its 600 s).
        await gateway.wait_until(lambda: gateway.long_polls_waiting(JOB_TYPE) == 0)
        assert pump.jobs_in_flight == 0
