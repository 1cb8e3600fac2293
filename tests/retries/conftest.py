"""The end-to-end fixtures (tests/e2e/conftest.py): the real worker against both emulators."""

from tests.e2e.conftest import _gateway, _run_job, _servicenow, _start_worker

__all__ = ["_gateway", "_run_job", "_servicenow", "_start_worker"]
