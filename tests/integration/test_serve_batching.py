"""Adaptive batching in a real `inferline serve` process, driven by many concurrent callers.

The iris model's MLServer settings turn batching on (`max_batch_size`, `max_batch_time`). Bursts
of concurrent requests over REST (httpx, tritonclient) and gRPC (tritonclient) each carry their own
rows and id; every answer is checked against the model run locally on that caller's rows, and the
`/metrics` histogram must show that requests really were merged.
"""

import asyncio
import json
import re

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
import tritonclient.http.aio as httpclient
from sklearn.datasets import load_iris

pytestmark = pytest.mark.slow

MAX_BATCH_SIZE = 16
# Long enough that a burst fired at once lands in few batches even on a loaded machine.
MAX_BATCH_TIME = 0.2
CALLERS = 48


@pytest.fixture(scope="module")
def iris_batched(tmp_path_factory, iris_dir, copy_model_folder):
    folder = copy_model_folder(iris_dir, tmp_path_factory.mktemp("batched") / "iris")
    settings = folder / "model-settings.json"
    doc = json.loads(settings.read_text())
    doc.update(max_batch_size=MAX_BATCH_SIZE, max_batch_time=MAX_BATCH_TIME)
    settings.write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def server(serve, iris_batched):
    return serve(iris_batched)


@pytest.fixture(scope="module")
def model(iris_dir):
    return joblib.load(iris_dir / "model.joblib")


def caller_rows(caller: int) -> np.ndarray:
    """Each caller's own 1 to 4 iris rows, different from its neighbours'."""
    features, _ = load_iris(return_X_y=True)
    count = 1 + caller % 4
    return features[(np.arange(count) * 37 + caller * 11) % len(features)].astype(np.float32)


def batch_histogram(server) -> tuple[float, float]:
    """(batches, batches of exactly one request) from the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics").text

    def sample(pattern: str) -> float:
        found = re.search(pattern + r"\s+([0-9.e+]+)", text)
        return float(found.group(1)) if found else 0.0

    batches = sample(r'model_infer_batch_size_count\{model="iris",version="v0.1.0"\}')
    singles = sample(r'model_infer_batch_size_bucket\{le="1.0",model="iris",version="v0.1.0"\}')
    return batches, singles


async def test_concurrent_json_callers_each_get_their_own_rows(server, model):
    batches_before, singles_before = batch_histogram(server)

    async def call(client: httpx.AsyncClient, caller: int):
        rows = caller_rows(caller)
        outputs = [{"name": "predict_proba"}] if caller % 3 == 0 else None
        body = {
            "id": f"caller-{caller}",
            "inputs": [
                {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
            ],
        }
        if outputs:
            body["outputs"] = outputs
        answer = await client.post(f"{server.url}/v2/models/iris/infer", json=body)
        return caller, rows, answer

    async with httpx.AsyncClient(timeout=30) as client:
        results = await asyncio.gather(*(call(client, c) for c in range(CALLERS)))

    for caller, rows, answer in results:
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["id"] == f"caller-{caller}"
        (output,) = doc["outputs"]
        if caller % 3 == 0:
            assert output["name"] == "predict_proba"
            expected = model.predict_proba(rows)
            assert output["shape"] == [len(rows), 3]
            np.testing.assert_allclose(np.asarray(output["data"]).reshape(-1, 3), expected, 1e-5)
        else:
            assert output["name"] == "predict"
            assert output["shape"] == [len(rows), 1]
            assert output["data"] == model.predict(rows).tolist()

    batches, singles = batch_histogram(server)
    # Every request was counted in some batch, and some batches held more than one request.
    assert batches > batches_before
    assert batches - batches_before < CALLERS
    assert (batches - batches_before) > (singles - singles_before)


async def test_concurrent_tritonclient_callers_over_rest_and_grpc(server, model):
    rest = httpclient.InferenceServerClient(url=server.http_address)
    grpc = grpcclient.InferenceServerClient(url=server.grpc_address)

    async def over_rest(caller: int):
        rows = caller_rows(caller)
        tensor = httpclient.InferInput("x", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        wanted = [httpclient.InferRequestedOutput("predict", binary_data=True)]
        result = await rest.infer("iris", [tensor], outputs=wanted, request_id=f"rest-{caller}")
        return caller, rows, result.get_response()["id"], result.as_numpy("predict")

    async def over_grpc(caller: int):
        rows = caller_rows(caller)
        tensor = grpcclient.InferInput("x", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = await grpc.infer("iris", [tensor], request_id=f"grpc-{caller}")
        return caller, rows, result.get_response().id, result.as_numpy("predict")

    try:
        calls = [over_rest(c) for c in range(0, CALLERS, 2)]
        calls += [over_grpc(c) for c in range(1, CALLERS, 2)]
        results = await asyncio.gather(*calls)
    finally:
        await rest.close()
        await grpc.close()

    for caller, rows, request_id, predicted in results:
        assert request_id == f"{'rest' if caller % 2 == 0 else 'grpc'}-{caller}"
        assert predicted.shape == (len(rows), 1)
        assert predicted.ravel().tolist() == model.predict(rows).tolist()


async def test_a_bad_caller_fails_alone_among_good_ones(server, model):
    good_rows = caller_rows(5)

    def body(rows: np.ndarray, request_id: str) -> dict:
        tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        return {"id": request_id, "inputs": [tensor]}

    # It shares a batch with the good ones (same inputs, names its outputs), so the merged call
    # fails on its output and the server must answer the others without it.
    bad = body(good_rows, "bad") | {"outputs": [{"name": "no_such_output"}]}
    goods = [body(good_rows, f"good-{i}") | {"outputs": [{"name": "predict"}]} for i in range(7)]
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post(f"{server.url}/v2/models/iris/infer", json=b) for b in [bad, *goods])
        )
    assert answers[0].status_code == 400
    assert "no_such_output" in answers[0].json()["error"]
    for index, answer in enumerate(answers[1:]):
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == f"good-{index}"
        assert answer.json()["outputs"][0]["data"] == model.predict(good_rows).tolist()
