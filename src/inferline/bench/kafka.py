"""The asynchronous target: write the request to a model's or pipeline's inputs topic and wait
for the message with the same key on its outputs topic (or on the errors topic), as a Kafka
client of the platform does, with no router or pipeline gateway in the way.

Keys are Seldon's `<partition>.<resource>.<request id>`, written to the partition they name, with
the `pipeline` header for pipelines, so the dataflow engine treats them as a gateway's. The
reader does not join a consumer group: it assigns itself every partition of the outputs and
errors topics at their current end before the first request, so no answer can be missed while
a group forms (and each load process reads them all, keeping only its own keys).
"""

import asyncio
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


class KafkaTarget:
    def __init__(self, spec: TargetSpec):
        self.spec = spec
        self.pipeline = spec.input_topic.split(".")[2] == "pipeline"
        prefix, namespace = spec.input_topic.split(".")[:2]
        self.errors_topic = TopicNames(prefix, namespace).errors
        self.headers = [(k.lower(), v.encode()) for k, v in spec.headers]
        if self.pipeline:
            self.headers.append((PIPELINE_HEADER, spec.name.encode()))
        self.waiters: dict[bytes, asyncio.Future] = {}
        self.sent = 0
        self.run_id = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
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
            messages = self.consumer.consume(num_messages=500, timeout=0.1)
            answers = [
                (m.key(), m.topic(), m.headers() or [], m.value())
                for m in messages
                if m.error() is None
            ]
            if answers:
                self.loop.call_soon_threadsafe(self._deliver, answers)

    def _deliver(self, answers) -> None:
        for key, topic, headers, value in answers:
            waiter = self.waiters.pop(key, None)
            if waiter is None or waiter.done():
                continue  # someone else's message, or one that timed out
            failed = next((v for k, v in headers if k == ERROR_HEADER), None)
            if topic == self.errors_topic:
                text = (value or b"").decode(errors="replace")
                waiter.set_result(("step error", f"{(failed or b'').decode()} : {text}"))
            elif failed is not None:
                waiter.set_result(("step error", failed.decode(errors="replace")))
            else:
                waiter.set_result(None)

    async def call(self) -> Outcome:
        self.sent += 1
        partition = self.sent % self.partitions
        key = message_key(partition, self.spec.name, f"{self.run_id}-{self.sent}")
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
            topic, limit = self.spec.output_topic, self.spec.timeout
            return "timeout", f"no answer on {topic} within {limit:g} s"
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
