"""Camunda 8 job worker for the ServiceNow Table API."""

from importlib.metadata import PackageNotFoundError, version

# pyproject.toml's `version` is the one source: the installed package's metadata carries it to
# the User-Agent, `--version`, the servicenow_worker_info metric and (scripts/build-image) the
# image label. The element template's `version` is a separate integer (template.py).
try:
    __version__ = version("servicenow-worker")
except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
    __version__ = "0+unknown"
