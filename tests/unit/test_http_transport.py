"""The aiohttp transport behaves as httpx's own transport does where `servicenow.py` can tell."""

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web

from servicenow_emulators.zeebe_gateway import free_port
from servicenow_worker.app import build_http_client
from servicenow_worker.http_transport import AiohttpTransport, NoCookieJar
from servicenow_worker.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """A loopback aiohttp server whose one handler a test sets, recording what reached it."""

    def __init__(self) -> None:
        self.seen: list[web.Request] = []
        self.raw_paths: list[str] = []
        self.handler: Handler = self._ok
        # False: the handler reads the body itself, as it arrives.
        self.read_first = True

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"result": {"ok": True}})

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.raw_paths.append(request.raw_path)
        if self.read_first:
            await request.read()
        return await self.handler(request)


@pytest.fixture(name="server")
async def _server() -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.dispatch)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield server, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def client(max_connections: int = 4, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=AiohttpTransport(max_connections=max_connections),
        timeout=httpx.Timeout(**{"timeout": 5.0, **timeouts}),
    )


async def test_request_and_answer_pass_through(server: tuple[Server, str]) -> None:
    """Method, query, headers, auth and body arrive as httpx built them; the answer comes back."""
    recorder, base = server
    async with client() as http:
        response = await http.post(
            f"{base}/api/now/table/incident",
            params={"sysparm_query": "short_description=a b^active=true", "sysparm_fields": "a,b"},
            content=b'{"x": 1}',
            headers={"Content-Type": "application/json"},
            auth=("u", "p"),
        )
    assert response.status_code == 200
    assert response.json() == {"result": {"ok": True}}
    assert response.headers["content-type"].startswith("application/json")
    [request] = recorder.seen
    assert request.method == "POST"
    assert request.headers["Authorization"] == httpx.BasicAuth("u", "p")._auth_header
    assert request.headers["Content-Type"] == "application/json"
    # The query goes out exactly as httpx encoded it, with no second quoting pass.
    sent = httpx.URL(
        f"{base}/api/now/table/incident",
        params={"sysparm_query": "short_description=a b^active=true", "sysparm_fields": "a,b"},
    )
    assert recorder.raw_paths == [sent.raw_path.decode()]


