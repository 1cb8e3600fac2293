"""Attachments and Camunda documents (docs/contract.md §11, docs/attachments.md).

`attach` puts a process's Camunda documents (or inline content) on a record as attachments;
`download` puts a record's attachments into Camunda's document store and answers the document
references; `listAttachments` and `deleteAttachment` do what they say. Files flow chunk by chunk
from one side to the other (`Transfer`): the worker never holds a whole file, and it stops a file
that grows past `WORKER_MAX_ATTACHMENT_BYTES` before the other side has it whole.
"""

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import quote

import httpx
import structlog
from pydantic import BeforeValidator, Field, model_validator

from servicenow_worker.camunda_documents import DOCUMENT_ID, DocumentReference, DocumentStore
from servicenow_worker.errors import (
    FILE_TOO_LARGE,
    INVALID_RESPONSE,
    NOT_CONFIGURED,
    TOO_MANY_ATTACHMENTS,
    DocumentRefused,
    InputError,
    ServiceNowRejected,
    ServiceNowUnavailable,
    WorkerError,
)
from servicenow_worker.inputs import (
    DEFAULT_LIMIT,
    DestinationInputs,
    EncodedQuery,
    NotNegative,
    PageSize,
    SysId,
    TableName,
    counted,
)
from servicenow_worker.operations.family import JobContext, OperationFamily
from servicenow_worker.servicenow import (
    ApiCall,
    Upload,
    checked,
    json_body,
    query_string,
    total_count,
)

log = structlog.get_logger(__name__)

ATTACHMENT_API: Final = "/api/now/attachment"
DEFAULT_MAX_ATTACHMENTS: Final = 10
MAX_ATTACHMENTS_LIMIT: Final = 100
TEXT_TYPE: Final = "text/plain"
BINARY_TYPE: Final = "application/octet-stream"
# Download document ids: one per (task execution, attachment), so a delivery made again replaces
# the documents of the one before instead of adding to them.
DOCUMENT_NAMESPACE: Final = uuid.UUID("5d6c3f0e-8f5e-4c44-9a55-2b1f0d7f3a10")
MEDIA_TYPE: Final = re.compile(
    r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}"
    r"(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(\"[^\"\r\n]*\"|[A-Za-z0-9!#$&^_.+-]+))*"
)
CONTENT_HASH: Final = re.compile(r"[\x21-\x7e]{1,256}")


# -- calls to the Attachment API ------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceNowAnswer:
    """ServiceNow's answer to an Attachment API call: its `result` (None for 204) and
    `X-Total-Count`."""

    status: int
    result: Any
    total_count: int | None = None
    body_bytes: int = 0


def _answer(what: str, response: httpx.Response) -> ServiceNowAnswer:
    status = checked(what, response).status_code
    if status == 204 or not response.content:
        return ServiceNowAnswer(status=status, result=None)
    return ServiceNowAnswer(
        status=status,
        result=json_body(what, response)["result"],
        total_count=total_count(response),
        body_bytes=len(response.content),
    )


async def _call(
    context: JobContext,
    inputs: DestinationInputs,
    method: str,
    path: str,
    what: str,
    body: Upload | None = None,
) -> ServiceNowAnswer:
    """One call to `path` (encoded already, each value from outside quoted) on the instance."""
    call = ApiCall(method, inputs.base_url + path, what, partial(_answer, what), body)
    return await context.servicenow.call(inputs, call, deadline=context.deadline)


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Documents:
    """The `document` input: one reference or a list (`as_list` keeps which, for the result)."""

    references: tuple[DocumentReference, ...]
    as_list: bool


def _documents(value: Any) -> Documents:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("must be a Camunda document reference or a list of them") from None
    if isinstance(value, Mapping):
        return Documents((_reference(value, None),), as_list=False)
    if isinstance(value, list) and value:
        return Documents(tuple(_reference(item, i) for i, item in enumerate(value)), as_list=True)
    raise ValueError(
        "must be a Camunda document reference (as a form's file picker or a connector gives "
        "it) or a non-empty list of them"
    )


