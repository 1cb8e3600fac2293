"""Fixtures for the deployment tests: TLS certificates, an OAuth token endpoint, metric scraping."""

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Certificates:
    ca: Path
    chain: bytes
    key: bytes


def _openssl(*arguments: str, cwd: Path) -> None:
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(name="certificates", scope="session")
def _certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA of the test's own and a server certificate it signed for 127.0.0.1 and localhost."""
    where = tmp_path_factory.mktemp("tls")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=servicenow-worker test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        cwd=where,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr", cwd=where,
    )  # fmt: skip
    (where / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
        cwd=where,
    )  # fmt: skip
    return Certificates(
        ca=where / "ca.pem",
        chain=(where / "server.pem").read_bytes(),
        key=(where / "server.key").read_bytes(),
    )


@dataclass
class TokenEndpoint:
    """An OAuth 2.0 token endpoint: client credentials in the form body, as Camunda's clients send."""

    client_id: str = "worker"
    client_secret: str = "s3cr3t-Zeebe"
    token: str = "token-1"
    expires_in: int = 3600
    status: int = 200
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.requests.append(form)
        if self.status != 200:
            return web.json_response(
                {"error": "unauthorized_client", "error_description": "Invalid client secret"},
                status=self.status,
            )
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(
            {"access_token": self.token, "token_type": "Bearer", "expires_in": self.expires_in}
        )


@pytest.fixture(name="token_endpoint")
async def _token_endpoint() -> AsyncIterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/oauth/token", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}/oauth/token"
    yield endpoint
    await runner.cleanup()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """Every sample of /metrics, keyed by name and labels."""
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples that changed, by how much (histogram sums left out: durations vary)."""
    changed: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for key, now in after.items():
        if key[0].endswith("_sum") or key[0].endswith("_created"):
            continue
        if now != before.get(key, 0.0):
            changed[key] = now - before.get(key, 0.0)
    return changed


async def get(port: int, path: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"http://127.0.0.1:{port}{path}")
    return response.status_code, response.json()
