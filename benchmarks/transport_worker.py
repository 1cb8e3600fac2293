"""Our worker with a chosen HTTP transport under httpx, for `ab.py`'s A/B runs.

    .venv/bin/python benchmarks/transport_worker.py ours           # the worker as shipped
    .venv/bin/python benchmarks/transport_worker.py httpx-aiohttp  # the httpx-aiohttp package's

Both run through this same launcher, so start-up and imports are alike; only the transport that
`build_http_client` makes differs. Configured by the environment, as `servicenow-worker` is.
"""

import ssl
import sys

import httpx

from servicenow_worker import app, cli


def httpx_aiohttp_transport(
    *, max_connections: int, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncBaseTransport:
    """httpx-aiohttp's transport with the pool size and TLS settings ours gets."""
    import httpx_aiohttp  # the bench extra installs it

    return httpx_aiohttp.AiohttpTransport(
        verify=verify,
        trust_env=False,
        limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=5.0),
    )


def main() -> None:
    kind = sys.argv.pop(1)
    if kind == "httpx-aiohttp":
        app.AiohttpTransport = httpx_aiohttp_transport  # type: ignore[assignment,misc]
    elif kind != "ours":
        sys.exit(f"unknown transport {kind!r}: ours or httpx-aiohttp")
    cli.main()


if __name__ == "__main__":
    main()
