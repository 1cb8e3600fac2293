"""Soak: 20 000 jobs through both emulators with about 5 % injected faults (issue #5).

Checks that every job ends in exactly one correct outcome, that ServiceNow holds exactly one
record per create (creates use `idempotencyField`), and that the worker's memory stays flat.

    .venv/bin/python benchmarks/soak.py [--jobs 20000] [--fault-rate 0.05] [--in-flight 128]

The worker runs as its own process (the installed console script); the emulators run here.
"""

import argparse
import asyncio
import collections
import os
import random
import sys
import time
from pathlib import Path

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

JOB_TYPE = "servicenow:1"
AUTH = {"username": "soak", "password": "soak-pw"}
FAULTS = [
    Fault.service_unavailable,
    Fault.bad_gateway,
    lambda: Fault.rate_limited(retry_after=0),
    lambda: Fault.truncated_json(method="GET"),
    Fault.connection_reset,
    Fault.drop_after_processing,
    Fault.hibernating,
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def inject_faults(servicenow: ServiceNowEmulator, rate: float, rng: random.Random) -> None:
    """Arm one fault for the next request after roughly every 1/rate requests."""
    seen = 0
    while True:
        seen += max(1, round(rng.expovariate(rate)))
        await servicenow.wait_for_requests(seen, timeout=None)
        servicenow.inject(rng.choice(FAULTS)())


async def soak(jobs: int, fault_rate: float, in_flight: int) -> int:
    rng = random.Random(20261129)
    async with (
        ServiceNowEmulator(users={AUTH["username"]: AUTH["password"]}) as servicenow,
        ZeebeGatewayEmulator() as gateway,
    ):
        env = {
            "PATH": os.environ.get("PATH", ""),
            "ZEEBE_ADDRESS": gateway.address,
            "SERVICENOW_URL_TEMPLATE": servicenow.base_url,
            "WORKER_MAX_JOBS_IN_FLIGHT": str(in_flight),
            "WORKER_POLL_TIMEOUT": "1",
            "HEALTH_PORT": "0",
            "LOG_LEVEL": "ERROR",
        }
        worker = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("servicenow-worker")),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
        )
        await gateway.wait_for_long_polls(JOB_TYPE)
        rss = {"start": rss_mb(worker.pid)}
        faults = asyncio.create_task(inject_faults(servicenow, fault_rate, rng))
        started = time.monotonic()
        keys: list[int] = []
        creates: set[int] = set()
        for index in range(jobs):
            if index % 2 == 0:
                variables = {
                    "operation": "create",
                    "table": "incident",
                    "authentication": AUTH,
                    "payload": {"short_description": f"soak {index}"},
                    "fields": "sys_id,correlation_id",
                }
                headers = {"idempotencyField": "correlation_id", "retryBackoff": "PT0.05S"}
            else:
                variables = {
                    "operation": "read",
                    "table": "incident",
                    "authentication": AUTH,
                    "query": "active=true",
                    "limit": 5,
                    "fields": "number",
                }
                headers = {"retryBackoff": "PT0.05S"}
            key = gateway.create_job(JOB_TYPE, variables, headers, retries=6)
            keys.append(key)
            if index % 2 == 0:
                creates.add(key)
        half = keys[: jobs // 2]
        await gateway.wait_for_all(half, timeout=None)
        rss["middle"] = rss_mb(worker.pid)
        outcomes = await gateway.wait_for_all(keys, timeout=None)
        elapsed = time.monotonic() - started
        rss["end"] = rss_mb(worker.pid)
        faults.cancel()
        worker.terminate()
        exit_code = await worker.wait()

        kinds = collections.Counter(outcome.kind for outcome in outcomes.values())
        finals_per_job = collections.Counter(
            sum(1 for o in gateway.outcomes_of(key) if o.is_final) for key in keys
        )
        correlation = collections.Counter(
            r["correlation_id"] for r in servicenow.records("incident")
        )
        duplicates = sum(count - 1 for count in correlation.values() if count > 1)
        completed_creates = sum(1 for key in creates if outcomes[key].kind == "complete")
        fault_hits = sum(1 for r in servicenow.requests if r.fault is not None)
        print(
            f"jobs: {jobs} in {elapsed:.1f} s ({jobs / elapsed:.0f} jobs/s), worker exit code {exit_code}"
        )
        print(
            f"requests to ServiceNow: {len(servicenow.requests)}, of which hit by a fault: {fault_hits} "
            f"({fault_hits / len(servicenow.requests):.1%})"
        )
        print(f"final outcomes: {dict(kinds)}; final outcomes per job: {dict(finals_per_job)}")
        print(
            f"creates completed: {completed_creates} of {len(creates)}; records: {len(servicenow.records('incident'))}; "
            f"duplicates: {duplicates}"
        )
        print(
            f"worker RSS MB: start {rss['start']:.1f}, middle {rss['middle']:.1f}, end {rss['end']:.1f}"
        )
        ok = (
            set(finals_per_job) == {1}
            and kinds == {"complete": jobs}
            and duplicates == 0
            and len(servicenow.records("incident")) == len(creates)
            and exit_code == 0
        )
        print("RESULT:", "OK" if ok else "FAILED")
        return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--in-flight", type=int, default=128)
    args = parser.parse_args()
    sys.exit(asyncio.run(soak(args.jobs, args.fault_rate, args.in_flight)))


if __name__ == "__main__":
    main()
