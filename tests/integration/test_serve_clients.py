"""`inferline serve` as a real process, answered by tritonclient (HTTP, gRPC) and plain JSON.

One server serves the iris folder (MLServer settings) and a custom-runtime folder side by side.
Every test runs against one process and against a front process passing requests to a worker
(`--front`), which must answer alike.
"""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

IRIS = "iris"
VERSION = "v0.1.0"


@pytest.fixture(scope="module", params=[(), ("--front",)], ids=["one-process", "front"])
def server(request, serve, iris_dir, doubler_dir):
    return serve(iris_dir, doubler_dir, extra_args=request.param)


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


def _http_input(features, binary: bool = True):
    tensor = httpclient.InferInput("input-0", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features, binary_data=binary)
    return tensor


def _grpc_input(features):
    tensor = grpcclient.InferInput("input-0", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    return tensor


# --- health and metadata -----------------------------------------------------------------------


def test_health_live_and_ready(rest, server, http_client, grpc_client):
    assert rest.get(f"{server.url}/v2/health/live").json() == {"live": True}
    ready = rest.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()


def test_server_metadata(rest, server, http_client, grpc_client):
    doc = rest.get(f"{server.url}/v2").json()
    assert doc["name"] == "inferline"
    assert doc["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(doc["extensions"])
    assert http_client.get_server_metadata() == doc
    meta = grpc_client.get_server_metadata()
    assert meta.name == "inferline"
    assert {"binary_tensor_data", "model_repository"} <= set(meta.extensions)


def test_model_metadata(rest, server, http_client, grpc_client):
    answer = rest.get(f"{server.url}/v2/models/{IRIS}")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["name"] == IRIS
    assert doc["versions"] == [VERSION]
    assert http_client.get_model_metadata(IRIS) == doc
    versioned = rest.get(f"{server.url}/v2/models/{IRIS}/versions/{VERSION}").json()
    assert versioned == doc
    meta = grpc_client.get_model_metadata(IRIS)
    assert meta.name == IRIS
    assert list(meta.versions) == [VERSION]


def test_model_ready(rest, server, http_client, grpc_client):
    answer = rest.get(f"{server.url}/v2/models/{IRIS}/ready")
    assert answer.status_code == 200
    assert answer.json() == {"name": IRIS, "ready": True}
    versioned = rest.get(f"{server.url}/v2/models/{IRIS}/versions/{VERSION}/ready")
    assert versioned.status_code == 200
    assert http_client.is_model_ready(IRIS)
    assert http_client.is_model_ready(IRIS, VERSION)
    assert grpc_client.is_model_ready(IRIS)
    assert grpc_client.is_model_ready(IRIS, VERSION)
    assert grpc_client.is_model_ready("doubler")


# --- tritonclient.http -------------------------------------------------------------------------


def test_tritonclient_http_binary_default(http_client, iris_features, iris_expected):
    # No requested outputs: tritonclient asks for every output as binary; the default is predict.
    result = http_client.infer(IRIS, [_http_input(iris_features)], request_id="http-bin-1")
    response = result.get_response()
    assert response["id"] == "http-bin-1"
    assert response["model_name"] == IRIS
    assert response["model_version"] == VERSION
    assert [o["name"] for o in response["outputs"]] == ["predict"]
    assert "binary_data_size" in response["outputs"][0]["parameters"]
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])


def test_tritonclient_http_binary_requested_outputs(http_client, iris_features, iris_expected):
    outputs = [
        httpclient.InferRequestedOutput("predict"),
        httpclient.InferRequestedOutput("predict_proba"),
    ]
    result = http_client.infer(IRIS, [_http_input(iris_features)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict", "predict_proba"]
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), iris_expected["predict_proba"], rtol=1e-6
    )


