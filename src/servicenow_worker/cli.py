"""The `servicenow-worker` command: the worker as configured by the environment, or `--demo`."""

import argparse
import asyncio
import sys
from collections.abc import Sequence

from servicenow_worker import __version__
from servicenow_worker.app import load_settings, run_loop, serve
from servicenow_worker.logs import configure


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `servicenow-worker`; exit codes as `app.py` says."""
    arguments = parse_arguments(argv)
    if arguments.demo:
        from servicenow_worker.demo import run_demo  # the emulators load only here

        sys.exit(asyncio.run(run_demo()))
    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    sys.exit(run_loop(serve(settings)))


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
