"""Runs the scheduler's API on uvicorn, with the periodic tick, inside any event loop."""

import asyncio
import contextlib
import socket
from pathlib import Path

import uvicorn

from inferline.scheduler.api import create_scheduler_app
from inferline.scheduler.core import Scheduler
from inferline.scheduler.store import SchedulerStore

DB_FILE = "scheduler.db"


class _QuietServer(uvicorn.Server):
    def capture_signals(self):
        return contextlib.nullcontext()


class SchedulerService:
    def __init__(
        self,
        data_dir: Path,
        host: str = "0.0.0.0",
        port: int = 9004,
        replica_grace: float = 15.0,
        inspector=None,
    ):
        # Answers `pipeline inspect` where a bus is at hand (inside `inferline up`).
        self.inspector = inspector
        self.store = SchedulerStore(Path(data_dir) / DB_FILE)
        self.scheduler = Scheduler(self.store, replica_grace=replica_grace)
        self.host, self.port = host, port
        self._server: _QuietServer | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = _QuietServer(
            uvicorn.Config(
                create_scheduler_app(self.scheduler, self.inspector),
                lifespan="off",
                access_log=False,
                log_level="warning",
                ws_ping_interval=2.0,
                ws_ping_timeout=5.0,
                timeout_graceful_shutdown=2,
            )
        )
        self._tasks = [
            asyncio.create_task(self._server.serve(sockets=[sock])),
            asyncio.create_task(self._tick()),
        ]
        while not self._server.started and not self._tasks[0].done():
            await asyncio.sleep(0.01)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.scheduler.tick()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._tasks[1].cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.close()
