"""Runs a model server: the data plane behind REST (uvicorn) and gRPC (grpc.aio), one event loop."""

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from inferline.server.dataplane import DataPlane
from inferline.server.grpc import DEFAULT_MAX_MESSAGE_SIZE, create_grpc_server
from inferline.server.repository import ModelRepository
from inferline.server.rest import DEFAULT_MAX_REQUEST_SIZE, RestApp

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    model_dirs: list[Path]
    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    max_grpc_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


class _HttpServer(uvicorn.Server):
    # Signals are handled once for both transports in `serve`, not by uvicorn.
    def capture_signals(self):
        return contextlib.nullcontext()


async def serve(config: ServerConfig) -> None:
    dataplane = DataPlane(ModelRepository(config.model_dirs))
    grpc_server = create_grpc_server(
        dataplane, f"{config.host}:{config.grpc_port}", config.max_grpc_message_size
    )
    http_server = _HttpServer(
        uvicorn.Config(
            RestApp(dataplane, config.max_request_size),
            host=config.host,
            port=config.http_port,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(http_server, "should_exit", True))

    await grpc_server.start()
    http_task = asyncio.create_task(http_server.serve())
    # Serve health while the models load, so a supervisor sees the server live but not ready.
    await dataplane.load_repository()
    log.warning(
        "inferline serving %d model(s): HTTP on %s:%d, gRPC on %s:%d",
        len(dataplane.repository_index(ready_only=True)),
        config.host,
        config.http_port,
        config.host,
        config.grpc_port,
    )
    try:
        await http_task
    finally:
        await grpc_server.stop(grace=2)
        await dataplane.unload_all()


def run(config: ServerConfig) -> None:
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # Windows has no uvloop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config))
