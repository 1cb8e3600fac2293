"""The baseline of `throughput.py`: the smallest pyzeebe worker that makes the same Table API call.

pyzeebe's own `ZeebeWorker` loop, one shared `httpx.AsyncClient` whose pool is sized to the jobs in
flight, and nothing else: no validation, no logging, no metrics, no retries. It reads the same job
variables as servicenow-worker and completes the job with the same `response` variable.

    ZEEBE_ADDRESS=127.0.0.1:26500 SERVICENOW_URL=http://127.0.0.1:8089 MAX_JOBS_IN_FLIGHT=128 \
        .venv/bin/python benchmarks/baseline_worker.py

`POLL_RETRY_DELAY` (seconds, default 0.01) is pyzeebe's sleep when every slot is busy; pyzeebe's own
default is 5 s, which the benchmark measures separately (`--baseline-poll-retry-delay 5`).
"""

import asyncio
import os
import signal
from typing import Any

import httpx
from pyzeebe import Job, ZeebeWorker, create_insecure_channel


async def main() -> None:
    in_flight = int(os.environ.get("MAX_JOBS_IN_FLIGHT", "32"))
    base_url = os.environ["SERVICENOW_URL"]
    http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight),
        timeout=30,
    )
    channel = create_insecure_channel(grpc_address=os.environ["ZEEBE_ADDRESS"])
    worker = ZeebeWorker(
        channel,
        poll_retry_delay=float(os.environ.get("POLL_RETRY_DELAY", "0.01")),  # type: ignore[arg-type]
        max_connection_retries=-1,
    )

    @worker.task(
        task_type=os.environ.get("JOB_TYPE", "servicenow:1"),
        timeout_ms=300_000,
        max_jobs_to_activate=in_flight,
        max_running_jobs=in_flight,
    )
    async def servicenow(job: Job) -> dict[str, Any]:
        variables = job.variables
        auth = variables["authentication"]
        url = f"{base_url}/api/now/table/{variables['table']}"
        params = {"sysparm_fields": variables["fields"]} if variables.get("fields") else None
        if variables["operation"] == "create":
            response = await http.post(
                url,
                json=variables["payload"],
                params=params,
                auth=(auth["username"], auth["password"]),
            )
        else:
            response = await http.get(
                f"{url}/{variables['sysId']}",
                params=params,
                auth=(auth["username"], auth["password"]),
            )
        response.raise_for_status()
        return {"response": {"status": response.status_code, "result": response.json()["result"]}}

    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            signal_number, lambda: stopping.append(asyncio.create_task(worker.stop()))
        )
    print("baseline worker started", flush=True)
    await worker.work()
    await http.aclose()


if __name__ == "__main__":
    asyncio.run(main())
