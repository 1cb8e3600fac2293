"""An httpx transport on aiohttp's connection pool: httpx's API, without httpcore's pool costs.

httpcore's pool checks every pooled connection (a `select` on its socket) each time it hands out
or takes back a connection, so its CPU per request grows with the pool, and the pool is sized to the
jobs in flight. aiohttp's connector takes the next idle connection of the host and checks only
that one. The benchmark (docs/performance.md) measured the difference.

Only the transport changes: the client, its auth, headers, cookies, timeouts and response decoding
stay httpx's. aiohttp's errors are mapped onto httpx's so that `servicenow.py` can tell a request
that certainly never left (connect errors and timeouts, waiting for a pooled connection) from one
that may have reached ServiceNow (everything after).
"""

import contextlib
import http.cookiejar
import ssl
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Final, Self

import aiohttp
import httpx
from yarl import URL

# ServiceNow's Link headers carry the whole encoded query four times; h11 allows 16 KiB of headers.
MAX_HEADER_BYTES: Final = 64 * 1024


class NoCookieJar(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: every request stands on its own credentials.

    ServiceNow answers each basic-auth request with session cookies and accepts them instead of
    credentials. One client serves the jobs of every ServiceNow user, so a kept JSESSIONID would
    ride along with another job's credentials. Keeping none also spares httpx the cookie work on
    every request and answer.
    """

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        pass

    def extract_cookies(self, response: object, request: object) -> None:
        pass


class WrappingTransport(httpx.AsyncBaseTransport):
    """A transport that does something around another one's requests (timing, tracing), and hands
    its life cycle on to it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc_value, traceback)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive pool of up to `max_connections` connections, opened on first use."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the running event loop.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self._ssl,
            ),
            # httpx keeps the cookies and decodes the content; aiohttp must not do either again.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            # httpx sets every header it means to send; aiohttp must not add a Content-Type.
            skip_auto_headers=("Content-Type",),
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        )
        # aiohttp silently resends an idempotent request whose reused connection broke; httpcore
        # does not, and `servicenow.py` must see that break to know a DELETE's answer was lost.
        self._session._retry_connection = False
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeout = request.extensions.get("timeout", {})
        connect, pool = timeout.get("connect"), timeout.get("pool")
        with _mapped_errors(request):
            response = await session.request(
                request.method,
                # As httpx encoded it: no second quoting pass may change a query.
                URL(str(request.url), encoded=True),
                # aiohttp frames a streamed body itself: chunked unless Content-Length is given.
                headers=[
                    (k, v)
                    for k, v in request.headers.multi_items()
                    if k.lower() != "transfer-encoding"
                ],
                data=_request_body(request),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    # aiohttp's `connect` covers waiting for a pooled connection and opening one.
                    connect=None if connect is None or pool is None else connect + pool,
                    sock_connect=connect,
                    sock_read=timeout.get("read"),
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _request_body(request: httpx.Request) -> bytes | AsyncIterator[bytes] | None:
    """The body as httpx holds it: bytes given whole, or a stream passed on chunk by chunk.

    A streamed body (an upload of a file) goes out as it is produced, under the framing httpx
    chose (`Content-Length` when the size is known, else `Transfer-Encoding: chunked`): the
    transport never holds more of it than one chunk.
    """
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return request.content or None
    assert isinstance(stream, httpx.AsyncByteStream)
    return _chunks(stream)


async def _chunks(stream: httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        if chunk:
            yield chunk


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


@contextlib.contextmanager
def _mapped_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx errors httpcore raises in the same situations."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:  # waiting for, or opening, a connection
        raise httpx.ConnectTimeout(str(error) or "connect timeout", request=request) from error
    except TimeoutError as error:  # aiohttp's ServerTimeoutError and SocketTimeoutError
        raise httpx.ReadTimeout(str(error) or "read timeout", request=request) from error
    except aiohttp.ClientConnectorError as error:  # refused, DNS, TLS: nothing was sent
        raise httpx.ConnectError(str(error), request=request) from error
    except aiohttp.ServerDisconnectedError as error:
        raise httpx.RemoteProtocolError(str(error), request=request) from error
    except aiohttp.ClientPayloadError as error:
        raise httpx.ReadError(str(error), request=request) from error
    except aiohttp.ClientResponseError as error:  # not HTTP, or a malformed answer
        raise httpx.RemoteProtocolError(str(error), request=request) from error
    except aiohttp.InvalidURL as error:
        raise httpx.UnsupportedProtocol(str(error), request=request) from error
    except (aiohttp.ClientError, OSError) as error:  # reset, broken pipe: maybe sent
        raise httpx.ReadError(str(error) or type(error).__name__, request=request) from error
