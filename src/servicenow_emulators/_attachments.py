"""ServiceNow's Attachment API for the emulator: `/api/now[/v1]/attachment…`.

What ServiceNow's REST API reference documents and recorded answers show:

* `POST …/attachment/file?table_name=&table_sys_id=&file_name=`: the raw body is the file, its
  `Content-Type` (mandatory) is stored as `content_type`; 400 when a parameter or the type is
  missing, 404 when the record does not exist; 201 with an absolute `Location` that follows the
  request's version and the metadata record (`state: "pending"`, `sys_mod_count: "0"`).
* `POST …/attachment/upload`: multipart/form-data, `table_name` and `table_sys_id` (the Geneva
  name `record_sys_id` too) before the file part, which comes last with its own type.
* `GET …/attachment?sysparm_query=&sysparm_limit=&sysparm_offset=`: metadata records of the
  `sys_attachment` table (default limit 1000) with `X-Total-Count`.
* `GET …/attachment/{sys_id}`, `DELETE …/attachment/{sys_id}` (204), 404 when unknown.
* `GET …/attachment/{sys_id}/file`: the bytes, chunked, with the stored `Content-Type`,
  `Content-Disposition` and `X-Attachment-Metadata` (the record as loosely spaced JSON, no
  `download_link`).

Every value of a metadata record is a string; `hash` is the SHA-256 of the bytes (64 hex digits);
reads after the upload show `state: "available"` and `sys_mod_count: "1"`, as the asynchronous step
of a real instance leaves them. The records live in the `sys_attachment` table, so the Table API and
encoded queries see them too.

Limits (`com.glide.attachment.max_size`, `glide.attachment.extensions`,
`glide.security.file.mime_type.validation`) are knobs of `AttachmentApi`. ServiceNow documents no
status or message for a refused file: the 400s with the messages below are guesses.

Bodies are streamed both ways: an upload is read chunk by chunk (hashed and counted as it comes),
a download written chunk by chunk, so tests can cut either in the middle (`cut_next_download`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from ._table_query import InvalidQueryPolicy
from ._table_schema import Field, FieldType, TableSchema
from ._table_store import Record, TableStore

__all__ = ["ATTACHMENT_TABLE", "AttachmentApi", "UploadRefused"]

ATTACHMENT_TABLE: Final = "sys_attachment"
CHUNK_BYTES: Final = 64 * 1024
DEFAULT_LIST_LIMIT: Final = 1000
DEFAULT_MAX_SIZE_MB: Final = 1024  # com.glide.attachment.max_size
JSON_CONTENT_TYPE: Final = "application/json;charset=UTF-8"
ROUTE_PREFIX: Final = "sn-attachment"
_NOT_FOUND_DETAIL: Final = "Record doesn't exist or ACL restricts the record retrieval"
# The first bytes of the types the MIME check recognises.
_MAGIC: Final = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/zip": (b"PK\x03\x04",),
}


def _schema() -> TableSchema:
    return TableSchema.build(
        ATTACHMENT_TABLE,
        [
            "file_name",
            "content_type",
            Field("size_bytes", FieldType.INTEGER),
            Field("size_compressed", FieldType.INTEGER),
            Field("compressed", FieldType.BOOLEAN, default="false"),
            Field("chunk_size_bytes", default="700000"),
            "hash",
            Field("state", default="pending"),
            "table_name",
            "table_sys_id",
            "image_width",
            "image_height",
            "average_image_color",
            "encryption_context",
        ],
        display_field="file_name",
    )


class UploadRefused(Exception):
    """An upload ServiceNow turns away; `response` is its answer."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _error(status: int, message: str, detail: str | None = None) -> web.Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return _json(body, status)


def _json(payload: object, status: int = 200) -> web.Response:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    response = web.Response(status=status, body=text.encode())
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    return response


@dataclass
class _Incoming:
    """One file as it arrives: counted, hashed and checked chunk by chunk."""

    api: AttachmentApi
    file_name: str
    content_type: str
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, chunk: bytes) -> None:
        if not self.size:
            self.api.check_content(self.file_name, self.content_type, chunk)
        self.size += len(chunk)
        if self.size > self.api.max_size_bytes:
            raise UploadRefused(self.api.too_large(self.size))
        self.digest.update(chunk)
        self.chunks.append(chunk)


