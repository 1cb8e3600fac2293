"""`aggregate`: ServiceNow's Aggregate API, numbers as numbers (docs/contract.md §9)."""

from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator

from .conftest import RunJob, job_variables


@pytest.fixture(name="groups")
def _groups(servicenow: ServiceNowEmulator) -> dict[str, str]:
    """Open P1 incidents: three for Network, one for Database, one unassigned; a closed one."""
    network = servicenow.insert("sys_user_group", {"name": "Network"})["sys_id"]
    database = servicenow.insert("sys_user_group", {"name": "Database"})["sys_id"]
    for group, reassigned in ((network, "2"), (network, "0"), (network, "1"), (database, "5")):
        servicenow.insert(
            "incident",
            {
                "assignment_group": group,
                "impact": "1",
                "urgency": "1",
                "reassignment_count": reassigned,
            },
        )
    servicenow.insert("incident", {"impact": "1", "urgency": "1", "reassignment_count": ""})
    servicenow.insert("incident", {"impact": "3", "urgency": "3", "state": "7"})
    return {"Network": network, "Database": database}


def aggregate(**inputs: Any) -> dict[str, Any]:
    return job_variables(operation="aggregate", table="incident", **inputs)


async def test_count_and_stats_without_group_by(
    run_job: RunJob, servicenow: ServiceNowEmulator, groups: dict[str, str]
) -> None:
    outcome = await run_job(
        aggregate(
            query="active=true^priority=1",
            avgFields="reassignment_count",
            maxFields="reassignment_count,number",
        ),
        {"resultVariable": "p1"},
    )
    assert outcome.kind == "complete", outcome
    p1 = outcome.variables["p1"]
    assert p1["status"] == 200
    assert p1["count"] == 5
    assert p1["stats"] == {
        "avg": {"reassignment_count": 2.0},
        "max": {"reassignment_count": 5, "number": "INC0010005"},
    }
    assert p1["result"] == {  # as ServiceNow sent it
        "stats": {
            "count": "5",
            "avg": {"reassignment_count": "2.0000"},
            "max": {"reassignment_count": "5", "number": "INC0010005"},
        }
    }
    [request] = servicenow.requests
    assert request.path == "/api/now/stats/incident"
    assert request.query == {
        "sysparm_query": "active=true^priority=1",
        "sysparm_count": "true",
        "sysparm_avg_fields": "reassignment_count",
        "sysparm_max_fields": "reassignment_count,number",
    }


async def test_groups_with_group_by(run_job: RunJob, groups: dict[str, str]) -> None:
    """One entry per group in ServiceNow's order, values by field, an empty average as null;
    FEEL finds a group by its value."""
    outcome = await run_job(
        aggregate(
            query="active=true^priority=1",
            groupBy="assignment_group",
            avgFields="reassignment_count",
            orderBy="COUNT^DESC",
            displayValue="true",
        ),
        {
            "resultVariable": "p1",
            "resultExpression": '{network: groups[item.values.assignment_group = "Network"][1].count}',
        },
    )
    assert outcome.kind == "complete", outcome
    assert outcome.variables["network"] == 3
    assert outcome.variables["p1"]["groups"][0] == {
        "values": {"assignment_group": "Network"},
        "count": 3,
        "avg": {"reassignment_count": 1.0},
    }
    assert {
        g["values"]["assignment_group"]: (g["count"], g["avg"]["reassignment_count"])
        for g in outcome.variables["p1"]["groups"]
    } == {"Network": (3, 1.0), "Database": (1, 5.0), "": (1, None)}
    assert "count" not in outcome.variables["p1"]


async def test_having_keeps_the_groups_that_pass(
    run_job: RunJob, servicenow: ServiceNowEmulator, groups: dict[str, str]
) -> None:
    outcome = await run_job(
        aggregate(query="priority=1", groupBy="assignment_group", having="count^sys_id^>^1"),
        {"resultVariable": "p1"},
    )
    assert outcome.kind == "complete", outcome
    assert outcome.variables["p1"]["groups"] == [
        {"values": {"assignment_group": groups["Network"]}, "count": 3}
    ]
    assert servicenow.requests[0].query["sysparm_having"] == "count^sys_id^>^1"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"count": False}, "count is false and no avgFields"),
        ({"having": "more than 3"}, "having must look like count^priority^>^3"),
        ({"orderBy": "count desc"}, "orderBy must look like COUNT^DESC"),
        ({"groupBy": "a..b"}, "groupBy must hold field names"),
    ],
)
async def test_invalid_inputs_send_nothing(
    run_job: RunJob, servicenow: ServiceNowEmulator, inputs: dict[str, Any], message: str
) -> None:
    outcome = await run_job(aggregate(**inputs))
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert message in outcome.error_message
    assert servicenow.requests == []


async def test_an_unknown_table_is_refused(run_job: RunJob) -> None:
    outcome = await run_job(job_variables(operation="aggregate", table="u_nothing"))
    assert (outcome.kind, outcome.retries) == ("fail", 0)
    assert "400 to aggregate on u_nothing: Invalid table u_nothing" in outcome.error_message
