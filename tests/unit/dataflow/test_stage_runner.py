"""StageRunner on a real EmbeddedBus: what a stage writes to its sink (and to the errors topic)
for the messages produced to its sources (reference b.3-b.11)."""

import asyncio
import contextlib
import textwrap

import numpy as np
import orjson
import pytest

from inferline.bus.base import Message, TopicPartition
from inferline.dataflow import messages
from inferline.dataflow.batching import BATCH_HEADER
from inferline.dataflow.plan import REQUEST, RESPONSE, PipelinePlan, Stage, plan_pipeline
from inferline.dataflow.stage import StageRunner
from inferline.dataflow.topics import ERROR_HEADER, TopicNames
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import Tensor
from inferline.resources import load_resources

TOPICS = TopicNames()
ERRORS = TOPICS.errors


def plan(name: str, spec: str) -> PipelinePlan:
    text = (
        "apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\nmetadata:\n"
        f"  name: {name}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")
    )
    (resource,) = load_resources(text)
    return plan_pipeline(resource.name, 1, resource.spec, TOPICS)


def stage_of(p: PipelinePlan, name: str) -> Stage:
    (found,) = [s for s in p.stages if s.name == name]
    return found


def tensors(**values) -> list[Tensor]:
    return [Tensor.from_numpy(name, np.asarray(value)) for name, value in values.items()]


def response(**values) -> bytes:
    return messages.encode(messages.TensorMessage(tensors(**values), id="rid"), RESPONSE, "m_1")


def request(**values) -> bytes:
    return messages.encode(messages.TensorMessage(tensors(**values), id="rid"), REQUEST)


def headers(pipeline: str | None, key: str, **extra: str) -> list[tuple[str, bytes]]:
    result = [] if pipeline is None else [("pipeline", pipeline.encode())]
    result.append(("x-request-id", key.encode()))
    result += [(name.replace("_", "-"), value.encode()) for name, value in extra.items()]
    return result


def decoded(message: Message, payload: str) -> dict[str, list]:
    return {t.name: t.data.tolist() for t in messages.decode(message.value, payload).tensors}


async def wait_until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def read(bus, topic: str, count: int, timeout: float = 5.0) -> list[Message]:
    """The messages on `topic` once there are at least `count` (or at the timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await bus.read_last(topic, 10_000)
        if len(found) >= count or loop.time() > deadline:
            return found
        await asyncio.sleep(0.005)


class Runners:
    """Starts stage runners and stops them at the end of the test."""

    def __init__(self, bus):
        self.bus = bus
        self.tasks: list[asyncio.Task] = []

    async def start(self, stage: Stage, group: str = "g", version: int = 1, partitions: int = 1):
        for topic in (*stage.topics, stage.sink_topic, ERRORS):
            await self.bus.create_topic(topic, partitions)
        runner = StageRunner(stage, version, self.bus, TOPICS, group)
        task = asyncio.create_task(runner.run())
        self.tasks.append(task)
        await asyncio.wait_for(runner.ready.wait(), 5)
        return runner, task

    async def stop(self, task: asyncio.Task) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        for task in self.tasks:
            await self.stop(task)


@pytest.fixture
async def runners(bus):
    runners = Runners(bus)
    yield runners
    await runners.close()


TFSIMPLES = plan(
    "tfsimples",
    """
    steps:
      - name: tfsimple1
      - name: tfsimple2
        inputs:
        - tfsimple1
        tensorMap:
          tfsimple1.outputs.OUTPUT0: INPUT0
          tfsimple1.outputs.OUTPUT1: INPUT1
    output:
      steps:
      - tfsimple2
    """,
)

JOIN_SPEC = """
steps:
  - name: tfsimple1
  - name: tfsimple2
  - name: tfsimple3
    inputs:
    - tfsimple1.outputs.OUTPUT0
    - tfsimple2.outputs.OUTPUT1
    tensorMap:
      tfsimple1.outputs.OUTPUT0: INPUT0
      tfsimple2.outputs.OUTPUT1: INPUT1
    {extra}
output:
  steps:
  - tfsimple3
