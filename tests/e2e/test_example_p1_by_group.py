"""examples/servicenow-p1-by-group.bpmn run task by task by the real worker against the emulator:
its input mappings and headers as Zeebe would hand them over, one job per task, in flow order."""

from pathlib import Path
from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from tests.template.test_examples import job_variables, read_process

from .conftest import JOB_TYPE, PASSWORD, USER, StartWorker

EXAMPLE = Path(__file__).parents[2] / "examples" / "servicenow-p1-by-group.bpmn"


async def run_tasks(gateway: ZeebeGatewayEmulator) -> dict[str, Any]:
    """Each service task's job, with the variables the tasks before it left; the last scope."""
    _, tasks = read_process(EXAMPLE)
    scope: dict[str, Any] = {}
    for task in tasks:
        key = gateway.create_job(JOB_TYPE, job_variables(task, scope), task.headers, 3)
        [outcome] = await gateway.wait_for_outcomes(key, 1)
        assert outcome.kind == "complete", (task.id, outcome)
        scope.update(outcome.variables)
    return scope


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_snUser", USER)
    monkeypatch.setenv("SECRET_snPwd", PASSWORD)


async def test_counts_by_group_then_reads_every_open_p1(
    servicenow: ServiceNowEmulator, gateway: ZeebeGatewayEmulator, start_worker: StartWorker
) -> None:
    groups = {name: servicenow.insert("sys_user_group", {"name": name}) for name in ("DB", "Net")}
    for name, count in (("Net", 3), ("DB", 2)):
        for _ in range(count):
            servicenow.insert(
                "incident",
                {"impact": "1", "urgency": "1", "assignment_group": groups[name]["sys_id"]},
            )
    servicenow.insert("incident", {"impact": "3", "urgency": "3"})  # not P1
    await start_worker()

    scope = await run_tasks(gateway)

    assert scope["p1Total"] == 5
    assert scope["p1ByGroup"] == [{"group": "Net", "count": 3}, {"group": "DB", "count": 2}]
    incidents = scope["p1Incidents"]
    assert (incidents["count"], incidents["hasMore"], incidents["pages"]) == (5, False, 1)
    assert {r["assignment_group"] for r in incidents["result"]} == {"Net", "DB"}
    assert [r["number"] for r in incidents["result"]] == sorted(
        r["number"] for r in incidents["result"]
    )
