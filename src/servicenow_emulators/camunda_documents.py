"""A Camunda 8 document store emulator: the Orchestration Cluster REST API's `/v2/documents`.

It answers what a cluster answers to the official clients (`@camunda8/orchestration-cluster-api`
drives it in tests/emulators): upload (`POST /v2/documents?storeId=&documentId=`, multipart part
`file` with a file name and type, optional part `metadata` holding a `DocumentMetadata` JSON object),
download (`GET /v2/documents/{documentId}?storeId=&contentHash=`, chunked, with the stored type),
delete (`DELETE …/{documentId}`, 204), and RFC 9457 problem details for every error: 404 for an
unknown or expired document, 400 when `contentHash` is missing or does not match, 409 for an
existing `documentId`, 415 for a body that is not multipart, 413 above `max_upload_bytes` (answered
on `Content-Length` alone, before the body is read), 401 without a valid bearer token when
`bearer_tokens` is set (a local cluster without authentication accepts any request).

The upload and download bodies are streamed. Tests inspect `documents`, wait for requests
(`wait_for_request`), make documents expire (`expire`), inject faults (`inject`) and cut the next
download short (`cut_next_download`).

Standalone: `python -m servicenow_emulators.camunda_documents --port 8080`; the official clients then
take `CAMUNDA_REST_ADDRESS=http://localhost:8080`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal, Self

from aiohttp import BodyPartReader, web

__all__ = ["CamundaDocumentsEmulator", "DocumentFault", "RecordedDocumentRequest", "StoredDocument"]

CHUNK_BYTES: Final = 64 * 1024
PROBLEM_JSON: Final = "application/problem+json"
DEFAULT_STORE: Final = "in-memory"


@dataclass
class StoredDocument:
    """One document in the store: its bytes, hash and `DocumentMetadataResponse`."""

    document_id: str
    store_id: str
    data: bytes
    content_hash: str
    metadata: dict[str, Any]

    def reference(self) -> dict[str, Any]:
        """The `DocumentReference` a process variable holds."""
        return {
            "camunda.document.type": "camunda",
            "storeId": self.store_id,
            "documentId": self.document_id,
            "contentHash": self.content_hash,
            "metadata": dict(self.metadata),
        }


@dataclass(slots=True)
class RecordedDocumentRequest:
    """One request as received; `status` is what was answered (None: dropped)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    document_id: str | None
    status: int | None = None


@dataclass(eq=False)
class DocumentFault:
    """A programmed fault for requests of `method` (None: any), `times` times.

    `error`: answer `status` with a problem detail, the request not processed. `drop_before`: close
    the connection without reading or processing. `drop_after`: process (an upload is stored), then
    close without an answer.
    """

    kind: Literal["error", "drop_before", "drop_after"]
    method: str | None = None
    status: int = 500
    times: int = 1
    hits: int = 0


class _Drop(Exception):
    pass


