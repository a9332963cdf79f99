"""What only the embedded bus promises: group commit, retention, crash safety, its rebalancing
choices, errors. The back-end-agnostic contract is in tests/integration/bus/test_bus_contract.py."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.bus.base import MessageTooLarge, TopicPartition
from inferline.bus.embedded import BusClosedError, EmbeddedBus


@pytest.fixture
async def bus(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus")
    yield bus
    await bus.close()


def tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


def transactions(bus: EmbeddedBus) -> int:
    return bus.stats()["transactions"]


# --- group commit -------------------------------------------------------------------------------


async def test_concurrent_produces_share_one_transaction(bus):
    await bus.create_topic("t", 1)
    before = transactions(bus)
    sent = await asyncio.gather(*(bus.produce("t", b"%d" % i) for i in range(100)))
    assert transactions(bus) - before == 1
    assert [m.offset for m in sent] == list(range(100)), "offsets follow the order of the calls"
    assert [m.value for m in sent] == [b"%d" % i for i in range(100)]


async def test_sequential_produces_each_commit(bus):
    before = transactions(bus)
    for i in range(5):
        message = await bus.produce("t", b"x")
        assert message.offset == i
    assert transactions(bus) - before == 5


async def test_max_batch_bounds_a_transaction(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus", max_batch=10)
    try:
        before = transactions(bus)
        sent = await asyncio.gather(*(bus.produce("t", b"x") for _ in range(35)))
        assert transactions(bus) - before == 4
        assert [m.offset for m in sent] == list(range(35))
    finally:
        await bus.close()


async def test_commits_and_produces_share_a_transaction(bus):
    await bus.create_topic("t", 1)
    consumer = await bus.consumer("g", ["t"])
    before = transactions(bus)
    await asyncio.gather(
        bus.produce("t", b"a"), consumer.commit({tp("t", 0): 0}), bus.produce("t", b"b")
    )
    assert transactions(bus) - before == 1


async def test_an_acknowledged_message_is_in_the_database(bus, tmp_path):
    message = await bus.produce("t", b"value", key=b"key", headers=[("h", b"1")])
    other = sqlite3.connect(tmp_path / "bus" / "bus.sqlite3")
    try:
        rows = other.execute(
            'SELECT topic, partition, "offset", key, value FROM messages'
        ).fetchall()
    finally:
        other.close()
    assert rows == [("t", message.partition, message.offset, b"key", b"value")]


# --- partitioning -------------------------------------------------------------------------------


async def test_key_hash_matches_librdkafka_consistent_partitioner(bus):
    await bus.create_topic("t", 8)
    for key in (b"a", b"0.iris.123", b"\xff" * 40):
        message = await bus.produce("t", b"x", key=key)
        assert message.partition == zlib.crc32(key) % 8


async def test_messages_without_key_go_round_robin(bus):
    await bus.create_topic("t", 3)
    sent = [await bus.produce("t", b"x", key=key) for key in (None, b"", None, None, b"")]
    assert [m.partition for m in sent] == [0, 1, 2, 0, 1]


async def test_produce_creates_the_topic_with_the_default_partitions(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus", default_partitions=4)
    try:
        await bus.produce("fresh", b"x")
        await bus.create_topic("explicit")
        assert await bus.topics() == {"explicit": 4, "fresh": 4}
    finally:
        await bus.close()


# --- validation ---------------------------------------------------------------------------------


async def test_partition_out_of_range_names_it(bus):
    await bus.create_topic("t", 2)
    for partition in (-1, 2, 10):
        with pytest.raises(ValueError, match=rf"partition {partition} out of range.*'t'.*2 part"):
            await bus.produce("t", b"x", partition=partition)
    assert await bus.read_last("t", 10) == []


async def test_bad_arguments_are_rejected(bus, tmp_path):
    with pytest.raises(ValueError, match="partitions"):
        await bus.create_topic("t", 0)
    await bus.create_topic("t", 2)
    with pytest.raises(ValueError, match="partitions"):
        await bus.create_topic("t", -1)
    for name in ("", "has space", "slash/name", ".", "..", "x" * 250):
        with pytest.raises(ValueError, match="invalid topic name"):
            await bus.create_topic(name)
        with pytest.raises(ValueError, match="invalid topic name"):
            await bus.produce(name, b"x")
    with pytest.raises(TypeError, match="value must be bytes"):
        await bus.produce("t", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes"):
        await bus.produce("t", b"x", key="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header 'h' value must be bytes"):
        await bus.produce("t", b"x", headers=[("h", "text")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="header name must be str"):
        await bus.produce("t", b"x", headers=[(b"h", b"v")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="topics"):
        await bus.consumer("g", [])
    with pytest.raises(ValueError, match="topics"):
        await bus.consumer("g", "t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group"):
        await bus.consumer("", ["t"])
    with pytest.raises(ValueError, match="count"):
        await bus.read_last("t", -1)
    consumer = await bus.consumer("g", ["t"])
    with pytest.raises(ValueError, match="max_messages"):
        await consumer.poll(0, max_messages=0)
    with pytest.raises(ValueError, match="non-negative"):
        await consumer.commit({tp("t", 0): -1})
    with pytest.raises(TypeError, match="TopicPartition"):
        await consumer.commit({("t", 0): 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="default_partitions"):
        EmbeddedBus(tmp_path / "other", default_partitions=0)
    with pytest.raises(ValueError, match="retention_messages"):
        EmbeddedBus(tmp_path / "other", retention_messages=0)


async def test_bytes_like_values_are_accepted(bus):
    message = await bus.produce(
        "t", bytearray(b"v"), key=memoryview(b"k"), headers=[("h", bytearray(b"1"))]
    )
    assert (message.value, message.key, message.headers) == (b"v", b"k", (("h", b"1"),))
    assert [(m.value, m.key, m.headers) for m in await bus.read_last("t", 1)] == [
        (b"v", b"k", (("h", b"1"),))
    ]


# --- closing ------------------------------------------------------------------------------------


async def test_a_closed_bus_raises_a_clear_error(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus")
    consumer = await bus.consumer("g", ["t"])
    await bus.close()
    await bus.close()  # idempotent
    calls = [
        bus.produce("t", b"x"),
        bus.create_topic("t"),
        bus.delete_topic("t"),
        bus.topics(),
        bus.read_last("t", 1),
        bus.consumer("g", ["t"]),
        consumer.poll(0),
        consumer.commit({tp("t", 0): 1}),
    ]
    for call in calls:
        with pytest.raises(BusClosedError, match="bus at .* is closed"):
            await call
    assert consumer.assignment() == set()
    await consumer.close()  # still fine


async def test_closing_the_bus_wakes_a_waiting_poll(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus")
    consumer = await bus.consumer("g", ["t"])
    polling = asyncio.create_task(consumer.poll(30))
    await asyncio.sleep(0.01)
    await bus.close()
    with pytest.raises(BusClosedError):
        await asyncio.wait_for(polling, 1)


async def test_close_writes_what_is_queued(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus")
    producing = [asyncio.ensure_future(bus.produce("t", b"%d" % i)) for i in range(10)]
    await asyncio.sleep(0)  # the produces are queued, the writer has not run yet
    await bus.close()
    assert [m.offset for m in await asyncio.gather(*producing)] == list(range(10))
    reopened = EmbeddedBus(tmp_path / "bus")
    try:
        assert len(await reopened.read_last("t", 100)) == 10
    finally:
        await reopened.close()


async def test_a_closed_consumer_leaves_and_raises(bus):
    await bus.create_topic("t", 2)
    first = await bus.consumer("g", ["t"])
    second = await bus.consumer("g", ["t"])
    polling = asyncio.create_task(second.poll(30))
    await asyncio.sleep(0.01)
    await second.close()
    await second.close()  # idempotent
    with pytest.raises(BusClosedError, match="EmbeddedConsumer.* is closed"):
        await asyncio.wait_for(polling, 1)
    with pytest.raises(BusClosedError):
        await second.poll(0)
    assert first.assignment() == {tp("t", 0), tp("t", 1)}
    assert second.assignment() == set()


async def test_one_bus_per_folder(tmp_path):
    first = EmbeddedBus(tmp_path / "bus")
    with pytest.raises(RuntimeError, match="already open"):
        EmbeddedBus(tmp_path / "bus")
    await first.close()
    second = EmbeddedBus(tmp_path / "bus")
    await second.close()


# --- polling ------------------------------------------------------------------------------------


async def test_poll_sleeps_until_a_produce_wakes_it(bus):
    consumer = await bus.consumer("g", ["t"])
    await bus.create_topic("t", 1)
    cpu_before, started = time.process_time(), time.monotonic()
    assert await consumer.poll(0.3) == []
    assert time.monotonic() - started >= 0.29
    assert time.process_time() - cpu_before < 0.1, "an empty poll must not spin"

    async def produce_soon():
        await asyncio.sleep(0.05)
        return await bus.produce("t", b"x")

    started = time.monotonic()
    producing = asyncio.create_task(produce_soon())
    messages = await consumer.poll(10)
    assert time.monotonic() - started < 1
    assert messages == [await producing]


async def test_poll_takes_partitions_in_turn(bus):
    await bus.create_topic("t", 2)
    consumer = await bus.consumer("g", ["t"], from_beginning=True)
    for partition in (0, 1):
        await asyncio.gather(*(bus.produce("t", b"x", partition=partition) for _ in range(100)))
    batches = [await consumer.poll(0, max_messages=50) for _ in range(4)]
    assert [{m.partition for m in batch} for batch in batches] == [{0}, {1}, {0}, {1}]
    assert await consumer.poll(0) == []


async def test_a_member_reads_each_message_once_without_committing(bus):
    consumer = await bus.consumer("g", ["t"], from_beginning=True)
    await bus.produce("t", b"1")
    assert [m.value for m in await consumer.poll(0)] == [b"1"]
    await bus.produce("t", b"2")
    assert [m.value for m in await consumer.poll(0)] == [b"2"]
    assert await consumer.poll(0) == []


async def test_a_member_keeping_up_reads_without_a_query(bus):
    consumer = await bus.consumer("g", ["t"])
    await bus.create_topic("t", 1)

    def no_query(*args):
        raise AssertionError("the database was queried for a message just written")

    bus._log.read = no_query
    sent = await bus.produce("t", b"v", key=b"k", headers=[("h", b"1")])
    assert await consumer.poll(0) == [sent]


async def test_a_member_far_behind_reads_from_disk_into_the_recent_messages(bus):
    """Messages older than the few kept in memory come from the database, then the newest from
    memory: in order, each once, the same as the database holds them."""
    consumer = await bus.consumer("g", ["t"], from_beginning=True)
    for i in range(300):
        await bus.produce("t", b"v%d" % i, key=b"k%d" % i, headers=[("i", b"%d" % i)])
    read = []
    while batch := await consumer.poll(0, max_messages=37):
        read += batch
    assert [m.offset for m in read] == list(range(300))
    assert read == await bus.read_last("t", 300)
    assert [(m.value, m.key, m.headers) for m in read] == [
        (b"v%d" % i, b"k%d" % i, (("i", b"%d" % i),)) for i in range(300)
    ]


async def test_large_messages_are_read_from_disk(bus):
    consumer = await bus.consumer("g", ["t"], from_beginning=True)
    big = [os.urandom(400_000) for _ in range(3)]  # each more than the memory bound
    for value in big:
        await bus.produce("t", value)
    assert [m.value for m in await consumer.poll(0)] == big


async def test_a_member_reading_unacknowledged_messages_sees_one_before_its_producer_returns(
    bus,
):
    await bus.create_topic("t", 1)
    early = await bus.consumer("early", ["t"], read_unacknowledged=True)
    acknowledged = await bus.consumer("acknowledged", ["t"])
    producing = asyncio.create_task(bus.produce("t", b"x"))
    await asyncio.sleep(0)  # the produce has queued its message
    [seen] = await early.poll(0)
    assert (seen.offset, seen.value) == (0, b"x")
    assert not producing.done()
    assert await acknowledged.poll(0) == [], "only what is on disk, by default"
    assert await producing == seen
    assert await acknowledged.poll(0) == [seen]


async def test_what_a_member_writes_on_reading_an_unacknowledged_message_joins_its_commit(bus):
    """A pipeline step's input and what the step writes on: one transaction, not two."""
    await bus.create_topic("in", 1)
    await bus.create_topic("out", 1)
    step = await bus.consumer("step", ["in"], read_unacknowledged=True)
    answers = await bus.consumer("answers", ["out"])

    async def run_step():
        # As a pipeline step does: its writes are tasks, awaited together after its reads.
        writes = [
            asyncio.ensure_future(bus.produce("out", message.value + b"!"))
            for message in await step.poll(5)
        ]
        await asyncio.gather(*writes)

    stepping = asyncio.create_task(run_step())
    await asyncio.sleep(0)  # the step waits in poll
    before = transactions(bus)
    await bus.produce("in", b"x")
    await stepping
    assert transactions(bus) - before == 1
    assert [m.value for m in await answers.poll(0)] == [b"x!"]


