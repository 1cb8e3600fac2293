"""Files stream through the worker process: a 50 MB attachment each way grows its resident memory
by less than 30 MB (issue 16). Measured from /proc as a count of bytes, not a timing: the peak
resident set (VmHWM) is reset after a warm-up job, then read after the two big jobs."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from servicenow_emulators.camunda_documents import CamundaDocumentsEmulator
from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator

from .conftest import JOB_TYPE, job_variables
from .worker_process import WorkerProcess

MB = 1024 * 1024
FIFTY_MB = bytes(range(256)) * (50 * MB // 256)
GROWTH_LIMIT = 30 * MB

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS"
)


def status_bytes(pid: int, field: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Let VmHWM start again from the current resident set (Linux clear_refs, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture(name="worker")
async def _worker(
    gateway: ZeebeGatewayEmulator, servicenow: ServiceNowEmulator
) -> AsyncIterator[tuple[WorkerProcess, CamundaDocumentsEmulator]]:
    async with CamundaDocumentsEmulator() as documents:
        process = WorkerProcess(
            ZEEBE_ADDRESS=gateway.address,
            SERVICENOW_URL_TEMPLATE=servicenow.base_url,
            CAMUNDA_REST_ADDRESS=documents.rest_address,
            WORKER_POLL_TIMEOUT="0.5",
            HEALTH_PORT="0",
        )
        await process.start()
        try:
            yield process, documents
        finally:
            process.send()
            assert await process.exit_code() == 0


async def run(gateway: ZeebeGatewayEmulator, variables: dict[str, Any]) -> dict[str, Any]:
    key = gateway.create_job(JOB_TYPE, variables, {"resultVariable": "answer"})
    [outcome] = await gateway.wait_for_outcomes(key, 1, timeout=60)
    assert outcome.kind == "complete", outcome.error_message
    answer: dict[str, Any] = outcome.variables["answer"]
    return answer


async def test_fifty_mb_each_way_in_bounded_memory(
    gateway: ZeebeGatewayEmulator,
    servicenow: ServiceNowEmulator,
    worker: tuple[WorkerProcess, CamundaDocumentsEmulator],
) -> None:
    process, documents = worker
    sys_id = servicenow.insert("incident", {"short_description": "big files"})["sys_id"]
    # Warm-up: a small file each way, so pools, buffers and code paths exist before measuring.
    small = documents.add(b"w" * MB, file_name="warm.bin")
    await run(
        gateway, job_variables(operation="attach", table="incident", sysId=sys_id, document=small)
    )
    warm = servicenow.attachments.attachments(sys_id)[0]
    await run(gateway, job_variables(operation="download", attachmentSysId=warm["sys_id"]))

    reset_peak(process.pid)
    before = status_bytes(process.pid, "VmRSS")
    upload = documents.add(FIFTY_MB, file_name="video.mp4", content_type="video/mp4")
    attached = await run(
        gateway, job_variables(operation="attach", table="incident", sysId=sys_id, document=upload)
    )
    downloaded = await run(
        gateway, job_variables(operation="download", attachmentSysId=attached["result"]["sys_id"])
    )
    peak = status_bytes(process.pid, "VmHWM")

    assert servicenow.attachments.content[attached["result"]["sys_id"]] == FIFTY_MB
    assert documents.documents[downloaded["result"]["documentId"]].data == FIFTY_MB
    growth = peak - before
    print(f"worker RSS {before / MB:.1f} MB before, peak {peak / MB:.1f} MB: +{growth / MB:.1f} MB")
    assert growth < GROWTH_LIMIT, f"RSS grew by {growth / MB:.1f} MB while streaming 50 MB"
