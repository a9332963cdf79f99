"""The asynchronous targets: write the request to a model's or pipeline's inputs topic and wait
for the message with the same key on its outputs topic (or on the errors topic), as a client of
the platform's topics does, with no router or pipeline gateway in the way.

Keys are Seldon's `<partition>.<resource>.<request id>`, written to the partition they name, with
the `pipeline` header for pipelines, so the dataflow engine treats them as a gateway's. A model's
topics are read and written only while a pipeline uses the model (its model gateway runs then).

`KafkaTarget` is a plain confluent-kafka client, as a Seldon user's tooling is; it runs in every
load process. Its reader does not join a consumer group: it assigns itself every partition of
the outputs and errors topics at their current end before the first request, so no answer can
be missed while a group forms (each load process reads them all, keeping its own keys).

`BusTarget` does the same on any `inferline.bus` back end, in the process that owns the bus:
the embedded bus can be opened by one process only (a lock on its folder), so load on its
topics comes from inside the platform's process (`inferline bench --embedded`, or `Platform`).
"""

import asyncio
import contextlib
import os
import threading
import uuid

from inferline.bench.targets import Outcome, TargetSpec
from inferline.dataflow.topics import (
    ERROR_HEADER,
    PIPELINE_HEADER,
    REQUEST_ID_HEADER,
    TopicNames,
    message_key,
)

# Low-latency settings (the platform's own for Tansu: a fetch is held for half its wait);
# --kafka-property overrides any of them.
PRODUCER_DEFAULTS = {"linger.ms": "1", "acks": "all"}
CONSUMER_DEFAULTS = {"fetch.wait.max.ms": "10", "enable.auto.commit": "false"}
METADATA_TIMEOUT = 30.0


def answer(waiters: dict, errors_topic: str, key, topic: str, headers, value) -> None:
    """Hand a message read back to the call waiting on its key, if any: None for an answer,
    ("step error", text) for a failure (on the errors topic, or flagged in a header)."""
    waiter = waiters.pop(key, None)
    if waiter is None or waiter.done():
        return  # someone else's message, or one that timed out
    failed = next((v for k, v in headers if k == ERROR_HEADER), None)
    if topic == errors_topic:
        text = (value or b"").decode(errors="replace")
        waiter.set_result(("step error", f"{(failed or b'').decode()} : {text}"))
    elif failed is not None:
        waiter.set_result(("step error", failed.decode(errors="replace")))
    else:
        waiter.set_result(None)


def _topic_parts(spec: TargetSpec) -> tuple[bool, str]:
    """(is it a pipeline, the errors topic) from the inputs topic's name."""
    prefix, namespace, kind = spec.input_topic.split(".")[:3]
    return kind == "pipeline", TopicNames(prefix, namespace).errors


class _TopicExchange:
    """What both topic targets keep: the request's headers, the calls waiting for their key, and
    the keys they send (`partitions` is set by `open`, from the inputs topic)."""

    partitions = 1

    def __init__(self, spec: TargetSpec):
        self.spec = spec
        self.pipeline, self.errors_topic = _topic_parts(spec)
        self.headers = [(k.lower(), v.encode()) for k, v in spec.headers]
        if self.pipeline:
            self.headers.append((PIPELINE_HEADER, spec.name.encode()))
        self.waiters: dict[bytes, asyncio.Future] = {}
        self.sent = 0
        self.run_id = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def _next_key(self) -> tuple[int, bytes]:
        """The partition and key of the next request, spread over the partitions in turn."""
        self.sent += 1
        partition = self.sent % self.partitions
        return partition, message_key(partition, self.spec.name, f"{self.run_id}-{self.sent}")

    def _answer(self, key, topic: str, headers, value) -> None:
        answer(self.waiters, self.errors_topic, key, topic, headers, value)

    def _timed_out(self) -> Outcome:
        topic, limit = self.spec.output_topic, self.spec.timeout
        return "timeout", f"no answer on {topic} within {limit:g} s"


