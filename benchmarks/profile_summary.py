"""Summarise a py-spy profile in collapsed-stack form (`py-spy record --format raw`).

    .venv/bin/python benchmarks/profile_summary.py PROFILE.txt [--top 15]

Prints the share of samples spent in (inclusive) each of a few areas of interest, and the top
frames by self time and by inclusive time. `throughput.py --profile-dir DIR` writes one profile
per cell.
"""

import argparse
import collections
from pathlib import Path

# Areas whose inclusive share is reported: a frame matches when its file path contains the key.
AREAS = {
    "httpcore connection pool": "httpcore/_async/connection_pool.py",
    "httpcore (all)": "httpcore/",
    "httpx (all)": "httpx/",
    "aiohttp (all)": "aiohttp/",
    "grpc (all)": "grpc/",
    "pyzeebe (all)": "pyzeebe/",
    "structlog / logging": "structlog/",
    "pydantic": "pydantic",
    "json": "json/",
    "stamina": "stamina/",
    "servicenow_worker (all)": "servicenow_worker/",
    "asyncio event loop": "asyncio/base_events.py",
    "selector / epoll": "selectors.py",
}


# Packages for the self-time breakdown: a sample counts for the package of its innermost frame.
PACKAGES = {
    "httpcore": "httpcore/",
    "anyio": "anyio/",
    "httpx": "httpx/",
    "aiohttp / yarl / multidict": ("aiohttp/", "yarl/", "multidict/"),
    "grpc": "grpc/",
    "pyzeebe": "pyzeebe/",
    "structlog": "structlog/",
    "stamina / tenacity": ("stamina/", "tenacity/"),
    "pydantic": "pydantic",
    "prometheus_client": "prometheus_client/",
    "servicenow_worker": "servicenow_worker/",
    "json": "json/",
    "event loop (asyncio, uvloop, selectors)": ("asyncio/", "uvloop", "selectors.py"),
    "threads (gRPC poller)": "threading.py",
}


def package_of(frame: str) -> str:
    for name, keys in PACKAGES.items():
        if any(key in frame for key in ((keys,) if isinstance(keys, str) else keys)):
            return name
    return "other (stdlib, urllib, ipaddress, ...)"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summary(path: Path, top: int) -> str:
    stacks = load(path)
    total = sum(count for _, count in stacks) or 1
    self_time: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        self_time[frames[-1]] += count
        packages[package_of(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
        for name, key in AREAS.items():
            if any(key in frame for frame in frames):
                areas[name] += count
    lines = [f"{path.name}: {total} samples"]
    lines.append("areas (inclusive):")
    lines += [f"  {areas[name] / total:6.1%}  {name}" for name in AREAS if areas[name]]
    lines.append("self time by package (innermost frame):")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in packages.most_common()]
    lines.append(f"top {top} frames by self time:")
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in self_time.most_common(top)]
    lines.append(f"top {top} frames by inclusive time (below the event loop):")
    shown = 0
    for frame, n in inclusive.most_common():
        if any(skip in frame for skip in ("asyncio/", "<module>", "main (", "run (")):
            continue
        lines.append(f"  {n / total:6.1%}  {frame}")
        shown += 1
        if shown == top:
            break
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for path in args.profiles:
        print(summary(path, args.top))
        print()


if __name__ == "__main__":
    main()