def _reference(value: Any, index: int | None) -> DocumentReference:
    where = "" if index is None else f"[{index}]"
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a document reference object")
    kind = value.get("camunda.document.type")
    if kind != "camunda":
        raise ValueError(
            f"{where} has camunda.document.type {kind!r}, a document type this worker cannot "
            "read: it reads documents of the cluster's document store (type 'camunda')"
        )
    document_id, store_id = value.get("documentId"), value.get("storeId")
    if not isinstance(document_id, str) or not DOCUMENT_ID.fullmatch(document_id):
        raise ValueError(f"{where}.documentId must be a document id (got {document_id!r})")
    if store_id is not None and (
        not isinstance(store_id, str) or not DOCUMENT_ID.fullmatch(store_id)
    ):
        raise ValueError(f"{where}.storeId must be a store id (got {store_id!r})")
    content_hash = value.get("contentHash")
    if content_hash is not None and (
        not isinstance(content_hash, str) or not CONTENT_HASH.fullmatch(content_hash)
    ):
        raise ValueError(f"{where}.contentHash must be the hash the store gave")
    metadata = value.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{where}.metadata must be an object")
    size = metadata.get("size")
    name, media = metadata.get("fileName"), metadata.get("contentType")
    return DocumentReference(
        document_id=document_id,
        store_id=store_id,
        content_hash=content_hash,
        file_name=name if isinstance(name, str) and _valid_file_name(name) else None,
        content_type=media if isinstance(media, str) and MEDIA_TYPE.fullmatch(media) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
    )


def _valid_file_name(name: str) -> bool:
    return 0 < len(name) <= 255 and not any(c in name for c in "/\\") and name.isprintable()


def _file_name(value: Any) -> Any:
    if not isinstance(value, str) or not _valid_file_name(value.strip()):
        raise ValueError(
            "must be a file name such as invoice.pdf: 1 to 255 printable characters, "
            f"no / or \\ (got {value!r})"
        )
    return value.strip()


def _media_type(value: Any) -> Any:
    if not isinstance(value, str) or not MEDIA_TYPE.fullmatch(value.strip()):
        raise ValueError(f"must be a MIME type such as application/pdf (got {value!r})")
    return value.strip()