class KafkaTarget(_TopicExchange):
    def __init__(self, spec: TargetSpec):
        super().__init__(spec)
        self._stop = threading.Event()

    async def open(self) -> None:
        from confluent_kafka import Consumer, Producer

        self.loop = asyncio.get_running_loop()
        base = {"bootstrap.servers": self.spec.address}
        self.producer = Producer({**base, **PRODUCER_DEFAULTS, **self.spec.kafka_config})
        self.consumer = Consumer(
            {
                **base,
                "group.id": self.run_id,  # required by the client; no group is joined
                **CONSUMER_DEFAULTS,
                **self.spec.kafka_config,
            }
        )
        await asyncio.to_thread(self._assign_at_end)
        self.partitions = await asyncio.to_thread(self._partition_count, self.spec.input_topic)
        self.reader = threading.Thread(target=self._read, name="bench-kafka-reader", daemon=True)
        self.reader.start()

    def _partition_count(self, topic: str) -> int:
        found = self.producer.list_topics(topic, timeout=METADATA_TIMEOUT).topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise RuntimeError(
                f"topic {topic} does not exist on {self.spec.address}: is the "
                f"{'pipeline' if self.pipeline else 'model'} '{self.spec.name}' loaded there?"
            )
        return len(found.partitions)

    def _assign_at_end(self) -> None:
        from confluent_kafka import TopicPartition

        assignment = []
        for topic in (self.spec.output_topic, self.errors_topic):
            metadata = self.consumer.list_topics(topic, timeout=METADATA_TIMEOUT).topics.get(topic)
            if metadata is None or metadata.error is not None:
                if topic == self.spec.output_topic:
                    raise RuntimeError(f"topic {topic} does not exist on {self.spec.address}")
                continue  # no errors topic yet: nothing has failed
            for partition in metadata.partitions:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=METADATA_TIMEOUT
                )
                assignment.append(TopicPartition(topic, partition, high))
        self.consumer.assign(assignment)

    def _read(self) -> None:
        while not self._stop.is_set():
            # consume() waits for its whole batch or its timeout: poll for the first message,
            # then take whatever else is already fetched.
            first = self.consumer.poll(0.1)
            if first is None:
                continue
            messages = [first, *self.consumer.consume(num_messages=499, timeout=0)]
            answers = [
                (m.key(), m.topic(), m.headers() or [], m.value())
                for m in messages
                if m.error() is None
            ]
            if answers:
                self.loop.call_soon_threadsafe(self._deliver, answers)

    def _deliver(self, answers) -> None:
        for key, topic, headers, value in answers:
            self._answer(key, topic, headers, value)

    async def call(self) -> Outcome:
        partition, key = self._next_key()
        waiter = self.loop.create_future()
        self.waiters[key] = waiter
        try:
            self.producer.produce(
                self.spec.input_topic,
                self.spec.body,
                key=key,
                partition=partition,
                headers=[*self.headers, (REQUEST_ID_HEADER, key)],
                on_delivery=lambda error, _: error and self._failed(key, error),
            )
        except BufferError:
            self.waiters.pop(key, None)
            return "produce error", "the producer's local queue is full"
        self.producer.poll(0)  # runs delivery callbacks of earlier messages
        try:
            async with asyncio.timeout(self.spec.timeout):
                return await waiter
        except TimeoutError:
            return self._timed_out()
        finally:
            self.waiters.pop(key, None)

    def _failed(self, key: bytes, error) -> None:
        waiter = self.waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(("produce error", str(error)))

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self.reader.join, 5)
        await asyncio.to_thread(self.producer.flush, 5)
        self.consumer.close()


class BusTarget(_TopicExchange):
    """The same exchange on an `inferline.bus.base.Bus` (embedded or Kafka), on its own loop."""

    def __init__(self, bus, spec: TargetSpec):
        super().__init__(spec)
        self.bus = bus
        self.consumer = None
        self.reader: asyncio.Task | None = None

    async def open(self) -> None:
        topics = await self.bus.topics()
        if self.spec.input_topic not in topics:
            kind = "pipeline" if self.pipeline else "model"
            raise RuntimeError(
                f"topic {self.spec.input_topic} does not exist: is the {kind} "
                f"'{self.spec.name}' loaded{'' if self.pipeline else ' and used by a pipeline'}?"
            )
        self.partitions = topics[self.spec.input_topic]
        await self.bus.create_topic(self.errors_topic)
        # A group of its own, from the log's end: nothing written after this returns is missed.
        self.consumer = await self.bus.consumer(
            self.run_id, [self.spec.output_topic, self.errors_topic]
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for message in await self.consumer.poll(0.1):
                self._answer(message.key, message.topic, message.headers, message.value)

    async def call(self) -> Outcome:
        partition, key = self._next_key()
        waiter = asyncio.get_running_loop().create_future()
        self.waiters[key] = waiter
        try:
            async with asyncio.timeout(self.spec.timeout):
                await self.bus.produce(
                    self.spec.input_topic,
                    self.spec.body,
                    key=key,
                    headers=[*self.headers, (REQUEST_ID_HEADER, key)],
                    partition=partition,
                )
                return await waiter
        except TimeoutError:
            return self._timed_out()
        finally:
            self.waiters.pop(key, None)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        if self.consumer is not None:
            await self.consumer.close()
