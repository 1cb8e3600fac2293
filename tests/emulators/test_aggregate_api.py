"""The emulator's Aggregate API (`/api/now/stats/{table}`), seen from a client: the shapes
ServiceNow sends (an object without group-by, a list with it, every number a string)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from servicenow_emulators.table_api import InvalidQueryPolicy, ServiceNowEmulator

from .test_table_api import PASSWORD, USER, error, http_client

STATS = "/api/now/stats/incident"


@pytest.fixture
async def emulator() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emu:
        network = emu.insert("sys_user_group", {"name": "Network"})["sys_id"]
        database = emu.insert("sys_user_group", {"name": "Database"})["sys_id"]
        for group, impact, reassigned, short in (
            (network, "1", "2", "router down"),
            (network, "1", "0", "switch down"),
            (network, "2", "1", "slow link"),
            (database, "1", "5", "db down"),
            ("", "3", "", "who knows"),
        ):
            emu.insert(
                "incident",
                {
                    "assignment_group": group,
                    "impact": impact,
                    "urgency": impact,
                    "reassignment_count": reassigned,
                    "short_description": short,
                },
            )
        yield emu


def group_ids(emulator: ServiceNowEmulator) -> dict[str, str]:
    return {r["name"]: r["sys_id"] for r in emulator.records("sys_user_group")}


class TestWithoutGroupBy:
    async def test_count_is_a_string_in_an_object(self, client: httpx.AsyncClient) -> None:
        response = await client.get(STATS, params={"sysparm_count": "true"})
        assert response.status_code == 200
        assert response.json() == {"result": {"stats": {"count": "5"}}}
        assert "X-Total-Count" not in response.headers
        assert "Link" not in response.headers

    async def test_query_and_name_value_pairs_filter(self, client: httpx.AsyncClient) -> None:
        by_query = await client.get(
            STATS, params={"sysparm_count": "true", "sysparm_query": "priority=1"}
        )
        assert by_query.json()["result"]["stats"]["count"] == "3"
        by_pair = await client.get(STATS, params={"sysparm_count": "true", "impact": "2"})
        assert by_pair.json()["result"]["stats"]["count"] == "1"

    async def test_avg_sum_min_max(self, client: httpx.AsyncClient) -> None:
        """Averages with four decimals, whole sums without; min/max of a string field is a
        value of that field; empty values take no part."""
        response = await client.get(
            STATS,
            params={
                "sysparm_avg_fields": "reassignment_count",
                "sysparm_sum_fields": "reassignment_count",
                "sysparm_min_fields": "reassignment_count,short_description",
                "sysparm_max_fields": "reassignment_count,short_description,no_such_field",
            },
        )
        assert response.json() == {
            "result": {
                "stats": {
                    "avg": {"reassignment_count": "2.0000"},
                    "sum": {"reassignment_count": "8"},
                    "min": {"reassignment_count": "0", "short_description": "db down"},
                    "max": {"reassignment_count": "5", "short_description": "who knows"},
                }
            }
        }

    async def test_no_matching_rows(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            STATS,
            params={
                "sysparm_count": "true",
                "sysparm_avg_fields": "reassignment_count",
                "sysparm_query": "priority=4",
            },
        )
        assert response.json() == {
            "result": {"stats": {"count": "0", "avg": {"reassignment_count": ""}}}
        }

    async def test_versioned_path_and_head(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/now/v1/stats/incident", params={"sysparm_count": "true"})
        assert response.json() == {"result": {"stats": {"count": "5"}}}
        head = await client.head(STATS, params={"sysparm_count": "true"})
        assert head.status_code == 200


class TestGroupBy:
    async def test_groups_are_a_list_with_groupby_fields(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """One entry per group, ordered by value, the empty group first with value ""."""
        ids = group_ids(emulator)
        response = await client.get(
            STATS,
            params={
                "sysparm_count": "true",
                "sysparm_group_by": "assignment_group",
                "sysparm_avg_fields": "reassignment_count",
            },
        )
        expected = sorted(
            [
                (ids["Network"], "3", "1.0000"),
                (ids["Database"], "1", "5.0000"),
            ]
        )
        assert response.json() == {
            "result": [
                {
                    "stats": {"count": "1", "avg": {"reassignment_count": ""}},
                    "groupby_fields": [{"field": "assignment_group", "value": ""}],
                },
                *(
                    {
                        "stats": {"count": count, "avg": {"reassignment_count": avg}},
                        "groupby_fields": [{"field": "assignment_group", "value": group}],
                    }
                    for group, count, avg in expected
                ),
            ]
        }

    async def test_several_fields(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            STATS,
            params={
                "sysparm_count": "true",
                "sysparm_group_by": "priority,impact",
                "sysparm_query": "priorityIN1,3",
            },
        )
        assert [
            ([g["value"] for g in r["groupby_fields"]], r["stats"]["count"])
            for r in response.json()["result"]
        ] == [(["1", "1"], "3"), (["3", "2"], "1")]

    async def test_having_filters_groups(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            STATS,
            params={
                "sysparm_count": "true",
                "sysparm_group_by": "priority",
                "sysparm_having": "count^priority^>^1",
            },
        )
        assert [r["groupby_fields"][0]["value"] for r in response.json()["result"]] == ["1"]
        by_avg = await client.get(
            STATS,
            params={
                "sysparm_count": "true",
                "sysparm_group_by": "priority",
                "sysparm_having": "avg^reassignment_count^>=^1,count^priority^<^10",
            },
        )
        assert [r["groupby_fields"][0]["value"] for r in by_avg.json()["result"]] == ["1", "3"]

    async def test_bad_having_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            STATS, params={"sysparm_group_by": "priority", "sysparm_having": "count^>^1"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "Invalid having clause"

    @pytest.mark.parametrize(
        ("order_by", "expected"),
        [
            ("", ["1", "3", "5"]),
            ("priority^DESC", ["5", "3", "1"]),
            ("COUNT^DESC", ["1", "3", "5"]),
            ("COUNT", ["3", "5", "1"]),
            ("AVG^reassignment_count^DESC", ["1", "3", "5"]),
        ],
    )
    async def test_order_by(
        self, client: httpx.AsyncClient, order_by: str, expected: list[str]
    ) -> None:
        """Groups ordered by a field or an aggregate; ties keep the value order."""
        params = {
            "sysparm_count": "true",
            "sysparm_group_by": "priority",
            "sysparm_avg_fields": "reassignment_count",
        }
        if order_by:
            params["sysparm_order_by"] = order_by
        response = await client.get(STATS, params=params)
        assert [r["groupby_fields"][0]["value"] for r in response.json()["result"]] == expected

    @pytest.mark.parametrize(
        ("display", "expected"),
        [
            ("false", [{"field": "assignment_group", "value": "ID"}]),
            ("true", [{"field": "assignment_group", "value": "Database"}]),
            (
                "all",
                [{"field": "assignment_group", "value": "ID", "display_value": "Database"}],
            ),
        ],
    )
    async def test_display_value_names_the_groups(
        self,
        emulator: ServiceNowEmulator,
        client: httpx.AsyncClient,
        display: str,
        expected: list[dict[str, str]],
    ) -> None:
        database = group_ids(emulator)["Database"]
        response = await client.get(
            STATS,
            params={
                "sysparm_count": "true",
                "sysparm_group_by": "assignment_group",
                "sysparm_display_value": display,
                "sysparm_query": f"assignment_group={database}",
            },
        )
        [group] = response.json()["result"]
        assert group["groupby_fields"] == [
            {k: database if v == "ID" else v for k, v in entry.items()} for entry in expected
        ]

    async def test_choice_labels(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            STATS,
            params={
                "sysparm_count": "true",
                "sysparm_group_by": "priority",
                "sysparm_display_value": "true",
            },
        )
        assert [r["groupby_fields"][0]["value"] for r in response.json()["result"]] == [
            "1 - Critical",
            "3 - Moderate",
            "5 - Planning",
        ]


class TestErrorsAndAcls:
    async def test_unknown_table_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            "/api/now/stats/no_such_table", params={"sysparm_count": "true"}
        )
        assert response.status_code == 400
        assert response.json() == error("Invalid table no_such_table", None)

    async def test_only_get(self, client: httpx.AsyncClient) -> None:
        response = await client.post(STATS, json={})
        assert response.status_code == 405

    async def test_needs_authentication(self, emulator: ServiceNowEmulator) -> None:
        async with http_client(emulator.base_url, auth=None) as anonymous:
            response = await anonymous.get(STATS, params={"sysparm_count": "true"})
        assert response.status_code == 401

    async def test_hidden_rows_count_unless_every_row_must_be_readable(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        emulator.hidden_sys_ids.add(emulator.records("incident")[0]["sys_id"])
        counted = await client.get(STATS, params={"sysparm_count": "true"})
        assert counted.json() == {"result": {"stats": {"count": "5"}}}
        emulator.aggregate_needs_every_row = True
        refused = await client.get(STATS, params={"sysparm_count": "true"})
        assert refused.status_code == 403
        assert refused.json()["error"]["message"] == "User Not Authorized"

    async def test_query_policy_applies(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        emulator.invalid_query = InvalidQueryPolicy.FORBID
        response = await client.get(
            STATS, params={"sysparm_count": "true", "sysparm_query": "no_field=1"}
        )
        assert response.status_code == 403