async def test_gzip_answer_is_decoded_once(server: tuple[Server, str]) -> None:
    recorder, base = server
    body = json.dumps({"result": [{"n": i} for i in range(100)]}).encode()

    async def gzipped(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(body),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    recorder.handler = gzipped
    async with client() as http:
        response = await http.get(f"{base}/x")
    assert response.content == body


async def test_refused_connection_is_a_connect_error() -> None:
    """Nothing was sent: servicenow.py may retry even a create."""
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/x")


async def test_slow_answer_is_a_read_timeout(server: tuple[Server, str]) -> None:
    recorder, base = server
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()  # answers only after the client gave up
        return web.Response()

    recorder.handler = slow
    async with client(read=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{base}/x")
    release.set()


async def test_waiting_for_a_pooled_connection_times_out_as_never_sent(
    server: tuple[Server, str],
) -> None:
    recorder, base = server
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.Response()

    recorder.handler = held
    async with client(max_connections=1, pool=0.2, connect=0.2) as http:
        first = asyncio.create_task(http.get(f"{base}/first"))
        await arrived.wait()  # the one connection is taken
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(f"{base}/second")
        release.set()
        assert (await first).status_code == 200
    assert len(recorder.seen) == 1


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
async def test_a_dropped_answer_is_not_resent(server: tuple[Server, str], method: str) -> None:
    """A broken keep-alive connection reaches the caller, which alone decides on a retry."""
    recorder, base = server
    async with client() as http:
        assert (await http.get(f"{base}/warm")).status_code == 200  # a pooled connection

        async def drop(request: web.Request) -> web.StreamResponse:
            assert request.transport is not None
            request.transport.close()
            return web.Response()

        recorder.handler = drop
        with pytest.raises(httpx.TransportError) as raised:
            await http.request(method, f"{base}/x")
    assert not isinstance(raised.value, httpx.ConnectError | httpx.ConnectTimeout)
    assert [r.method for r in recorder.seen] == ["GET", method]


async def test_cookies_are_httpx_business(server: tuple[Server, str]) -> None:
    """aiohttp keeps no cookie jar of its own: what the client sends is what httpx decides."""
    recorder, base = server

    async def set_cookie(request: web.Request) -> web.StreamResponse:
        response = web.Response()
        response.set_cookie("JSESSIONID", "abc")
        return response

    recorder.handler = set_cookie
    transport = AiohttpTransport(max_connections=2)
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get(f"{base}/a")
        http.cookies.clear()
        await http.get(f"{base}/b")
    assert "Cookie" not in recorder.seen[1].headers


async def test_no_session_cookie_rides_along_with_the_next_job() -> None:
    """ServiceNow's session cookies from one job's answer are not sent with the next request."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            200, headers={"Set-Cookie": "JSESSIONID=alice-session; Path=/"}, json={"result": {}}
        )

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(answer), cookies=NoCookieJar()
    ) as http:
        await http.get("https://acme.service-now.com/api/now/table/incident", auth=("alice", "a"))
        await http.get("https://acme.service-now.com/api/now/table/incident", auth=("bob", "b"))
        assert not http.cookies
    assert "Cookie" not in sent[1].headers


def test_the_worker_client_keeps_no_cookies() -> None:
    settings = Settings(zeebe_address="127.0.0.1:1")
    assert isinstance(build_http_client(settings).cookies.jar, NoCookieJar)


async def test_the_headers_sent_are_the_ones_httpx_built(server: tuple[Server, str]) -> None:
    """aiohttp adds none of its own (no Content-Type guessed for a bare body), drops none."""
    recorder, base = server
    async with client() as http:
        request = http.build_request("PUT", f"{base}/x", content=b"raw", headers={"X-A": "1"})
        await http.send(request)
    [seen] = recorder.seen
    assert sorted(k.lower() for k in seen.headers) == sorted(k.lower() for k in request.headers)
    assert "Content-Type" not in seen.headers


async def test_a_streamed_body_arrives_complete(server: tuple[Server, str]) -> None:
    recorder, base = server
    bodies: list[bytes] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.read())
        return web.Response()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    recorder.handler = echo
    async with client() as http:
        await http.post(f"{base}/x", content=chunks())
    assert bodies == [b"abcd"]


class ProducerFailed(Exception):
    pass


async def test_request_body_streams_chunk_by_chunk(server: tuple[Server, str]) -> None:
    """A streamed body goes out as it is produced: the server reads the first chunk while the
    producer still waits for it to do so (a transport that read the body whole would hang)."""
    recorder, base = server
    first_arrived = asyncio.Event()
    received: list[bytes] = []

    async def read_as_it_comes(request: web.Request) -> web.StreamResponse:
        async for chunk in request.content.iter_chunked(1024):
            received.append(chunk)
            first_arrived.set()
        return web.json_response({"size": sum(map(len, received))})

    recorder.read_first = False
    recorder.handler = read_as_it_comes

    async def produce() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await first_arrived.wait()
        yield b"b" * 1000

    async with client() as http, asyncio.timeout(5):
        response = await http.post(f"{base}/upload", content=produce())
    assert response.json() == {"size": 2000}
    assert b"".join(received) == b"a" * 1000 + b"b" * 1000


async def test_request_body_with_known_length_keeps_it(server: tuple[Server, str]) -> None:
    """A stream whose size the caller states goes out with that Content-Length, not chunked."""
    recorder, base = server
    seen: list[tuple[str | None, str | None, bytes]] = []

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(
            (request.headers.get("Content-Length"), request.headers.get("Transfer-Encoding"), body)
        )
        return web.json_response({})

    recorder.read_first = False
    recorder.handler = record

    async def produce() -> AsyncIterator[bytes]:
        yield b"12345"
        yield b"67890"

    async with client() as http:
        await http.post(f"{base}/x", content=produce(), headers={"Content-Length": "10"})
    assert seen == [("10", None, b"1234567890")]


async def test_response_body_streams_chunk_by_chunk(server: tuple[Server, str]) -> None:
    """A streamed answer reaches the caller chunk by chunk: the client reads the first chunk
    while the server still holds the rest back."""
    recorder, base = server
    first_read = asyncio.Event()

    async def stream_out(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * 1000)
        await first_read.wait()
        await response.write(b"y" * 1000)
        await response.write_eof()
        return response

    recorder.handler = stream_out
    chunks: list[bytes] = []
    async with (
        client() as http,
        asyncio.timeout(5),
        http.stream("GET", f"{base}/file") as response,
    ):
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            first_read.set()
    assert b"".join(chunks) == b"x" * 1000 + b"y" * 1000


async def test_failing_producer_fails_the_request(server: tuple[Server, str]) -> None:
    """A producer that fails mid-body fails the request with its own error; nothing is
    answered as if the body were complete."""
    _, base = server

    async def produce() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        raise ProducerFailed

    async with client() as http:
        with pytest.raises((ProducerFailed, httpx.TransportError)):
            await http.post(f"{base}/upload", content=produce())
