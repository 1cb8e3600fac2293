"""The emulator's Batch API (`/api/now/v1/batch`): base64 bodies, per-request statuses,
unserviced requests and limits; and PySNC, ServiceNow's own Python client, driving it."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pysnc
import pytest
import requests

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from tests.e2e.test_authentication import make_pki

from .test_table_api import PASSWORD, USER, http_client

BATCH = "/api/now/v1/batch"
JSON_HEADERS = [
    {"name": "Content-Type", "value": "application/json"},
    {"name": "Accept", "value": "application/json"},
]


def item(
    item_id: str, method: str, url: str, body: object = None, **extra: object
) -> dict[str, Any]:
    carried: dict[str, Any] = {"id": item_id, "method": method, "url": url, "headers": JSON_HEADERS}
    if body is not None:
        carried["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return {**carried, **extra}


def decoded(serviced: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(serviced["body"])) if "body" in serviced else None


class TestBatch:
    async def test_requests_are_answered_one_by_one_inside_a_200(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """Each request has its own numeric status and base64 body; an error stays inside
        its request; the batch id comes back as a string."""
        existing = emulator.insert("incident", {"short_description": "old"})
        response = await client.post(
            BATCH,
            json={
                "batch_request_id": 7,
                "rest_requests": [
                    item("a", "POST", "/api/now/table/incident", {"short_description": "new"}),
                    item(
                        "b",
                        "PATCH",
                        f"/api/now/table/incident/{existing['sys_id']}",
                        {"state": "2"},
                    ),
                    item("c", "GET", "/api/now/table/incident/missing"),
                    item("d", "DELETE", f"/api/now/table/incident/{existing['sys_id']}"),
                    item(
                        "e", "GET", "/api/now/table/incident?sysparm_fields=number&sysparm_limit=1"
                    ),
                ],
            },
        )
        assert response.status_code == 200
        answer = response.json()
        assert answer["batch_request_id"] == "7"
        assert answer["unserviced_requests"] == []
        serviced = {s["id"]: s for s in answer["serviced_requests"]}
        assert [s["id"] for s in answer["serviced_requests"]] == ["a", "b", "c", "d", "e"]
        assert {k: (s["status_code"], s["status_text"]) for k, s in serviced.items()} == {
            "a": (201, "Created"),
            "b": (200, "OK"),
            "c": (404, "Not Found"),
            "d": (204, "No Content"),
            "e": (200, "OK"),
        }
        assert decoded(serviced["a"])["result"]["short_description"] == "new"
        location = {h["name"]: h["value"] for h in serviced["a"]["headers"]}["Location"]
        assert location.startswith(f"{emulator.base_url}/api/now/table/incident/")
        assert decoded(serviced["b"])["result"]["state"] == "2"
        assert decoded(serviced["c"])["error"]["message"] == "No Record found"
        assert "body" not in serviced["d"]
        assert decoded(serviced["e"]) == {"result": [{"number": "INC0010002"}]}
        headers = {h["name"]: h["value"] for h in serviced["e"]["headers"]}
        assert headers["X-Total-Count"] == "1"
        assert all(isinstance(s["execution_time"], int) for s in serviced.values())
        assert [r["short_description"] for r in emulator.records("incident")] == ["new"]

    async def test_aggregate_api_through_a_batch(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        emulator.insert("incident", {})
        response = await client.post(
            BATCH,
            json={
                "batch_request_id": "s",
                "rest_requests": [
                    item("1", "GET", "/api/now/stats/incident?sysparm_count=true"),
                    item("2", "GET", "/api/now/no/such/api"),
                ],
            },
        )
        first, second = response.json()["serviced_requests"]
        assert decoded(first) == {"result": {"stats": {"count": "1"}}}
        assert second["status_code"] == 400

    async def test_excluded_response_headers(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            BATCH,
            json={
                "batch_request_id": "h",
                "rest_requests": [
                    item("1", "GET", "/api/now/table/incident", exclude_response_headers=True)
                ],
            },
        )
        assert response.json()["serviced_requests"][0]["headers"] == []

    async def test_forced_unserviced_tail(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """The requests left over come back by id and were not carried out."""
        emulator.batch.leave_unserviced(2)
        requests = [
            item(str(i), "POST", "/api/now/table/incident", {"short_description": str(i)})
            for i in range(4)
        ]
        first = await client.post(BATCH, json={"batch_request_id": "1", "rest_requests": requests})
        assert [s["id"] for s in first.json()["serviced_requests"]] == ["0", "1"]
        assert first.json()["unserviced_requests"] == ["2", "3"]
        assert len(emulator.records("incident")) == 2
        again = await client.post(
            BATCH, json={"batch_request_id": "2", "rest_requests": requests[2:]}
        )
        assert again.json()["unserviced_requests"] == []
        assert len(emulator.records("incident")) == 4

    async def test_output_limit_cancels_the_rest(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """An answer over the output limit (lowered by the header) cancels the transaction:
        that request and the ones after it are unserviced."""
        for _ in range(20):
            emulator.insert("incident", {"short_description": "x" * 100})
        response = await client.post(
            BATCH,
            headers={"X-BATCHREQUEST-MAX-OUTPUT-SIZE": "1000"},
            json={
                "batch_request_id": "o",
                "rest_requests": [
                    item(
                        "small",
                        "GET",
                        "/api/now/table/incident?sysparm_limit=1&sysparm_fields=number",
                    ),
                    item("big", "GET", "/api/now/table/incident"),
                    item("after", "GET", "/api/now/table/incident?sysparm_limit=1"),
                ],
            },
        )
        answer = response.json()
        assert [s["id"] for s in answer["serviced_requests"]] == ["small"]
        assert answer["unserviced_requests"] == ["big", "after"]

    async def test_input_limit_and_malformed_requests_fail_inside(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        emulator.batch.max_input_bytes = 100
        response = await client.post(
            BATCH,
            json={
                "batch_request_id": "m",
                "rest_requests": [
                    item("big", "POST", "/api/now/table/incident", {"description": "y" * 200}),
                    {"id": "nourl", "method": "GET"},
                    {**item("bad64", "POST", "/api/now/table/incident"), "body": "%%%"},
                    item("abs", "GET", "https://elsewhere.example/api/now/table/incident"),
                ],
            },
        )
        serviced = {s["id"]: s for s in response.json()["serviced_requests"]}
        assert {k: s["status_code"] for k, s in serviced.items()} == {
            "big": 400,
            "nourl": 400,
            "bad64": 400,
            "abs": 400,
        }
        assert "Rejected large REST payload" in decoded(serviced["big"])["error"]["detail"]
        assert emulator.records("incident") == []

    @pytest.mark.parametrize(
        ("content", "content_type", "status"),
        [
            (b'{"rest_requests": []}', "text/plain", 415),
            (b"{not json", "application/json", 400),
            (b'{"rest_requests": {}}', "application/json", 400),
            (b'{"rest_requests": ["x"]}', "application/json", 400),
        ],
    )
    async def test_malformed_batches(
        self, client: httpx.AsyncClient, content: bytes, content_type: str, status: int
    ) -> None:
        response = await client.post(BATCH, content=content, headers={"Content-Type": content_type})
        assert response.status_code == status
        assert response.json()["status"] == "failure"

    async def test_needs_authentication_and_post(self, emulator: ServiceNowEmulator) -> None:
        async with http_client(emulator.base_url, auth=None) as anonymous:
            response = await anonymous.post(BATCH, json={"rest_requests": []})
        assert response.status_code == 401
        async with http_client(emulator.base_url) as c:
            assert (await c.get(BATCH)).status_code == 405

    async def test_lost_answer_keeps_the_writes(
        self, emulator: ServiceNowEmulator, client: httpx.AsyncClient
    ) -> None:
        """A fault after processing drops the answer; the records were created all the same."""
        emulator.inject(Fault.drop_after_processing(path=BATCH, times=1))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(
                BATCH,
                json={
                    "batch_request_id": "l",
                    "rest_requests": [item("1", "POST", "/api/now/table/incident", {})],
                },
            )
        assert len(emulator.records("incident")) == 1


class TestPySNC:
    """PySNC (ServiceNow's own client) speaks to the emulator over HTTPS as to an instance."""

    @pytest.fixture
    async def instance(
        self, tmp_path: Path
    ) -> AsyncIterator[tuple[ServiceNowEmulator, pysnc.ServiceNowClient]]:
        pki = make_pki(tmp_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        async with ServiceNowEmulator(users={USER: PASSWORD}, ssl_context=context) as emu:
            session = requests.Session()
            session.trust_env = False  # a CA bundle named in the environment would win
            session.auth = (USER, PASSWORD)
            client = pysnc.ServiceNowClient(
                emu.base_url, session, verify=str(pki.ca_cert), auto_retry=False
            )
            with session:
                yield emu, client

    async def test_update_and_delete_multiple_go_through_the_batch_api(
        self, instance: tuple[ServiceNowEmulator, pysnc.ServiceNowClient]
    ) -> None:
        emulator, client = instance
        for i in range(3):
            emulator.insert("incident", {"short_description": f"pysnc {i}"})

        def update_then_delete() -> tuple[bool, bool]:
            records = client.GlideRecord("incident")
            records.add_encoded_query("short_descriptionSTARTSWITHpysnc")
            records.query()
            for record in records:
                record.state = "2"
            updated = records.update_multiple()
            deleted = records.delete_multiple()
            return updated, deleted

        updated, deleted = await asyncio.to_thread(update_then_delete)
        assert (updated, deleted) == (True, True)
        batches = [r for r in emulator.requests if r.path == BATCH]
        assert len(batches) == 2
        assert emulator.records("incident") == []

    async def test_a_long_query_pages_through_the_batch_api(
        self, instance: tuple[ServiceNowEmulator, pysnc.ServiceNowClient]
    ) -> None:
        """PySNC sends a query of more than 10 000 characters through the Batch API and reads
        the total from the carried request's X-Total-Count header."""
        emulator, client = instance
        wanted = [emulator.insert("incident", {})["sys_id"] for _ in range(3)]

        def long_query() -> tuple[int, list[str]]:
            records = client.GlideRecord("incident")
            records.add_query("sys_id", "IN", ",".join(wanted + ["f" * 32] * 400))
            records.query()
            return records.get_row_count(), [r.sys_id for r in records]

        count, found = await asyncio.to_thread(long_query)
        assert count == 3
        assert sorted(found) == sorted(wanted)
        assert any(r.path == BATCH for r in emulator.requests)

    async def test_a_query_pages_by_x_total_count(
        self, instance: tuple[ServiceNowEmulator, pysnc.ServiceNowClient]
    ) -> None:
        """PySNC pages a query with sysparm_offset until X-Total-Count records came."""
        emulator, client = instance
        wanted = {emulator.insert("incident", {})["sys_id"] for _ in range(250)}

        def read_all() -> list[str]:
            records = client.GlideRecord("incident", batch_size=100)
            records.query()
            return [r.sys_id for r in records]

        found = await asyncio.to_thread(read_all)
        assert sorted(found) == sorted(wanted)
        pages = [r for r in emulator.requests if r.path == "/api/now/table/incident"]
        assert [r.query["sysparm_offset"] for r in pages] == ["0", "100", "200"]
