"""A Zeebe gateway emulator: a real ``grpc.aio`` server that a pyzeebe job worker cannot tell apart.

No Zeebe broker runs where the tests run, so this module plays the part of Zeebe's gateway *and* of
the broker's job state, as far as a job worker can observe them:

* the ``gateway_protocol.Gateway`` service from pyzeebe's generated stubs (the Zeebe 8.6.6 proto),
  with ``ActivateJobs`` long polling, ``StreamActivatedJobs`` (behind a flag), ``CompleteJob``,
  ``FailJob``, ``ThrowError``, ``UpdateJobTimeout``, ``UpdateJobRetries`` and ``Topology``;
* the standard ``grpc.health.v1.Health`` service, SERVING for ``gateway_protocol.Gateway``;
* Zeebe's job life cycle: activation deadlines (job timeout), failure with retries and back-off,
  incidents at zero retries, and the status codes Zeebe answers for commands on unknown, finished
  or not-activatable jobs;
* recording for assertions and benchmarks, awaitables so that tests never sleep, and fault
  injection (status codes, restarts on the same port, TLS, a bearer-token check).

Everything runs on the event loop that calls :meth:`ZeebeGatewayEmulator.start`; the emulator is not
thread-safe. All recorded timestamps are ``time.monotonic()`` seconds, the clock of asyncio's event
loop, so they compare directly with ``loop.time()``.

Typical use::

    async with ZeebeGatewayEmulator() as gateway:     # serves on 127.0.0.1:<ephemeral>
        key = gateway.create_job("servicenow", {"table": "incident"}, {"action": "create"})
        ...start a pyzeebe worker on gateway.address...
        outcome = await gateway.wait_for_outcome(key)
        assert outcome.kind == "complete"
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import itertools
import json
import logging
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, get_args

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as _health_aio  # type: ignore[attr-defined]
from pyzeebe.proto import gateway_pb2
from pyzeebe.proto.gateway_pb2_grpc import GatewayServicer, add_GatewayServicer_to_server

__all__ = [
    "DEFAULT_LONG_POLL_MS",
    "DEFAULT_TENANT_ID",
    "GATEWAY_SERVICE_NAME",
    "GATEWAY_VERSION",
    "ActivateJobsCall",
    "GatewayWaitTimeout",
    "JobOutcome",
    "JobSnapshot",
    "JobState",
    "OutcomeKind",
    "RpcName",
    "StreamActivatedJobsCall",
    "ZeebeGatewayEmulator",
    "free_port",
    "main",
]

logger = logging.getLogger(__name__)

#: Zeebe gateway's ``DEFAULT_LONG_POLLING_TIMEOUT``: what ``requestTimeout=0`` means.
DEFAULT_LONG_POLL_MS: Final = 10_000
#: The tenant every job belongs to when multi-tenancy is not used.
DEFAULT_TENANT_ID: Final = "<default>"
#: The service name pyzeebe's ``worker.healthcheck()`` asks the health service about.
GATEWAY_SERVICE_NAME: Final = "gateway_protocol.Gateway"
#: The proto version of pyzeebe 4.7.0's stubs; reported by ``Topology``.
GATEWAY_VERSION: Final = "8.6.6"

# Zeebe keys carry the partition id in their upper bits: the first key of partition 1 is 2**51 + 1.
_PARTITION_1_KEY_BASE: Final = 1 << 51
# Zeebe's gateway fails an undeliverable batch back with this message and unchanged retries.
_NOT_SENT_MESSAGE: Final = "Failed to send activated jobs to client"
_DEFAULT_WAIT_S: Final = 10.0

OutcomeKind = Literal["complete", "fail", "error"]
RpcName = Literal[
    "ActivateJobs",
    "StreamActivatedJobs",
    "CompleteJob",
    "FailJob",
    "ThrowError",
    "UpdateJobTimeout",
    "UpdateJobRetries",
    "Topology",
]
_RPC_NAMES: Final[frozenset[str]] = frozenset(get_args(RpcName))
_NOT_JOB_COMMANDS: Final = frozenset({"ActivateJobs", "StreamActivatedJobs", "Topology"})


class JobState(enum.StrEnum):
    """Where a job is in Zeebe's job life cycle, as far as a worker can tell."""

    #: Waiting for a worker (just created, timed out, back-off over, or undeliverable).
    ACTIVATABLE = "activatable"
    #: Handed to a worker; it becomes activatable again when its deadline passes.
    ACTIVATED = "activated"
    #: Failed with retries left and a back-off that has not elapsed yet (Zeebe state FAILED).
    BACKING_OFF = "backing_off"
    #: Failed with no retries left: an incident (Zeebe state FAILED). Commands answer
    #: FAILED_PRECONDITION.
    INCIDENT = "incident"
    #: Completed; Zeebe deletes the job, so commands answer NOT_FOUND.
    COMPLETED = "completed"
    #: A BPMN error was thrown and caught; Zeebe deletes the job, so commands answer NOT_FOUND.
    ERROR_THROWN = "error_thrown"


_FINISHED: Final = frozenset({JobState.INCIDENT, JobState.COMPLETED, JobState.ERROR_THROWN})
# Zeebe accepts complete/fail/throw-error for jobs in its states ACTIVATABLE and ACTIVATED
# (JobCommandPreconditionChecker): a worker that overran its deadline can still complete the job.
_COMMANDABLE: Final = frozenset({JobState.ACTIVATABLE, JobState.ACTIVATED})


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """One accepted CompleteJob, FailJob or ThrowError command.

    ``retries`` and ``retry_backoff_ms`` are set for ``fail`` only; ``error_code`` for ``error``
    only; ``error_message`` for ``fail`` and ``error``. ``at`` is ``time.monotonic()``.
    """

    job_key: int
    kind: OutcomeKind
    variables: dict[str, Any]
    retries: int | None
    retry_backoff_ms: int | None
    error_message: str
    error_code: str
    at: float

    @property
    def is_final(self) -> bool:
        """True when no retry follows: complete, error, or fail with no retries left (incident)."""
        return self.kind != "fail" or (self.retries is not None and self.retries <= 0)


@dataclass(frozen=True, slots=True)
class ActivateJobsCall:
    """One ActivateJobs request as received (``received_at`` is ``time.monotonic()``).

    ``injected_status`` names the status an injected fault answered it with, if any.
    """

    type: str
    worker: str
    timeout_ms: int
    max_jobs_to_activate: int
    fetch_variable: tuple[str, ...]
    request_timeout_ms: int
    tenant_ids: tuple[str, ...]
    received_at: float
    injected_status: grpc.StatusCode | None = None


