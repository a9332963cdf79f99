"""The front's two halves in one process: `FrontApp` and the gRPC forwarding server wired straight
to a worker's `worker_calls`, as the pool's channel wires them across processes."""

import grpc
import httpx
import numpy as np
import pytest

from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.proto import inference_pb2_grpc as pb_grpc
from inferline.server.dataplane import DataPlane
from inferline.server.front import FrontApp, front_grpc_server, worker_calls
from inferline.server.repository import ModelRepository
from inferline.server.workers import NoWorker

IRIS = {
    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


class Link:
    """The pool's `forward`: here a direct call, or no worker at all."""

    def __init__(self, calls: dict):
        self.calls = calls
        self.forwarded: list[str] = []
        self.worker_up = True

    async def __call__(self, kind: str, *args):
        if not self.worker_up:
            raise NoWorker("no worker process is serving")
        self.forwarded.append(kind)
        return await self.calls[kind](*args)


@pytest.fixture
async def link(model_root):
    plane = DataPlane(ModelRepository([model_root]))
    await plane.load_repository()
    yield Link(worker_calls(plane))
    await plane.unload_all()


@pytest.fixture
async def rest(link):
    app = FrontApp(link, max_request_size=4096)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
        yield client


@pytest.fixture
async def stub(link):
    server, port = front_grpc_server(link, "127.0.0.1:0", 4096)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), channel
    await server.stop(None)


async def test_rest_answers_come_from_the_worker_with_their_status_and_headers(rest, link):
    answer = await rest.post("/v2/models/iris/infer", json=IRIS)
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["data"] == [0]
    assert answer.headers["content-length"] == str(len(answer.content))

    missing = await rest.get("/v2/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]

    # A binary answer keeps its header giving the JSON part's length.
    binary = {**IRIS, "parameters": {"binary_data_output": True}}
    answer = await rest.post("/v2/models/iris/infer", json=binary)
    header_length = int(answer.headers["inference-header-content-length"])
    assert np.frombuffer(answer.content[header_length:], dtype=np.int64).tolist() == [0]
    assert link.forwarded == ["http", "http", "http"]


async def test_the_front_answers_liveness_and_size_limits_itself(rest, link):
    link.worker_up = False
    assert (await rest.get("/v2/health/live")).json() == {"live": True}
    ready = await rest.get("/v2/health/ready")
    assert ready.status_code == 503 and "no worker process" in ready.json()["error"]

    link.worker_up = True
    too_big = await rest.post("/v2/models/iris/infer", content=b" " * 5000)
    assert too_big.status_code == 413 and "--max-request-size" in too_big.json()["error"]
    assert link.forwarded == []


async def test_grpc_calls_are_answered_by_the_worker_with_its_status_codes(stub, link):
    client, _ = stub
    ready = await client.ModelReady(pb.ModelReadyRequest(name="iris"))
    assert ready.ready

    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
    answer = await client.ModelInfer(request)
    assert list(answer.outputs[0].contents.int64_contents) == [0]

    request.model_name = "nope"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in error.value.details()


async def test_undecodable_grpc_bytes_and_no_worker_are_clear_statuses_live_is_not(stub, link):
    _, channel = stub
    raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await raw(b"\xff\xff\xff")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot parse the ModelInfer request" in error.value.details()

    link.worker_up = False
    client = pb_grpc.GRPCInferenceServiceStub(channel)
    assert (await client.ServerLive(pb.ServerLiveRequest())).live
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.ServerReady(pb.ServerReadyRequest())
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no worker process" in error.value.details()


async def test_an_unknown_grpc_method_is_unimplemented(stub):
    _, channel = stub
    other = channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await other(b"")
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
