"""The router's ASGI app in-process, with a fake upstream (httpx.MockTransport) for the replicas."""

import asyncio
import gzip

import httpx
import pytest

from inferline.router.core import ModelRouter
from inferline.router.rest import RouterRestApp
from inferline.router.routes import Endpoint, ModelRoute, RouteTable
from inferline.router.table import MutableRouteSource
from inferline.router.upstream import UpstreamClosed, UpstreamConnectError, UpstreamResponse

UP = Endpoint("10.0.0.1:8080", "10.0.0.1:8081", "server", 0)
DOWN = Endpoint("10.0.0.2:8080", "10.0.0.2:8081", "server", 1)
CLOSING = Endpoint("10.0.0.3:8080", "10.0.0.3:8081", "server", 2)


class FakeUpstream:
    """Stands for HttpUpstream: records requests; DOWN refuses, CLOSING hangs up."""

    def __init__(self):
        self.requests: list[tuple] = []
        self.status = 200
        self.body = gzip.compress(b'{"ok":true}')
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-encoding", b"gzip"),
            (b"transfer-encoding", b"chunked"),
            (b"date", b"today"),
        ]
        self.delay = 0.0

    async def request(self, address, method, target, headers, body=b""):
        if address == DOWN.http:
            raise UpstreamConnectError(f"cannot connect to {address}: refused")
        if address == CLOSING.http:
            raise UpstreamClosed("connection closed before any answer")
        self.requests.append((address, method, target, dict(headers), headers, body))
        await asyncio.sleep(self.delay)
        return UpstreamResponse(self.status, list(self.headers), self.body)


@pytest.fixture
def upstream():
    return FakeUpstream()


@pytest.fixture
async def router(upstream):
    source = MutableRouteSource(
        RouteTable(
            1,
            {
                "iris": ModelRoute("iris", "iris_2", 2, [UP]),
                "wine": ModelRoute("wine", "wine_1", 1, [DOWN, CLOSING, UP], timeout=0.05),
            },
        )
    )
    app = RouterRestApp(ModelRouter(source, default_timeout=5.0), upstream, 1000)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://router"
    ) as client:
        yield client


async def test_forwarded_request(router, upstream):
    answer = await router.post(
        "/v2/models/iris/versions/2%0d%0a/infer?trace=1",
        content=b"HEADER-binary",
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": "6",
            "x-tenant": "a",
            "connection": "keep-alive",
            "expect": "100-continue",
            "x-request-id": "abc",
        },
    )
    [(address, method, target, headers, header_list, body)] = upstream.requests
    assert (address, method) == ("10.0.0.1:8080", "POST")
    assert target == "/v2/models/iris_2/versions/2%0D%0A/infer?trace=1"
    assert body == b"HEADER-binary"
    assert headers[b"inference-header-content-length"] == b"6"
    assert headers[b"content-type"] == b"application/octet-stream"
    assert headers[b"x-tenant"] == b"a"
    assert headers[b"x-request-id"] == b"abc"
    assert headers[b"seldon-internal-model"] == b"iris_2"
    names = [name for name, _ in header_list]
    for dropped in (b"connection", b"expect", b"host", b"content-length"):
        assert dropped not in names
    assert names.count(b"x-request-id") == 1
    # The replica's bytes come back as they were, compressed and all.
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.json() == {"ok": True}
    assert "transfer-encoding" not in answer.headers
    assert answer.headers.get("date") != "today"
    assert answer.headers["x-request-id"] == "abc"
    assert answer.headers["x-seldon-route"] == ":iris_2:"


async def test_metadata_and_ready_paths(router, upstream):
    await router.get("/v2/models/iris")
    await router.get("/v2/models/other/ready", headers={"seldon-model": "iris"})
    assert [(r[1], r[2]) for r in upstream.requests] == [
        ("GET", "/v2/models/iris_2"),
        ("GET", "/v2/models/iris_2/ready"),
    ]


async def test_failed_replicas_are_skipped_and_errors_pass_through(router, upstream):
    upstream.status, upstream.body = 400, b'{"error":"bad input"}'
    upstream.headers = [(b"content-type", b"application/json")]
    answer = await router.post("/v2/models/wine/infer", content=b"{}")
    assert (answer.status_code, answer.json()) == (400, {"error": "bad input"})
    assert [r[0] for r in upstream.requests] == [UP.http]


async def test_route_timeout(router, upstream):
    upstream.delay = 1.0
    answer = await router.post("/v2/models/wine/infer", content=b"{}")
    assert answer.status_code == 504
    assert answer.json() == {"error": "model 'wine' did not answer within 0.05 s (timeout)"}


async def test_body_limit(router):
    answer = await router.post("/v2/models/iris/infer", content=b"x" * 1001)
    assert answer.status_code == 413
    assert "limit of 1000 bytes" in answer.json()["error"]


async def test_router_answers(router):
    assert (await router.get("/v2/health/ready")).json() == {"ready": True}
    assert (await router.get("/v2")).json()["name"] == "inferline-router"
    assert (await router.post("/v2/health/live")).status_code == 405
    assert (await router.get("/v2/repository/index")).status_code == 404


async def test_special_suffix_handlers_plug_in(upstream):
    async def pipelines(call, body):
        return 200, [(b"content-type", b"text/plain")], f"{call.name} {call.operation}".encode()

    app = RouterRestApp(
        ModelRouter(MutableRouteSource()), FakeUpstream(), special_handlers={".pipeline": pipelines}
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://r") as client:
        answer = await client.post("/v2/pipelines/flow/infer", content=b"{}")
        assert answer.text == "flow.pipeline infer"
        assert answer.headers["x-request-id"]
        answer = await client.get("/v2/models/e.experiment/ready")
        assert answer.status_code == 404
        assert answer.json()["error"] == "experiment 'e' not found"
