"""Model folders and the repository API of a real `inferline serve` process.

The server serves a parent folder holding model folders: the demo's MLServer iris folder, copied
unchanged, and a folder with only a `model.joblib`. Models are unloaded and loaded at run time over
REST and over gRPC, and folders copied in while the server runs are loaded by name.
"""

import contextlib
import filecmp
import json
import shutil

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

MLSERVER_IRIS_SETTINGS = {
    "name": "iris",
    "implementation": "mlserver_sklearn.SKLearnModel",
    "parameters": {"uri": "./model.joblib", "version": "v0.1.0"},
}


@pytest.fixture(scope="module")
def served_root(tmp_path_factory, iris_dir, copy_model_folder):
    root = tmp_path_factory.mktemp("served")
    copy_model_folder(iris_dir, root / "iris")
    (root / "sepal").mkdir()
    shutil.copy(iris_dir / "model.joblib", root / "sepal" / "model.joblib")
    return root


@pytest.fixture(scope="module")
def server(serve, served_root):
    return serve(served_root)


@pytest.fixture(scope="module")
def grpc_client(server):
    client = grpcclient.InferenceServerClient(url=server.grpc_address)
    yield client
    client.close()


def _index(rest, server, **body) -> dict[str, dict]:
    answer = rest.post(f"{server.url}/v2/repository/index", json=body)
    assert answer.status_code == 200, answer.text
    return {row["name"]: row for row in answer.json()}


def _infer(rest, server, model: str, request: dict):
    return rest.post(f"{server.url}/v2/models/{model}/infer", json=request)


def _grpc_infer(client, model: str, features: np.ndarray):
    tensor = grpcclient.InferInput("input-0", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    return client.infer(model, [tensor])


def _load(rest, server, name: str):
    return rest.post(f"{server.url}/v2/repository/models/{name}/load")


def _unload(rest, server, name: str):
    return rest.post(f"{server.url}/v2/repository/models/{name}/unload")


# --- model folders -----------------------------------------------------------------------------


def test_mlserver_model_folder_serves_unchanged(
    rest, server, iris_dir, served_root, iris_request, iris_expected
):
    # What train_iris writes is a plain MLServer model folder, MLServer's class path and all.
    assert json.loads((iris_dir / "model-settings.json").read_text()) == MLSERVER_IRIS_SETTINGS
    assert sorted(p.name for p in iris_dir.iterdir()) == ["model-settings.json", "model.joblib"]
    served = served_root / "iris"
    snapshot = {p.name: p.read_bytes() for p in served.iterdir()}
    comparison = filecmp.dircmp(iris_dir, served)
    assert comparison.left_only == comparison.right_only == comparison.diff_files == []

    metadata = rest.get(f"{server.url}/v2/models/iris").json()
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["v0.1.0"]
    assert rest.get(f"{server.url}/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    answer = _infer(rest, server, "iris", iris_request("mlserver-1"))
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["model_name"] == "iris"
    assert doc["model_version"] == "v0.1.0"
    assert doc["outputs"][0]["data"] == iris_expected["predict"].ravel().tolist()
    # Serving left the folder exactly as it was: nothing written next to the model.
    assert {p.name: p.read_bytes() for p in served.iterdir()} == snapshot


def test_folder_with_only_model_joblib_serves_under_folder_name(
    rest, server, grpc_client, iris_request, iris_features, iris_expected
):
    metadata = rest.get(f"{server.url}/v2/models/sepal")
    assert metadata.status_code == 200, metadata.text
    assert metadata.json()["name"] == "sepal"
    answer = _infer(rest, server, "sepal", iris_request("sepal-1"))
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["model_name"] == "sepal"
    assert doc["id"] == "sepal-1"
    assert "model_version" not in doc
    assert doc["outputs"][0]["data"] == iris_expected["predict"].ravel().tolist()
    result = _grpc_infer(grpc_client, "sepal", iris_features)
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])


# --- repository API over REST ------------------------------------------------------------------


def test_rest_repository_index(rest, server):
    rows = _index(rest, server)
    assert rows["iris"] == {"name": "iris", "version": "v0.1.0", "state": "READY", "reason": ""}
    assert rows["sepal"] == {"name": "sepal", "state": "READY", "reason": ""}
    assert {"iris", "sepal"} <= set(_index(rest, server, ready=True))


def test_rest_unload_then_load(rest, server, iris_request, assert_iris_ok):
    try:
        answer = _unload(rest, server, "iris")
        assert answer.status_code == 200, answer.text

        gone = _infer(rest, server, "iris", iris_request("after-unload"))
        assert gone.status_code == 404
        assert "iris" in gone.json()["error"]
        assert rest.get(f"{server.url}/v2/models/iris/ready").status_code == 404
        row = _index(rest, server)["iris"]
        assert row["state"] == "UNAVAILABLE"
        assert row["reason"] == "not loaded"
        assert "iris" not in _index(rest, server, ready=True)
        # The other model is untouched.
        assert_iris_ok(server, model="sepal")
        # Unloading twice: the model is no longer there.
        assert _unload(rest, server, "iris").status_code == 404
    finally:
        answer = _load(rest, server, "iris")
    assert answer.status_code == 200, answer.text
    assert _index(rest, server)["iris"]["state"] == "READY"
    assert_iris_ok(server)
    doc = _infer(rest, server, "iris", iris_request("after-load")).json()
    assert doc["model_version"] == "v0.1.0"


