"""Seldon Core 2's router-side metrics on the router's `/metrics`, from a real `inferline up`:
model calls over REST and gRPC, a pipeline's own calls and its step's, a failing request, an
experiment's mirror. Each test asserts what its own calls added to the scraped counters."""

from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ._platform import (
    IRIS_CLASS,
    IRIS_REQUEST,
    SAMPLES,
    Up,
    wait_until,
    with_storage_uri,
    write_file,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"SC2 samples not found at {SAMPLES}"),
]

# The iris classifier wants 4 features: 3 is a request the model rejects (400).
BAD_REQUEST = {
    "inputs": [{"name": "predict", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
}
REPLICA = {"server": "mlserver", "server_replica": "0"}


@pytest.fixture(scope="module")
def up(up_factory, iris_artifact) -> Up:
    """One server holding iris and iris2, Seldon's iris-pipeline (one step: iris) and its
    sklearn-mirror experiment (iris's callers stay on iris; each call is copied to iris2)."""
    platform = up_factory(1)
    docs = [
        with_storage_uri((SAMPLES / f"models/{sample}.yaml").read_text(), iris_artifact)
        for sample in ("sklearn1", "sklearn2")
    ]
    docs += [
        (SAMPLES / "pipelines/iris.yaml").read_text(),
        (SAMPLES / "experiments/sklearn-mirror.yaml").read_text(),
    ]
    text = yaml.safe_dump_all([yaml.safe_load(doc) for doc in docs])
    platform.cli("load", "-f", str(write_file(platform.workdir, "resources.yaml", text)))
    for name in ("iris", "iris2"):
        platform.wait_model(name)
    wait_until(
        lambda: platform.get("/v1/pipelines/iris-pipeline").json()["state"] == "PipelineReady",
        60,
        "iris-pipeline to be ready",
    )
    wait_until(
        lambda: platform.get("/v1/experiments/sklearn-mirror").json()["active"],
        20,
        "sklearn-mirror to be active",
    )
    return platform


def scrape(up: Up) -> Counter:
    """Every `seldon_*` sample on the router's /metrics: (name, labels) -> value."""
    answer = up.http.get(f"{up.router_url}/metrics")
    assert answer.status_code == 200, answer.text
    samples = Counter()
    for family in text_string_to_metric_families(answer.text):
        if family.name.startswith("seldon_"):
            for sample in family.samples:
                samples[sample.name, tuple(sorted(sample.labels.items()))] += sample.value
    return samples


def added(up: Up, before: Counter, name: str) -> dict[frozenset, float]:
    """What was added to the samples named `name` since `before`: labels -> amount."""
    after = scrape(up)
    after.subtract(before)
    return {frozenset(labels): value for (n, labels), value in after.items() if n == name and value}


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


def model(name: str, method_type: str, code: str) -> frozenset:
    return labels(
        **REPLICA, model=name, model_internal=f"{name}_1", method_type=method_type, code=code
    )


def pipeline(method_type: str, code: str) -> frozenset:
    return labels(
        server="pipeline-gateway", pipeline="iris-pipeline", method_type=method_type, code=code
    )


def grpc_infer(client, name: str) -> list:
    tensor = triton_grpc.InferInput("predict", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    return client.infer(name, [tensor]).as_numpy("predict").tolist()


def test_model_and_pipeline_calls_are_counted_with_their_labels(up):
    before = scrape(up)
    for _ in range(3):
        up.assert_iris_answers("iris2", "iris2_1")
    assert up.infer("iris2", BAD_REQUEST).status_code == 400
    client = triton_grpc.InferenceServerClient(up.grpc_address)
    for _ in range(2):
        assert grpc_infer(client, "iris2") == [[IRIS_CLASS]]
    # Not inference calls: not counted.
    assert client.is_model_ready("iris2")
    assert client.is_model_ready("iris-pipeline.pipeline")
    assert up.http.get(f"{up.router_url}/v2/models/iris2").status_code == 200
    # Two pipeline calls and a rejected one over REST, one over gRPC; its step calls iris.
    pipeline_url = f"{up.router_url}/v2/pipelines/iris-pipeline/infer"
    for _ in range(2):
        answer = up.http.post(pipeline_url, json=IRIS_REQUEST)
        assert answer.status_code == 200, answer.text
    assert up.http.post(pipeline_url, json=BAD_REQUEST).status_code == 400
    assert grpc_infer(client, "iris-pipeline.pipeline") == [[IRIS_CLASS]]
    # Calls that reach no model are not counted under any model.
    assert up.infer("nope").status_code == 404

    assert added(up, before, "seldon_model_infer_total") == {
        model("iris2", "rest", "200"): 3,
        model("iris2", "rest", "400"): 1,
        model("iris2", "grpc", "OK"): 2,
        model("iris", "rest", "200"): 3,
        model("iris", "rest", "400"): 1,
    }
    assert set(added(up, before, "seldon_model_infer_seconds_total")) == {
        model("iris2", "rest", "200"),
        model("iris2", "rest", "400"),
        model("iris2", "grpc", "OK"),
        model("iris", "rest", "200"),
        model("iris", "rest", "400"),
    }
    assert added(up, before, "seldon_model_aggregate_infer_total") == {
        labels(**REPLICA, method_type="rest"): 8,
        labels(**REPLICA, method_type="grpc"): 2,
    }
    assert added(up, before, "seldon_model_infer_api_seconds_count") == {
        labels(**REPLICA, method="post", code="200"): 6,
        labels(**REPLICA, method="post", code="400"): 2,
        labels(**REPLICA, method="grpc", code="OK"): 2,
    }
    assert added(up, before, "seldon_pipeline_infer_total") == {
        pipeline("rest", "200"): 2,
        pipeline("rest", "400"): 1,
        pipeline("grpc", "OK"): 1,
    }
    assert added(up, before, "seldon_pipeline_aggregate_infer_total") == {
        labels(server="pipeline-gateway", method_type="rest"): 3,
        labels(server="pipeline-gateway", method_type="grpc"): 1,
    }
    assert set(added(up, before, "seldon_pipeline_infer_api_seconds_count")) == {
        labels(server="pipeline-gateway", pipeline="iris-pipeline", method=m, code=c)
        for m, c in (("rest", "200"), ("rest", "400"), ("grpc", "OK"))
    }


def test_the_experiment_mirror_is_counted_as_its_model(up):
    before = scrape(up)
    for _ in range(5):
        up.assert_iris_answers("iris", "iris_1")
    # Mirror calls run in the background: they may be counted a moment after the answers.
    wait_until(
        lambda: (
            added(up, before, "seldon_model_infer_total").get(model("iris2", "rest", "200")) == 5
        ),
        10,
        "the 5 mirrored calls to be counted under iris2",
    )
    assert added(up, before, "seldon_model_infer_total") == {
        model("iris", "rest", "200"): 5,
        model("iris2", "rest", "200"): 5,
    }
