"""Running the router: `run_router` on free ports, and following a scheduler over HTTP."""

import asyncio
import contextlib
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
import uvicorn

from inferline.demo import free_port
from inferline.router.app import Router, RouterConfig, run_router
from inferline.router.routes import Endpoint, ModelRoute, RouteTable
from inferline.router.table import HttpRouteSource, MutableRouteSource, StaticRouteSource

ROUTE = ModelRoute("iris", "iris_1", 1, [Endpoint("127.0.0.1:1", "127.0.0.1:2", "s", 0)])


async def test_run_router_binds_free_ports_and_stops_when_cancelled():
    config = RouterConfig(host="127.0.0.1", http_port=0, grpc_port=0)
    ready = asyncio.Event()
    task = asyncio.create_task(run_router(config, StaticRouteSource(RouteTable(1)), ready))
    await asyncio.wait_for(ready.wait(), 5)
    assert config.http_port and config.grpc_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.http_port}") as client:
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        answer = await client.post("/v2/models/iris/infer", json={})
        assert answer.json() == {"error": "model 'iris' not found"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{config.http_port}/v2/health/live")


class SchedulerStub:
    """The scheduler's long-poll route API, backed by a MutableRouteSource."""

    def __init__(self, source: MutableRouteSource):
        self.source = source

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        query = parse_qs(scope["query_string"].decode())
        table = await self.source.wait_for_change(
            int(query["generation"][0]), float(query["wait"][0])
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(table.to_dict())})


@contextlib.asynccontextmanager
async def scheduler_stub(source: MutableRouteSource):
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(SchedulerStub(source), host="127.0.0.1", port=port, log_level="warning")
    )
    server.capture_signals = contextlib.nullcontext
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.005)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # the router's long poll may still be open
        await task


async def test_router_follows_the_scheduler_over_http():
    source = MutableRouteSource(RouteTable(1))
    async with scheduler_stub(source) as address:
        routes = HttpRouteSource(address)
        router = Router(RouterConfig(host="127.0.0.1", http_port=0, grpc_port=0), routes)
        router.follower.poll_wait = 5
        await router.start()
        try:
            await router.wait_synced(timeout=5)
            url = f"http://127.0.0.1:{router.http_port}/v2/models/iris/ready"
            async with httpx.AsyncClient() as client:
                assert (await client.get(url)).status_code == 404
                source.put(ROUTE)
                await router.follower.wait_for_generation(2, timeout=5)
                # Known now; its only replica is not listening.
                assert (await client.get(url)).status_code == 503
        finally:
            await router.stop()
            await routes.aclose()
