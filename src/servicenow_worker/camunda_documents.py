"""Camunda's document store through the Orchestration Cluster REST API (`/v2/documents`).

The worker reads a process's documents from it and writes ServiceNow attachments into it
(docs/attachments.md). Bytes are streamed both ways: a download is handed on chunk by chunk, an
upload is a multipart body produced as its file part arrives. Authentication is the worker's OAuth
client for Zeebe, when one is configured: the same `TokenSource`, so one cached token serves the
gateway and this API and is renewed as the gateway's is.

Camunda's Python SDK (`camunda-orchestration-sdk`) was judged and not used: it reads every document
whole into memory (`BytesIO(response.content)`), brings its own OAuth token manager (a second token
for the same client) and pulls loguru, attrs and python-dateutil.

Every failure becomes the worker's own error: `DocumentRefused` (retries 0) for what a retry cannot
change, `DocumentStoreUnavailable` (retried as §6) for what may pass.
"""

import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode
from uuid import uuid4

import grpc
import httpx
import structlog

from servicenow_worker.errors import (
    AUTH_FAILED,
    CONNECTION_ERROR,
    DOCUMENT_HASH_MISMATCH,
    DOCUMENT_NOT_FOUND,
    DOCUMENT_REFUSED,
    FILE_TOO_LARGE,
    INVALID_RESPONSE,
    TIMEOUT,
    DocumentRefused,
    DocumentStoreUnavailable,
)
from servicenow_worker.zeebe_channel import TokenSource

log = structlog.get_logger(__name__)

DETAIL_LIMIT: Final = 300
ERROR_BODY_LIMIT: Final = 64 * 1024
# What Camunda documents as a self-managed cluster's default upload limit (unconfirmed there).
REPORTED_DEFAULT_UPLOAD_LIMIT: Final = "4 MB"
# A document id or store id reaches a URL: Camunda's are UUIDs or short names.
DOCUMENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,255}")


@dataclass(frozen=True)
class DocumentReference:
    """A Camunda document reference as a process variable holds it (`camunda.document.type`
    `camunda`), validated: `document_id` and `store_id` are safe to put into a URL."""

    document_id: str
    store_id: str | None
    content_hash: str | None
    file_name: str | None
    content_type: str | None
    size: int | None

    @property
    def name(self) -> str:
        return self.file_name or self.document_id


