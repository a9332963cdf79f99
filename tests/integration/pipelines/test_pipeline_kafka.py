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
    new_up,
    outputs_by_name,
    sample_documents,
    tensor,
    tfsimple_request,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SAMPLES.is_dir(), reason=SKIP_REASON)]

TWO_TO_32 = [2 * i for i in range(1, 17)]
TOPICS = TopicNames()


def fp32(name: str, values: list[float]) -> dict:
    return tensor(name, "FP32", [len(values)], values)


@pytest.fixture(scope="module")
def up(tmp_path_factory, tansu_broker, model_root):
    platform = new_up(tmp_path_factory, __name__)
    platform.extra_args = ["--kafka", tansu_broker]
    platform.start()
    docs = []
    for sample in ("tfsimples.yaml", "conditional.yaml", "error.yaml"):
        docs += sample_documents(f"pipelines/{sample}", model_root)
    for model in ("tfsimple1", "tfsimple2", "conditional", "mul10", "add10", "outlier-error"):
        docs += sample_documents(f"models/{model}.yaml", model_root)
    platform.apply(docs)
    platform.wait_pipelines(["tfsimples", "tfsimple-conditional", "error"], timeout=120)
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
