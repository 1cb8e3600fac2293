"""The gRPC channel to the Zeebe gateway, built from settings alone (pyzeebe reads no environment)."""

import json
from typing import Final

import grpc
from pyzeebe import create_insecure_channel

from servicenow_worker.settings import Settings

# Transient gateway statuses are retried by gRPC itself, inside each call's deadline, so a blip does
# not reach the worker's own back-off (pyzeebe issue #140).
RETRY_SERVICE_CONFIG: Final = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "gateway_protocol.Gateway"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS: Final = (
    ("grpc.service_config", RETRY_SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 45_000),
    # Reconnect quickly after a gateway restart instead of gRPC's default of up to 2 minutes.
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
)


def build_channel(settings: Settings) -> grpc.aio.Channel:
    """A channel to the gateway that `settings` name."""
    return create_insecure_channel(
        grpc_address=settings.zeebe_address, channel_options=CHANNEL_OPTIONS
    )
