"""How the OTEL_* variables become a tracer provider (tracing.py, _otel.py)."""

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from servicenow_worker import __version__, tracing
from servicenow_worker._otel import TracedTransport, provider_from_environment


def resource_of(provider: TracerProvider) -> dict[str, object]:
    return dict(provider.resource.attributes)


def test_the_default_resource_names_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = provider_from_environment({"OTEL_TRACES_EXPORTER": "console"})
    resource = resource_of(provider)
    assert (resource["service.name"], resource["service.version"]) == (
        "servicenow-worker",
        __version__,
    )
    provider.shutdown()


def test_the_operator_names_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "itsm-worker")
    provider = provider_from_environment({"OTEL_SERVICE_NAME": "itsm-worker"})
    assert resource_of(provider)["service.name"] == "itsm-worker"
    provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_what_cannot_be_had_is_refused_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", **environ})
    tracing.off()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_both_otlp_protocols_turn_traces_on(protocol: str) -> None:
    flush = tracing.configure(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
    )
    try:
        assert isinstance(tracing.instrument(httpx.AsyncHTTPTransport()), TracedTransport)
    finally:
        tracing.off()
        flush()
