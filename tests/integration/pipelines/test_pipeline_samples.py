"""Seldon Core 2's pipeline samples (conformance corpus, INDEX.md) on a real `inferline up`,
answering as recorded in the reference (sc2-semantics.md section i, samples/*.md, smoke tests).

Every Model sample is applied with its storageUri pointed at the local stand-in for its model
(`inferline.examples`) and its requirements dropped; the Pipeline samples are applied unchanged,
except where a test says why. Calls go through the router: REST JSON and binary, and gRPC.
"""

import json
import re
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.proto import inference_pb2_grpc as pb_grpc

from ._platform import (
    SAMPLES,
    SKIP_REASON,
    NotYet,
    Up,
    outputs_by_name,
    sample_documents,
    tensor,
    tfsimple_request,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SAMPLES.is_dir(), reason=SKIP_REASON)]

MODELS = ["tfsimple1", "tfsimple2", "tfsimple3", "add10", "mul10", "conditional", "check"]
MODELS += ["outlier-error"]

# Sample file -> the pipeline it defines; all applied when the module starts.
PIPELINES = {
    "tfsimples.yaml": "tfsimples",
    "tfsimples-input.yaml": "tfsimples-input",
    "tfsimples-join.yaml": "join",
    "conditional.yaml": "tfsimple-conditional",
    "pipeline-inputs.yaml": "pipeline-inputs",
    "trigger-joins.yaml": "trigger-joins",
    "error.yaml": "error",
    "outlier.yaml": "outlier",
    "tfsimple.yaml": "tfsimple",
    "tfsimple-extended.yaml": "tfsimple-extended",
    "tfsimple-extended2.yaml": "tfsimple-extended2",
    "tfsimple-extended-step.yaml": "tfsimple-extended-step",
    "tfsimple-combined.yaml": "tfsimple-combined",
    "tfsimple-combined-trigger.yaml": "tfsimple-combined-trigger",
    "tfsimple-combined-step.yaml": "tfsimple-combined-step",
}

# The joincheck sample's inner join waits the default 60 s for its trigger; its copy here waits
# this long, so a request that never passes the check ends in a few seconds.
JOINCHECK_WINDOW_MS = 2000
# A copy of trigger-joins with this window on both steps, for the branch that never triggers.
TRIGGER_WINDOW_MS = 1000

ONE_TO_16 = list(range(1, 17))
TWO_TO_32 = [2 * i for i in ONE_TO_16]
FOUR_TO_64 = [4 * i for i in ONE_TO_16]
ZEROS = [0] * 16
KEY = re.compile(r"^\d+\.(?P<pipeline>[a-z0-9-]+)\.\S+$")


def fp32(name: str, values: list[float]) -> dict:
    return tensor(name, "FP32", [len(values)], values)


@pytest.fixture(scope="module")
def up(up_factory, model_root) -> Up:
    platform = up_factory()
    models = [doc for name in MODELS for doc in sample_documents(f"models/{name}.yaml", model_root)]
    platform.apply(models)
    pipelines = [
        doc for path in PIPELINES for doc in sample_documents(f"pipelines/{path}", model_root)
    ]
    pipelines += [joincheck_copy(model_root), trigger_joins_copy(model_root)]
    platform.apply(pipelines)
    platform.wait_pipelines([*PIPELINES.values(), "joincheck", "trigger-joins-window"])
    return platform


def joincheck_copy(model_root) -> dict:
    (doc,) = sample_documents("pipelines/tfsimples-join-outlier.yaml", model_root)
    assert doc["metadata"]["name"] == "joincheck"
    (step,) = [s for s in doc["spec"]["steps"] if s["name"] == "tfsimple3"]
    step["joinWindowMs"] = JOINCHECK_WINDOW_MS
    return doc


def trigger_joins_copy(model_root) -> dict:
    (doc,) = sample_documents("pipelines/trigger-joins.yaml", model_root)
    name = "trigger-joins-window"
    # References to the pipeline's own inputs carry its name.
    for step in doc["spec"]["steps"]:
        step["inputs"] = [ref.replace("trigger-joins.", f"{name}.") for ref in step["inputs"]]
        step["triggers"] = [ref.replace("trigger-joins.", f"{name}.") for ref in step["triggers"]]
        step["joinWindowMs"] = TRIGGER_WINDOW_MS
    doc["metadata"]["name"] = name
    return doc


def assert_pipeline_answer(answer, pipeline: str, version: str = "1") -> dict:
    assert answer.status_code == 200, f"{pipeline}: {answer.status_code} {answer.text}"
    key = answer.headers["x-request-id"]
    match = KEY.match(key)
    assert match and match["pipeline"] == pipeline, f"x-request-id {key!r}"
    assert answer.headers["x-pipeline-version"] == version
    body = answer.json()
    assert body["model_name"] == ""
    return body


