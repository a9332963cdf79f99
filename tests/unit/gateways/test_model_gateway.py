"""ModelGateway with a fake caller on a real EmbeddedBus: answers to the model's outputs topic,
rejections to the errors topic, unavailable models retried, workers and in-order commits
(reference b.2, b.3, b.4, b.11)."""

import asyncio
import contextlib

import pytest

from inferline.bus.base import TopicPartition
from inferline.dataflow.topics import ERROR_HEADER, TopicNames
from inferline.gateways.model_gateway import ModelCallError, ModelGateway, ModelGatewayConfig

TOPICS = TopicNames()
INPUTS = TOPICS.model("m", "inputs")
OUTPUTS = TOPICS.model("m", "outputs")
ERRORS = TOPICS.errors
FAST = ModelGatewayConfig(workers=8, retry_min=0.01, retry_max=0.02)


async def read(bus, topic: str, count: int, timeout: float = 5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await bus.read_last(topic, 10_000)
        if len(found) >= count or loop.time() > deadline:
            return found
        await asyncio.sleep(0.005)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class Gateways:
    def __init__(self, bus):
        self.bus = bus
        self.tasks: list[asyncio.Task] = []

    async def start(self, caller, config: ModelGatewayConfig = FAST, partitions: int = 1):
        for topic in (INPUTS, OUTPUTS, ERRORS):
            await self.bus.create_topic(topic, partitions)
        gateway = ModelGateway("m", self.bus, TOPICS, caller, config)
        task = asyncio.create_task(gateway.run())
        self.tasks.append(task)
        await asyncio.wait_for(gateway.ready.wait(), 5)
        return gateway, task

    async def stop(self, task) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        for task in self.tasks:
            await self.stop(task)


@pytest.fixture
async def gateways(bus):
    gateways = Gateways(bus)
    yield gateways
    await gateways.close()


def request_headers(key: str, **extra: str) -> list[tuple[str, bytes]]:
    return [
        ("pipeline", b"p"),
        ("x-request-id", key.encode()),
        *[(name.replace("_", "-"), value.encode()) for name, value in extra.items()],
    ]


async def test_answer_goes_to_the_outputs_topic_with_the_same_key_partition_and_headers(
    bus, gateways
):
    calls = []

    async def caller(model, request, metadata):
        calls.append((model, request, metadata))
        return b"answer:" + request, [
            ("x-model-says", "hi"),
            ("x-request-id", "overwritten?"),
            ("x-seldon-route", ":m_1:"),
            ("content-type", "application/grpc"),
        ]

    await gateways.start(caller, partitions=2)
    await bus.produce(
        INPUTS,
        b"req",
        key=b"1.p.abc",
        partition=1,
        headers=[*request_headers("1.p.abc", x_custom="c"), ("x-seldon-route", b":p.pipeline:")],
    )
    (out,) = await read(bus, OUTPUTS, 1)
    assert out.key == b"1.p.abc"
    assert out.partition == 1
    assert out.value == b"answer:req", "the model's answer bytes go through untouched"
    assert out.header("pipeline") == b"p"
    assert out.header("x-custom") == b"c"
    assert out.header("x-model-says") == b"hi", "x-* metadata of the answer is added"
    assert [v for k, v in out.headers if k == "x-request-id"] == [b"1.p.abc"]
    assert out.header("content-type") is None
    assert [v for k, v in out.headers if k == "x-seldon-route"] == [b":p.pipeline:"]

    ((model, sent, metadata),) = calls
    assert model == "m"
    assert sent == b"req"
    assert ("x-request-id", "1.p.abc") in metadata
    assert ("x-custom", "c") in metadata
    assert all(name.startswith("x-") for name, _ in metadata), "only x-* headers are forwarded"
    assert "x-seldon-route" not in dict(metadata)
    assert await bus.read_last(ERRORS, 10) == []


async def test_a_key_without_a_partition_prefix_keeps_the_partition_it_was_read_from(bus, gateways):
    async def caller(model, request, metadata):
        return b"ok", []

    await gateways.start(caller, partitions=2)
    await bus.produce(INPUTS, b"r", key=b"someones-key", partition=1, headers=request_headers("a"))
    await bus.produce(INPUTS, b"r", key=b"0.p.x", partition=1, headers=request_headers("b"))
    found = await read(bus, OUTPUTS, 2)
    assert {m.key: m.partition for m in found} == {b"someones-key": 1, b"0.p.x": 0}


async def test_a_rejected_request_goes_to_the_errors_topic_naming_the_model(bus, gateways):
    async def caller(model, request, metadata):
        raise ModelCallError("unexpected shape for input 'INPUT0'", retryable=False)

    await gateways.start(caller)
    await bus.produce(INPUTS, b"r", key=b"0.p.bad", headers=request_headers("0.p.bad", x_a="1"))
    (error,) = await read(bus, ERRORS, 1)
    assert error.key == b"0.p.bad"
    assert error.value == b"unexpected shape for input 'INPUT0'"
    assert error.header(ERROR_HEADER) == b"m"
    assert error.header("pipeline") == b"p", "the pipeline's errors stage finds it by header"
    assert error.header("x-a") == b"1"
    assert await bus.read_last(OUTPUTS, 10) == []


async def test_an_unavailable_model_is_retried_until_it_answers(bus, gateways):
    attempts: dict[bytes, int] = {}

    async def caller(model, request, metadata):
        attempts[request] = attempts.get(request, 0) + 1
        if attempts[request] <= 3:
            raise ModelCallError("no ready replica", retryable=True)
        return b"answer-" + request, []

    await gateways.start(caller)
    for n in range(4):
        await bus.produce(INPUTS, b"%d" % n, key=b"0.p.%d" % n, headers=request_headers(str(n)))
    await read(bus, OUTPUTS, 4)
    await asyncio.sleep(0.05)  # a duplicate would follow at once
    found = await bus.read_last(OUTPUTS, 100)
    assert sorted((m.key, m.value) for m in found) == [
        (b"0.p.%d" % n, b"answer-%d" % n) for n in range(4)
    ], "each request answered exactly once"
    assert attempts == {b"%d" % n: 4 for n in range(4)}
    assert await bus.read_last(ERRORS, 10) == []


async def test_requests_run_concurrently_up_to_the_workers(bus, gateways):
    running = 0
    peak = 0
    all_in = asyncio.Event()

    async def caller(model, request, metadata):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 2)
        await asyncio.sleep(0.01)
        running -= 1
        return request, []

    await gateways.start(caller, ModelGatewayConfig(workers=3, retry_min=0.01))
    for n in range(6):
        await bus.produce(INPUTS, b"%d" % n, key=b"0.p.%d" % n, headers=request_headers(str(n)))
    found = await read(bus, OUTPUTS, 6)
    assert sorted(m.value for m in found) == [b"%d" % n for n in range(6)]
    assert peak == 3


