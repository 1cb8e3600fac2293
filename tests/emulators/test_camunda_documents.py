"""The Camunda documents emulator as Camunda's official client sees it (docs/attachments.md)."""

import asyncio
import base64
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from servicenow_emulators.camunda_documents import CamundaDocumentsEmulator, DocumentFault

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SCRIPT = Path(__file__).with_name("documents_client.mjs")
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40


async def official_client(rest_address: str, upload: Path, **env: str) -> dict[str, Any]:
    """Run documents_client.mjs (the npm package @camunda8/orchestration-cluster-api)."""
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules/@camunda8/orchestration-cluster-api").exists():
        pytest.fail("needs Node.js and `npm ci` (@camunda8/orchestration-cluster-api)")
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT_SCRIPT),
        str(upload),
        "invoice.pdf",
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "CAMUNDA_REST_ADDRESS": rest_address,
            "CAMUNDA_AUTH_STRATEGY": "NONE",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.fixture(name="documents")
async def _documents() -> AsyncIterator[CamundaDocumentsEmulator]:
    async with CamundaDocumentsEmulator() as emulator:
        yield emulator


async def test_official_client_round_trip(
    documents: CamundaDocumentsEmulator, tmp_path: Path
) -> None:
    """Upload, download with the hash, a wrong hash (400), delete (204), then 404."""
    upload = tmp_path / "invoice.pdf"
    upload.write_bytes(PDF)
    seen = await official_client(documents.rest_address, upload)
    reference = seen["reference"]
    assert reference["camunda.document.type"] == "camunda"
    assert reference["storeId"] == "in-memory"
    assert reference["metadata"] == {
        "contentType": "application/pdf",
        "fileName": "invoice.pdf",
        "expiresAt": None,
        "size": len(PDF),
        "processDefinitionId": None,
        "processInstanceKey": None,
        "customProperties": {"origin": "official-client"},
    }
    assert base64.b64decode(seen["downloaded"]) == PDF
    assert (seen["wrongHash"], seen["deleted"], seen["afterDelete"]) == (400, "ok", 404)
    assert documents.documents == {}
    upload_request = documents.requests[0]
    assert upload_request.headers["content-type"].startswith("multipart/form-data")


async def test_official_client_with_oauth(tmp_path: Path) -> None:
    """With bearer tokens required, the client's OAuth token is accepted; none gets a 401."""
    forms: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        forms.append({k: str(v) for k, v in (await request.post()).items()})
        return web.json_response(
            {"access_token": "token-1", "token_type": "Bearer", "expires_in": 300}
        )

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    token_url = f"http://127.0.0.1:{runner.addresses[0][1]}/oauth/token"
    upload = tmp_path / "invoice.pdf"
    upload.write_bytes(PDF)
    try:
        async with CamundaDocumentsEmulator(bearer_tokens={"token-1"}) as documents:
            seen = await official_client(
                documents.rest_address,
                upload,
                CAMUNDA_AUTH_STRATEGY="OAUTH",
                CAMUNDA_CLIENT_ID="worker",
                CAMUNDA_CLIENT_SECRET="s3cr3t",
                CAMUNDA_OAUTH_URL=token_url,
                CAMUNDA_TOKEN_AUDIENCE="zeebe-api",
            )
            assert base64.b64decode(seen["downloaded"]) == PDF
            assert {r.headers.get("authorization") for r in documents.requests} == {
                "Bearer token-1"
            }
            async with httpx.AsyncClient() as http:
                refused = await http.delete(f"{documents.rest_address}/v2/documents/x")
            assert refused.status_code == 401
            assert refused.headers["content-type"] == "application/problem+json"
    finally:
        await runner.cleanup()
    assert forms[0]["client_id"] == "worker"


async def test_errors_are_problem_details(documents: CamundaDocumentsEmulator) -> None:
    """409 for an existing documentId, 415 without multipart, 404 once expired, 413 over the
    limit (before the body is read), injected 500s."""
    reference = documents.add(b"abc", file_name="a.txt", content_type="text/plain")
    document_id = reference["documentId"]
    base = f"{documents.rest_address}/v2/documents"
    async with httpx.AsyncClient() as http:
        again = await http.post(
            base, params={"documentId": document_id}, files={"file": ("a.txt", b"x")}
        )
        assert again.status_code == 409
        assert again.json()["title"] == "ALREADY_EXISTS"
        assert (await http.post(base, content=b"x")).status_code == 415
        got = await http.get(
            f"{base}/{document_id}", params={"contentHash": reference["contentHash"]}
        )
        assert (got.status_code, got.content, got.headers["content-type"]) == (
            200,
            b"abc",
            "text/plain",
        )
        assert (await http.get(f"{base}/{document_id}")).status_code == 400  # no hash
        documents.expire(document_id)
        expired = await http.get(
            f"{base}/{document_id}", params={"contentHash": reference["contentHash"]}
        )
        assert expired.status_code == 404
        documents.max_upload_bytes = 10
        too_large = await http.post(base, files={"file": ("b.bin", b"y" * 100)})
        assert too_large.status_code == 413
        documents.inject(DocumentFault("error", method="POST", status=503))
        assert (await http.post(base, files={"file": ("b.bin", b"y")})).status_code == 503


async def test_cut_download(documents: CamundaDocumentsEmulator) -> None:
    """A download cut after some bytes ends in a broken chunked body, not a short success."""
    reference = documents.add(b"z" * 1_000_000)
    documents.cut_next_download(100_000)
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(
                f"{documents.rest_address}/v2/documents/{reference['documentId']}",
                params={"contentHash": reference["contentHash"]},
            )