# --- chains and joins (pipeline-examples.md, model_chaining / input_chaining / join features) ---


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v2/pipelines/tfsimples/infer", None),
        ("/v2/models/tfsimples.pipeline/infer", None),
        ("/v2/models/tfsimples/infer", {"seldon-model": "tfsimples.pipeline"}),
    ],
    ids=["pipelines-path", "models-path", "seldon-model-header"],
)
def test_tfsimples_chain_over_rest(up, path, headers):
    answer = up.infer("tfsimples", tfsimple_request(), path=path, headers=headers)
    body = assert_pipeline_answer(answer, "tfsimples")
    assert outputs_by_name(body) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}
    assert [o["shape"] for o in body["outputs"]] == [[1, 16], [1, 16]]
    assert {o["datatype"] for o in body["outputs"]} == {"INT32"}


def test_tfsimples_chain_over_rest_with_binary_tensors(up):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{up.http_port}")
    try:
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor_in = triton_http.InferInput(name, [1, 16], "INT32")
            tensor_in.set_data_from_numpy(np.arange(1, 17, dtype=np.int32).reshape(1, 16))
            inputs.append(tensor_in)
        outputs = [
            triton_http.InferRequestedOutput(name, binary_data=True)
            for name in ("OUTPUT0", "OUTPUT1")
        ]
        result = client.infer("tfsimples.pipeline", inputs, outputs=outputs)
    finally:
        client.close()
    for name in ("OUTPUT0", "OUTPUT1"):
        data = result.as_numpy(name)
        assert data.dtype == np.int32
        assert data.tolist() == [TWO_TO_32]


def test_tfsimples_chain_over_grpc(up):
    client = triton_grpc.InferenceServerClient(up.grpc_address)
    try:
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor_in = triton_grpc.InferInput(name, [1, 16], "INT32")
            tensor_in.set_data_from_numpy(np.arange(1, 17, dtype=np.int32).reshape(1, 16))
            inputs.append(tensor_in)
        result = client.infer("tfsimples", inputs, headers={"seldon-model": "tfsimples.pipeline"})
    finally:
        client.close()
    assert result.as_numpy("OUTPUT0").tolist() == [TWO_TO_32]
    assert result.as_numpy("OUTPUT1").tolist() == [TWO_TO_32]


def test_tfsimples_grpc_answer_carries_request_key_and_version(up):
    request = pb.ModelInferRequest(model_name="tfsimples")
    for name in ("INPUT0", "INPUT1"):
        tensor_in = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor_in.contents.int_contents.extend(ONE_TO_16)
    with grpc.insecure_channel(up.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(
            request, metadata=[("seldon-model", "tfsimples.pipeline")], timeout=30
        )
    metadata = dict(call.initial_metadata())
    assert KEY.match(metadata["x-request-id"])["pipeline"] == "tfsimples", metadata
    assert metadata["x-pipeline-version"] == "1"
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    for raw in response.raw_output_contents:
        assert np.frombuffer(raw, dtype="<i4").tolist() == TWO_TO_32


def test_tfsimples_input_chains_from_the_steps_inputs(up):
    body = assert_pipeline_answer(
        up.infer("tfsimples-input", tfsimple_request()), "tfsimples-input"
    )
    assert outputs_by_name(body) == {"OUTPUT0": ONE_TO_16, "OUTPUT1": ONE_TO_16}


def test_join_of_two_steps_into_a_third(up):
    body = assert_pipeline_answer(up.infer("join", tfsimple_request()), "join")
    assert outputs_by_name(body) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}


# --- routing on tensors and triggers ------------------------------------------------------------


@pytest.mark.parametrize(("choice", "expected"), [(0, [10, 20, 30, 40]), (1, [11, 12, 13, 14])])
def test_conditional_routes_on_the_tensor_present(up, choice, expected):
    request = {
        "inputs": [
            tensor("CHOICE", "INT32", [1], [choice]),
            fp32("INPUT0", [1, 2, 3, 4]),
            fp32("INPUT1", [1, 2, 3, 4]),
        ]
    }
    body = assert_pipeline_answer(up.infer("tfsimple-conditional", request), "tfsimple-conditional")
    assert outputs_by_name(body) == {"OUTPUT": expected}


