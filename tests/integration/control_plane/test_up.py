"""`inferline up --servers 2` end to end, driven as a user drives it: the CLI as a subprocess,
V2 clients (httpx, tritonclient, the gRPC stub) against the router's ports.

The module shares one platform. Tests run in file order: the ones that change the `iris` model
(a new version, the unload, Seldon's integration test data) come last, and each of them reads
the state it starts from instead of assuming it.
"""

import json
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf.json_format import MessageToDict, ParseDict
from tritonclient.utils import InferenceServerException

from inferline.protocol.proto import inference_pb2, inference_pb2_grpc

from ._platform import (
    IRIS_CLASS,
    IRIS_REQUEST_JSON,
    SAMPLES,
    Traffic,
    Up,
    model_yaml,
    one_error_line,
    printed_json,
    table_rows,
    wait_until,
    with_storage_uri,
    write_file,
)

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "iris.yaml"
NO_MATCHING_SERVERS = "Failed to schedule model as no matching servers are available"


@pytest.fixture(scope="module")
def up(up_factory) -> Up:
    return up_factory(2)


@pytest.fixture(scope="module")
def iris_file(up, iris_artifact) -> Path:
    """examples/iris.yaml with its storageUri made absolute."""
    text = EXAMPLE.read_text() if EXAMPLE.exists() else model_yaml("iris", "./unused")
    return write_file(up.workdir, "iris.yaml", with_storage_uri(text, iris_artifact))


@pytest.fixture(scope="module")
def iris(up, iris_file):
    """`inferline load -f iris.yaml`, then `inferline model status iris -w ModelAvailable`."""
    loaded = up.cli("load", "-f", str(iris_file))
    status = up.cli("model", "status", "iris", "-w", "ModelAvailable", "-t", "60")
    return loaded, status


def test_load_then_status_waits_until_available(iris):
    loaded, status = iris
    assert loaded.stdout.strip() == "model/iris created"
    assert "ModelAvailable" in status.stdout
    # model / version / state / replicas / server / reason
    assert ["iris", "1", "ModelAvailable", "1/1", "mlserver", ""] in table_rows(status.stdout)


def test_cli_infer_rest_shows_route_request_id_and_prediction(up, iris):
    result = up.cli("model", "infer", "iris", IRIS_REQUEST_JSON, "--show-headers")
    assert "x-seldon-route: :iris_1:" in result.stdout
    assert re.search(r"^x-request-id: [0-9a-v]{20}$", result.stdout, re.MULTILINE), result.stdout
    body = printed_json(result.stdout)
    assert body["model_name"] == "iris_1"
    assert body["model_version"] == "1"
    assert body["outputs"][0]["data"] == [IRIS_CLASS]


def test_cli_infer_grpc_shows_route_request_id_and_prediction(up, iris):
    result = up.cli(
        "model", "infer", "iris", IRIS_REQUEST_JSON, "--inference-mode", "grpc", "--show-headers"
    )
    assert "x-seldon-route: :iris_1:" in result.stdout
    assert re.search(r"^x-request-id: \S+$", result.stdout, re.MULTILINE), result.stdout
    body = printed_json(result.stdout)
    assert body["model_name"] == "iris_1"
    assert body["outputs"][0]["data"] == [IRIS_CLASS]


def test_cli_infer_loop_counts_answers_by_route(up, iris):
    result = up.cli("model", "infer", "iris", IRIS_REQUEST_JSON, "-i", "5")
    assert result.stdout.strip() == "Success: {':iris_1:': 5}"


def test_tritonclient_http_and_grpc_through_the_router(up, iris):
    features = np.array([[1, 2, 3, 4]], dtype=np.float32)

    rest = triton_http.InferenceServerClient(f"127.0.0.1:{up.http_port}")
    tensor = triton_http.InferInput("predict", [1, 4], "FP32")
    tensor.set_data_from_numpy(features)
    answer = rest.infer("iris", [tensor])
    assert answer.get_response()["model_name"] == "iris_1"
    assert answer.as_numpy("predict").tolist() == [[IRIS_CLASS]]
    rest.close()

    client = triton_grpc.InferenceServerClient(up.grpc_address)
    tensor = triton_grpc.InferInput("predict", [1, 4], "FP32")
    tensor.set_data_from_numpy(features)
    answer = client.infer("iris", [tensor])
    assert answer.get_response().model_name == "iris_1"
    assert answer.as_numpy("predict").tolist() == [[IRIS_CLASS]]
    client.close()


