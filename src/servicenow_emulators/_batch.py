"""The Batch API of the ServiceNow emulator: `POST /api/now/v1/batch`.

As ServiceNow's REST API reference documents it: the body is
`{"batch_request_id": …, "rest_requests": [{"id", "method", "url", "headers": [{"name",
"value"}], "body": <base64>, "exclude_response_headers"}]}`; each request is answered by the
emulated API its relative `url` names (Table and Aggregate APIs), one after another, with its own
authorisation and no rollback. The answer is always 200 (errors stay inside each request):
`{"batch_request_id": "<as a string>", "serviced_requests": [{"id", "status_code" (a number),
"status_text", "headers" ([] when excluded), "body" (base64, left out when empty),
"execution_time" (ms)}], "unserviced_requests": [ids]}`.

Limits, as documented: a request body over `max_input_bytes` (5 MB,
`glide.rest.batch.max.inputSize`) is answered 400 on its own; when an answer would exceed
`max_output_bytes` (10 MB, `glide.rest.batch.max.outputSize`, lowered per call by
`X-BATCHREQUEST-MAX-OUTPUT-SIZE`) or `time_budget` (30 s, the REST Batch API quota) is spent,
the transaction is cancelled and that request and the ones after it come back in
`unserviced_requests`. `leave_unserviced` forces such a tail (what a client must send again).
`enforce_order` is accepted and ignored. Guesses, where the reference is silent: the status of a
batch that is not JSON or has no `rest_requests` list (400), of a `Content-Type` other than JSON
(415), and of an item without `id`, `method` or `url` (400 inside the item).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from ._rest import ApiError

__all__ = ["BatchApi", "Dispatch"]

MAX_INPUT_BYTES = 5 * 1024 * 1024
MAX_OUTPUT_BYTES = 10 * 1024 * 1024
TIME_BUDGET = 30.0

# Answers one carried request as if it had come alone: (request, user, body) → answer.
Dispatch = Callable[[web.Request, str, bytes], Awaitable[web.Response]]
# ServiceNow's error envelope as an answer: (status, message, detail) → answer.
ErrorAnswer = Callable[[int, str, str | None], web.Response]


class BatchApi:
    """The Batch API's limits and knobs; `run` answers one batch call."""

    def __init__(self, error_answer: ErrorAnswer) -> None:
        self._error_answer = error_answer
        self.max_input_bytes = MAX_INPUT_BYTES
        self.max_output_bytes = MAX_OUTPUT_BYTES
        self.time_budget = TIME_BUDGET
        self._forced_tails: list[int] = []

    def leave_unserviced(self, count: int, *, times: int = 1) -> None:
        """The next `times` batch calls leave their last `count` requests unserviced."""
        self._forced_tails.extend([count] * times)

    async def run(self, request: web.Request, user: str, dispatch: Dispatch) -> dict[str, Any]:
        """The answer to one batch call, carried requests answered through `dispatch`."""
        if "json" not in request.headers.get("Content-Type", "").lower():
            raise ApiError(415, "Unsupported Media Type", "The Batch API accepts application/json")
        try:
            batch = json.loads(await request.read())
        except ValueError:
            raise ApiError(
                400, "Exception while reading request", "The payload is not valid JSON."
            ) from None
        items = batch.get("rest_requests") if isinstance(batch, dict) else None
        if not isinstance(items, list):
            raise ApiError(400, "Invalid batch request", "rest_requests must be a list")
        if not all(isinstance(item, dict) for item in items):
            raise ApiError(400, "Invalid batch request", "each of rest_requests must be an object")
        output_cap = min(
            self.max_output_bytes,
            _int(request.headers.get("X-BATCHREQUEST-MAX-OUTPUT-SIZE"), self.max_output_bytes),
        )
        servable = len(items) - (self._forced_tails.pop(0) if self._forced_tails else 0)
        started = time.monotonic()
        # made once per call: a mocked request costs milliseconds, a clone of it microseconds
        blank = make_mocked_request("GET", "/", app=request.app)
        serviced: list[dict[str, Any]] = []
        unserviced: list[str] = []
        for index, item in enumerate(items):
            item_id = str(item.get("id", ""))
            if unserviced or index >= servable or time.monotonic() - started > self.time_budget:
                unserviced.append(item_id)
                continue
            started_item = time.monotonic()
            try:
                response = await self._dispatch(request, blank, user, item, dispatch)
            except ApiError as error:
                response = self._error_answer(error.status, error.message, error.detail)
            body = response.body if isinstance(response.body, bytes) else b""
            if len(body) > output_cap:
                unserviced.append(item_id)  # the transaction is cancelled here
                continue
            answered: dict[str, Any] = {
                "id": item_id,
                "status_code": response.status,
                "status_text": response.reason,
                "headers": []
                if item.get("exclude_response_headers") is True
                else [{"name": k, "value": v} for k, v in response.headers.items()],
                "execution_time": round((time.monotonic() - started_item) * 1000),
            }
            if body:
                answered["body"] = base64.b64encode(body).decode()
            serviced.append(answered)
        return {
            "batch_request_id": str(batch.get("batch_request_id", "")),
            "serviced_requests": serviced,
            "unserviced_requests": unserviced,
        }

    async def _dispatch(
        self,
        request: web.Request,
        blank: web.Request,
        user: str,
        item: dict[str, Any],
        dispatch: Dispatch,
    ) -> web.Response:
        method, url = item.get("method"), item.get("url")
        missing = [name for name in ("id", "method", "url") if not item.get(name)]
        if missing or not isinstance(method, str) or not isinstance(url, str):
            raise ApiError(400, "Invalid batch request", f"missing {', '.join(missing)}")
        if not url.startswith("/"):
            raise ApiError(400, "Requested URI does not represent any resource", None)
        try:
            body = base64.b64decode(item.get("body") or "", validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "Exception while reading request", "body is not base64") from None
        if len(body) > self.max_input_bytes:
            raise ApiError(
                400,
                "Exception while reading request",
                f"Rejected large REST payload with content-length = {len(body)} bytes. "
                f"Max allowed: {self.max_input_bytes} bytes.",
            )
        headers = CIMultiDict(
            (str(h.get("name", "")), str(h.get("value", "")))
            for h in item.get("headers") or []
            if isinstance(h, dict)
        )
        # A request of its own, at the batch call's scheme and host so that links point where
        # it came: cloned from a blank one (aiohttp cannot clone a request whose body was read).
        carried = blank.clone(
            method=method.upper(),
            rel_url=url,
            headers=headers,
            scheme=request.scheme,
            host=request.host,
        )
        return await dispatch(carried, user, body)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
