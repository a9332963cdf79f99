"""Seldon Core 2's model metrics in the router core, in-process: a fake upstream for the replicas,
the counts read back from the Prometheus registry (the change each test makes to it)."""

import asyncio
import random
from collections import Counter

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from inferline.router.balancer import ConnectFailure
from inferline.router.core import ModelRouter, UpstreamTimeout, UpstreamUnavailable
from inferline.router.grpc import GRPC_INFER, UpstreamStatus
from inferline.router.rest import RouterRestApp
from inferline.router.routes import Endpoint, ExperimentRoute, ModelRoute, RouteTable
from inferline.router.table import MutableRouteSource
from inferline.router.upstream import UpstreamConnectError, UpstreamResponse

UP = Endpoint("10.0.0.1:8080", "10.0.0.1:8081", "mlserver", 0)
UP2 = Endpoint("10.0.0.2:8080", "10.0.0.2:8081", "triton", 3)
DOWN = Endpoint("10.0.0.9:8080", "10.0.0.9:8081", "mlserver", 1)
INFER = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


class FakeUpstream:
    """Stands for HttpUpstream: DOWN refuses; the others answer `status` after `delay` s."""

    def __init__(self):
        self.status = 200
        self.delay = 0.0

    async def request(self, address, method, target, headers, body=b""):
        if address == DOWN.http:
            raise UpstreamConnectError(f"cannot connect to {address}: refused")
        await asyncio.sleep(self.delay)
        return UpstreamResponse(self.status, [(b"content-type", b"application/json")], b"{}")


def table() -> RouteTable:
    return RouteTable(
        1,
        {
            "iris": ModelRoute("iris", "iris_2", 2, [UP]),
            "wine": ModelRoute("wine", "wine_1", 1, [DOWN, UP], timeout=0.05),
            "dead": ModelRoute("dead", "dead_4", 4, [DOWN]),
            "idle": ModelRoute("idle", "idle_1", 1, [], reason="ScheduleFailed"),
            "iris2": ModelRoute("iris2", "iris2_1", 1, [UP2]),
        },
        {
            "mirrored": ExperimentRoute(
                "mirrored", [("iris", 100)], default="iris", mirror=("iris2", 100), active=True
            )
        },
    )


def seldon_samples() -> Counter:
    found = Counter()
    for family in REGISTRY.collect():
        if family.name.startswith("seldon_"):
            for sample in family.samples:
                found[sample.name, tuple(sorted(sample.labels.items()))] += sample.value
    return found


def added(before: Counter, name: str) -> dict[tuple, float]:
    """What the test added to the samples named `name`: labels -> amount."""
    after = seldon_samples()
    after.subtract(before)
    return {labels: value for (n, labels), value in after.items() if n == name and value}


def model_labels(endpoint: Endpoint, model: str, internal: str, method_type: str, code: str):
    return tuple(
        sorted(
            {
                "server": endpoint.server,
                "server_replica": str(endpoint.replica),
                "model": model,
                "model_internal": internal,
                "method_type": method_type,
                "code": code,
            }.items()
        )
    )


@pytest.fixture
def upstream():
    return FakeUpstream()


@pytest.fixture
def core():
    return ModelRouter(MutableRouteSource(table()), default_timeout=5.0, rng=random.Random(1))


@pytest.fixture
async def router(core, upstream):
    app = RouterRestApp(core, upstream)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://router"
    ) as client:
        yield client
    await core.mirrors.close()


async def test_rest_inference_calls_are_counted_per_replica_model_and_code(router, upstream):
    before = seldon_samples()
    for _ in range(3):
        assert (await router.post("/v2/models/iris2/infer", json=INFER)).status_code == 200
    upstream.status = 400
    assert (await router.post("/v2/models/iris2/infer", json=INFER)).status_code == 400
    # Not inference calls: not counted.
    await router.get("/v2/models/iris2")
    await router.get("/v2/models/iris2/ready")

    assert added(before, "seldon_model_infer_total") == {
        model_labels(UP2, "iris2", "iris2_1", "rest", "200"): 3,
        model_labels(UP2, "iris2", "iris2_1", "rest", "400"): 1,
    }
    seconds = added(before, "seldon_model_infer_seconds_total")
    assert set(seconds) == set(added(before, "seldon_model_infer_total"))
    assert all(0 < value < 1 for value in seconds.values())
    aggregate = (("method_type", "rest"), ("server", "triton"), ("server_replica", "3"))
    assert added(before, "seldon_model_aggregate_infer_total") == {aggregate: 4}
    assert set(added(before, "seldon_model_aggregate_infer_seconds_total")) == {aggregate}
    histogram = added(before, "seldon_model_infer_api_seconds_count")
    assert histogram == {
        (("code", "200"), ("method", "post"), ("server", "triton"), ("server_replica", "3")): 3,
        (("code", "400"), ("method", "post"), ("server", "triton"), ("server_replica", "3")): 1,
    }


