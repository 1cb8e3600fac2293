"""The worker as a child process (the installed console script, or `docker run` of the image),
its JSON log parsed live."""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

CONSOLE_SCRIPT = Path(sys.executable).with_name("servicenow-worker")


class WorkerProcess:
    """Runs the worker as an operator would, and awaits log events instead of sleeping."""

    def __init__(self, *command: str, **settings: str) -> None:
        self.command = command or (str(CONSOLE_SCRIPT),)
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/"),
            # A free health port unless the test names one: 9464 may be taken by another run.
            "HEALTH_PORT": "0",
            "HEALTH_HOST": "127.0.0.1",
            **settings,
        }
        self.events: list[dict[str, Any]] = []
        self.raw_stdout: list[str] = []
        self.not_json: list[str] = []
        self._changed = asyncio.Condition()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> "WorkerProcess":
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            text = line.decode()
            self.raw_stdout.append(text)
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                # Kept for the test to assert on: stdout must be JSON lines only.
                self.not_json.append(text)
                continue
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait_for_event(
        self, event: str, timeout: float = 20, **fields: Any
    ) -> dict[str, Any]:
        """The first log event named `event` whose fields include `fields`."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._find(event, fields) is not None)
        return self.events[self.position(event, **fields)]

    def position(self, event: str, **fields: Any) -> int:
        """Where the first log event named `event` with `fields` stands in the log so far."""
        found = self._find(event, fields)
        assert found is not None, f"no {event} {fields} in the log"
        return found

    def _find(self, event: str, fields: dict[str, Any]) -> int | None:
        for index, entry in enumerate(self.events):
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                return index
        return None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def send(self, signal_number: signal.Signals = signal.SIGTERM) -> None:
        assert self._process is not None
        self._process.send_signal(signal_number)

    async def exit_code(self, timeout: float = 30) -> int:
        assert self._process is not None and self._reader is not None
        async with asyncio.timeout(timeout):
            code = await self._process.wait()
            await self._reader
        return code

    async def stderr(self) -> str:
        assert self._process is not None and self._process.stderr is not None
        return (await self._process.stderr.read()).decode()

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            await self._reader
