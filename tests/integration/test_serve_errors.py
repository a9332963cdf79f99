"""Bad requests to a real `inferline serve` get clear errors, and the server keeps answering.

Two servers: the main one serves iris, a custom model whose `load` raises, and a folder whose
settings point at a missing model file; a second one has small request and message limits.
After every bad request a good iris request must still succeed. Every test runs against one
process and against a front process passing requests to a worker (`--front`).
"""

import json
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

MAX_REQUEST_SIZE = 2000
MAX_GRPC_MESSAGE_SIZE = 4096
SKLEARN_FEATURES_MESSAGE = "X has 3 features, but LogisticRegression is expecting 4 features"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, write_custom_model):
    root = tmp_path_factory.mktemp("error-models")
    broken = write_custom_model(
        root / "broken",
        {"name": "broken", "implementation": "model.Broken"},
        # A custom runtime whose load() raises: that model is UNAVAILABLE, the rest serve.
        """
        from inferline.runtimes import Runtime


        class Broken(Runtime):
            async def load(self):
                raise RuntimeError("weights file is corrupt")

            async def predict(self, request):
                raise AssertionError("never loaded, never called")
        """,
    )
    missing = root / "missing-file"
    missing.mkdir()
    (missing / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "missing-file",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./not-there.joblib"},
            }
        )
    )
    return {"broken": broken, "missing": missing}


@pytest.fixture(scope="module", params=[(), ("--front",)], ids=["one-process", "front"])
def servers(request, serve, iris_dir, model_dirs):
    # Both start in parallel; each is waited for before use.
    main = serve(
        iris_dir, model_dirs["broken"], model_dirs["missing"], extra_args=request.param, wait=False
    )
    small = serve(
        iris_dir,
        extra_args=(
            *request.param,
            "--max-request-size", str(MAX_REQUEST_SIZE),
            "--max-grpc-message-size", str(MAX_GRPC_MESSAGE_SIZE),
        ),
        wait=False,
    )  # fmt: skip
    return {"main": serve.wait_ready(main), "small": serve.wait_ready(small)}


@pytest.fixture(scope="module")
def grpc_clients(servers):
    clients = {
        key: grpcclient.InferenceServerClient(url=server.grpc_address)
        for key, server in servers.items()
    }
    yield clients
    for client in clients.values():
        client.close()


def _features(rows: int = 2, columns: int = 4) -> np.ndarray:
    return np.arange(rows * columns, dtype=np.float32).reshape(rows, columns) / 10


def _tensor(shape=(2, 4), datatype="FP32", data: Any = None, **extra) -> dict:
    if data is None:
        data = _features(*shape).ravel().tolist()
    return {"name": "input-0", "shape": list(shape), "datatype": datatype, "data": data, **extra}


# --- REST --------------------------------------------------------------------------------------


@dataclass
class RestCase:
    id: str
    status: int
    fragments: tuple[str, ...]
    path: str = "/v2/models/iris/infer"
    method: str = "POST"
    body: Any = None  # a dict is sent as JSON, bytes as they are, a callable as what it returns
    headers: dict = field(default_factory=dict)
    server: str = "main"