def test_tritonclient_http_json(http_client, iris_features, iris_expected):
    outputs = [
        httpclient.InferRequestedOutput("predict", binary_data=False),
        httpclient.InferRequestedOutput("predict_proba", binary_data=False),
    ]
    result = http_client.infer(
        IRIS,
        [_http_input(iris_features, binary=False)],
        outputs=outputs,
        request_id="http-json-1",
        model_version=VERSION,
    )
    response = result.get_response()
    assert response["id"] == "http-json-1"
    assert response["model_name"] == IRIS
    assert response["model_version"] == VERSION
    for output in response["outputs"]:
        assert "data" in output
        assert "binary_data_size" not in output.get("parameters", {})
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), iris_expected["predict_proba"], rtol=1e-6
    )


def test_tritonclient_http_only_proba(http_client, iris_features, iris_expected):
    outputs = [httpclient.InferRequestedOutput("predict_proba")]
    result = http_client.infer(IRIS, [_http_input(iris_features)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]
    assert result.as_numpy("predict") is None
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), iris_expected["predict_proba"], rtol=1e-6
    )


# --- tritonclient.grpc -------------------------------------------------------------------------


def test_tritonclient_grpc_predict_and_proba(grpc_client, iris_features, iris_expected):
    outputs = [
        grpcclient.InferRequestedOutput("predict"),
        grpcclient.InferRequestedOutput("predict_proba"),
    ]
    result = grpc_client.infer(
        IRIS, [_grpc_input(iris_features)], outputs=outputs, request_id="grpc-1"
    )
    response = result.get_response()
    assert response.id == "grpc-1"
    assert response.model_name == IRIS
    assert response.model_version == VERSION
    assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), iris_expected["predict_proba"], rtol=1e-6
    )


def test_tritonclient_grpc_default_output(grpc_client, iris_features, iris_expected):
    result = grpc_client.infer(IRIS, [_grpc_input(iris_features)], model_version=VERSION)
    assert [o.name for o in result.get_response().outputs] == ["predict"]
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])


def test_tritonclient_grpc_requested_outputs_honoured(grpc_client, iris_features, iris_expected):
    outputs = [grpcclient.InferRequestedOutput("predict_proba")]
    result = grpc_client.infer(IRIS, [_grpc_input(iris_features)], outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["predict_proba"]
    assert result.as_numpy("predict") is None
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), iris_expected["predict_proba"], rtol=1e-6
    )