class AttachmentApi:
    """The Attachment API of one emulated instance, on the instance's record store.

    `max_size_mb` is `com.glide.attachment.max_size` (`max_size_bytes` may be set directly for
    small test files); `allowed_extensions` is `glide.attachment.extensions` (empty: any);
    `mime_type_validation` is `glide.security.file.mime_type.validation` (a PDF, PNG, JPEG, GIF
    or ZIP type must match the file's first bytes, and such bytes must not come as another type).
    """

    def __init__(self, store: TableStore, user_of: Callable[[web.Request], str | None]) -> None:
        self._store = store
        self._user_of = user_of  # the instance's authentication (it ran before any handler)
        store.add_table(_schema())
        self.content: dict[str, bytes] = {}
        self.max_size_bytes = DEFAULT_MAX_SIZE_MB * 1024 * 1024
        self.allowed_extensions: set[str] = set()
        self.mime_type_validation = False
        self._cuts: list[int] = []

    # -- knobs and inspection for tests ------------------------------------------------------

    def cut_next_download(self, after_bytes: int) -> None:
        """The next download sends `after_bytes` bytes of the file, then drops the connection."""
        self._cuts.append(after_bytes)

    def attachments(self, table_sys_id: str | None = None) -> list[Record]:
        """Copies of the stored metadata records (of one record, when given), oldest first."""
        return [
            dict(r)
            for r in self._store.rows[ATTACHMENT_TABLE].values()
            if table_sys_id is None or r["table_sys_id"] == table_sys_id
        ]

    def add(
        self,
        table: str,
        table_sys_id: str,
        file_name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
    ) -> Record:
        """Seed an attachment (no checks), as if uploaded earlier; a copy of its record."""
        record = self._store_file(
            table, table_sys_id, file_name, content_type, [data], hashlib.sha256(data), "admin"
        )
        return self._available(record)

    # -- routes --------------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for prefix in ("/api/now", "/api/now/{version:v1}"):
            base = prefix + "/attachment"
            router.add_post(base + "/file", self._upload_file)
            router.add_post(base + "/upload", self._upload_multipart)
            router.add_get(base, self._list)
            router.add_get(base + "/{sys_id}", self._get)
            router.add_delete(base + "/{sys_id}", self._delete)
            router.add_get(base + "/{sys_id}/file", self._download)

    @staticmethod
    def reads_own_body(request: web.Request) -> bool:
        """Whether the route streams the request body itself (the uploads)."""
        path = request.path
        return request.method == "POST" and path.endswith(
            ("/attachment/file", "/attachment/upload")
        )

    # -- checks ----------------------------------------------------------------------------------

    def check_content(self, file_name: str, content_type: str, first: bytes) -> None:
        """Refuse a blocked extension or a type that does not match the first bytes."""
        extension = file_name.rpartition(".")[2].lower() if "." in file_name else ""
        if self.allowed_extensions and extension not in self.allowed_extensions:
            raise UploadRefused(
                _error(
                    400,
                    "Failed to create the attachment",
                    f"File extension '{extension}' is not allowed (glide.attachment.extensions)",
                )
            )
        if not self.mime_type_validation:
            return
        declared = content_type.split(";", maxsplit=1)[0].strip().lower()
        sniffed = next(
            (kind for kind, magics in _MAGIC.items() if first.startswith(magics)),
            None,
        )
        if (declared in _MAGIC and sniffed != declared) or (sniffed and sniffed != declared):
            raise UploadRefused(
                _error(
                    400,
                    "Failed to create the attachment",
                    f"The content of {file_name} does not match its MIME type {declared}",
                )
            )

    def too_large(self, size: int) -> web.Response:
        return _error(
            400,
            "Failed to create the attachment",
            f"File size {size} bytes exceeds the maximum allowed attachment size of "
            f"{self.max_size_bytes} bytes (com.glide.attachment.max_size)",
        )

    def _target_error(self, table: str, sys_id: str) -> web.Response | None:
        if not table or not sys_id:
            return _error(400, "Bad Request", "table_name and table_sys_id are mandatory")
        rows = self._store.rows.get(table)
        if rows is None or sys_id not in rows:
            return _error(404, "Not Found", f"Invalid table name or table sys_id: {table} {sys_id}")
        return None

    # -- uploads -----------------------------------------------------------------------------------

    async def _upload_file(self, request: web.Request) -> web.StreamResponse:
        params = request.query
        table = params.get("table_name", "")
        table_sys_id = params.get("table_sys_id", "")
        file_name = params.get("file_name", "")
        if not file_name:
            return _error(400, "Bad Request", "file_name is mandatory")
        content_type = request.headers.get("Content-Type")
        if not content_type:
            return _error(400, "Bad Request", "Content-Type header is mandatory")
        refused = self._target_error(table, table_sys_id)
        if refused is not None:
            return refused
        if request.content_length is not None and request.content_length > self.max_size_bytes:
            return self.too_large(request.content_length)  # on the header, before reading
        incoming = _Incoming(self, file_name, content_type)
        try:
            async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                incoming.add(chunk)
        except UploadRefused as refused_upload:
            return refused_upload.response
        return self._created(request, table, table_sys_id, incoming)

    async def _upload_multipart(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            return _error(400, "Bad Request", "Content-Type must be multipart/form-data")
        reader = await request.multipart()
        form: dict[str, str] = {}
        async for part in _parts(reader):
            if part.filename is None:
                form[part.name or ""] = (await part.read(decode=True)).decode()
                continue
            table = form.get("table_name", "")
            table_sys_id = form.get("table_sys_id") or form.get("record_sys_id", "")
            refused = self._target_error(table, table_sys_id)
            if refused is not None:
                return refused
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            incoming = _Incoming(self, part.filename, content_type)
            try:
                while chunk := await part.read_chunk(CHUNK_BYTES):
                    incoming.add(chunk)
            except UploadRefused as refused_upload:
                return refused_upload.response
            return self._created(request, table, table_sys_id, incoming)
        return _error(
            400,
            "Failed to create the attachment. File part might be missing in the request.",
        )

    def _created(
        self, request: web.Request, table: str, table_sys_id: str, incoming: _Incoming
    ) -> web.Response:
        user = self._user_of(request) or "admin"
        record = self._store_file(
            table,
            table_sys_id,
            incoming.file_name,
            incoming.content_type,
            incoming.chunks,
            incoming.digest,
            user,
        )
        shown = self._render(request, record)
        location = shown["download_link"]
        # The answer shows the record before the asynchronous step makes it available.
        self._available(record)
        response = _json({"result": shown}, 201)
        response.headers["Location"] = location
        return response

    def _store_file(
        self,
        table: str,
        table_sys_id: str,
        file_name: str,
        content_type: str,
        chunks: list[bytes],
        digest: Any,
        user: str,
    ) -> Record:
        data = b"".join(chunks)
        record = self._store.insert(
            ATTACHMENT_TABLE,
            {
                "file_name": file_name,
                "content_type": content_type,
                "size_bytes": str(len(data)),
                "hash": digest.hexdigest(),
                "table_name": table,
                "table_sys_id": table_sys_id,
            },
            user=user,
            from_rest=False,
        )
        self.content[record["sys_id"]] = data
        return record

    def _available(self, record: Record) -> Record:
        updated = self._store.update(
            ATTACHMENT_TABLE,
            record["sys_id"],
            {"state": "available", "sys_mod_count": "1", "sys_updated_by": "system"},
            user="system",
            from_rest=False,
        )
        assert updated is not None
        return dict(updated)

    # -- reads and delete --------------------------------------------------------------------------

    def _render(self, request: web.Request, record: Record) -> dict[str, str]:
        version = request.match_info.get("version")
        base = f"{request.scheme}://{request.host}/api/now/{version + '/' if version else ''}"
        shown = {name: value for name, value in record.items() if name != "encryption_context"}
        shown["download_link"] = f"{base}attachment/{quote(record['sys_id'], safe='')}/file"
        return shown

    def _found(self, request: web.Request) -> Record | None:
        return self._store.rows[ATTACHMENT_TABLE].get(request.match_info["sys_id"])

    async def _list(self, request: web.Request) -> web.StreamResponse:
        params = request.query
        query = params.get("sysparm_query", "")
        if query:
            compiled = self._store.compiled(ATTACHMENT_TABLE, query, InvalidQueryPolicy.IGNORE)
            rows = self._store.select(ATTACHMENT_TABLE, compiled)
        else:
            rows = list(self._store.rows[ATTACHMENT_TABLE].values())
        limit = _int(params.get("sysparm_limit"), DEFAULT_LIST_LIMIT)
        offset = max(0, _int(params.get("sysparm_offset"), 0))
        page = rows[offset : offset + (limit if limit > 0 else DEFAULT_LIST_LIMIT)]
        response = _json({"result": [self._render(request, r) for r in page]})
        response.headers["X-Total-Count"] = str(len(rows))
        return response

    async def _get(self, request: web.Request) -> web.StreamResponse:
        record = self._found(request)
        if record is None:
            return _error(404, "No Record found", _NOT_FOUND_DETAIL)
        return _json({"result": self._render(request, record)})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        record = self._found(request)
        if record is None:
            return _error(404, "No Record found", _NOT_FOUND_DETAIL)
        self._store.delete(ATTACHMENT_TABLE, record["sys_id"])
        self.content.pop(record["sys_id"], None)
        return web.Response(status=204)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        record = self._found(request)
        if record is None:
            return _error(404, "No Record found", _NOT_FOUND_DETAIL)
        data = self.content[record["sys_id"]]
        name = record["file_name"]
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = record["content_type"]
        response.headers["Content-Disposition"] = (
            f"attachment;filename=\"{quote(name)}\";filename*=UTF-8''{quote(name)}"
        )
        response.headers["X-Attachment-Metadata"] = _loose_json(record)
        response.enable_chunked_encoding()
        await response.prepare(request)
        cut = self._cuts.pop(0) if self._cuts else None
        end = len(data) if cut is None else min(cut, len(data))
        for start in range(0, end, CHUNK_BYTES):
            await response.write(data[start : min(start + CHUNK_BYTES, end)])
        if cut is not None:
            transport = request.transport
            if transport is not None:
                transport.abort()
            return response
        await response.write_eof()
        return response


async def _parts(reader: Any) -> AsyncIterator[BodyPartReader]:
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader):
            yield part


def _loose_json(record: Record) -> str:
    """The metadata as `X-Attachment-Metadata` carries it: spaced JSON, no `download_link`."""
    return "{  " + ",  ".join(f"{json.dumps(k)} : {json.dumps(v)}" for k, v in record.items()) + "}"


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
