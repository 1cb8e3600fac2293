"""The README's first quick-start command: `servicenow-worker --demo`."""

import asyncio

from .worker_process import CONSOLE_SCRIPT


async def test_demo_runs_the_round_trip_and_says_what_it_is() -> None:
    """The demo announces its emulators, completes create/read/update/delete, a batch, an
    aggregate and a read of every page, and shows two failures."""
    process = await asyncio.create_subprocess_exec(
        str(CONSOLE_SCRIPT), "--demo", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    text = stdout.decode()
    assert process.returncode == 0
    assert text.startswith("DEMO MODE: the real servicenow-worker, talking to emulators")
    assert text.count("=> job completed") == 7
    assert '"errorCount": 0' in text
    assert '"groups": [{"values": {"priority": "1 - Critical"}, "count": 2}' in text
    assert '"count": 4, "totalCount": 4, "hasMore": false, "pages": 2' in text
    assert '"status": 204, "result": null' in text
    assert "=> job failed, retries 0: ServiceNow answered 404 to read on incident" in text
    assert "=> job failed, retries 0: sysId is required for update" in text
    assert "demo-password" not in text
