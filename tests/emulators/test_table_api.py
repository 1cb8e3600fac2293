"""The ServiceNow Table API emulator, seen from a client: statuses, exact bodies and headers."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiohttp import web

from servicenow_emulators import _table_query
from servicenow_emulators.table_api import (
    MAX_BODY_BYTES,
    AuthResult,
    BasicAuthChecker,
    Fault,
    FaultKind,
    Field,
    FieldType,
    InvalidQueryPolicy,
    ServiceNowEmulator,
)

USER, PASSWORD = "admin", "secret"
INCIDENTS = "/api/now/table/incident"


def http_client(
    base_url: str, auth: tuple[str, str] | None = (USER, PASSWORD)
) -> httpx.AsyncClient:
    """A client for the loopback emulator (plain HTTP: verify=False only skips loading the CA
    bundle, which costs more than a whole test)."""
    return httpx.AsyncClient(base_url=base_url, auth=auth, verify=False)


def error(message: str, detail: str | None) -> dict[str, object]:
    return {"error": {"message": message, "detail": detail}, "status": "failure"}


NOT_FOUND = error("No Record found", "Record doesn't exist or ACL restricts the record retrieval")


def parse_link(header: str) -> dict[str, int]:
    """rel → sysparm_offset of a Link header."""
    offsets = {}
    for part in header.split(","):
        url, rel = re.fullmatch(r'<([^>]+)>;rel="(\w+)"', part).groups()  # type: ignore[union-attr]
        offsets[rel] = int(parse_qs(urlsplit(url).query)["sysparm_offset"][0])
    return offsets


class TestRouting:
    async def test_versioned_and_unversioned_paths_serve_the_same_record(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """/api/now/table, /api/now/v1/table and /api/now/v2/table all reach the table."""
        sys_id = emulator.insert("incident", {"short_description": "x"})["sys_id"]
        for prefix in ("/api/now", "/api/now/v1", "/api/now/v2"):
            response = await client.get(f"{prefix}/table/incident/{sys_id}")
            assert response.status_code == 200
            assert response.json()["result"]["sys_id"] == sys_id

    async def test_empty_list_is_404_on_v1_and_200_elsewhere(
        self, client: httpx.AsyncClient
    ) -> None:
        """Only v1 answers a list that matches nothing with 404 and its own detail."""
        v1 = await client.get("/api/now/v1/table/incident")
        assert v1.status_code == 404
        assert v1.json() == error(
            "No Record found",
            "Records matching query not found. Check query parameter or offset parameter",
        )
        for path in ("/api/now/v2/table/incident", INCIDENTS):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.json() == {"result": []}

    async def test_unknown_table_is_400(self, client: httpx.AsyncClient) -> None:
        """An unknown table is a 400 naming it, for reads and writes alike."""
        for response in (
            await client.get("/api/now/table/sys_user_groups"),
            await client.post("/api/now/table/sys_user_groups", json={}),
        ):
            assert response.status_code == 400
            assert response.json() == error("Invalid table sys_user_groups", None)

    @pytest.mark.parametrize(
        "path", ["/api/now/tables/incident", "/api/now/v3/table/incident", "/", "/api/now/table"]
    )
    async def test_unknown_path_is_400(self, client: httpx.AsyncClient, path: str) -> None:
        """A path that matches no API is a 400, not a 404."""
        response = await client.get(path)
        assert response.status_code == 400
        assert response.json() == error("Requested URI does not represent any resource", None)

    @pytest.mark.parametrize(
        ("method", "path"),
        [("PATCH", INCIDENTS), ("DELETE", INCIDENTS), ("POST", f"{INCIDENTS}/abc")],
    )
    async def test_unsupported_method_is_405(
        self, client: httpx.AsyncClient, method: str, path: str
    ) -> None:
        """No list-level PATCH or DELETE, no POST to a record."""
        response = await client.request(method, path, json={})
        assert response.status_code == 405
        assert response.json()["status"] == "failure"
        assert "Allow" in response.headers

    async def test_head_is_get_without_body(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """HEAD answers like GET, headers included, with no body."""
        emulator.insert("incident", {})
        response = await client.head(INCIDENTS)
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["X-Total-Count"] == "1"

    async def test_method_override_header(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """X-HTTP-Method-Override turns a POST into the named method."""
        sys_id = emulator.insert("incident", {})["sys_id"]
        response = await client.post(
            f"{INCIDENTS}/{sys_id}",
            json={"short_description": "changed"},
            headers={"X-HTTP-Method-Override": "PATCH"},
        )
        assert response.status_code == 200
        assert emulator.record("incident", sys_id)["short_description"] == "changed"  # type: ignore[index]

    async def test_response_headers_look_like_servicenow(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """JSON content type with ServiceNow's exact spelling, a 12-hex transaction id."""
        for response in (await client.get(INCIDENTS), await client.get("/api/now/table/nope")):
            assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
            assert re.fullmatch(r"[0-9a-f]{12}", response.headers["X-Transaction-ID"])
            assert response.headers["Server"] == "ServiceNow"
        assert emulator.requests[-1].transaction_id == response.headers["X-Transaction-ID"]


