"""Asynchronous use of a pipeline on the embedded bus, through the Python API: a V2 protobuf
request with header `pipeline: P` written to P's inputs topic comes out on P's outputs topic."""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from inferline.demo import free_port
from inferline.examples import write_runtime_model
from inferline.protocol import protobuf
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import InferenceRequest, Tensor
from inferline.resources import load_resources
from inferline.up import Platform, UpConfig

PIPELINE = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata: {{name: tfsimple1}}
spec: {{storageUri: {uri}}}
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata: {{name: tfsimple2}}
spec: {{storageUri: {uri}}}
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata: {{name: tfsimples}}
spec:
  steps:
  - name: tfsimple1
  - name: tfsimple2
    inputs: [tfsimple1]
    tensorMap:
      tfsimple1.outputs.OUTPUT0: INPUT0
      tfsimple1.outputs.OUTPUT1: INPUT1
  output:
    steps: [tfsimple2]
"""


async def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_request_written_to_the_inputs_topic_comes_out_on_the_outputs_topic(
    tmp_path: Path,
):
    model = write_runtime_model(tmp_path / "models" / "tfsimple", "TfSimple")
    config = UpConfig(
        data_dir=tmp_path / "state",
        http_port=free_port(),
        grpc_port=free_port(),
        scheduler_port=free_port(),
    )
    async with Platform(config) as platform:
        scheduler = platform.scheduler.scheduler
        for resource in load_resources(PIPELINE.format(uri=model)):
            scheduler.apply(resource)
        await wait_for(
            lambda: (
                scheduler.pipeline_status("tfsimples")["state"] == "PipelineReady"
                and scheduler.pipeline_status("tfsimples")["modelsReady"]
            ),
            "the pipeline and its models",
        )
        bus, topics = platform.bus, platform.topics
        outputs = await bus.consumer("my-app", [topics.pipeline("tfsimples", "outputs")])

        values = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
        request = InferenceRequest(
            [Tensor.from_numpy("INPUT0", values), Tensor.from_numpy("INPUT1", values)]
        )
        message = protobuf.request_to_proto(request, "tfsimples").SerializeToString()
        await bus.produce(
            topics.pipeline("tfsimples", "inputs"),
            message,
            key=b"my-request-1",
            headers=[("pipeline", b"tfsimples"), ("x-tenant", b"blue")],
        )

        found = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found = [m for m in await outputs.poll(0.5) if m.key == b"my-request-1"]
        assert found, "no answer on the outputs topic"
        (answer,) = found
        assert answer.header("pipeline") == b"tfsimples"
        assert answer.header("x-pipeline-version") == b"1"
        assert answer.header("x-tenant") == b"blue"  # x-* headers travel with the request
        response = protobuf.response_from_proto(pb.ModelInferResponse.FromString(answer.value))
        expected = (values * 2).tolist()
        assert response.output("OUTPUT0").data.tolist() == expected
        assert response.output("OUTPUT1").data.tolist() == expected
        await outputs.close()
