"""The one job function: headers and variables in, an `Outcome` out. It knows nothing of pyzeebe.

job → gathered inputs → secrets resolved → validated `RecordRequest` → ServiceNow → `Outcome`
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from servicenow_worker import outcome
from servicenow_worker.errors import InputError, WorkerError
from servicenow_worker.idempotency import create_once, idempotency_key
from servicenow_worker.inputs import (
    InputRules,
    Operation,
    OutputOptions,
    RecordRequest,
    gather_inputs,
    parse_output_options,
    parse_record_request,
)
from servicenow_worker.logs import job_secret_values
from servicenow_worker.secrets import ResolvedSecrets, SecretStore, resolve_placeholders
from servicenow_worker.servicenow import TableClient, TableResponse

log = structlog.get_logger("servicenow_worker.job")


@dataclass(frozen=True)
class JobView:
    """The parts of an activated job the handler reads."""

    key: int
    retries: int
    deadline_ms: int
    process_instance_key: int
    element_instance_key: int
    headers: Mapping[str, Any]
    variables: Mapping[str, Any]


@dataclass(frozen=True)
class JobHandler:
    """Turns one job into one Table API request and the job's outcome."""

    table_client: TableClient
    rules: InputRules
    secrets: SecretStore
    retry_after_cap: float
    job_timeout: float
    max_result_bytes: int

    async def handle(self, job: JobView) -> outcome.Outcome:
        used = ResolvedSecrets()
        options: OutputOptions | None = None
        started = time.monotonic()
        try:
            options = parse_output_options(job.headers)
            request = self._request(job, used)
            structlog.contextvars.bind_contextvars(
                operation=request.operation.value, table=request.table
            )
            response = await self._send(job, request, options)
            result = outcome.for_response(
                response, options, max_bytes=self.max_result_bytes, job_retries=job.retries
            )
            log.info(
                "servicenow_answered",
                status=response.status,
                duration_ms=_elapsed_ms(started),
            )
        except WorkerError as error:
            result = outcome.for_error(
                error,
                job_retries=job.retries,
                options=options,
                retry_after_cap=self.retry_after_cap,
            )
            log.info(
                "job_input_invalid" if isinstance(error, InputError) else "servicenow_call_failed",
                code=error.code,
                status=getattr(error, "status", None),
                duration_ms=_elapsed_ms(started),
            )
        return outcome.masked(result, used)

    async def _send(
        self, job: JobView, request: RecordRequest, options: OutputOptions
    ) -> TableResponse:
        deadline = self._deadline(job)
        if request.operation is Operation.CREATE and options.idempotency_field:
            key = idempotency_key(job.process_instance_key, job.element_instance_key)
            return await create_once(
                self.table_client, request, options.idempotency_field, key, deadline=deadline
            )
        return await self.table_client.send(request, deadline=deadline)

    def _request(self, job: JobView, used: ResolvedSecrets) -> RecordRequest:
        gathered = gather_inputs(job.headers, job.variables)
        resolved = {
            name: resolve_placeholders(value, self.secrets, used, name)
            for name, value in gathered.items()
        }
        # From here on every log line of this job masks the secret values it resolved.
        job_secret_values.set(frozenset(used.values))
        return parse_record_request(resolved, self.rules)

    def _deadline(self, job: JobView) -> float:
        """The monotonic time by which the job must be reported, a margin before Zeebe's deadline."""
        now = time.monotonic()
        remaining = min(job.deadline_ms / 1000 - time.time(), self.job_timeout)
        return now + remaining * 0.9


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
