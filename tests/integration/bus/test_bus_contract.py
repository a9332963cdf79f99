"""The bus contract, written against `inferline.bus.base` only, run on every back end.

Kafka joins a group in seconds and resolves "latest" lazily, so every wait here polls in a
loop until the expected messages (or assignment) arrive, up to `DEADLINE`; on the embedded bus
the same waits end at once. Message identity is compared without timestamps, which back ends
may set slightly differently between the produce acknowledgement and the stored record.
"""

import asyncio
import time
from collections.abc import Callable

import pytest

from inferline.bus.base import Consumer, Message, TopicPartition

DEADLINE = 20.0  # seconds, for anything that waits on a group join or a delivery


def essence(message: Message) -> tuple:
    return (
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        message.headers,
    )


class Reader:
    """A consumer and everything it has returned so far."""

    def __init__(self, consumer: Consumer):
        self.consumer = consumer
        self.messages: list[Message] = []

    async def poll(self, timeout: float = 0.2) -> None:
        self.messages += await self.consumer.poll(timeout)

    @property
    def assignment(self) -> set[TopicPartition]:
        return self.consumer.assignment()

    def positions(self) -> list[tuple[int, int]]:
        return sorted((m.partition, m.offset) for m in self.messages)


async def poll_until(readers: list[Reader], condition: Callable[[], bool], what: str) -> None:
    """Poll every reader (all of them, so each keeps its group membership alive) until
    `condition` holds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            state = [(sorted(r.assignment), r.positions()) for r in readers]
            raise AssertionError(f"gave up after {DEADLINE} s waiting for {what}; readers: {state}")
        await asyncio.gather(*(reader.poll() for reader in readers))


@pytest.fixture
def poll_quietly(backend):
    """Poll a while more, so that a duplicate or stray message would show up (the embedded bus
    delivers at once; Kafka fetches in the background)."""
    quiet = 0.05 if backend == "embedded" else 0.5

    async def poll(readers: list[Reader]) -> None:
        deadline = time.monotonic() + quiet
        while time.monotonic() < deadline:
            await asyncio.gather(*(reader.poll(quiet / 5) for reader in readers))

    return poll


def partitions_of(topic: str, count: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in range(count)}


# --- producing and reading back -----------------------------------------------------------------


async def test_round_trip_keeps_key_headers_and_value(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 1)
    reader = Reader(await bus.consumer(f"{topic}.g", [topic], from_beginning=True))
    headers = [
        ("trace", b"\x00\x01\xff"),
        ("x-request-id", b"first"),
        ("trace", b""),
        ("x-request-id", b"second"),
    ]
    value = bytes(range(256)) * 4
    started_ms = time.time() * 1000

    sent = await bus.produce(topic, value, key=b"0.iris.req-1", headers=headers)
    bare = await bus.produce(topic, b"")

    assert (sent.topic, sent.partition, sent.key, sent.value) == (topic, 0, b"0.iris.req-1", value)
    assert sent.headers == tuple(headers)
    assert (bare.partition, bare.offset, bare.key, bare.value, bare.headers) == (
        0,
        sent.offset + 1,
        None,
        b"",
        (),
    )
    await poll_until([reader], lambda: len(reader.messages) >= 2, "both messages")
    received = reader.messages
    assert [essence(m) for m in received] == [essence(sent), essence(bare)]
    assert received[0].header("x-request-id") == b"second"
    assert received[0].header("trace") == b""
    assert received[0].header("missing") is None
    assert all(abs(m.timestamp_ms - started_ms) < 60_000 for m in received)


async def test_each_partition_keeps_production_order(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 4)
    sequential = [
        await bus.produce(topic, f"s{i}".encode(), key=f"k{i % 8}".encode()) for i in range(120)
    ]
    concurrent = await asyncio.gather(
        *(bus.produce(topic, f"c{i}".encode(), key=f"k{i % 8}".encode()) for i in range(200))
    )
    sent = sequential + list(concurrent)
    for partition in range(4):
        offsets = [m.offset for m in sent if m.partition == partition]
        assert offsets == sorted(offsets)
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), (
            "offsets are contiguous"
        )
        order = [m.offset for m in sequential if m.partition == partition]
        assert order == sorted(order), "sequential produces get increasing offsets"

    reader = Reader(await bus.consumer(f"{topic}.g", [topic], from_beginning=True))
    await poll_until([reader], lambda: len(reader.messages) >= len(sent), "every message")
    for partition in range(4):
        got = [m for m in reader.messages if m.partition == partition]
        want = sorted((m for m in sent if m.partition == partition), key=lambda m: m.offset)
        assert [essence(m) for m in got] == [essence(m) for m in want]


async def test_explicit_partition_wins_and_is_validated(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 3)
    on_two = await bus.produce(topic, b"two", partition=2)
    on_zero = await bus.produce(topic, b"zero", key=b"any key", partition=0)
    assert (on_two.partition, on_zero.partition) == (2, 0)
    with pytest.raises(ValueError, match="partition"):
        await bus.produce(topic, b"nowhere", partition=3)
    with pytest.raises(ValueError, match="partition"):
        await bus.produce(topic, b"nowhere", partition=-1)
    stored = await bus.read_last(topic, 10)
    assert sorted((m.partition, m.value) for m in stored) == [(0, b"zero"), (2, b"two")]


async def test_same_key_lands_in_same_partition(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 6)
    placed: dict[bytes, set[int]] = {}
    for round_ in range(3):
        for i in range(30):
            key = f"0.pipeline.request-{i}".encode()
            message = await bus.produce(topic, f"{round_}".encode(), key=key)
            placed.setdefault(key, set()).add(message.partition)
    assert all(len(partitions) == 1 for partitions in placed.values())
    assert len({p for partitions in placed.values() for p in partitions}) > 1, "keys spread out"


async def test_read_last_returns_the_newest_per_partition(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 3)
    for partition in range(3):
        for i in range(10):
            await bus.produce(topic, f"{partition}-{i}".encode(), partition=partition)
    last = await bus.read_last(topic, 4)
    assert len(last) == 12
    for partition in range(3):
        mine = [m for m in last if m.partition == partition]
        assert [m.offset for m in mine] == [6, 7, 8, 9]
        assert [m.value for m in mine] == [f"{partition}-{i}".encode() for i in range(6, 10)]
    assert len(await bus.read_last(topic, 100)) == 30
    assert await bus.read_last(f"{topic}.missing", 5) == []


# --- topics -------------------------------------------------------------------------------------


async def test_topics_create_list_delete(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 3)
    await bus.create_topic(topic, 3)
    await bus.create_topic(topic, 5)  # exists already: left as it is
    assert (await bus.topics())[topic] == 3

    auto = f"{topic}.auto"
    message = await bus.produce(auto, b"creates the topic")
    assert message.topic == auto
    assert auto in await bus.topics()

    await bus.delete_topic(topic)
    deadline = time.monotonic() + DEADLINE
    while topic in await bus.topics():  # Kafka deletes asynchronously
        assert time.monotonic() < deadline, f"{topic} still listed after delete"
        await asyncio.sleep(0.1)
    assert auto in await bus.topics()


# --- consumer groups ----------------------------------------------------------------------------


async def test_poll_waits_for_the_next_message(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 1)
    reader = Reader(await bus.consumer(f"{topic}.g", [topic], from_beginning=True))
    await poll_until([reader], lambda: len(reader.assignment) == 1, "the assignment")

    async def produce_later() -> Message:
        await asyncio.sleep(0.2)
        return await bus.produce(topic, b"late")

    started = time.monotonic()
    producing = asyncio.create_task(produce_later())
    messages = await reader.consumer.poll(DEADLINE)
    while not messages and time.monotonic() - started < DEADLINE:
        messages = await reader.consumer.poll(DEADLINE)
    sent = await producing
    assert [essence(m) for m in messages] == [essence(sent)]
    assert time.monotonic() - started < DEADLINE / 2, "poll returned when the message came"


async def test_group_members_split_partitions_and_take_over(make_bus, topic, poll_quietly):
    bus = await make_bus()
    await bus.create_topic(topic, 4)
    group = f"{topic}.g"
    everything = partitions_of(topic, 4)
    first = Reader(await bus.consumer(group, [topic], from_beginning=True))
    await poll_until([first], lambda: first.assignment == everything, "the only member's share")
    second = Reader(await bus.consumer(group, [topic], from_beginning=True))

    def split_evenly() -> bool:
        a, b = first.assignment, second.assignment
        return a | b == everything and not a & b and len(a) == len(b) == 2

    await poll_until([first, second], split_evenly, "two members with two partitions each")
    for partition in range(4):
        for i in range(10):
            await bus.produce(topic, f"{partition}-{i}".encode(), partition=partition)
    await poll_until(
        [first, second],
        lambda: len(first.messages) + len(second.messages) >= 40,
        "all 40 messages across the two members",
    )
    await poll_quietly([first, second])
    for reader in (first, second):
        held = {tp.partition for tp in reader.assignment}
        assert reader.positions() == [(p, o) for p in sorted(held) for o in range(10)]

    # The first member commits everything it read, the second only half of it, then leaves.
    await first.consumer.commit({tp: 10 for tp in first.assignment})
    await second.consumer.commit({tp: 5 for tp in second.assignment})
    left = sorted(tp.partition for tp in second.assignment)
    await second.consumer.close()
    first.messages.clear()
    await poll_until(
        [first],
        lambda: first.assignment == everything and len(first.messages) >= 10,
        "the remaining member to take every partition and re-read what was not committed",
    )
    await poll_quietly([first])
    assert first.positions() == [(p, o) for p in left for o in range(5, 10)]


async def test_each_group_sees_every_message(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 2)
    readers = [
        Reader(await bus.consumer(f"{topic}.{name}", [topic], from_beginning=True))
        for name in ("audit", "dataflow")
    ]
    sent = [await bus.produce(topic, f"{i}".encode(), key=f"k{i}".encode()) for i in range(20)]
    await poll_until(
        readers, lambda: all(len(r.messages) >= 20 for r in readers), "20 messages in each group"
    )
    for reader in readers:
        assert sorted(map(essence, reader.messages)) == sorted(map(essence, sent))


async def test_new_group_starts_at_the_end_unless_from_beginning(make_bus, topic, poll_quietly):
    bus = await make_bus()
    await bus.create_topic(topic, 2)
    old = {(await bus.produce(topic, f"old-{i}".encode(), partition=i % 2)).value for i in range(6)}
    early = Reader(await bus.consumer(f"{topic}.early", [topic], from_beginning=True))
    late = Reader(await bus.consumer(f"{topic}.late", [topic]))
    await poll_until(
        [early, late],
        lambda: len(early.messages) >= 6 and late.assignment == partitions_of(topic, 2),
        "the early group to read the old messages and the late group to join",
    )
    assert {m.value for m in early.messages} == old

    # Kafka resolves "latest" when it first fetches, so keep producing until some arrive.
    new: set[bytes] = set()
    deadline = time.monotonic() + DEADLINE
    while not late.messages:
        assert time.monotonic() < deadline, "the late group never received a new message"
        for partition in range(2):
            new.add(
                (await bus.produce(topic, f"new-{len(new)}".encode(), partition=partition)).value
            )
        await asyncio.gather(early.poll(), late.poll())
    await poll_quietly([late])
    assert {m.value for m in late.messages} <= new


# --- restarts -----------------------------------------------------------------------------------


async def test_committed_offsets_survive_a_restart(make_bus, topic, poll_quietly):
    bus = await make_bus()
    await bus.create_topic(topic, 2)
    for partition in range(2):
        for i in range(10):
            await bus.produce(topic, f"{partition}-{i}".encode(), partition=partition)
    group = f"{topic}.g"
    reader = Reader(await bus.consumer(group, [topic], from_beginning=True))
    await poll_until([reader], lambda: len(reader.messages) >= 20, "all 20 messages")
    await reader.consumer.commit({TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 7})
    await reader.consumer.close()
    await bus.close()

    reopened = await make_bus()
    # from_beginning only applies where the group has no committed offset.
    resumed = Reader(await reopened.consumer(group, [topic], from_beginning=True))
    await poll_until([resumed], lambda: len(resumed.messages) >= 9, "the uncommitted messages")
    await poll_quietly([resumed])
    assert resumed.positions() == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(7, 10)]
    assert [m.value for m in resumed.messages if m.partition == 1] == [b"1-7", b"1-8", b"1-9"]


async def test_a_member_that_restarts_before_reading_reads_what_came_meanwhile(
    make_bus, topic, poll_quietly
):
    """A pipeline step that is down only delays its data: a group that joined (at the end)
    and stopped before anything arrived still reads what was written while it was away."""
    bus = await make_bus()
    await bus.create_topic(topic, 2)
    for partition in range(2):
        await bus.produce(topic, b"before-join", partition=partition)
    group = f"{topic}.g"
    reader = Reader(await bus.consumer(group, [topic]))
    await poll_until(
        [reader], lambda: reader.assignment == partitions_of(topic, 2), "the group to join"
    )
    await reader.consumer.close()
    await bus.close()

    reopened = await make_bus()
    meanwhile = set()
    for partition in range(2):
        for i in range(3):
            message = await reopened.produce(
                topic, f"{partition}-{i}".encode(), partition=partition
            )
            meanwhile.add(message.value)
    resumed = Reader(await reopened.consumer(group, [topic]))
    await poll_until(
        [resumed], lambda: len(resumed.messages) >= 6, "the messages written meanwhile"
    )
    await poll_quietly([resumed])
    assert sorted(m.value for m in resumed.messages) == sorted(meanwhile)


async def test_acknowledged_messages_survive_a_restart(make_bus, topic):
    bus = await make_bus()
    await bus.create_topic(topic, 3)
    sent = await asyncio.gather(
        *(
            bus.produce(topic, f"{i}".encode(), key=f"k{i}".encode(), headers=[("i", b"%d" % i)])
            for i in range(60)
        )
    )
    await bus.close()

    reopened = await make_bus()
    assert (await reopened.topics())[topic] == 3
    stored = await reopened.read_last(topic, 1000)
    assert sorted(map(essence, stored)) == sorted(map(essence, sent))
    reader = Reader(await reopened.consumer(f"{topic}.g", [topic], from_beginning=True))
    await poll_until([reader], lambda: len(reader.messages) >= 60, "all 60 messages")
    assert sorted(map(essence, reader.messages)) == sorted(map(essence, sent))


async def test_a_group_can_start_where_another_group_stopped(make_bus, topic, poll_quietly):
    # How a new pipeline version takes over from the one it replaces.
    bus = await make_bus()
    await bus.create_topic(topic, 2)
    for partition in range(2):
        for i in range(5):
            await bus.produce(topic, f"{partition}-{i}".encode(), partition=partition)
    old, new = f"{topic}.v1", f"{topic}.v2"
    reader = Reader(await bus.consumer(old, [topic], from_beginning=True))
    await poll_until([reader], lambda: len(reader.messages) >= 10, "all 10 messages")
    await reader.consumer.commit({TopicPartition(topic, 0): 3, TopicPartition(topic, 1): 5})
    await reader.consumer.close()

    assert await bus.committed(new, [topic]) == {}
    offsets = await bus.committed(old, [topic])
    assert offsets == {TopicPartition(topic, 0): 3, TopicPartition(topic, 1): 5}
    await bus.commit_group(new, offsets)
    assert await bus.committed(new, [topic]) == offsets

    successor = Reader(await bus.consumer(new, [topic]))
    await poll_until([successor], lambda: len(successor.messages) >= 2, "the rest of partition 0")
    await poll_quietly([successor])
    assert successor.positions() == [(0, 3), (0, 4)]