def _chunks(size: int):
    # A generator body goes out chunked, without Content-Length, so the limit applies while reading.
    for _ in range(size // 500):
        yield b" " * 500


_BINARY_HEADER = json.dumps(
    {"inputs": [{**_tensor(), "data": None, "parameters": {"binary_data_size": 64}}]}
).encode()

REST_CASES = [
    RestCase("malformed-json", 400, ("JSON",), body=b'{"inputs": [{"name": '),
    RestCase("json-not-an-object", 400, ("JSON object",), body=b"[1, 2, 3]"),
    RestCase("no-inputs", 400, ("inputs",), body={"id": "x"}),
    RestCase(
        "wrong-element-count",
        400,
        ("shape [2, 4]", "8 elements", "7 elements"),
        body={"inputs": [_tensor(data=list(range(7)))]},
    ),
    RestCase(
        "shape-not-a-list",
        400,
        ("shape",),
        body={"inputs": [{**_tensor(), "shape": "2x4"}]},
    ),
    RestCase(
        "strings-in-fp32",
        400,
        ("FP32", "numbers"),
        body={"inputs": [_tensor(data=["a"] * 8)]},
    ),
    RestCase(
        "floats-in-int32",
        400,
        ("INT32", "integers"),
        body={"inputs": [_tensor(datatype="INT32", data=[0.5] * 8)]},
    ),
    RestCase(
        "unknown-datatype",
        400,
        ("FP99",),
        body={"inputs": [_tensor(datatype="FP99")]},
    ),
    RestCase(
        "binary-size-past-end",
        400,
        ("binary_data_size",),
        body=_BINARY_HEADER + _features().tobytes(),
        headers={"Inference-Header-Content-Length": str(len(_BINARY_HEADER))},
    ),
    RestCase(
        "header-length-not-integer",
        400,
        ("Inference-Header-Content-Length",),
        body={"inputs": [_tensor()]},
        headers={"Inference-Header-Content-Length": "many"},
    ),
    RestCase(
        "unknown-model",
        404,
        ("nope",),
        path="/v2/models/nope/infer",
        body={"inputs": [_tensor()]},
    ),
    RestCase(
        "unknown-version",
        404,
        ("v9",),
        path="/v2/models/iris/versions/v9/infer",
        body={"inputs": [_tensor()]},
    ),
    RestCase("unknown-model-metadata", 404, ("nope",), path="/v2/models/nope", method="GET"),
    RestCase("unknown-route", 404, ("/v2/nothing",), path="/v2/nothing", method="GET"),
    RestCase("get-on-infer", 405, ("POST",), method="GET"),
    RestCase(
        "unknown-output",
        400,
        ("nope",),
        body={"inputs": [_tensor()], "outputs": [{"name": "nope"}]},
    ),
    RestCase(
        "sklearn-wrong-feature-count",
        400,
        (SKLEARN_FEATURES_MESSAGE,),
        body={"inputs": [_tensor(shape=(2, 3))]},
    ),
    RestCase(
        "oversized-body",
        413,
        (str(MAX_REQUEST_SIZE), "--max-request-size"),
        body={"inputs": [_tensor(shape=(100, 4))]},
        server="small",
    ),
    RestCase(
        "oversized-chunked-body",
        413,
        ("at least", str(MAX_REQUEST_SIZE), "--max-request-size"),
        body=lambda: _chunks(4 * MAX_REQUEST_SIZE),
        server="small",
    ),
    RestCase(
        "model-whose-load-raised",
        503,
        ("broken", "UNAVAILABLE", "weights file is corrupt"),
        path="/v2/models/broken/infer",
        body={"inputs": [_tensor()]},
    ),
    RestCase(
        "metadata-of-model-whose-load-raised",
        503,
        ("broken", "weights file is corrupt"),
        path="/v2/models/broken",
        method="GET",
    ),
    RestCase(
        "load-missing-model-file",
        422,
        ("not-there.joblib", "does not exist"),
        path="/v2/repository/models/missing-file/load",
    ),
    RestCase("load-unknown-model", 404, ("nope",), path="/v2/repository/models/nope/load"),
    RestCase("unload-unknown-model", 404, ("nope",), path="/v2/repository/models/nope/unload"),
    RestCase(
        "repository-body-not-json",
        400,
        ("JSON",),
        path="/v2/repository/index",
        body=b"{index",
    ),
]


def _send(rest: httpx.Client, server, case: RestCase) -> httpx.Response:
    kwargs: dict[str, Any] = {"headers": case.headers}
    if isinstance(case.body, dict):
        kwargs["content"] = json.dumps(case.body).encode()
        kwargs["headers"] = {"Content-Type": "application/json", **case.headers}
    elif callable(case.body):  # a generator, made afresh for each server
        kwargs["content"] = case.body()
    elif case.body is not None:
        kwargs["content"] = case.body
    return rest.request(case.method, server.url + case.path, **kwargs)


@pytest.mark.parametrize("case", REST_CASES, ids=[c.id for c in REST_CASES])
def test_rest_bad_request_gets_clear_error(servers, rest, case, assert_iris_ok):
    server = servers[case.server]
    answer = _send(rest, server, case)
    assert answer.status_code == case.status, answer.text
    assert answer.headers["content-type"] == "application/json"
    message = answer.json()["error"]
    for fragment in case.fragments:
        assert fragment in message
    # The server keeps answering good requests; so does the other one.
    assert_iris_ok(server)
    assert_iris_ok(servers["main" if case.server == "small" else "small"])


def test_rest_model_whose_load_raised_is_not_ready(servers, rest, assert_iris_ok):
    server = servers["main"]
    answer = rest.get(f"{server.url}/v2/models/broken/ready")
    assert answer.status_code == 503
    assert answer.json() == {"name": "broken", "ready": False}
    # The server as a whole is ready: the failure is that model's alone.
    assert rest.get(f"{server.url}/v2/health/ready").status_code == 200
    assert_iris_ok(server)


def test_repository_index_shows_failed_models_with_reason(servers, rest, grpc_clients):
    server = servers["main"]
    rows = {row["name"]: row for row in rest.post(f"{server.url}/v2/repository/index").json()}
    assert rows["iris"]["state"] == "READY"
    assert rows["broken"]["state"] == "UNAVAILABLE"
    assert "weights file is corrupt" in rows["broken"]["reason"]
    assert rows["missing-file"]["state"] == "UNAVAILABLE"
    assert "not-there.joblib" in rows["missing-file"]["reason"]
    ready_only = rest.post(f"{server.url}/v2/repository/index", json={"ready": True}).json()
    assert [row["name"] for row in ready_only] == ["iris"]

    index = grpc_clients["main"].get_model_repository_index(as_json=True)["models"]
    grpc_rows = {row["name"]: row for row in index}
    assert grpc_rows["broken"]["state"] == "UNAVAILABLE"
    assert "weights file is corrupt" in grpc_rows["broken"]["reason"]
    assert grpc_rows["iris"]["state"] == "READY"


def test_grpc_model_whose_load_raised_is_not_ready(grpc_clients):
    assert grpc_clients["main"].is_server_ready()
    assert not grpc_clients["main"].is_model_ready("broken")
    assert grpc_clients["main"].is_model_ready("iris")


# --- gRPC --------------------------------------------------------------------------------------


def _grpc_input(features: np.ndarray, shape=None):
    tensor = grpcclient.InferInput("input-0", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    if shape is not None:
        tensor.set_shape(list(shape))  # claim a shape the raw contents do not have
    return tensor


def _raw_infer(server, request: service_pb2.ModelInferRequest):
    # A hand-made message, for what tritonclient refuses to send.
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=10)
        except grpc.RpcError as exc:
            raise InferenceServerException(exc.details(), str(exc.code())) from None


@dataclass
class GrpcCase:
    id: str
    code: grpc.StatusCode
    fragments: tuple[str, ...]
    call: Any  # (client, server) -> None, expected to raise
    server: str = "main"


GRPC_CASES = [
    GrpcCase(
        "wrong-shape",
        grpc.StatusCode.INVALID_ARGUMENT,
        ("input-0",),
        lambda client, server: client.infer("iris", [_grpc_input(_features(2), shape=(3, 4))]),
    ),
    GrpcCase(
        "unknown-datatype",
        grpc.StatusCode.INVALID_ARGUMENT,
        ("FP99",),
        lambda client, server: _raw_infer(
            server,
            service_pb2.ModelInferRequest(
                model_name="iris",
                inputs=[{"name": "input-0", "datatype": "FP99", "shape": [1, 4]}],
                raw_input_contents=[b"\0" * 16],
            ),
        ),
    ),
    GrpcCase(
        "contents-count-mismatch",
        grpc.StatusCode.INVALID_ARGUMENT,
        ("elements",),
        lambda client, server: _raw_infer(
            server,
            service_pb2.ModelInferRequest(
                model_name="iris",
                inputs=[
                    {
                        "name": "input-0",
                        "datatype": "FP32",
                        "shape": [2, 4],
                        "contents": {"fp32_contents": [1.0, 2.0, 3.0]},
                    }
                ],
            ),
        ),
    ),
    GrpcCase(
        "sklearn-wrong-feature-count",
        grpc.StatusCode.INVALID_ARGUMENT,
        (SKLEARN_FEATURES_MESSAGE,),
        lambda client, server: client.infer("iris", [_grpc_input(_features(2, 3))]),
    ),
    GrpcCase(
        "unknown-output",
        grpc.StatusCode.INVALID_ARGUMENT,
        ("nope",),
        lambda client, server: client.infer(
            "iris", [_grpc_input(_features())], outputs=[grpcclient.InferRequestedOutput("nope")]
        ),
    ),
    GrpcCase(
        "unknown-model",
        grpc.StatusCode.NOT_FOUND,
        ("nope",),
        lambda client, server: client.infer("nope", [_grpc_input(_features())]),
    ),
    GrpcCase(
        "unknown-model-metadata",
        grpc.StatusCode.NOT_FOUND,
        ("nope",),
        lambda client, server: client.get_model_metadata("nope"),
    ),
    GrpcCase(
        "unload-unknown-model",
        grpc.StatusCode.NOT_FOUND,
        ("nope",),
        lambda client, server: client.unload_model("nope"),
    ),
    GrpcCase(
        "model-whose-load-raised",
        grpc.StatusCode.UNAVAILABLE,
        ("broken", "weights file is corrupt"),
        lambda client, server: client.infer("broken", [_grpc_input(_features())]),
    ),
    GrpcCase(
        "load-missing-model-file",
        grpc.StatusCode.FAILED_PRECONDITION,
        ("not-there.joblib",),
        lambda client, server: client.load_model("missing-file"),
    ),
    GrpcCase(
        "message-over-limit",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        (),
        lambda client, server: client.infer("iris", [_grpc_input(_features(1000))]),
        server="small",
    ),
    GrpcCase(
        # 200 x 4 FP32 in (3200 bytes) fits; 200 x 3 FP64 out (4800 bytes) does not.
        "response-over-limit",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        (str(MAX_GRPC_MESSAGE_SIZE),),
        lambda client, server: client.infer(
            "iris",
            [_grpc_input(_features(200))],
            outputs=[grpcclient.InferRequestedOutput("predict_proba")],
        ),
        server="small",
    ),
]


@pytest.mark.parametrize("case", GRPC_CASES, ids=[c.id for c in GRPC_CASES])
def test_grpc_bad_request_gets_clear_status(
    servers, grpc_clients, case, iris_features, iris_expected
):
    server, client = servers[case.server], grpc_clients[case.server]
    with pytest.raises(InferenceServerException) as caught:
        case.call(client, server)
    assert caught.value.status() == str(case.code), caught.value.message()
    for fragment in case.fragments:
        assert fragment in caught.value.message()
    # A good request on the same channel still succeeds.
    server.assert_running()
    result = client.infer("iris", [_grpc_input(iris_features)])
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])


def test_grpc_message_limit_names_sizes(servers, grpc_clients):
    with pytest.raises(InferenceServerException) as caught:
        grpc_clients["small"].infer("iris", [_grpc_input(_features(1000))])
    assert caught.value.status() == str(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert str(MAX_GRPC_MESSAGE_SIZE) in caught.value.message()


def test_grpc_message_under_limit_is_served(servers, grpc_clients):
    # 100 rows x 4 FP32 = 1600 bytes of tensor data: well under the 4096-byte limit.
    result = grpc_clients["small"].infer("iris", [_grpc_input(_features(100))])
    assert result.as_numpy("predict").shape == (100, 1)