def _encoding(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in {"text", "base64"}:
        return value.strip().lower()
    raise ValueError(f"must be text or base64 (got {value!r})")


def _attachment_query(value: Any) -> Any:
    # ^NQ starts a new query whose rows are added: it would reach other records' attachments.
    if isinstance(value, str) and "^NQ" in value:
        raise ValueError("cannot hold ^NQ: the query only narrows the record's attachments")
    return value


def _max_attachments(value: Any) -> int:
    return counted(value, MAX_ATTACHMENTS_LIMIT)


DocumentInput = Annotated[Documents, BeforeValidator(_documents)]
FileName = Annotated[str, BeforeValidator(_file_name)]
MediaType = Annotated[str, BeforeValidator(_media_type)]
AttachmentQuery = Annotated[EncodedQuery, BeforeValidator(_attachment_query)]


class AttachInputs(DestinationInputs):
    table: TableName
    sys_id: SysId | None = Field(default=None, alias="sysId")
    document: DocumentInput | None = None
    content: str | None = None
    file_name: FileName | None = Field(default=None, alias="fileName")
    content_type: MediaType | None = Field(default=None, alias="contentType")
    content_encoding: Annotated[Literal["text", "base64"], BeforeValidator(_encoding)] = Field(
        default="text", alias="contentEncoding"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.document is None) == (self.content is None):
            raise InputError(
                "document",
                "or content is required for attach, not both: a Camunda document (or a list), "
                "or content with fileName",
            )
        if self.content is not None and self.file_name is None:
            raise InputError("fileName", "is required with content")
        if self.document is not None and self.file_name and len(self.document.references) > 1:
            raise InputError("fileName", "renames a single document only; this is a list")
        if self.content is not None and self.content_encoding == "base64":
            try:
                base64.b64decode(self.content, validate=True)
            except (binascii.Error, ValueError):
                raise InputError(
                    "content", "is not valid base64 (contentEncoding base64)"
                ) from None
        return self


class ListAttachmentsInputs(DestinationInputs):
    table: TableName
    sys_id: SysId | None = Field(default=None, alias="sysId")
    query: AttachmentQuery | None = None
    limit: PageSize = DEFAULT_LIMIT
    offset: NotNegative = 0


class DownloadInputs(DestinationInputs):
    attachment_sys_id: SysId | None = Field(default=None, alias="attachmentSysId")
    table: TableName | None = None
    sys_id: SysId | None = Field(default=None, alias="sysId")
    query: AttachmentQuery | None = None
    max_attachments: Annotated[int, BeforeValidator(_max_attachments)] = Field(
        default=DEFAULT_MAX_ATTACHMENTS, alias="maxAttachments"
    )

    @model_validator(mode="after")
    def _one_or_every(self) -> Self:
        record = self.table is not None and self.sys_id is not None
        if self.attachment_sys_id is not None and self.sys_id is not None:
            raise InputError(
                "attachmentSysId",
                "cannot be combined with sysId: give attachmentSysId for one attachment, or "
                "table and sysId for every attachment of a record",
            )
        if self.attachment_sys_id is None and not record:
            raise InputError(
                "attachmentSysId",
                "or table and sysId are required for download",
            )
        return self


class DeleteAttachmentInputs(DestinationInputs):
    attachment_sys_id: SysId | None = Field(default=None, alias="attachmentSysId")


# -- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttachmentAnswer:
    """What `resultVariable` receives: `status`, `result` and the operation's own entries."""

    status: int
    result: Any
    extra: dict[str, Any] = field(default_factory=dict)
    body_bytes: int = 0

    def as_variable(self) -> dict[str, Any]:
        return {"status": self.status, "result": self.result, **self.extra}


# -- streaming ------------------------------------------------------------------------------------


class Transfer:
    """Bytes on their way from one side to the other: counted, hashed, bounded.

    A source that fails, or a file that grows past the limit, ends the stream with an error; the
    error is kept, so that the caller reports the cause and not the upload it broke.
    """

    def __init__(self, source: AsyncIterator[bytes], *, name: str, limit: int) -> None:
        self._source = source
        self._name = name
        self._limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.failure: WorkerError | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._source:
                self.size += len(chunk)
                if self.size > self._limit:
                    raise _too_large(self._name, f"more than {self._limit}", self._limit)
                self.sha256.update(chunk)
                yield chunk
        except WorkerError as error:
            self.failure = error
            raise

    def cause(self, error: WorkerError) -> WorkerError:
        """The error to report for `error` raised by the side that read this stream."""
        return self.failure or error


def _too_large(name: str, size: int | str, limit: int) -> DocumentRefused:
    return DocumentRefused(
        FILE_TOO_LARGE,
        f"{name} is {size} bytes; WORKER_MAX_ATTACHMENT_BYTES allows {limit} bytes per file "
        "(nothing was written)",
    )


async def _chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


# -- attach ---------------------------------------------------------------------------------------


async def attach(context: JobContext, inputs: AttachInputs) -> AttachmentAnswer:
    """Each document (or the content) as one attachment of the record; existing ones reused."""
    if inputs.content is not None:
        data = (
            base64.b64decode(inputs.content)
            if inputs.content_encoding == "base64"
            else inputs.content.encode()
        )
        default_type = BINARY_TYPE if inputs.content_encoding == "base64" else TEXT_TYPE
        assert inputs.file_name is not None
        record, deduplicated = await _attach_bytes(
            context, inputs, inputs.file_name, inputs.content_type or default_type, data
        )
        return _attach_answer([record], deduplicated, as_list=False)
    assert inputs.document is not None
    store = _store(context)
    records: list[dict[str, Any]] = []
    any_deduplicated = False
    for reference in inputs.document.references:
        record, deduplicated = await _attach_document(context, inputs, store, reference)
        records.append(record)
        any_deduplicated = any_deduplicated or deduplicated
    return _attach_answer(records, any_deduplicated, as_list=inputs.document.as_list)


def _attach_answer(
    records: list[dict[str, Any]], deduplicated: bool, *, as_list: bool
) -> AttachmentAnswer:
    extra = {"deduplicated": True} if deduplicated else {}
    result: Any = records if as_list else records[0]
    return AttachmentAnswer(
        status=200 if deduplicated and not as_list else 201,
        result=result,
        extra=extra,
        body_bytes=len(json.dumps(result)),
    )


async def _attach_bytes(
    context: JobContext, inputs: AttachInputs, name: str, media: str, data: bytes
) -> tuple[dict[str, Any], bool]:
    limit = context.settings.worker_max_attachment_bytes
    if len(data) > limit:
        raise _too_large(name, len(data), limit)
    digest = hashlib.sha256(data).hexdigest()
    existing = await _existing(context, inputs, name, len(data))
    for record in existing:
        if record.get("hash") in (None, "", digest):
            return record, True
    transfer = Transfer(_chunks_of(data), name=name, limit=limit)
    return await _upload(context, inputs, name, media, transfer, len(data)), False


async def _attach_document(
    context: JobContext, inputs: AttachInputs, store: DocumentStore, reference: DocumentReference
) -> tuple[dict[str, Any], bool]:
    name = inputs.file_name or reference.name
    limit = context.settings.worker_max_attachment_bytes
    if reference.size is not None and reference.size > limit:
        raise _too_large(name, reference.size, limit)
    if reference.size is not None:
        existing = await _existing(context, inputs, name, reference.size)
        if existing:
            digest = await _document_sha256(store, reference, name, limit)
            for record in existing:
                if record.get("hash") in (None, "", digest):
                    return record, True
    media = inputs.content_type or reference.content_type or BINARY_TYPE
    async with store.download(reference) as body:
        transfer = Transfer(body.chunks(), name=name, limit=limit)
        length = body.content_length if body.content_length == reference.size else None
        return await _upload(context, inputs, name, media, transfer, length), False


async def _document_sha256(
    store: DocumentStore, reference: DocumentReference, name: str, limit: int
) -> str:
    """The document's SHA-256, read through once (only to compare with a candidate duplicate)."""
    async with store.download(reference) as body:
        transfer = Transfer(body.chunks(), name=name, limit=limit)
        async for _ in transfer.stream():
            pass
    return transfer.sha256.hexdigest()


async def _existing(
    context: JobContext, inputs: AttachInputs, name: str, size: int
) -> list[dict[str, Any]]:
    """Attachments of the record with this file name and size: an earlier try's, whose answer
    was lost (docs/contract.md §11)."""
    assert inputs.sys_id is not None
    query = _record_query(inputs.table, inputs.sys_id) + (
        f"^file_name={_escaped(name)}^size_bytes={size}"
    )
    answer = await _call(
        context,
        inputs,
        "GET",
        ATTACHMENT_API + query_string({"sysparm_query": query, "sysparm_limit": "10"}),
        f"attach on {inputs.table} (looking for an earlier copy)",
    )
    records = answer.result if isinstance(answer.result, list) else []
    # ServiceNow ignores a condition on a field it does not know: compare again here.
    return [
        r
        for r in records
        if isinstance(r, dict)
        and r.get("file_name") == name
        and str(r.get("size_bytes")) == str(size)
        and r.get("table_sys_id") == inputs.sys_id
    ]


async def _upload(
    context: JobContext,
    inputs: AttachInputs,
    name: str,
    media: str,
    transfer: Transfer,
    length: int | None,
) -> dict[str, Any]:
    assert inputs.sys_id is not None
    what = f"attach of {name} on {inputs.table}"
    params = {"table_name": inputs.table, "table_sys_id": inputs.sys_id, "file_name": name}
    try:
        answer = await _call(
            context,
            inputs,
            "POST",
            ATTACHMENT_API + "/file" + query_string(params),
            what,
            Upload(transfer.stream(), content_type=media, content_length=length),
        )
    except ServiceNowRejected as rejected:
        raise _record_missing(
            rejected, inputs.table, inputs.sys_id, "nothing was attached"
        ) from None
    except WorkerError as error:
        raise transfer.cause(error) from None
    record = answer.result if isinstance(answer.result, dict) else {}
    stored = str(record.get("size_bytes", ""))
    given_hash = record.get("hash")
    intact = stored == str(transfer.size) and given_hash in (None, "", transfer.sha256.hexdigest())
    if not intact:
        # Bytes lost on the way: remove the damaged copy, so that a retry adds no second one.
        await _delete_attachment(context, inputs, record.get("sys_id"))
        raise ServiceNowUnavailable(
            INVALID_RESPONSE,
            f"ServiceNow stored {stored or 'an unknown number of'} bytes of {name} "
            f"({transfer.size} sent) or another hash; the attachment was removed",
        )
    log.info("attachment_created", file_name=name, size=transfer.size)
    return record


def _record_missing(
    rejected: ServiceNowRejected, table: str, sys_id: str, consequence: str
) -> WorkerError:
    if rejected.status != 404:
        return rejected
    return ServiceNowRejected(
        404,
        f"{table} record {sys_id} does not exist, or the user may not read it: {consequence} "
        f"({rejected.message})",
        variables=rejected.variables,
    )


async def _delete_attachment(context: JobContext, inputs: DestinationInputs, sys_id: Any) -> None:
    if not isinstance(sys_id, str) or not sys_id:
        return
    await _call(
        context, inputs, "DELETE", _attachment_path(sys_id), "removing a damaged attachment"
    )


# -- list -----------------------------------------------------------------------------------------


async def list_attachments(context: JobContext, inputs: ListAttachmentsInputs) -> AttachmentAnswer:
    assert inputs.sys_id is not None
    answer = await _listing(
        context, inputs, inputs.table, inputs.sys_id, inputs.query, inputs.limit, inputs.offset
    )
    records = answer.result if isinstance(answer.result, list) else []
    total = answer.total_count
    has_more = total is not None and inputs.offset + len(records) < total
    return AttachmentAnswer(
        status=answer.status,
        result=records,
        extra={"count": len(records), "totalCount": total, "hasMore": has_more},
        body_bytes=answer.body_bytes,
    )


async def _listing(
    context: JobContext,
    inputs: DestinationInputs,
    table: str,
    sys_id: str,
    query: str | None,
    limit: int,
    offset: int = 0,
) -> ServiceNowAnswer:
    """The record's attachments (`GET /api/now/attachment`); a record that does not exist is a
    404, not an empty list."""
    full = _record_query(table, sys_id) + (f"^{query}" if query else "")
    params = {"sysparm_query": full, "sysparm_limit": str(limit), "sysparm_offset": str(offset)}
    answer = await _call(
        context, inputs, "GET", ATTACHMENT_API + query_string(params), f"attachments of {table}"
    )
    if not answer.result and offset == 0:
        await _check_record(context, inputs, table, sys_id)
    return answer


async def _check_record(
    context: JobContext, inputs: DestinationInputs, table: str, sys_id: str
) -> None:
    path = f"/api/now/table/{table}/{quote(sys_id, safe='')}"
    try:
        await _call(
            context,
            inputs,
            "GET",
            path + query_string({"sysparm_fields": "sys_id"}),
            f"read of {table}",
        )
    except ServiceNowRejected as rejected:
        raise _record_missing(rejected, table, sys_id, "it has no attachments to show") from None


# -- download -------------------------------------------------------------------------------------


async def download(context: JobContext, inputs: DownloadInputs) -> AttachmentAnswer:
    """One attachment, or every attachment of the record, as documents of the cluster's store."""
    store = _store(context)
    if inputs.attachment_sys_id is not None:
        reference = await _deliver(context, inputs, store, inputs.attachment_sys_id)
        return AttachmentAnswer(status=200, result=reference, body_bytes=len(json.dumps(reference)))
    assert inputs.table is not None and inputs.sys_id is not None
    listing = await _listing(
        context, inputs, inputs.table, inputs.sys_id, inputs.query, inputs.max_attachments + 1
    )
    records = listing.result if isinstance(listing.result, list) else []
    total = max(listing.total_count or 0, len(records))
    if total > inputs.max_attachments:
        raise DocumentRefused(
            TOO_MANY_ATTACHMENTS,
            f"{inputs.table} record {inputs.sys_id} has {total} attachments matching; "
            f"maxAttachments is {inputs.max_attachments}: narrow query or raise maxAttachments "
            "(nothing was downloaded)",
        )
    delivered: list[dict[str, Any]] = []
    try:
        for record in records:
            delivered.append(await _deliver(context, inputs, store, str(record["sys_id"])))
    except WorkerError:
        # The documents of a delivery that failed would be orphans: the variables never see them.
        for reference in delivered:
            await _forget(store, reference)
        raise
    return AttachmentAnswer(
        status=200,
        result=delivered,
        extra={"count": len(delivered)},
        body_bytes=len(json.dumps(delivered)),
    )


async def _deliver(
    context: JobContext, inputs: DownloadInputs, store: DocumentStore, attachment_sys_id: str
) -> dict[str, Any]:
    """Stream one attachment into the store under this task's document id for it; a document
    left there by an earlier delivery of the same task is replaced, never added to."""
    document_id = str(
        uuid.uuid5(DOCUMENT_NAMESPACE, f"{context.element_instance_key}/{attachment_sys_id}")
    )
    for _ in range(2):
        reference = await _transfer(context, inputs, store, attachment_sys_id, document_id)
        if reference is not None:
            return reference
        await store.delete(document_id, None)  # an earlier delivery's copy (409)
    raise ServiceNowUnavailable(
        INVALID_RESPONSE, f"document {document_id} kept coming back after it was deleted"
    )


async def _transfer(
    context: JobContext,
    inputs: DownloadInputs,
    store: DocumentStore,
    attachment_sys_id: str,
    document_id: str,
) -> dict[str, Any] | None:
    limit = context.settings.worker_max_attachment_bytes
    url = inputs.base_url + _attachment_path(attachment_sys_id) + "/file"
    what = f"download of attachment {attachment_sys_id}"
    try:
        async with context.servicenow.download(
            inputs, url, what, deadline=context.deadline
        ) as answer:
            metadata = _attachment_metadata(answer.headers.get("X-Attachment-Metadata"))
            # Both go into a multipart header of the upload: only well-formed values pass.
            given_name = str(metadata.get("file_name") or "")
            name = given_name if _valid_file_name(given_name) else attachment_sys_id
            size_text = str(metadata.get("size_bytes", ""))
            size = int(size_text) if size_text.isdigit() else None
            if size is not None and size > limit:
                raise _too_large(name, size, limit)
            given_type = str(metadata.get("content_type") or answer.headers.get("Content-Type"))
            media = given_type if MEDIA_TYPE.fullmatch(given_type) else BINARY_TYPE
            transfer = Transfer(answer.chunks(), name=name, limit=limit)
            document_metadata = {
                "fileName": name,
                "contentType": media,
                "size": size,
                "processDefinitionId": context.bpmn_process_id or None,
                "processInstanceKey": str(context.process_instance_key),
                "customProperties": {
                    "sysId": attachment_sys_id,
                    "table": metadata.get("table_name"),
                    "tableSysId": metadata.get("table_sys_id"),
                },
            }
            try:
                reference = await store.create(
                    transfer.stream(),
                    file_name=name,
                    content_type=media,
                    metadata=document_metadata,
                    document_id=document_id,
                )
            except WorkerError as error:
                await _forget(store, {"documentId": document_id})  # a half-written document
                raise transfer.cause(error) from None
    except ServiceNowRejected as rejected:
        if rejected.status == 404:
            raise ServiceNowRejected(
                404,
                f"attachment {attachment_sys_id} does not exist, or the user may not read it "
                f"({rejected.message})",
                variables=rejected.variables,
            ) from None
        raise
    if reference is not None and size is not None and transfer.size != size:
        await _forget(store, reference)
        raise ServiceNowUnavailable(
            INVALID_RESPONSE,
            f"ServiceNow sent {transfer.size} bytes of {name}, whose size is {size}; "
            "the document was removed",
        )
    if reference is not None:
        log.info("document_created", file_name=name, size=transfer.size)
    return reference


async def _forget(store: DocumentStore, reference: Mapping[str, Any]) -> None:
    """Delete a document of a failed delivery; a failure here is logged, not raised over the
    failure that caused it."""
    try:
        await store.delete(str(reference["documentId"]), reference.get("storeId"))
    except WorkerError as error:
        log.warning(
            "document_not_removed", document_id=reference["documentId"], error=error.message
        )


def _attachment_metadata(header: str | None) -> dict[str, Any]:
    """`X-Attachment-Metadata`: the attachment record as (loosely spaced) JSON."""
    if not header:
        return {}
    try:
        parsed = json.loads(header)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# -- delete ---------------------------------------------------------------------------------------


async def delete_attachment(
    context: JobContext, inputs: DeleteAttachmentInputs
) -> AttachmentAnswer:
    assert inputs.attachment_sys_id is not None
    answer = await _call(
        context,
        inputs,
        "DELETE",
        _attachment_path(inputs.attachment_sys_id),
        f"deleteAttachment of {inputs.attachment_sys_id}",
    )
    return AttachmentAnswer(status=answer.status, result=None)


# -- helpers --------------------------------------------------------------------------------------


def _store(context: JobContext) -> DocumentStore:
    if context.documents is None:
        raise DocumentRefused(
            NOT_CONFIGURED,
            "Camunda's document store is not configured: the operator sets CAMUNDA_REST_ADDRESS "
            "(the cluster's REST address, e.g. http://localhost:8080)",
        )
    return context.documents


def _attachment_path(sys_id: str) -> str:
    return f"{ATTACHMENT_API}/{quote(sys_id, safe='')}"


def _record_query(table: str, sys_id: str) -> str:
    return f"table_name={table}^table_sys_id={_escaped(sys_id)}"


def _escaped(value: str) -> str:
    """A value inside an encoded query: `^` is doubled, as ServiceNow reads it."""
    return value.replace("^", "^^")


ATTACH: OperationFamily[AttachInputs] = OperationFamily(model=AttachInputs, run=attach)
LIST: OperationFamily[ListAttachmentsInputs] = OperationFamily(
    model=ListAttachmentsInputs, run=list_attachments
)
DOWNLOAD: OperationFamily[DownloadInputs] = OperationFamily(model=DownloadInputs, run=download)
DELETE: OperationFamily[DeleteAttachmentInputs] = OperationFamily(
    model=DeleteAttachmentInputs, run=delete_attachment
)