class DocumentStore:
    """Reads, writes and deletes documents over one pooled httpx client (TLS verified)."""

    def __init__(
        self, http: httpx.AsyncClient, rest_address: str, tokens: TokenSource | None
    ) -> None:
        self._http = http
        self._base = rest_address.rstrip("/")
        self._tokens = tokens

    @asynccontextmanager
    async def download(self, reference: DocumentReference) -> AsyncIterator["DocumentBody"]:
        """The document's bytes, streamed: `GET /v2/documents/{id}?storeId=&contentHash=`."""
        params = {"storeId": reference.store_id, "contentHash": reference.content_hash}
        url = self._url(reference.document_id, params)
        what = f"download of document {reference.name}"
        authorization = await self._authorization()
        with _translated(what):
            request = self._http.build_request("GET", url, headers=_headers(authorization))
            response = await self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                raise self._refusal(what, await _problem(response), authorization, reference)
            yield DocumentBody(response, what)
        finally:
            await response.aclose()

    async def create(
        self,
        chunks: AsyncIterator[bytes],
        *,
        file_name: str,
        content_type: str,
        metadata: Mapping[str, Any],
        document_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Upload a document (multipart: `metadata`, then `file` streamed); its reference, or None
        when `document_id` exists already (409)."""
        boundary = uuid4().hex
        params = {"documentId": document_id} if document_id else {}
        url = self._base + "/documents" + (f"?{urlencode(params)}" if params else "")
        what = f"upload of {file_name} to the document store"
        authorization = await self._authorization()
        headers = {
            **_headers(authorization),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        body = _multipart(boundary, file_name, content_type, metadata, chunks)
        with _translated(what):
            response = await self._http.post(url, content=body, headers=headers)
        if response.status_code == 409 and document_id:
            return None
        if response.status_code != 201:
            raise self._refusal(what, _problem_of(response), authorization, None, metadata)
        try:
            reference = response.json()
        except ValueError:
            reference = None
        if not isinstance(reference, dict) or "documentId" not in reference:
            raise DocumentStoreUnavailable(
                INVALID_RESPONSE, f"the document store answered {what} without a reference"
            )
        return reference

    async def delete(self, document_id: str, store_id: str | None) -> None:
        """`DELETE /v2/documents/{id}`; a document already gone counts as deleted."""
        what = f"delete of document {document_id}"
        authorization = await self._authorization()
        with _translated(what):
            response = await self._http.delete(
                self._url(document_id, {"storeId": store_id}), headers=_headers(authorization)
            )
        if response.status_code not in {204, 200, 404}:
            raise self._refusal(what, _problem_of(response), authorization, None)

    def _url(self, document_id: str, params: Mapping[str, str | None]) -> str:
        present = {k: v for k, v in params.items() if v is not None}
        query = urlencode(present, quote_via=quote)
        return f"{self._base}/documents/{quote(document_id, safe='')}" + (
            f"?{query}" if query else ""
        )

    async def _authorization(self) -> str | None:
        if self._tokens is None:
            return None
        try:
            return await self._tokens.authorization()
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise DocumentRefused(AUTH_FAILED, error.details() or "token refused") from None
            raise DocumentStoreUnavailable(
                CONNECTION_ERROR, error.details() or "token endpoint unreachable"
            ) from None

    def _refusal(
        self,
        what: str,
        problem: "Problem",
        authorization: str | None,
        reference: DocumentReference | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> DocumentRefused | DocumentStoreUnavailable:
        status = problem.status
        said = f"the document store answered {status} to {what}{problem.text}"
        if status >= 500 or status in {408, 429}:
            return DocumentStoreUnavailable(str(status), said, status=status)
        if status == 401 and authorization is not None and self._tokens is not None:
            self._tokens.reject(authorization)  # the next attempt fetches a new token
            return DocumentStoreUnavailable(str(status), said, status=status)
        if status == 401:
            return DocumentRefused(
                AUTH_FAILED,
                f"{said}: the cluster wants a token; configure the OAuth client "
                "(ZEEBE_CLIENT_ID, ZEEBE_CLIENT_SECRET, ZEEBE_AUTHORIZATION_SERVER_URL)",
                status=status,
            )
        if status == 404 and reference is not None:
            return DocumentRefused(
                DOCUMENT_NOT_FOUND,
                f"{said}: the document does not exist or has expired (its expiresAt passed)",
                status=status,
            )
        if status == 400 and reference is not None:
            return DocumentRefused(
                DOCUMENT_HASH_MISMATCH,
                f"{said}: its contentHash {reference.content_hash!r} does not match the stored "
                "document; pass the document reference as the store returned it",
                status=status,
            )
        if status == 413:
            size = (metadata or {}).get("size")
            return DocumentRefused(
                FILE_TOO_LARGE,
                f"{said}: the file ({size} bytes) is larger than the cluster's upload limit "
                f"(reportedly {REPORTED_DEFAULT_UPLOAD_LIMIT} by default on a self-managed "
                "cluster; the operator raises it)",
                status=status,
            )
        return DocumentRefused(DOCUMENT_REFUSED, said, status=status)


class DocumentBody:
    """An open download: the stored type now, the bytes chunk by chunk."""

    def __init__(self, response: httpx.Response, what: str) -> None:
        self._response = response
        self._what = what
        self.content_type = response.headers.get("Content-Type")
        length = response.headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        with _translated(self._what):
            async for chunk in self._response.aiter_bytes():
                yield chunk


@dataclass(frozen=True)
class Problem:
    """An RFC 9457 problem detail, as much as the worker reports of it."""

    status: int
    text: str


async def _problem(response: httpx.Response) -> Problem:
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= ERROR_BODY_LIMIT:
            break
    return _parsed_problem(response.status_code, bytes(kept))


def _problem_of(response: httpx.Response) -> Problem:
    return _parsed_problem(response.status_code, response.content[:ERROR_BODY_LIMIT])


def _parsed_problem(status: int, body: bytes) -> Problem:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return Problem(status, "")
    parts = [str(parsed[key]) for key in ("title", "detail") if parsed.get(key)]
    return Problem(status, (": " + " - ".join(parts))[: DETAIL_LIMIT + 2] if parts else "")


def _headers(authorization: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json, application/problem+json, */*"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as error:
        raise DocumentStoreUnavailable(
            TIMEOUT,
            f"the document store did not answer {what} in time ({type(error).__name__})",
            never_sent=isinstance(error, httpx.ConnectTimeout | httpx.PoolTimeout),
        ) from None
    except httpx.TransportError as error:
        raise DocumentStoreUnavailable(
            CONNECTION_ERROR,
            f"the connection to the document store broke during {what} ({type(error).__name__})",
            never_sent=isinstance(error, httpx.ConnectError),
        ) from None


def _form_name(text: str) -> str:
    # As browsers and Camunda's JS client write a file name into a part's header.
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


async def _multipart(
    boundary: str,
    file_name: str,
    content_type: str,
    metadata: Mapping[str, Any],
    chunks: AsyncIterator[bytes],
) -> AsyncIterator[bytes]:
    """multipart/form-data with the `metadata` part first, then the `file` part as it streams."""
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="metadata"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(metadata, ensure_ascii=False)}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{_form_name(file_name)}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    async for chunk in chunks:
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()
