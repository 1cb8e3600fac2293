"""More from one task (docs/contract.md §9): the cost of `returnAll` and what `batch` saves.

    .venv/bin/python benchmarks/more_from_one_task.py             # both, about 1 minute
    .venv/bin/python benchmarks/more_from_one_task.py --runs 5    # more repetitions

* read-all: one `read` job with `returnAll` over 10 000 incidents, pages of 1 000, against the
  ServiceNow emulator; twice per run: with four fields into `resultVariable` (what a process
  keeps), and with every field (about 15 MB of JSON) kept only as a count by `resultExpression`.
  Figures: wall time, the worker process's CPU time per record (user + system, from /proc, over
  the job), its peak RSS (VmHWM, the whole process life so far), pages.
* batch: 200 creates as 200 single-create jobs against one batch job of 200 creates, A/B
  interleaved in each run, at 0 and 50 ms emulated ServiceNow latency. Figures: HTTP requests
  counted at the emulator, and the time from enqueueing the jobs to the last completion.

The worker is the installed `servicenow-worker` console script in its own process (its CPU and
memory are its own); the emulators run in this one. Results go to docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import cpu_seconds, peak_rss_mb

JOB_TYPE = "servicenow:1"
USER, PASSWORD = "bench", "bench-pw"
AUTH = {"type": "basic", "username": USER, "password": PASSWORD}
CONSOLE_SCRIPT = Path(sys.executable).with_name("servicenow-worker")
RECORDS = 10_000
CREATES = 200


@asynccontextmanager
async def worker(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> AsyncIterator[int]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ZEEBE_ADDRESS": gateway.address,
        "SERVICENOW_URL_TEMPLATE": servicenow.base_url,
        "SERVICENOW_MAX_LIMIT": "1000",
        "WORKER_POLL_TIMEOUT": "1",
        "WORKER_JOB_TIMEOUT": "300",
        "HEALTH_PORT": "0",
        "LOG_LEVEL": "ERROR",
    }
    process = await asyncio.create_subprocess_exec(
        str(CONSOLE_SCRIPT), env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await gateway.wait_for_long_polls(JOB_TYPE)
        yield process.pid
    finally:
        process.terminate()
        await process.wait()


async def one_job(
    gateway: ZeebeGatewayEmulator, variables: dict[str, Any], headers: dict[str, str]
) -> Any:
    key = gateway.create_job(JOB_TYPE, {"authentication": AUTH, **variables}, headers, 3)
    [outcome] = await gateway.wait_for_outcomes(key, 1, timeout=300)
    if outcome.kind != "complete":
        raise SystemExit(f"the job did not complete: {outcome}")
    return outcome


async def read_all(runs: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with (
        ServiceNowEmulator(users={USER: PASSWORD}) as servicenow,
        ZeebeGatewayEmulator() as gateway,
    ):
        for n in range(RECORDS):
            servicenow.insert(
                "incident",
                {"short_description": f"benchmark incident {n}", "impact": "2", "urgency": "2"},
            )
        async with worker(gateway, servicenow) as pid:
            for run in range(runs):
                for case, inputs, headers in (
                    (
                        "4 fields → resultVariable",
                        {"fields": "number,short_description,priority,state"},
                        {"resultVariable": "incidents"},
                    ),
                    ("every field → resultExpression", {}, {"resultExpression": "{n: count}"}),
                ):
                    servicenow.clear_requests()
                    cpu, started = cpu_seconds(pid), time.monotonic()
                    outcome = await one_job(
                        gateway,
                        {"operation": "read", "table": "incident", "returnAll": True,
                         "maxRecords": RECORDS, **inputs},
                        headers,
                    )  # fmt: skip
                    wall, used = time.monotonic() - started, cpu_seconds(pid) - cpu
                    count = (
                        outcome.variables["incidents"]["count"]
                        if "incidents" in outcome.variables
                        else outcome.variables["n"]
                    )
                    assert count == RECORDS, count
                    rows.append(
                        {
                            "run": run + 1,
                            "case": case,
                            "wall_s": wall,
                            "cpu_us_per_record": used / RECORDS * 1e6,
                            "peak_rss_mb": peak_rss_mb(pid),
                            "pages": len(servicenow.requests),
                        }
                    )
                    print(rows[-1], flush=True)
    return rows


async def batch(runs: int, latency_ms: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with (
        ServiceNowEmulator(users={USER: PASSWORD}, latency=latency_ms / 1000) as servicenow,
        ZeebeGatewayEmulator() as gateway,
        worker(gateway, servicenow) as pid,
    ):
        for run in range(runs):
            for case in ("200 single creates", "1 batch of 200 creates"):
                servicenow.clear_requests()
                cpu, started = cpu_seconds(pid), time.monotonic()
                if case.startswith("200"):
                    keys = [
                        gateway.create_job(
                            JOB_TYPE,
                            {"authentication": AUTH, **create(n)},
                            {},
                            3,
                        )
                        for n in range(CREATES)
                    ]
                    outcomes = await gateway.wait_for_all(keys, timeout=300)
                    assert all(o.kind == "complete" for o in outcomes.values())
                else:
                    await one_job(
                        gateway,
                        {"operation": "batch", "requests": [create(n) for n in range(CREATES)]},
                        {},
                    )
                rows.append(
                    {
                        "run": run + 1,
                        "latency_ms": latency_ms,
                        "case": case,
                        "wall_s": time.monotonic() - started,
                        "http_requests": len(servicenow.requests),
                        "worker_cpu_s": cpu_seconds(pid) - cpu,
                    }
                )
                print(rows[-1], flush=True)
    return rows


def create(n: int) -> dict[str, Any]:
    return {
        "operation": "create",
        "table": "incident",
        "payload": {"short_description": f"batch benchmark {n}", "urgency": "3"},
        "fields": "sys_id,number",
    }


def summary(rows: list[dict[str, Any]], keys: tuple[str, ...], figures: tuple[str, ...]) -> None:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    for group, members in groups.items():
        text = ", ".join(
            f"{f} median {statistics.median(m[f] for m in members):.3g} "
            f"(min {min(m[f] for m in members):.3g}, max {max(m[f] for m in members):.3g})"
            for f in figures
        )
        print(f"  {' / '.join(map(str, group))}: {text}")


async def main(options: argparse.Namespace) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    reads = await read_all(options.runs)
    batches = [row for latency in (0, 50) for row in await batch(options.runs, latency)]
    print("\nread-all, 10 000 records, pages of 1 000:")
    summary(reads, ("case",), ("wall_s", "cpu_us_per_record", "peak_rss_mb", "pages"))
    print("\nbatch against single creates:")
    summary(batches, ("latency_ms", "case"), ("wall_s", "http_requests", "worker_cpu_s"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
