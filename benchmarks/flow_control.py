"""Flow control against a busy ServiceNow instance (issue 15): adaptive vs fixed concurrency,
1 and 3 worker replicas, and an hourly-style rate-limit rule used up mid-run.

    nice -n 5 .venv/bin/python benchmarks/flow_control.py             # about 4 minutes
    nice -n 5 .venv/bin/python benchmarks/flow_control.py --before ../main   # + main's worker

The ServiceNow emulator plays an instance with S = 16 requests served at once, a queue of 50 and
429 (`Retry-After: 1`) beyond, 50 ms per request: its capacity is S / 50 ms = 320 requests/s.
Each replica is a worker process (the installed console script) with WORKER_MAX_JOBS_IN_FLIGHT=128
and a backlog of create jobs that never runs dry. Variants:

* adaptive: the defaults (SERVICENOW_MAX_CONCURRENCY=32, adaptive);
* fixed: SERVICENOW_ADAPTIVE_CONCURRENCY=false with SERVICENOW_MAX_CONCURRENCY=128, that is as
  many requests at once as jobs in flight (today's behaviour), pauses on Retry-After kept;
* fixed-60: SERVICENOW_MAX_CONCURRENCY=60, not adaptive: what suits one replica (16 + 50 at once
  at most), three times too many for three;
* before (with `--before DIR`): the worker of another checkout, e.g. main without flow control.

Figures per run (the first `--settle` seconds left out, as the targets say):
goodput (completed jobs/s, and as a share of 320/s); requests and 429 answers (share); jobs that
spent a retry (failed with fewer retries than they had) and jobs at retries 0 (incidents);
`servicenow_throttled` log events; concurrency limit per replica over time (from /metrics).
For the rule runs: when the rule ran out, when it reset, how long until throughput was back
(the first 0.5 s bucket after the reset at 90 % of the mean before exhaustion).

Results: printed, and written to `benchmarks/results/flow_control.{md,json,png}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from servicenow_emulators.table_api import Capacity, RateLimitRule, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator, free_port

JOB_TYPE = "servicenow:1"
USER, PASSWORD = "bench", "bench-pw"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONSOLE_SCRIPT = Path(sys.executable).with_name("servicenow-worker")
SLOTS, QUEUE, SERVICE_TIME = 16, 50, 0.05
CAPACITY = SLOTS / SERVICE_TIME
IN_FLIGHT = 128
RETRIES = 3
BUCKET = 0.5
VARIABLES = {
    "authentication": {"type": "basic", "username": USER, "password": PASSWORD},
    "operation": "create",
    "table": "incident",
    "payload": {"short_description": "flow control benchmark", "urgency": "2"},
    "fields": "sys_id,number",
}
HEADERS = {"resultVariable": "response", "retryBackoff": "PT5S"}
VARIANT_SETTINGS = {
    "adaptive": {},
    "fixed": {
        "SERVICENOW_ADAPTIVE_CONCURRENCY": "false",
        "SERVICENOW_MAX_CONCURRENCY": str(IN_FLIGHT),
    },
    # A fixed limit an operator might choose for one replica: the instance's 16 slots + 50 queued,
    # less a margin. Right for one replica, three times too many for three.
    "fixed-60": {
        "SERVICENOW_ADAPTIVE_CONCURRENCY": "false",
        "SERVICENOW_MAX_CONCURRENCY": "60",
    },
    "before": {},
}


@dataclasses.dataclass
class Run:
    name: str
    variant: str
    replicas: int
    duration: float
    rule_limit: int = 0
    rule_window: int = 0
    goodput: float = float("nan")
    goodput_share: float = float("nan")
    # What the instance served to a plain client just before (calibrate()).
    measured_capacity: float = float("nan")
    requests: int = 0
    throttled: int = 0
    throttled_share: float = float("nan")
    throttled_after_settle: int = 0
    requests_after_settle: int = 0
    throttled_share_after_settle: float = float("nan")
    completed: int = 0
    retries_spent: int = 0
    incidents: int = 0
    throttled_events: int = 0
    cpu_s_per_1000: float = float("nan")
    exhausted_at: float | None = None
    reset_at: float | None = None
    recovered_after: float | None = None
    # Per BUCKET seconds from the start: completions, 429 answers; per replica: limit samples.
    completions: list[int] = dataclasses.field(default_factory=list)
    refusals: list[int] = dataclasses.field(default_factory=list)
    limits: list[list[tuple[float, float]]] = dataclasses.field(default_factory=list)
    # What summarise() needs from the measurement (not reported).
    _window: tuple[float, float] = (0.0, 0.0)
    _outcomes: list[Any] = dataclasses.field(default_factory=list, repr=False)
    _cpu: float = 0.0
    _logs: list[Path] = dataclasses.field(default_factory=list, repr=False)


class Answers:
    """Every answer of the ServiceNow emulator, with its time (on_response_prepare)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.statuses: list[int] = []

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.times.append(time.monotonic())
        self.statuses.append(response.status)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def replica(
    gateway: ZeebeGatewayEmulator, servicenow_url: str, variant: str, options: Any
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, Path]]:
    """One worker process; yields it, its health port and its log file."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        "ZEEBE_ADDRESS": gateway.address,
        "SERVICENOW_URL_TEMPLATE": servicenow_url,
        "WORKER_MAX_JOBS_IN_FLIGHT": str(IN_FLIGHT),
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **VARIANT_SETTINGS[variant],
    }
    command = [str(CONSOLE_SCRIPT)]
    if variant == "before":
        command = [sys.executable, "-m", "servicenow_worker"]
        env["PYTHONPATH"] = str(Path(options.before) / "src")
    descriptor, name = tempfile.mkstemp(prefix=f"flow-{variant}-", suffix=".log")
    log = Path(name)
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=descriptor, stderr=subprocess.STDOUT, start_new_session=True
    )
    os.close(descriptor)
    try:
        yield process, port, log
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 40)
            except TimeoutError:
                process.kill()
                await process.wait()


async def sample_limits(
    ports: list[int], started: float, limits: list[list[tuple[float, float]]]
) -> None:
    """The concurrency limit gauge of each replica, every second."""
    pattern = re.compile(r"^servicenow_worker_servicenow_concurrency_limit\{[^}]*\} (\S+)$", re.M)
    async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
        while True:
            for index, port in enumerate(ports):
                with contextlib.suppress(httpx.HTTPError):
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    found = pattern.search(text)
                    if found:
                        limits[index].append((time.monotonic() - started, float(found.group(1))))
            await asyncio.sleep(1)


async def feed(gateway: ZeebeGatewayEmulator, backlog: int, created: list[int]) -> None:
    """Keep `backlog` jobs waiting beyond those in flight."""
    while True:
        done = sum(1 for outcome in gateway.outcomes if outcome.kind == "complete")
        missing = backlog - (len(created) - done)
        if missing > 0:
            created.extend(gateway.create_jobs(JOB_TYPE, missing, VARIABLES, HEADERS, RETRIES))
        await asyncio.sleep(0.2)


async def serve_instance(rule_limit: int, rule_window: int, answers_file: Path) -> None:
    """The busy instance, in a process of its own (`--serve`): prints its URL, and on SIGTERM
    writes the time and status of every answer to `answers_file`."""
    rules = [RateLimitRule(rule_limit, rule_window)] if rule_limit else []
    answers = Answers()
    servicenow = ServiceNowEmulator(
        users={USER: PASSWORD},
        latency=SERVICE_TIME,
        capacity=Capacity(SLOTS, QUEUE, retry_after=1),
        rate_limit_rules=rules,
    )
    servicenow.app.on_response_prepare.append(answers)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with servicenow:
        print(servicenow.base_url, flush=True)
        await stop.wait()
    write_answers(answers, answers_file)


def write_answers(answers: Answers, path: Path) -> None:
    path.write_text(json.dumps({"times": answers.times, "statuses": answers.statuses}))


def read_answers(path: Path) -> Answers:
    recorded = json.loads(path.read_text() or "{}")
    path.unlink()
    answers = Answers()
    answers.times, answers.statuses = recorded.get("times", []), recorded.get("statuses", [])
    return answers


@contextlib.asynccontextmanager
async def instance(run: Run) -> AsyncIterator[tuple[str, Answers]]:
    """The busy instance's URL, and (once the block ends) its answers."""
    descriptor, name = tempfile.mkstemp(prefix="flow-answers-", suffix=".json")
    os.close(descriptor)
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", name,
        "--rule-limit", str(run.rule_limit), "--rule-window", str(run.rule_window or 1),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    answers = Answers()
    try:
        yield (await process.stdout.readline()).decode().strip(), answers
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
        recorded = read_answers(Path(name))
        answers.times, answers.statuses = recorded.times, recorded.statuses