@dataclass(frozen=True, slots=True)
class StreamActivatedJobsCall:
    """One StreamActivatedJobs request as received (``received_at`` is ``time.monotonic()``)."""

    type: str
    worker: str
    timeout_ms: int
    fetch_variable: tuple[str, ...]
    tenant_ids: tuple[str, ...]
    received_at: float
    injected_status: grpc.StatusCode | None = None


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A copy of one job's state and history, for assertions and benchmarks.

    Timestamps are ``time.monotonic()`` seconds. ``available_at`` lists every moment the job became
    activatable (creation, deadline passed, back-off over, undeliverable batch); ``activated_at``
    every activation, ``activated_by``/``activated_via`` its worker name and whether a poll or a
    stream took it. Pickup delay is ``activated_at[0] - created_at``; end-to-end latency is
    ``finished_at - created_at``.
    """

    key: int
    type: str
    state: JobState
    retries: int
    worker: str
    deadline_ms: int
    variables: dict[str, Any]
    custom_headers: dict[str, Any]
    tenant_id: str
    bpmn_process_id: str
    process_instance_key: int
    element_id: str
    element_instance_key: int
    created_at: float
    available_at: tuple[float, ...]
    activated_at: tuple[float, ...]
    activated_by: tuple[str, ...]
    activated_via: tuple[Literal["poll", "stream"], ...]
    finished_at: float | None
    outcomes: tuple[JobOutcome, ...]


class GatewayWaitTimeout(TimeoutError):
    """A ``wait_*`` call of the emulator ran out of time; the message names what was awaited."""


@dataclass(slots=True, eq=False)
class _Job:
    """The broker's mutable record of one job."""

    key: int
    type: str
    variables: dict[str, Any]
    headers_json: str
    retries: int
    tenant_id: str
    bpmn_process_id: str
    process_definition_key: int
    process_instance_key: int
    element_id: str
    element_instance_key: int
    created_at: float
    state: JobState = JobState.ACTIVATABLE
    worker: str = ""
    deadline_ms: int = 0
    timer: asyncio.TimerHandle | None = None
    variables_json: str | None = None
    available_at: list[float] = field(default_factory=list)
    activated_at: list[float] = field(default_factory=list)
    activated_by: list[str] = field(default_factory=list)
    activated_via: list[Literal["poll", "stream"]] = field(default_factory=list)
    finished_at: float | None = None
    outcomes: list[JobOutcome] = field(default_factory=list)

    def all_variables_json(self) -> str:
        # Cached because a benchmark hands out thousands of jobs fetching every variable.
        if self.variables_json is None:
            self.variables_json = json.dumps(self.variables)
        return self.variables_json

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(slots=True)
class _Fault:
    rpc: str
    code: grpc.StatusCode
    details: str
    job_key: int | None
    remaining: int
    after_apply: bool


@dataclass(slots=True, eq=False)
class _Stream:
    """One open StreamActivatedJobs call: jobs are pushed to it as they become activatable."""

    type: str
    worker: str
    timeout_ms: int
    fetch_variable: tuple[str, ...]
    tenant_ids: frozenset[str]
    # (job key, activation number) pushed to this stream; None ends the stream.
    queue: asyncio.Queue[tuple[int, int] | None] = field(default_factory=asyncio.Queue)


class _Rejection(Exception):
    """A command rejected as Zeebe would reject it; turned into a gRPC status by the servicer."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free now, for tests that start a worker before its gateway."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _parse_variables(raw: str) -> dict[str, Any]:
    """Parse a command's ``variables`` JSON like Zeebe: empty means none, else a JSON object."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _Rejection(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Property 'variables' is invalid: Expected document to be valid JSON, but got {exc}",
        ) from None
    if not isinstance(value, dict):
        raise _Rejection(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Property 'variables' is invalid: Expected document to be a root level object",
        )
    return value


def _tenants(tenant_ids: Iterable[str]) -> frozenset[str]:
    # Zeebe reads an empty tenant list as the default tenant.
    return frozenset(tenant_ids) or frozenset({DEFAULT_TENANT_ID})


