"""xgboost, lightgbm and ONNX models served by `inferline serve` as a real process, called with
tritonclient over HTTP (binary tensors, its default) and gRPC.

One server serves all four folders: two MLServer folders, a bare `model.onnx` folder and an ONNX
folder with settings.
"""

import grpc
import numpy as np
import pytest

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("onnxruntime")
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

MODELS = ("xgb-iris", "lgbm-iris", "linear", "two-inputs")


@pytest.fixture(scope="module")
def server(serve, xgboost_dir, lightgbm_dir, onnx_linear_dir, onnx_two_inputs_dir):
    return serve(xgboost_dir, lightgbm_dir, onnx_linear_dir, onnx_two_inputs_dir)


@pytest.fixture(scope="module")
def http_client(server):
    client = httpclient.InferenceServerClient(url=server.http_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server):
    client = grpcclient.InferenceServerClient(url=server.grpc_address)
    yield client
    client.close()


def http_input(name, array, datatype):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # binary_data=True, tritonclient's default
    return tensor


def grpc_input(name, array, datatype):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_every_model_is_ready(http_client, grpc_client):
    index = {m["name"]: m["state"] for m in http_client.get_model_repository_index()}
    assert index == dict.fromkeys(MODELS, "READY")
    assert all(grpc_client.is_model_ready(name) for name in MODELS)


# --- xgboost (an MLServer folder) ----------------------------------------------------------------


def test_xgboost_http_binary(http_client, xgboost_model, iris_rows):
    outputs = [httpclient.InferRequestedOutput(n) for n in ("predict", "predict_proba")]
    result = http_client.infer(
        "xgb-iris", [http_input("input-0", iris_rows, "FP32")], outputs=outputs
    )
    response = result.get_response()
    assert response["model_version"] == "v1"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    np.testing.assert_array_equal(
        result.as_numpy("predict"), xgboost_model.predict(iris_rows).reshape(-1, 1)
    )
    np.testing.assert_array_equal(
        result.as_numpy("predict_proba"), xgboost_model.predict_proba(iris_rows)
    )


def test_xgboost_grpc(grpc_client, xgboost_model, iris_rows):
    outputs = [grpcclient.InferRequestedOutput("predict_proba")]
    result = grpc_client.infer(
        "xgb-iris", [grpc_input("input-0", iris_rows, "FP32")], outputs=outputs
    )
    assert [o.name for o in result.get_response().outputs] == ["predict_proba"]
    np.testing.assert_array_equal(
        result.as_numpy("predict_proba"), xgboost_model.predict_proba(iris_rows)
    )
    # Without requested outputs the answer is `predict`, as MLServer's.
    result = grpc_client.infer("xgb-iris", [grpc_input("input-0", iris_rows, "FP32")])
    assert result.as_numpy("predict").ravel().tolist() == xgboost_model.predict(iris_rows).tolist()


def test_xgboost_bad_requests_are_400(http_client, grpc_client, iris_rows):
    with pytest.raises(InferenceServerException, match="takes 4 features per row") as caught:
        http_client.infer("xgb-iris", [http_input("input-0", iris_rows[:, :3], "FP32")])
    assert caught.value.status() == "400"
    outputs = [grpcclient.InferRequestedOutput("embedding")]
    with pytest.raises(InferenceServerException, match="no output 'embedding'") as caught:
        grpc_client.infer("xgb-iris", [grpc_input("input-0", iris_rows, "FP32")], outputs=outputs)
    assert caught.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)


# --- lightgbm (an MLServer folder) ---------------------------------------------------------------


def test_lightgbm_http_and_grpc(http_client, grpc_client, lightgbm_model, iris_rows):
    expected = lightgbm_model.predict(iris_rows)
    result = http_client.infer("lgbm-iris", [http_input("input-0", iris_rows, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("predict"), expected)
    result = grpc_client.infer("lgbm-iris", [grpc_input("input-0", iris_rows, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("predict"), expected)


# --- ONNX ----------------------------------------------------------------------------------------


def test_onnx_metadata_comes_from_the_graph(http_client, grpc_client):
    doc = http_client.get_model_metadata("linear")
    assert doc["platform"] == "onnxruntime_onnx"
    assert doc["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert doc["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    meta = grpc_client.get_model_metadata("two-inputs")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("a", "FP32", [-1, 3]),
        ("b", "INT64", [-1, 3]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("sum", "FP32", [-1, 3]),
        ("argmax", "INT64", [-1]),
    ]


def test_onnx_http_binary(http_client, iris_rows, onnx_linear):
    result = http_client.infer("linear", [http_input("x", iris_rows, "FP32")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["y"]
    np.testing.assert_allclose(result.as_numpy("y"), onnx_linear(iris_rows), rtol=1e-6)


def test_onnx_single_input_by_position_converts_without_loss(http_client, iris_rows, onnx_linear):
    # Not named as the graph's input, so fed to it by position; FP16 -> FP32 loses nothing.
    half = iris_rows.astype(np.float16)
    result = http_client.infer("linear", [http_input("input-0", half, "FP16")])
    np.testing.assert_allclose(
        result.as_numpy("y"), onnx_linear(half.astype(np.float32)), rtol=1e-6
    )
    with pytest.raises(InferenceServerException, match="FP64 but model 'linear' takes FP32"):
        http_client.infer("linear", [http_input("input-0", iris_rows.astype(np.float64), "FP64")])


def test_onnx_grpc_two_inputs_and_int64_output(grpc_client):
    a = np.array([[0.5, 0, 0], [0, 0, 0], [0, 0, 0.25]], dtype=np.float32)
    b = np.array([[0, 0, 1], [2, 0, 0], [0, 0, 0]], dtype=np.int64)
    inputs = [grpc_input("a", a, "FP32"), grpc_input("b", b, "INT64")]
    result = grpc_client.infer("two-inputs", inputs)
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    argmax = result.as_numpy("argmax")
    assert (argmax.dtype, argmax.tolist()) == (np.int64, [2, 0, 2])
    only = grpc_client.infer(
        "two-inputs", inputs, outputs=[grpcclient.InferRequestedOutput("argmax")]
    )
    assert [o.name for o in only.get_response().outputs] == ["argmax"]


def test_onnx_bad_requests_are_400(http_client, grpc_client, iris_rows):
    with pytest.raises(InferenceServerException, match=r"expects \[-1, 4\]") as caught:
        http_client.infer("linear", [http_input("x", iris_rows[:, :3], "FP32")])
    assert caught.value.status() == "400"
    as_fp64 = [grpc_input("x", iris_rows.astype(np.float64), "FP64")]
    with pytest.raises(InferenceServerException, match="FP64.*FP32") as caught:
        grpc_client.infer("linear", as_fp64)
    assert caught.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