class TestAuthentication:
    @pytest.mark.parametrize(
        "auth",
        [None, (USER, "wrong"), ("nobody", PASSWORD)],
        ids=["none", "wrong-password", "unknown-user"],
    )
    async def test_rejected_credentials_get_401(
        self, emulator: ServiceNowEmulator, auth: tuple[str, str] | None
    ) -> None:
        """Missing or wrong basic credentials: 401, exact body, BASIC challenge."""
        async with http_client(emulator.base_url, auth) as anonymous:
            response = await anonymous.get(INCIDENTS)
        assert response.status_code == 401
        assert response.json() == error(
            "User Not Authenticated", "Required to provide Auth information"
        )
        assert response.headers["WWW-Authenticate"] == 'BASIC realm="Service-now"'
        assert emulator.requests[-1].user is None

    async def test_malformed_basic_header_gets_401(self, emulator: ServiceNowEmulator) -> None:
        """A Basic header that is not base64 is a failed login, not a crash."""
        async with http_client(emulator.base_url, None) as anonymous:
            response = await anonymous.get(INCIDENTS, headers={"Authorization": "Basic !!!"})
        assert response.status_code == 401

    async def test_users_added_later_can_log_in(self, emulator: ServiceNowEmulator) -> None:
        """add_user() gives a login and a sys_user record named after it."""
        emulator.add_user("integration", "pw")
        async with http_client(emulator.base_url, ("integration", "pw")) as c:
            response = await c.post(INCIDENTS, json={})
        assert response.json()["result"]["sys_created_by"] == "integration"
        assert emulator.user_sys_id("integration")

    async def test_pluggable_checkers_and_public_paths(self) -> None:
        """A checker added next to basic auth accepts its own credentials and names its scheme
        in the challenge; routes added to `app` can be made public (the OAuth seam)."""

        def api_key(request: web.Request) -> AuthResult:
            key = request.headers.get("x-sn-apikey")
            if key is None:
                return AuthResult()
            return (
                AuthResult(user="apikey-user") if key == "good" else AuthResult(challenge="BEARER")
            )

        async def token(request: web.Request) -> web.Response:
            return web.json_response({"access_token": "t"})

        emu = ServiceNowEmulator(users={USER: PASSWORD})
        emu.credential_checkers.append(api_key)
        emu.app.router.add_post("/custom_token.do", token)
        emu.public_paths.add("/custom_token.do")
        async with emu, http_client(emu.base_url, None) as c:
            ok = await c.get(INCIDENTS, headers={"x-sn-apikey": "good"})
            bad = await c.get(INCIDENTS, headers={"x-sn-apikey": "bad"})
            basic = await c.get(INCIDENTS, auth=(USER, PASSWORD))
            oauth = await c.post("/custom_token.do", data={"grant_type": "password"})
        assert ok.status_code == 200
        assert emu.requests[0].user == "apikey-user"
        assert bad.status_code == 401
        assert bad.headers["WWW-Authenticate"] == 'BEARER realm="Service-now"'
        assert basic.status_code == 200
        assert oauth.json() == {"access_token": "t"}

    def test_basic_checker_reads_a_live_mapping(self) -> None:
        """The basic checker sees users added to its mapping after construction."""
        users: dict[str, str] = {}
        checker = BasicAuthChecker(users)
        users["late"] = "pw"
        assert checker.users is users