async def test_the_replica_that_answered_is_counted_after_a_failover(router):
    before = seldon_samples()
    # wine's first replica refuses (then is set aside), so one call goes to each in turn at most.
    for _ in range(2):
        assert (await router.post("/v2/models/wine/infer", json=INFER)).status_code == 200
    assert added(before, "seldon_model_infer_total") == {
        model_labels(UP, "wine", "wine_1", "rest", "200"): 2
    }


async def test_no_answer_is_counted_with_the_status_the_client_gets(router, upstream):
    before = seldon_samples()
    assert (await router.post("/v2/models/dead/infer", json=INFER)).status_code == 503
    upstream.delay = 1.0
    assert (await router.post("/v2/models/wine/infer", json=INFER)).status_code == 504
    assert added(before, "seldon_model_infer_total") == {
        model_labels(DOWN, "dead", "dead_4", "rest", "503"): 1,
        model_labels(UP, "wine", "wine_1", "rest", "504"): 1,
    }


async def test_calls_that_reach_no_replica_are_not_counted(router):
    before = seldon_samples()
    assert (await router.post("/v2/models/nope/infer", json=INFER)).status_code == 404
    assert (await router.post("/v2/models/idle/infer", json=INFER)).status_code == 503
    assert added(before, "seldon_model_infer_total") == {}
    assert added(before, "seldon_model_aggregate_infer_total") == {}


async def test_an_experiment_mirror_is_counted_as_its_own_model(router, core):
    before = seldon_samples()
    for _ in range(2):
        assert (await router.post("/v2/models/iris/infer", json=INFER)).status_code == 200
    while core.mirrors.in_flight:
        await asyncio.sleep(0.01)
    assert added(before, "seldon_model_infer_total") == {
        model_labels(UP, "iris", "iris_2", "rest", "200"): 2,
        model_labels(UP2, "iris2", "iris2_1", "rest", "200"): 2,
    }


async def test_grpc_codes_are_the_status_code_names(core):
    route = core.route_of("iris")
    before = seldon_samples()

    async def answered(endpoint):
        return b"answer"

    async def rejected(endpoint):
        error = grpc.aio.AioRpcError(
            grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(), "bad"
        )
        raise UpstreamStatus(error)

    async def hanging(endpoint):
        await asyncio.sleep(1)

    async def unreachable(endpoint):
        raise ConnectFailure(endpoint, "cannot reach it")

    assert await core.call(route, answered, counted=GRPC_INFER) == b"answer"
    with pytest.raises(UpstreamStatus):
        await core.call(route, rejected, counted=GRPC_INFER)
    with pytest.raises(UpstreamTimeout):
        await core.call(route, hanging, 0.01, counted=GRPC_INFER)
    with pytest.raises(UpstreamUnavailable):
        await core.call(core.route_of("dead"), unreachable, counted=GRPC_INFER)
    # Without `counted` (ready, metadata), nothing is.
    await core.call(route, answered)

    assert added(before, "seldon_model_infer_total") == {
        model_labels(UP, "iris", "iris_2", "grpc", "OK"): 1,
        model_labels(UP, "iris", "iris_2", "grpc", "INVALID_ARGUMENT"): 1,
        model_labels(UP, "iris", "iris_2", "grpc", "DEADLINE_EXCEEDED"): 1,
        model_labels(DOWN, "dead", "dead_4", "grpc", "UNAVAILABLE"): 1,
    }
    assert added(before, "seldon_model_infer_api_seconds_count") == {
        (("code", code), ("method", "grpc"), ("server", server), ("server_replica", replica)): 1
        for code, server, replica in [
            ("OK", "mlserver", "0"),
            ("INVALID_ARGUMENT", "mlserver", "0"),
            ("DEADLINE_EXCEEDED", "mlserver", "0"),
            ("UNAVAILABLE", "mlserver", "1"),
        ]
    }


async def test_the_router_serves_them_on_metrics(router):
    await router.post("/v2/models/iris2/infer", json=INFER)
    answer = await router.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    labels = dict(model_labels(UP2, "iris2", "iris2_1", "rest", "200"))
    [sample] = [
        s
        for s in families["seldon_model_infer"].samples
        if s.name == "seldon_model_infer_total" and s.labels == labels
    ]
    assert sample.value >= 1  # other tests of this process may have called it too
    assert (await router.post("/metrics")).status_code == 405