async def measure(run: Run, options: Any) -> Run:
    async with contextlib.AsyncExitStack() as outer:
        base_url, answers = await outer.enter_async_context(instance(run))
        await measure_against(run, base_url, options, outer)
    summarise(run, answers, options.settle)
    return run


async def measure_against(
    run: Run, base_url: str, options: Any, stack: contextlib.AsyncExitStack
) -> None:
    gateway = await stack.enter_async_context(ZeebeGatewayEmulator())
    async with contextlib.AsyncExitStack() as workers:
        processes = [
            await workers.enter_async_context(replica(gateway, base_url, run.variant, options))
            for _ in range(run.replicas)
        ]
        await gateway.wait_until(
            lambda: gateway.long_polls_waiting(JOB_TYPE) >= run.replicas,
            what="every replica polling",
            timeout=60,
        )
        if run.rule_window:  # start at the beginning of a window: it runs out mid-run
            await asyncio.sleep(-time.time() % run.rule_window)
        started = time.monotonic()
        cpu_before = sum(cpu_seconds(p.pid) for p, _, _ in processes)
        created: list[int] = []
        run.limits = [[] for _ in processes]
        tasks = [
            asyncio.create_task(feed(gateway, run.replicas * IN_FLIGHT + 400, created)),
            asyncio.create_task(sample_limits([p for _, p, _ in processes], started, run.limits)),
        ]
        await asyncio.sleep(run.duration)
        ended = time.monotonic()
        for task in tasks:
            task.cancel()
        cpu = sum(cpu_seconds(p.pid) for p, _, _ in processes) - cpu_before
        run._window = (started, ended)
        run._outcomes = [o for o in gateway.outcomes if started <= o.at < ended]
        run._cpu = cpu
        run._logs = [log for _, _, log in processes]