# --- plain JSON over httpx ---------------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True], ids=["nested-data", "flat-data"])
def test_plain_json(rest, server, iris_request, iris_expected, flat):
    body = iris_request("json-1", flat=flat)
    body["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    answer = rest.post(f"{server.url}/v2/models/{IRIS}/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    doc = answer.json()
    assert doc["id"] == "json-1"
    assert doc["model_name"] == IRIS
    assert doc["model_version"] == VERSION
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert list(outputs) == ["predict", "predict_proba"]
    assert outputs["predict"]["datatype"] == "INT64"
    assert outputs["predict"]["shape"] == list(iris_expected["predict"].shape)
    assert outputs["predict"]["data"] == iris_expected["predict"].ravel().tolist()
    assert outputs["predict_proba"]["datatype"] == "FP64"
    assert outputs["predict_proba"]["shape"] == list(iris_expected["predict_proba"].shape)
    np.testing.assert_allclose(
        np.array(outputs["predict_proba"]["data"]).reshape(outputs["predict_proba"]["shape"]),
        iris_expected["predict_proba"],
        rtol=1e-6,
    )


def test_plain_json_without_outputs_gives_predict(rest, server, iris_request, iris_expected):
    answer = rest.post(f"{server.url}/v2/models/{IRIS}/infer", json=iris_request("json-2"))
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["id"] == "json-2"
    assert [o["name"] for o in doc["outputs"]] == ["predict"]
    assert doc["outputs"][0]["data"] == iris_expected["predict"].ravel().tolist()


def test_plain_json_only_proba(rest, server, iris_request, iris_expected):
    body = iris_request("json-3")
    body["outputs"] = [{"name": "predict_proba"}]
    doc = rest.post(f"{server.url}/v2/models/{IRIS}/infer", json=body).json()
    assert [o["name"] for o in doc["outputs"]] == ["predict_proba"]


def test_request_without_id_gets_no_id(rest, server, iris_request):
    body = iris_request()
    del body["id"]
    doc = rest.post(f"{server.url}/v2/models/{IRIS}/infer", json=body).json()
    assert doc.get("id") in (None, "")
    assert doc["model_name"] == IRIS


# --- versions ----------------------------------------------------------------------------------


def test_versioned_infer_path(rest, server, iris_request, iris_expected):
    answer = rest.post(
        f"{server.url}/v2/models/{IRIS}/versions/{VERSION}/infer", json=iris_request("v-1")
    )
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["id"] == "v-1"
    assert doc["model_version"] == VERSION
    assert doc["outputs"][0]["data"] == iris_expected["predict"].ravel().tolist()


def test_unknown_version_is_404(rest, server, iris_request, grpc_client, iris_features):
    answer = rest.post(
        f"{server.url}/v2/models/{IRIS}/versions/v9.9.9/infer", json=iris_request("v-2")
    )
    assert answer.status_code == 404
    assert "v9.9.9" in answer.json()["error"]
    ready = rest.get(f"{server.url}/v2/models/{IRIS}/versions/v9.9.9/ready")
    assert ready.status_code == 404
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer(IRIS, [_grpc_input(iris_features)], model_version="v9.9.9")
    assert caught.value.status() == str(grpc.StatusCode.NOT_FOUND)


# --- a custom runtime next to iris -------------------------------------------------------------


def test_several_models_in_one_server(rest, server, grpc_client):
    rows = rest.post(f"{server.url}/v2/repository/index", json={}).json()
    states = {row["name"]: row["state"] for row in rows}
    assert states == {IRIS: "READY", "doubler": "READY"}
    grpc_rows = grpc_client.get_model_repository_index(as_json=True)["models"]
    assert {row["name"]: row["state"] for row in grpc_rows} == states


def test_custom_runtime_over_rest(rest, server, assert_iris_ok):
    body = {
        "id": "double-1",
        "parameters": {"tag": "from-rest", "scale": 3, "debug": True},
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]}],
    }
    answer = rest.post(f"{server.url}/v2/models/doubler/infer", json=body)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["id"] == "double-1"
    assert doc["model_name"] == "doubler"
    # The request's parameters reached the model, which echoed them back.
    assert doc["parameters"] == {"tag": "from-rest", "scale": 3, "debug": True}
    (output,) = doc["outputs"]
    assert output == {
        "name": "x-doubled",
        "datatype": "INT32",
        "shape": [2, 3],
        "data": [2, 4, 6, 8, 10, 12],
    }
    assert_iris_ok(server)


def test_custom_runtime_over_tritonclient_http(http_client):
    data = np.array([[0.5, 1.5]], dtype=np.float32)
    tensor = httpclient.InferInput("y", [1, 2], "FP32")
    tensor.set_data_from_numpy(data)
    result = http_client.infer("doubler", [tensor], parameters={"tag": "from-http"})
    np.testing.assert_array_equal(result.as_numpy("y-doubled"), data * 2)
    assert result.get_response()["parameters"]["tag"] == "from-http"


def test_custom_runtime_over_grpc(grpc_client, iris_features, iris_expected):
    data = np.arange(6, dtype=np.int64).reshape(3, 2)
    tensor = grpcclient.InferInput("z", [3, 2], "INT64")
    tensor.set_data_from_numpy(data)
    result = grpc_client.infer(
        "doubler", [tensor], request_id="g-d-1", parameters={"tag": "from-grpc", "n": 7}
    )
    response = result.get_response()
    assert response.id == "g-d-1"
    assert response.model_name == "doubler"
    assert response.parameters["tag"].string_param == "from-grpc"
    assert response.parameters["n"].int64_param == 7
    np.testing.assert_array_equal(result.as_numpy("z-doubled"), data * 2)
    # iris answers from the same process over the same channel.
    iris = grpc_client.infer(IRIS, [_grpc_input(iris_features)])
    np.testing.assert_array_equal(iris.as_numpy("predict"), iris_expected["predict"])
