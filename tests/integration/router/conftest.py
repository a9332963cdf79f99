"""A router in front of real in-process model servers, for the router's integration tests.

Everything asynchronous (two model server replicas, each a `DataPlane` behind uvicorn and
grpc.aio, and the router itself) runs on an event loop in a background thread, so the tests can
use blocking clients (tritonclient, httpx.Client) as a user would. Each replica serves a custom
`Echo` model under the internal name `echo_1`; its answer says which replica served it.
"""

import asyncio
import contextlib
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from inferline.demo import free_port
from inferline.router.app import Router, RouterConfig
from inferline.router.routes import Endpoint, ModelRoute, RouteTable
from inferline.router.table import MutableRouteSource
from inferline.runtimes.settings import ModelSettings
from inferline.server.dataplane import DataPlane
from inferline.server.grpc import create_grpc_server
from inferline.server.rest import RestApp

ECHO_CODE = """
    import asyncio

    from inferline.protocol.types import InferenceResponse
    from inferline.runtimes import Runtime


    class Echo(Runtime):
        async def predict(self, request):
            if request.parameters.get("sleep"):
                await asyncio.sleep(float(request.parameters["sleep"]))
            if request.parameters.get("fail"):
                raise ValueError(request.parameters["fail"])
            return InferenceResponse(
                model_name=self.name,
                outputs=list(request.inputs),
                parameters={"server": self.settings.extra["server"]},
            )
"""

ROUTER_MAX_REQUEST_SIZE = 1024 * 1024


class _Recorder:
    """ASGI wrapper keeping the headers of the requests a replica received."""

    def __init__(self, app):
        self.app = app
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}
            self.requests.append((scope["path"], headers))
        await self.app(scope, receive, send)


class _QuietServer(uvicorn.Server):
    def capture_signals(self):
        return contextlib.nullcontext()


class Replica:
    """One model server: a data plane with `echo_<version>` models, on HTTP and gRPC."""

    def __init__(self, name: str, replica: int, model_folder: Path):
        self.name = name
        self.replica = replica
        self.folder = model_folder
        self.dataplane = DataPlane(name=name)
        self.recorder = _Recorder(RestApp(self.dataplane))
        self.http_port = free_port()
        self.grpc_port = free_port()
        self._http: _QuietServer | None = None
        self._http_task: asyncio.Task | None = None
        self._grpc = None

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            http=f"127.0.0.1:{self.http_port}",
            grpc=f"127.0.0.1:{self.grpc_port}",
            server=self.name,
            replica=self.replica,
        )

    async def load_echo(self, version: int) -> None:
        await self.dataplane.load_model(
            ModelSettings(
                name=f"echo_{version}",
                implementation="model.Echo",
                folder=self.folder,
                version=str(version),
                extra={"server": self.name},
            )
        )

    async def start(self) -> None:
        await self.dataplane.load_repository()  # an empty repository: marks the server ready
        self._grpc = create_grpc_server(self.dataplane, f"127.0.0.1:{self.grpc_port}")
        await self._grpc.start()
        self._http = _QuietServer(
            uvicorn.Config(
                self.recorder,
                host="127.0.0.1",
                port=self.http_port,
                http="httptools",
                lifespan="off",
                access_log=False,
                log_level="warning",
            )
        )
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            assert not self._http_task.done(), "replica HTTP server failed to start"
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._http.should_exit = True
        await self._http_task
        await self._grpc.stop(None)
        await self.dataplane.unload_all()


class Cluster:
    """The background loop, the replicas, the route source and the router."""

    def __init__(self, model_folder: Path):
        self.model_folder = model_folder
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.replicas: list[Replica] = []
        self.source: MutableRouteSource | None = None
        self.router: Router | None = None

    def run(self, coro, timeout: float = 15.0):
        """Run a coroutine on the cluster's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        for index in range(2):
            self.replicas.append(await self.start_replica(f"server-{index}", index))
        self.source = MutableRouteSource(self.default_table())
        config = RouterConfig(
            host="127.0.0.1",
            http_port=0,
            grpc_port=0,
            timeout=10.0,
            max_request_size=ROUTER_MAX_REQUEST_SIZE,
        )
        self.router = Router(config, self.source)
        await self.router.start()
        await self.router.wait_synced(timeout=5)

    async def start_replica(self, name: str, index: int) -> Replica:
        replica = Replica(name, index, self.model_folder)
        await replica.load_echo(1)
        await replica.start()
        return replica

    def default_table(self) -> RouteTable:
        return RouteTable(
            0,
            {"echo": ModelRoute("echo", "echo_1", 1, [r.endpoint for r in self.replicas[:2]])},
        )

    def start(self) -> "Cluster":
        self.run(self._start())
        return self

    def set_routes(self, *routes: ModelRoute) -> RouteTable:
        """Publish a table holding `routes` and wait until the router follows it."""

        async def publish():
            table = self.source.set(RouteTable(0, {r.name: r for r in routes}))
            await self.router.follower.wait_for_generation(table.generation, timeout=5)
            return table

        return self.run(publish())

    def reset_routes(self) -> None:
        self.set_routes(*self.default_table().models.values())

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.router.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.router.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_address}"

    def close(self) -> None:
        async def _stop():
            if self.router is not None:
                await self.router.stop()
            for replica in self.replicas:
                with contextlib.suppress(Exception):
                    await replica.stop()

        try:
            self.run(_stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@pytest.fixture(scope="module")
def echo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("echo")
    (folder / "model.py").write_text(textwrap.dedent(ECHO_CODE))
    return folder


@pytest.fixture(scope="module")
def cluster(echo_folder) -> Iterator[Cluster]:
    cluster = Cluster(echo_folder)
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def routes(cluster) -> Iterator[Cluster]:
    """The cluster, with its default routes restored after the test (for tests that change them)."""
    yield cluster
    cluster.reset_routes()
