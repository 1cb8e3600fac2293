"""What every operation family is made of: an input model and one async function.

A family's `run` gets the job's context and its validated inputs, makes its ServiceNow request(s)
through the one client (`servicenow.py`), and returns an `Answer`; `outcome.py` turns that into the
job's completion. Errors are raised as the worker's own (`errors.py`), never returned.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from servicenow_worker.errors import TIMEOUT, ServiceNowUnavailable
from servicenow_worker.inputs import DestinationInputs, OutputOptions
from servicenow_worker.servicenow import TableClient
from servicenow_worker.settings import Settings

Inputs = TypeVar("Inputs", bound=DestinationInputs)


class Answer(Protocol):
    """A successful operation's response, as `resultVariable` receives it (docs/contract.md §4)."""

    @property
    def status(self) -> int: ...

    # Bytes ServiceNow sent: a cheap bound on the size of the variables the answer becomes.
    @property
    def body_bytes(self) -> int: ...

    def as_variable(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobContext:
    """What an operation may use besides its inputs: the client, the settings, the job's keys."""

    servicenow: TableClient
    settings: Settings
    options: OutputOptions
    # Monotonic time by which the job must be reported: no request may start that ends later.
    deadline: float
    process_instance_key: int
    element_instance_key: int

    def check_time(self, remaining: str) -> None:
        """Before another request of a job that makes several: fail (to be retried) once the
        job's deadline has passed, naming what `remaining` is left undone."""
        if time.monotonic() >= self.deadline:
            raise ServiceNowUnavailable(
                TIMEOUT,
                f"the job ran out of its time (WORKER_JOB_TIMEOUT) with {remaining}",
            )


@dataclass(frozen=True)
class OperationFamily(Generic[Inputs]):
    """One family of operations: the model its inputs are validated with, and what it does."""

    model: type[Inputs]
    run: Callable[[JobContext, Inputs], Awaitable[Answer]]