class ZeebeGatewayEmulator:
    """A Zeebe gateway and job store on a loopback ``grpc.aio`` server.

    Args:
        streaming: serve ``StreamActivatedJobs`` (Zeebe 8.4+). When False the RPC answers
            UNIMPLEMENTED, as older gateways do.
        long_poll_default_ms: how long ActivateJobs holds when ``requestTimeout`` is 0.
        server_certificate_chain, private_key: PEM bytes; when both are given the server speaks TLS.
        require_bearer_token: when set, every call must carry ``authorization: Bearer <token>``
            metadata, otherwise it is answered UNAUTHENTICATED.
        stop_grace: default grace period, in seconds, of :meth:`stop`.
        on_outcome: called with every accepted outcome as it is recorded (e.g. to log it).
    """

    def __init__(
        self,
        *,
        streaming: bool = False,
        long_poll_default_ms: int = DEFAULT_LONG_POLL_MS,
        server_certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        require_bearer_token: str | None = None,
        stop_grace: float = 1.0,
        on_outcome: Callable[[JobOutcome], None] | None = None,
    ) -> None:
        if (server_certificate_chain is None) != (private_key is None):
            raise ValueError("TLS needs both server_certificate_chain and private_key")
        self.streaming = streaming
        self.long_poll_default_ms = long_poll_default_ms
        self._certificate_chain = server_certificate_chain
        self._private_key = private_key
        self.require_bearer_token = require_bearer_token
        self.stop_grace = stop_grace
        self.on_outcome = on_outcome

        self._keys = itertools.count(_PARTITION_1_KEY_BASE + 1)
        self._definition_keys: dict[str, int] = {}
        self._jobs: dict[int, _Job] = {}
        # Per job type, the activatable job keys in the order they became activatable
        # (a dict used as an ordered set: O(1) removal when a stream or poll takes one).
        self._activatable: dict[str, dict[int, None]] = {}
        self._open_jobs = 0
        # Per job type, the futures of long-polls parked until a job of that type is activatable.
        self._pollers: dict[str, set[asyncio.Future[None]]] = {}
        self._streams: dict[str, list[_Stream]] = {}
        self._stream_turn: Counter[str] = Counter()
        # Futures of wait_* calls; all are resolved on every observable change.
        self._watchers: list[asyncio.Future[None]] = []
        self._faults: list[_Fault] = []

        self._outcomes: list[JobOutcome] = []
        self._activate_calls: list[ActivateJobsCall] = []
        self._stream_calls: list[StreamActivatedJobsCall] = []
        #: Calls received per RPC name (including those answered by injected faults).
        self.rpc_counts: Counter[str] = Counter()
        #: Calls answered UNAUTHENTICATED because the bearer token was missing or wrong.
        self.unauthenticated_calls = 0

        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._stopping = False
        self._host: str | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        """``host:port`` of the last start; raises if the gateway was never started."""
        if self._host is None or self._port is None:
            raise RuntimeError("the gateway has not been started")
        return f"{self._host}:{self._port}"

    @property
    def port(self) -> int | None:
        """The port of the last start, or None before the first start."""
        return self._port

    @property
    def is_serving(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    async def start(self, host: str | None = None, port: int | None = None) -> str:
        """Start serving and return ``"host:port"``.

        ``host=None`` means the host of the previous start, else 127.0.0.1. ``port=None`` reuses
        the port of the previous start (a restart on the same port), or picks an ephemeral port on
        the first start; ``0`` always picks an ephemeral port. Jobs and recordings survive a
        stop/start, as the broker's state survives a gateway restart.
        """
        if self._server is not None:
            raise RuntimeError(f"the gateway is already serving on {self.address}")
        if host is None:
            host = self._host or "127.0.0.1"
        if port is None:
            port = self._port or 0
        interceptors = [] if self.require_bearer_token is None else [_BearerTokenCheck(self)]
        server = grpc.aio.server(interceptors=interceptors)
        # The stubs mark every RPC abstract; the generated class answers UNIMPLEMENTED for the rest.
        add_GatewayServicer_to_server(_Servicer(self), server)  # type: ignore[abstract]
        self._health = _health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await self._health.set(GATEWAY_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        bind = f"{host}:{port}"
        try:
            if self._certificate_chain is not None and self._private_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(self._private_key, self._certificate_chain)]
                )
                bound = server.add_secure_port(bind, credentials)
            else:
                bound = server.add_insecure_port(bind)
        except RuntimeError as exc:  # grpcio raises RuntimeError when it cannot bind
            raise OSError(f"cannot bind the Zeebe gateway emulator to {bind}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot bind the Zeebe gateway emulator to {bind}")
        await server.start()
        self._server = server
        self._stopping = False
        self._host, self._port = host, bound
        logger.debug("zeebe gateway emulator serving on %s", self.address)
        return self.address

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; a later :meth:`start` serves the same jobs again.

        Held long-polls end with an empty response, as their ``requestTimeout`` would, and open
        job streams end, so that clients re-poll and meet a stopped server (UNAVAILABLE) rather
        than a cancelled call. Calls still running after ``grace`` seconds are cancelled. Job
        deadlines and back-offs keep running, as they do on a broker while its gateway restarts.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        # Stop taking new calls first; then let the parked long-polls and streams end themselves.
        stopped = asyncio.ensure_future(server.stop(self.stop_grace if grace is None else grace))
        for futures in self._pollers.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        for streams in self._streams.values():
            for stream in streams:
                stream.queue.put_nowait(None)
        await stopped

    async def __aenter__(self) -> Self:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ creating jobs

    def create_job(
        self,
        job_type: str,
        variables: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int = 3,
        *,
        process_instance_key: int | None = None,
        element_id: str = "ServiceTask_1",
        element_instance_key: int | None = None,
        bpmn_process_id: str = "servicenow-demo",
        tenant_id: str = DEFAULT_TENANT_ID,
    ) -> int:
        """Create an activatable job, as a process instance reaching a service task would.

        Returns the job key. Keys are unique and increasing; process and element instance keys
        are generated when not given. Waiting long-polls and open streams get it at once.
        """
        # Encoding up front rejects values JSON cannot carry here, not later in an RPC.
        variables_json = json.dumps(dict(variables or {}))
        job = self._new_job(
            job_type,
            json.loads(variables_json),
            variables_json,
            json.dumps(dict(headers or {})),
            retries,
            process_instance_key=process_instance_key,
            element_id=element_id,
            element_instance_key=element_instance_key,
            bpmn_process_id=bpmn_process_id,
            tenant_id=tenant_id,
        )
        self._make_activatable(job, job.created_at)
        self._notify_watchers()
        return job.key

    def create_jobs(
        self,
        job_type: str,
        count: int,
        variables: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int = 3,
        *,
        bpmn_process_id: str = "servicenow-demo",
        element_id: str = "ServiceTask_1",
        tenant_id: str = DEFAULT_TENANT_ID,
    ) -> list[int]:
        """Create ``count`` jobs alike (each in its own process instance) and return their keys.

        Cheaper than ``count`` calls of :meth:`create_job`: the variables and headers are encoded
        once, and waiting pollers and watchers are woken once.
        """
        variables_json = json.dumps(dict(variables or {}))
        # One decoded copy shared by all the jobs: job variables are never mutated in place
        # (FailJob variables replace the dict), so sharing is safe and keeps creation cheap.
        shared_variables = json.loads(variables_json)
        headers_json = json.dumps(dict(headers or {}))
        now = time.monotonic()
        keys: list[int] = []
        for _ in range(count):
            job = self._new_job(
                job_type,
                shared_variables,
                variables_json,
                headers_json,
                retries,
                process_instance_key=None,
                element_id=element_id,
                element_instance_key=None,
                bpmn_process_id=bpmn_process_id,
                tenant_id=tenant_id,
                now=now,
            )
            self._make_activatable(job, now, wake=False)
            keys.append(job.key)
        self._wake_pollers(job_type)
        self._notify_watchers()
        return keys

    def _new_job(
        self,
        job_type: str,
        variables: dict[str, Any],
        variables_json: str,
        headers_json: str,
        retries: int,
        *,
        process_instance_key: int | None,
        element_id: str,
        element_instance_key: int | None,
        bpmn_process_id: str,
        tenant_id: str,
        now: float | None = None,
    ) -> _Job:
        if not job_type:
            raise ValueError("job_type must not be empty")
        if process_instance_key is None:
            process_instance_key = next(self._keys)
        if element_instance_key is None:
            element_instance_key = next(self._keys)
        definition_key = self._definition_keys.setdefault(bpmn_process_id, next(self._keys))
        job = _Job(
            key=next(self._keys),
            type=job_type,
            variables=variables,
            variables_json=variables_json,
            headers_json=headers_json,
            retries=retries,
            tenant_id=tenant_id,
            bpmn_process_id=bpmn_process_id,
            process_definition_key=definition_key,
            process_instance_key=process_instance_key,
            element_id=element_id,
            element_instance_key=element_instance_key,
            created_at=time.monotonic() if now is None else now,
        )
        self._jobs[job.key] = job
        self._open_jobs += 1
        return job

    def resolve_incident(self, job_key: int, retries: int | None = None) -> None:
        """Resolve the incident of a job failed with no retries (Operate's "retry"), optionally
        setting new retries first; the job becomes activatable again."""
        job = self._job_or_key_error(job_key)
        if job.state is not JobState.INCIDENT:
            raise ValueError(f"job {job_key} has no incident (state {job.state})")
        if retries is not None:
            job.retries = retries
        if job.retries < 1:
            raise ValueError(f"job {job_key} has {job.retries} retries; give retries >= 1")
        job.finished_at = None
        self._open_jobs += 1
        self._make_activatable(job, time.monotonic())
        self._notify_watchers()

    # ------------------------------------------------------------------ recordings

    @property
    def outcomes(self) -> tuple[JobOutcome, ...]:
        """Every accepted CompleteJob, FailJob and ThrowError, in arrival order."""
        return tuple(self._outcomes)

    @property
    def activate_requests(self) -> tuple[ActivateJobsCall, ...]:
        """Every ActivateJobs request received, in arrival order."""
        return tuple(self._activate_calls)

    @property
    def stream_requests(self) -> tuple[StreamActivatedJobsCall, ...]:
        """Every StreamActivatedJobs request received, in arrival order."""
        return tuple(self._stream_calls)

    @property
    def job_keys(self) -> tuple[int, ...]:
        """Keys of every job ever created, in creation order."""
        return tuple(self._jobs)

    def job(self, job_key: int) -> JobSnapshot:
        """A snapshot of one job; raises KeyError for an unknown key."""
        job = self._job_or_key_error(job_key)
        return JobSnapshot(
            key=job.key,
            type=job.type,
            state=job.state,
            retries=job.retries,
            worker=job.worker,
            deadline_ms=job.deadline_ms,
            variables=json.loads(json.dumps(job.variables)),
            custom_headers=json.loads(job.headers_json),
            tenant_id=job.tenant_id,
            bpmn_process_id=job.bpmn_process_id,
            process_instance_key=job.process_instance_key,
            element_id=job.element_id,
            element_instance_key=job.element_instance_key,
            created_at=job.created_at,
            available_at=tuple(job.available_at),
            activated_at=tuple(job.activated_at),
            activated_by=tuple(job.activated_by),
            activated_via=tuple(job.activated_via),
            finished_at=job.finished_at,
            outcomes=tuple(job.outcomes),
        )

    def outcomes_of(self, job_key: int) -> tuple[JobOutcome, ...]:
        """The accepted outcomes of one job, oldest first."""
        return tuple(self._job_or_key_error(job_key).outcomes)

    def long_polls_waiting(self, job_type: str | None = None) -> int:
        """How many ActivateJobs calls are parked right now (for one job type, or all)."""
        if job_type is not None:
            return len(self._pollers.get(job_type, ()))
        return sum(len(futures) for futures in self._pollers.values())

    def streams_open(self, job_type: str | None = None) -> int:
        """How many StreamActivatedJobs calls are open right now (for one job type, or all)."""
        if job_type is not None:
            return len(self._streams.get(job_type, ()))
        return sum(len(streams) for streams in self._streams.values())

    def _job_or_key_error(self, job_key: int) -> _Job:
        try:
            return self._jobs[job_key]
        except KeyError:
            raise KeyError(f"no job with key {job_key} was created on this gateway") from None

    # ------------------------------------------------------------------ awaiting

    async def wait_for_outcome(
        self,
        job_key: int,
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> JobOutcome:
        """Wait for the first final outcome of a job: complete, error, or fail with no retries.

        Raises :class:`GatewayWaitTimeout` naming the job after ``timeout`` seconds (None: wait
        forever).
        """
        job = self._job_or_key_error(job_key)
        return await self._wait_for_final(job, timeout, _deadline(timeout))

    async def wait_for_outcomes(
        self,
        job_key: int,
        count: int,
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> list[JobOutcome]:
        """Wait until a job has ``count`` outcomes of any kind (e.g. two fails and a complete)
        and return the first ``count`` of them."""
        job = self._job_or_key_error(job_key)
        await self._wait_until(
            lambda: len(job.outcomes) >= count,
            _deadline(timeout),
            lambda: f"fewer than {count} outcomes for {_describe(job)} within {timeout} s",
        )
        return job.outcomes[:count]

    async def wait_for_activation(
        self,
        job_key: int,
        count: int = 1,
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> JobSnapshot:
        """Wait until a job has been activated ``count`` times in all; return its snapshot."""
        job = self._job_or_key_error(job_key)
        await self._wait_until(
            lambda: len(job.activated_at) >= count,
            _deadline(timeout),
            lambda: f"fewer than {count} activations of {_describe(job)} within {timeout} s",
        )
        return self.job(job_key)

    async def wait_for_all(
        self,
        job_keys: Iterable[int],
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> dict[int, JobOutcome]:
        """Wait for the final outcome of every job in ``job_keys`` (one overall ``timeout``)."""
        deadline = _deadline(timeout)
        results: dict[int, JobOutcome] = {}
        jobs = [self._job_or_key_error(key) for key in job_keys]
        for job in jobs:
            # Awaiting one job at a time keeps each wake-up O(1) for thousands of jobs.
            results[job.key] = await self._wait_for_final(
                job,
                timeout,
                deadline,
                lambda: (
                    f" ({sum(_final_outcome(j) is not None for j in jobs)} of the {len(jobs)}"
                    f" awaited jobs have finished)"
                ),
            )
        return results

    async def _wait_for_final(
        self,
        job: _Job,
        budget: float | None,
        deadline: float | None,
        more: Callable[[], str] = str,
    ) -> JobOutcome:
        await self._wait_until(
            lambda: _final_outcome(job) is not None,
            deadline,
            lambda: f"no final outcome for {_describe(job)} within {budget} s{more()}",
        )
        outcome = _final_outcome(job)
        assert outcome is not None
        return outcome

    async def wait_until_idle(
        self,
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> None:
        """Wait until every job created so far is finished: completed, error thrown or incident."""
        await self._wait_until(
            lambda: self._open_jobs == 0,
            _deadline(timeout),
            lambda: f"{self._open_jobs} jobs still open after {timeout} s: {self._open_summary()}",
        )

    async def wait_for_long_polls(
        self,
        job_type: str,
        count: int = 1,
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``count`` ActivateJobs calls for ``job_type`` are parked in a long-poll."""
        await self._wait_until(
            lambda: self.long_polls_waiting(job_type) >= count,
            _deadline(timeout),
            lambda: (
                f"fewer than {count} long-polls for job type {job_type!r} within {timeout} s"
                f" ({self.long_polls_waiting(job_type)} waiting)"
            ),
        )

    async def wait_for_streams(
        self,
        job_type: str,
        count: int = 1,
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``count`` StreamActivatedJobs calls for ``job_type`` are open."""
        await self._wait_until(
            lambda: self.streams_open(job_type) >= count,
            _deadline(timeout),
            lambda: (
                f"fewer than {count} job streams for job type {job_type!r} within {timeout} s"
                f" ({self.streams_open(job_type)} open)"
            ),
        )

    async def wait_for_rpc(
        self,
        rpc: RpcName,
        count: int = 1,
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> None:
        """Wait until the gateway has received ``count`` calls of ``rpc`` in all."""
        await self._wait_until(
            lambda: self.rpc_counts[rpc] >= count,
            _deadline(timeout),
            lambda: (
                f"fewer than {count} {rpc} calls within {timeout} s ({self.rpc_counts[rpc]} so far)"
            ),
        )

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float | None = _DEFAULT_WAIT_S,  # noqa: ASYNC109
        what: str = "the condition",
    ) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after every change the gateway
        records (calls, activations, outcomes, long-polls and streams opening or closing)."""
        await self._wait_until(
            predicate, _deadline(timeout), lambda: f"{what} did not hold within {timeout} s"
        )

    async def _wait_until(
        self, predicate: Callable[[], bool], deadline: float | None, describe: Callable[[], str]
    ) -> None:
        loop = asyncio.get_running_loop()
        while not predicate():
            future: asyncio.Future[None] = loop.create_future()
            self._watchers.append(future)
            try:
                async with asyncio.timeout_at(deadline):
                    await future
            except TimeoutError:
                raise GatewayWaitTimeout(describe()) from None

    def _notify_watchers(self) -> None:
        watchers, self._watchers = self._watchers, []
        for future in watchers:
            if not future.done():
                future.set_result(None)

    def _open_summary(self) -> str:
        open_jobs = [job for job in self._jobs.values() if job.state not in _FINISHED]
        shown = ", ".join(_describe(job) for job in open_jobs[:5])
        return shown + (", ..." if len(open_jobs) > 5 else "")

    # ------------------------------------------------------------------ fault injection

    def inject_fault(
        self,
        rpc: RpcName,
        code: grpc.StatusCode,
        *,
        times: int = 1,
        details: str | None = None,
        job_key: int | None = None,
        after_apply: bool = False,
    ) -> None:
        """Answer the next ``times`` calls of ``rpc`` with ``code`` instead of serving them.

        ``job_key`` limits the fault to commands on that job (CompleteJob, FailJob, ThrowError,
        UpdateJobTimeout, UpdateJobRetries). With ``after_apply`` the command is applied first and
        only its answer is lost (a gateway crashing after the broker wrote the command), which is
        how a worker sees a completion it must not repeat. Faults of one RPC fire in the order
        they were injected.
        """
        if rpc not in _RPC_NAMES:
            raise ValueError(f"unknown RPC {rpc!r}; expected one of {sorted(_RPC_NAMES)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        if (after_apply or job_key is not None) and rpc in _NOT_JOB_COMMANDS:
            raise ValueError(f"after_apply and job_key apply to job commands, not to {rpc}")
        self._faults.append(
            _Fault(
                rpc=rpc,
                code=code,
                details=details or f"injected {code.name} by the Zeebe gateway emulator",
                job_key=job_key,
                remaining=times,
                after_apply=after_apply,
            )
        )

    @property
    def pending_faults(self) -> int:
        """How many injected fault answers have not fired yet."""
        return sum(fault.remaining for fault in self._faults)

    def clear_faults(self) -> None:
        """Forget every injected fault that has not fired."""
        self._faults.clear()

    def _take_fault(self, rpc: str, job_key: int | None = None) -> _Fault | None:
        for fault in self._faults:
            if fault.rpc == rpc and (fault.job_key is None or fault.job_key == job_key):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ------------------------------------------------------------------ job life cycle

    def _make_activatable(self, job: _Job, now: float, *, wake: bool = True) -> None:
        """Make a job activatable: push it to an open stream if one takes its type and tenant
        (as Zeebe pushes), otherwise queue it for ActivateJobs and wake that type's long-polls."""
        job.state = JobState.ACTIVATABLE
        job.worker = ""
        job.deadline_ms = 0
        job.available_at.append(now)
        stream = self._pick_stream(job)
        if stream is not None:
            self._activate(job, stream.worker, stream.timeout_ms, now, "stream")
            stream.queue.put_nowait((job.key, len(job.activated_at)))
            return
        self._activatable.setdefault(job.type, {})[job.key] = None
        if wake:
            self._wake_pollers(job.type)

    def _pick_stream(self, job: _Job) -> _Stream | None:
        streams = [s for s in self._streams.get(job.type, ()) if job.tenant_id in s.tenant_ids]
        if not streams:
            return None
        # Round robin across the streams of one job type, as the gateway spreads pushed jobs.
        turn = self._stream_turn[job.type]
        self._stream_turn[job.type] = turn + 1
        return streams[turn % len(streams)]

    def _wake_pollers(self, job_type: str) -> None:
        for future in self._pollers.get(job_type, ()):
            if not future.done():
                future.set_result(None)

    def _activate(
        self,
        job: _Job,
        worker: str,
        timeout_ms: int,
        now: float,
        via: Literal["poll", "stream"],
    ) -> None:
        job.state = JobState.ACTIVATED
        job.worker = worker
        job.deadline_ms = int(time.time() * 1000) + timeout_ms
        job.activated_at.append(now)
        job.activated_by.append(worker)
        job.activated_via.append(via)
        job.cancel_timer()
        # Timers run on the loop's clock (call_later); recorded times use time.monotonic().
        job.timer = asyncio.get_running_loop().call_later(
            timeout_ms / 1000, self._on_deadline, job, len(job.activated_at)
        )

    def _on_deadline(self, job: _Job, activation: int) -> None:
        """Zeebe's job timeout: an activated job not answered in time becomes activatable."""
        job.timer = None
        if job.state is JobState.ACTIVATED and len(job.activated_at) == activation:
            self._make_activatable(job, time.monotonic())
            self._notify_watchers()

    def _on_backoff_over(self, job: _Job, outcome_count: int) -> None:
        job.timer = None
        if job.state is JobState.BACKING_OFF and len(job.outcomes) == outcome_count:
            self._make_activatable(job, time.monotonic())
            self._notify_watchers()

    def _give_back(self, job_key: int, activation: int) -> None:
        """A batch or pushed job could not be delivered: Zeebe's gateway fails it back with
        unchanged retries and no back-off, so it is activatable again at once."""
        job = self._jobs[job_key]
        if job.state is JobState.ACTIVATED and len(job.activated_at) == activation:
            logger.debug("%s: job %d", _NOT_SENT_MESSAGE, job_key)
            job.cancel_timer()
            self._make_activatable(job, time.monotonic())
            self._notify_watchers()

    def _close_stream(self, stream: _Stream, in_flight: tuple[int, int] | None) -> None:
        streams = self._streams.get(stream.type, [])
        if stream in streams:
            streams.remove(stream)
        if not streams:
            self._streams.pop(stream.type, None)
        # Jobs pushed to this stream but never sent are yielded back, as Zeebe does.
        undelivered = [in_flight] if in_flight is not None else []
        while not stream.queue.empty():
            queued = stream.queue.get_nowait()
            if queued is not None:
                undelivered.append(queued)
        for key, activation in undelivered:
            self._give_back(key, activation)
        self._notify_watchers()

    def _take_activatable(
        self,
        job_type: str,
        worker: str,
        timeout_ms: int,
        max_jobs: int,
        tenant_ids: frozenset[str],
    ) -> list[_Job]:
        queue = self._activatable.get(job_type)
        if not queue:
            return []
        taken: list[_Job] = []
        for key in queue:
            if len(taken) >= max_jobs:
                break
            job = self._jobs[key]
            if job.tenant_id in tenant_ids:
                taken.append(job)
        now = time.monotonic()
        for job in taken:
            del queue[job.key]
            self._activate(job, worker, timeout_ms, now, "poll")
        if taken:
            self._notify_watchers()
        return taken

    def _command_target(self, job_key: int, verb: str) -> _Job:
        """Find the job a command addresses, rejecting it where Zeebe's broker would."""
        job = self._jobs.get(job_key)
        if job is None or job.state in {JobState.COMPLETED, JobState.ERROR_THROWN}:
            # Zeebe deletes finished jobs, so it cannot tell them apart from unknown keys.
            raise _Rejection(
                grpc.StatusCode.NOT_FOUND,
                f"Command '{verb}' rejected with code 'NOT_FOUND': Expected to {verb} job with "
                f"key '{job_key}', but no such job was found",
            )
        if job.state not in _COMMANDABLE:
            raise _Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Command '{verb}' rejected with code 'INVALID_STATE': Expected to {verb} job "
                f"with key '{job_key}', but it is in state 'FAILED'",
            )
        return job

    def _finish(self, job: _Job, state: JobState, outcome: JobOutcome) -> None:
        job.cancel_timer()
        self._activatable.get(job.type, {}).pop(job.key, None)
        job.state = state
        job.worker = ""
        job.deadline_ms = 0
        job.outcomes.append(outcome)
        self._outcomes.append(outcome)
        if state in _FINISHED:
            job.finished_at = outcome.at
            self._open_jobs -= 1
        self._notify_watchers()
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _complete(self, request: gateway_pb2.CompleteJobRequest) -> None:
        job = self._command_target(request.jobKey, "complete")
        variables = _parse_variables(request.variables)
        outcome = JobOutcome(
            job_key=job.key,
            kind="complete",
            variables=variables,
            retries=None,
            retry_backoff_ms=None,
            error_message="",
            error_code="",
            at=time.monotonic(),
        )
        self._finish(job, JobState.COMPLETED, outcome)

    def _fail(self, request: gateway_pb2.FailJobRequest) -> None:
        job = self._command_target(request.jobKey, "fail")
        variables = _parse_variables(request.variables)
        outcome = JobOutcome(
            job_key=job.key,
            kind="fail",
            variables=variables,
            retries=request.retries,
            retry_backoff_ms=request.retryBackOff,
            error_message=request.errorMessage,
            error_code="",
            at=time.monotonic(),
        )
        job.retries = request.retries
        if variables:
            # Zeebe sets FailJob variables locally on the task, so the next activation sees them.
            # A new dict, never an update in place: create_jobs shares one dict between jobs.
            job.variables = {**job.variables, **variables}
            job.variables_json = None
        if request.retries <= 0:
            self._finish(job, JobState.INCIDENT, outcome)
        elif request.retryBackOff > 0:
            self._finish(job, JobState.BACKING_OFF, outcome)
            job.timer = asyncio.get_running_loop().call_later(
                request.retryBackOff / 1000,
                self._on_backoff_over,
                job,
                len(job.outcomes),
            )
        else:
            self._finish(job, JobState.BACKING_OFF, outcome)
            self._make_activatable(job, outcome.at)

    def _throw_error(self, request: gateway_pb2.ThrowErrorRequest) -> None:
        job = self._command_target(request.jobKey, "throw an error for")
        if not request.errorCode:
            raise _Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Expected to throw an error for job, but no error code was provided",
            )
        outcome = JobOutcome(
            job_key=job.key,
            kind="error",
            variables=_parse_variables(request.variables),
            retries=None,
            retry_backoff_ms=None,
            error_message=request.errorMessage,
            error_code=request.errorCode,
            at=time.monotonic(),
        )
        self._finish(job, JobState.ERROR_THROWN, outcome)

    def _update_timeout(self, request: gateway_pb2.UpdateJobTimeoutRequest) -> None:
        job = self._command_target(request.jobKey, "update the timeout of")
        if job.state is not JobState.ACTIVATED:
            raise _Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Expected to update the timeout of job with key '{job.key}', but it is not active",
            )
        # Zeebe sets the new deadline to now + timeout, not to the old deadline + timeout.
        job.deadline_ms = int(time.time() * 1000) + request.timeout
        job.cancel_timer()
        job.timer = asyncio.get_running_loop().call_later(
            request.timeout / 1000, self._on_deadline, job, len(job.activated_at)
        )

    def _update_retries(self, request: gateway_pb2.UpdateJobRetriesRequest) -> None:
        if request.retries < 1:
            raise _Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expected retries to be greater than zero, but was {request.retries}",
            )
        job = self._jobs.get(request.jobKey)
        if job is None or job.state in {JobState.COMPLETED, JobState.ERROR_THROWN}:
            raise _Rejection(
                grpc.StatusCode.NOT_FOUND,
                f"Expected to update retries for job with key '{request.jobKey}', "
                "but no such job was found",
            )
        # As in Zeebe, new retries do not resolve an incident by themselves.
        job.retries = request.retries

    def _to_proto(self, job: _Job, fetch_variable: Sequence[str]) -> gateway_pb2.ActivatedJob:
        if fetch_variable:
            # Zeebe returns only the requested variables that exist; empty means all.
            variables_json = json.dumps(
                {name: job.variables[name] for name in fetch_variable if name in job.variables}
            )
        else:
            variables_json = job.all_variables_json()
        return gateway_pb2.ActivatedJob(
            key=job.key,
            type=job.type,
            processInstanceKey=job.process_instance_key,
            bpmnProcessId=job.bpmn_process_id,
            processDefinitionVersion=1,
            processDefinitionKey=job.process_definition_key,
            elementId=job.element_id,
            elementInstanceKey=job.element_instance_key,
            customHeaders=job.headers_json,
            worker=job.worker,
            retries=job.retries,
            deadline=job.deadline_ms,
            variables=variables_json,
            tenantId=job.tenant_id,
        )


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


def _final_outcome(job: _Job) -> JobOutcome | None:
    for outcome in job.outcomes:
        if outcome.is_final:
            return outcome
    return None


def _describe(job: _Job) -> str:
    kinds = [outcome.kind for outcome in job.outcomes]
    return (
        f"job {job.key} (type {job.type!r}, state {job.state.value}, "
        f"{len(job.activated_at)} activations, outcomes {kinds})"
    )


class _Servicer(GatewayServicer):
    """The ``gateway_protocol.Gateway`` RPCs, translated onto the emulator's job store.

    RPCs not overridden here answer UNIMPLEMENTED through the generated base class.
    """

    def __init__(self, gateway: ZeebeGatewayEmulator) -> None:
        self._gw = gateway

    async def _fault(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, job_key: int | None = None
    ) -> _Fault | None:
        """Count the call and answer it with an injected fault that fires before applying."""
        gw = self._gw
        gw.rpc_counts[rpc] += 1
        gw._notify_watchers()
        fault = gw._take_fault(rpc, job_key)
        if fault is not None and not fault.after_apply:
            await context.abort(fault.code, fault.details)
        return fault

    async def _command(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        rpc: str,
        job_key: int,
        apply: Callable[[], None],
    ) -> None:
        fault = await self._fault(context, rpc, job_key)
        try:
            apply()
        except _Rejection as rejection:
            await context.abort(rejection.code, rejection.details)
        if fault is not None:  # after_apply: the command is written, its answer is lost
            await context.abort(fault.code, fault.details)

    async def ActivateJobs(
        self,
        request: gateway_pb2.ActivateJobsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[gateway_pb2.ActivateJobsResponse]:
        """Long-poll: answer at once when jobs are activatable, otherwise hold the call until one
        is or ``requestTimeout`` passes, then end the stream (empty when nothing came)."""
        gw = self._gw
        received_at = time.monotonic()
        gw.rpc_counts["ActivateJobs"] += 1
        fault = gw._take_fault("ActivateJobs")
        gw._activate_calls.append(
            ActivateJobsCall(
                type=request.type,
                worker=request.worker,
                timeout_ms=request.timeout,
                max_jobs_to_activate=request.maxJobsToActivate,
                fetch_variable=tuple(request.fetchVariable),
                request_timeout_ms=request.requestTimeout,
                tenant_ids=tuple(request.tenantIds),
                received_at=received_at,
                injected_status=None if fault is None else fault.code,
            )
        )
        gw._notify_watchers()
        if fault is not None:
            await context.abort(fault.code, fault.details)
        problem = _invalid_activation(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

        tenants = _tenants(request.tenantIds)
        if request.requestTimeout > 0:
            hold_s = request.requestTimeout / 1000
        elif request.requestTimeout == 0:
            hold_s = gw.long_poll_default_ms / 1000
        else:
            hold_s = 0.0  # negative: Zeebe answers at once, without long polling
        loop = asyncio.get_running_loop()
        until = loop.time() + hold_s
        jobs: list[_Job] = []
        try:
            while True:
                jobs = gw._take_activatable(
                    request.type,
                    request.worker,
                    request.timeout,
                    request.maxJobsToActivate,
                    tenants,
                )
                if jobs or gw._stopping or loop.time() >= until:
                    break
                await self._park(request.type, until)
        except asyncio.CancelledError:
            # The client went away (worker stopped, channel closed) while the call was held:
            # end quietly; nothing was activated for it.
            return
        if not jobs:
            return
        batch = [(job.key, len(job.activated_at)) for job in jobs]
        response = gateway_pb2.ActivateJobsResponse(
            jobs=[gw._to_proto(job, request.fetchVariable) for job in jobs]
        )
        delivered = False
        try:
            yield response
            delivered = True
        finally:
            if not delivered:
                for key, activation in batch:
                    gw._give_back(key, activation)

    async def _park(self, job_type: str, until: float) -> None:
        gw = self._gw
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = gw._pollers.setdefault(job_type, set())
        waiting.add(future)
        gw._notify_watchers()
        try:
            async with asyncio.timeout_at(until):
                await future
        except TimeoutError:
            pass
        finally:
            waiting.discard(future)
            if not waiting:
                gw._pollers.pop(job_type, None)
            gw._notify_watchers()

    async def StreamActivatedJobs(
        self,
        request: gateway_pb2.StreamActivatedJobsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[gateway_pb2.ActivatedJob]:
        """Job push: keep the call open and send each job of the type as it becomes
        activatable. Jobs that were activatable before the stream opened stay for polling."""
        gw = self._gw
        gw.rpc_counts["StreamActivatedJobs"] += 1
        if not gw.streaming:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        fault = gw._take_fault("StreamActivatedJobs")
        gw._stream_calls.append(
            StreamActivatedJobsCall(
                type=request.type,
                worker=request.worker,
                timeout_ms=request.timeout,
                fetch_variable=tuple(request.fetchVariable),
                tenant_ids=tuple(request.tenantIds),
                received_at=time.monotonic(),
                injected_status=None if fault is None else fault.code,
            )
        )
        gw._notify_watchers()
        if fault is not None:
            await context.abort(fault.code, fault.details)
        problem = _invalid_stream(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        stream = _Stream(
            type=request.type,
            worker=request.worker,
            timeout_ms=request.timeout,
            fetch_variable=tuple(request.fetchVariable),
            tenant_ids=_tenants(request.tenantIds),
        )
        gw._streams.setdefault(request.type, []).append(stream)
        gw._notify_watchers()
        in_flight: tuple[int, int] | None = None
        try:
            while not gw._stopping:
                item = await stream.queue.get()
                if item is None:
                    break
                key, activation = item
                job = gw._jobs[key]
                if job.state is not JobState.ACTIVATED or len(job.activated_at) != activation:
                    continue  # answered or timed out before it could be sent
                in_flight = item
                yield gw._to_proto(job, stream.fetch_variable)
                in_flight = None
        except asyncio.CancelledError:
            return  # the client closed the stream; end quietly
        finally:
            gw._close_stream(stream, in_flight)

    async def CompleteJob(
        self,
        request: gateway_pb2.CompleteJobRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.CompleteJobResponse:
        """Complete a job: accepted while activatable or activated; NOT_FOUND once finished."""
        await self._command(
            context, "CompleteJob", request.jobKey, lambda: self._gw._complete(request)
        )
        return gateway_pb2.CompleteJobResponse()

    async def FailJob(
        self,
        request: gateway_pb2.FailJobRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.FailJobResponse:
        """Fail a job: retries > 0 makes it activatable again after ``retryBackOff`` ms;
        retries <= 0 raises an incident."""
        await self._command(context, "FailJob", request.jobKey, lambda: self._gw._fail(request))
        return gateway_pb2.FailJobResponse()

    async def ThrowError(
        self,
        request: gateway_pb2.ThrowErrorRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ThrowErrorResponse:
        """Throw a BPMN error; the emulator treats it as caught, so the job is done."""
        await self._command(
            context, "ThrowError", request.jobKey, lambda: self._gw._throw_error(request)
        )
        return gateway_pb2.ThrowErrorResponse()

    async def UpdateJobTimeout(
        self,
        request: gateway_pb2.UpdateJobTimeoutRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.UpdateJobTimeoutResponse:
        """Move an activated job's deadline to now + ``timeout`` ms."""
        await self._command(
            context,
            "UpdateJobTimeout",
            request.jobKey,
            lambda: self._gw._update_timeout(request),
        )
        return gateway_pb2.UpdateJobTimeoutResponse()

    async def UpdateJobRetries(
        self,
        request: gateway_pb2.UpdateJobRetriesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.UpdateJobRetriesResponse:
        """Set a job's retries (must be > 0)."""
        await self._command(
            context,
            "UpdateJobRetries",
            request.jobKey,
            lambda: self._gw._update_retries(request),
        )
        return gateway_pb2.UpdateJobRetriesResponse()

    async def Topology(
        self,
        request: gateway_pb2.TopologyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.TopologyResponse:
        """A one-broker, one-partition cluster whose broker is this gateway's address."""
        await self._fault(context, "Topology")
        gw = self._gw
        partition = gateway_pb2.Partition(
            partitionId=1,
            role=gateway_pb2.Partition.PartitionBrokerRole.LEADER,
            health=gateway_pb2.Partition.PartitionBrokerHealth.HEALTHY,
        )
        broker = gateway_pb2.BrokerInfo(
            nodeId=0,
            host=gw._host or "127.0.0.1",
            port=gw._port or 0,
            partitions=[partition],
            version=GATEWAY_VERSION,
        )
        return gateway_pb2.TopologyResponse(
            brokers=[broker],
            clusterSize=1,
            partitionsCount=1,
            replicationFactor=1,
            gatewayVersion=GATEWAY_VERSION,
        )


def _invalid_stream(request: gateway_pb2.StreamActivatedJobsRequest) -> str:
    """Zeebe's validation of StreamActivatedJobs; an empty string means valid."""
    if not request.type:
        return "Expected to stream jobs of type, but no type was provided"
    if request.timeout < 1:
        return f"Expected timeout to be greater than zero, but was {request.timeout}"
    return ""


if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic
    _ServerInterceptor = grpc.aio.ServerInterceptor


def _invalid_activation(request: gateway_pb2.ActivateJobsRequest) -> str:
    """Zeebe's validation of ActivateJobs; an empty string means valid."""
    if not request.type:
        return "Expected to activate jobs of type, but no type was provided"
    if request.timeout < 1:
        return f"Expected timeout to be greater than zero, but was {request.timeout}"
    if request.maxJobsToActivate < 1:
        return (
            "Expected to activate at least 1 job, but max jobs to activate was "
            f"{request.maxJobsToActivate}"
        )
    return ""


class _BearerTokenCheck(_ServerInterceptor):
    """Answer UNAUTHENTICATED unless the call carries ``authorization: Bearer <token>``,
    as a gateway behind OAuth (Identity, Keycloak, SaaS) does."""

    def __init__(self, gateway: ZeebeGatewayEmulator) -> None:
        self._gw = gateway

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        expected = f"Bearer {self._gw.require_bearer_token}"
        metadata = dict(handler_call_details.invocation_metadata or ())
        if metadata.get("authorization") == expected or handler is None:
            return handler
        self._gw.unauthenticated_calls += 1
        self._gw._notify_watchers()
        message = (
            "Expected bearer token at header with key [authorization], but found nothing"
            if "authorization" not in metadata
            else "Expected a valid token, but the bearer token was rejected"
        )

        async def reject(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(reject, **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(reject, **kwargs)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(reject, **kwargs)
        return grpc.unary_unary_rpc_method_handler(reject, **kwargs)


# ---------------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m servicenow_emulators.zeebe_gateway",
        description="Serve an emulated Zeebe gateway (gateway_protocol.Gateway) until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=26500, help="port to bind (default 26500)")
    parser.add_argument("--streaming", action="store_true", help="serve StreamActivatedJobs")
    parser.add_argument(
        "--job",
        action="append",
        default=[],
        metavar="TYPE",
        help="create one job of this type at start (repeatable)",
    )
    parser.add_argument("--variables", default="{}", help="JSON variables for --job jobs")
    parser.add_argument("--headers", default="{}", help="JSON custom headers for --job jobs")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    gateway = ZeebeGatewayEmulator(
        streaming=args.streaming, on_outcome=lambda outcome: logger.info("outcome %s", outcome)
    )
    address = await gateway.start(args.host, args.port)
    variables, headers = json.loads(args.variables), json.loads(args.headers)
    for job_type in args.job:
        key = gateway.create_job(job_type, variables, headers)
        logger.info("created job %d of type %r", key, job_type)
    logger.info("Zeebe gateway emulator serving on %s", address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator on its own: ``python -m servicenow_emulators.zeebe_gateway --port 26500``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
