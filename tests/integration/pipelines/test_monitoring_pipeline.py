"""Seldon Core 2's CIFAR-10 monitoring pipeline (`examples/pipelines/cifar10-monitoring.yaml`)
on a real `inferline up`, driven as the README tells a user to: loaded with `inferline load -f`,
called image by image through the router (and with tritonclient over gRPC), the drift branch read
back with `inferline pipeline inspect`, and the drift metric scraped from the server's `/metrics`.

The classifier answers every image with its class probabilities and the outlier detector's flag;
the drift detector sits on an asynchronous branch batched by 20 images, so it answers once per
20 requests, under the 20th request's key: no drift for 20 images like the training ones, drift
for 20 brighter ones.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from prometheus_client.parser import text_string_to_metric_families

from inferline.examples import cifar10

from ._platform import NotYet, Up, wait_until

pytestmark = pytest.mark.slow

MANIFEST = (
    Path(__file__).resolve().parents[3] / "examples" / "pipelines" / "cifar10-monitoring.yaml"
)
PIPELINE = "cifar10-production"
DRIFT_OUTPUTS = f"{PIPELINE}.cifar10-drift.outputs"
BATCH = 20
# The first start trains the three example models on the server (seconds each, more when the
# machine is busy).
READY_TIMEOUT = 300


@pytest.fixture(scope="module")
def up(up_factory, tmp_path_factory) -> Up:
    with pytest.MonkeyPatch.context() as patch:
        # The servers write the example models here, not into the user's cache.
        patch.setenv("INFERLINE_EXAMPLES_DIR", str(tmp_path_factory.mktemp("examples")))
        platform = up_factory()
    result = platform.cli("load", "-f", str(MANIFEST))
    assert result.stdout.split() == [
        "model/cifar10", "created", "model/cifar10-outlier", "created",
        "model/cifar10-drift", "created", "pipeline/cifar10-production", "created",
    ], result.stdout  # fmt: skip
    platform.wait_pipeline(PIPELINE, timeout=READY_TIMEOUT)
    return platform


def send(up: Up, pixels: np.ndarray) -> list[tuple[str, dict]]:
    """Each image in its own synchronous call: (message key, {output name: output}) per call."""
    answers = []
    for image in pixels:
        answer = up.infer_ok(PIPELINE, cifar10.request_json(image), timeout=60)
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        answers.append((answer.headers["x-request-id"], outputs))
    return answers


def drift_result(up: Up, key: str) -> dict:
    """The drift detector's answer written under `key` (waited for: the branch is asynchronous)."""

    def check():
        (target,) = up.inspect(DRIFT_OUTPUTS, request_id=key)
        if not target["messages"]:
            raise NotYet(f"nothing on {target['topic']} for {key}")
        return target["messages"]

    (message,) = wait_until(check, 60, f"the drift detector's answer for {key}")
    return {o["name"]: o for o in message["payload"]["outputs"]}


@pytest.fixture(scope="module")
def unshifted(up):
    pixels, labels = cifar10.images(BATCH, seed=101)
    answers = send(up, pixels)
    drift = drift_result(up, answers[-1][0])
    return labels, answers, drift


@pytest.fixture(scope="module")
def shifted(up, unshifted):
    pixels, _ = cifar10.images(BATCH, seed=102)
    answers = send(up, cifar10.brighter(pixels))
    drift = drift_result(up, answers[-1][0])
    return answers, drift


def test_every_answer_has_the_class_probabilities_and_is_outlier(unshifted):
    labels, answers, _ = unshifted
    for label, (key, outputs) in zip(labels, answers, strict=True):
        assert set(outputs) == {"fc10", "is_outlier"}, key
        probabilities = outputs["fc10"]
        assert (probabilities["datatype"], probabilities["shape"]) == ("FP32", [1, 10])
        assert np.argmax(probabilities["data"]) == label, key
        assert sum(probabilities["data"]) == pytest.approx(1, abs=1e-4)
        flag = outputs["is_outlier"]
        assert (flag["datatype"], flag["shape"], flag["data"]) == ("INT64", [1, 1], [0]), key


def test_no_drift_after_twenty_images_like_the_training_ones(up, unshifted):
    _, answers, drift = unshifted
    assert drift["is_drift"]["data"] == [0]
    assert drift["threshold"]["data"] == [pytest.approx(0.05 / (32 * 32 * 3))]
    assert drift["p_val"]["shape"] == [32 * 32 * 3]
    # One test per batch of 20: the 19 requests before the last got nothing on this branch.
    (target,) = up.inspect(DRIFT_OUTPUTS, request_id=answers[-2][0])
    assert target["messages"] == []


def test_drift_after_twenty_brighter_images(up, shifted):
    answers, drift = shifted
    assert drift["is_drift"]["data"] == [1]
    # What a user reads with the CLI: the last message on the drift detector's topic.
    result = up.cli("pipeline", "inspect", DRIFT_OUTPUTS, "--format", "json")
    (target,) = json.loads(result.stdout)
    (message,) = target["messages"]
    assert message["key"] == answers[-1][0]
    outputs = {o["name"]: o["data"] for o in message["payload"]["outputs"]}
    assert outputs["is_drift"] == [1]


def test_the_server_metrics_count_both_drift_results(up, shifted):
    (replica,) = up.get("/v1/servers/mlserver").json()["replicas"]
    body = up.http.get(f"http://{replica['http']}/metrics").text
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "seldon_model_drift"
        for sample in family.samples
        if sample.labels.get("model_name", "").startswith("cifar10-drift")
    }
    assert samples["seldon_model_drift_count"] == 2, samples
    assert samples["seldon_model_drift_sum"] == 1, samples


def test_a_corrupted_image_is_an_outlier(up, shifted):
    pixels, _ = cifar10.images(1, seed=103)
    ((key, outputs),) = send(up, cifar10.corrupted(pixels))
    assert outputs["is_outlier"]["data"] == [1], key
    assert outputs["fc10"]["shape"] == [1, 10], "the classifier still answers"


def test_tritonclient_over_grpc_gets_a_row_per_image(up, shifted):
    # Several images in one call, as a Triton client sends them: one answer row per image.
    pixels, labels = cifar10.images(3, seed=104)
    pixels = np.concatenate([pixels, cifar10.corrupted(pixels[:1])])
    client = triton_grpc.InferenceServerClient(up.grpc_address)
    with client:
        images = triton_grpc.InferInput("input_1", list(pixels.shape), "FP32")
        images.set_data_from_numpy(pixels)
        result = client.infer(PIPELINE, [images], headers={"seldon-model": f"{PIPELINE}.pipeline"})
    probabilities = result.as_numpy("fc10")
    assert probabilities.shape == (4, 10)
    assert probabilities[:3].argmax(axis=1).tolist() == labels.tolist()
    assert result.as_numpy("is_outlier").ravel().tolist() == [0, 0, 0, 1]


def test_a_wrong_shaped_image_is_a_400_naming_the_problem(up, shifted):
    flat = {"name": "input_1", "datatype": "FP32", "shape": [1, 10], "data": [0.5] * 10}
    answer = up.infer(PIPELINE, {"inputs": [flat]})
    assert answer.status_code == 400, answer.text
    # The first step to refuse it answers: the classifier (by its declared input shape) or the
    # outlier detector (by its width); either way the caller reads what was wrong.
    error = answer.json()["error"]
    assert re.search(
        r"^cifar10 : .*expects \[-1, 32, 32, 3\]"
        r"|^cifar10-outlier : .*has 10 features but the detector has 3072",
        error,
    ), error
