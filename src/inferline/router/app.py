"""Runs the router: route follower, REST (uvicorn) and gRPC (grpc.aio) on the current event loop.

`Router` is for embedding (`inferline up` holds it next to the scheduler): `start()` binds both
ports (port 0 picks a free one; `http_port` / `grpc_port` tell the real ones) and `stop()` shuts
everything down. `run_router` is the standalone form, a coroutine that serves until cancelled.
Neither installs signal handlers: that is the caller's business.
"""

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

import uvicorn

from inferline.router import grpc as router_grpc
from inferline.router.balancer import Balancer
from inferline.router.core import DEFAULT_TIMEOUT, ModelRouter
from inferline.router.rest import DEFAULT_MAX_REQUEST_SIZE, RouterRestApp
from inferline.router.routes import RouteSource
from inferline.router.table import RouteFollower
from inferline.router.upstream import HttpUpstream

log = logging.getLogger(__name__)


@dataclass
class RouterConfig:
    host: str = "0.0.0.0"
    # Seldon Core 2's server pairs use 9000 (HTTP) and 9500 (gRPC); 0 picks a free port.
    http_port: int = 9000
    grpc_port: int = 9500
    timeout: float = DEFAULT_TIMEOUT
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    max_grpc_message_size: int = router_grpc.DEFAULT_MAX_MESSAGE_SIZE


class _HttpServer(uvicorn.Server):
    # Signals belong to whoever runs the router, not to uvicorn.
    def capture_signals(self):
        return contextlib.nullcontext()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Router:
    def __init__(
        self,
        config: RouterConfig,
        source: RouteSource,
        rest_handlers: dict | None = None,
        grpc_handlers: dict | None = None,
    ):
        """`rest_handlers` / `grpc_handlers` map a name suffix (".pipeline") to the handler
        that answers for such names instead of a model replica."""
        self.config = config
        self.rest_handlers = rest_handlers
        self.grpc_handlers = grpc_handlers
        self.follower = RouteFollower(source)
        self.core = ModelRouter(self.follower, Balancer(), config.timeout)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._upstream: HttpUpstream | None = None
        self._grpc_service: router_grpc.RouterGrpcService | None = None
        self._grpc_server = None
        self._http_server: _HttpServer | None = None
        self._http_task: asyncio.Task | None = None

    @property
    def grpc_service(self) -> router_grpc.RouterGrpcService:
        return self._grpc_service

    async def start(self) -> None:
        """Follow the routes and listen on both ports; returns once both accept connections."""
        config = self.config
        self.follower.start()
        self._upstream = HttpUpstream()
        self._grpc_service = router_grpc.RouterGrpcService(
            self.core, config.max_grpc_message_size, self.grpc_handlers
        )
        self._grpc_server, self.grpc_port = router_grpc.create_grpc_server(
            self._grpc_service, f"{config.host}:{config.grpc_port}", config.max_grpc_message_size
        )
        sock = _listen(config.host, config.http_port)
        self.http_port = sock.getsockname()[1]
        self._http_server = _HttpServer(
            uvicorn.Config(
                RouterRestApp(
                    self.core, self._upstream, config.max_request_size, self.rest_handlers
                ),
                http="httptools",
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        )
        await self._grpc_server.start()
        self._http_task = asyncio.create_task(self._http_server.serve(sockets=[sock]))
        while not self._http_server.started:
            if self._http_task.done():
                await self._http_task  # raises what stopped it
                raise RuntimeError("the router's HTTP server stopped while starting")
            await asyncio.sleep(0.005)
        log.warning(
            "inferline router: HTTP on %s:%d, gRPC on %s:%d",
            config.host,
            self.http_port,
            config.host,
            self.grpc_port,
        )

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait for the first route table."""
        await self.follower.wait_synced(timeout)

    async def serve_until_stopped(self) -> None:
        """Wait while the HTTP server runs (it stops on `stop()` or on a fatal error)."""
        await asyncio.shield(self._http_task)

    async def stop(self) -> None:
        if self._http_server is not None:
            self._http_server.should_exit = True
        if self._http_task is not None:
            with contextlib.suppress(Exception):
                await self._http_task
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace=2)
        if self._grpc_service is not None:
            await self._grpc_service.close()
        await self.core.mirrors.close()
        await self.follower.stop()
        if self._upstream is not None:
            await self._upstream.aclose()


async def run_router(
    config: RouterConfig, source: RouteSource, ready: asyncio.Event | None = None
) -> None:
    """Serve until cancelled (or until the HTTP server fails). `ready` is set once both ports
    listen and the first route table has arrived; by then `config.http_port` and
    `config.grpc_port` hold the bound ports (the real ones when 0 was asked for)."""
    router = Router(config, source)
    try:
        await router.start()
        config.http_port, config.grpc_port = router.http_port, router.grpc_port
        await router.wait_synced()
        if ready is not None:
            ready.set()
        await router.serve_until_stopped()
    finally:
        await router.stop()
