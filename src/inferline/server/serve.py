"""Runs a model server: the data plane behind REST (uvicorn) and gRPC (grpc.aio), one event loop."""

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from inferline.server.dataplane import DataPlane
from inferline.server.grpc import DEFAULT_MAX_MESSAGE_SIZE, bind_grpc_server
from inferline.server.repository import ModelRepository
from inferline.server.rest import DEFAULT_MAX_REQUEST_SIZE, RestApp
from inferline.tracing import TracingConfig

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    model_dirs: list[Path] = field(default_factory=list)
    host: str = "0.0.0.0"
    # 0 picks a free port; `ModelServer.http_port` / `grpc_port` tell which.
    http_port: int = 8080
    grpc_port: int = 8081
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    max_grpc_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    # Processes serving the same ports (`inferline.server.workers`); 1 is this process alone.
    workers: int = 1
    # Serve the ports from a front process passing each request to the workers
    # (`inferline.server.front`).
    front: bool = False
    # Where workers send traces (this process is set up by whoever starts it); None: no tracing.
    tracing: TracingConfig | None = None


class _HttpServer(uvicorn.Server):
    # Signals are handled by whoever runs the server, once for every transport.
    def capture_signals(self):
        return contextlib.nullcontext()


class ModelServer:
    """The data plane with both transports bound; `start()` returns once both listen."""

    def __init__(self, config: ServerConfig, dataplane: DataPlane | None = None):
        self.config = config
        self.dataplane = dataplane or DataPlane(ModelRepository(config.model_dirs))
        self.http_port = config.http_port
        self.grpc_port = config.grpc_port
        self._http: _HttpServer | None = None
        self._http_task: asyncio.Task | None = None
        self._grpc = None

    async def start(self) -> None:
        config = self.config
        self._grpc, self.grpc_port = bind_grpc_server(
            self.dataplane, f"{config.host}:{config.grpc_port}", config.max_grpc_message_size
        )
        await self._grpc.start()
        sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.workers > 1:
            # Every worker listens on the port; the kernel spreads connections over them.
            # (grpc sets SO_REUSEPORT on its own sockets by default.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.http_port))
        self.http_port = sock.getsockname()[1]
        self._http = _HttpServer(
            uvicorn.Config(
                RestApp(self.dataplane, config.max_request_size),
                http="httptools",
                lifespan="off",
                access_log=False,
                log_level="warning",
            )
        )
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        while not self._http.started and not self._http_task.done():
            await asyncio.sleep(0.01)

    async def wait(self) -> None:
        """Until the HTTP server stops (after `stop()` or a fatal error)."""
        await self._http_task

    async def stop(self) -> None:
        if self._http is not None:
            self._http.should_exit = True
            await self._http_task
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        await self.dataplane.unload_all()


def stop_on_signal() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets, for a clean shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(config: ServerConfig) -> None:
    if config.workers > 1 or config.front:
        from inferline.server.workers import serve_workers

        await serve_workers(config)
        return
    server = ModelServer(config)
    stop = stop_on_signal()
    await server.start()
    # Health is served while the models load, so a supervisor sees the server live, not ready.
    await server.dataplane.load_repository()
    log.warning(
        "inferline serving %d model(s): HTTP on %s:%d, gRPC on %s:%d",
        len(server.dataplane.repository_index(ready_only=True)),
        config.host,
        server.http_port,
        config.host,
        server.grpc_port,
    )
    await stop.wait()
    await server.stop()


def run(main):
    """Run a coroutine on uvloop where it is available; what it returns."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # Windows has no uvloop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)