def test_pipeline_inputs_feed_two_steps_and_keep_both_outputs_named_output(up):
    request = {"inputs": [fp32("INPUT0", [1, 2, 3, 4]), fp32("INPUT1", [1, 2, 3, 4])]}
    body = assert_pipeline_answer(up.infer("pipeline-inputs", request), "pipeline-inputs")
    assert [o["name"] for o in body["outputs"]] == ["OUTPUT", "OUTPUT"]
    assert [o["data"] for o in body["outputs"]] == [[10, 20, 30, 40], [11, 12, 13, 14]]


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [("ok1", [10, 20, 30, 40]), ("ok2", [10, 20, 30, 40]), ("ok3", [11, 12, 13, 14])],
)
def test_trigger_joins_run_the_triggered_step(up, trigger, expected):
    request = {"inputs": [fp32(trigger, [1]), fp32("INPUT", [1, 2, 3, 4])]}
    body = assert_pipeline_answer(up.infer("trigger-joins", request), "trigger-joins")
    assert outputs_by_name(body) == {"OUTPUT": expected}


def test_trigger_joins_branch_that_never_triggers_leaves_no_error_behind(up):
    request = {"inputs": [fp32("ok1", [1]), fp32("INPUT", [1, 2, 3, 4])]}
    pipeline = "trigger-joins-window"
    answer = up.infer(pipeline, request)
    body = assert_pipeline_answer(answer, pipeline)
    assert outputs_by_name(body) == {"OUTPUT": [10, 20, 30, 40]}
    time.sleep(TRIGGER_WINDOW_MS / 1000 + 1.5)  # add10's window has closed
    (target,) = up.inspect(f"{pipeline}.outputs", answer.headers["x-request-id"])
    errors = [m["error"] for m in target["messages"] if "error" in m]
    assert errors == [], "an answered request got an error on its outputs topic afterwards"
    assert len(target["messages"]) == 1


def test_joincheck_inputs_that_pass_the_check_answer(up):
    answer = up.infer("joincheck", tfsimple_request([1] * 16))
    body = assert_pipeline_answer(answer, "joincheck")
    # check(2s) passes; tfsimple3 sums and subtracts tfsimple1's OUTPUT0 (2s) and
    # tfsimple2's OUTPUT1 (0s).
    assert outputs_by_name(body) == {"OUTPUT0": [2] * 16, "OUTPUT1": [2] * 16}


def test_joincheck_inputs_that_fail_the_check_end_in_an_error_naming_the_trigger(up):
    started = time.monotonic()
    answer = up.infer("joincheck", tfsimple_request())
    elapsed = time.monotonic() - started
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "tfsimple3" in error and "check" in error, error
    assert str(JOINCHECK_WINDOW_MS) in error, error
    assert KEY.match(answer.headers["x-request-id"])["pipeline"] == "joincheck"
    window = JOINCHECK_WINDOW_MS / 1000
    assert window - 0.2 <= elapsed <= window + 5, f"error after {elapsed:.2f} s"


# --- errors (pipeline-errors.md, error.yaml, outlier.yaml) --------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "expected"), [("error", [1, 2, 3, 4]), ("outlier", [11, 12, 13, 14])]
)
def test_normal_input_passes_the_outlier_step(up, pipeline, expected):
    body = assert_pipeline_answer(
        up.infer(pipeline, {"inputs": [fp32("INPUT", [1, 2, 3, 4])]}), pipeline
    )
    assert outputs_by_name(body) == {"OUTPUT": expected}