def _problem(status: int, title: str, detail: str, instance: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body["instance"] = instance
    response = web.Response(status=status, text=json.dumps(body))
    response.headers["Content-Type"] = PROBLEM_JSON
    return response


class CamundaDocumentsEmulator:
    """An emulated cluster's document store over real HTTP on loopback."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        store_id: str = DEFAULT_STORE,
        bearer_tokens: set[str] | None = None,
        max_upload_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.port = port
        self.store_id = store_id
        self.bearer_tokens = bearer_tokens
        self.max_upload_bytes = max_upload_bytes
        self.clock = clock
        self.documents: dict[str, StoredDocument] = {}
        self.requests: list[RecordedDocumentRequest] = []
        self.faults: list[DocumentFault] = []
        self._cuts: list[int] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._pipeline])
        self.app.router.add_post("/v2/documents", self._create)
        self.app.router.add_get("/v2/documents/{document_id}", self._download)
        self.app.router.add_delete("/v2/documents/{document_id}", self._delete)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def rest_address(self) -> str:
        """`http://127.0.0.1:<port>`: `CAMUNDA_REST_ADDRESS` for clients (after `start`)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.rest_address

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- test helpers ----------------------------------------------------------------------------

    def add(
        self,
        data: bytes,
        *,
        file_name: str = "file.bin",
        content_type: str = "application/octet-stream",
        **metadata: Any,
    ) -> dict[str, Any]:
        """Store a document as a process would have uploaded it; its reference."""
        document = self._store(
            str(uuid.uuid4()),
            data,
            {"fileName": file_name, "contentType": content_type, **metadata},
        )
        return document.reference()

    def expire(self, document_id: str) -> None:
        """Let a document's `expiresAt` pass: downloads answer 404 from now on."""
        self.documents[document_id].metadata["expiresAt"] = "1970-01-01T00:00:00Z"

    def inject(self, *faults: DocumentFault) -> None:
        self.faults.extend(faults)

    def cut_next_download(self, after_bytes: int) -> None:
        """The next download sends `after_bytes` bytes, then drops the connection."""
        self._cuts.append(after_bytes)

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedDocumentRequest], bool] = lambda r: True,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test waiting in vain fails, never hangs
    ) -> RecordedDocumentRequest:
        """The first recorded request (past or future) that satisfies `predicate`."""

        def found() -> RecordedDocumentRequest | None:
            return next((r for r in self.requests if predicate(r)), None)

        if (hit := found()) is not None:
            return hit
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (lambda: found() is not None, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            self._waiters.remove(entry)
        hit = found()
        assert hit is not None
        return hit

    # -- pipeline -----------------------------------------------------------------------------------

    @web.middleware
    async def _pipeline(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        recorded = RecordedDocumentRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            document_id=request.match_info.get("document_id"),
        )
        self.requests.append(recorded)
        for check, future in list(self._waiters):
            if not future.done() and check():
                future.set_result(None)
        if self.bearer_tokens is not None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or token.strip() not in self.bearer_tokens:
                response = _problem(
                    401, "UNAUTHENTICATED", "Bearer token missing or invalid", request.path
                )
                recorded.status = 401
                return response
        fault = self._take_fault(request.method)
        try:
            if fault is not None and fault.kind == "error":
                response = _problem(
                    fault.status, "INTERNAL_SERVER_ERROR", "injected fault", request.path
                )
            elif fault is not None and fault.kind == "drop_before":
                _close(request)
                raise _Drop
            else:
                response = await handler(request)
                if fault is not None:  # drop_after
                    _close(request)
                    raise _Drop
        except _Drop:
            return web.Response()  # never sent: the transport is closed
        recorded.status = response.status
        return response

    def _take_fault(self, method: str) -> DocumentFault | None:
        for fault in self.faults:
            if fault.method is None or fault.method == method:
                fault.hits += 1
                if fault.hits >= fault.times:
                    self.faults.remove(fault)
                return fault
        return None

    # -- the API --------------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        where = request.path
        if not request.content_type.startswith("multipart/form-data"):
            return _problem(
                415,
                "Unsupported Media Type",
                f"Content-Type '{request.content_type}' is not supported",
                where,
            )
        length = request.content_length
        limit = self.max_upload_bytes
        if limit is not None and length is not None and length > limit:
            return self._too_large(length, where)  # on the header, before reading
        document_id = request.query.get("documentId") or str(uuid.uuid4())
        if document_id in self.documents:
            return _problem(
                409,
                "ALREADY_EXISTS",
                f"Document with id '{document_id}' already exists",
                where,
            )
        data: bytes | None = None
        metadata: dict[str, Any] = {}
        file_name = content_type = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                file_name = part.filename
                content_type = part.headers.get("Content-Type")
                chunks = []
                size = 0
                while chunk := await part.read_chunk(CHUNK_BYTES):
                    size += len(chunk)
                    if self.max_upload_bytes is not None and size > self.max_upload_bytes:
                        return self._too_large(size, where)
                    chunks.append(chunk)
                data = b"".join(chunks)
            elif part.name == "metadata":
                try:
                    parsed = json.loads(await part.read(decode=True))
                except ValueError:
                    return _problem(400, "INVALID_ARGUMENT", "metadata is not JSON", where)
                if not isinstance(parsed, dict):
                    return _problem(400, "INVALID_ARGUMENT", "metadata is not an object", where)
                metadata = parsed
        if data is None:
            return _problem(400, "INVALID_ARGUMENT", "Required part 'file' is not present.", where)
        metadata.setdefault("fileName", file_name)
        metadata.setdefault("contentType", content_type or "application/octet-stream")
        document = self._store(document_id, data, metadata)
        response = web.Response(status=201, text=json.dumps(document.reference()))
        response.headers["Content-Type"] = "application/json"
        return response

    def _too_large(self, size: int, where: str) -> web.Response:
        response = _problem(
            413,
            "Payload Too Large",
            f"The upload of {size} bytes exceeds the limit of {self.max_upload_bytes} bytes",
            where,
        )
        response.force_close()
        return response

    def _store(self, document_id: str, data: bytes, given: dict[str, Any]) -> StoredDocument:
        metadata = {
            "contentType": given.get("contentType"),
            "fileName": given.get("fileName"),
            "expiresAt": given.get("expiresAt"),
            "size": len(data),
            "processDefinitionId": given.get("processDefinitionId"),
            "processInstanceKey": given.get("processInstanceKey"),
            "customProperties": dict(given.get("customProperties") or {}),
        }
        document = StoredDocument(
            document_id=document_id,
            store_id=self.store_id,
            data=data,
            content_hash=hashlib.sha256(data).hexdigest(),
            metadata=metadata,
        )
        self.documents[document_id] = document
        return document

    def _live(self, request: web.Request) -> StoredDocument | web.Response:
        document_id = request.match_info["document_id"]
        document = self.documents.get(document_id)
        if document is None or self._expired(document):
            return _problem(
                404,
                "NOT_FOUND",
                f"Document with id '{document_id}' not found",
                request.path,
            )
        return document

    def _expired(self, document: StoredDocument) -> bool:
        expires_at = document.metadata.get("expiresAt")
        if not expires_at:
            return False
        moment = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
        return moment.timestamp() <= self.clock()

    async def _download(self, request: web.Request) -> web.StreamResponse:
        document = self._live(request)
        if isinstance(document, web.Response):
            return document
        if request.query.get("contentHash") != document.content_hash:
            return _problem(
                400,
                "INVALID_ARGUMENT",
                f"Document hash for document with id '{document.document_id}' doesn't match "
                "the provided hash",
                request.path,
            )
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = document.metadata["contentType"] or (
            "application/octet-stream"
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        data = document.data
        cut = self._cuts.pop(0) if self._cuts else None
        end = len(data) if cut is None else min(cut, len(data))
        for start in range(0, end, CHUNK_BYTES):
            await response.write(data[start : min(start + CHUNK_BYTES, end)])
        if cut is not None:
            _close(request)
            return response
        await response.write_eof()
        return response

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        document = self._live(request)
        if isinstance(document, web.Response):
            return document
        del self.documents[document.document_id]
        return web.Response(status=204)


def _close(request: web.Request) -> None:
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.abort()


# -- command line ------------------------------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m servicenow_emulators.camunda_documents",
        description="Serve an emulated Camunda 8 document store (/v2/documents) until SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to bind (default 8080; 0: free)"
    )
    parser.add_argument(
        "--bearer-token",
        action="append",
        metavar="TOKEN",
        help="require this bearer token (repeat for more; default: no authentication)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    emulator = CamundaDocumentsEmulator(
        host=args.host,
        port=args.port,
        bearer_tokens=set(args.bearer_token) if args.bearer_token else None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await emulator.start()
    print(f"Camunda documents emulator listening on {emulator.rest_address}", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await emulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator on its own until SIGTERM or SIGINT."""
    asyncio.run(_serve(_arguments(argv)))


if __name__ == "__main__":
    main()
