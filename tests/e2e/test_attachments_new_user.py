"""Tried as a new user would, following README's "Attachments and Camunda documents": a file
uploaded with Camunda's official client becomes an attachment of a record through a job, and a
second job brings it back as a new document, which the official client reads with the same bytes.

The document store emulator runs as the README starts it (`python -m
servicenow_emulators.camunda_documents`), the worker as the console script with the README's
settings; the Zeebe gateway and ServiceNow emulators stand in for the cluster and the instance.
"""

import asyncio
import base64
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

from .conftest import JOB_TYPE, job_variables
from .worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("official_documents.mjs")
INVOICE = b"%PDF-1.7\n" + os.urandom(300_000)


async def official_client(rest_address: str, *args: str) -> str:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules/@camunda8/orchestration-cluster-api").exists():
        pytest.fail("needs Node.js and `npm ci` (@camunda8/orchestration-cluster-api)")
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        *args,
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "CAMUNDA_REST_ADDRESS": rest_address},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


@pytest.fixture(name="rest_address")
async def _documents_emulator() -> AsyncIterator[str]:
    """`python -m servicenow_emulators.camunda_documents` on a free port, as README starts it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "servicenow_emulators.camunda_documents",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    assert "listening on http://" in line, line
    yield line.rsplit(" ", 1)[1].strip()
    process.terminate()
    await process.wait()


async def outcome_of(gateway: ZeebeGatewayEmulator, variables: dict[str, Any]) -> Any:
    key = gateway.create_job(JOB_TYPE, variables, {"resultVariable": "answer"})
    outcome = await gateway.wait_for_outcome(key, timeout=30)
    assert outcome.kind == "complete", outcome.error_message
    return outcome.variables["answer"]


async def test_document_to_attachment_and_back(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    rest_address: str,
    tmp_path: Path,
) -> None:
    upload = tmp_path / "invoice.pdf"
    upload.write_bytes(INVOICE)
    reference = json.loads(
        await official_client(rest_address, "upload", str(upload), "invoice.pdf", "application/pdf")
    )
    worker = WorkerProcess(
        ZEEBE_ADDRESS=gateway.address,
        SERVICENOW_URL_TEMPLATE=servicenow.base_url,
        CAMUNDA_REST_ADDRESS=rest_address,
        HEALTH_PORT="0",
        WORKER_POLL_TIMEOUT="0.5",
    )
    await worker.start()
    try:
        sys_id = servicenow.insert("incident", {"short_description": "invoice dispute"})["sys_id"]
        attached = await outcome_of(
            gateway,
            job_variables(operation="attach", table="incident", sysId=sys_id, document=[reference]),
        )
        [attachment] = attached["result"]
        assert servicenow.attachments.content[attachment["sys_id"]] == INVOICE
        assert (attachment["file_name"], attachment["content_type"]) == (
            "invoice.pdf",
            "application/pdf",
        )
        downloaded = await outcome_of(
            gateway, job_variables(operation="download", table="incident", sysId=sys_id)
        )
        [document] = downloaded["result"]
        assert document["documentId"] != reference["documentId"]
        assert document["metadata"]["fileName"] == "invoice.pdf"
        data = await official_client(rest_address, "download", json.dumps(document))
        assert base64.b64decode(data) == INVOICE
    finally:
        worker.send()
        assert await worker.exit_code() == 0
