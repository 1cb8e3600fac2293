"""The ServiceNow emulator and a client of it, for the tests of its APIs."""

from collections.abc import AsyncIterator

import httpx
import pytest

from servicenow_emulators.table_api import ServiceNowEmulator

from .test_table_api import PASSWORD, USER, http_client


@pytest.fixture
async def emulator() -> AsyncIterator[ServiceNowEmulator]:
    async with ServiceNowEmulator(users={USER: PASSWORD}) as emu:
        yield emu


@pytest.fixture
async def client(emulator: ServiceNowEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(emulator.base_url) as c:
        yield c