def test_seldon_model_header_routes_and_beats_the_path(up, iris):
    # The header names the model; the path's name does not matter.
    answer = up.infer("iris", path="anything", headers={"seldon-model": "iris"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == "iris_1"
    assert answer.headers["x-seldon-route"] == ":iris_1:"
    # Header beats path: a valid path with an unknown header model is not found.
    answer = up.infer("iris", headers={"seldon-model": "nope"})
    assert answer.status_code == 404, answer.text
    assert "nope" in answer.json()["error"]
    # A caller's request id is kept.
    answer = up.infer("iris", headers={"x-request-id": "my-request-1"})
    assert answer.headers["x-request-id"] == "my-request-1"


def test_model_metadata_is_the_served_version(up, iris):
    metadata = json.loads(up.cli("model", "metadata", "iris").stdout)
    assert metadata["name"] == "iris_1"
    assert metadata["versions"] == ["1"]


def test_model_list_server_list_and_server_status(up, iris):
    models = table_rows(up.cli("model", "list").stdout)
    # model / version / state / replicas / server / reason
    assert ["iris", "1", "ModelAvailable", "1/1", "mlserver", ""] in models, models

    table = up.cli("server", "list").stdout
    assert ["mlserver", "2", "1"] in table_rows(table), table  # server / replicas / models

    status = up.cli("server", "status", "mlserver", "--json")
    doc = json.loads(status.stdout)
    assert doc["availableReplicas"] == 2
    replicas = {r["replica"]: r for r in doc["replicas"]}
    assert sorted(replicas) == [0, 1]
    assert all(isinstance(r["pid"], int) for r in replicas.values())
    assert sum("iris_1" in r["loadedModels"] for r in replicas.values()) == 1
    rows = table_rows(up.cli("server", "status", "mlserver").stdout)
    # replica / http / grpc / pid / memory / models
    shown = {row[0]: (row[3], row[5]) for row in rows if len(row) == 6}
    assert shown == {
        str(i): (str(r["pid"]), ", ".join(r["loadedModels"])) for i, r in replicas.items()
    }


def test_model_with_two_replicas_sits_on_distinct_server_replicas(up, iris_artifact):
    path = write_file(
        up.workdir, "iris-two.yaml", model_yaml("iris-two", iris_artifact, replicas=2)
    )
    assert up.cli("load", "-f", str(path)).stdout.strip() == "model/iris-two created"
    result = up.cli("model", "status", "iris-two", "-w", "ModelAvailable", "-t", "60", "--json")
    status = json.loads(result.stdout)
    assert status["availableReplicas"] == 2
    assert status["desiredReplicas"] == 2
    (version,) = status["versions"]
    assert version["modelReplicaState"] == {
        "0": {"state": "Available", "reason": ""},
        "1": {"state": "Available", "reason": ""},
    }
    wait_until(lambda: up.holders("iris-two_1") == [0, 1], 10, "both replicas to hold iris-two_1")
    up.wait_iris_answers("iris-two", "iris-two_1")
    for _ in range(3):
        up.assert_iris_answers("iris-two", "iris-two_1")


def test_requirement_no_server_offers_is_schedule_failed(up, iris_artifact):
    yaml_text = model_yaml("iris-gpu", iris_artifact, requirements=("gpu-only",))
    path = write_file(up.workdir, "iris-gpu.yaml", yaml_text)
    up.cli("load", "-f", str(path))
    result = up.cli("model", "status", "iris-gpu", "-w", "ScheduleFailed", "-t", "30", "--json")
    status = json.loads(result.stdout)
    assert status["state"] == "ScheduleFailed"
    assert status["reason"] == NO_MATCHING_SERVERS
    assert status["availableReplicas"] == 0
    answer = up.infer("iris-gpu")
    assert answer.status_code == 503, answer.text
    assert NO_MATCHING_SERVERS in answer.json()["error"]
    waited = up.cli("model", "status", "iris-gpu", "-w", "ModelAvailable", "-t", "1", expect=1)
    assert one_error_line(waited) == (
        "error: timed out after 1 s waiting for model 'iris-gpu' to be ModelAvailable; "
        f"it is ScheduleFailed ({NO_MATCHING_SERVERS})"
    )
    assert up.cli("model", "unload", "iris-gpu").stdout.strip() == "model/iris-gpu deleted"


def test_replicas_change_is_a_scale_not_a_new_version(up, iris_artifact):
    manifest = model_yaml("iris-two", iris_artifact, replicas=2)
    path = write_file(up.workdir, "iris-two.yaml", manifest)
    up.cli("load", "-f", str(path))
    version = up.wait_model("iris-two", replicas=2)["version"]
    scaled = write_file(up.workdir, "iris-two-1.yaml", model_yaml("iris-two", iris_artifact))
    assert up.cli("load", "-f", str(scaled)).stdout.strip() == "model/iris-two scaled"
    wait_until(
        lambda: len(up.holders(f"iris-two_{version}")) == 1, 20, "one replica of iris-two left"
    )
    status = up.wait_model("iris-two", replicas=1)
    assert status["version"] == version
    assert status["desiredReplicas"] == 1
    assert up.cli("load", "-f", str(scaled)).stdout.strip() == "model/iris-two unchanged"


def test_storage_uri_change_makes_a_new_version_that_takes_over(
    up, iris, iris_file, iris_artifact_copy
):
    before = up.model("iris")["version"]
    after = before + 1
    changed = with_storage_uri(iris_file.read_text(), iris_artifact_copy)
    path = write_file(up.workdir, "iris-moved.yaml", changed)
    with Traffic(up, "iris") as traffic:
        traffic.wait_for(10)
        assert up.cli("load", "-f", str(path)).stdout.strip() == f"model/iris version {after}"
        up.cli("model", "status", "iris", "-w", "ModelAvailable", "-t", "60")
        status = up.model("iris")
        assert status["version"] == after
        assert status["versions"][0]["modelDefn"]["storageUri"] == str(iris_artifact_copy)
        # Once the new version is available it answers, and the old one is retired.
        wait_until(
            lambda: traffic.served_by()[-1] == f"iris_{after}",
            10,
            f"the router to answer with iris_{after}",
        )
        wait_until(lambda: up.holders(f"iris_{before}") == [], 20, f"iris_{before} unloaded")
        traffic.wait_for(len(traffic.answers) + 10)
    # The old version answered until the new one could: no request failed on the way.
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.served_by() == [f"iris_{before}", f"iris_{after}"]
    up.assert_iris_answers("iris", f"iris_{after}")
    assert [v["version"] for v in up.model("iris")["versions"]] == [after]


def test_unload_then_infer_is_a_404_error_line(up, iris, iris_file):
    assert up.cli("unload", "-f", str(iris_file)).stdout.strip() == "model/iris deleted"
    wait_until(lambda: up.infer("iris").status_code == 404, 10, "the router to forget iris")
    result = up.cli("model", "infer", "iris", IRIS_REQUEST_JSON, expect=1)
    assert one_error_line(result) == "error: 404: model 'iris' not found"
    missing = up.cli("model", "status", "iris", expect=1)
    assert one_error_line(missing) == "error: model 'iris' not found"
    # gRPC: NOT_FOUND (inferline's documented choice; Seldon's Envoy answers UNIMPLEMENTED).
    client = triton_grpc.InferenceServerClient(up.grpc_address)
    tensor = triton_grpc.InferInput("predict", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    with pytest.raises(InferenceServerException) as failure:
        client.infer("iris", [tensor])
    assert failure.value.status() == "StatusCode.NOT_FOUND"
    client.close()


def test_seldon_integration_testdata_sklearn_iris_over_grpc(up, iris_artifact):
    folder = SAMPLES / "integration-testdata"
    if not folder.is_dir():
        pytest.skip(f"Seldon Core 2 samples not found at {SAMPLES}")
    # Start from no `iris` at all, so this is version 1, and wait until no server holds it.
    up.delete_model("iris")
    wait_until(lambda: not any(up.holders(f"iris_{v}") for v in (1, 2, 3)), 20, "iris unloaded")

    manifest = with_storage_uri((folder / "sklearn-iris.yaml").read_text(), iris_artifact)
    path = write_file(up.workdir, "sklearn-iris.yaml", manifest)
    assert up.cli("load", "-f", str(path)).stdout.strip() == "model/iris created"
    up.wait_model("iris", version=1)
    up.wait_iris_answers("iris", "iris_1")

    request = ParseDict(
        json.loads((folder / "sklearn-iris-request.json").read_text()),
        inference_pb2.ModelInferRequest(),
    )
    expected = json.loads((folder / "sklearn-iris-response.json").read_text())
    with grpc.insecure_channel(up.grpc_address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(
            request, metadata=[("seldon-model", "iris")], timeout=30
        )
        assert MessageToDict(response) == expected
        assert dict(call.initial_metadata())["x-seldon-route"] == ":iris_1:"
        # Without the header the request's own model_name routes it.
        assert MessageToDict(stub.ModelInfer(request, timeout=30)) == expected
