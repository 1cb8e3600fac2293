"""Each operation end to end: job → worker → ServiceNow emulator → job outcome (docs/contract.md §2, §4)."""

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker.inputs import INPUT_NAMES

from .conftest import JOB_TYPE, USER, RunJob, StartWorker, job_variables


class TestCreate:
    async def test_create_in_label_form_table(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A create writes the payload and returns the new record under resultVariable."""
        outcome = await run_job(
            job_variables(
                operation="Create",
                table="Requested Item [sc_req_item]",
                payload={"short_description": "New laptop", "urgency": 2},
            ),
            {"resultVariable": "ritm"},
        )
        assert outcome.kind == "complete"
        response = outcome.variables["ritm"]
        assert response["status"] == 201
        assert response["result"]["number"].startswith("RITM")
        assert response["result"]["short_description"] == "New laptop"
        [stored] = servicenow.records("sc_req_item")
        assert stored["sys_id"] == response["result"]["sys_id"]
        [request] = servicenow.requests
        assert (request.method, request.path, request.user) == (
            "POST",
            "/api/now/table/sc_req_item",
            USER,
        )
        assert request.body == {"short_description": "New laptop", "urgency": 2}

    async def test_payload_as_json_string(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A payload typed as JSON text is sent as the object it holds."""
        outcome = await run_job(
            job_variables(
                operation="create", table="incident", payload='{"short_description": "x"}'
            )
        )
        assert outcome.kind == "complete"
        assert outcome.variables == {}
        assert servicenow.requests[0].body == {"short_description": "x"}

    async def test_header_wins_over_variable(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A header set in the model beats a process variable of the same name."""
        outcome = await run_job(
            job_variables(operation="create", table="sys_user", payload={}),
            {"table": "incident"},
        )
        assert outcome.kind == "complete"
        assert servicenow.requests[0].table == "incident"


class TestRead:
    async def test_query_page(self, run_job: RunJob, servicenow: ServiceNowEmulator) -> None:
        """A read by query sends the query as given and reports count, totalCount and hasMore."""
        for index in range(5):
            servicenow.insert(
                "incident", {"short_description": f"disk full {index}", "priority": "1"}
            )
        servicenow.insert("incident", {"short_description": "printer", "priority": "1"})
        outcome = await run_job(
            job_variables(
                operation="read",
                table="incident",
                query="short_descriptionLIKEdisk full^priority=1^ORDERBYshort_description",
                limit=2,
                offset=1,
                fields="number,short_description",
            ),
            {"resultVariable": "page"},
        )
        assert outcome.kind == "complete"
        page = outcome.variables["page"]
        assert [r["short_description"] for r in page["result"]] == ["disk full 1", "disk full 2"]
        assert set(page["result"][0]) == {"number", "short_description"}
        assert (page["status"], page["count"], page["totalCount"], page["hasMore"]) == (
            200,
            2,
            5,
            True,
        )
        sent = servicenow.requests[0].query
        assert (
            sent["sysparm_query"]
            == "short_descriptionLIKEdisk full^priority=1^ORDERBYshort_description"
        )
        assert (sent["sysparm_limit"], sent["sysparm_offset"]) == ("2", "1")

    async def test_last_page_has_no_more(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """hasMore is false on the last page; an empty result is a list."""
        outcome = await run_job(
            job_variables(operation="read", table="problem", query="active=true"),
            {"resultVariable": "page"},
        )
        assert outcome.variables["page"] == {
            "status": 200,
            "result": [],
            "count": 0,
            "totalCount": 0,
            "hasMore": False,
        }

    async def test_read_by_sys_id_with_display_values(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """A read with sysId returns that one record, with display values as asked."""
        record = servicenow.insert("incident", {"short_description": "one"})
        outcome = await run_job(
            job_variables(
                operation="read",
                table="incident",
                sysId=record["sys_id"],
                displayValue="all",
                excludeReferenceLink="true",
            ),
            {"resultVariable": "incident"},
        )
        result = outcome.variables["incident"]["result"]
        assert result["short_description"] == {"display_value": "one", "value": "one"}
        sent = servicenow.requests[0]
        assert sent.path == f"/api/now/table/incident/{record['sys_id']}"
        assert sent.query == {
            "sysparm_display_value": "all",
            "sysparm_exclude_reference_link": "true",
        }


class TestUpdateAndDelete:
    async def test_update_patches_fields(
        self, run_job: RunJob, servicenow: ServiceNowEmulator
    ) -> None:
        """An update is a PATCH of the given fields; the whole record comes back."""
        record = servicenow.insert("incident", {"short_description": "old", "urgency": "3"})
        outcome = await run_job(
            job_variables(
                operation="update",
                table="incident",
                sysId=record["sys_id"],
                payload={"urgency": "1"},
            ),
            {"resultVariable": "updated"},
        )
        updated = outcome.variables["updated"]
        assert (updated["status"], updated["result"]["urgency"]) == (200, "1")
        assert updated["result"]["short_description"] == "old"
        assert servicenow.requests[0].method == "PATCH"
        assert servicenow.record("incident", record["sys_id"])["urgency"] == "1"

    async def test_delete(self, run_job: RunJob, servicenow: ServiceNowEmulator) -> None:
        """A delete answers 204 and a null result; the record is gone."""
        record = servicenow.insert("incident", {"short_description": "temp"})
        outcome = await run_job(
            job_variables(operation="DELETE", table="incident", sysId=record["sys_id"]),
            {"resultVariable": "deleted"},
        )
        assert outcome.variables == {"deleted": {"status": 204, "result": None}}
        assert servicenow.record("incident", record["sys_id"]) is None


async def test_worker_asks_only_for_its_inputs(
    gateway: ZeebeGatewayEmulator, start_worker: StartWorker
) -> None:
    """The worker fetches exactly its input variables, never the whole process's data."""
    await start_worker()
    key = gateway.create_job(JOB_TYPE, {"unrelated": "x", **job_variables(operation="x")}, {})
    await gateway.wait_for_outcome(key)
    assert gateway.activate_requests[0].fetch_variable == INPUT_NAMES
