"""Attachments and Camunda documents end to end (docs/contract.md §11, docs/attachments.md): the
worker between the Zeebe gateway, ServiceNow and document store emulators; each test checks what
ServiceNow and the document store hold afterwards."""

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servicenow_emulators.camunda_documents import CamundaDocumentsEmulator, DocumentFault
from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import JobOutcome, ZeebeGatewayEmulator
from servicenow_worker.zeebe import JobPump

from .conftest import JOB_TYPE, USER, RunJob, StartWorker, job_variables

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 300
ATTACHMENT_FILE = "/api/now/attachment/file"
FIFTY_MB = bytes(range(256)) * (50 * 1024 * 4)


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


def uploads(servicenow: ServiceNowEmulator) -> list[Any]:
    return [r for r in servicenow.requests if r.path == ATTACHMENT_FILE]


class TestAttachFailures:
    async def test_unknown_document_type(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """A reference of a type the worker cannot read: retries 0, no request anywhere."""
        sys_id = incident(servicenow)
        external = {"camunda.document.type": "external", "url": "https://example.com/a.pdf"}
        outcome = await jobs.run(attach(sys_id, document=external))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "camunda.document.type 'external'" in outcome.error_message
        assert servicenow.requests == [] and documents.requests == []

    @pytest.mark.parametrize("gone", ["deleted", "expired"])
    async def test_missing_or_expired_document(
        self,
        jobs: Jobs,
        servicenow: ServiceNowEmulator,
        documents: CamundaDocumentsEmulator,
        gone: str,
    ) -> None:
        """A document the store no longer has (404): retries 0; nothing attached."""
        sys_id = incident(servicenow)
        reference = documents.add(PDF, file_name="invoice.pdf")
        if gone == "deleted":
            del documents.documents[reference["documentId"]]
        else:
            documents.expire(reference["documentId"])
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "404" in outcome.error_message
        assert "does not exist or has expired" in outcome.error_message
        assert servicenow.attachments.attachments() == []

    async def test_hash_mismatch(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """A reference whose contentHash the store refuses (400): retries 0; nothing attached."""
        sys_id = incident(servicenow)
        reference = {**documents.add(PDF, file_name="invoice.pdf"), "contentHash": "f" * 64}
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "does not match the stored document" in outcome.error_message
        assert servicenow.attachments.attachments() == []

    @pytest.mark.parametrize("refusal", ["extension", "mime"])
    async def test_servicenow_refuses_the_file(
        self,
        jobs: Jobs,
        servicenow: ServiceNowEmulator,
        documents: CamundaDocumentsEmulator,
        refusal: str,
    ) -> None:
        """A blocked extension or a type that does not match the bytes, answered by ServiceNow:
        retries 0 with ServiceNow's words; nothing stored."""
        sys_id = incident(servicenow)
        if refusal == "extension":
            servicenow.attachments.allowed_extensions = {"pdf"}
            reference = documents.add(b"MZ\x90", file_name="tool.exe")
        else:
            servicenow.attachments.mime_type_validation = True
            reference = documents.add(
                b"not a pdf", file_name="x.pdf", content_type="application/pdf"
            )
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        expected = "'exe' is not allowed" if refusal == "extension" else "does not match its MIME"
        assert "ServiceNow answered 400" in outcome.error_message
        assert expected in outcome.error_message
        assert servicenow.attachments.attachments() == []

    async def test_record_not_found(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        outcome = await jobs.run(attach("0" * 32, content="x", fileName="a.txt"))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert f"incident record {'0' * 32} does not exist" in outcome.error_message
        assert servicenow.attachments.attachments() == []

    async def test_too_large_by_its_metadata(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """A document whose size exceeds WORKER_MAX_ATTACHMENT_BYTES: retries 0 naming both,
        before a byte is read or written."""
        sys_id = incident(servicenow)
        jobs.settings = {"worker_max_attachment_bytes": 1000}
        reference = documents.add(PDF, file_name="invoice.pdf")
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert f"invoice.pdf is {len(PDF)} bytes" in outcome.error_message
        assert "WORKER_MAX_ATTACHMENT_BYTES allows 1000 bytes" in outcome.error_message
        assert servicenow.requests == []
        assert [r.method for r in documents.requests] == []

    async def test_too_large_found_while_streaming(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """A reference without a size: the limit stops the stream; ServiceNow keeps nothing."""
        sys_id = incident(servicenow)
        jobs.settings = {"worker_max_attachment_bytes": 1000}
        reference = documents.add(PDF, file_name="invoice.pdf")
        del reference["metadata"]["size"]
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "WORKER_MAX_ATTACHMENT_BYTES allows 1000 bytes" in outcome.error_message
        assert servicenow.attachments.attachments() == []

    async def test_document_store_unavailable_is_retried(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        sys_id = incident(servicenow)
        reference = documents.add(PDF, file_name="invoice.pdf")
        documents.inject(DocumentFault("error", method="GET", status=503))
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert "document store answered 503" in outcome.error_message
        assert servicenow.attachments.attachments() == []

    async def test_servicenow_5xx_is_retried(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        sys_id = incident(servicenow)
        reference = documents.add(PDF, file_name="invoice.pdf")
        servicenow.inject(Fault.service_unavailable(path=ATTACHMENT_FILE))
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert "ServiceNow answered 503" in outcome.error_message
        assert servicenow.attachments.attachments() == []

    async def test_document_cut_mid_stream(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """The document store drops the connection mid-file: retryable, named as the store's
        fault; the upload to ServiceNow is broken off, so no half file is attached."""
        sys_id = incident(servicenow)
        reference = documents.add(PDF * 20, file_name="big.pdf")
        documents.cut_next_download(100_000)
        outcome = await jobs.run(attach(sys_id, document=reference))
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert "connection to the document store broke" in outcome.error_message
        assert len(uploads(servicenow)) == 1
        assert servicenow.attachments.attachments() == []

    async def test_lost_answer_then_retry_adds_no_second_copy(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """ServiceNow stores the attachment but its answer is lost: the job is retried, and the
        retry returns the existing attachment with deduplicated: true."""
        sys_id = incident(servicenow)
        reference = documents.add(PDF, file_name="invoice.pdf", content_type="application/pdf")
        servicenow.inject(Fault.drop_after_processing(path=ATTACHMENT_FILE))
        first = await jobs.run(attach(sys_id, document=reference))
        assert (first.kind, first.retries) == ("fail", 2)
        [stored] = servicenow.attachments.attachments(sys_id)
        again = await jobs.run(attach(sys_id, document=reference))
        assert again.kind == "complete", again.error_message
        answer = again.variables["answer"]
        assert answer["deduplicated"] is True
        assert answer["result"]["sys_id"] == stored["sys_id"]
        assert len(servicenow.attachments.attachments(sys_id)) == 1
        assert len(uploads(servicenow)) == 1

    async def test_same_name_and_size_but_other_bytes_is_attached(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """Deduplication compares the hash ServiceNow gives: a different file of the same name
        and size is a new attachment."""
        sys_id = incident(servicenow)
        servicenow.attachments.add("incident", sys_id, "note.txt", b"aaaa", "text/plain")
        outcome = await jobs.run(attach(sys_id, content="bbbb", fileName="note.txt"))
        assert outcome.kind == "complete", outcome.error_message
        assert "deduplicated" not in outcome.variables["answer"]
        assert len(servicenow.attachments.attachments(sys_id)) == 2


def download_one(attachment_sys_id: str) -> dict[str, Any]:
    return job_variables(operation="download", attachmentSysId=attachment_sys_id)


class TestDownloadFailures:
    async def test_attachment_not_found(
        self, jobs: Jobs, documents: CamundaDocumentsEmulator
    ) -> None:
        outcome = await jobs.run(download_one("0" * 32))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert f"attachment {'0' * 32} does not exist" in outcome.error_message
        assert documents.requests == []

    async def test_record_not_found(self, jobs: Jobs, documents: CamundaDocumentsEmulator) -> None:
        outcome = await jobs.run(
            job_variables(operation="download", table="incident", sysId="0" * 32)
        )
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert f"incident record {'0' * 32} does not exist" in outcome.error_message
        assert documents.requests == []

    async def test_more_attachments_than_allowed(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        sys_id = incident(servicenow)
        for index in range(3):
            servicenow.attachments.add("incident", sys_id, f"{index}.txt", b"x")
        outcome = await jobs.run(
            job_variables(operation="download", table="incident", sysId=sys_id, maxAttachments=2)
        )
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert "has 3 attachments matching; maxAttachments is 2" in outcome.error_message
        assert documents.requests == []

    async def test_too_large_before_anything_is_written(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        sys_id = incident(servicenow)
        record = servicenow.attachments.add("incident", sys_id, "scan.pdf", PDF)
        jobs.settings = {"worker_max_attachment_bytes": 1000}
        outcome = await jobs.run(download_one(record["sys_id"]))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert f"scan.pdf is {len(PDF)} bytes" in outcome.error_message
        assert "WORKER_MAX_ATTACHMENT_BYTES" in outcome.error_message
        assert documents.requests == []

    async def test_connection_dropped_mid_50_mb(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """ServiceNow drops the connection 20 MB into a 50 MB file: retryable; the document
        store keeps nothing of it; the attachment is untouched."""
        sys_id = incident(servicenow)
        record = servicenow.attachments.add("incident", sys_id, "video.mp4", FIFTY_MB)
        servicenow.attachments.cut_next_download(20 * 1024 * 1024)
        outcome = await jobs.run(download_one(record["sys_id"]))
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert "connection to ServiceNow broke" in outcome.error_message
        assert documents.documents == {}
        assert [r.method for r in documents.requests].count("POST") == 1
        assert servicenow.attachments.attachments(sys_id) == [
            servicenow.attachments.attachments(sys_id)[0]
        ]
        again = await jobs.run(download_one(record["sys_id"]))
        assert again.kind == "complete", again.error_message
        [stored] = documents.documents.values()
        assert stored.data == FIFTY_MB

    async def test_document_store_5xx_is_retried(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        sys_id = incident(servicenow)
        record = servicenow.attachments.add("incident", sys_id, "scan.pdf", PDF)
        documents.inject(DocumentFault("error", method="POST", status=500))
        outcome = await jobs.run(download_one(record["sys_id"]))
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert "document store answered 500" in outcome.error_message
        assert documents.documents == {}

    async def test_store_upload_limit(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """The cluster refuses the file as too large (413): retries 0 naming the size and the
        cluster's limit."""
        sys_id = incident(servicenow)
        record = servicenow.attachments.add("incident", sys_id, "scan.pdf", PDF)
        documents.max_upload_bytes = 1000
        outcome = await jobs.run(download_one(record["sys_id"]))
        assert (outcome.kind, outcome.retries) == ("fail", 0)
        assert f"the file ({len(PDF)} bytes) is larger than the cluster's upload limit" in (
            outcome.error_message
        )
        assert documents.documents == {}

    async def test_failure_midway_removes_the_delivery(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """When the second of three attachments fails, the first one's document is deleted:
        the variables never see it, so nothing may stay behind in the store."""
        sys_id = incident(servicenow)
        servicenow.attachments.add("incident", sys_id, "a.txt", b"a")
        broken = servicenow.attachments.add("incident", sys_id, "b.txt", b"b")
        servicenow.attachments.add("incident", sys_id, "c.txt", b"c")
        servicenow.inject(
            Fault.bad_gateway(path=f"/api/now/attachment/{broken['sys_id']}/file", times=None)
        )
        outcome = await jobs.run(
            job_variables(operation="download", table="incident", sysId=sys_id)
        )
        assert (outcome.kind, outcome.retries) == ("fail", 2)
        assert "ServiceNow answered 502" in outcome.error_message
        assert [r.method for r in documents.requests] == ["POST", "DELETE"]
        assert documents.documents == {}

    async def test_delivered_again_replaces_the_first_delivery(
        self, jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
    ) -> None:
        """The same task delivered twice (its completion was lost): the store holds one
        delivery's documents, the ones the second answer names."""
        sys_id = incident(servicenow)
        servicenow.attachments.add("incident", sys_id, "a.txt", b"a")
        servicenow.attachments.add("incident", sys_id, "b.txt", b"b")
        variables = job_variables(operation="download", table="incident", sysId=sys_id)
        first = await jobs.run(variables, element_instance_key=4242)
        second = await jobs.run(variables, element_instance_key=4242)
        assert first.kind == second.kind == "complete"
        delivered = second.variables["answer"]["result"]
        assert sorted(d.reference()["documentId"] for d in documents.documents.values()) == sorted(
            r["documentId"] for r in delivered
        )
        assert len(documents.documents) == 2

    async def test_delete_whose_answer_was_lost(
        self, jobs: Jobs, servicenow: ServiceNowEmulator
    ) -> None:
        """deleteAttachment: the attachment is deleted, the answer lost, the retry gets 404: done."""
        sys_id = incident(servicenow)
        record = servicenow.attachments.add("incident", sys_id, "a.txt", b"a")
        servicenow.inject(
            Fault.drop_after_processing(path=f"/api/now/attachment/{record['sys_id']}")
        )
        outcome = await jobs.run(
            job_variables(operation="deleteAttachment", attachmentSysId=record["sys_id"])
        )
        assert outcome.kind == "complete", outcome.error_message
        assert outcome.variables["answer"] == {"status": 204, "result": None}
        assert servicenow.attachments.attachments() == []


async def test_download_keeps_hostile_names_out_of_the_upload_headers(
    jobs: Jobs, servicenow: ServiceNowEmulator, documents: CamundaDocumentsEmulator
) -> None:
    """A file name with line breaks or a malformed type (stored in ServiceNow by someone else)
    cannot add a part or a header to the multipart upload: the attachment's sys_id and
    application/octet-stream stand in."""
    sys_id = incident(servicenow)
    record = servicenow.attachments.add(
        "incident", sys_id, 'a.pdf"\r\nContent-Type: text/html', b"x", "text/plain; evil"
    )
    outcome = await jobs.run(download_one(record["sys_id"]))
    assert outcome.kind == "complete", outcome.error_message
    [stored] = documents.documents.values()
    assert stored.metadata["fileName"] == record["sys_id"]
    assert stored.metadata["contentType"] == "application/octet-stream"
    assert stored.data == b"x"


async def test_without_a_document_store_configured(
    run_job: RunJob, servicenow: ServiceNowEmulator
) -> None:
    """No CAMUNDA_REST_ADDRESS: attach with documents fails with retries 0 naming the setting,
    before any request; inline content still works."""
    sys_id = incident(servicenow)
    failed = await run_job(
        attach(sys_id, document={"camunda.document.type": "camunda", "documentId": "d-1"})
    )
    assert (failed.kind, failed.retries) == ("fail", 0)
    assert "CAMUNDA_REST_ADDRESS" in failed.error_message
    assert servicenow.requests == []
    done = await run_job(attach(sys_id, content="note", fileName="note.txt"))
    assert done.kind == "complete", done.error_message
    assert [a["file_name"] for a in servicenow.attachments.attachments(sys_id)] == ["note.txt"]
