"""Alibi Detect detectors, saved by alibi-detect, served by `inferline serve` running in the
Alibi virtualenv and called with tritonclient from the main one."""

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

pytestmark = pytest.mark.slow

FEATURES = 3


@pytest.fixture(scope="module")
def http(detect_server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{detect_server.http_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(detect_server):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{detect_server.grpc_port}")
    yield client
    client.close()


def http_infer(client, model: str, x: np.ndarray):
    tensor = httpclient.InferInput("x", list(x.shape), "FP32" if x.dtype.kind == "f" else "INT64")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor])


def grpc_infer(client, model: str, x: np.ndarray):
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32" if x.dtype.kind == "f" else "INT64")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor])


def normal(rows: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, FEATURES)) + shift).astype(np.float32)


def test_ks_drift_is_reported_on_a_shifted_batch_and_not_on_an_unshifted_one(http):
    same = http_infer(http, "ks-drift", normal(200, seed=11))
    shifted = http_infer(http, "ks-drift", normal(200, seed=12, shift=1.0))
    assert same.as_numpy("is_drift").tolist() == [0]
    assert shifted.as_numpy("is_drift").tolist() == [1]
    # MLServer's outputs: the keys of the detector's answer, one more leading dimension each.
    names = [o["name"] for o in shifted.get_response()["outputs"]]
    assert names == ["is_drift", "distance", "p_val", "threshold"]
    assert shifted.as_numpy("p_val").shape == (1, FEATURES)
    assert (shifted.as_numpy("p_val") < shifted.as_numpy("threshold")).any()
    parameters = shifted.get_response()["parameters"]
    assert parameters["name"] == "KSDrift" and parameters["detector_type"] == "drift"
    assert parameters["headers"] == {"x-seldon-alibi-type": "drift", "x-seldon-alibi-method": "ks"}


def test_predict_parameters_reach_the_detector(http):
    """`predict_parameters: {drift_type: feature}`: one decision per feature."""
    x = normal(200, seed=13)
    x[:, 1] += 1.0
    answer = http_infer(http, "ks-drift-features", x)
    assert answer.as_numpy("is_drift").tolist() == [[0, 1, 0]]


def test_chi_square_and_tabular_drift_over_grpc(grpc):
    rng = np.random.default_rng(5)
    same = rng.integers(0, 3, size=(300, 2))
    # Category 0 three times as common as in the reference.
    shifted = rng.choice(3, size=(300, 2), p=[0.6, 0.2, 0.2])
    assert grpc_infer(grpc, "chi2-drift", same).as_numpy("is_drift").tolist() == [0]
    assert grpc_infer(grpc, "chi2-drift", shifted).as_numpy("is_drift").tolist() == [1]

    mixed = np.hstack([normal(300, seed=6)[:, :2], same[:, :1]]).astype(np.float32)
    assert grpc_infer(grpc, "tabular-drift", mixed).as_numpy("is_drift").tolist() == [0]
    # Only the categorical column moves: TabularDrift's chi-square part must catch it.
    mixed[:, 2] = shifted[:, 0]
    moved = grpc_infer(grpc, "tabular-drift", mixed)
    assert moved.as_numpy("is_drift").tolist() == [1]
    assert moved.as_numpy("p_val")[0, 2] < moved.as_numpy("threshold")[0]


@pytest.mark.parametrize("model", ["iforest", "mahalanobis"])
def test_outliers_are_flagged(http, grpc, model):
    x = np.vstack([normal(4, seed=21), np.full((2, FEATURES), 9.0, dtype=np.float32)])
    for answer in (http_infer(http, model, x), grpc_infer(grpc, model, x)):
        assert answer.as_numpy("is_outlier").tolist() == [[0, 0, 0, 0, 1, 1]]
        scores = answer.as_numpy("instance_score")
        assert scores.shape == (1, 6)
        assert scores[0, 4:].min() > scores[0, :4].max()
    parameters = answer.get_response().parameters
    assert parameters["detector_type"].string_param == "outlier"


def test_batch_size_buffers_requests_and_tests_them_together(detect_server):
    """`batch_size: 3`: the first two answers are empty, the third tests all three requests."""
    url = f"http://127.0.0.1:{detect_server.http_port}/v2/models/ks-drift-batched/infer"
    answers = []
    for seed in (31, 32, 33):
        # 40 rows each: too few alone to show the 0.6 shift, plenty together.
        x = normal(40, seed=seed, shift=0.6)
        request = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                               "data": x.ravel().tolist()}]}  # fmt: skip
        answer = httpx.post(url, json=request, timeout=60)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
    assert [a["outputs"] for a in answers[:2]] == [[], []]
    is_drift = next(o for o in answers[2]["outputs"] if o["name"] == "is_drift")
    assert is_drift["data"] == [1]


def test_drift_values_are_counted_in_the_drift_metric(http, detect_server):
    http_infer(http, "ks-drift", normal(200, seed=41, shift=1.0))
    text = httpx.get(f"http://127.0.0.1:{detect_server.http_port}/metrics", timeout=30).text
    counts = [
        line
        for line in text.splitlines()
        if line.startswith("seldon_model_drift_count") and 'model_name="ks-drift"' in line
    ]
    assert counts and float(counts[0].rsplit(" ", 1)[1]) >= 1, counts
    drifted = [
        line
        for line in text.splitlines()
        if line.startswith("seldon_model_drift_sum") and 'model_name="ks-drift"' in line
    ]
    assert drifted and float(drifted[0].rsplit(" ", 1)[1]) >= 1, drifted


def test_a_request_the_detector_cannot_test_is_a_400_naming_the_model(detect_server):
    url = f"http://127.0.0.1:{detect_server.http_port}/v2/models/ks-drift/infer"
    request = {"inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP32", "data": [0.0] * 10}]}
    answer = httpx.post(url, json=request, timeout=60)
    assert answer.status_code == 400, answer.text
    assert "ks-drift" in answer.json()["error"]