async def test_a_model_call_two_steps_on_starts_before_the_commit(bus):
    """A pipeline step answers from a task; the model gateway reading its answer calls the model
    from a task too: that call is on its way before the commit, which then overlaps it."""
    await bus.create_topic("in", 1)
    await bus.create_topic("mid", 1)
    step = await bus.consumer("step", ["in"], read_unacknowledged=True)
    gateway = await bus.consumer("gateway", ["mid"], read_unacknowledged=True)
    calls = []

    async def run_step():
        writes = [asyncio.ensure_future(bus.produce("mid", m.value)) for m in await step.poll(5)]
        await asyncio.gather(*writes)

    async def call_model(message):
        calls.append((message.value, bus.stats()["messages"]))

    async def run_gateway():
        for message in await gateway.poll(5):
            await asyncio.create_task(call_model(message))

    tasks = [asyncio.create_task(run_step()), asyncio.create_task(run_gateway())]
    await asyncio.sleep(0)
    before = bus.stats()["messages"]
    await bus.produce("in", b"x")
    await asyncio.gather(*tasks)
    assert calls == [(b"x", before)], "the model was called before anything was written"
    assert bus.stats()["messages"] - before == 2


async def test_a_failed_write_is_tried_again_and_loses_nothing(bus, caplog):
    await bus.create_topic("t", 1)
    early = await bus.consumer("early", ["t"], read_unacknowledged=True)
    acknowledged = await bus.consumer("acknowledged", ["t"])
    write, failures = bus._log.write, []

    def failing_twice(*args):
        if len(failures) < 2:
            failures.append(1)
            raise sqlite3.OperationalError("database or disk is full")
        return write(*args)

    bus._log.write = failing_twice
    producing = asyncio.gather(*(bus.produce("t", b"%d" % i) for i in range(3)))
    await asyncio.sleep(0.01)
    read_early = await early.poll(0)
    assert [m.offset for m in read_early] == [0, 1, 2]
    assert not producing.done(), "not acknowledged while the disk refuses it"
    sent = await asyncio.wait_for(producing, 5)
    assert len(failures) == 2
    assert sent == read_early
    assert await acknowledged.poll(0) == sent
    assert (await bus.produce("t", b"next")).offset == 3, "offsets are never given twice"
    assert "database or disk is full" in caplog.text