async def test_one_worker_calls_the_model_one_request_at_a_time(bus, gateways):
    running = 0
    peak = 0

    async def caller(model, request, metadata):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return request, []

    await gateways.start(caller, ModelGatewayConfig(workers=1, retry_min=0.01))
    for n in range(4):
        await bus.produce(INPUTS, b"%d" % n, key=b"0.p.%d" % n, headers=request_headers(str(n)))
    found = await read(bus, OUTPUTS, 4)
    assert [m.value for m in found] == [b"0", b"1", b"2", b"3"]
    assert peak == 1


async def test_offsets_are_committed_in_order_so_a_restart_redoes_unfinished_requests(
    bus, gateways
):
    release: dict[bytes, asyncio.Event] = {}

    async def caller(model, request, metadata):
        event = release.setdefault(request, asyncio.Event())
        await event.wait()
        return b"answer-" + request, []

    gateway, task = await gateways.start(caller, ModelGatewayConfig(workers=4))
    release[b"0"] = asyncio.Event()
    release[b"0"].set()
    await bus.produce(INPUTS, b"0", key=b"0.p.0", headers=request_headers("0"))
    await read(bus, OUTPUTS, 1)
    for n in (1, 2, 3):
        release[b"%d" % n] = asyncio.Event()
        await bus.produce(INPUTS, b"%d" % n, key=b"0.p.%d" % n, headers=request_headers(str(n)))
    # 3 and 2 finish; 1 is still with the model.
    release[b"3"].set()
    release[b"2"].set()
    found = await read(bus, OUTPUTS, 3)
    assert sorted(m.value for m in found) == [b"answer-0", b"answer-2", b"answer-3"]
    await asyncio.sleep(0.2)  # several poll loops: time to commit whatever it would
    await gateways.stop(task)

    # The group resumes at request 1: the one that never finished (2 and 3 come again:
    # at-least-once, as Seldon Core 2).
    consumer = await bus.consumer(gateway.group, [INPUTS])
    replayed = await consumer.poll(1.0)
    assert [m.value for m in replayed] == [b"1", b"2", b"3"]
    await consumer.close()


