"""The pure parts of returnAll, aggregate and batch (docs/contract.md §9); the rest is shown end to
end in tests/e2e/test_read_all.py, test_aggregate.py and test_batch.py."""

import time
from typing import Any

import pytest

from servicenow_worker.errors import ServiceNowUnavailable
from servicenow_worker.inputs import InputRules, OutputOptions, RecordRequest
from servicenow_worker.operations import JobContext, parse_inputs
from servicenow_worker.operations.aggregate import AggregateResponse
from servicenow_worker.operations.table import read_all, stable_query
from servicenow_worker.servicenow import TableResponse
from servicenow_worker.settings import Settings


@pytest.mark.parametrize(
    ("query", "sent"),
    [
        (None, "ORDERBYsys_id"),
        ("", "ORDERBYsys_id"),
        ("active=true", "active=true^ORDERBYsys_id"),
        ("active=true^ORDERBYnumber", "active=true^ORDERBYnumber"),
        ("ORDERBYDESCsys_created_on^active=true", "ORDERBYDESCsys_created_on^active=true"),
        # text that merely holds the word is no order
        ("short_descriptionLIKEORDERBY", "short_descriptionLIKEORDERBY^ORDERBYsys_id"),
        ("a=1^NQb=2", "a=1^NQb=2^ORDERBYsys_id"),
    ],
)
def test_stable_query(query: str | None, sent: str) -> None:
    assert stable_query(query) == sent


@pytest.mark.parametrize(
    ("stats", "count", "converted"),
    [
        ({"count": "14"}, 14, {}),
        ({"count": ""}, None, {}),
        ({}, None, {}),
        (
            {"count": "3", "avg": {"a": "1.2500", "b": ""}, "min": {"n": "INC0000007", "p": "-1"}},
            3,
            {"avg": {"a": 1.25, "b": None}, "min": {"n": "INC0000007", "p": -1}},
        ),
        ({"sum": {"x": "1e3"}}, None, {"sum": {"x": "1e3"}}),
    ],
)
def test_numbers_as_numbers(stats: dict[str, Any], count: int | None, converted: Any) -> None:
    answer = AggregateResponse(200, {"stats": stats}, grouped=False, body_bytes=0).as_variable()
    assert answer == {"status": 200, "result": {"stats": stats}, "count": count, "stats": converted}


def test_groups_keep_servicenows_order_and_display_values() -> None:
    result = [
        {
            "stats": {"count": "2"},
            "groupby_fields": [{"field": "state", "value": "2", "display_value": "In Progress"}],
        },
        {"stats": {"count": "5", "max": {"state": "7"}}, "groupby_fields": []},
        "not a group",
    ]
    answer = AggregateResponse(200, result, grouped=True, body_bytes=0).as_variable()
    assert answer["groups"] == [
        {"values": {"state": "2"}, "displayValues": {"state": "In Progress"}, "count": 2},
        {"values": {}, "count": 5, "max": {"state": 7}},
    ]


class EndlessPages:
    """A client whose every page is empty (hidden by ACLs) and says another one follows."""

    def __init__(self) -> None:
        self.pages = 0

    async def send(self, request: RecordRequest, *, deadline: float) -> TableResponse:
        self.pages += 1
        return TableResponse(200, [], is_list=True, has_more=True)


async def test_read_all_stops_at_the_jobs_deadline() -> None:
    """However many (empty) pages ServiceNow promises, no page starts after the job's deadline."""
    client = EndlessPages()
    _, request = parse_inputs(
        {
            "authentication": {"username": "u", "password": "p"},
            "operation": "read",
            "table": "incident",
            "returnAll": True,
        },
        InputRules("https://x.service-now.com", (), 1000),
    )
    context = JobContext(
        servicenow=client,  # type: ignore[arg-type]
        settings=Settings(),
        options=OutputOptions(),
        deadline=time.monotonic() + 0.05,
        process_instance_key=1,
        element_instance_key=2,
    )
    with pytest.raises(ServiceNowUnavailable, match="ran out of its time"):
        await read_all(context, request)
    assert client.pages >= 1
