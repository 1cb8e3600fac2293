"""JSON log lines on stdout via structlog, with credentials redacted before anything is written."""

import functools
import logging
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Final

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from servicenow_worker.secrets import MASK, mask_values

SENSITIVE_KEY_PARTS: Final = ("password", "secret", "token", "authorization", "apikey", "api_key")
# The secret values the current job resolved: any log field holding one is masked.
job_secret_values: ContextVar[frozenset[str]] = ContextVar("job_secret_values", default=frozenset())


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask fields whose names say they hold a credential, and any value that holds a job's secret."""
    secrets = job_secret_values.get()
    for key, value in event_dict.items():
        event_dict[key] = _redacted(key, value, secrets)
    return event_dict


def _redacted(key: str, value: Any, secrets: frozenset[str]) -> Any:
    if _is_sensitive(key):
        return MASK
    if isinstance(value, str):
        return mask_values(value, secrets) if secrets else value
    if isinstance(value, Mapping):
        return {k: _redacted(str(k), v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(key, v, secrets) for v in value]
    return value


# Field names come from a small set: checking each name once, not on every line, halves a line's cost.
@functools.lru_cache(maxsize=4096)
def _is_sensitive(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)


def _processors(log_format: str) -> list[Processor]:
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
        renderer,
    ]


def configure(level: str, log_format: str) -> None:
    """Configure structlog, and route the stdlib loggers of pyzeebe, grpc and httpx into it."""
    level_number = logging.getLevelName(level)
    structlog.configure(
        processors=_processors(log_format),
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                _processors(log_format)[-1],
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number)
    # pyzeebe logs whole jobs (variables and credentials included) at DEBUG, and httpx logs
    # every request line at INFO: neither may follow the worker's own level down.
    for name in ("pyzeebe", "httpx", "httpcore", "grpc", "hpack"):
        logging.getLogger(name).setLevel(max(level_number, logging.WARNING))


def bind_job(fields: MutableMapping[str, Any]) -> None:
    """Bind fields to every log line of the current job (asyncio-task local)."""
    structlog.contextvars.bind_contextvars(**fields)