async def test_a_gateway_stopped_right_after_answering_does_not_answer_again(bus, gateways):
    async def caller(model, request, metadata):
        return b"answer-" + request, []

    gateway, task = await gateways.start(caller)
    await bus.produce(INPUTS, b"0", key=b"0.p.0", headers=request_headers("0"))
    await read(bus, OUTPUTS, 1)
    await gateways.stop(task)  # at once: before its next poll would have committed

    committed = await bus.committed(gateway.group, [INPUTS])
    assert list(committed.values()) == [1], "a restart resumes after the answered request"


async def test_a_restarted_gateway_answers_what_the_stopped_one_left(bus, gateways):
    stuck = asyncio.Event()

    async def hanging(model, request, metadata):
        await stuck.wait()
        return request, []

    async def answering(model, request, metadata):
        return b"second:" + request, []

    _, task = await gateways.start(hanging)
    await bus.produce(INPUTS, b"warmup", key=b"0.p.w", headers=request_headers("w"))
    stuck.set()
    await read(bus, OUTPUTS, 1)
    stuck.clear()
    await bus.produce(INPUTS, b"lost?", key=b"0.p.l", headers=request_headers("l"))
    await asyncio.sleep(0.1)
    await gateways.stop(task)
    await gateways.start(answering)
    found = await read(bus, OUTPUTS, 2)
    assert [(m.key, m.value) for m in found] == [(b"0.p.w", b"warmup"), (b"0.p.l", b"second:lost?")]


async def test_an_unexpected_caller_failure_ends_the_request_with_an_error(bus, gateways):
    async def caller(model, request, metadata):
        raise RuntimeError("channel closed")

    await gateways.start(caller)
    await bus.produce(INPUTS, b"r", key=b"0.p.x", headers=request_headers("0.p.x"))
    (error,) = await read(bus, ERRORS, 1, timeout=1.0)
    assert error.header(ERROR_HEADER) == b"m"


async def test_an_answer_too_large_for_the_bus_ends_its_request_and_the_gateway_goes_on(
    bus, gateways
):
    bus._log.max_row_bytes = 1000  # the embedded bus's refusal of a message over 1e9 bytes
    calls = []

    async def caller(model, request, metadata):
        calls.append(request)
        return (b"x" * 2000 if request == b"big" else b"small"), []

    await gateways.start(caller)
    await bus.produce(INPUTS, b"big", key=b"0.p.big", headers=request_headers("0.p.big"))
    await bus.produce(INPUTS, b"ok", key=b"0.p.ok", headers=request_headers("0.p.ok"))
    (error,) = await read(bus, ERRORS, 1)
    assert error.key == b"0.p.big"
    assert error.header(ERROR_HEADER) == b"m"
    assert b"answer cannot be passed on" in error.value
    assert b"is more than the embedded bus stores" in error.value
    (answer,) = await read(bus, OUTPUTS, 1)
    assert (answer.key, answer.value) == (b"0.p.ok", b"small")
    await asyncio.sleep(0.2)
    assert calls == [b"big", b"ok"], "the model is not called again for an answer it gave"


async def test_a_slow_acknowledgement_does_not_hold_the_models_worker(bus, gateways):
    """On Kafka the answer's write is a broker round trip: the worker goes to the next request
    meanwhile, and the offset waits for the acknowledgement."""
    acks = asyncio.Event()

    class SlowAcks:
        def __getattr__(self, name):
            return getattr(bus, name)

        async def produce(self, topic, value, **kwargs):
            if topic == OUTPUTS:
                await acks.wait()
            return await bus.produce(topic, value, **kwargs)

    called = []

    async def caller(model, request, metadata):
        called.append(request)
        return request, []

    gateways.bus = SlowAcks()
    gateway, _ = await gateways.start(caller, ModelGatewayConfig(workers=1, retry_min=0.01))
    for n in range(3):
        await bus.produce(INPUTS, b"%d" % n, key=b"0.p.%d" % n, headers=request_headers(str(n)))
    await wait_until(lambda: len(called) == 3)
    await asyncio.sleep(0.2)  # a commit interval: nothing answered is acknowledged yet
    assert await bus.committed(gateway.group, [INPUTS]) == {TopicPartition(INPUTS, 0): 0}
    acks.set()
    found = await read(bus, OUTPUTS, 3)
    assert sorted(m.value for m in found) == [b"0", b"1", b"2"]
    await wait_until(lambda: gateway._committed == {TopicPartition(INPUTS, 0): 3})