@pytest.mark.parametrize("pipeline", ["error", "outlier"])
def test_outlier_input_is_a_400_naming_the_step_over_rest(up, pipeline):
    answer = up.infer(pipeline, {"inputs": [fp32("INPUT", [100, 2, 3, 4])]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.startswith("outlier-error : "), error
    assert "outlier" in error.removeprefix("outlier-error : "), error
    assert KEY.match(answer.headers["x-request-id"])["pipeline"] == pipeline
    assert answer.headers["x-pipeline-version"] == "1"


def test_outlier_input_is_an_error_status_with_the_same_text_over_grpc(up):
    rest_error = up.infer("error", {"inputs": [fp32("INPUT", [100, 2, 3, 4])]}).json()["error"]
    client = triton_grpc.InferenceServerClient(up.grpc_address)
    try:
        tensor_in = triton_grpc.InferInput("INPUT", [4], "FP32")
        tensor_in.set_data_from_numpy(np.array([100, 2, 3, 4], dtype=np.float32))
        with pytest.raises(triton_grpc.InferenceServerException) as failure:
            client.infer("error", [tensor_in], headers={"seldon-model": "error.pipeline"})
    finally:
        client.close()
    assert failure.value.message() == rest_error
    assert failure.value.status() != "StatusCode.OK"


def test_outlier_input_over_grpc_is_status_unknown_as_in_seldon(up):
    client = triton_grpc.InferenceServerClient(up.grpc_address)
    try:
        tensor_in = triton_grpc.InferInput("INPUT", [4], "FP32")
        tensor_in.set_data_from_numpy(np.array([100, 2, 3, 4], dtype=np.float32))
        with pytest.raises(triton_grpc.InferenceServerException) as failure:
            client.infer("error", [tensor_in], headers={"seldon-model": "error.pipeline"})
    finally:
        client.close()
    assert failure.value.status() == "StatusCode.UNKNOWN"


# --- versions (pipeline-versions.md) ------------------------------------------------------------


ADD_REQUEST = {"inputs": [fp32("INPUT", [1, 2, 3, 4])]}


def test_pipeline_versions_answer_with_the_latest_version(up, model_root):
    up.apply(sample_documents("pipelines/version-test-a.yaml", model_root))
    assert up.wait_pipeline("version-test", version=1)["models"] == {"add10": "ModelAvailable"}
    body = assert_pipeline_answer(up.infer("version-test", ADD_REQUEST), "version-test", "1")
    assert outputs_by_name(body) == {"OUTPUT": [11, 12, 13, 14]}

    up.apply(sample_documents("pipelines/version-test-b.yaml", model_root))
    assert up.wait_pipeline("version-test", version=2)["models"] == {"mul10": "ModelAvailable"}
    body = assert_pipeline_answer(up.infer("version-test", ADD_REQUEST), "version-test", "2")
    assert outputs_by_name(body) == {"OUTPUT": [10, 20, 30, 40]}


def test_reapplying_an_older_spec_does_not_replay_requests_answered_meanwhile(up, model_root):
    up.apply(sample_documents("pipelines/version-test-a.yaml", model_root))
    version = up.pipeline("version-test")["version"]
    up.wait_pipeline("version-test", version=version)
    # add10's step reads the pipeline's inputs once, so its consumer group has an offset.
    assert_pipeline_answer(up.infer("version-test", ADD_REQUEST), "version-test", str(version))
    up.apply(sample_documents("pipelines/version-test-b.yaml", model_root))
    up.wait_pipeline("version-test", version=version + 1)
    answered = [up.infer("version-test", ADD_REQUEST).headers["x-request-id"] for _ in range(2)]
    up.apply(sample_documents("pipelines/version-test-a.yaml", model_root))
    up.wait_pipeline("version-test", version=version + 2)
    body = assert_pipeline_answer(
        up.infer("version-test", ADD_REQUEST), "version-test", str(version + 2)
    )
    assert outputs_by_name(body) == {"OUTPUT": [11, 12, 13, 14]}
    for key in answered:
        (target,) = up.inspect("version-test.outputs", key)
        versions = [m["headers"]["x-pipeline-version"] for m in target["messages"]]
        assert versions == [str(version + 1)], f"{key} answered by versions {versions}"


# --- pipeline to pipeline (pipeline-to-pipeline.md) ---------------------------------------------


@pytest.fixture(scope="module")
def tfsimple_key(up) -> str:
    """One call to `tfsimple`: every pipeline fed from it runs on its own with the same key."""
    answer = up.infer("tfsimple", tfsimple_request())
    body = assert_pipeline_answer(answer, "tfsimple")
    assert outputs_by_name(body) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": ZEROS}
    return answer.headers["x-request-id"]


def downstream_outputs(up: Up, pipeline: str, key: str) -> dict:
    def check():
        (target,) = up.inspect(f"{pipeline}.outputs", key)
        if not target["messages"]:
            raise NotYet(f"nothing on {target['topic']} for {key}")
        return target["messages"]

    messages = wait_until(check, 15, f"{pipeline}'s outputs for {key}")
    assert len(messages) == 1, messages
    (message,) = messages
    assert message["key"] == key
    assert "error" not in message, message
    return outputs_by_name(message["payload"])


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ("tfsimple-extended", {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}),
        ("tfsimple-extended2", {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}),
        ("tfsimple-extended-step", {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}),
        ("tfsimple-combined", {"OUTPUT0": FOUR_TO_64, "OUTPUT1": ZEROS}),
        ("tfsimple-combined-trigger", {"OUTPUT0": FOUR_TO_64, "OUTPUT1": ZEROS}),
        ("tfsimple-combined-step", {"OUTPUT0": FOUR_TO_64, "OUTPUT1": ZEROS}),
    ],
)
def test_pipelines_fed_from_tfsimple_run_on_their_own(up, tfsimple_key, pipeline, expected):
    assert downstream_outputs(up, pipeline, tfsimple_key) == expected


def test_pipeline_inspect_cli_shows_the_extended_pipelines_outputs(up, tfsimple_key):
    downstream_outputs(up, "tfsimple-extended", tfsimple_key)
    result = up.cli(
        "pipeline", "inspect", "tfsimple-extended.outputs", "--request-id", tfsimple_key,
        "--format", "json",
    )  # fmt: skip
    (target,) = json.loads(result.stdout)
    assert target["name"] == "tfsimple-extended.outputs"
    (message,) = target["messages"]
    assert message["key"] == tfsimple_key
    assert outputs_by_name(message["payload"]) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}
