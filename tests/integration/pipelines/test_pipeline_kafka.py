"""The same pipelines on Kafka: `inferline up --kafka` against a Tansu broker. Seldon Core 2's
samples give the same answers, async use works with a plain Kafka client, and a model server
killed mid-stream loses nothing."""

import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

from inferline.dataflow.topics import TopicNames
from inferline.protocol import protobuf
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import InferenceRequest, Tensor

from ._platform import (
    SAMPLES,
    SKIP_REASON,
    NotYet,
    new_up,
    outputs_by_name,
    sample_documents,
    tensor,
    tfsimple_request,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SAMPLES.is_dir(), reason=SKIP_REASON)]

TWO_TO_32 = [2 * i for i in range(1, 17)]
ONE_TO_16 = list(range(1, 17))
TOPICS = TopicNames()
# Pipeline name -> sample file: a cross-section of the samples (every stage is a consumer of
# its own on the broker, so the whole set would be heavy for a 2-core test machine).
PIPELINES = {
    "tfsimples": "tfsimples.yaml",
    "tfsimples-input": "tfsimples-input.yaml",
    "join": "tfsimples-join.yaml",
    "tfsimple-conditional": "conditional.yaml",
    "pipeline-inputs": "pipeline-inputs.yaml",
    "trigger-joins": "trigger-joins.yaml",
    "error": "error.yaml",
    "tfsimple": "tfsimple.yaml",
    "tfsimple-extended": "tfsimple-extended.yaml",
}


def fp32(name: str, values: list[float]) -> dict:
    return tensor(name, "FP32", [len(values)], values)


@pytest.fixture(scope="module")
def up(tmp_path_factory, tansu_broker, model_root):
    platform = new_up(tmp_path_factory, __name__)
    platform.extra_args = ["--kafka", tansu_broker]
    platform.start()
    docs = []
    for sample in PIPELINES.values():
        docs += sample_documents(f"pipelines/{sample}", model_root)
    models = ("tfsimple1", "tfsimple2", "tfsimple3", "conditional", "mul10", "add10")
    for model in (*models, "outlier-error"):
        docs += sample_documents(f"models/{model}.yaml", model_root)
    platform.apply(docs)
    platform.wait_pipelines(PIPELINES, timeout=180)
    yield platform
    platform.stop()
    platform.http.close()


def test_chain_answers_as_in_seldon(up):
    answer = up.infer_ok("tfsimples", tfsimple_request())
    assert outputs_by_name(answer.json()) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}
    assert answer.headers["x-pipeline-version"] == "1"
    assert answer.headers["x-request-id"].startswith("0.tfsimples.")


@pytest.mark.parametrize(("choice", "expected"), [(0, [10, 20, 30, 40]), (1, [11, 12, 13, 14])])
def test_conditional_routes_on_the_tensor_present(up, choice, expected):
    request = {
        "inputs": [
            tensor("CHOICE", "INT32", [1], [choice]),
            fp32("INPUT0", [1, 2, 3, 4]),
            fp32("INPUT1", [1, 2, 3, 4]),
        ]
    }
    answer = up.infer_ok("tfsimple-conditional", request)
    assert outputs_by_name(answer.json()) == {"OUTPUT": expected}


def test_chain_from_a_steps_inputs_and_join(up):
    chained = up.infer_ok("tfsimples-input", tfsimple_request()).json()
    assert outputs_by_name(chained) == {"OUTPUT0": ONE_TO_16, "OUTPUT1": ONE_TO_16}
    joined = up.infer_ok("join", tfsimple_request()).json()
    assert outputs_by_name(joined) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}


def test_pipeline_inputs_and_trigger_joins(up):
    request = {"inputs": [fp32("INPUT0", [1, 2, 3, 4]), fp32("INPUT1", [1, 2, 3, 4])]}
    body = up.infer_ok("pipeline-inputs", request).json()
    assert [o["data"] for o in body["outputs"]] == [[10, 20, 30, 40], [11, 12, 13, 14]]
    for trigger, expected in (("ok1", [10, 20, 30, 40]), ("ok3", [11, 12, 13, 14])):
        request = {"inputs": [fp32(trigger, [1]), fp32("INPUT", [1, 2, 3, 4])]}
        assert outputs_by_name(up.infer_ok("trigger-joins", request).json()) == {"OUTPUT": expected}


def test_a_pipeline_fed_by_another_runs_on_its_own(up):
    key = up.infer_ok("tfsimple", tfsimple_request()).headers["x-request-id"]

    def extended():
        (target,) = up.inspect("tfsimple-extended.outputs", key)
        if not target["messages"]:
            raise NotYet("nothing yet")
        return target["messages"]

    (message,) = wait_until(extended, 30, "tfsimple-extended's answer")
    assert outputs_by_name(message["payload"]) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}


def test_a_failing_step_answers_400_naming_it(up):
    answer = up.infer("error", {"inputs": [fp32("INPUT", [100, 2, 3, 4])]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("outlier-error : ")


def test_async_use_with_a_plain_kafka_client(up, tansu_broker):
    """Write a V2 protobuf request with header `pipeline` to the inputs topic, read the
    outputs topic, with confluent-kafka alone (what Seldon users' tooling does)."""
    values = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
    request = InferenceRequest(
        [Tensor.from_numpy("INPUT0", values), Tensor.from_numpy("INPUT1", values)]
    )
    key = f"async-{uuid.uuid4().hex[:8]}".encode()
    consumer = Consumer(
        {
            "bootstrap.servers": tansu_broker,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            # A group join on Tansu takes half the session timeout (librdkafka's default: 45 s).
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([TOPICS.pipeline("tfsimples", "outputs")])
    producer = Producer({"bootstrap.servers": tansu_broker})
    producer.produce(
        TOPICS.pipeline("tfsimples", "inputs"),
        protobuf.request_to_proto(request, "tfsimples").SerializeToString(),
        key=key,
        headers=[("pipeline", b"tfsimples")],
    )
    producer.flush(10)
    try:
        deadline = time.monotonic() + 60
        answer = None
        while answer is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error() and message.key() == key:
                answer = message
    finally:
        consumer.close()
    assert answer is not None, "no answer on the outputs topic"
    response = protobuf.response_from_proto(pb.ModelInferResponse.FromString(answer.value()))
    assert response.output("OUTPUT0").data.tolist() == [TWO_TO_32]
    assert dict(answer.headers())["x-pipeline-version"] == b"1"


def test_no_request_is_lost_when_the_model_server_is_killed(up):
    (pid,) = up.server_pids()
    results: dict[int, object] = {}

    def call(index: int) -> None:
        try:
            answer = up.infer("tfsimples", tfsimple_request(), timeout=90)
            results[index] = (answer.status_code, answer.json())
        except Exception as exc:  # recorded, asserted below
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    for thread in threads:
        thread.join(120)
    assert len(results) == 6
    for index, result in results.items():
        assert not isinstance(result, BaseException), f"request {index}: {result!r}"
        status, body = result
        assert status == 200, f"request {index}: {body}"
        assert outputs_by_name(body) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}
    wait_until(lambda: up.server_pids() not in ([], [pid]), 30, "the server to be restarted")