async def test_a_message_too_long_for_the_database_is_refused_and_the_bus_goes_on(bus):
    bus._log.max_row_bytes = 1000  # SQLite's limit is 1e9 bytes: the same refusal, smaller
    with pytest.raises(MessageTooLarge, match="a message of 1001 bytes is more than the embedded"):
        await bus.produce("t", b"x" * 990, key=b"k" * 10, headers=[("h", b"")])
    assert (await bus.produce("t", b"fits")).offset == 0


async def test_a_write_failing_at_close_fails_its_producers(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus")
    await bus.create_topic("t", 1)

    def full(*args):
        raise sqlite3.OperationalError("database or disk is full")

    bus._log.write = full
    producing = asyncio.create_task(bus.produce("t", b"x"))
    await asyncio.sleep(0.01)
    await bus.close()
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        await producing


# --- rebalancing --------------------------------------------------------------------------------


async def test_range_assignment_in_join_order(bus):
    await bus.create_topic("t", 4)
    members = [await bus.consumer("g", ["t"]) for _ in range(3)]
    assert [m.assignment() for m in members] == [
        {tp("t", 0), tp("t", 1)},
        {tp("t", 2)},
        {tp("t", 3)},
    ]
    await members[0].close()
    assert [m.assignment() for m in members[1:]] == [
        {tp("t", 0), tp("t", 1)},
        {tp("t", 2), tp("t", 3)},
    ]
    extra = [await bus.consumer("g", ["t"]) for _ in range(4)]
    assert sum(len(m.assignment()) for m in members[1:] + extra) == 4
    assert extra[-1].assignment() == set(), "more members than partitions: some idle"


async def test_members_with_different_subscriptions(bus):
    await bus.create_topic("a", 2)
    await bus.create_topic("b", 2)
    only_a = await bus.consumer("g", ["a"])
    both = await bus.consumer("g", ["a", "b"])
    assert only_a.assignment() == {tp("a", 0)}
    assert both.assignment() == {tp("a", 1), tp("b", 0), tp("b", 1)}


async def test_moved_partitions_resume_at_committed_and_kept_ones_keep_position(bus):
    await bus.create_topic("t", 2)
    first = await bus.consumer("g", ["t"], from_beginning=True)
    for partition in (0, 1):
        for i in range(5):
            await bus.produce("t", b"%d" % i, partition=partition)
    assert len(await first.poll(0)) == 10
    await first.commit({tp("t", 0): 2, tp("t", 1): 3})
    second = await bus.consumer("g", ["t"])
    # `first` keeps partition 0 and its own position: nothing is re-read there.
    assert first.assignment() == {tp("t", 0)}
    assert first.position(tp("t", 0)) == 5
    assert await first.poll(0) == []
    # Partition 1 moved to `second`: it resumes at the group's committed offset.
    assert [m.offset for m in await second.poll(0)] == [3, 4]


async def test_a_moved_partition_resumes_where_the_group_joined(bus):
    await bus.create_topic("t", 2)
    first = await bus.consumer("g", ["t"])
    # The group's start (the end at its first join) is recorded at once.
    assert await bus.committed("g", ["t"]) == {tp("t", 0): 0, tp("t", 1): 0}
    await bus.produce("t", b"after-the-group-joined", partition=1)
    late = await bus.consumer("g", ["t"])
    assert late.assignment() == {tp("t", 1)}
    assert [m.value for m in await late.poll(0)] == [b"after-the-group-joined"]
    # A group joining now starts at the end as it is now: the old message is not its.
    other = await bus.consumer("g2", ["t"])
    assert await other.poll(0) == []
    assert await bus.committed("g2", ["t"]) == {tp("t", 0): 0, tp("t", 1): 1}
    await first.close()


async def test_topic_created_later_is_picked_up_from_its_first_message(bus):
    consumer = await bus.consumer("g", ["later"])  # latest, not from_beginning
    assert consumer.assignment() == set()
    sent = await bus.produce("later", b"first")
    assert consumer.assignment() == {tp("later", 0)}
    assert await consumer.poll(0) == [sent]


async def test_a_waiting_poll_sees_a_topic_created_meanwhile(bus):
    consumer = await bus.consumer("g", ["later"])
    polling = asyncio.create_task(consumer.poll(10))
    await asyncio.sleep(0.01)
    sent = await bus.produce("later", b"first")
    assert await asyncio.wait_for(polling, 1) == [sent]


async def test_deleting_a_topic_drops_partitions_messages_and_offsets(bus, tmp_path):
    consumer = await bus.consumer("g", ["t", "u"], from_beginning=True)
    await bus.create_topic("t", 2)
    await bus.produce("u", b"kept")
    for i in range(3):
        await bus.produce("t", b"%d" % i, partition=0)
    assert len(await consumer.poll(0)) == 4
    await consumer.commit({tp("t", 0): 3, tp("u", 0): 1})
    await bus.delete_topic("t")
    await bus.delete_topic("t")  # missing: no-op
    assert consumer.assignment() == {tp("u", 0)}
    assert "t" not in await bus.topics()
    assert await bus.read_last("t", 10) == []

    again = await bus.produce("t", b"again")
    assert again.offset == 0, "a recreated topic starts over"
    assert [m.value for m in await consumer.poll(0)] == [b"again"]
    await bus.close()
    reopened = EmbeddedBus(tmp_path / "bus")
    try:
        assert reopened._log.committed("g") == {("u", 0): 1}
        assert [m.value for m in await reopened.read_last("t", 10)] == [b"again"]
    finally:
        await reopened.close()


async def test_committed_offset_past_the_end_is_clamped(bus):
    consumer = await bus.consumer("g", ["t"])
    await bus.produce("t", b"x")
    await consumer.commit({tp("t", 0): 99})
    await consumer.close()
    again = await bus.consumer("g", ["t"])
    assert again.position(tp("t", 0)) == 1
    sent = await bus.produce("t", b"y")
    assert await again.poll(0) == [sent]


# --- retention ----------------------------------------------------------------------------------


async def test_retention_by_count_trims_old_messages(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus", retention_messages=10)
    try:
        consumer = await bus.consumer("g", ["t"])
        await consumer.commit({tp("t", 0): 2})
        for _ in range(5):
            await asyncio.gather(*(bus.produce("t", b"x") for _ in range(20)))
        offsets = [m.offset for m in await bus.read_last("t", 1000)]
        assert offsets[-1] == 99
        assert 10 <= len(offsets) <= 11
        assert offsets == list(range(offsets[0], 100))
        await consumer.close()
        # The committed offset 2 was trimmed: the group resumes at the first kept message.
        resumed = await bus.consumer("g", ["t"])
        assert [m.offset for m in await resumed.poll(0)] == offsets
    finally:
        await bus.close()


async def test_a_member_behind_the_trim_skips_to_the_first_kept(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus", retention_messages=5)
    try:
        consumer = await bus.consumer("g", ["t"], from_beginning=True)
        await bus.produce("t", b"x")
        for _ in range(30):
            await bus.produce("t", b"x")
        offsets = [m.offset for m in await consumer.poll(0)]
        assert offsets == list(range(offsets[0], 31)) and len(offsets) <= 6
    finally:
        await bus.close()


async def test_retention_never_reuses_offsets_after_a_restart(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus", retention_messages=1)
    for _ in range(10):
        await bus.produce("t", b"x")
    await bus.close()
    bus = EmbeddedBus(tmp_path / "bus", retention_messages=1)
    try:
        assert (await bus.produce("t", b"y")).offset == 10
    finally:
        await bus.close()


async def test_retention_by_age_keeps_the_newest_message_per_partition(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus", retention_ms=100, retention_messages=None)
    try:
        for i in range(3):
            await bus.produce("quiet", b"%d" % i)
            await bus.produce("busy", b"%d" % i)
        await asyncio.sleep(0.25)
        fresh = await bus.produce("busy", b"fresh")
        assert await bus.read_last("busy", 10) == [fresh]
        assert [m.value for m in await bus.read_last("quiet", 10)] == [b"2"]
    finally:
        await bus.close()
    reopened = EmbeddedBus(tmp_path / "bus")
    try:
        assert (await reopened.produce("quiet", b"next")).offset == 3
    finally:
        await reopened.close()


async def test_retention_by_age_runs_on_open(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus")
    for i in range(5):
        await bus.produce("t", b"%d" % i)
    await bus.close()
    await asyncio.sleep(0.05)
    bus = EmbeddedBus(tmp_path / "bus", retention_ms=20)
    try:
        assert [m.offset for m in await bus.read_last("t", 10)] == [4]
    finally:
        await bus.close()


# --- durability ---------------------------------------------------------------------------------

_PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    from inferline.bus.embedded import EmbeddedBus

    async def main():
        bus = EmbeddedBus(sys.argv[1], default_partitions=3)
        consumer = await bus.consumer("g", ["crash"], from_beginning=True)
        count = 0

        async def one(i):
            message = await bus.produce("crash", b"%d" % i, key=b"k%d" % i)
            print("ack", message.partition, message.offset, i, flush=True)

        while True:
            await asyncio.gather(*(one(count + j) for j in range(7)))
            count += 7
            read = await consumer.poll(0)
            offsets = {}
            for m in read:
                offsets[m.topic_partition] = m.offset + 1
            await consumer.commit(offsets)
            for t, o in sorted(offsets.items()):
                print("commit", t.partition, o, flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_acknowledged_writes_survive_a_killed_process(tmp_path):
    """A producer process is killed (SIGKILL) mid-stream: every message and committed offset it
    had been told was written is there afterwards, and offsets continue without reuse."""
    process = subprocess.Popen(
        [sys.executable, "-c", _PRODUCER, str(tmp_path / "bus")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: dict[tuple[int, int], bytes] = {}
    committed: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while len(acked) < 700:
            assert time.monotonic() < deadline, "the producer is too slow"
            line = process.stdout.readline()
            assert line, f"the producer died: {process.stderr.read() if process.stderr else ''}"
            kind, *fields = line.split()
            if kind == "ack":
                partition, offset, i = map(int, fields)
                acked[(partition, offset)] = b"%d" % i
            else:
                partition, offset = map(int, fields)
                committed[partition] = offset
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()

    bus = EmbeddedBus(tmp_path / "bus")  # the dead process's lock went with it
    try:
        stored = {(m.partition, m.offset): m.value for m in await bus.read_last("crash", 10**6)}
        assert acked.items() <= stored.items()
        for partition in range(3):
            offsets = sorted(o for p, o in stored if p == partition)
            assert offsets == list(range(len(offsets))), "no gaps"
            assert (await bus.produce("crash", b"after", partition=partition)).offset == len(
                offsets
            )
        on_disk = bus._log.committed("g")
        for partition, offset in committed.items():
            assert on_disk[("crash", partition)] >= offset
    finally:
        await bus.close()


# --- the group as a whole -----------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.integers(0, 2), st.integers(1, 5)),
        st.tuples(st.just("join"), st.integers(0, 0), st.integers(0, 0)),
        st.tuples(st.just("leave"), st.integers(0, 3), st.integers(0, 0)),
        st.tuples(st.just("poll"), st.integers(0, 3), st.integers(1, 4)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_members_committing_what_they_read_see_every_message_exactly_once(ops):
    """With every member committing what each poll returned, joins and leaves in any order
    deliver each message to exactly one member exactly once (the embedded bus's rebalance keeps
    kept partitions' positions and starts moved ones at the committed offset)."""

    async def run(folder: str) -> None:
        bus = EmbeddedBus(folder)
        await bus.create_topic("t", 3)
        members = [await bus.consumer("g", ["t"], from_beginning=True)]
        delivered: list[tuple[int, int]] = []
        ends = [0, 0, 0]

        async def poll(member, limit):
            messages = await member.poll(0, max_messages=limit)
            delivered.extend((m.partition, m.offset) for m in messages)
            await member.commit({m.topic_partition: m.offset + 1 for m in messages})

        for op, a, b in ops:
            if op == "produce":
                for _ in range(b):
                    await bus.produce("t", b"x", partition=a)
                ends[a] += b
            elif op == "join":
                members.append(await bus.consumer("g", ["t"], from_beginning=True))
            elif op == "leave" and len(members) > 1:
                await members.pop(a % len(members)).close()
            elif op == "poll":
                await poll(members[a % len(members)], b)
            held = [m.assignment() for m in members]
            assert set().union(*held) == {tp("t", p) for p in range(3)}
            assert sum(map(len, held)) == 3
        for _ in range(3):  # every partition has a member: one round reads the rest
            for member in members:
                await poll(member, 500)
        assert sorted(delivered) == [(p, o) for p in range(3) for o in range(ends[p])]
        await bus.close()

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(folder))


async def test_a_taken_over_partition_without_commit_starts_at_the_join_point(bus):
    await bus.create_topic("t", 2)
    first = await bus.consumer("g", ["t"])
    second = await bus.consumer("g", ["t"])  # joins when partition 0 ends at offset 0
    assert second.assignment() == {tp("t", 1)}
    missed = await bus.produce("t", b"first never read it", partition=0)
    await first.close()
    assert second.assignment() == {tp("t", 0), tp("t", 1)}
    assert await second.poll(0) == [missed]
