"""Liveness, readiness and Prometheus metrics on one small HTTP port, served on the worker's loop.

    GET /livez    200 while the worker's event loop answers and its job loop runs
    GET /readyz   200 while the gateway answers and the worker takes jobs; 503 otherwise
    GET /metrics  Prometheus text format (see metrics.py)

`python -m servicenow_worker.health [live|ready]` probes the endpoint of a worker running beside it
(same environment: `HEALTH_PORT`, `HEALTH_HOST`) and exits 0 when it answers 200, 1 otherwise. It
imports nothing but the standard library, so a Docker HEALTHCHECK every few seconds costs a few
milliseconds, and needs no curl in the image.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from aiohttp import web

    from servicenow_worker.metrics import PumpView, WorkerMetrics

DEFAULT_PORT: Final = 9464
PROBE_TIMEOUT: Final = 5.0
PATHS: Final = {"live": "/livez", "ready": "/readyz"}


def stale_after(poll_timeout: float) -> float:
    """How long without a gateway answer readiness tolerates: a long poll lasts at most
    `poll_timeout` and its gRPC deadline twice that, so a healthy loop answers well within it."""
    return 3 * poll_timeout + 10


class HealthServer:
    """The aiohttp server behind /livez, /readyz and /metrics."""

    def __init__(
        self,
        pump: PumpView,
        metrics: WorkerMetrics,
        *,
        host: str,
        port: int,
        max_jobs_in_flight: int,
        poll_timeout: float,
        running: Callable[[], bool] = lambda: True,
    ) -> None:
        self._pump = pump
        self._metrics = metrics
        self._host = host
        self._requested_port = port
        self._max_jobs_in_flight = max_jobs_in_flight
        self._stale_after = stale_after(poll_timeout)
        self._running = running
        self._draining = False
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def draining(self) -> None:
        """The worker stopped taking jobs: readiness turns false, liveness stays true."""
        self._draining = True

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/livez", self._live)
        app.router.add_get("/readyz", self._ready)
        app.router.add_get("/metrics", self._metrics_page)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])  # the bound port, also when 0 was asked for

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def live(self) -> tuple[bool, dict[str, Any]]:
        alive = self._running()
        return alive, {"status": "ok" if alive else "job loop ended"}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        pump = self._pump
        contact = pump.last_gateway_contact
        age = None if contact is None else time.monotonic() - contact
        saturated = pump.jobs_in_flight >= self._max_jobs_in_flight
        if self._draining:
            reason = "shutting down"
        elif not self._running():
            reason = "job loop ended"
        elif pump.gateway_failures:
            reason = "gateway unreachable"
        elif age is None:
            reason = "gateway not reached yet"
        elif age > self._stale_after and not saturated:
            reason = "no answer from the gateway recently"
        else:
            reason = ""
        return not reason, {
            "status": reason or "ok",
            "gateway_failures_in_a_row": pump.gateway_failures,
            "seconds_since_gateway_answer": None if age is None else round(age, 3),
            "jobs_in_flight": pump.jobs_in_flight,
            "max_jobs_in_flight": self._max_jobs_in_flight,
        }

    async def _live(self, _: web.Request) -> web.Response:
        return _json(*self.live())

    async def _ready(self, _: web.Request) -> web.Response:
        return _json(*self.ready())

    async def _metrics_page(self, _: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _json(ok: bool, body: dict[str, Any]) -> web.Response:
    from aiohttp import web

    return web.json_response(body, status=200 if ok else 503)


# -- the probe ------------------------------------------------------------------------------------


def probe(kind: str = "ready", *, host: str | None = None, port: int | None = None) -> int:
    """GET /livez or /readyz of the local worker: 0 on 200, else 1 (one line on stdout says why)."""
    if host is None:
        host = _probe_host(os.environ.get("HEALTH_HOST", ""))
    if port is None:
        port = int(os.environ.get("HEALTH_PORT") or DEFAULT_PORT)
    connection = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        connection.request("GET", PATHS[kind])
        response = connection.getresponse()
        body = response.read(4096).decode(errors="replace").strip()
    except OSError as error:
        print(f"{kind}: no answer on {host}:{port} ({type(error).__name__}: {error})")
        return 1
    finally:
        connection.close()
    print(f"{kind}: {response.status} {body}")
    return 0 if response.status == 200 else 1


def _probe_host(bound: str) -> str:
    """Where to reach a server bound to `bound`: loopback for the wildcard addresses."""
    bound = bound.strip().strip("[]")
    if bound in {"", "0.0.0.0", "::"}:  # noqa: S104 - compared, not bound
        return "127.0.0.1"
    return bound


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m servicenow_worker.health",
        description="Probe the health endpoint of the worker running beside this command "
        "(HEALTH_HOST, HEALTH_PORT from the environment). Exit 0 when healthy, 1 when not.",
    )
    parser.add_argument("kind", nargs="?", choices=sorted(PATHS), default="ready")
    parser.add_argument("--port", type=int, help="default: HEALTH_PORT, else 9464")
    parser.add_argument("--host", help="default: HEALTH_HOST, loopback for 0.0.0.0")
    arguments = parser.parse_args(argv)
    sys.exit(probe(arguments.kind, host=arguments.host, port=arguments.port))


if __name__ == "__main__":
    main()
