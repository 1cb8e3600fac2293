"""Flow control toward ServiceNow (docs/contract.md §12), with worker processes as an operator
runs them: a busy instance slows processes down and never spends a job's retries."""

from servicenow_emulators.table_api import Capacity, Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

from .conftest import JOB_TYPE, PASSWORD, USER, Spawn, job_variables

CREATE = job_variables(operation="create", table="incident", payload={"short_description": "x"})
READ = job_variables(operation="read", table="incident")


async def test_429_burst_pauses_once_and_spends_no_retry(
    spawn: Spawn, servicenow: ServiceNowEmulator
) -> None:
    """Every request of a burst answered 429 with Retry-After: 30: the destination pauses once
    (one log event), every job fails with its retries unchanged and a back-off until the pause
    ends, and the jobs that had not been sent yet are not sent at all."""
    servicenow.inject(Fault.error(429, "Too Many Requests", retry_after=30, times=None))
    async with ZeebeGatewayEmulator() as gateway:
        keys = [gateway.create_job(JOB_TYPE, CREATE, {"retryBackoff": "PT1S"}) for _ in range(12)]
        worker = await spawn(gateway.address).start()
        outcomes = [(await gateway.wait_for_outcomes(key, 1))[0] for key in keys]
        await worker.wait_for_event("servicenow_throttled")
        worker.send()
        assert await worker.exit_code() == 0
    assert {(o.kind, o.retries) for o in outcomes} == {("fail", 3)}
    assert all(25_000 <= (o.retry_backoff_ms or 0) <= 30_000 for o in outcomes)
    assert all("retries unchanged, will be retried in" in o.error_message for o in outcomes)
    # The initial limit (8) let some go; the rest waited and failed when the pause began.
    sent = len(servicenow.requests)
    assert 1 <= sent < len(keys)
    assert {r.status for r in servicenow.requests} == {429}
    [throttled] = [e for e in worker.events if e["event"] == "servicenow_throttled"]
    assert (throttled["status"], throttled["reason"]) == (429, "retry_after")
    assert throttled["destination"] == servicenow.base_url
    assert sum("did not get its turn" in o.error_message for o in outcomes) == len(keys) - sent


async def test_no_turn_before_the_deadline_hands_the_job_back(
    spawn: Spawn, servicenow: ServiceNowEmulator
) -> None:
    """With one request at a time and that one hanging, the next job's turn cannot come before
    its deadline: it is handed back with retries unchanged, never sent."""
    servicenow.inject(Fault.delay(60, method="GET", times=1))
    async with ZeebeGatewayEmulator() as gateway:
        hanging = gateway.create_job(JOB_TYPE, READ, retries=2)
        waiting = gateway.create_job(JOB_TYPE, CREATE, {"retryBackoff": "PT2S"}, retries=3)
        worker = await spawn(
            gateway.address,
            SERVICENOW_MAX_CONCURRENCY="1",
            SERVICENOW_RETRY_ATTEMPTS="1",
            SERVICENOW_CONNECT_TIMEOUT="0.5",
            SERVICENOW_READ_TIMEOUT="5",
            WORKER_JOB_TIMEOUT="11",
        ).start()
        [handed_back] = await gateway.wait_for_outcomes(waiting, 1)
        [timed_out] = await gateway.wait_for_outcomes(hanging, 1)
        worker.send()
        assert await worker.exit_code() == 0
    assert (handed_back.kind, handed_back.retries, handed_back.retry_backoff_ms) == (
        "fail",
        3,
        2000,
    )
    assert handed_back.error_message == (
        f"the request to {servicenow.base_url} did not get its turn before the job's deadline: "
        "the destination has 1 requests in flight (its limit) and 0 waiting "
        "(retries unchanged, will be retried in 2 s)"
    )
    assert [r.method for r in servicenow.requests] == ["GET"]  # the create was never sent
    # The hanging read is an ordinary timeout: it spends a retry (docs/contract.md §6).
    assert (timed_out.kind, timed_out.retries) == ("fail", 1)


async def test_two_workers_share_a_busy_instance(spawn: Spawn) -> None:
    """Two worker processes with no coordination, each allowed 128 requests at once, against an
    instance of the benchmark's shape (16 requests at once, a queue of 50, 429 beyond; scaled to
    20 ms a request): both make progress, every job completes without spending a retry, and at
    most 2 % of the requests are refused (fixed at 128 each, about half would be)."""
    busy = ServiceNowEmulator(
        users={USER: PASSWORD}, latency=0.02, capacity=Capacity(slots=16, queue=50)
    )
    async with busy, ZeebeGatewayEmulator() as gateway:
        keys = gateway.create_jobs(JOB_TYPE, 1500, CREATE, {"retryBackoff": "PT1S"})
        workers = [
            await spawn(
                gateway.address,
                SERVICENOW_URL_TEMPLATE=busy.base_url,
                SERVICENOW_MAX_CONCURRENCY="128",
                WORKER_NAME=name,
            ).start()
            for name in ("worker-a", "worker-b")
        ]
        final = await gateway.wait_for_all(keys, timeout=120)
        for worker in workers:
            worker.send()
        assert [await worker.exit_code() for worker in workers] == [0, 0]
        completed_by = [gateway.job(key).activated_by[-1] for key in keys]
        spent = [o for o in gateway.outcomes if o.kind == "fail" and o.retries != 3]
    assert {outcome.kind for outcome in final.values()} == {"complete"}
    assert spent == []
    assert completed_by.count("worker-a") > 0
    assert completed_by.count("worker-b") > 0
    refused = sum(r.status == 429 for r in busy.requests)
    assert refused <= 0.02 * len(busy.requests), (refused, len(busy.requests))
    assert len(busy.records("incident")) == 1500