def test_rest_load_of_a_loaded_model_reloads_it(rest, server, assert_iris_ok):
    answer = _load(rest, server, "iris")
    assert answer.status_code == 200, answer.text
    assert _index(rest, server)["iris"]["state"] == "READY"
    assert_iris_ok(server)


def test_rest_load_unknown_model_is_404(rest, server, assert_iris_ok):
    answer = _load(rest, server, "no-such-model")
    assert answer.status_code == 404
    assert "no-such-model" in answer.json()["error"]
    assert_iris_ok(server)


# --- repository API over gRPC ------------------------------------------------------------------


def test_grpc_repository_index(grpc_client):
    rows = {r["name"]: r for r in grpc_client.get_model_repository_index(as_json=True)["models"]}
    assert rows["iris"]["state"] == "READY"
    assert rows["iris"]["version"] == "v0.1.0"
    assert rows["sepal"]["state"] == "READY"


def test_grpc_unload_then_load(grpc_client, iris_features, iris_expected):
    try:
        grpc_client.unload_model("sepal")
        with pytest.raises(InferenceServerException) as caught:
            _grpc_infer(grpc_client, "sepal", iris_features)
        assert caught.value.status() == str(grpc.StatusCode.NOT_FOUND)
        assert "sepal" in caught.value.message()
        rows = grpc_client.get_model_repository_index(as_json=True)["models"]
        assert {r["name"]: r["state"] for r in rows}["sepal"] == "UNAVAILABLE"
        # iris keeps answering over the same channel.
        result = _grpc_infer(grpc_client, "iris", iris_features)
        np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])
    finally:
        grpc_client.load_model("sepal")
    assert grpc_client.is_model_ready("sepal")
    result = _grpc_infer(grpc_client, "sepal", iris_features)
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])


def test_grpc_load_unknown_model_is_not_found(grpc_client, iris_features, iris_expected):
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.load_model("no-such-model")
    assert caught.value.status() == str(grpc.StatusCode.NOT_FOUND)
    result = _grpc_infer(grpc_client, "iris", iris_features)
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])


# --- folders added while the server runs -------------------------------------------------------


def test_folder_copied_in_while_running_loads_by_name(
    rest, server, grpc_client, served_root, iris_dir, copy_model_folder, iris_request
):
    # Not there yet: the name is unknown.
    assert _load(rest, server, "late-iris").status_code == 404

    copy_model_folder(iris_dir, served_root / "late-iris", name="late-iris")
    row = _index(rest, server)["late-iris"]
    assert row["state"] == "UNAVAILABLE"
    assert row["reason"] == "not loaded"
    assert _infer(rest, server, "late-iris", iris_request()).status_code == 404

    answer = _load(rest, server, "late-iris")
    assert answer.status_code == 200, answer.text
    doc = _infer(rest, server, "late-iris", iris_request("late-1")).json()
    assert doc["model_name"] == "late-iris"
    assert doc["model_version"] == "v0.1.0"
    assert _index(rest, server)["late-iris"]["state"] == "READY"


def test_joblib_folder_copied_in_while_running_loads_over_grpc(
    server, grpc_client, served_root, iris_dir, iris_features, iris_expected
):
    (served_root / "late-sepal").mkdir()
    shutil.copy(iris_dir / "model.joblib", served_root / "late-sepal" / "model.joblib")
    grpc_client.load_model("late-sepal")
    assert grpc_client.is_model_ready("late-sepal")
    result = _grpc_infer(grpc_client, "late-sepal", iris_features)
    assert result.get_response().model_name == "late-sepal"
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_expected["predict"])


# --- folders with unreadable settings ----------------------------------------------------------


@contextlib.contextmanager
def _malformed_folder(root):
    folder = root / "malformed"
    folder.mkdir()
    (folder / "model-settings.json").write_text('{"name": "malformed", ')
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_loading_a_model_with_malformed_settings_names_the_problem(
    rest, server, served_root, assert_iris_ok
):
    with _malformed_folder(served_root):
        answer = _load(rest, server, "malformed")
        assert answer.status_code == 400
        assert "not valid JSON" in answer.json()["error"]
        # Good folders next to it still load and serve.
        assert _load(rest, server, "sepal").status_code == 200
        assert_iris_ok(server)
        assert_iris_ok(server, model="sepal")


def test_malformed_settings_does_not_hide_other_models_from_index(
    rest, server, served_root, iris_dir, copy_model_folder
):
    copy_model_folder(iris_dir, served_root / "unloaded-iris", name="unloaded-iris")
    with _malformed_folder(served_root):
        rows = _index(rest, server)
    assert rows["unloaded-iris"]["state"] == "UNAVAILABLE"


def test_malformed_settings_at_start_does_not_stop_the_server(
    serve, tmp_path_factory, iris_dir, copy_model_folder, rest, assert_iris_ok
):
    root = tmp_path_factory.mktemp("served-with-malformed")
    copy_model_folder(iris_dir, root / "iris")
    (root / "malformed").mkdir()
    (root / "malformed" / "model-settings.json").write_text("{not json")
    other = serve(root)
    assert_iris_ok(other)
    rows = _index(rest, other)
    assert rows["malformed"]["state"] == "UNAVAILABLE"
    assert "JSON" in rows["malformed"]["reason"]
