"""The bus target's exchange on a real embedded bus, with a scripted step answering on the
other side: keys and headers as the pipeline gateway writes them, answers matched by key,
failures read from the errors topic or the error header, and a timeout when nothing comes."""

import asyncio
import contextlib

import pytest

from inferline.bench.bus_targets import BusTarget
from inferline.bench.targets import TargetSpec
from inferline.bus.embedded import EmbeddedBus
from inferline.dataflow.topics import ERROR_HEADER, TopicNames

TOPICS = TopicNames()


def _spec(kind: str = "pipeline", timeout: float = 5.0) -> TargetSpec:
    where = TOPICS.pipeline if kind == "pipeline" else TOPICS.model
    return TargetSpec(
        kind="embedded",
        address="unused",
        name="p",
        body=b"request-bytes",
        headers=(("X-Trace", "t1"),),
        timeout=timeout,
        input_topic=where("p", "inputs"),
        output_topic=where("p", "outputs"),
    )


@contextlib.asynccontextmanager
async def responder(bus, spec: TargetSpec, behaviour):
    """Reads the inputs topic; `behaviour(message)` says what to write: (topic, headers) or
    None for nothing. Records every message it read."""
    seen = []
    consumer = await bus.consumer("step", [spec.input_topic])

    async def loop():
        while True:
            for message in await consumer.poll(0.05):
                seen.append(message)
                reply = behaviour(message)
                if reply is not None:
                    topic, headers = reply
                    await bus.produce(topic, b"answer", key=message.key, headers=headers)

    task = asyncio.create_task(loop())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.close()


@pytest.fixture
async def bus(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus", default_partitions=3)
    for topic in ("inputs", "outputs"):
        await bus.create_topic(TOPICS.pipeline("p", topic))
    yield bus
    await bus.close()


async def test_answers_are_matched_by_key(bus):
    spec = _spec()
    target = BusTarget(bus, spec)
    await target.open()
    async with responder(bus, spec, lambda m: (spec.output_topic, [])) as seen:
        outcomes = await asyncio.gather(*(target.call() for _ in range(12)))
    await target.close()
    assert outcomes == [None] * 12
    keys = [m.key.decode() for m in seen]
    assert len(set(keys)) == 12
    # <partition>.<pipeline>.<id>, written to the partition the key names
    assert all(m.key.decode().split(".")[1] == "p" for m in seen)
    assert all(int(m.key.decode().split(".")[0]) == m.partition for m in seen)
    assert {m.partition for m in seen} == {0, 1, 2}
    first = seen[0]
    assert first.value == b"request-bytes"
    assert first.header("pipeline") == b"p"
    assert first.header("x-request-id") == first.key
    assert first.header("x-trace") == b"t1"


async def test_failures_are_counted_as_step_errors(bus):
    spec = _spec()
    target = BusTarget(bus, spec)
    await target.open()

    def fail(message):
        if message.key.decode().endswith("-1"):  # in the error header on the outputs topic
            return spec.output_topic, [(ERROR_HEADER, b"tfsimple1 : bad input")]
        return TOPICS.errors, [(ERROR_HEADER, b"tfsimple1")]  # on the errors topic

    async with responder(bus, spec, fail):
        first = await target.call()
        second = await target.call()
    await target.close()
    assert first == ("step error", "tfsimple1 : bad input")
    assert second == ("step error", "tfsimple1 : answer")


async def test_no_answer_is_a_timeout_naming_the_topic(bus):
    spec = _spec(timeout=0.3)
    target = BusTarget(bus, spec)
    await target.open()
    async with responder(bus, spec, lambda m: None):
        outcome = await target.call()
    await target.close()
    assert outcome == ("timeout", f"no answer on {spec.output_topic} within 0.3 s")
    assert target.waiters == {}


async def test_a_missing_topic_asks_whether_it_is_loaded(bus):
    with pytest.raises(
        RuntimeError,
        match=r"seldon.default.model.p.inputs does not exist.*"
        r"loaded and used by a pipeline",
    ):
        await BusTarget(bus, _spec(kind="model")).open()
