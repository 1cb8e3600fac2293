"""`servicenow-worker --demo`: the real worker against built-in emulators of Zeebe and ServiceNow.

Nothing here is needed in production. It shows, on a machine with neither a Camunda cluster nor a
ServiceNow instance, what the worker does with the jobs a process would give it.
"""

import asyncio
import json
from typing import Any, Final

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator
from servicenow_worker.app import open_worker
from servicenow_worker.logs import configure
from servicenow_worker.settings import Settings

DEMO_USER: Final = "camunda"
DEMO_PASSWORD: Final = "demo-password"  # noqa: S105 - the emulator's own demo user
AUTH: Final = {"type": "basic", "username": DEMO_USER, "password": "{{secrets.snPwd}}"}
BANNER: Final = """\
DEMO MODE: the real servicenow-worker, talking to emulators built into this package:
  a Zeebe gateway emulator at {gateway} (it plays the process engine and hands out jobs)
  a ServiceNow Table API emulator at {servicenow} (it plays the instance)
No real Camunda or ServiceNow is contacted. See the README to point the worker at real ones.
"""


async def run_demo() -> int:
    """Run a create → read → update → delete round trip with a batch, an aggregate and a read of
    every page on the way, and two failures; the exit code."""
    configure("INFO", "console")
    async with (
        ServiceNowEmulator(users={DEMO_USER: DEMO_PASSWORD}) as servicenow,
        ZeebeGatewayEmulator() as gateway,
    ):
        print(BANNER.format(gateway=gateway.address, servicenow=servicenow.base_url), flush=True)
        settings = Settings(
            zeebe_address=gateway.address,
            servicenow_url_template=servicenow.base_url,
            worker_poll_timeout=1,
        )
        async with open_worker(settings, secrets={"snPwd": DEMO_PASSWORD}) as pump:
            running = asyncio.create_task(pump.run())
            await _scenario(gateway)
            pump.request_stop()
            await running
    return 0


async def _scenario(gateway: ZeebeGatewayEmulator) -> None:
    created = await _job(
        gateway,
        "Create an incident",
        {
            "operation": "create",
            "table": "Incident [incident]",
            "payload": {"short_description": "Disk full on db-01", "urgency": "2"},
        },
    )
    sys_id = created.variables["response"]["result"]["sys_id"]
    await _job(
        gateway,
        "Read open incidents",
        {
            "operation": "read",
            "table": "incident",
            "query": "active=true^ORDERBYDESCsys_created_on",
            "limit": 5,
            "fields": "number,short_description,urgency",
        },
    )
    await _job(
        gateway,
        "Create three incidents in one request (batch: ServiceNow's Batch API)",
        {
            "operation": "batch",
            "requests": [
                {
                    "operation": "create",
                    "table": "incident",
                    "payload": {"short_description": short, "impact": impact, "urgency": impact},
                    "fields": "number,priority",
                }
                for short, impact in (
                    ("Core switch down", "1"),
                    ("VPN drops every hour", "2"),
                    ("Core router flapping", "1"),
                )
            ],
        },
    )
    await _job(
        gateway,
        "Count open incidents by priority (aggregate: ServiceNow's Aggregate API)",
        {
            "operation": "aggregate",
            "table": "incident",
            "query": "active=true",
            "groupBy": "priority",
            "displayValue": "true",
        },
    )
    await _job(
        gateway,
        "Read every open incident, two per page (read with returnAll)",
        {
            "operation": "read",
            "table": "incident",
            "query": "active=true",
            "returnAll": True,
            "limit": 2,
            "fields": "number,priority",
        },
    )
    await _job(
        gateway,
        "Update the incident",
        {
            "operation": "update",
            "table": "incident",
            "sysId": sys_id,
            "payload": {"urgency": "1"},
            "fields": "number,urgency",
        },
    )
    await _job(
        gateway,
        "Delete the incident",
        {"operation": "delete", "table": "incident", "sysId": sys_id},
    )
    await _job(
        gateway,
        "Read it again (404: fails at once)",
        {"operation": "read", "table": "incident", "sysId": sys_id},
    )
    await _job(
        gateway,
        "Update without sysId (invalid input: nothing is sent)",
        {"operation": "update", "table": "incident", "payload": {}},
    )


async def _job(gateway: ZeebeGatewayEmulator, title: str, inputs: dict[str, Any]) -> JobOutcome:
    print(f"\n--- {title}: {json.dumps(inputs)}", flush=True)
    key = gateway.create_job(
        "servicenow:1", {"authentication": AUTH, **inputs}, {"resultVariable": "response"}
    )
    outcome = await gateway.wait_for_outcome(key)
    if outcome.kind == "complete":
        print(f"    => job completed: response = {json.dumps(outcome.variables['response'])}")
    else:
        print(f"    => job failed, retries {outcome.retries}: {outcome.error_message}")
    return outcome
