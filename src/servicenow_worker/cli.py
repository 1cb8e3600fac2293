"""The `servicenow-worker` command: the worker as configured by the environment, or `--demo`."""

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from servicenow_worker import __version__, tracing
from servicenow_worker.app import EXIT_INVALID_SETTINGS, load_settings, run_loop, serve
from servicenow_worker.logs import configure


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `servicenow-worker`; exit codes as `app.py` says."""
    arguments = parse_arguments(argv)
    flush_traces = start_tracing()
    try:
        if arguments.demo:
            from servicenow_worker.demo import run_demo  # the emulators load only here

            exit_code = asyncio.run(run_demo())
        else:
            settings = load_settings()
            configure(settings.log_level, settings.log_format)
            exit_code = run_loop(serve(settings))
    finally:
        flush_traces()
    sys.exit(exit_code)


def start_tracing() -> Callable[[], None]:
    """Traces as the OTEL_* variables ask (tracing.py); exit 2 naming the variable if they cannot
    be had."""
    try:
        return tracing.configure(os.environ)
    except ValueError as error:
        print(f"servicenow-worker: {error}", file=sys.stderr)
        sys.exit(EXIT_INVALID_SETTINGS)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="servicenow-worker",
        description="Camunda 8 job worker for the ServiceNow Table API. "
        "Configured by environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run against built-in emulators of Zeebe and ServiceNow, no setup needed",
    )
    return parser.parse_args(argv)