def summarise(run: Run, answers: Answers, settle: float) -> None:
    started, ended = run._window
    outcomes, cpu, logs = run._outcomes, run._cpu, run._logs
    buckets = int((ended - started) / BUCKET) + 1
    run.completions = [0] * buckets
    run.refusals = [0] * buckets
    settled = started + settle
    completed_after = 0
    for outcome in outcomes:
        if outcome.kind == "complete":
            run.completed += 1
            run.completions[int((outcome.at - started) / BUCKET)] += 1
            completed_after += outcome.at >= settled
        elif outcome.kind == "fail" and (outcome.retries or 0) < RETRIES:
            run.retries_spent += 1
            run.incidents += outcome.retries == 0
    for at, status in zip(answers.times, answers.statuses, strict=True):
        if not started <= at < ended:
            continue
        run.requests += 1
        refused = status == 429
        run.throttled += refused
        if refused:
            run.refusals[int((at - started) / BUCKET)] += 1
        if at >= settled:
            run.requests_after_settle += 1
            run.throttled_after_settle += refused
    run.goodput = completed_after / (ended - settled)
    run.goodput_share = run.goodput / CAPACITY
    run.throttled_share = run.throttled / max(run.requests, 1)
    run.throttled_share_after_settle = run.throttled_after_settle / max(
        run.requests_after_settle, 1
    )
    run.cpu_s_per_1000 = cpu / max(run.completed, 1) * 1000
    run.throttled_events = sum(
        line.count('"servicenow_throttled"')
        for log in logs
        for line in log.read_text().splitlines()
    )
    for log in logs:
        log.unlink()
    if run.rule_limit:
        rule_timing(run, answers, started)


