"""PipelineGateway on a real EmbeddedBus, with a fake engine that answers on the pipeline's
outputs topic: keys, headers, step errors and timeouts (reference b.2, b.3, b.11, b.16)."""

import asyncio
import contextlib

import numpy as np
import pytest

from inferline.dataflow import messages
from inferline.dataflow.plan import REQUEST, RESPONSE
from inferline.dataflow.topics import ERROR_HEADER, TopicNames
from inferline.gateways.pipeline_gateway import (
    PipelineGateway,
    PipelineNotReady,
    PipelineStepError,
    PipelineTimeout,
)
from inferline.protocol.errors import PayloadTooLarge
from inferline.protocol.types import Tensor

TOPICS = TopicNames()
P = "tfsimples"
P_INPUTS = TOPICS.pipeline(P, "inputs")
P_OUTPUTS = TOPICS.pipeline(P, "outputs")


def request(**values) -> bytes:
    tensors = [Tensor.from_numpy(n, np.asarray(v)) for n, v in values.items()]
    return messages.encode(messages.TensorMessage(tensors), REQUEST, "")


class FakeEngine:
    """Reads the pipeline's inputs topic; echoes each request's tensors back as the pipeline's
    answer (or an error, for requests carrying a tensor named `fail`), like the output and
    errors stages would."""

    def __init__(self, bus, version: int = 3, reverse_pairs: bool = False):
        self.bus = bus
        self.version = version
        self.seen = []
        self.reverse_pairs = reverse_pairs
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.bus.create_topic(P_INPUTS)
        consumer = await self.bus.consumer("engine", [P_INPUTS])
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer) -> None:
        held = []
        try:
            while True:
                for message in await consumer.poll(0.05):
                    self.seen.append(message)
                    held.append(message)
                    if self.reverse_pairs and len(held) < 2:
                        continue
                    for m in reversed(held):
                        await self._answer(m)
                    held.clear()
        finally:
            await consumer.close()

    async def _answer(self, message) -> None:
        decoded = messages.decode(message.value, REQUEST)
        headers = [
            ("pipeline", P.encode()),
            ("x-pipeline-version", str(self.version).encode()),
            *[(k, v) for k, v in message.headers if k.startswith("x-")],
            ("x-engine", b"fake"),
        ]
        if any(t.name == "fail" for t in decoded.tensors):
            value = b"rpc error: code = InvalidArgument desc = bad shape"
            headers.append((ERROR_HEADER, b"tfsimple1"))
        else:
            value = messages.encode(decoded, RESPONSE, "tfsimple2_1")
        await self.bus.produce(
            P_OUTPUTS, value, key=message.key, headers=headers, partition=message.partition
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
async def gateway(bus):
    described = []

    def describe_missing(pipeline: str, key: bytes) -> str:
        described.append((pipeline, key))
        return "no answer yet from step(s) tfsimple2"

    gateway = PipelineGateway(bus, TOPICS, "gw1", describe_missing=describe_missing, timeout=5)
    gateway.described = described
    yield gateway
    await gateway.close()


@pytest.fixture
async def engine(bus):
    engine = FakeEngine(bus)
    await engine.start()
    yield engine
    await engine.stop()


async def test_infer_returns_the_answer_with_request_id_and_version(bus, gateway, engine):
    await gateway.serve(P, 3)
    await asyncio.wait_for(gateway.listener_ready(P).wait(), 5)
    answer = await gateway.infer(
        P,
        request(INPUT0=[[1, 2]]),
        "abc",
        [("x-custom", "yes"), ("x-request-id", "callers-own"), ("content-type", "x")],
    )
    headers = dict(answer.headers)
    assert headers["x-request-id"] == f"0.{P}.abc"
    assert headers["x-pipeline-version"] == "3"
    assert headers["x-custom"] == "yes", "the request's x-* headers come back"
    assert headers["x-engine"] == "fake", "and those added on the way"
    assert [k for k, _ in answer.headers].count("x-request-id") == 1
    decoded = messages.decode(answer.value, RESPONSE)
    assert [(t.name, t.data.tolist()) for t in decoded.tensors] == [("INPUT0", [[1, 2]])]

    (written,) = engine.seen
    assert written.topic == P_INPUTS
    assert written.key == f"0.{P}.abc".encode()
    assert written.header("pipeline") == P.encode()
    assert written.header("x-request-id") == written.key
    assert written.header("x-custom") == b"yes"
    assert written.header("content-type") is None


async def test_the_key_names_a_partition_the_gateway_reads(tmp_path):
    from inferline.bus.embedded import EmbeddedBus

    bus = EmbeddedBus(tmp_path / "bus4", default_partitions=4)
    engine = FakeEngine(bus)
    gateway = PipelineGateway(bus, TOPICS, "gw", timeout=5)
    try:
        await engine.start()
        await gateway.serve(P, 1)
        for n in range(6):
            answer = await gateway.infer(P, request(x=[n]), f"r{n}", [])
            key = dict(answer.headers)["x-request-id"]
            partition, pipeline, rid = key.split(".")
            assert (pipeline, rid) == (P, f"r{n}")
            assert engine.seen[-1].partition == int(partition)
    finally:
        await gateway.close()
        await engine.stop()
        await bus.close()


async def test_concurrent_requests_each_get_their_own_answer(bus, gateway):
    engine = FakeEngine(bus, reverse_pairs=True)
    await engine.start()
    try:
        await gateway.serve(P, 1)
        answers = await asyncio.gather(
            *(gateway.infer(P, request(x=[n]), f"id{n}", []) for n in range(4))
        )
    finally:
        await engine.stop()
    for n, answer in enumerate(answers):
        assert dict(answer.headers)["x-request-id"] == f"0.{P}.id{n}"
        (tensor,) = messages.decode(answer.value, RESPONSE).tensors
        assert tensor.data.tolist() == [n]


async def test_an_error_on_the_outputs_topic_raises_a_step_error(bus, gateway, engine):
    await gateway.serve(P, 2)
    with pytest.raises(PipelineStepError) as raised:
        await gateway.infer(P, request(fail=[1]), "bad", [("x-custom", "1")])
    error = raised.value
    assert str(error) == "tfsimple1 : rpc error: code = InvalidArgument desc = bad shape"
    assert error.status == 400
    headers = dict(error.headers)
    assert headers["x-request-id"] == f"0.{P}.bad"
    assert headers["x-custom"] == "1"


async def test_a_request_too_large_for_the_bus_is_refused_with_413_at_once(bus, gateway, engine):
    await gateway.serve(P, 1)
    bus._log.max_row_bytes = 2000  # the embedded bus's refusal of a message over 1e9 bytes
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PayloadTooLarge) as raised:
        await gateway.infer(P, request(x=[0.5] * 500), "big", [])
    assert loop.time() - started < 1, "refused, not left to time out"
    assert raised.value.status == 413
    assert f"pipeline '{P}' cannot take this request" in str(raised.value)
    assert "is more than the embedded bus stores" in str(raised.value)
    answer = await gateway.infer(P, request(x=[1]), "small", [])
    assert dict(answer.headers)["x-request-id"] == f"0.{P}.small"


