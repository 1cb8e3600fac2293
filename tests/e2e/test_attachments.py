"""Attachments and Camunda documents end to end (docs/contract.md §11, docs/attachments.md): the
worker between the Zeebe gateway, ServiceNow and document store emulators; each test checks what
ServiceNow and the document store hold afterwards."""

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servicenow_emulators.camunda_documents import CamundaDocumentsEmulator
from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator
from servicenow_worker.zeebe import JobPump

from .conftest import JOB_TYPE, USER, StartWorker, job_variables

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 300
ATTACHMENT_FILE = "/api/now/attachment/file"


@pytest.fixture(name="documents")
async def _documents() -> AsyncIterator[CamundaDocumentsEmulator]:
    async with CamundaDocumentsEmulator() as emulator:
        yield emulator


class Jobs:
    """Runs jobs through one worker that knows the document store."""

    def __init__(
        self,
        gateway: ZeebeGatewayEmulator,
        start_worker: StartWorker,
        documents: CamundaDocumentsEmulator,
    ) -> None:
        self.gateway = gateway
        self.start_worker = start_worker
        self.documents = documents
        self.worker: JobPump | None = None
        self.settings: dict[str, Any] = {}

    async def run(
        self, variables: dict[str, Any], headers: dict[str, Any] | None = None, **keys: Any
    ) -> JobOutcome:
        if self.worker is None:
            self.worker = await self.start_worker(
                camunda_rest_address=self.documents.rest_address, **self.settings
            )
        key = self.gateway.create_job(
            JOB_TYPE, variables, {"resultVariable": "answer", **(headers or {})}, 3, **keys
        )
        [first] = await self.gateway.wait_for_outcomes(key, 1)
        return first


@pytest.fixture(name="jobs")
def _jobs(
    gateway: ZeebeGatewayEmulator, start_worker: StartWorker, documents: CamundaDocumentsEmulator
) -> Jobs:
    return Jobs(gateway, start_worker, documents)


def incident(servicenow: ServiceNowEmulator) -> str:
    return servicenow.insert("incident", {"short_description": "printer on fire"})["sys_id"]


def attach(sys_id: str, **inputs: Any) -> dict[str, Any]:
    return job_variables(operation="attach", table="incident", sysId=sys_id, **inputs)