def rule_timing(run: Run, answers: Answers, started: float) -> None:
    """When the rule ran out (its window's requests all answered), when its window reset (windows
    are aligned to the clock and the run starts with one), and when throughput was back: the
    first 0.5 s after the reset with at least 90 % of the mean completions before the rule ran
    out (its first second left out)."""
    served = [
        at for at, status in zip(answers.times, answers.statuses, strict=True) if status != 429
    ]
    in_window = [at for at in served if started <= at < started + run.rule_window]
    if len(in_window) < run.rule_limit:
        return
    run.exhausted_at = round(in_window[run.rule_limit - 1] - started, 1)
    run.reset_at = float(run.rule_window)
    before = run.completions[int(1 / BUCKET) : int(run.exhausted_at / BUCKET)]
    if not before:
        return
    normal = statistics.mean(before)
    first = int(run.reset_at / BUCKET)
    back = next(
        (i for i in range(first, len(run.completions)) if run.completions[i] >= 0.9 * normal),
        None,
    )
    if back is not None:
        run.recovered_after = (back + 1) * BUCKET - run.reset_at


def reported(run: Run) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(run).items() if not k.startswith("_")}


def markdown(runs: list[Run]) -> str:
    lines = [
        "| run | replicas | goodput jobs/s (of 320; of measured) | requests | 429 (after settle) | retries "
        "spent | at retries 0 | throttled log events | CPU s/1000 jobs | rule: out at / reset / "
        "back after |",
        "|" + "---|" * 10,
    ]
    for run in runs:
        rule = (
            f"{run.exhausted_at} s / {run.reset_at} s / {run.recovered_after} s"
            if run.rule_limit
            else "—"
        )
        lines.append(
            f"| {run.name} | {run.replicas} | {run.goodput:.0f} ({run.goodput_share:.0%}; "
            f"{run.goodput / run.measured_capacity:.0%}) "
            f"| {run.requests} | {run.throttled} ({run.throttled_share_after_settle:.2%}) "
            f"| {run.retries_spent} | {run.incidents} | {run.throttled_events} "
            f"| {run.cpu_s_per_1000:.2f} | {rule} |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(runs), 2, figsize=(12, 2.6 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs, strict=True):
        times = [i * BUCKET for i in range(len(run.completions))]
        row[0].plot(times, [c / BUCKET for c in run.completions], label="completed jobs/s")
        row[0].plot(times, [r / BUCKET for r in run.refusals], label="429 answers/s", alpha=0.7)
        row[0].axhline(CAPACITY, color="grey", linestyle=":", label="capacity 320/s")
        if run.reset_at is not None:
            row[0].axvline(run.reset_at, color="red", linestyle="--", label="rule reset")
        row[0].set_title(f"{run.name}: throughput", fontsize=9)
        row[0].set_xlabel("s")
        row[0].legend(fontsize=7)
        for index, samples in enumerate(run.limits):
            row[1].step([s[0] for s in samples], [s[1] for s in samples], label=f"replica {index}")
        row[1].set_title(f"{run.name}: concurrency limit per replica", fontsize=9)
        row[1].set_xlabel("s")
        row[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


async def turn_cost(rounds: int = 200_000) -> float:
    """CPU microseconds one request spends in flow control when nothing limits it: a turn taken
    and the answer reported (what every request pays; the wait histogram included)."""
    from servicenow_worker.flow_control import FlowControl, FlowSettings
    from servicenow_worker.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    flow = FlowControl(FlowSettings(), metrics)
    metrics.watch_destinations(flow)
    identity = b"\x01" * 16
    headers = {"Content-Type": "application/json"}
    started = time.process_time()
    for _ in range(rounds):
        destination = flow.destination("https://dev1.service-now.com", identity)
        turn = await destination.turn(0.0)
        with turn:
            turn.answered(200, headers)
    return (time.process_time() - started) / rounds * 1e6


async def calibrate(seconds: float = 8) -> float:
    """What the emulated instance serves on this machine now: 60 requests kept in flight (its
    16 slots full, its queue of 50 never overrun) by a plain aiohttp client, answers/s after 2 s."""
    run = Run("calibration", "none", 0, seconds)
    auth = aiohttp.BasicAuth(USER, PASSWORD)
    async with (
        instance(run) as (base_url, answers),
        aiohttp.ClientSession(
            base_url, auth=auth, connector=aiohttp.TCPConnector(limit=60)
        ) as http,
    ):
        stop = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < stop:
                async with http.post(
                    "/api/now/table/incident", json=VARIABLES["payload"]
                ) as answer:
                    await answer.read()

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(60)))
    served = [
        at for at, status in zip(answers.times, answers.statuses, strict=True) if status < 300
    ]
    return sum(started + 2 <= at < stop for at in served) / (seconds - 2)


