"""The one job function: headers and variables in, an `Outcome` out. It knows nothing of pyzeebe,
nor of any operation: it picks the operation's family from the registry (`operations`).

job → gathered inputs → secrets resolved → the family's validated inputs → its run → `Outcome`
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from servicenow_worker import outcome, tracing
from servicenow_worker.errors import InputError, WorkerError
from servicenow_worker.inputs import (
    InputRules,
    OutputOptions,
    gather_inputs,
    parse_output_options,
)
from servicenow_worker.logs import job_secret_values
from servicenow_worker.operations import JobContext, OperationFamily, parse_inputs
from servicenow_worker.secrets import ResolvedSecrets, SecretStore, resolve_placeholders
from servicenow_worker.servicenow import TableClient
from servicenow_worker.settings import Settings

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
    """Turns one job into its operation's ServiceNow request(s) and the job's outcome."""

    table_client: TableClient
    rules: InputRules
    secrets: SecretStore
    settings: Settings

    async def handle(self, job: JobView) -> outcome.Outcome:
        used = ResolvedSecrets()
        options: OutputOptions | None = None
        started = time.monotonic()
        try:
            options = parse_output_options(job.headers)
            family, inputs = self._inputs(job, used)
            table = getattr(inputs, "table", None)
            structlog.contextvars.bind_contextvars(operation=inputs.operation.value, table=table)
            tracing.describe_job(inputs.operation.value, table)
            answer = await family.run(self._context(job, options), inputs)
            result = outcome.for_response(
                answer,
                options,
                max_bytes=self.settings.worker_max_result_bytes,
                job_retries=job.retries,
            )
            log.info(
                "servicenow_answered",
                status=answer.status,
                duration_ms=_elapsed_ms(started),
            )
        except WorkerError as error:
            result = outcome.for_error(
                error,
                job_retries=job.retries,
                options=options,
                retry_after_cap=self.settings.servicenow_retry_after_cap,
            )
            log.info(
                "job_input_invalid" if isinstance(error, InputError) else "servicenow_call_failed",
                code=error.code,
                status=getattr(error, "status", None),
                duration_ms=_elapsed_ms(started),
            )
        return outcome.masked(result, used)

    def _inputs(self, job: JobView, used: ResolvedSecrets) -> tuple[OperationFamily[Any], Any]:
        gathered = gather_inputs(job.headers, job.variables)
        resolved = {
            name: resolve_placeholders(value, self.secrets, used, name)
            for name, value in gathered.items()
        }
        # From here on every log line of this job masks the secret values it resolved.
        job_secret_values.set(frozenset(used.values))
        return parse_inputs(resolved, self.rules)

    def _context(self, job: JobView, options: OutputOptions) -> JobContext:
        return JobContext(
            servicenow=self.table_client,
            settings=self.settings,
            options=options,
            deadline=self._deadline(job),
            process_instance_key=job.process_instance_key,
            element_instance_key=job.element_instance_key,
        )

    def _deadline(self, job: JobView) -> float:
        """The monotonic time by which the job must be reported, a margin before Zeebe's deadline."""
        now = time.monotonic()
        remaining = min(job.deadline_ms / 1000 - time.time(), self.settings.worker_job_timeout)
        return now + remaining * 0.9


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
