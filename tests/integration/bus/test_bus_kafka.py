"""What only the Kafka back end has to show: the test broker works, client properties reach
librdkafka, Seldon users' plain Kafka tooling reads our topics and writes into them, and the
workarounds for Tansu and for confluent-kafka's threading hold.

The contract every back end meets is in `test_bus_contract.py`.
"""

import asyncio
import json
import time

import pytest

ck = pytest.importorskip("confluent_kafka")

from confluent_kafka.admin import AdminClient, ConfigResource  # noqa: E402

from inferline.bus.base import MessageTooLarge, TopicPartition  # noqa: E402
from inferline.bus.kafka import KafkaBus  # noqa: E402

WAIT = 20.0  # seconds, for group joins and deliveries


@pytest.fixture
async def bus(tansu_broker):
    bus = KafkaBus({"bootstrap.servers": tansu_broker})
    yield bus
    await bus.close()


def raw_consumer(tansu_broker: str, **config) -> "ck.Consumer":
    return ck.Consumer(
        {
            "bootstrap.servers": tansu_broker,
            "group.id": "raw-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            **config,
        }
    )


def read_raw(consumer: "ck.Consumer", count: int) -> list:
    """`count` messages from a plain confluent-kafka consumer (blocking; run it in a thread)."""
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got.append(message)
    return got


async def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


# --- the broker fixture -------------------------------------------------------------------------


def test_broker_fixture_answers_kafka_metadata(tansu_broker):
    host, port = tansu_broker.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    metadata = AdminClient({"bootstrap.servers": tansu_broker}).list_topics(timeout=10)
    assert metadata.brokers, "the broker lists itself"


# --- client properties --------------------------------------------------------------------------


async def test_client_properties_reach_librdkafka(tansu_broker, topic):
    """Every property goes to every client unchanged, callbacks included; librdkafka's
    statistics name the client id we gave, for the producer and for a consumer alike."""
    stats: list[dict] = []
    bus = KafkaBus(
        {
            "bootstrap.servers": tansu_broker,
            "client.id": "seldon-tooling-test",
            "statistics.interval.ms": 100,
            "stats_cb": lambda raw: stats.append(json.loads(raw)),
        }
    )
    try:
        await bus.produce(topic, b"x")
        consumer = await bus.consumer(f"{topic}.g", [topic])
        await wait_for(
            lambda: {s["type"] for s in stats} >= {"producer", "consumer"},
            "statistics from the producer and the consumer",
        )
        assert {s["client_id"] for s in stats} == {"seldon-tooling-test"}
        await consumer.close()
    finally:
        await bus.close()


def test_an_invalid_client_property_fails_at_construction(tansu_broker):
    with pytest.raises(ValueError, match=r"security\.protocol"):
        KafkaBus({"bootstrap.servers": tansu_broker, "security.protocol": "carrier-pigeon"})
    with pytest.raises(ValueError, match=r"no\.such\.property"):
        KafkaBus({"bootstrap.servers": tansu_broker, "no.such.property": "1"})
    with pytest.raises(ValueError, match=r"bootstrap\.servers"):
        KafkaBus({"client.id": "nowhere"})


# --- interoperating with the plain confluent-kafka client ---------------------------------------


async def test_plain_kafka_client_reads_what_the_bus_wrote(bus, tansu_broker, topic):
    await bus.create_topic(topic, 3)
    headers = [("pipeline", b"p1"), ("x-request-id", b"a"), ("x-request-id", b"b"), ("e", b"")]
    sent = await bus.produce(topic, b"\x08\x01payload", key=b"1.p1.req-7", headers=headers)

    reader = raw_consumer(tansu_broker)
    reader.assign([ck.TopicPartition(topic, sent.partition, sent.offset)])
    try:
        (got,) = await asyncio.to_thread(read_raw, reader, 1)
    finally:
        reader.close()
    assert (got.topic(), got.partition(), got.offset()) == (topic, sent.partition, sent.offset)
    assert (got.key(), got.value()) == (b"1.p1.req-7", b"\x08\x01payload")
    assert got.headers() == headers
    assert got.timestamp()[1] == sent.timestamp_ms


async def test_bus_reads_what_a_plain_kafka_client_wrote(bus, tansu_broker, topic):
    await bus.create_topic(topic, 3)
    consumer = await bus.consumer(f"{topic}.g", [topic])
    writer = ck.Producer({"bootstrap.servers": tansu_broker})
    reports = []
    headers = [("pipeline", b"p1"), ("x-request-id", b"a"), ("x-request-id", b"b")]
    writer.produce(
        topic,
        b"from seldon",
        key=b"2.p1.req-9",
        headers=headers,
        on_delivery=lambda error, message: reports.append((error, message)),
    )
    assert await asyncio.to_thread(writer.flush, WAIT) == 0
    ((error, report),) = reports
    assert error is None

    messages = []
    deadline = time.monotonic() + WAIT
    while not messages and time.monotonic() < deadline:
        messages = await consumer.poll(1.0)
    (got,) = messages
    assert (got.topic, got.partition, got.offset) == (topic, report.partition(), report.offset())
    assert (got.key, got.value, got.headers) == (b"2.p1.req-9", b"from seldon", tuple(headers))
    assert got.header("x-request-id") == b"b"
    await consumer.close()


