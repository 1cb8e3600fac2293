"""Throughput and latency of servicenow-worker against a bare pyzeebe baseline (issue #6).

    .venv/bin/python benchmarks/throughput.py            # the full matrix, about 7 minutes
    .venv/bin/python benchmarks/throughput.py --quick    # a small matrix, about 1.5 minutes

matplotlib draws the plot; py-spy (`--profile-dir`) records profiles. Method and results:
docs/performance.md.

Each cell enqueues N jobs at once on the Zeebe gateway emulator and lets one worker process work
them against the ServiceNow Table API emulator, which answers after `latency` ms. The worker is a
separate OS process (ours: the installed `servicenow-worker` console script, configured by
environment; the baseline: `baseline_worker.py`), so its CPU time and peak RSS are its own; the
emulators run in this process (or the ServiceNow emulator in a third one, `--servicenow-process`).

Figures per cell, all from the gateway's own timestamps (`time.monotonic()`):

* jobs/s: N / (last completion - first activation);
* job latency: completion - activation, p50 and p99;
* pickup delay: activation - the moment the job could first have been taken, that is the later of
  its creation and the moment the worker had a free slot for it (the completion that freed the
  slot: the k-th activation of a worker with C slots needs the (k-C)-th completion). This is the
  time a free slot and a waiting job spend apart, p50 and p99. The raw queue wait (activation -
  creation) is reported too; with N jobs enqueued at once it is dominated by queueing;
* CPU seconds per 1000 jobs: the worker process's user + system time over the measured jobs;
* peak RSS: the worker process's VmHWM;
* efficiency: jobs/s / (jobs in flight / latency), for latencies above 0;
* jobs per ActivateJobs call, to show batching.

Results are printed as a table and written to `benchmarks/results/` as markdown and JSON, with a
PNG plot of jobs/s against jobs in flight at each latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from servicenow_emulators.table_api import ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator, free_port

JOB_TYPE = "servicenow:1"
USER, PASSWORD = "bench", "bench-pw"
AUTH = {"type": "basic", "username": USER, "password": PASSWORD}
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONSOLE_SCRIPT = Path(sys.executable).with_name("servicenow-worker")
BASELINE_SCRIPT = HERE / "baseline_worker.py"
TRANSPORT_SCRIPT = HERE / "transport_worker.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WORKERS = ("ours", "baseline")


# ------------------------------------------------------------------------------ process figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# ------------------------------------------------------------------------------ the cell


@dataclasses.dataclass
class Cell:
    worker: str
    latency_ms: int
    in_flight: int
    operation: str
    jobs: int
    jobs_per_s: float = float("nan")
    latency_p50_ms: float = float("nan")
    latency_p99_ms: float = float("nan")
    pickup_p50_ms: float = float("nan")
    pickup_p99_ms: float = float("nan")
    queue_wait_p50_ms: float = float("nan")
    cpu_s_per_1000: float = float("nan")
    peak_rss_mb: float = float("nan")
    efficiency: float | None = None
    jobs_per_activation: float = float("nan")
    emulator_cpu_share: float = float("nan")
    # CPU used by everything else on the machine meanwhile (other users' work), in CPUs.
    other_cpu: float = float("nan")
    completed: int = 0
    error: str = ""

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.latency_ms, self.in_flight, self.operation)


def job_variables(operation: str, sys_id: str) -> dict[str, Any]:
    if operation == "create":
        return {
            "authentication": AUTH,
            "operation": "create",
            "table": "incident",
            "payload": {"short_description": "benchmark", "urgency": "2", "impact": "2"},
            "fields": "sys_id,number",
        }
    return {
        "authentication": AUTH,
        "operation": "read",
        "table": "incident",
        "sysId": sys_id,
        "fields": "number,short_description,state",
    }


HEADERS = {"resultVariable": "response"}


async def session_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """The session cookies a real instance sets on every basic-auth answer (reference R1)."""
    session = os.urandom(16).hex().upper()
    for cookie in (
        f"JSESSIONID={session}; Path=/; HttpOnly",
        f"glide_user_route=glide.{os.urandom(16).hex()}; Max-Age=2147483647; Path=/; HttpOnly",
        f"glide_session_store={session}; Max-Age=1800; Path=/; HttpOnly",
        "BIGipServerpool_bench=2525316106.39486.0000; Path=/; HttpOnly",
    ):
        response.headers.add("Set-Cookie", cookie)


class ServiceNow:
    """The ServiceNow emulator, here or in its own process, at a given latency."""

    def __init__(self, separate_process: bool) -> None:
        self.separate_process = separate_process
        self.base_url = ""
        self._emulator: ServiceNowEmulator | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._latency: float | None = None
        self.sys_id = ""

    async def at_latency(self, latency: float) -> None:
        if latency == self._latency:
            return
        await self.close()
        self._latency = latency
        if self.separate_process:
            port = free_port()
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "servicenow_emulators.table_api",
                "--port",
                str(port),
                "--latency",
                str(latency),
                "--user",
                f"{USER}:{PASSWORD}",
                stdout=asyncio.subprocess.PIPE,
            )
            assert self._process.stdout is not None
            await self._process.stdout.readline()
            self.base_url = f"http://127.0.0.1:{port}"
        else:
            self._emulator = ServiceNowEmulator(users={USER: PASSWORD}, latency=latency)
            self._emulator.app.on_response_prepare.append(session_cookies)
            self.base_url = await self._emulator.start()
        async with httpx.AsyncClient(auth=(USER, PASSWORD)) as client:
            answer = await client.post(
                f"{self.base_url}/api/now/table/incident",
                json={"short_description": "read me", "state": "2"},
            )
            self.sys_id = answer.json()["result"]["sys_id"]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self._process.pid) if self._process is not None else 0.0

    async def close(self) -> None:
        if self._emulator is not None:
            await self._emulator.stop()
            self._emulator = None
        if self._process is not None:
            self._process.terminate()
            await self._process.wait()
            self._process = None
        self._latency = None


_trace_receiver: list[str] = []


async def trace_receiver() -> str:
    """The URL of an OTLP/HTTP receiver in this process that accepts spans and drops them."""
    if not _trace_receiver:

        async def accept(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(content_type="application/x-protobuf", body=b"")

        app = web.Application()
        app.router.add_post("/v1/traces", accept)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        _trace_receiver.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    return _trace_receiver[0]


@contextlib.asynccontextmanager
async def worker_process(
    kind: str, gateway: ZeebeGatewayEmulator, servicenow_url: str, in_flight: int, options: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
    if kind.startswith(("ours", "transport:")):
        # "ours:DIR" runs the worker from another checkout (e.g. a git worktree) for before/after;
        # "transport:NAME" runs it with another HTTP transport (transport_worker.py);
        # "ours+traces" with traces on, exported over OTLP/HTTP to a receiver in this process.
        prefix, _, source = kind.partition(":")
        command = [str(CONSOLE_SCRIPT)]
        if prefix == "transport":
            command = [sys.executable, str(TRANSPORT_SCRIPT), source]
        elif source:
            command = [sys.executable, "-m", "servicenow_worker"]
            env["PYTHONPATH"] = str(Path(source) / "src")
        if prefix == "ours+traces":
            env |= {
                "OTEL_EXPORTER_OTLP_ENDPOINT": await trace_receiver(),
                "OTEL_SERVICE_NAME": "servicenow-worker-benchmark",
            }
        env |= {
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": "0",
            "ZEEBE_ADDRESS": gateway.address,
            "SERVICENOW_URL_TEMPLATE": servicenow_url,
            "WORKER_MAX_JOBS_IN_FLIGHT": str(in_flight),
            "LOG_LEVEL": options.log_level,
            **dict(item.split("=", 1) for item in options.ours_env),
        }
    else:
        command = [sys.executable, str(BASELINE_SCRIPT)]
        env |= {
            "ZEEBE_ADDRESS": gateway.address,
            "SERVICENOW_URL": servicenow_url,
            "MAX_JOBS_IN_FLIGHT": str(in_flight),
            "POLL_RETRY_DELAY": str(options.baseline_poll_retry_delay),
        }
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        try:
            await gateway.wait_for_long_polls(JOB_TYPE, timeout=30)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
            stderr.seek(0)
            text = stderr.read().decode(errors="replace").strip()
            if process.returncode not in (0, -signal.SIGTERM) and text:
                print(f"  [{kind} worker exit {process.returncode}] {text[-2000:]}", flush=True)


@contextlib.contextmanager
def profiled(pid: int, path: Path | None, idle: bool = False, native: bool = False) -> Any:
    """py-spy over the measured jobs, as collapsed stacks (`--format raw`) at `path`."""
    if path is None:
        yield
        return
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            *(["--native"] if native else ["--nonblocking"]),
            *(["--idle", "--threads"] if idle else []),
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


async def run_cell(cell: Cell, servicenow: ServiceNow, options: Any) -> Cell:
    await servicenow.at_latency(cell.latency_ms / 1000)
    variables = job_variables(cell.operation, servicenow.sys_id)
    async with (
        ZeebeGatewayEmulator() as gateway,
        worker_process(
            cell.worker, gateway, servicenow.base_url, cell.in_flight, options
        ) as worker,
    ):
        # Warm up: connections, imports, caches; then measure.
        warm = gateway.create_jobs(
            JOB_TYPE, min(cell.in_flight, 200), variables, HEADERS, retries=1
        )
        await gateway.wait_for_all(warm, timeout=120)
        await gateway.wait_for_long_polls(JOB_TYPE, timeout=30)
        calls_before = len(gateway.activate_requests)
        profile = (
            options.profile_dir
            / f"{cell.worker.replace('/', '_')}-{cell.latency_ms}ms-{cell.in_flight}-{cell.operation}.txt"
            if options.profile_dir
            else None
        )
        with profiled(worker.pid, profile, options.profile_idle, options.profile_native):
            machine_before = machine_busy_seconds()
            cpu_before = cpu_seconds(worker.pid)
            own_before = own_cpu_seconds() + servicenow.cpu_seconds()
            wall_before = time.monotonic()
            keys = gateway.create_jobs(JOB_TYPE, cell.jobs, variables, HEADERS, retries=1)
            try:
                outcomes = await gateway.wait_for_all(keys, timeout=options.cell_timeout)
            except TimeoutError as error:
                cell.error = str(error)[:200]
                outcomes = {}
            wall = time.monotonic() - wall_before
            cpu = cpu_seconds(worker.pid) - cpu_before
            own = own_cpu_seconds() + servicenow.cpu_seconds() - own_before
            machine = machine_busy_seconds() - machine_before
        cell.peak_rss_mb = peak_rss_mb(worker.pid)
        calls = len(gateway.activate_requests) - calls_before
    cell.completed = sum(1 for outcome in outcomes.values() if outcome.kind == "complete")
    if cell.completed != cell.jobs and not cell.error:
        kinds = {outcome.kind for outcome in outcomes.values()}
        cell.error = f"only {cell.completed} of {cell.jobs} jobs completed ({kinds})"
    if not outcomes:
        return cell
    snapshots = [gateway.job(key) for key in keys]
    activated = [s.activated_at[-1] for s in snapshots]
    finished = sorted(s.finished_at or float("nan") for s in snapshots)
    cell.jobs_per_s = cell.jobs / (finished[-1] - min(activated))
    cell.latency_p50_ms, cell.latency_p99_ms = (
        percentile([(s.finished_at or 0) - s.activated_at[-1] for s in snapshots], q) * 1000
        for q in (50, 99)
    )
    # Pickup delay: from the moment a job and a free slot were both there.
    by_activation = sorted(snapshots, key=lambda s: s.activated_at[0])
    pickups = []
    for k, snapshot in enumerate(by_activation):
        ready = snapshot.created_at
        if k >= cell.in_flight:
            ready = max(ready, finished[k - cell.in_flight])
        pickups.append(max(0.0, snapshot.activated_at[0] - ready))
    cell.pickup_p50_ms = percentile(pickups, 50) * 1000
    cell.pickup_p99_ms = percentile(pickups, 99) * 1000
    cell.queue_wait_p50_ms = (
        percentile([s.activated_at[0] - s.created_at for s in snapshots], 50) * 1000
    )
    cell.cpu_s_per_1000 = cpu / cell.jobs * 1000
    if cell.latency_ms:
        cell.efficiency = cell.jobs_per_s / (cell.in_flight / (cell.latency_ms / 1000))
    cell.jobs_per_activation = cell.jobs / max(calls, 1)
    cell.emulator_cpu_share = own / wall
    cell.other_cpu = max(0.0, (machine - own - cpu) / wall)
    return cell


# ------------------------------------------------------------------------------ the report


def jobs_for(in_flight: int, latency_ms: int, quick: bool) -> int:
    """Enough jobs for many rounds of the pool, few enough to keep the matrix near 10 minutes."""
    if quick:
        return 400
    return 600 if in_flight <= 128 else 2 * in_flight


def source_version(worker: str) -> str:
    """The commit a worker ran from (with '+' when its checkout had changes)."""
    _, _, source = worker.partition(":")
    folder = Path(source) if source else HERE.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+" if dirty else "")


def ratio(ours: float, base: float) -> str:
    if not (ours == ours and base == base) or base == 0:
        return "—"
    return f"{ours / base:.2f}x"


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:.{digits}f}"


def markdown_table(cells: list[Cell]) -> str:
    ours = {c.key: c for c in cells if c.worker.partition(":")[0] == "ours"}
    base = {c.key: c for c in cells if c.worker == "baseline"}
    header = (
        "| latency | in flight | op | jobs | jobs/s ours (base) | x base | efficiency ours (base) "
        "| job latency p50/p99 ms ours (base) | pickup p50/p99 ms ours (base) "
        "| CPU s/1000 jobs ours (base) | x base | peak RSS MB ours (base) | jobs/activation ours (base) "
        "| others' CPU ours (base) |"
    )
    lines = [header, "|" + "---|" * 14]
    for key in sorted(set(ours) | set(base)):
        o, b = ours.get(key), base.get(key)
        if o is None or b is None:
            continue

        def pair(attr: str, digits: int = 1, o: Cell = o, b: Cell = b) -> str:
            return f"{fmt(getattr(o, attr), digits)} ({fmt(getattr(b, attr), digits)})"

        lines.append(
            f"| {key[0]} ms | {key[1]} | {key[2]} | {o.jobs} | {pair('jobs_per_s', 0)} "
            f"| {ratio(o.jobs_per_s, b.jobs_per_s)} | {pair('efficiency', 2)} "
            f"| {fmt(o.latency_p50_ms)}/{fmt(o.latency_p99_ms)} ({fmt(b.latency_p50_ms)}/{fmt(b.latency_p99_ms)}) "
            f"| {fmt(o.pickup_p50_ms)}/{fmt(o.pickup_p99_ms)} ({fmt(b.pickup_p50_ms)}/{fmt(b.pickup_p99_ms)}) "
            f"| {pair('cpu_s_per_1000', 2)} | {ratio(o.cpu_s_per_1000, b.cpu_s_per_1000)} "
            f"| {pair('peak_rss_mb', 0)} | {pair('jobs_per_activation', 1)} "
            f"| {pair('other_cpu', 2)} |"
        )
    errors = [f"- {c.worker} {c.key}: {c.error}" for c in cells if c.error]
    return "\n".join(lines + (["", *errors] if errors else []))


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    operations = sorted({c.operation for c in cells})
    figure, axes = plt.subplots(
        1, len(operations), figsize=(6 * len(operations), 4.5), squeeze=False
    )
    colours = {0: "tab:blue", 50: "tab:orange", 200: "tab:green"}
    for axis, operation in zip(axes[0], operations, strict=True):
        for latency in sorted({c.latency_ms for c in cells}):
            colour = colours.get(latency)
            for worker, style in (("ours", "-o"), ("baseline", "--s")):
                points = sorted(
                    (c.in_flight, c.jobs_per_s)
                    for c in cells
                    if c.worker.partition(":")[0] == worker
                    and c.operation == operation
                    and c.latency_ms == latency
                )
                if points:
                    axis.plot(
                        [p[0] for p in points],
                        [p[1] for p in points],
                        style,
                        color=colour,
                        label=f"{worker}, {latency} ms",
                    )
            if latency:
                ideal = sorted({c.in_flight for c in cells})
                axis.plot(
                    ideal, [n / (latency / 1000) for n in ideal], ":", color=colour, alpha=0.4
                )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(sorted({c.in_flight for c in cells}))
        axis.set_xticklabels([str(n) for n in sorted({c.in_flight for c in cells})])
        axis.set_xlabel("jobs in flight")
        axis.set_ylabel("jobs/s")
        axis.set_title(f"{operation}: jobs/s (dotted: in flight ÷ latency)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


async def idle_pickup(worker: str, options: Any, servicenow: ServiceNow) -> float:
    """Pickup delay of an idle worker: jobs created one at a time while its long-poll waits."""
    await servicenow.at_latency(0)
    variables = job_variables("read", servicenow.sys_id)
    delays = []
    async with (
        ZeebeGatewayEmulator() as gateway,
        worker_process(worker, gateway, servicenow.base_url, 32, options),
    ):
        for _ in range(40):
            await gateway.wait_for_long_polls(JOB_TYPE, timeout=30)
            await asyncio.sleep(0.005)
            [key] = gateway.create_jobs(JOB_TYPE, 1, variables, HEADERS, retries=1)
            await gateway.wait_for_all([key], timeout=30)
            job = gateway.job(key)
            delays.append(job.activated_at[0] - job.created_at)
    return statistics.median(delays) * 1000


async def benchmark(options: Any) -> tuple[list[Cell], dict[str, float], float]:
    latencies = [int(x) for x in options.latencies.split(",")]
    in_flights = [int(x) for x in options.in_flight.split(",")]
    operations = options.operations.split(",")
    workers = options.workers.split(",")
    servicenow = ServiceNow(options.servicenow_process)
    cells: list[Cell] = []
    started = time.monotonic()
    try:
        for latency in latencies:
            for in_flight in in_flights:
                for operation in operations:
                    for worker in workers:
                        jobs = options.jobs or jobs_for(in_flight, latency, options.quick)
                        cell = await run_cell(
                            Cell(worker, latency, in_flight, operation, jobs), servicenow, options
                        )
                        cells.append(cell)
                        print(
                            f"{worker:>8} {latency:>3} ms {in_flight:>4} {operation:<6} "
                            f"{cell.jobs_per_s:7.0f} jobs/s  p50 {cell.latency_p50_ms:6.1f} ms  "
                            f"pickup p50 {cell.pickup_p50_ms:5.1f} ms  "
                            f"CPU {cell.cpu_s_per_1000:5.2f} s/1000  RSS {cell.peak_rss_mb:4.0f} MB  "
                            f"{cell.jobs_per_activation:5.1f} jobs/activation  "
                            f"emulators {cell.emulator_cpu_share:4.0%} CPU  "
                            f"others {cell.other_cpu:4.0%} CPU"
                            + (f"  ERROR {cell.error}" if cell.error else ""),
                            flush=True,
                        )
        idle = (
            {w: await idle_pickup(w, options, servicenow) for w in workers}
            if not options.no_idle
            else {}
        )
    finally:
        await servicenow.close()
    return cells, idle, time.monotonic() - started


def report(cells: list[Cell], idle: dict[str, float], elapsed: float, options: Any) -> int:
    table = markdown_table(cells)
    idle_line = (
        "Idle pickup delay (one job at a time, worker waiting in its long-poll), p50: "
        + ", ".join(f"{w} {ms:.1f} ms" for w, ms in idle.items())
        if idle
        else ""
    )
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    sources = {w: source_version(w) for w in options.workers.split(",")}
    print()
    print(table)
    print(idle_line)
    print(f"\n{len(cells)} runs in {elapsed:.0f} s on {machine}")
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    name = options.name or ("quick" if options.quick else "matrix")
    (out / f"{name}.md").write_text(
        f"# Throughput benchmark ({name})\n\n{machine}; ServiceNow emulator "
        f"{'in its own process' if options.servicenow_process else 'in the benchmark process'}; "
        f"{elapsed:.0f} s; workers: "
        + ", ".join(f"{w} at {v}" for w, v in sources.items())
        + f".\n\n{table}\n\n{idle_line}\n"
    )
    (out / f"{name}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "sources": sources,
                "elapsed_s": elapsed,
                "servicenow_process": options.servicenow_process,
                "baseline_poll_retry_delay": options.baseline_poll_retry_delay,
                "idle_pickup_p50_ms": idle,
                "cells": [dataclasses.asdict(c) for c in cells],
            },
            indent=1,
        )
    )
    plot(cells, out / f"{name}.png")
    print(f"written: {out / name}.md, .json, .png")
    return 1 if any(c.error for c in cells) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small matrix, about a minute")
    parser.add_argument("--latencies", default=None, help="ServiceNow latencies in ms (0,50,200)")
    parser.add_argument("--in-flight", default=None, help="jobs in flight (32,128,512)")
    parser.add_argument("--operations", default="create,read")
    parser.add_argument("--workers", default="ours,baseline")
    parser.add_argument("--jobs", type=int, default=0, help="jobs per cell (default: by cell)")
    parser.add_argument(
        "--servicenow-process", action="store_true", help="ServiceNow emulator in its own process"
    )
    parser.add_argument("--baseline-poll-retry-delay", type=float, default=0.01)
    parser.add_argument("--log-level", default="INFO", help="our worker's LOG_LEVEL")
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra settings for our worker",
    )
    parser.add_argument(
        "--profile-dir", type=Path, default=None, help="py-spy each cell into this folder"
    )
    parser.add_argument(
        "--profile-idle", action="store_true", help="profiles include idle samples, per thread"
    )
    parser.add_argument(
        "--profile-native", action="store_true", help="profiles include native (C) frames"
    )
    parser.add_argument("--cell-timeout", type=float, default=180)
    parser.add_argument("--no-idle", action="store_true", help="skip the idle pickup probe")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--name", default="", help="file name of the results (default: matrix)")
    options = parser.parse_args()
    if options.latencies is None:
        options.latencies = "0,50" if options.quick else "0,50,200"
    if options.in_flight is None:
        options.in_flight = "32,128" if options.quick else "32,128,512"
    if options.profile_dir:
        options.profile_dir.mkdir(parents=True, exist_ok=True)
    cells, idle, elapsed = asyncio.run(benchmark(options))
    sys.exit(report(cells, idle, elapsed, options))


if __name__ == "__main__":
    main()
