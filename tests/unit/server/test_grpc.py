"""The gRPC adapter in-process: a real grpc.aio server on a local port and our own stub."""

import grpc
import numpy as np
import pytest

from inferline.demo import free_port
from inferline.protocol import protobuf
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.proto import inference_pb2_grpc as pb_grpc
from inferline.protocol.types import InferenceRequest, Tensor
from inferline.server.dataplane import DataPlane
from inferline.server.grpc import create_grpc_server
from inferline.server.repository import ModelRepository

ROWS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


@pytest.fixture
async def stub(model_root):
    plane = DataPlane(ModelRepository([model_root]))
    await plane.load_repository()
    address = f"127.0.0.1:{free_port()}"
    server = create_grpc_server(plane, address, max_message_size=64 * 1024)
    await server.start()
    async with grpc.aio.insecure_channel(address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    await server.stop(None)
    await plane.unload_all()


def iris_request(model="iris", rows=ROWS) -> pb.ModelInferRequest:
    request = InferenceRequest(inputs=[Tensor.from_numpy("x", rows)], id="g1")
    return protobuf.request_to_proto(request, model)


async def test_health_and_metadata(stub):
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="iris"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="broken"))).ready
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="doubler"))
    assert meta.inputs[0].name == "x" and list(meta.inputs[0].shape) == [-1, 2]
    server = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert "model_repository" in server.extensions


async def test_infer(stub):
    response = protobuf.response_from_proto(await stub.ModelInfer(iris_request()))
    assert response.id == "g1" and response.model_version == "v0.1.0"
    assert response.output("predict").data.tolist() == [[0]]


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    [
        (iris_request("nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
        (iris_request("broken"), grpc.StatusCode.UNAVAILABLE, "weights are corrupt"),
        (
            iris_request(rows=np.zeros((1, 3), np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "3 features",
        ),
        (
            iris_request(rows=np.array([[5.1, np.inf, 1.4, 0.2]], np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "rejected input 'x', which holds NaN or infinity: Input X contains infinity",
        ),
        (
            iris_request(rows=np.zeros((1000, 40), np.float32)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "larger than max",
        ),
    ],
)
async def test_errors_map_to_status_codes_and_server_keeps_serving(
    stub, request_message, code, message
):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ModelInfer(request_message)
    assert error.value.code() == code
    assert message in error.value.details()
    assert (await stub.ModelInfer(iris_request())).outputs


async def test_bad_raw_contents_is_invalid_argument(stub):
    message = iris_request()
    message.raw_input_contents[0] = b"\x00" * 3
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ModelInfer(message)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 16 bytes, but 3 bytes were sent" in error.value.details()


async def test_repository_rpcs(stub):
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
    assert {m.name: m.state for m in index.models}["broken"] == "UNAVAILABLE"
    await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="iris"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ModelInfer(iris_request())
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="iris"))
    assert (await stub.ModelInfer(iris_request())).outputs
