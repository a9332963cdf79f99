"""The monitoring runtimes served by a real `inferline serve`, called over V2 REST."""

import json

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iris_features() -> np.ndarray:
    return load_iris(return_X_y=True)[0]


@pytest.fixture(scope="module")
def client() -> httpx.Client:
    # Generous: an explanation calls the model back several times.
    with httpx.Client(timeout=60) as client:
        yield client


def infer(client, server, model, rows, outputs=None) -> httpx.Response:
    rows = np.asarray(rows, dtype=np.float64)
    body = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP64",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ]
    }
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    return client.post(f"{server.url}/v2/models/{model}/infer", json=body)


def tensors(answer: httpx.Response) -> dict[str, dict]:
    assert answer.status_code == 200, answer.text
    return {t["name"]: t for t in answer.json()["outputs"]}


def test_kernel_shap_explains_iris_through_rest(client, monitoring_server, iris_features):
    row = iris_features[77:78]  # on the edge between two classes, so every class has a share
    answer = infer(client, monitoring_server, "iris-explainer", row)
    doc = answer.json()
    assert answer.status_code == 200, answer.text
    assert doc["parameters"] == {"explainer_type": "kernel_shap", "explainer_method": "KernelShap"}
    (output,) = doc["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("explanation", "BYTES", [1])
    explanation = json.loads(output["data"][0])
    assert explanation["meta"]["name"] == "KernelShap"

    shap_values = np.array(explanation["data"]["shap_values"])
    assert shap_values.shape == (3, 1, 4)  # per class, per row, per feature
    expected_value = np.array(explanation["data"]["expected_value"])
    probabilities = np.array(
        tensors(infer(client, monitoring_server, "iris", row, ["predict_proba"]))["predict_proba"][
            "data"
        ]
    )
    # KernelSHAP's additivity: the values of a row add up to its prediction minus the mean one.
    np.testing.assert_allclose(
        shap_values.sum(axis=2)[:, 0], probabilities - expected_value, atol=1e-6
    )
    assert np.abs(shap_values).sum() > 0.01


def test_outlier_detector_over_rest(client, monitoring_server, iris_features):
    rows = np.vstack([iris_features[:3], [[20.0, 20.0, 20.0, 20.0]]])
    answer = infer(client, monitoring_server, "iris-outlier", rows)
    outputs = tensors(answer)
    assert answer.json()["parameters"] == {
        "detector_type": "outlier",
        "detector_method": "IsolationForest",
    }
    assert outputs["is_outlier"]["datatype"] == "INT64"
    assert outputs["is_outlier"]["shape"] == [4, 1]
    assert outputs["is_outlier"]["data"][3] == 1
    assert outputs["instance_score"]["shape"] == [4, 1]
    scores = outputs["instance_score"]["data"]
    assert scores[3] > max(scores[:3])

    only = tensors(infer(client, monitoring_server, "iris-outlier", rows, ["is_outlier"]))
    assert list(only) == ["is_outlier"]


def test_drift_detector_batches_and_reports_over_rest(client, monitoring_server, iris_features):
    unshifted = iris_features[1::2]  # the other half of the flowers the reference came from
    first = infer(client, monitoring_server, "iris-drift", unshifted[:40])
    assert tensors(first) == {}  # batch_size 2: the first request only waits in the buffer
    outputs = tensors(infer(client, monitoring_server, "iris-drift", unshifted[40:]))
    assert outputs["is_drift"]["data"] == [0]
    assert outputs["p_val"]["shape"] == [4]

    shifted = unshifted + np.array([0.0, 0.0, 1.5, 0.0])
    infer(client, monitoring_server, "iris-drift", shifted[:40])
    outputs = tensors(infer(client, monitoring_server, "iris-drift", shifted[40:]))
    assert outputs["is_drift"]["data"] == [1]
    assert outputs["threshold"]["data"] == [pytest.approx(0.05 / 4)]


def test_bad_shape_is_a_400_over_rest(client, monitoring_server, iris_features):
    for model in ("iris-drift", "iris-outlier", "iris-explainer"):
        answer = infer(client, monitoring_server, model, iris_features[:2, :3])
        assert answer.status_code == 400, (model, answer.text)
        assert "features" in answer.json()["error"]
