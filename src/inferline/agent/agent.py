"""The agent's loop: register with the scheduler, hold what it places here, report back.

One WebSocket to the scheduler carries everything: our hello (identity, capabilities, memory,
models held) and state reports out; the desired model list in. When the scheduler goes away the
agent keeps serving what it holds and reconnects with backoff; on reconnect its hello tells the
scheduler what is loaded, so nothing is reloaded needlessly.
"""

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

from inferline.agent.settings import settings_from_spec
from inferline.protocol.errors import InferlineError
from inferline.server.dataplane import DataPlane
from inferline.storage.credentials import storage_secret

log = logging.getLogger(__name__)


@dataclass
class AgentIdentity:
    server: str
    replica: int
    http: str  # "host:port" others reach our REST on
    grpc: str
    capabilities: list[str] = field(default_factory=list)
    memory: int = 0
    overcommit_percentage: int = 10


class Agent:
    def __init__(
        self,
        dataplane: DataPlane,
        scheduler: str,
        identity: AgentIdentity,
        router: str | None = None,
    ):
        self.dataplane = dataplane
        # The router's REST "host:port", for explainers that call the model they explain.
        self.router = router
        self.url = f"ws://{scheduler}/v1/agents"
        self.identity = identity
        self.desired: dict[str, dict[str, Any]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        # Models whose load was tried for the current desired entry; a failure is not retried
        # until the scheduler asks again.
        self._attempted: set[str] = set()
        self._changed = asyncio.Event()
        self.connected = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with websockets.connect(self.url, max_size=None, open_timeout=5) as ws:
                    await ws.send(orjson.dumps({"type": "hello", **self._hello()}).decode())
                    backoff = 0.2
                    await self._session(ws)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                log.info("scheduler at %s unreachable (%s); retrying", self.url, exc)
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 3.0)

    async def _session(self, ws) -> None:
        reporter = asyncio.create_task(self._report(ws))
        try:
            async for raw in ws:
                message = orjson.loads(raw)
                if message.get("type") == "error":
                    log.error("scheduler refused this agent: %s", message.get("error"))
                    await asyncio.sleep(2)
                    return
                if message.get("type") == "desired":
                    self.connected.set()
                    self._apply({m["name"]: m for m in message["models"]})
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter

    async def _report(self, ws) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await ws.send(orjson.dumps({"type": "state", "models": self._states()}).decode())

    def _hello(self) -> dict[str, Any]:
        i = self.identity
        return {
            "server": i.server,
            "replica": i.replica,
            "http": i.http,
            "grpc": i.grpc,
            "capabilities": i.capabilities,
            "memory": i.memory,
            "overcommitPercentage": i.overcommit_percentage,
            "pid": os.getpid(),
            "models": self._states(),
        }

    def _states(self) -> list[dict[str, str]]:
        return [
            {"name": row.name, "state": row.state, "reason": row.reason}
            for row in self.dataplane.loaded_models()
        ]

    def _apply(self, desired: dict[str, dict[str, Any]]) -> None:
        self._attempted &= set(desired)
        self.desired = desired
        held = {row.name for row in self.dataplane.loaded_models()}
        for name, entry in desired.items():
            if name not in held and name not in self._attempted and name not in self._tasks:
                self._attempted.add(name)
                self._start(name, self._load(name, entry))
        for name in held - set(desired):
            if name not in self._tasks:
                self._start(name, self._unload(name))

    def _start(self, name: str, work) -> None:
        task = asyncio.create_task(work)
        self._tasks[name] = task

        def done(_task: asyncio.Task) -> None:
            self._tasks.pop(name, None)
            self._changed.set()
            # The desired set may have moved on while this one ran.
            self._apply(self.desired)

        task.add_done_callback(done)

    async def _load(self, name: str, entry: dict[str, Any]) -> None:
        self._changed.set()
        try:
            # Fetching the artifact may mean a download: keep it off the event loop, which
            # also serves inference and the scheduler's heartbeat.
            # The Model's `secretName` picks the storage credentials for this fetch.
            with storage_secret(entry["spec"].get("secretName")):
                settings = await asyncio.to_thread(
                    settings_from_spec, name, entry["version"], entry["spec"], self.router
                )
            await self.dataplane.load_model(settings)
            log.info("loaded %s", name)
        except InferlineError as exc:
            log.error("model %s failed to load: %s", name, exc.message)
            self.dataplane.mark_unavailable(name, str(entry["version"]), exc.message)
        except Exception as exc:
            log.exception("model %s failed to load", name)
            self.dataplane.mark_unavailable(name, str(entry["version"]), repr(exc))

    async def _unload(self, name: str) -> None:
        with contextlib.suppress(InferlineError):
            await self.dataplane.unload(name)
        log.info("unloaded %s", name)