async def benchmark(options: Any) -> list[Run]:
    variants = options.variants.split(",")
    if options.before:
        variants.append("before")
    plan = [
        Run(
            f"{variant}, {replicas} replica{'s' * (replicas > 1)}",
            variant,
            replicas,
            options.duration,
        )
        for replicas in (1, 3)
        for variant in variants
    ]
    plan += [
        Run(
            f"adaptive, rule {options.rule_limit}/{options.rule_window} s, {replicas} "
            f"replica{'s' * (replicas > 1)}",
            "adaptive",
            replicas,
            options.rule_window * 2 + 2,
            rule_limit=options.rule_limit,
            rule_window=options.rule_window,
        )
        for replicas in (1, 3)
    ]
    cost = await turn_cost()
    print(f"flow control per request, nothing limiting: {cost:.1f} us CPU")
    measured = await calibrate()
    print(
        f"calibration: the instance serves {measured:.0f} requests/s here (nominal {CAPACITY:.0f})"
    )
    runs = []
    for run in plan:
        run.measured_capacity = measured
        await measure(run, options)
        runs.append(run)
        print(markdown([run]).splitlines()[-1], flush=True)
    return runs


def run_loop(main: Any) -> Any:
    """uvloop where installed, as the worker runs: the emulators' own overhead stays small."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="adaptive,fixed,fixed-60")
    parser.add_argument("--before", default="", help="also run the worker of this checkout")
    parser.add_argument("--duration", type=float, default=30, help="seconds per capacity run")
    parser.add_argument("--settle", type=float, default=10, help="seconds left out of the figures")
    parser.add_argument("--rule-limit", type=int, default=3000)
    parser.add_argument("--rule-window", type=int, default=20)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        run_loop(serve_instance(options.rule_limit, options.rule_window, options.serve))
        return
    started = time.monotonic()
    runs = run_loop(benchmark(options))
    elapsed = time.monotonic() - started
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    table = markdown(runs)
    print(f"\n{table}\n\n{len(runs)} runs in {elapsed:.0f} s on {machine}")
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow_control.md").write_text(
        f"# Flow control benchmark\n\n{machine}; {elapsed:.0f} s; instance: {SLOTS} slots, queue "
        f"{QUEUE}, {SERVICE_TIME * 1000:.0f} ms per request ({CAPACITY:.0f} requests/s); "
        f"{IN_FLIGHT} jobs in flight per replica; figures after the first {options.settle:g} s.\n\n"
        f"{table}\n"
    )
    (out / "flow_control.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "elapsed_s": elapsed,
                "runs": [reported(r) for r in runs],
            },
            indent=1,
        )
    )
    plot(runs, out / "flow_control.png")
    print(f"written: {out / 'flow_control'}.md, .json, .png")


if __name__ == "__main__":
    main()