async def test_a_missing_answer_times_out_naming_the_pipeline_and_what_is_missing(bus, gateway):
    await gateway.serve(P, 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PipelineTimeout) as raised:
        await gateway.infer(P, request(x=[1]), "slow", [], timeout=0.2)
    assert 0.19 <= loop.time() - started < 2
    text = str(raised.value)
    assert f"'{P}'" in text
    assert f"0.{P}.slow" in text
    assert "no answer yet from step(s) tfsimple2" in text
    assert raised.value.status == 504
    assert gateway.described == [(P, f"0.{P}.slow".encode())]
    (written,) = await bus.read_last(P_INPUTS, 10)
    assert written.key == f"0.{P}.slow".encode(), "the request was written before waiting"


async def test_an_answer_for_another_key_does_not_answer_this_request(bus, gateway):
    await gateway.serve(P, 1)
    task = asyncio.create_task(gateway.infer(P, request(x=[1]), "mine", [], timeout=3))
    await asyncio.sleep(0.05)
    await bus.produce(P_OUTPUTS, b"x", key=f"0.{P}.other".encode(), headers=[("pipeline", b"p")])
    await asyncio.sleep(0.15)
    assert not task.done()
    value = messages.encode(messages.TensorMessage([]), RESPONSE, "m")
    await bus.produce(P_OUTPUTS, value, key=f"0.{P}.mine".encode(), headers=[("pipeline", b"p")])
    answer = await asyncio.wait_for(task, 3)
    assert answer.value == value


async def test_a_pipeline_not_served_is_not_ready(bus, gateway):
    with pytest.raises(PipelineNotReady, match=P):
        await gateway.infer(P, request(x=[1]), "r", [])
    await gateway.serve(P, 1)
    await gateway.stop_serving(P)
    with pytest.raises(PipelineNotReady) as raised:
        await gateway.infer(P, request(x=[1]), "r", [])
    assert raised.value.status == 503


async def test_the_version_reported_is_the_one_that_produced_the_answer(bus, gateway):
    engine = FakeEngine(bus, version=5)
    await engine.start()
    try:
        await gateway.serve(P, 4)
        await gateway.serve(P, 4)  # serving again is harmless
        answer = await gateway.infer(P, request(x=[1]), "v", [])
    finally:
        await engine.stop()
    assert dict(answer.headers)["x-pipeline-version"] == "5"
    assert dict(answer.headers)["x-seldon-route"] == f":{P}.pipeline:"


async def test_a_request_waiting_when_the_pipeline_stops_is_told_it_is_not_ready(bus, gateway):
    await gateway.serve(P, 1)
    task = asyncio.create_task(gateway.infer(P, request(x=[1]), "w", [], timeout=3))
    await asyncio.sleep(0.05)
    await gateway.stop_serving(P)
    try:
        await asyncio.wait_for(task, 3)
    except PipelineNotReady:
        return
    except asyncio.CancelledError:
        pytest.fail("the waiting request was cancelled instead of answered")
    pytest.fail("the waiting request got an answer from a pipeline that stopped")