async def test_keys_land_where_the_plain_client_puts_them(bus, tansu_broker, topic):
    """Both use librdkafka's default partitioner (crc32 of the key, as the embedded bus does),
    so a request keyed by Seldon tooling and by us meets in the same partition."""
    await bus.create_topic(topic, 5)
    writer = ck.Producer({"bootstrap.servers": tansu_broker})
    theirs: dict[bytes, int] = {}
    for i in range(20):
        key = f"0.pipeline.request-{i}".encode()
        writer.produce(
            topic,
            b"x",
            key=key,
            on_delivery=lambda _, message, key=key: theirs.__setitem__(key, message.partition()),
        )
    assert await asyncio.to_thread(writer.flush, WAIT) == 0
    ours = {key: (await bus.produce(topic, b"y", key=key)).partition for key in theirs}
    assert ours == theirs


# --- Tansu and threading workarounds ------------------------------------------------------------


async def test_ends_are_exact_after_batched_writes(bus, topic):
    """Tansu reports a partition's end as the last record batch's first offset plus one. Batched
    writes must neither shorten `read_last` nor leak old messages to a new group."""
    await bus.create_topic(topic, 1)
    sent = await asyncio.gather(*(bus.produce(topic, f"old-{i}".encode()) for i in range(50)))
    assert sorted(m.offset for m in sent) == list(range(50))

    last = await bus.read_last(topic, 3)
    assert [(m.offset, m.value) for m in last] == [
        (47, b"old-47"),
        (48, b"old-48"),
        (49, b"old-49"),
    ]

    consumer = await bus.consumer(f"{topic}.g", [topic])
    new = await bus.produce(topic, b"new")
    received = []
    deadline = time.monotonic() + WAIT
    while not received and time.monotonic() < deadline:
        received = await consumer.poll(1.0)
    received += await consumer.poll(0.5)  # anything old would be here too
    assert [(m.offset, m.value) for m in received] == [(new.offset, b"new")]
    await consumer.close()


async def test_a_message_over_the_size_limit_is_message_too_large_and_the_bus_goes_on(
    tansu_broker, topic
):
    """Pipelines give up on such a message (retrying cannot help) instead of rereading it for
    ever: the bus must tell it apart from a broker that is down."""
    bus = KafkaBus({"bootstrap.servers": tansu_broker, "message.max.bytes": 10_000})
    try:
        await bus.create_topic(topic, 1)
        with pytest.raises(MessageTooLarge, match="a message of 20002 bytes is larger than Kafka"):
            await bus.produce(topic, b"x" * 20_000, key=b"k", headers=[("h", b"")])
        written = await bus.produce(topic, b"small")
        assert [m.value for m in await bus.read_last(topic, 5)] == [b"small"]
        assert written.offset == 0
    finally:
        await bus.close()


async def test_topic_properties_reach_every_topic_the_bus_creates(tansu_broker, topic):
    """`inferline up --kafka-topic-property`: e.g. a max.message.bytes above the broker's 1 MB
    default on every pipeline and model topic, not only on some (seldon-core#4668)."""
    properties = {"max.message.bytes": "10485760", "retention.ms": "3600000"}
    bus = KafkaBus({"bootstrap.servers": tansu_broker}, topic_config=properties)
    try:
        await bus.create_topic(topic, 1)
        await bus.produce(f"{topic}.made-by-produce", b"x")  # created on first write
    finally:
        await bus.close()
    admin = AdminClient({"bootstrap.servers": tansu_broker})
    for name in (topic, f"{topic}.made-by-produce"):
        (described,) = admin.describe_configs([ConfigResource("topic", name)]).values()
        values = {key: entry.value for key, entry in described.result(WAIT).items()}
        assert {key: values.get(key) for key in properties} == properties, name


async def test_messages_over_librdkafkas_1_mb_default_are_written_and_read(bus, topic):
    """As in Seldon Core 2, the broker's limit applies, not librdkafka's default of 1 MB
    (a 3 MB image tensor is an ordinary pipeline message)."""
    await bus.create_topic(topic, 1)
    value = bytes(range(256)) * (3 * 4096)
    await bus.produce(topic, value)
    (stored,) = await bus.read_last(topic, 1)
    assert stored.value == value