"""


def join_stage(extra: str = "") -> Stage:
    return stage_of(plan("join", JOIN_SPEC.format(extra=extra)), "step tfsimple3")


T1_OUT = TOPICS.model("tfsimple1", "outputs")
T2_OUT = TOPICS.model("tfsimple2", "outputs")
T3_IN = TOPICS.model("tfsimple3", "inputs")


# --- one source -----------------------------------------------------------------------------


async def test_chained_step_renames_tensors_keeps_key_partition_and_request_headers(bus, runners):
    stage = stage_of(TFSIMPLES, "step tfsimple2")
    await runners.start(stage, version=7, partitions=2)
    await bus.produce(
        T1_OUT,
        response(OUTPUT0=[[2, 4]], OUTPUT1=[[0, 0]], OTHER=[1]),
        key=b"1.tfsimples.abc",
        partition=0,  # the key's partition prefix decides where the stage writes
        headers=[
            *headers("tfsimples", "1.tfsimples.abc", x_custom="yes"),
            ("x-seldon-route", b":tfsimple1_1:"),
            ("x-pipeline-version", b"3"),
            ("other-header", b"dropped"),
        ],
    )
    (out,) = await read(bus, stage.sink_topic, 1)
    assert out.key == b"1.tfsimples.abc"
    assert out.partition == 1
    assert decoded(out, REQUEST) == {"INPUT0": [[2, 4]], "INPUT1": [[0, 0]], "OTHER": [1]}
    proto = pb.ModelInferRequest.FromString(out.value)
    assert proto.model_name == "tfsimple2", "the request names the step's model"
    assert proto.id == "rid"
    assert out.header("pipeline") == b"tfsimples"
    assert out.header("x-pipeline-version") == b"7", "this stage's version, not the upstream's"
    assert [v for k, v in out.headers if k == "x-pipeline-version"] == [b"7"]
    assert out.header("x-request-id") == b"1.tfsimples.abc"
    assert out.header("x-custom") == b"yes"
    assert out.header("x-seldon-route") is None, "routing state of one hop does not travel"
    assert out.header("other-header") is None


async def test_messages_of_other_pipelines_are_ignored(bus, runners):
    stage = stage_of(TFSIMPLES, "step tfsimple2")
    await runners.start(stage)
    await bus.produce(T1_OUT, response(OUTPUT0=[1]), key=b"0.x.1", headers=headers("other", "a"))
    await bus.produce(T1_OUT, response(OUTPUT0=[2]), key=b"0.x.2", headers=headers(None, "b"))
    await bus.produce(T1_OUT, b"not protobuf", key=b"0.x.3", headers=headers("tfsimples", "c"))
    await bus.produce(
        T1_OUT, response(OUTPUT0=[4]), key=b"0.x.4", headers=headers("tfsimples", "d")
    )
    await read(bus, stage.sink_topic, 1)
    found = await bus.read_last(stage.sink_topic, 100)
    assert [m.key for m in found] == [b"0.x.4"]
    assert decoded(found[0], REQUEST) == {"INPUT0": [4]}


async def test_a_pipeline_request_becomes_the_first_steps_request(bus, runners):
    stage = stage_of(TFSIMPLES, "step tfsimple1")
    await runners.start(stage)
    await bus.produce(
        stage.inputs[0].topic,
        request(INPUT0=[[1, 2]], INPUT1=[[3, 4]]),
        key=b"0.tfsimples.r",
        headers=headers("tfsimples", "0.tfsimples.r"),
    )
    (out,) = await read(bus, TOPICS.model("tfsimple1", "inputs"), 1)
    assert decoded(out, REQUEST) == {"INPUT0": [[1, 2]], "INPUT1": [[3, 4]]}


async def test_a_stage_that_changes_nothing_passes_the_tensors_on_untouched(bus, runners):
    """No join, rename, filter or batch: the request goes on as it came (typed contents stay
    typed), named for the step's model, without the caller's model version or requested
    outputs, exactly as a decoded and re-encoded one would."""
    stage = stage_of(TFSIMPLES, "step tfsimple1")
    await runners.start(stage)
    sent = pb.ModelInferRequest(model_name="tfsimples", model_version="3", id="rid-9")
    sent.parameters["tenant"].string_param = "blue"
    sent.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 2]).contents.int_contents[:] = [1, 2]
    sent.outputs.add(name="OUTPUT0")
    await bus.produce(
        stage.inputs[0].topic, b"not protobuf", key=b"0.t.bad", headers=headers("tfsimples", "a")
    )
    await bus.produce(
        stage.inputs[0].topic,
        sent.SerializeToString(),
        key=b"0.tfsimples.r",
        headers=headers("tfsimples", "0.tfsimples.r", x_custom="yes"),
    )
    (out,) = await read(bus, stage.sink_topic, 1)
    assert out.key == b"0.tfsimples.r", "an unreadable message is skipped, the next goes on"
    assert out.header("x-custom") == b"yes"
    assert out.header("x-pipeline-version") == b"1"
    proto = pb.ModelInferRequest.FromString(out.value)
    assert proto.model_name == "tfsimple1"
    assert proto.model_version == ""
    assert list(proto.outputs) == []
    assert proto.id == "rid-9"
    assert proto.parameters["tenant"].string_param == "blue"
    assert list(proto.inputs[0].contents.int_contents) == [1, 2]
    assert decoded(out, REQUEST) == {"INPUT0": [[1, 2]]}


async def test_output_stage_of_one_step_answers_with_the_steps_tensors_under_no_model(bus, runners):
    stage = stage_of(plan("one", "steps: [{name: m}]\noutput: {steps: [m]}"), "output")
    await runners.start(stage)
    answer = pb.ModelInferResponse.FromString(response(OUTPUT0=[[3, 4]]))
    answer.model_version = "1"
    await bus.produce(
        TOPICS.model("m", "outputs"),
        answer.SerializeToString(),
        key=b"0.one.k",
        headers=headers("one", "0.one.k"),
    )
    (out,) = await read(bus, TOPICS.pipeline("one", "outputs"), 1)
    proto = pb.ModelInferResponse.FromString(out.value)
    assert (proto.model_name, proto.model_version, proto.id) == ("", "", "rid")
    assert decoded(out, RESPONSE) == {"OUTPUT0": [[3, 4]]}


CONDITIONAL = plan(
    "tfsimple-conditional",
    """
    steps:
    - name: conditional
    - name: mul10
      inputs:
      - conditional.outputs.OUTPUT0
      tensorMap:
        conditional.outputs.OUTPUT0: INPUT
    - name: add10
      inputs:
      - conditional.outputs.OUTPUT1
      tensorMap:
        conditional.outputs.OUTPUT1: INPUT
    output:
      steps:
      - mul10
      - add10
      stepsJoin: any
    """,
)


async def test_tensor_filter_keeps_only_the_wanted_tensor_and_drops_messages_without_it(
    bus, runners
):
    stage = stage_of(CONDITIONAL, "step mul10")
    await runners.start(stage)
    topic = TOPICS.model("conditional", "outputs")
    pipeline = "tfsimple-conditional"
    await bus.produce(topic, response(OUTPUT1=[5.0]), key=b"0.c.a", headers=headers(pipeline, "a"))
    await bus.produce(
        topic, response(OUTPUT0=[7.0], OUTPUT1=[8.0]), key=b"0.c.b", headers=headers(pipeline, "b")
    )
    await read(bus, stage.sink_topic, 1)
    found = await bus.read_last(stage.sink_topic, 100)
    assert [m.key for m in found] == [b"0.c.b"], "a message with no wanted tensor goes nowhere"
    assert decoded(found[0], REQUEST) == {"INPUT": [7.0]}


async def test_output_stage_writes_a_response_of_the_first_branch_that_answers(bus, runners):
    stage = stage_of(CONDITIONAL, "output")
    await runners.start(stage)
    pipeline = "tfsimple-conditional"
    await bus.produce(
        TOPICS.model("add10", "outputs"),
        response(OUTPUT=[11.0]),
        key=b"0.c.k",
        headers=headers(pipeline, "0.c.k"),
    )
    (out,) = await read(bus, TOPICS.pipeline(pipeline, "outputs"), 1)
    assert out.key == b"0.c.k"
    assert decoded(out, RESPONSE) == {"OUTPUT": [11.0]}


async def test_a_trigger_gates_the_data_and_is_not_passed_on(bus, runners):
    p = plan(
        "trigger-joins",
        """
        steps:
        - name: add10
          inputs:
          - trigger-joins.inputs.INPUT
          triggers:
          - trigger-joins.inputs.ok3
        output:
          steps:
          - add10
        """,
    )
    stage = stage_of(p, "step add10")
    await runners.start(stage)
    topic = TOPICS.pipeline("trigger-joins", "inputs")
    await bus.produce(
        topic,
        request(ok1=[1.0], INPUT=[1.0, 2.0]),
        key=b"0.t.a",
        headers=headers("trigger-joins", "a"),
    )
    await bus.produce(
        topic,
        request(ok3=[1.0], INPUT=[3.0, 4.0]),
        key=b"0.t.b",
        headers=headers("trigger-joins", "b"),
    )
    await read(bus, stage.sink_topic, 1)
    found = await bus.read_last(stage.sink_topic, 100)
    assert [m.key for m in found] == [b"0.t.b"]
    assert decoded(found[0], REQUEST) == {"INPUT": [3.0, 4.0]}


# --- joins ----------------------------------------------------------------------------------


async def test_join_of_two_sources_by_key_in_source_order(bus, runners):
    stage = join_stage()
    await runners.start(stage)
    await bus.produce(
        T2_OUT,
        response(OUTPUT0=[0], OUTPUT1=[21]),
        key=b"0.join.a",
        headers=headers("join", "0.join.a", x_from="t2"),
    )
    await bus.produce(T1_OUT, response(OUTPUT0=[12]), key=b"0.join.b", headers=headers("join", "b"))
    await bus.produce(
        T1_OUT,
        response(OUTPUT0=[11], OUTPUT1=[0]),
        key=b"0.join.a",
        headers=headers("join", "0.join.a", x_from="t1"),
    )
    (first,) = await read(bus, T3_IN, 1)
    assert first.key == b"0.join.a"
    proto = pb.ModelInferRequest.FromString(first.value)
    assert [t.name for t in proto.inputs] == ["INPUT0", "INPUT1"], "tfsimple1's first, as listed"
    assert decoded(first, REQUEST) == {"INPUT0": [11], "INPUT1": [21]}
    assert first.header("x-from") is not None

    await bus.produce(T2_OUT, response(OUTPUT1=[22]), key=b"0.join.b", headers=headers("join", "b"))
    found = await read(bus, T3_IN, 2)
    assert [m.key for m in found] == [b"0.join.a", b"0.join.b"]
    assert decoded(found[1], REQUEST) == {"INPUT0": [12], "INPUT1": [22]}


async def test_join_timeout_writes_an_error_naming_the_missing_step(bus, runners):
    stage = join_stage("joinWindowMs: 150")
    await runners.start(stage)
    await bus.produce(
        T1_OUT,
        response(OUTPUT0=[1]),
        key=b"0.join.late",
        headers=headers("join", "0.join.late", x_custom="kept"),
    )
    (error,) = await read(bus, ERRORS, 1)
    assert error.key == b"0.join.late"
    assert error.header(ERROR_HEADER) == b"join"
    assert error.header("pipeline") == b"join", "the join's errors stage must pick it up"
    assert error.header("x-custom") == b"kept"
    text = error.value.decode()
    assert "step tfsimple3" in text
    assert "150 ms" in text
    assert "tfsimple2" in text
    assert "tfsimple1" not in text.split("without", 1)[1], "only what never came is named"
    assert await bus.read_last(T3_IN, 10) == []


async def test_outer_join_emits_what_came_when_the_window_closes(bus, runners):
    stage = join_stage("inputsJoinType: outer\n    joinWindowMs: 150")
    await runners.start(stage)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bus.produce(T2_OUT, response(OUTPUT1=[5]), key=b"0.join.o", headers=headers("join", "o"))
    (out,) = await read(bus, T3_IN, 1)
    assert loop.time() - started >= 0.14
    assert decoded(out, REQUEST) == {"INPUT1": [5]}
    assert await bus.read_last(ERRORS, 10) == []


async def test_a_restart_replays_a_join_left_open(bus, runners):
    stage = join_stage()
    first, task = await runners.start(stage, group="dataflow.join.step.tfsimple3")
    # K waits for tfsimple2; J completes.
    await bus.produce(T1_OUT, response(OUTPUT0=[1]), key=b"0.join.k", headers=headers("join", "k"))
    await bus.produce(T1_OUT, response(OUTPUT0=[2]), key=b"0.join.j", headers=headers("join", "j"))
    await bus.produce(T2_OUT, response(OUTPUT1=[3]), key=b"0.join.j", headers=headers("join", "j"))
    (done,) = await read(bus, T3_IN, 1)
    assert done.key == b"0.join.j"
    await wait_until(lambda: len(first._committed) == 2)
    await runners.stop(task)

    await runners.start(stage, group="dataflow.join.step.tfsimple3")
    await bus.produce(T2_OUT, response(OUTPUT1=[4]), key=b"0.join.k", headers=headers("join", "k"))
    found = await read(bus, T3_IN, 2)
    assert [m.key for m in found] == [b"0.join.j", b"0.join.k"]
    assert decoded(found[1], REQUEST) == {"INPUT0": [1], "INPUT1": [4]}
    await asyncio.sleep(0.1)
    keys = [m.key for m in await bus.read_last(T3_IN, 10)]
    assert keys.count(b"0.join.j") == 1, "a join that was emitted before the restart is not again"


async def test_a_stage_stopped_right_after_writing_does_not_write_again(bus, runners):
    stage = stage_of(TFSIMPLES, "step tfsimple1")
    _, task = await runners.start(stage, group="gs")
    for n in (1, 2):
        await bus.produce(
            stage.inputs[0].topic,
            request(INPUT0=[n], INPUT1=[n]),
            key=b"0.tfsimples.%d" % n,
            headers=headers("tfsimples", f"0.tfsimples.{n}"),
        )
        await read(bus, stage.sink_topic, n)
    await runners.stop(task)  # at once: before its next idle poll or commit interval
    assert await bus.committed("gs", [stage.inputs[0].topic]) == {
        TopicPartition(stage.inputs[0].topic, 0): 2
    }


async def test_offsets_are_committed_below_held_messages_only(bus, runners):
    stage = join_stage()
    runner, task = await runners.start(stage, group="gc")
    for n in range(3):
        await bus.produce(
            T1_OUT, response(OUTPUT0=[n]), key=b"0.join.%d" % n, headers=headers("join", "x")
        )
    await wait_until(lambda: len(runner.buffer) == 3)
    await wait_until(lambda: runner._committed)
    await runners.stop(task)
    # A new member of the group starts again at the first held message.
    consumer = await bus.consumer("gc", [T1_OUT])
    replayed = await consumer.poll(1.0)
    assert [m.key for m in replayed] == [b"0.join.0", b"0.join.1", b"0.join.2"]
    await consumer.close()


# --- batching -------------------------------------------------------------------------------


IRIS_BATCH = plan(
    "iris-batch",
    """
    steps:
      - name: iris
        batch:
          size: 3
    output:
      steps:
      - iris
    """,
)


async def test_batched_step_merges_requests_and_the_answer_is_split_back(bus, runners):
    step = stage_of(IRIS_BATCH, "step iris")
    output = stage_of(IRIS_BATCH, "output")
    await runners.start(step)
    await runners.start(output, group="g-out")
    rows = {"a": [[5.1, 3.5, 1.4, 0.2]], "b": [[6.2, 2.9, 4.3, 1.3]], "c": [[7.7, 3.0, 6.1, 2.3]]}
    for rid, row in rows.items():
        key = f"0.iris-batch.{rid}"
        await bus.produce(
            step.inputs[0].topic,
            request(predict=np.asarray(row, dtype=np.float32)),
            key=key.encode(),
            headers=headers("iris-batch", f"rid-{rid}"),
        )
    (merged,) = await read(bus, step.sink_topic, 1)
    assert merged.key == b"0.iris-batch.c"
    assert np.asarray(decoded(merged, REQUEST)["predict"]).shape == (3, 4)
    assert orjson.loads(merged.header(BATCH_HEADER)) == [
        ["0.iris-batch.a", 1, "rid-a"],
        ["0.iris-batch.b", 1, "rid-b"],
        ["0.iris-batch.c", 1, "rid-c"],
    ]
    # The model answers row by row; the model gateway keeps the request's headers.
    await bus.produce(
        TOPICS.model("iris", "outputs"),
        response(predict=np.asarray([0, 1, 2], dtype=np.int64)),
        key=merged.key,
        headers=list(merged.headers),
    )
    answers = await read(bus, output.sink_topic, 3)
    by_key = {m.key: m for m in answers}
    assert set(by_key) == {b"0.iris-batch.a", b"0.iris-batch.b", b"0.iris-batch.c"}
    for n, rid in enumerate("abc"):
        answer = by_key[f"0.iris-batch.{rid}".encode()]
        assert decoded(answer, RESPONSE) == {"predict": [n]}
        assert answer.header("x-request-id") == f"rid-{rid}".encode()
        assert answer.header(BATCH_HEADER) is None


async def test_an_answer_not_row_by_row_goes_on_whole_under_the_last_key(bus, runners):
    output = stage_of(IRIS_BATCH, "output")
    await runners.start(output)
    members = orjson.dumps([["0.iris-batch.a", 1, "ra"], ["0.iris-batch.b", 1, "rb"]])
    await bus.produce(
        TOPICS.model("iris", "outputs"),
        response(score=[0.5]),
        key=b"0.iris-batch.b",
        headers=[*headers("iris-batch", "rb"), (BATCH_HEADER, members)],
    )
    (out,) = await read(bus, output.sink_topic, 1)
    assert out.key == b"0.iris-batch.b"
    assert decoded(out, RESPONSE) == {"score": [0.5]}


async def test_batch_window_sends_a_partial_batch(bus, runners):
    p = plan(
        "w",
        """
        steps:
          - name: drift
            batch:
              size: 100
              windowMs: 100
        """,
    )
    step = stage_of(p, "step drift")
    await runners.start(step)
    for rid in "ab":
        await bus.produce(
            step.inputs[0].topic,
            request(x=[[1.0, 2.0]]),
            key=f"0.w.{rid}".encode(),
            headers=headers("w", rid),
        )
    (merged,) = await read(bus, step.sink_topic, 1)
    assert merged.key == b"0.w.b"
    assert decoded(merged, REQUEST) == {"x": [[1.0, 2.0], [1.0, 2.0]]}


# --- errors and cycles ----------------------------------------------------------------------


async def test_errors_stage_forwards_its_pipelines_errors_to_the_outputs_topic(bus, runners):
    stage = stage_of(TFSIMPLES, "errors")
    await runners.start(stage, version=4)
    await bus.produce(
        ERRORS,
        b"boom",
        key=b"0.other.x",
        headers=[*headers("other", "x"), (ERROR_HEADER, b"m")],
    )
    members = orjson.dumps([["0.tfsimples.a", 1, "ra"], ["0.tfsimples.b", 2, "rb"]])
    await bus.produce(
        ERRORS,
        b"bad shape",
        key=b"0.tfsimples.b",
        headers=[
            ("pipeline", b"tfsimples"),
            ("x-request-id", b"rb"),
            (BATCH_HEADER, members),
            (ERROR_HEADER, b"tfsimple1"),
        ],
    )
    found = await read(bus, TOPICS.pipeline("tfsimples", "outputs"), 2)
    assert [m.key for m in found] == [b"0.tfsimples.a", b"0.tfsimples.b"], "one per batch member"
    for message, rid in zip(found, [b"ra", b"rb"], strict=True):
        assert message.value == b"bad shape"
        assert message.header(ERROR_HEADER) == b"tfsimple1"
        assert message.header("pipeline") == b"tfsimples"
        assert message.header("x-pipeline-version") == b"4"
        assert message.header("x-request-id") == rid
        assert message.header(BATCH_HEADER) is None


async def test_cycle_guard_ends_a_request_that_loops_too_often(bus, runners):
    p = plan(
        "loop",
        """
        allowCycles: true
        maxStepRevisits: 1
        steps:
        - name: a
          inputs: [loop.inputs, b.outputs.continue]
          inputsJoinType: any
        - name: b
          inputs: [a]
        """,
    )
    stage = stage_of(p, "step a")
    await runners.start(stage)
    await bus.produce(
        TOPICS.pipeline("loop", "inputs"),
        request(x=[1]),
        key=b"0.loop.k",
        headers=headers("loop", "k"),
    )
    await read(bus, stage.sink_topic, 1)
    for n in range(2):
        await bus.produce(
            TOPICS.model("b", "outputs"),
            response(**{"continue": [n]}),
            key=b"0.loop.k",
            headers=headers("loop", "k"),
        )
    (error,) = await read(bus, ERRORS, 1)
    assert error.key == b"0.loop.k"
    assert error.header(ERROR_HEADER) == b"loop"
    text = error.value.decode()
    assert text.startswith("ERROR:")
    assert "step a" in text and "maxStepRevisits 1" in text
    found = await bus.read_last(stage.sink_topic, 10)
    assert len(found) == 2, "the request and one revisit"
    # Another request is not affected by k's count.
    await bus.produce(
        TOPICS.pipeline("loop", "inputs"),
        request(x=[2]),
        key=b"0.loop.j",
        headers=headers("loop", "j"),
    )
    found = await read(bus, stage.sink_topic, 3)
    assert [m.key for m in found][-1] == b"0.loop.j"


# --- pipeline chaining ----------------------------------------------------------------------


async def test_input_stage_takes_the_upstream_pipelines_messages_into_this_pipeline(bus, runners):
    p = plan(
        "tfsimple-extended",
        """
        input:
          externalInputs:
            - tfsimple.outputs
          tensorMap:
            tfsimple.outputs.OUTPUT0: INPUT0
            tfsimple.outputs.OUTPUT1: INPUT1
        steps:
          - name: tfsimple2
        output:
          steps:
          - tfsimple2
        """,
    )
    stage = stage_of(p, "input")
    await runners.start(stage, version=2)
    upstream = TOPICS.pipeline("tfsimple", "outputs")
    # The downstream pipeline's own name on the upstream topic is not the upstream's message.
    await bus.produce(
        upstream, response(OUTPUT0=[9]), key=b"0.x.n", headers=headers("tfsimple-extended", "n")
    )
    await bus.produce(
        upstream,
        response(OUTPUT0=[2], OUTPUT1=[0]),
        key=b"0.tfsimple.r",
        headers=headers("tfsimple", "0.tfsimple.r", x_trace="t"),
    )
    await read(bus, stage.sink_topic, 1)
    (out,) = await bus.read_last(stage.sink_topic, 10)
    assert stage.sink_topic == TOPICS.pipeline("tfsimple-extended", "inputs")
    assert out.key == b"0.tfsimple.r", "the upstream key is kept"
    assert out.header("pipeline") == b"tfsimple-extended", "re-labelled with its own name"
    assert out.header("x-pipeline-version") == b"2"
    assert out.header("x-trace") == b"t"
    assert decoded(out, REQUEST) == {"INPUT0": [2], "INPUT1": [0]}


async def test_a_trigger_that_does_not_fire_this_iteration_is_not_an_error(bus, runners):
    p = plan(
        "counter-pipeline",
        """
        allowCycles: true
        maxStepRevisits: 100
        steps:
        - name: counter
          inputsJoinType: any
          inputs:
          - counter-pipeline.inputs
          - identity-loop.outputs
        - name: identity-output
          joinWindowMs: 1
          inputs:
          - counter.outputs
          triggers:
          - counter.outputs.stop
        - name: identity-loop
          joinWindowMs: 1
          inputs:
          - counter.outputs.output
          triggers:
          - counter.outputs.continue
        output:
          steps:
          - identity-output.outputs.output
        """,
    )
    stage = stage_of(p, "step identity-output")
    await runners.start(stage)
    counter_outputs = TOPICS.model("counter", "outputs")
    key = b"0.counter-pipeline.k"
    await bus.produce(
        counter_outputs,
        response(output=[1], **{"continue": [1]}),
        key=key,
        headers=headers("counter-pipeline", key.decode()),
    )
    await asyncio.sleep(0.1)
    await bus.produce(
        counter_outputs,
        response(output=[2], stop=[1]),
        key=key,
        headers=headers("counter-pipeline", key.decode()),
    )
    (out,) = await read(bus, stage.sink_topic, 1)
    assert decoded(out, REQUEST) == {"output": [2], "stop": [1]}
    assert await bus.read_last(ERRORS, 10) == []


# --- writes the bus does not acknowledge ----------------------------------------------------


class BusWithBrokenWrites:
    """The real bus, except that writes to `topic` fail (as a broker that is down answers)
    while `broken` is set."""

    def __init__(self, bus, topic: str):
        self.bus = bus
        self.topic = topic
        self.broken = True
        self.refused = 0

    def __getattr__(self, name):
        return getattr(self.bus, name)

    async def produce(self, topic, value, **kwargs):
        if topic == self.topic and self.broken:
            self.refused += 1
            await asyncio.sleep(0.001)  # the answer comes back later, as a broker's does
            raise RuntimeError("broker unavailable")
        return await self.bus.produce(topic, value, **kwargs)


async def test_a_message_whose_write_fails_is_read_again_and_offsets_wait_for_it(
    bus, runners, monkeypatch
):
    monkeypatch.setattr("inferline.dataflow.stage.RETRY_MIN_SECONDS", 0.01)
    monkeypatch.setattr("inferline.dataflow.stage.RETRY_MAX_SECONDS", 0.05)
    stage = stage_of(TFSIMPLES, "step tfsimple1")
    source = stage.inputs[0].topic
    broken = BusWithBrokenWrites(bus, stage.sink_topic)
    runners.bus = broken
    await runners.start(stage, group="gw")
    keys = [b"0.tfsimples.%d" % n for n in range(3)]
    for key in keys:
        await bus.produce(
            source, request(INPUT0=[1], INPUT1=[1]), key=key, headers=headers("tfsimples", "x")
        )
    await wait_until(lambda: broken.refused >= 6)  # the stage read them again, at least once
    assert await bus.read_last(stage.sink_topic, 10) == []
    # The group stays at the first message not written (so a restart, too, reads it again).
    assert await bus.committed("gw", [source]) == {TopicPartition(source, 0): 0}

    broken.broken = False
    written = await read(bus, stage.sink_topic, 3)
    assert [m.key for m in written] == keys
    # Once written, committed (when idle, or within COMMIT_SECONDS).
    await asyncio.sleep(0.5)
    assert await bus.committed("gw", [source]) == {TopicPartition(source, 0): 3}


async def test_a_joined_request_too_large_for_the_bus_ends_in_an_error_and_the_stage_goes_on(
    bus, runners
):
    # Each part fits; joined, they are more than the bus stores in one message (on the embedded
    # bus 1e9 bytes, lowered here; on Kafka the topic's max.message.bytes).
    half = [0.5] * 60
    parts = {T1_OUT: response(OUTPUT0=half), T2_OUT: response(OUTPUT1=half)}
    bus._log.max_row_bytes = max(len(v) for v in parts.values()) + 200
    stage = join_stage()
    await runners.start(stage, group="gj")
    for topic, value in parts.items():
        await bus.produce(topic, value, key=b"0.join.big", headers=headers("join", "0.join.big"))
    for topic, name in ((T1_OUT, "OUTPUT0"), (T2_OUT, "OUTPUT1")):
        await bus.produce(
            topic, response(**{name: [1]}), key=b"0.join.ok", headers=headers("join", "ok")
        )
    (written,) = await read(bus, T3_IN, 1)
    assert written.key == b"0.join.ok", "the request behind the large one is not held up"
    (error,) = await read(bus, ERRORS, 1)
    assert error.key == b"0.join.big"
    assert error.header(ERROR_HEADER) == b"join"
    assert error.header("pipeline") == b"join", "the join's errors stage must pick it up"
    assert "step tfsimple3: cannot pass the request on" in error.value.decode()
    assert "is more than the embedded bus stores" in error.value.decode()
    # Both requests are done with: nothing is read again after a restart.
    await asyncio.sleep(0.5)
    committed = await bus.committed("gj", [T1_OUT, T2_OUT])
    assert committed == {TopicPartition(T1_OUT, 0): 2, TopicPartition(T2_OUT, 0): 2}
    assert len(await bus.read_last(T3_IN, 10)) == 1, "nothing was read and written again"


async def test_a_stage_writes_in_the_order_it_reads(bus, runners):
    stage = stage_of(TFSIMPLES, "step tfsimple1")
    await runners.start(stage, group="go")
    keys = [b"0.tfsimples.%d" % n for n in range(300)]
    # Written at once, so that the stage reads many in one poll and writes them together.
    await asyncio.gather(
        *(
            bus.produce(
                stage.inputs[0].topic,
                request(INPUT0=[1], INPUT1=[1]),
                key=key,
                headers=headers("tfsimples", "x"),
            )
            for key in keys
        )
    )
    written = await read(bus, stage.sink_topic, len(keys))
    assert [m.key for m in written] == keys


async def test_offsets_advance_only_past_written_messages(bus, runners, monkeypatch):
    monkeypatch.setattr("inferline.dataflow.stage.RETRY_MIN_SECONDS", 0.01)
    monkeypatch.setattr("inferline.dataflow.stage.RETRY_MAX_SECONDS", 0.05)
    stage = stage_of(TFSIMPLES, "step tfsimple1")
    source = stage.inputs[0].topic
    flaky = BusWithBrokenWrites(bus, stage.sink_topic)
    flaky.broken = False
    runners.bus = flaky
    runner, _ = await runners.start(stage, group="ga")

    async def send(n: int) -> None:
        await bus.produce(
            source,
            request(INPUT0=[n], INPUT1=[n]),
            key=b"0.tfsimples.%d" % n,
            headers=headers("tfsimples", "x"),
        )

    await send(1)
    await read(bus, stage.sink_topic, 1)
    await wait_until(lambda: runner._committed == {TopicPartition(source, 0): 1})
    flaky.broken = True
    await send(2)
    await wait_until(lambda: flaky.refused >= 3)
    assert await bus.committed("ga", [source]) == {TopicPartition(source, 0): 1}
    flaky.broken = False
    written = await read(bus, stage.sink_topic, 2)
    assert [m.key for m in written] == [b"0.tfsimples.1", b"0.tfsimples.2"]
    await asyncio.sleep(0.5)
    assert await bus.committed("ga", [source]) == {TopicPartition(source, 0): 2}
