"""Two variants of our worker, A/B interleaved in one run (issue #18): the first is the reference.

    # our HTTP transport against the httpx-aiohttp package (the default)
    nice -n 5 .venv/bin/python benchmarks/ab.py --rounds 5
    # traces off against traces on, exported over OTLP to a receiver in this process
    nice -n 5 .venv/bin/python benchmarks/ab.py --workers ours,ours+traces --name tracing

Workers are `throughput.py`'s kinds: `ours`, `ours+traces`, `transport:ours` and
`transport:httpx-aiohttp` (the worker through `transport_worker.py` with either transport).
Everything else (the emulators, the cell, the figures) is `throughput.py`'s. Each round runs
every cell once per variant, alternating which goes first, so load from other users of the
machine falls on both alike; the report gives each variant's median over the rounds and the ratio
to the first. Results: `benchmarks/results/NAME.md` and `.json`; docs/performance.md has them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
from pathlib import Path

from throughput import RESULTS, Cell, ServiceNow, run_cell, source_version


async def benchmark(options: argparse.Namespace) -> list[Cell]:
    servicenow = ServiceNow(separate_process=False)
    cells: list[Cell] = []
    try:
        for round_number in range(options.rounds):
            order = options.variants if round_number % 2 == 0 else options.variants[::-1]
            for latency in (int(x) for x in options.latencies.split(",")):
                for in_flight in (int(x) for x in options.in_flight.split(",")):
                    for worker in order:
                        cell = await run_cell(
                            Cell(worker, latency, in_flight, options.operation, options.jobs),
                            servicenow,
                            options,
                        )
                        cells.append(cell)
                        print(
                            f"round {round_number + 1} {worker:>24} {latency:>3} ms {in_flight:>4} "
                            f"{cell.jobs_per_s:7.0f} jobs/s  CPU {cell.cpu_s_per_1000:5.2f} s/1000  "
                            f"others {cell.other_cpu:4.0%} CPU"
                            + (f"  ERROR {cell.error}" if cell.error else ""),
                            flush=True,
                        )
    finally:
        await servicenow.close()
    return cells


def summary(cells: list[Cell], variants: tuple[str, ...]) -> str:
    lines = [
        f"| latency | in flight | worker | jobs/s (median) | x {variants[0]} "
        f"| CPU s/1000 jobs (median) | x {variants[0]} | rounds: jobs/s | rounds: CPU s/1000 "
        "| others' CPU (median) |",
        "|" + "---|" * 10,
    ]
    keys = sorted({(c.latency_ms, c.in_flight) for c in cells})
    for latency, in_flight in keys:
        medians: dict[str, tuple[float, float]] = {}
        for worker in variants:
            runs = [
                c
                for c in cells
                if (c.latency_ms, c.in_flight, c.worker) == (latency, in_flight, worker)
                and not c.error
            ]
            if not runs:
                continue
            rate = statistics.median(c.jobs_per_s for c in runs)
            cpu = statistics.median(c.cpu_s_per_1000 for c in runs)
            medians[worker] = (rate, cpu)
            base_rate, base_cpu = medians.get(variants[0], (rate, cpu))
            lines.append(
                f"| {latency} ms | {in_flight} | {worker} | {rate:.0f} "
                f"| {rate / base_rate:.3f} | {cpu:.3f} | {cpu / base_cpu:.3f} "
                f"| {', '.join(f'{c.jobs_per_s:.0f}' for c in runs)} "
                f"| {', '.join(f'{c.cpu_s_per_1000:.2f}' for c in runs)} "
                f"| {statistics.median(c.other_cpu for c in runs):.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="transport:ours,transport:httpx-aiohttp")
    parser.add_argument("--name", default="transport", help="file name of the results")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latencies", default="0")
    parser.add_argument("--in-flight", default="32,128")
    parser.add_argument("--operation", default="read", choices=["read", "create"])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--output", default=str(RESULTS))
    options = parser.parse_args()
    # run_cell's options: our worker's log level and settings, no profiling.
    options.log_level, options.ours_env, options.profile_dir = "INFO", [], None
    options.profile_idle = options.profile_native = False
    options.cell_timeout = 180
    options.variants = tuple(options.workers.split(","))
    cells = asyncio.run(benchmark(options))
    table = summary(cells, options.variants)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"\n{table}\n\n{machine}, worker at {source_version('ours')}")
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{options.name}.md").write_text(
        f"# A/B: {' against '.join(options.variants)}\n\n{machine}; worker at "
        f"{source_version('ours')}; {options.rounds} rounds, interleaved; {options.operation}, "
        f"{options.jobs} jobs per cell.\n\n{table}\n"
    )
    (out / f"{options.name}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "source": source_version("ours"),
                "rounds": options.rounds,
                "cells": [dataclasses.asdict(c) for c in cells],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
