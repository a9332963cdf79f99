"""LocalRouterCaller: a step's model call through the router core of this process, against a
real model server's REST edge (a DataPlane behind uvicorn). Protobuf goes in and comes out with
the model's tensors; failures are classed as the model gateway needs them: wait and retry
(nothing serves the model right now) or end the request with the model's own message."""

import asyncio
import contextlib

import numpy as np
import pytest
import uvicorn

from inferline.demo import free_port
from inferline.gateways.model_gateway import LocalRouterCaller, ModelCallError
from inferline.protocol import protobuf
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import InferenceRequest, Tensor
from inferline.router.core import ModelRouter
from inferline.router.routes import Endpoint, ModelRoute, RouteTable
from inferline.router.table import MutableRouteSource
from inferline.runtimes.settings import ModelSettings
from inferline.server.dataplane import DataPlane
from inferline.server.rest import RestApp

VALUES = np.arange(1, 17, dtype=np.int32).reshape(1, 16)


def request(*tensors: Tensor) -> bytes:
    tensors = tensors or (
        Tensor.from_numpy("INPUT0", VALUES),
        Tensor.from_numpy("INPUT1", VALUES),
    )
    return protobuf.request_to_proto(InferenceRequest(list(tensors)), "").SerializeToString()


@pytest.fixture
async def replica(tmp_path):
    dataplane = DataPlane(name="mlserver")
    await dataplane.load_repository()
    await dataplane.load_model(
        ModelSettings(
            name="tfsimple_1",
            implementation="inferline.examples.models.TfSimple",
            folder=tmp_path,
            version="1",
        )
    )
    port = free_port()
    server = _Server(
        uvicorn.Config(
            RestApp(dataplane), host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the replica's HTTP server did not start"
        await asyncio.sleep(0.01)
    yield Endpoint(http=f"127.0.0.1:{port}", grpc="127.0.0.1:1", server="mlserver", replica=0)
    server.should_exit = True
    await task
    await dataplane.unload_all()


class _Server(uvicorn.Server):
    def capture_signals(self):
        return contextlib.nullcontext()


@pytest.fixture
async def routes(replica):
    return MutableRouteSource(
        RouteTable(1, {"tfsimple": ModelRoute("tfsimple", "tfsimple_1", 1, [replica])})
    )


@pytest.fixture
async def caller(routes):
    caller = LocalRouterCaller(ModelRouter(routes), timeout=10)
    yield caller
    await caller.close()


async def test_the_replica_answers_through_the_router(caller):
    answer, _ = await caller("tfsimple", request(), [("x-request-id", "r1")])
    response = protobuf.response_from_proto(pb.ModelInferResponse.FromString(answer))
    assert response.model_name == "tfsimple_1"  # the router chose the route's internal name
    assert response.output("OUTPUT0").data.tolist() == (VALUES * 2).tolist()
    assert response.output("OUTPUT1").data.tolist() == np.zeros_like(VALUES).tolist()


async def test_a_request_the_model_rejects_ends_with_the_models_message(caller):
    with pytest.raises(ModelCallError) as failure:
        await caller("tfsimple", request(Tensor.from_numpy("INPUT0", VALUES)), [])
    assert not failure.value.retryable
    assert "input 'INPUT1' is missing" in failure.value.message


async def test_an_unknown_model_is_waited_for(caller):
    with pytest.raises(ModelCallError) as failure:
        await caller("not-loaded-yet", request(), [])
    assert failure.value.retryable
    assert "not-loaded-yet" in failure.value.message


async def test_a_model_without_ready_replica_is_waited_for(caller, routes):
    routes.put(ModelRoute("tfsimple", "tfsimple_1", 1, [], reason="ScheduleFailed"))
    with pytest.raises(ModelCallError) as failure:
        await caller("tfsimple", request(), [])
    assert failure.value.retryable
    assert "no ready replica" in failure.value.message


async def test_a_replica_that_is_down_is_waited_for(caller, routes):
    gone = Endpoint(http=f"127.0.0.1:{free_port()}", grpc="127.0.0.1:1", server="s", replica=1)
    routes.put(ModelRoute("tfsimple", "tfsimple_1", 1, [gone]))
    with pytest.raises(ModelCallError) as failure:
        await caller("tfsimple", request(), [])
    assert failure.value.retryable