async def test_writes_handed_over_together_land_in_the_order_they_were_made(bus, topic):
    """Pipeline stages hand a whole poll's writes to the bus and then await them together (one
    broker round trip per poll, not per message); a partition keeps the order they were made."""
    await bus.create_topic(topic, 1)
    writes = [
        asyncio.ensure_future(bus.produce(topic, b"%d" % n, key=b"k%d" % (n % 7), partition=0))
        for n in range(500)
    ]
    written = await asyncio.gather(*writes)
    assert [m.offset for m in written] == list(range(500))
    stored = await bus.read_last(topic, 500)
    assert [int(m.value) for m in stored] == list(range(500))


async def test_commit_does_not_wait_for_a_pending_poll(bus, topic):
    """confluent-kafka lets one call at a time into a consumer; a commit must not queue behind
    a long poll that is waiting for messages."""
    await bus.create_topic(topic, 1)
    consumer = await bus.consumer(f"{topic}.g", [topic])
    waiting = asyncio.create_task(consumer.poll(10.0))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await consumer.commit({TopicPartition(topic, 0): 0})
    assert time.monotonic() - started < 1.0
    assert not waiting.done()
    await consumer.close()
    with pytest.raises(RuntimeError):
        await waiting


async def test_a_member_keeps_its_group_without_being_polled(bus, topic):
    """Rebalances are served in the background: a second member can join while the first one's
    application is busy elsewhere, and the two split the partitions."""
    await bus.create_topic(topic, 2)
    group = f"{topic}.g"
    first = await bus.consumer(group, [topic])
    assert first.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    second = await bus.consumer(group, [topic])
    await wait_for(
        lambda: len(first.assignment()) == len(second.assignment()) == 1,
        "the two members to split two partitions",
    )
    assert first.assignment() | second.assignment() == {
        TopicPartition(topic, 0),
        TopicPartition(topic, 1),
    }
    await second.close()
    await first.close()


async def test_a_stage_whose_write_fails_reads_the_message_again_on_kafka(bus, monkeypatch):
    """A pipeline stage on Kafka whose write is refused leaves the group at that message and
    reads it again through a new member of its group; nothing is skipped, nothing committed
    past it. (The stage's own rules are unit-tested on the embedded bus.)"""
    from inferline.dataflow.plan import plan_pipeline
    from inferline.dataflow.stage import StageRunner
    from inferline.dataflow.topics import TopicNames
    from inferline.protocol.proto import inference_pb2 as pb
    from inferline.resources import load_resources

    monkeypatch.setattr("inferline.dataflow.stage.RETRY_MIN_SECONDS", 0.05)
    names = TopicNames(prefix=f"t{time.monotonic_ns()}")
    (pipeline,) = load_resources(
        "apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec: {steps: [{name: m}], output: {steps: [m]}}\n"
    )
    plan = plan_pipeline("p", 1, pipeline.spec, names)
    (stage,) = [s for s in plan.stages if s.name == "step m"]
    source = stage.inputs[0].topic
    for topic in (source, stage.sink_topic):
        await bus.create_topic(topic, 1)

    refused = []

    class Refusing:
        def __getattr__(self, name):
            return getattr(bus, name)

        async def produce(self, topic, value, **kwargs):
            if topic == stage.sink_topic and not refused:
                refused.append(kwargs.get("key"))
                raise ck.KafkaException(ck.KafkaError(ck.KafkaError._MSG_TIMED_OUT))
            return await bus.produce(topic, value, **kwargs)

    runner = StageRunner(stage, 1, Refusing(), names, group=f"{source}.stage")
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(runner.ready.wait(), WAIT)
        request = pb.ModelInferRequest(id="r").SerializeToString()
        await bus.produce(source, request, key=b"0.p.a", headers=[("pipeline", b"p")])
        await bus.produce(source, request, key=b"0.p.b", headers=[("pipeline", b"p")])
        reader = await bus.consumer(f"{source}.reader", [stage.sink_topic], from_beginning=True)
        keys = []
        deadline = time.monotonic() + WAIT
        while keys[-2:] != [b"0.p.a", b"0.p.b"] and time.monotonic() < deadline:
            keys += [m.key for m in await reader.poll(1.0)]
        await reader.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert refused == [b"0.p.a"]
    # Read again from `a` on, in order (`b` twice if its write had gone through: at-least-once).
    assert keys[-2:] == [b"0.p.a", b"0.p.b"]
    assert keys in ([b"0.p.a", b"0.p.b"], [b"0.p.b", b"0.p.a", b"0.p.b"])
    committed = await bus.committed(f"{source}.stage", [source])
    assert committed == {TopicPartition(source, 0): 2}
