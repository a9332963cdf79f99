"""The REST adapter in-process, through httpx's ASGI transport."""

import httpx
import numpy as np
import orjson
import pytest

from inferline.protocol import json_encoding
from inferline.protocol.types import InferenceRequest, RequestedOutput, Tensor
from inferline.server.dataplane import DataPlane
from inferline.server.repository import ModelRepository
from inferline.server.rest import RestApp

IRIS = {
    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]
}


@pytest.fixture
async def client(model_root):
    plane = DataPlane(ModelRepository([model_root]))
    await plane.load_repository()
    app = RestApp(plane, max_request_size=4096)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        yield http
    await plane.unload_all()


async def test_health_and_metadata(client):
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    server = (await client.get("/v2")).json()
    assert "binary_tensor_data" in server["extensions"]
    meta = (await client.get("/v2/models/doubler")).json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    assert (await client.get("/v2/models/iris/versions/v0.1.0/ready")).json() == {
        "name": "iris",
        "ready": True,
    }
    broken = await client.get("/v2/models/broken/ready")
    assert broken.status_code == 503 and broken.json()["ready"] is False


async def test_infer_json_nested_and_flat(client):
    nested = await client.post("/v2/models/iris/infer", json={**IRIS, "id": "q1"})
    flat_body = {"inputs": [{**IRIS["inputs"][0], "data": [5.1, 3.5, 1.4, 0.2]}]}
    flat = await client.post("/v2/models/iris/versions/v0.1.0/infer", json=flat_body)
    assert nested.status_code == flat.status_code == 200
    assert nested.json()["id"] == "q1"
    assert nested.json()["outputs"] == flat.json()["outputs"]
    assert nested.json()["outputs"][0] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [1, 1],
        "parameters": {"content_type": "np"},
        "data": [0],
    }


async def test_infer_binary_request_and_response(client):
    request = InferenceRequest(
        inputs=[Tensor.from_numpy("x", np.array([[1.5, -2.0]], dtype=np.float32))],
        outputs=[RequestedOutput("doubled", {"binary_data": True}), RequestedOutput("same")],
    )
    body, json_length = json_encoding.encode_request(request, binary=True)
    answer = await client.post(
        "/v2/models/doubler/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(json_length)},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    response = json_encoding.decode_response(
        answer.content, int(answer.headers["inference-header-content-length"])
    )
    assert response.output("doubled").data.tolist() == [[3.0, -4.0]]
    header = orjson.loads(answer.content[: int(answer.headers["inference-header-content-length"])])
    assert "data" not in header["outputs"][0] and header["outputs"][1]["data"] == [1.5, -2.0]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/iris/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/iris/infer", b'{"inputs": 3}', 400, "'inputs' must be a list"),
        ("/v2/models/nope/infer", orjson.dumps(IRIS), 404, "model 'nope' not found"),
        ("/v2/models/iris/versions/v9/infer", orjson.dumps(IRIS), 404, "version 'v9'"),
        ("/v2/models/broken/infer", orjson.dumps(IRIS), 503, "weights are corrupt"),
        ("/v2/models/iris/infer", b"x" * 5000, 413, "limit of 4096 bytes"),
        (
            "/v2/models/iris/infer",
            orjson.dumps({"inputs": [{**IRIS["inputs"][0], "shape": [2, 4]}]}),
            400,
            "shape [2, 4] (8 elements) but its data has 4 elements",
        ),
        (
            "/v2/models/iris/infer",
            orjson.dumps({"inputs": [{**IRIS["inputs"][0], "data": [[1, 2, 3]], "shape": [1, 3]}]}),
            400,
            "3 features",
        ),
        (
            # JSON null is NaN in a float tensor; LogisticRegression cannot take it.
            "/v2/models/iris/infer",
            orjson.dumps({"inputs": [{**IRIS["inputs"][0], "data": [[5.1, None, 1.4, 0.2]]}]}),
            400,
            "rejected input 'x', which holds NaN or infinity: Input X contains NaN",
        ),
        ("/v2/nowhere", b"", 404, "no route"),
    ],
)
async def test_errors_are_json_with_status_and_server_keeps_serving(
    client, path, body, status, message
):
    answer = await client.post(path, content=body)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert (await client.post("/v2/models/iris/infer", json=IRIS)).status_code == 200


async def test_wrong_method_is_405(client):
    answer = await client.get("/v2/models/iris/infer")
    assert answer.status_code == 405 and "use POST" in answer.json()["error"]


async def test_repository_index_load_unload(client):
    index = (await client.post("/v2/repository/index", json={})).json()
    assert {row["name"]: row["state"] for row in index} == {
        "broken": "UNAVAILABLE",
        "doubler": "READY",
        "iris": "READY",
    }
    ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
    assert {row["name"] for row in ready} == {"doubler", "iris"}
    assert (await client.post("/v2/repository/models/iris/unload")).status_code == 200
    assert (await client.post("/v2/models/iris/infer", json=IRIS)).status_code == 404
    assert (await client.post("/v2/repository/models/iris/load")).status_code == 200
    assert (await client.post("/v2/models/iris/infer", json=IRIS)).status_code == 200
    missing = await client.post("/v2/repository/models/ghost/load")
    assert missing.status_code == 404 and "ghost" in missing.json()["error"]


def _sample(text: str, line_start: str) -> float:
    """The value of the first exposition line starting with `line_start` (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_answers_and_failures_per_model(client):
    success = 'model_infer_request_success_total{model="iris",version="v0.1.0"}'
    failure = 'model_infer_request_failure_total{model="iris",version="v0.1.0"}'
    before = (await client.get("/metrics")).text
    assert (await client.post("/v2/models/iris/infer", json=IRIS)).status_code == 200
    bad = {**IRIS, "outputs": [{"name": "no_such_output"}]}
    assert (await client.post("/v2/models/iris/infer", json=bad)).status_code == 400
    after = await client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    assert _sample(after.text, success) == _sample(before, success) + 1
    assert _sample(after.text, failure) == _sample(before, failure) + 1
    assert "model_infer_request_duration_seconds_bucket" in after.text