class TestWrites:
    async def test_post_creates_with_201_location_and_system_fields(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """201, Location of the new record, numbering, sys_* fields, strings everywhere."""
        first = await client.post(INCIDENTS, json={"short_description": "disk full"})
        second = await client.post(INCIDENTS, json={})
        assert first.status_code == 201
        record = first.json()["result"]
        assert re.fullmatch(r"[0-9a-f]{32}", record["sys_id"])
        assert first.headers["Location"] == f"{emulator.base_url}{INCIDENTS}/{record['sys_id']}"
        assert record["number"] == "INC0010001"
        assert second.json()["result"]["number"] == "INC0010002"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", record["sys_created_on"])
        assert record["sys_updated_on"] == record["sys_created_on"]
        assert record["sys_created_by"] == record["sys_updated_by"] == USER
        assert record["sys_mod_count"] == "0"
        assert record["opened_by"]["value"] == emulator.user_sys_id(USER)
        assert all(isinstance(v, str | dict) for v in record.values())
        assert "X-Total-Count" not in first.headers

    @pytest.mark.parametrize(
        ("table", "prefix"),
        [
            ("incident", "INC"),
            ("sc_req_item", "RITM"),
            ("sc_task", "SCTASK"),
            ("change_request", "CHG"),
            ("problem", "PRB"),
        ],
    )
    async def test_task_tables_number_their_records(
        self, client: httpx.AsyncClient, table: str, prefix: str
    ) -> None:
        """Each task table has its own number prefix and counter."""
        response = await client.post(f"/api/now/table/{table}", json={})
        assert response.json()["result"]["number"] == f"{prefix}0010001"

    async def test_body_values_are_coerced_and_filtered(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Numbers and booleans become strings, null becomes "", unknown and sys_* fields are
        dropped silently, journal fields read back empty."""
        response = await client.post(
            INCIDENTS,
            json={
                "urgency": 2,
                "active": False,
                "description": None,
                "short_description": "x",
                "no_such_field": "lost",
                "sys_id": "0" * 32,
                "sys_created_by": "mallory",
                "work_notes": "secret note",
            },
        )
        record = response.json()["result"]
        assert record["urgency"] == "2"
        assert record["active"] == "false"
        assert record["description"] == ""
        assert "no_such_field" not in record
        assert record["sys_id"] != "0" * 32
        assert record["sys_created_by"] == USER
        assert record["work_notes"] == ""

    async def test_array_body_uses_first_element(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A JSON array body inserts only its first element."""
        response = await client.post(
            INCIDENTS, json=[{"short_description": "one"}, {"short_description": "two"}]
        )
        assert response.json()["result"]["short_description"] == "one"
        assert len(emulator.records("incident")) == 1

    async def test_incident_priority_follows_impact_and_urgency(
        self, client: httpx.AsyncClient
    ) -> None:
        """As on a real instance, priority is computed: a posted priority 1 comes back 5."""
        defaulted = await client.post(INCIDENTS, json={"priority": 1})
        urgent = await client.post(INCIDENTS, json={"impact": "1", "urgency": "1"})
        assert defaulted.json()["result"]["priority"] == "5"
        assert urgent.json()["result"]["priority"] == "1"

    async def test_invalid_json_body_is_400(self, client: httpx.AsyncClient) -> None:
        """A body that is not JSON is rejected before anything is written."""
        response = await client.post(
            INCIDENTS, content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "Exception while reading request"

    async def test_body_over_10_mb_is_rejected(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Bodies over glide.rest.max_content_length get ServiceNow's exact 400."""
        size = MAX_BODY_BYTES + 1
        response = await client.post(
            INCIDENTS, content=b" " * size, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json() == error(
            "Exception while reading request",
            f"Rejected large REST payload with content-length = {size} bytes. "
            "Max allowed: 10485760 bytes.",
        )
        assert emulator.records("incident") == []

    @pytest.mark.parametrize("method", ["PATCH", "PUT"])
    async def test_update_changes_only_given_fields(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient, method: str
    ) -> None:
        """PUT behaves as PATCH: 200, the whole record, mod count and updater bumped."""
        seeded = emulator.insert(
            "incident",
            {"short_description": "keep", "description": "old"},
            user="someone",
        )
        response = await client.request(
            method, f"{INCIDENTS}/{seeded['sys_id']}", json={"description": "new"}
        )
        assert response.status_code == 200
        record = response.json()["result"]
        assert record["description"] == "new"
        assert record["short_description"] == "keep"
        assert record["number"] == seeded["number"]
        assert record["sys_mod_count"] == "1"
        assert record["sys_updated_by"] == USER
        assert record["sys_created_by"] == "someone"
        assert "X-Total-Count" not in response.headers

    @pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
    async def test_unknown_sys_id_is_404_never_an_upsert(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient, method: str
    ) -> None:
        """Any id the table lacks (even a word such as `global`) is a 404 with the exact body."""
        response = await client.request(method, f"{INCIDENTS}/global", json={"state": "2"})
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
        assert emulator.records("incident") == []

    async def test_delete_is_204_with_empty_body(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """DELETE answers 204 with no body; the record is gone afterwards."""
        sys_id = emulator.insert("incident", {})["sys_id"]
        response = await client.delete(f"{INCIDENTS}/{sys_id}")
        assert response.status_code == 204
        assert response.content == b""
        assert emulator.record("incident", sys_id) is None
        again = await client.delete(f"{INCIDENTS}/{sys_id}")
        assert again.json() == NOT_FOUND

    async def test_closing_an_incident_makes_it_inactive(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """The state business rule keeps `active` in step."""
        sys_id = emulator.insert("incident", {})["sys_id"]
        response = await client.patch(f"{INCIDENTS}/{sys_id}", json={"state": 7})
        assert response.json()["result"]["active"] == "false"

    async def test_no_response_body_header(self, client: httpx.AsyncClient) -> None:
        """X-no-response-body: true suppresses the body of a create."""
        response = await client.post(INCIDENTS, json={}, headers={"X-no-response-body": "true"})
        assert response.status_code == 201
        assert response.content == b""
        assert "Location" in response.headers

    async def test_input_display_value_resolves_references(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """With sysparm_input_display_value=true a reference may be given by display name."""
        abel = emulator.insert("sys_user", {"name": "Abel Tuter"})
        response = await client.post(
            INCIDENTS,
            params={"sysparm_input_display_value": "true"},
            json={"caller_id": "Abel Tuter", "state": "In Progress"},
        )
        record = response.json()["result"]
        assert record["caller_id"]["value"] == abel["sys_id"]
        assert record["state"] == "2"

    async def test_custom_tables_added_at_runtime(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """add_table() makes a table the API accepts; plain names are string fields."""
        emulator.add_table(
            "x_acme_thing",
            ["name", "u_code", Field("u_count", FieldType.INTEGER, default="0")],
            number_prefix="THG",
        )
        response = await client.post(
            "/api/now/table/x_acme_thing", json={"name": "widget", "u_count": 3}
        )
        record = response.json()["result"]
        assert response.status_code == 201
        assert record["number"] == "THG0010001"
        assert record["u_count"] == "3"
        assert record["u_code"] == ""
        assert "x_acme_thing" in emulator.tables

    def test_seeding_rejects_unknown_fields_and_returns_copies(
        self, emulator: ServiceNowEmulator
    ) -> None:
        """insert() keeps what it is given (sys fields too) and computes the rest, refuses
        unknown fields; records() are copies."""
        record = emulator.insert("incident", {"sys_id": "fixed", "number": "INC0999999"})
        assert record["sys_id"] == "fixed"
        assert record["number"] == "INC0999999"
        with pytest.raises(KeyError):
            emulator.insert("incident", {"nope": "x"})
        with pytest.raises(KeyError):
            emulator.insert("no_table", {})
        assert emulator.insert("incident", {"impact": "1", "urgency": "1"})["priority"] == "1"
        assert emulator.insert("incident", {"priority": "2"})["priority"] == "2"
        emulator.records("incident")[0]["short_description"] = "mutated"
        assert emulator.record("incident", "fixed")["short_description"] == ""  # type: ignore[index]


class TestQueries:
    @pytest.fixture
    def seeded(self, emulator: ServiceNowEmulator) -> ServiceNowEmulator:
        abel = emulator.insert("sys_user", {"name": "Abel Tuter", "user_name": "abel"})
        beth = emulator.insert("sys_user", {"name": "Beth Anglin", "user_name": "beth"})
        rows = [
            # short_description, state, impact, priority, caller, description, active
            ("disk full on db01", "1", "1", "1", abel, "", "true"),
            ("disk full on web02", "2", "2", "3", beth, "logs", "true"),
            ("printer jam", "1", "2", "4", beth, "", "true"),
            ("vpn down", "7", "1", "2", abel, "tunnel", "false"),
            ("email slow", "2", "3", "5", None, "", "true"),
        ]
        for short, state, impact, priority, caller, description, active in rows:
            emulator.insert(
                "incident",
                {
                    "short_description": short,
                    "state": state,
                    "impact": impact,
                    "priority": priority,
                    "caller_id": caller["sys_id"] if caller else "",
                    "description": description,
                    "active": active,
                },
            )
        return emulator

    async def names(self, client: httpx.AsyncClient, query: str) -> list[str]:
        response = await client.get(
            INCIDENTS, params={"sysparm_query": query, "sysparm_fields": "short_description"}
        )
        assert response.status_code == 200, response.text
        return [r["short_description"] for r in response.json()["result"]]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (
                "active=true",
                {"disk full on db01", "disk full on web02", "printer jam", "email slow"},
            ),
            ("state!=1", {"disk full on web02", "vpn down", "email slow"}),
            ("short_descriptionLIKEdisk full", {"disk full on db01", "disk full on web02"}),
            ("short_descriptionLIKEDISK", {"disk full on db01", "disk full on web02"}),
            ("short_descriptionNOT LIKEdisk", {"printer jam", "vpn down", "email slow"}),
            ("short_descriptionSTARTSWITHvpn", {"vpn down"}),
            ("short_descriptionENDSWITHjam", {"printer jam"}),
            ("stateIN2,7", {"disk full on web02", "vpn down", "email slow"}),
            ("stateNOT IN1,2", {"vpn down"}),
            ("descriptionISEMPTY", {"disk full on db01", "printer jam", "email slow"}),
            ("descriptionISNOTEMPTY", {"disk full on web02", "vpn down"}),
            ("priority<3", {"disk full on db01", "vpn down"}),
            ("priority<=3", {"disk full on db01", "vpn down", "disk full on web02"}),
            ("priority>3", {"printer jam", "email slow"}),
            ("priority>=4", {"printer jam", "email slow"}),
            ("priorityBETWEEN2@4", {"vpn down", "disk full on web02", "printer jam"}),
            # OR binds tighter than AND: (state=1 OR state=2) AND impact=2
            ("state=1^ORstate=2^impact=2", {"disk full on web02", "printer jam"}),
            ("impact=2^state=1^ORstate=7", {"printer jam"}),
            ("state=7^NQimpact=3", {"vpn down", "email slow"}),
            ("state=7^EQ", {"vpn down"}),
            ("caller_id.name=Abel Tuter", {"disk full on db01", "vpn down"}),
            ("caller_idSTARTSWITHBeth", {"disk full on web02", "printer jam"}),
            ("caller_idISEMPTY", {"email slow"}),
            ("short_description=vpn down", {"vpn down"}),
        ],
    )
    async def test_operators(
        self, seeded: ServiceNowEmulator, client: httpx.AsyncClient, query: str, expected: set[str]
    ) -> None:
        """Each operator of the supported subset, spaces in values kept."""
        assert set(await self.names(client, query)) == expected

    async def test_reference_equality_uses_sys_id(
        self, seeded: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """caller_id=<sys_id> matches; the display name alone does not."""
        abel = seeded.user_sys_id("abel")
        assert set(await self.names(client, f"caller_id={abel}")) == {
            "disk full on db01",
            "vpn down",
        }
        assert await self.names(client, "caller_id=Abel Tuter") == []

    async def test_ordering(self, seeded: ServiceNowEmulator, client: httpx.AsyncClient) -> None:
        """ORDERBY and ORDERBYDESC apply in order; numbers sort as numbers."""
        assert await self.names(client, "ORDERBYpriority") == [
            "disk full on db01",
            "vpn down",
            "disk full on web02",
            "printer jam",
            "email slow",
        ]
        assert await self.names(
            client, "active=true^ORDERBYimpact^ORDERBYDESCshort_description"
        ) == [
            "disk full on db01",
            "printer jam",
            "disk full on web02",
            "email slow",
        ]
        seeded.add_table("x_count", [Field("n", FieldType.INTEGER)])
        for n in ("10", "9", "100"):
            seeded.insert("x_count", {"n": n})
        response = await client.get(
            "/api/now/table/x_count",
            params={"sysparm_query": "ORDERBYDESCn", "sysparm_fields": "n"},
        )
        assert [r["n"] for r in response.json()["result"]] == ["100", "10", "9"]

    async def test_name_value_pairs_filter_without_sysparm_query(
        self, seeded: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """`?active=false` works as a filter when sysparm_query is absent."""
        response = await client.get(INCIDENTS, params={"active": "false"})
        assert [r["short_description"] for r in response.json()["result"]] == ["vpn down"]

    @pytest.mark.parametrize(
        ("policy", "status", "count"),
        [
            (InvalidQueryPolicy.IGNORE, 200, 5),
            (InvalidQueryPolicy.NO_ROWS, 200, 0),
            (InvalidQueryPolicy.FORBID, 403, None),
        ],
    )
    async def test_unknown_field_policy(
        self,
        seeded: ServiceNowEmulator,
        client: httpx.AsyncClient,
        policy: InvalidQueryPolicy,
        status: int,
        count: int | None,
    ) -> None:
        """An unknown field is dropped (whole table), matches nothing, or is a 403."""
        seeded.invalid_query = policy
        response = await client.get(INCIDENTS, params={"sysparm_query": "u_typo=1"})
        assert response.status_code == status
        if count is None:
            assert response.json() == error(
                "Insufficient rights to query records",
                "Field(s) present in the query do not have permission to be read",
            )
        else:
            assert len(response.json()["result"]) == count
            assert response.headers["X-Total-Count"] == str(count)

    async def test_ignored_condition_keeps_the_rest(
        self, seeded: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """With the default policy only the invalid condition is dropped."""
        assert await self.names(client, "u_typo=1^state=7") == ["vpn down"]

    async def test_each_distinct_query_is_parsed_once(
        self, seeded: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Repeated queries hit the parse cache."""
        query = "state=2^short_descriptionLIKEdisk^ORDERBYnumber"
        await self.names(client, query)
        before = _table_query.parse.cache_info()
        await self.names(client, query)
        after = _table_query.parse.cache_info()
        assert after.misses == before.misses


class TestPagination:
    @pytest.fixture
    def many(self, emulator: ServiceNowEmulator) -> ServiceNowEmulator:
        for i in range(625):
            emulator.insert("incident", {"short_description": f"row {i}"})
        return emulator

    async def test_link_header_for_625_rows_by_10(
        self, many: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """first/next/last with absolute URLs, no spaces; last offset is 620."""
        response = await client.get(
            INCIDENTS, params={"sysparm_limit": "10", "sysparm_fields": "number,sys_id"}
        )
        assert response.headers["X-Total-Count"] == "625"
        assert len(response.json()["result"]) == 10
        link = response.headers["Link"]
        assert " " not in link
        assert parse_link(link) == {"first": 0, "next": 10, "last": 620}
        first_url = link.split(">")[0][1:]
        assert first_url.startswith(f"{many.base_url}{INCIDENTS}?")
        assert parse_qs(urlsplit(first_url).query)["sysparm_fields"] == ["number,sys_id"]
        assert "%2C" in first_url

        middle = await client.get(INCIDENTS, params={"sysparm_limit": "10", "sysparm_offset": "10"})
        assert parse_link(middle.headers["Link"]) == {
            "first": 0,
            "prev": 0,
            "next": 20,
            "last": 620,
        }
        assert middle.json()["result"][0]["short_description"] == "row 10"

        end = await client.get(INCIDENTS, params={"sysparm_limit": "10", "sysparm_offset": "620"})
        assert parse_link(end.headers["Link"]) == {"first": 0, "prev": 610, "last": 620}
        assert len(end.json()["result"]) == 5

    async def test_link_urls_use_the_request_host(
        self, many: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Links are built from the request's own scheme and Host."""
        response = await client.get(
            INCIDENTS,
            params={"sysparm_limit": "100"},
            headers={"Host": "dev12345.service-now.com"},
        )
        assert response.headers["Link"].startswith(f"<http://dev12345.service-now.com{INCIDENTS}?")

    async def test_single_page_has_no_link_and_default_limit_is_10000(
        self, many: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Without sysparm_limit every row comes back in one page, with X-Total-Count only."""
        response = await client.get(INCIDENTS, params={"sysparm_fields": "sys_id"})
        assert len(response.json()["result"]) == 625
        assert response.headers["X-Total-Count"] == "625"
        assert "Link" not in response.headers

    async def test_no_count_and_suppressed_pagination_header(
        self, many: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """sysparm_no_count drops X-Total-Count only; the suppress flag drops Link only."""
        no_count = await client.get(
            INCIDENTS, params={"sysparm_limit": "10", "sysparm_no_count": "true"}
        )
        assert "X-Total-Count" not in no_count.headers
        assert "Link" in no_count.headers
        suppressed = await client.get(
            INCIDENTS,
            params={"sysparm_limit": "10", "sysparm_suppress_pagination_header": "true"},
        )
        assert "Link" not in suppressed.headers
        assert suppressed.headers["X-Total-Count"] == "625"

    async def test_acl_hidden_rows_make_short_pages(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Hidden rows count in X-Total-Count and use page slots but are never returned."""
        ids = [emulator.insert("incident", {})["sys_id"] for _ in range(25)]
        emulator.hidden_sys_ids.update(ids[2:5])
        page = await client.get(INCIDENTS, params={"sysparm_limit": "10"})
        assert len(page.json()["result"]) == 7
        assert page.headers["X-Total-Count"] == "25"
        assert parse_link(page.headers["Link"])["next"] == 10
        hidden = await client.get(f"{INCIDENTS}/{ids[2]}")
        assert hidden.json() == NOT_FOUND

    async def test_a_page_can_be_empty_in_the_middle(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A page whose every row is hidden comes back empty, and Link still says next."""
        ids = [emulator.insert("incident", {})["sys_id"] for _ in range(25)]
        emulator.hidden_sys_ids.update(ids[10:20])
        page = await client.get(INCIDENTS, params={"sysparm_limit": "10", "sysparm_offset": "10"})
        assert page.json() == {"result": []}
        assert page.headers["X-Total-Count"] == "25"
        assert parse_link(page.headers["Link"])["next"] == 20


class TestDisplayValues:
    @pytest.fixture
    def record(self, emulator: ServiceNowEmulator) -> dict[str, str]:
        caller = emulator.insert("sys_user", {"name": "David Loo"})
        return emulator.insert("incident", {"caller_id": caller["sys_id"], "state": "2"})

    @pytest.mark.parametrize(
        ("display", "exclude", "shape", "empty"),
        [
            ("false", "false", {"link": "LINK", "value": "ID"}, ""),
            ("false", "true", "ID", ""),
            ("true", "false", {"display_value": "David Loo", "link": "LINK"}, ""),
            ("true", "true", "David Loo", ""),
            (
                "all",
                "false",
                {"display_value": "David Loo", "value": "ID", "link": "LINK"},
                {"display_value": "", "value": ""},
            ),
            (
                "all",
                "true",
                {"display_value": "David Loo", "value": "ID"},
                {"display_value": "", "value": ""},
            ),
        ],
    )
    async def test_reference_matrix(
        self,
        emulator: ServiceNowEmulator,
        client: httpx.AsyncClient,
        record: dict[str, str],
        display: str,
        exclude: str,
        shape: object,
        empty: object,
    ) -> None:
        """Reference fields per sysparm_display_value x sysparm_exclude_reference_link."""
        caller = record["caller_id"]
        link = f"{emulator.base_url}/api/now/table/sys_user/{caller}"

        def expand(value: object) -> object:
            if isinstance(value, dict):
                return {k: expand(v) for k, v in value.items()}
            return {"ID": caller, "LINK": link}.get(value, value)  # type: ignore[call-overload]

        response = await client.get(
            f"{INCIDENTS}/{record['sys_id']}",
            params={
                "sysparm_display_value": display,
                "sysparm_exclude_reference_link": exclude,
                "sysparm_fields": "caller_id,assigned_to",
            },
        )
        assert response.json()["result"] == {"caller_id": expand(shape), "assigned_to": empty}

    async def test_all_mode_wraps_every_field(
        self, client: httpx.AsyncClient, record: dict[str, str]
    ) -> None:
        """display_value=all: every field is {display_value, value}; empty choices show null."""
        response = await client.get(
            f"{INCIDENTS}/{record['sys_id']}", params={"sysparm_display_value": "all"}
        )
        result = response.json()["result"]
        assert result["number"] == {"display_value": record["number"], "value": record["number"]}
        assert result["sys_id"] == {"display_value": record["sys_id"], "value": record["sys_id"]}
        assert result["state"] == {"display_value": "In Progress", "value": "2"}
        assert result["close_code"] == {"display_value": None, "value": ""}
        assert all(isinstance(v, dict) for v in result.values())

    async def test_true_mode_shows_choice_labels(
        self, client: httpx.AsyncClient, record: dict[str, str]
    ) -> None:
        """display_value=true: choice labels, booleans stay "true"/"false"."""
        response = await client.get(
            f"{INCIDENTS}/{record['sys_id']}",
            params={"sysparm_display_value": "true", "sysparm_fields": "state,priority,active"},
        )
        assert response.json()["result"] == {
            "state": "In Progress",
            "priority": "5 - Planning",
            "active": "true",
        }

    async def test_fields_dot_walk_and_unknown_names(
        self, client: httpx.AsyncClient, record: dict[str, str]
    ) -> None:
        """sysparm_fields keeps the requested order, drops unknown names and returns a
        dot-walked field under its dotted name."""
        response = await client.get(
            INCIDENTS,
            params={"sysparm_fields": "number,nonsense,caller_id.name,caller_id.nope,state"},
        )
        assert response.json()["result"] == [
            {"number": record["number"], "caller_id.name": "David Loo", "state": "2"}
        ]

    async def test_reference_links_follow_the_url_version(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient, record: dict[str, str]
    ) -> None:
        """A v1 request gets /api/now/v1/ links."""
        response = await client.get(f"/api/now/v1/table/incident/{record['sys_id']}")
        assert response.json()["result"]["caller_id"]["link"] == (
            f"{emulator.base_url}/api/now/v1/table/sys_user/{record['caller_id']}"
        )


class TestFaults:
    async def test_rate_limit(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """429 with Retry-After, the X-RateLimit headers and the exact body, once."""
        emulator.inject(Fault.rate_limited(retry_after=7, limit=100))
        limited = await client.get(INCIDENTS)
        assert limited.status_code == 429
        assert limited.json() == error(
            "Rate limit exceeded", "Rate limit of 100 requests per hour for Table API exceeded"
        )
        assert limited.headers["Retry-After"] == "7"
        assert limited.headers["X-RateLimit-Limit"] == "100"
        assert int(limited.headers["X-RateLimit-Reset"]) > 1_700_000_000
        assert re.fullmatch(r"[0-9a-f]{32}", limited.headers["X-RateLimit-Rule"])
        assert (await client.get(INCIDENTS)).status_code == 200
        assert emulator.faults == []

    async def test_matching_by_method_table_and_path_and_times(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A fault hits only matching requests, `times` times."""
        fault = Fault.service_unavailable(retry_after=3, method="post", table="incident", times=2)
        emulator.inject(fault)
        assert (await client.get(INCIDENTS)).status_code == 200
        assert (await client.post("/api/now/table/problem", json={})).status_code == 201
        first = await client.post(INCIDENTS, json={})
        assert first.status_code == 503
        assert first.headers["Retry-After"] == "3"
        assert (await client.post(INCIDENTS, json={})).status_code == 503
        assert (await client.post(INCIDENTS, json={})).status_code == 201
        assert fault.hits == 2
        assert emulator.requests[-2].fault is FaultKind.ERROR
        assert emulator.requests[-1].fault is None

        emulator.inject(Fault.bad_gateway(path="/api/now/v2/table/incident", times=None))
        for _ in range(3):
            assert (await client.get("/api/now/v2/table/incident")).status_code == 502
        assert (await client.get(INCIDENTS)).status_code == 200
        emulator.clear_faults()
        assert (await client.get("/api/now/v2/table/incident")).status_code == 200

    async def test_matching_by_query_parameters(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A fault with `query` hits only requests carrying those parameters: one page."""
        emulator.inject(Fault.bad_gateway(query={"sysparm_offset": "10"}, times=None))
        assert (await client.get(INCIDENTS, params={"sysparm_offset": "0"})).status_code == 200
        page = await client.get(INCIDENTS, params={"sysparm_offset": "10", "sysparm_limit": "5"})
        assert page.status_code == 502
        assert (await client.get(INCIDENTS)).status_code == 200

    @pytest.mark.parametrize(
        ("fault", "status", "message"),
        [
            (
                Fault.transaction_cancelled(),
                500,
                "Transaction cancelled: maximum execution time exceeded",
            ),
            (Fault.bad_gateway(), 502, "Bad Gateway"),
            (Fault.service_unavailable(), 503, "Service Unavailable"),
            (Fault.acl_denied(), 403, "User Not Authorized"),
            (
                Fault.error(403, "Operation Failed", "Data Policy Exception: mandatory"),
                403,
                "Operation Failed",
            ),
        ],
    )
    async def test_error_statuses_use_the_envelope(
        self,
        emulator: ServiceNowEmulator,
        client: httpx.AsyncClient,
        fault: Fault,
        status: int,
        message: str,
    ) -> None:
        """Error faults answer with the JSON envelope and write nothing."""
        emulator.inject(fault)
        response = await client.post(INCIDENTS, json={})
        assert response.status_code == status
        assert response.json()["error"]["message"] == message
        assert response.json()["status"] == "failure"
        assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
        assert emulator.records("incident") == []

    async def test_hibernating_instance(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A 200 HTML page whose title says the instance hibernates."""
        emulator.inject(Fault.hibernating())
        response = await client.get(INCIDENTS)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        title = re.search(r"<title>(.*)</title>", response.text)
        assert title is not None
        assert "Instance Hibernating page" in title.group(1)

    async def test_truncated_json_with_error_object(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A 200 whose result array breaks off and is followed by an error object."""
        for _ in range(4):
            emulator.insert("incident", {})
        emulator.inject(Fault.truncated_json())
        response = await client.get(INCIDENTS)
        assert response.status_code == 200
        assert response.text.startswith('{"result":[{')
        assert '"error":{' in response.text
        assert "Transaction cancelled: maximum execution time exceeded" in response.text
        with pytest.raises(json.JSONDecodeError):
            response.json()

    async def test_truncated_body(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A complete HTTP answer whose JSON body is cut in half."""
        emulator.insert("incident", {})
        emulator.inject(Fault.truncated_body())
        cut = await client.get(INCIDENTS)
        whole = await client.get(INCIDENTS)
        assert cut.status_code == 200
        assert cut.content == whole.content[: len(whole.content) // 2]
        with pytest.raises(json.JSONDecodeError):
            cut.json()

    async def test_connection_reset_mid_response(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Headers and part of the body arrive, then the connection ends."""
        emulator.insert("incident", {})
        emulator.inject(Fault.connection_reset())
        async with client.stream("GET", INCIDENTS) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()
        emulator.inject(Fault.connection_reset(rst=True))
        with pytest.raises(httpx.TransportError):
            await client.get(INCIDENTS)
        assert (await client.get(INCIDENTS)).status_code == 200

    async def test_drop_after_processing_keeps_the_write(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """The client sees a network error but the record was created."""
        emulator.inject(Fault.drop_after_processing(method="POST"))
        with pytest.raises(httpx.TransportError):
            await client.post(INCIDENTS, json={"correlation_id": "camunda-1-2"})
        assert [r["correlation_id"] for r in emulator.records("incident")] == ["camunda-1-2"]
        recorded = emulator.requests[-1]
        assert recorded.fault is FaultKind.DROP_AFTER
        assert recorded.status is None

    async def test_drop_before_processing_writes_nothing(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """The connection closes without an answer and nothing was stored."""
        emulator.inject(Fault.drop_before_processing(), Fault.drop_before_processing(rst=True))
        for _ in range(2):
            with pytest.raises(httpx.TransportError):
                await client.post(INCIDENTS, json={})
        assert emulator.records("incident") == []

    async def test_slow_answer_after_the_write(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A client read timeout while the server holds an answer whose write happened."""
        emulator.inject(Fault.delay(60, method="POST"))
        with pytest.raises(httpx.ReadTimeout):
            await client.post(INCIDENTS, json={}, timeout=0.05)
        assert len(emulator.records("incident")) == 1

    async def test_slow_answer_before_the_write(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """With process_first=False a client that gives up leaves nothing behind."""
        emulator.inject(Fault.delay(60, process_first=False, method="POST"))
        with pytest.raises(httpx.ReadTimeout):
            await client.post(INCIDENTS, json={}, timeout=0.05)
        assert emulator.records("incident") == []

    async def test_short_delay_then_normal_answer(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A delay that ends answers normally; a global latency changes nothing else."""
        emulator.latency = 0.001
        emulator.inject(Fault.delay(0.01))
        assert (await client.get(INCIDENTS)).status_code == 200

    async def test_stop_releases_held_requests(self, emulator: ServiceNowEmulator) -> None:
        """stop() does not wait for a delay fault to run out."""
        emulator.inject(Fault.delay(600))
        async with http_client(emulator.base_url) as c:
            pending = asyncio.create_task(c.get(INCIDENTS))
            await emulator.wait_for_requests(1)
            await emulator.stop()
            with pytest.raises(httpx.TransportError):
                await pending


class TestRecording:
    async def test_recorded_request_fields(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Method, path, table, id, version, query, headers, body, user and status."""
        sys_id = emulator.insert("incident", {})["sys_id"]
        await client.patch(
            f"/api/now/v2/table/incident/{sys_id}",
            params={"sysparm_fields": "number"},
            json={"state": 2},
            headers={"X-Custom": "yes"},
        )
        [recorded] = emulator.requests
        assert recorded.method == "PATCH"
        assert recorded.path == f"/api/now/v2/table/incident/{sys_id}"
        assert recorded.table == "incident"
        assert recorded.sys_id == sys_id
        assert recorded.api_version == "v2"
        assert recorded.query == {"sysparm_fields": "number"}
        assert recorded.headers["x-custom"] == "yes"
        assert recorded.headers["authorization"].startswith("Basic ")
        assert recorded.body == {"state": 2}
        assert recorded.user == USER
        assert recorded.status == 200
        assert recorded.fault is None

    async def test_wait_for_requests_without_sleeping(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Waiters wake up when the requests arrive; a deadline turns into TimeoutError."""
        tasks = [asyncio.create_task(client.post(INCIDENTS, json={})) for _ in range(3)]
        recorded = await emulator.wait_for_requests(3)
        assert [r.method for r in recorded] == ["POST"] * 3
        await asyncio.gather(*tasks)
        found = await emulator.wait_for_request(lambda r: r.method == "POST")
        assert found is recorded[0]
        with pytest.raises(TimeoutError):
            await emulator.wait_for_requests(4, timeout=0.01)
        emulator.clear_requests()
        assert emulator.requests == []


class TestLifecycle:
    async def test_restart_on_the_same_port_keeps_the_data(self) -> None:
        """After stop() connections are refused; start() listens again on the same port."""
        emulator = ServiceNowEmulator(users={USER: PASSWORD})
        base_url = await emulator.start()
        emulator.insert("incident", {})
        await emulator.stop()
        with pytest.raises(RuntimeError):
            _ = emulator.base_url
        async with http_client(base_url) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(INCIDENTS)
            assert await emulator.start() == base_url
            try:
                response = await c.get(INCIDENTS)
            finally:
                await emulator.stop()
        assert len(response.json()["result"]) == 1

    async def test_command_line_serves_until_sigterm(self) -> None:
        """`python -m servicenow_emulators.table_api` prints where it listens, serves the
        given users and exits 0 on SIGTERM."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "servicenow_emulators.table_api",
            "--port",
            "0",
            "--user",
            "demo:pw",
            "--demo-data",
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
            assert "ServiceNow Table API emulator" in line
            url = re.search(r"http://\S+:\d+", line).group(0)  # type: ignore[union-attr]
            async with http_client(url, ("demo", "pw")) as c:
                response = await c.get(INCIDENTS, params={"sysparm_display_value": "true"})
            assert response.status_code == 200
            assert response.json()["result"][0]["caller_id"]["display_value"] == "Abel Tuter"
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
