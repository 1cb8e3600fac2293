"""The ServiceNow emulator's Attachment API, seen from a client (docs/attachments.md)."""

import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from servicenow_emulators.table_api import Fault, ServiceNowEmulator

USER, PASSWORD = "admin", "secret"
FILE = b"%PDF-1.7\n" + b"0123456789" * 20_000


@pytest.fixture(name="emulator")
async def _emulator() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emulator:
        yield emulator


@pytest.fixture(name="client")
async def _client(emulator: ServiceNowEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.base_url, auth=(USER, PASSWORD)) as client:
        yield client


def upload_params(sys_id: str, name: str = "report.pdf") -> dict[str, str]:
    return {"table_name": "incident", "table_sys_id": sys_id, "file_name": name}


async def test_binary_upload_then_read_and_download(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    """201 with Location and a pending record of strings; reads show it available; the download
    carries the bytes, the stored type, Content-Disposition and X-Attachment-Metadata."""
    incident = emulator.insert("incident", {"short_description": "printer"})
    created = await client.post(
        "/api/now/v1/attachment/file",
        params=upload_params(incident["sys_id"]),
        content=FILE,
        headers={"Content-Type": "application/pdf"},
    )
    assert created.status_code == 201
    record = created.json()["result"]
    sys_id = record["sys_id"]
    assert created.headers["Location"] == f"{emulator.base_url}/api/now/v1/attachment/{sys_id}/file"
    assert record["download_link"] == created.headers["Location"]
    assert (record["state"], record["sys_mod_count"], record["size_bytes"]) == (
        "pending",
        "0",
        str(len(FILE)),
    )
    assert record["hash"] == hashlib.sha256(FILE).hexdigest()
    assert (record["table_name"], record["table_sys_id"]) == ("incident", incident["sys_id"])
    assert record["sys_created_by"] == USER
    got = (await client.get(f"/api/now/attachment/{sys_id}")).json()["result"]
    assert (got["state"], got["sys_mod_count"]) == ("available", "1")
    download = await client.get(f"/api/now/attachment/{sys_id}/file")
    assert download.content == FILE
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Disposition"].startswith('attachment;filename="report.pdf"')
    metadata = json.loads(download.headers["X-Attachment-Metadata"])
    assert metadata["size_bytes"] == str(len(FILE))
    assert "download_link" not in metadata
    assert "transfer-encoding" in download.headers  # streamed, no Content-Length


async def test_multipart_upload_list_and_delete(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    """/upload takes the form fields and the file part; the list filters with sysparm_query on
    sys_attachment and counts in X-Total-Count; delete answers 204, then 404."""
    incident = emulator.insert("incident", {"short_description": "printer"})
    other = emulator.insert("incident", {"short_description": "vpn"})
    emulator.attachments.add("incident", other["sys_id"], "elsewhere.pdf", b"%PDF-x")
    emulator.attachments.add("incident", incident["sys_id"], "notes.txt", b"notes", "text/plain")
    created = await client.post(
        "/api/now/attachment/upload",
        data={"table_name": "incident", "table_sys_id": incident["sys_id"]},
        files={"uploadFile": ("scan.pdf", FILE, "application/pdf")},
    )
    assert created.status_code == 201
    listed = await client.get(
        "/api/now/attachment",
        params={"sysparm_query": f"table_sys_id={incident['sys_id']}^file_nameENDSWITH.pdf"},
    )
    assert [r["file_name"] for r in listed.json()["result"]] == ["scan.pdf"]
    assert listed.headers["X-Total-Count"] == "1"
    sys_id = created.json()["result"]["sys_id"]
    assert (await client.delete(f"/api/now/attachment/{sys_id}")).status_code == 204
    gone = await client.delete(f"/api/now/attachment/{sys_id}")
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == "No Record found"
    assert [a["file_name"] for a in emulator.attachments.attachments(incident["sys_id"])] == [
        "notes.txt"
    ]


async def test_refusals(emulator: ServiceNowEmulator, client: httpx.AsyncClient) -> None:
    """Missing parameter 400, missing record 404, size limit, blocked extension and a type that
    does not match the bytes: 400 with the error envelope, nothing stored."""
    incident = emulator.insert("incident", {"short_description": "printer"})
    sys_id = incident["sys_id"]
    pdf = {"Content-Type": "application/pdf"}
    missing = await client.post("/api/now/attachment/file", content=b"x", headers=pdf)
    assert missing.status_code == 400
    no_record = await client.post(
        "/api/now/attachment/file", params=upload_params("0" * 32), content=b"x", headers=pdf
    )
    assert no_record.status_code == 404
    emulator.attachments.max_size_bytes = 1000
    too_large = await client.post(
        "/api/now/attachment/file", params=upload_params(sys_id), content=FILE, headers=pdf
    )
    assert too_large.status_code == 400
    assert "exceeds the maximum" in too_large.json()["error"]["detail"]
    emulator.attachments.max_size_bytes = 10**9
    emulator.attachments.allowed_extensions = {"pdf"}
    blocked = await client.post(
        "/api/now/attachment/file",
        params=upload_params(sys_id, "run.exe"),
        content=b"MZ",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert blocked.status_code == 400
    assert "'exe' is not allowed" in blocked.json()["error"]["detail"]
    emulator.attachments.mime_type_validation = True
    mismatch = await client.post(
        "/api/now/attachment/file",
        params=upload_params(sys_id, "fake.pdf"),
        content=b"not a pdf",
        headers=pdf,
    )
    assert mismatch.status_code == 400
    assert emulator.attachments.attachments() == []


async def test_faults_on_attachment_paths(
    emulator: ServiceNowEmulator, client: httpx.AsyncClient
) -> None:
    """The emulator's faults apply: an upload processed and its answer lost leaves the
    attachment; a download can be cut in the middle."""
    incident = emulator.insert("incident", {"short_description": "printer"})
    emulator.inject(Fault.drop_after_processing(path="/api/now/attachment/file"))
    with pytest.raises(httpx.TransportError):
        await client.post(
            "/api/now/attachment/file",
            params=upload_params(incident["sys_id"]),
            content=FILE,
            headers={"Content-Type": "application/pdf"},
        )
    [stored] = emulator.attachments.attachments(incident["sys_id"])
    emulator.attachments.cut_next_download(50_000)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(f"/api/now/attachment/{stored['sys_id']}/file")
