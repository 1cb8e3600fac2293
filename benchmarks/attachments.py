"""Attachment throughput: MB/s of a file streamed through the worker, each direction (issue 16).

    nice -n 5 .venv/bin/python benchmarks/attachments.py [--size-mb 50] [--rounds 3]

The Zeebe gateway, ServiceNow and Camunda documents emulators run in this process on loopback; the
worker is the installed console script in its own process, as an operator runs it. Per round: an
`attach` of a document of `--size-mb` MB (document store → worker → ServiceNow) and a `download` of
that attachment (ServiceNow → worker → document store), each timed from the job's creation to its
completion on the gateway (so the figure includes job pickup, one small lookup for duplicates, and
both emulators' own work). Prints each round and the median; results go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from servicenow_emulators.camunda_documents import CamundaDocumentsEmulator
from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

JOB_TYPE = "servicenow:1"
USER, PASSWORD = "bench", "bench-pw"
AUTH = {"type": "basic", "username": USER, "password": PASSWORD}
CONSOLE_SCRIPT = Path(sys.executable).with_name("servicenow-worker")
MB = 1024 * 1024


async def timed_job(gateway: ZeebeGatewayEmulator, variables: dict[str, Any]) -> tuple[float, Any]:
    started = time.monotonic()
    key = gateway.create_job(JOB_TYPE, variables, {"resultVariable": "answer"})
    outcome = await gateway.wait_for_outcome(key, timeout=300)
    if outcome.kind != "complete":
        raise SystemExit(f"job failed: {outcome.error_message}")
    return outcome.at - started, outcome.variables["answer"]


async def main(size_mb: int, rounds: int) -> None:
    data = os.urandom(size_mb * MB)
    async with (
        ZeebeGatewayEmulator() as gateway,
        ServiceNowEmulator(users={USER: PASSWORD}) as servicenow,
        CamundaDocumentsEmulator() as documents,
    ):
        worker = await asyncio.create_subprocess_exec(
            str(CONSOLE_SCRIPT),
            env={
                "PATH": os.environ.get("PATH", ""),
                "ZEEBE_ADDRESS": gateway.address,
                "SERVICENOW_URL_TEMPLATE": servicenow.base_url,
                "CAMUNDA_REST_ADDRESS": documents.rest_address,
                "HEALTH_PORT": "0",
                "WORKER_POLL_TIMEOUT": "0.5",
                "LOG_LEVEL": "WARNING",
            },
        )
        try:
            sys_id = servicenow.insert("incident", {"short_description": "bench"})["sys_id"]
            base = {"authentication": AUTH}
            # Warm-up, not counted: the worker's start-up, first poll and first connections.
            warm = documents.add(b"w", file_name="warm.bin")
            await timed_job(
                gateway,
                {**base, "operation": "attach", "table": "incident", "sysId": sys_id,
                 "document": warm},
            )  # fmt: skip
            attach_rates, download_rates = [], []
            for index in range(rounds):
                reference = documents.add(data, file_name=f"file-{index}.bin")
                seconds, answer = await timed_job(
                    gateway,
                    {**base, "operation": "attach", "table": "incident", "sysId": sys_id,
                     "document": reference},
                )  # fmt: skip
                attach_rates.append(size_mb / seconds)
                attachment = answer["result"]["sys_id"]
                seconds, _ = await timed_job(
                    gateway, {**base, "operation": "download", "attachmentSysId": attachment}
                )
                download_rates.append(size_mb / seconds)
                print(
                    f"round {index + 1}: attach {attach_rates[-1]:.0f} MB/s, "
                    f"download {download_rates[-1]:.0f} MB/s",
                    flush=True,
                )
            print(
                f"median of {rounds} rounds of {size_mb} MB: attach "
                f"{statistics.median(attach_rates):.0f} MB/s, download "
                f"{statistics.median(download_rates):.0f} MB/s"
            )
        finally:
            worker.terminate()
            await worker.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.size_mb, arguments.rounds))
