"""The README's examples of returnAll, aggregate and batch, run as written against the emulator,
and what the README says they give."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator
from servicenow_worker import feel

from .conftest import JOB_TYPE, PASSWORD, USER, StartWorker

README = Path(__file__).parents[2] / "README.md"
SECTION = "### Every page, counts and aggregates, several requests at once"


def readme_examples() -> list[tuple[dict[str, Any], str]]:
    """Each JSON example of the section, with the resultVariable the text after it names."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n### ", len(SECTION))]
    found = re.findall(r"```json\n(.*?)```\nwith header `resultVariable` = `(\w+)`", section, re.S)
    return [(json.loads(block), variable) for block, variable in found]


@pytest.fixture(name="instance")
def _instance(
    servicenow: ServiceNowEmulator, monkeypatch: pytest.MonkeyPatch
) -> ServiceNowEmulator:
    """The demo data, one more open P1 incident, and the README's secrets in the environment."""
    servicenow.seed_demo_data()
    [desk] = servicenow.records("sys_user_group")
    servicenow.insert(
        "incident",
        {
            "short_description": "Payroll run failed",
            "impact": "1",
            "urgency": "1",
            "assignment_group": desk["sys_id"],
            "reassignment_count": "1",
        },
    )
    monkeypatch.setenv("SECRET_snUser", USER)
    monkeypatch.setenv("SECRET_snPwd", PASSWORD)
    return servicenow


async def run(
    gateway: ZeebeGatewayEmulator, variables: dict[str, Any], result_variable: str
) -> Any:
    key = gateway.create_job(JOB_TYPE, variables, {"resultVariable": result_variable}, 3)
    outcome: JobOutcome = (await gateway.wait_for_outcomes(key, 1))[0]
    assert outcome.kind == "complete", outcome
    return outcome.variables[result_variable]


async def test_the_examples_give_what_the_readme_says(
    instance: ServiceNowEmulator, gateway: ZeebeGatewayEmulator, start_worker: StartWorker
) -> None:
    examples = readme_examples()
    assert [v["operation"] for v, _ in examples] == ["read", "aggregate", "batch"]
    await start_worker()
    (read_all, p1), (aggregate, by_group), (batch, answers) = examples

    records = await run(gateway, read_all, p1)
    assert {k: records[k] for k in ("status", "count", "totalCount", "hasMore", "pages")} == {
        "status": 200,
        "count": 2,
        "totalCount": 2,
        "hasMore": False,
        "pages": 1,
    }

    groups = await run(gateway, aggregate, by_group)
    assert groups["groups"] == [{"values": {"assignment_group": "Service Desk"}, "count": 2}]
    found = feel.compile_expression(
        'byGroup.groups[item.values.assignment_group = "Service Desk"][1].count'
    ).evaluate({by_group: groups})
    assert found == 2
    ungrouped = {k: v for k, v in aggregate.items() if k not in ("groupBy", "orderBy")}
    stats = await run(gateway, {**ungrouped, "avgFields": "reassignment_count"}, "stats")
    assert {k: stats[k] for k in ("count", "stats")} == {
        "count": 2,
        "stats": {"avg": {"reassignment_count": 0.5}},
    }

    done = await run(gateway, batch, answers)
    assert done["errorCount"] == 0
    assert [entry["status"] for entry in done["result"]] == [201, 201, 200]
    read = done["result"][2]
    assert (read["count"], read["totalCount"], read["hasMore"]) == (5, 6, True)
    assert len([r for r in instance.requests if r.path == "/api/now/v1/batch"]) == 1