class TestAttach:
    async def test_documents_become_attachments(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """A list of documents (a form's file picker) becomes one attachment each, with the
        documents' names, types and bytes; the result lists the attachment records."""
        sys_id = incident(servicenow)
        invoice = documents.add(PDF, file_name="invoice.pdf", content_type="application/pdf")
        notes = documents.add(b"call back", file_name="notes.txt", content_type="text/plain")
        outcome = await jobs.run(attach(sys_id, document=[invoice, notes]))
        assert outcome.kind == "complete", outcome.error_message
        answer = outcome.variables["answer"]
        assert answer["status"] == 201
        assert "deduplicated" not in answer
        assert [r["file_name"] for r in answer["result"]] == ["invoice.pdf", "notes.txt"]
        stored = servicenow.attachments.attachments(sys_id)
        assert [(a["file_name"], a["content_type"]) for a in stored] == [
            ("invoice.pdf", "application/pdf"),
            ("notes.txt", "text/plain"),
        ]
        assert servicenow.attachments.content[stored[0]["sys_id"]] == PDF
        assert stored[0]["hash"] == hashlib.sha256(PDF).hexdigest()
        assert stored[0]["sys_created_by"] == USER
        # Streamed: the upload did not announce a length it did not know.
        upload = await servicenow.wait_for_request(lambda r: r.path == ATTACHMENT_FILE)
        assert upload.query["file_name"] == "invoice.pdf"

    async def test_inline_text_and_base64(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """Content given inline: text as UTF-8 (text/plain), base64 decoded (octet-stream)."""
        sys_id = incident(servicenow)
        text = await jobs.run(attach(sys_id, content="Grüße\n", fileName="note.txt"))
        assert text.kind == "complete", text.error_message
        assert text.variables["answer"]["result"]["file_name"] == "note.txt"
        encoded = base64.b64encode(b"\x00\x01binary").decode()
        binary = await jobs.run(
            attach(sys_id, content=encoded, contentEncoding="base64", fileName="blob.bin")
        )
        assert binary.kind == "complete", binary.error_message
        stored = {
            a["file_name"]: (a["content_type"], servicenow.attachments.content[a["sys_id"]])
            for a in servicenow.attachments.attachments(sys_id)
        }
        assert stored == {
            "note.txt": ("text/plain", "Grüße\n".encode()),
            "blob.bin": ("application/octet-stream", b"\x00\x01binary"),
        }
        assert documents.requests == []


class TestListAndDelete:
    async def test_list_with_query_then_delete(
        self, jobs: Jobs, servicenow: ServiceNowEmulator
    ) -> None:
        """listAttachments narrows with query and pages; deleteAttachment removes one."""
        sys_id = incident(servicenow)
        other = incident(servicenow)
        servicenow.attachments.add("incident", other, "elsewhere.pdf", b"%PDF-x")
        for name in ("a.pdf", "b.txt", "c.pdf"):
            servicenow.attachments.add("incident", sys_id, name, b"x")
        listed = await jobs.run(
            job_variables(
                operation="listAttachments",
                table="incident",
                sysId=sys_id,
                query="file_nameENDSWITH.pdf",
                limit=1,
            )
        )
        assert listed.kind == "complete", listed.error_message
        answer = listed.variables["answer"]
        assert [r["file_name"] for r in answer["result"]] == ["a.pdf"]
        assert (answer["count"], answer["totalCount"], answer["hasMore"]) == (1, 2, True)
        target = answer["result"][0]["sys_id"]
        deleted = await jobs.run(
            job_variables(operation="deleteAttachment", attachmentSysId=target)
        )
        assert deleted.kind == "complete", deleted.error_message
        assert deleted.variables["answer"] == {"status": 204, "result": None}
        assert [a["file_name"] for a in servicenow.attachments.attachments(sys_id)] == [
            "b.txt",
            "c.pdf",
        ]


class TestDownload:
    async def test_one_attachment_becomes_a_document(
        self,
        jobs: Jobs,
        servicenow: ServiceNowEmulator,
        documents: CamundaDocumentsEmulator,
    ) -> None:
        """download by attachmentSysId uploads the bytes with the metadata (file name, type,
        size, process, custom properties naming the attachment) and answers the reference."""
        sys_id = incident(servicenow)
        record = servicenow.attachments.add("incident", sys_id, "scan.pdf", PDF, "application/pdf")
        outcome = await jobs.run(
            job_variables(operation="download", attachmentSysId=record["sys_id"]),
            process_instance_key=2251799813685249,
            bpmn_process_id="order-process",
        )
        assert outcome.kind == "complete", outcome.error_message
        reference = outcome.variables["answer"]["result"]
        [stored] = documents.documents.values()
        assert reference == stored.reference()
        assert stored.data == PDF
        assert stored.metadata == {
            "contentType": "application/pdf",
            "fileName": "scan.pdf",
            "expiresAt": None,
            "size": len(PDF),
            "processDefinitionId": "order-process",
            "processInstanceKey": "2251799813685249",
            "customProperties": {
                "sysId": record["sys_id"],
                "table": "incident",
                "tableSysId": sys_id,
            },
        }

    async def test_every_attachment_of_a_record(
        self,
        jobs: Jobs,
        servicenow: ServiceNowEmulator,
        documents: CamundaDocumentsEmulator,
    ) -> None:
        """table + sysId (+ query) downloads each matching attachment, in ServiceNow's order."""
        sys_id = incident(servicenow)
        servicenow.attachments.add("incident", sys_id, "a.pdf", b"%PDF-a", "application/pdf")
        servicenow.attachments.add("incident", sys_id, "b.txt", b"bee", "text/plain")
        servicenow.attachments.add("incident", sys_id, "c.pdf", b"%PDF-c", "application/pdf")
        outcome = await jobs.run(
            job_variables(
                operation="download", table="incident", sysId=sys_id, query="file_nameENDSWITH.pdf"
            )
        )
        assert outcome.kind == "complete", outcome.error_message
        answer = outcome.variables["answer"]
        assert answer["count"] == 2
        assert [r["metadata"]["fileName"] for r in answer["result"]] == ["a.pdf", "c.pdf"]
        assert sorted(d.data for d in documents.documents.values()) == [b"%PDF-a", b"%PDF-c"]
