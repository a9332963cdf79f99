"""The Kafka back end: the bus on any Kafka-compatible cluster, through confluent-kafka.

Every client property given to `KafkaBus` reaches librdkafka unchanged (SASL, TLS, timeouts);
our defaults fill only what the caller left out. The defaults are tuned for Tansu, the broker the
tests run on, and are harmless on Apache Kafka.

How the asynchronous interface sits on librdkafka's blocking one:

- One producer per bus. `produce` hands the message to librdkafka and awaits a future; a thread
  serves the delivery reports and resolves the futures on the loop that awaits them, a batch of
  reports at a time.
- One thread per consumer owns its librdkafka handle. confluent-kafka serialises every call on a
  consumer (a `commit` waits for an in-flight `poll` to return), so only the owner touches the
  handle: it polls in short slices, runs queued commands (commit, close) between slices, and
  serves rebalances whether or not the application is polling. Messages go into a buffer that
  `Consumer.poll` drains; the owner pauses fetching when the buffer is full.
- Where a partition starts when the group has no committed offset is decided by us, not by
  `auto.offset.reset`: `from_beginning` starts at the beginning, otherwise at the end of the log
  as it was when `consumer()` returned (its "join point"), so nothing written after `consumer()`
  returns is skipped, however long the group takes to settle. A join point used is committed for
  the group at once (as Kafka's auto-commit records a new member's position), so a member that
  restarts before reading anything resumes there rather than at the new end.
- Tansu's ListOffsets answers the base offset of the last record batch plus one as the high
  watermark, short of the true end when the last batch held several records. The true end is
  therefore taken from a fetch that reaches the end of the partition (librdkafka's end-of-partition
  event carries the fetch response's high watermark); on Apache Kafka both agree.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from inferline.bus.base import (
    Bus,
    BusClosedError,
    Consumer,
    Message,
    MessageTooLarge,
    TopicPartition,
    as_bytes,
    as_headers,
    message_size,
)

__all__ = ["COMMON_DEFAULTS", "CONSUMER_DEFAULTS", "PRODUCER_DEFAULTS", "KafkaBus"]

log = logging.getLogger(__name__)

# Defaults, each overridden by the same property in the caller's config.
COMMON_DEFAULTS: dict[str, Any] = {
    "client.id": "inferline",
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    # No lingering, one request in flight per broker: a lone message goes out at once, and
    # under load the messages that queue behind the request in flight form the next batch.
    # Against Tansu (1 KB): 2,000-2,900 sequential produces/s (linger.ms=1: ~550/s) and
    # 17,000-25,000/s with 100 in flight (linger.ms=1: about the same; linger.ms=0 with
    # librdkafka's default of 1,000,000 in flight: ~10,000/s at 3-5x the broker CPU). It also
    # keeps each partition in order through retries. Over a long round trip to a remote
    # cluster, raise `max.in.flight.requests.per.connection` (and enable idempotence).
    "linger.ms": 0,
    "max.in.flight.requests.per.connection": 1,
    # As Seldon Core 2 configures its producers: the broker's (topic's) `max.message.bytes`
    # decides how large a message may be, not librdkafka's own 1 MB default.
    "message.max.bytes": 1_000_000_000,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    # Tansu answers a fetch at once when data is there (a backlog reads at 180,000 msg/s), but
    # holds an empty one for this wait and does not answer it when data arrives: a hop waits
    # about half of it (produce->poll p50 1.8 / 3.3 / 4.5 / 9.6 ms at 1 / 5 / 10 / 20), and each
    # idle consumer costs the broker 17 / 11 / 5 / 4% of a core (benchmarks/kafka_bus.py); at
    # librdkafka's default of 500, 250 ms a hop. Apache Kafka answers a waiting fetch when data
    # arrives, so there this only bounds how often an idle consumer asks.
    "fetch.wait.max.ms": 10,
    # A group join on Tansu takes half the session timeout.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}

# The owner thread polls in slices so that queued commands wait at most one slice. Right after
# activity (a batch delivered, a command run) the slices are short, since a commit usually follows.
_IDLE_SLICE = 0.02
_HOT_SLICE = 0.002
_HOT_FOR = 0.25
# Messages taken from librdkafka per owner-thread call, and the consumer buffer's bounds.
_FETCH_BATCH = 1000
_BUFFER_HIGH = 10_000
_BUFFER_LOW = 2_000
# Kafka's rule for topic names (the embedded bus applies the same).
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# Admin requests and metadata waits.
_ADMIN_TIMEOUT = 30.0
# How long an end-of-partition probe may read before it settles for what it has seen.
_PROBE_TIMEOUT = 10.0


def _kafka_error(error: ck.KafkaError | Exception) -> ck.KafkaException:
    return error if isinstance(error, ck.KafkaException) else ck.KafkaException(error)


# The broker's (or librdkafka's) answer to a message or batch larger than it takes.
_TOO_LARGE = (ck.KafkaError.MSG_SIZE_TOO_LARGE, ck.KafkaError.RECORD_LIST_TOO_LARGE)


def _too_large(message: Message, error: ck.KafkaError) -> MessageTooLarge:
    size = message_size(message.key, message.value, message.headers)
    return MessageTooLarge(
        f"a message of {size} bytes is larger than Kafka accepts on topic {message.topic!r} "
        f"({error.str()}); the limits are the topic's max.message.bytes and the producer's "
        "message.max.bytes"
    )


def _to_message(raw: ck.Message) -> Message:
    kind, stamp = raw.timestamp()
    headers = raw.headers()
    return Message(
        topic=raw.topic(),
        partition=raw.partition(),
        offset=raw.offset(),
        key=raw.key(),
        value=raw.value() or b"",
        headers=tuple((name, value or b"") for name, value in headers) if headers else (),
        timestamp_ms=stamp if kind != ck.TIMESTAMP_NOT_AVAILABLE else 0,
    )


def _drain(client: ck.Consumer, timeout: float) -> list[ck.Message]:
    """Wait up to `timeout` for one message or event, then take what is already queued.
    (`consume(n, timeout)` would wait the whole timeout unless `n` messages came.)"""
    first = client.poll(timeout)
    if first is None:
        return []
    return [first, *client.consume(_FETCH_BATCH, 0)]


class KafkaBus(Bus):
    """The bus on a Kafka cluster. `config` holds librdkafka client properties (at least
    `bootstrap.servers`), given to the producer, the admin client and every consumer;
    `topic_config` holds topic properties (`max.message.bytes`, `retention.ms`, ...) given to
    every topic this bus creates."""

    def __init__(
        self,
        config: dict[str, Any],
        default_partitions: int = 1,
        *,
        topic_config: dict[str, str] | None = None,
        join_timeout: float = 30.0,
    ) -> None:
        if not (config.get("bootstrap.servers") or config.get("metadata.broker.list")):
            raise ValueError("Kafka bus config needs 'bootstrap.servers'")
        if default_partitions < 1:
            raise ValueError(f"default_partitions must be at least 1, got {default_partitions}")
        self._config = dict(config)
        self._default_partitions = default_partitions
        self._topic_config = dict(topic_config or {})
        self._join_timeout = join_timeout
        try:
            self._producer = ck.Producer(self._client_config(PRODUCER_DEFAULTS))
            self._admin = AdminClient({**COMMON_DEFAULTS, **self._config})
        except ck.KafkaException as exc:
            raise ValueError(f"invalid Kafka client configuration: {exc.args[0].str()}") from exc
        self._partitions: dict[str, int] = {}  # topics known to exist, with partition counts
        self._creating: dict[str, asyncio.Future] = {}
        self._consumers: set[KafkaConsumer] = set()
        self._reports: collections.deque = collections.deque()  # delivery reports to dispatch
        self._closing = threading.Event()
        self._closed = False
        self._delivery_thread = threading.Thread(
            target=self._serve_deliveries, name="inferline-kafka-delivery", daemon=True
        )
        self._delivery_thread.start()

    def _client_config(self, defaults: dict[str, Any], **forced: Any) -> dict[str, Any]:
        config: dict[str, Any] = {**COMMON_DEFAULTS, **defaults, **self._config, **forced}
        config.setdefault("logger", log)
        config.setdefault("error_cb", _log_client_error)
        return config

    # --- topics ----------------------------------------------------------------------------

    async def create_topic(self, topic: str, partitions: int | None = None) -> None:
        self._check_open()
        _check_topic_name(topic)
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise ValueError(
                f"partitions must be at least 1 for topic {topic!r}, got {partitions!r}"
            )
        count = partitions or self._default_partitions
        futures = self._admin.create_topics(
            [NewTopic(topic, num_partitions=count, config=self._topic_config)],
            request_timeout=_ADMIN_TIMEOUT,
        )
        try:
            await asyncio.wrap_future(futures[topic])
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        self._partitions[topic] = await self._await_metadata(topic, present=True)

    async def delete_topic(self, topic: str) -> None:
        self._check_open()
        self._partitions.pop(topic, None)
        futures = self._admin.delete_topics([topic], request_timeout=_ADMIN_TIMEOUT)
        try:
            await asyncio.wrap_future(futures[topic])
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
        await self._await_metadata(topic, present=False)

    async def topics(self) -> dict[str, int]:
        self._check_open()
        metadata = await asyncio.to_thread(self._admin.list_topics, timeout=_ADMIN_TIMEOUT)
        found = {
            name: len(meta.partitions)
            for name, meta in metadata.topics.items()
            if meta.error is None and not name.startswith("__")
        }
        self._partitions.update(found)
        return found

    async def _await_metadata(self, topic: str, present: bool) -> int:
        """Wait until the cluster's metadata shows `topic` (with its partitions) or no longer
        shows it; returns its partition count (0 when absent)."""
        deadline = time.monotonic() + _ADMIN_TIMEOUT
        delay = 0.005
        while True:
            count = await asyncio.to_thread(self._partition_count, topic)
            if (count > 0) == present:
                return count
            if time.monotonic() > deadline:
                state = "appear" if present else "disappear"
                raise TimeoutError(f"topic {topic!r} did not {state} in the cluster metadata")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _partition_count(self, topic: str) -> int:
        metadata = self._admin.list_topics(timeout=_ADMIN_TIMEOUT)
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return len(meta.partitions)

    async def _ensure_topic(self, topic: str) -> int:
        """The topic's partition count, creating the topic first if this bus has not seen it.
        Concurrent callers share one creation."""
        count = self._partitions.get(topic)
        if count is not None:
            return count
        creating = self._creating.get(topic)
        if creating is None or creating.get_loop() is not asyncio.get_running_loop():
            creating = asyncio.ensure_future(self.create_topic(topic))
            self._creating[topic] = creating

            def forget(_: asyncio.Future) -> None:
                if self._creating.get(topic) is creating:
                    del self._creating[topic]

            creating.add_done_callback(forget)
        await asyncio.shield(creating)
        return self._partitions[topic]

    # --- producing -------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Message:
        self._check_open()
        _check_topic_name(topic)
        value = as_bytes(value, "value")
        if key is not None:
            key = as_bytes(key, "key")
        headers = as_headers(headers)
        count = await self._ensure_topic(topic)
        self._check_open()  # closed while the topic was being created
        if partition is not None and not (isinstance(partition, int) and 0 <= partition < count):
            # The topic may have grown since this bus looked: look again before refusing.
            count = self._partitions[topic] = await asyncio.to_thread(self._partition_count, topic)
            if not (isinstance(partition, int) and 0 <= partition < count):
                raise ValueError(
                    f"partition {partition!r} out of range for topic {topic!r} "
                    f"with {count} partition(s) (0..{count - 1})"
                )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        reports = self._reports

        message = Message(topic, -1, -1, key, value, headers)

        def delivered(error: ck.KafkaError | None, raw: ck.Message) -> None:
            reports.append((loop, future, error, raw, message))

        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    headers=list(headers) or None,
                    on_delivery=delivered,
                    **extra,
                )
                break
            except BufferError:  # librdkafka's queue is full: wait for deliveries to drain it
                await asyncio.sleep(0.001)
            except ck.KafkaException as exc:
                if exc.args[0].code() in _TOO_LARGE:
                    raise _too_large(message, exc.args[0]) from None
                raise
        return await future

    def _serve_deliveries(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.1)
            self._dispatch_reports()

    def _dispatch_reports(self) -> None:
        """Hand the delivery reports collected so far to their loops, one wake-up per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        while True:
            try:
                loop, *report = self._reports.popleft()
            except IndexError:
                break
            by_loop.setdefault(loop, []).append(report)
        for loop, reports in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve_deliveries, reports)

    # --- consuming -------------------------------------------------------------------------

    async def consumer(
        self,
        group: str,
        topics: list[str],
        from_beginning: bool = False,
        read_unacknowledged: bool = False,  # brokers serve only acknowledged messages
    ) -> Consumer:
        self._check_open()
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        if isinstance(topics, str) or not topics:
            raise ValueError(f"topics must be a non-empty list of topic names, got {topics!r}")
        topics = list(dict.fromkeys(topics))
        for topic in topics:
            _check_topic_name(topic)
        partitions: list[TopicPartition] = []
        for topic in topics:
            count = await self._ensure_topic(topic)
            partitions.extend(TopicPartition(topic, index) for index in range(count))
        join_points: dict[TopicPartition, int] = {}
        if not from_beginning:
            join_points = await asyncio.to_thread(self._end_offsets, partitions)
        config = self._client_config(
            CONSUMER_DEFAULTS,
            **{"group.id": group},
        )
        config.setdefault("auto.offset.reset", "earliest" if from_beginning else "latest")
        try:
            client = ck.Consumer(config)
        except ck.KafkaException as exc:
            raise ValueError(f"invalid Kafka client configuration: {exc.args[0].str()}") from exc
        consumer = KafkaConsumer(
            client, group, list(topics), from_beginning, join_points, asyncio.get_running_loop()
        )
        # An incremental (cooperative) rebalance hands over and takes back only some partitions.
        consumer._cooperative = "cooperative" in str(config.get("partition.assignment.strategy"))
        self._consumers.add(consumer)
        consumer._on_closed = self._consumers.discard
        consumer.start()
        try:
            await asyncio.wait_for(asyncio.shield(consumer.joined), self._join_timeout)
        except TimeoutError:
            log.warning(
                "consumer of group %r has no assignment after %.0f s; returning it anyway",
                group,
                self._join_timeout,
            )
        return consumer

    async def read_last(self, topic: str, count: int) -> list[Message]:
        self._check_open()
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        if count == 0:
            return []
        partitions = await asyncio.to_thread(self._partition_count, topic)
        if partitions == 0:
            return []
        return await asyncio.to_thread(self._read_last, topic, partitions, count)

    def _probe_client(self) -> ck.Consumer:
        """A consumer that only reads assigned partitions: it never joins its group, commits
        nothing, and reports each partition's end."""
        return ck.Consumer(
            self._client_config(
                CONSUMER_DEFAULTS,
                **{
                    "group.id": "inferline-inspect",
                    "enable.partition.eof": True,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )

    def _probe(
        self, partitions: Sequence[TopicPartition], back: int = 0
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, list[Message]]]:
        """Read each partition from `back` messages before its reported end to its true end.
        Returns each partition's end offset and, with `back`, its last `back` messages."""
        if not partitions:
            return {}, {}
        client = self._probe_client()
        try:
            starts = {}
            for tp in partitions:
                low, high = client.get_watermark_offsets(
                    ck.TopicPartition(tp.topic, tp.partition), timeout=_ADMIN_TIMEOUT, cached=False
                )
                # The reported high watermark is at most the true end (Tansu), so reading on
                # from `high - back` to the end sees at least the last `back` messages.
                starts[tp] = max(low, high - back)
            client.assign(
                [ck.TopicPartition(tp.topic, tp.partition, at) for tp, at in starts.items()]
            )
            ends: dict[TopicPartition, int] = {}
            kept = {tp: collections.deque(maxlen=max(back, 1)) for tp in partitions}
            seen = dict(starts)
            deadline = time.monotonic() + _PROBE_TIMEOUT
            while len(ends) < len(starts) and time.monotonic() < deadline:
                for raw in _drain(client, 0.1):
                    tp = TopicPartition(raw.topic(), raw.partition())
                    error = raw.error()
                    if error is None:
                        seen[tp] = raw.offset() + 1
                        if back:
                            kept[tp].append(_to_message(raw))
                    elif error.code() == ck.KafkaError._PARTITION_EOF:
                        ends[tp] = raw.offset()
                    elif error.fatal():
                        raise _kafka_error(error)
                    else:
                        log.warning("reading %s: %s", tp, error.str())
            for tp in starts.keys() - ends.keys():
                log.warning("no end of partition seen for %s; using offset %d", tp, seen[tp])
                ends[tp] = seen[tp]
            return ends, {tp: list(messages) for tp, messages in kept.items()}
        finally:
            client.close()

    def _end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The true end of each partition now (see the module docstring on Tansu)."""
        return self._probe(partitions)[0]

    def _read_last(self, topic: str, partitions: int, count: int) -> list[Message]:
        tps = [TopicPartition(topic, index) for index in range(partitions)]
        _, kept = self._probe(tps, back=count)
        return [message for tp in tps for message in kept[tp]]

    # --- group offsets without joining ------------------------------------------------------

    async def committed(self, group: str, topics: list[str]) -> dict[TopicPartition, int]:
        self._check_open()
        partitions = []
        for topic in dict.fromkeys(topics):
            count = await asyncio.to_thread(self._partition_count, topic)
            partitions += [TopicPartition(topic, index) for index in range(count)]
        if not partitions:
            return {}
        return await asyncio.to_thread(self._committed, group, partitions)

    def _committed(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        client = self._group_client(group)
        try:
            found = client.committed(
                [ck.TopicPartition(tp.topic, tp.partition) for tp in partitions],
                timeout=_ADMIN_TIMEOUT,
            )
        finally:
            client.close()
        for part in found:
            if part.error is not None:
                raise _kafka_error(part.error)
        return {TopicPartition(p.topic, p.partition): p.offset for p in found if p.offset >= 0}

    async def commit_group(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        self._check_open()
        _check_offsets(offsets)
        if offsets:
            await asyncio.to_thread(self._commit_group, group, offsets)

    def _commit_group(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        # A consumer that has not joined commits as a "simple" consumer (generation -1), which
        # the broker accepts only while the group has no live members.
        client = self._group_client(group)
        try:
            done = client.commit(
                offsets=[
                    ck.TopicPartition(tp.topic, tp.partition, at) for tp, at in offsets.items()
                ],
                asynchronous=False,
            )
        finally:
            client.close()
        for part in done or ():
            if part.error is not None:
                raise _kafka_error(part.error)

    def _group_client(self, group: str) -> ck.Consumer:
        """A consumer of `group` that never subscribes, so it never joins the group."""
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        return ck.Consumer(
            self._client_config(
                CONSUMER_DEFAULTS, **{"group.id": group, "enable.auto.commit": False}
            )
        )

    # --- lifecycle -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("the Kafka bus is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        remaining = await asyncio.to_thread(self._producer.flush, _ADMIN_TIMEOUT)
        if remaining:
            log.warning("closing the Kafka bus with %d messages undelivered", remaining)
            self._producer.purge()  # their `produce` calls fail rather than wait forever
            self._producer.poll(0)
        self._closing.set()
        await asyncio.to_thread(self._delivery_thread.join)
        self._dispatch_reports()
        # Release the clients' connections now: a broker may wait for them when stopping.
        self._producer.close()
        del self._producer, self._admin


def _resolve_deliveries(reports: list[list]) -> None:
    """On the producer's loop: settle each `produce` with its message's partition and offset."""
    for future, error, raw, message in reports:
        if future.done():  # the producing task was cancelled
            continue
        if error is not None:
            too_large = error.code() in _TOO_LARGE
            future.set_exception(_too_large(message, error) if too_large else _kafka_error(error))
        else:
            kind, stamp = raw.timestamp()
            future.set_result(
                dataclasses.replace(
                    message,
                    partition=raw.partition(),
                    offset=raw.offset(),
                    timestamp_ms=stamp if kind != ck.TIMESTAMP_NOT_AVAILABLE else 0,
                )
            )


def _check_topic_name(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"invalid topic name {topic!r}: use 1 to 249 of A-Z a-z 0-9 . _ - (Kafka's rule)"
        )


def _check_offsets(offsets: dict[TopicPartition, int]) -> None:
    for tp, offset in offsets.items():
        if not isinstance(tp, TopicPartition):
            raise TypeError(f"commit keys must be TopicPartition, got {tp!r}")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset for {tp} must be a non-negative int, got {offset!r}")


def _log_client_error(error: ck.KafkaError) -> None:
    if error.fatal():
        log.error("Kafka client: %s", error.str())
    else:
        log.warning("Kafka client: %s", error.str())


class KafkaConsumer(Consumer):
    """A group member whose librdkafka handle is owned by one thread (see the module docstring)."""

    def __init__(
        self,
        client: ck.Consumer,
        group: str,
        topics: list[str],
        from_beginning: bool,
        join_points: dict[TopicPartition, int],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.group = group
        self._client = client
        self._topics = topics
        self._from_beginning = from_beginning
        self._join_points = join_points
        self._loop = loop
        self._buffer: collections.deque[Message] = collections.deque()
        self._lock = threading.Lock()  # guards the buffer between the owner thread and the loop
        self._ready = asyncio.Event()
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._cooperative = False
        self._paused = False
        self._failure: Exception | None = None
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._last_activity = 0.0
        self.joined: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._closing = False
        self._on_closed: Callable[[KafkaConsumer], None] = lambda _: None
        self._thread = threading.Thread(
            target=self._own, name=f"inferline-kafka-consumer-{group}", daemon=True
        )

    def __repr__(self) -> str:
        return f"KafkaConsumer(group={self.group!r}, topics={self._topics!r})"

    def start(self) -> None:
        self._thread.start()

    # --- the application's side (event loop) -------------------------------------------------

    async def poll(self, timeout: float, max_messages: int = 500) -> list[Message]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        deadline = self._loop.time() + timeout
        while True:
            self._ready.clear()  # before looking, so a wake-up after the look is not lost
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise BusClosedError(f"{self!r} is closed")
            with self._lock:
                taken = [
                    self._buffer.popleft() for _ in range(min(max_messages, len(self._buffer)))
                ]
            if taken:
                return taken
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                return []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        _check_offsets(offsets)
        if self._closing:
            raise BusClosedError(f"{self!r} is closed")
        if not offsets:
            return
        wanted = [ck.TopicPartition(tp.topic, tp.partition, at) for tp, at in offsets.items()]

        def commit(client: ck.Consumer) -> None:
            for tp in client.commit(offsets=wanted, asynchronous=False) or ():
                if tp.error is not None:
                    raise _kafka_error(tp.error)

        await self._run(commit)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    async def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._ready.set()  # wake pollers; they see the consumer closed
            self._commands.put(None)
        await asyncio.shield(self._closed)

    async def _run(self, command: Callable[[ck.Consumer], Any]) -> Any:
        """Run `command(handle)` on the owner thread, between two poll slices."""
        if self._closing:
            raise BusClosedError(f"{self!r} is closed")
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((command, done))
        return await asyncio.wrap_future(done, loop=self._loop)

    def _call_loop(self, callback: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(callback, *args)

    # --- the owner thread ----------------------------------------------------------------------

    def _own(self) -> None:
        client = self._client
        try:
            client.subscribe(
                self._topics,
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._revoked,
            )
            while self._serve_commands(client):
                self._apply_backpressure(client)
                hot = time.monotonic() - self._last_activity < _HOT_FOR
                batch = _drain(client, _HOT_SLICE if hot else _IDLE_SLICE)
                if batch:
                    self._take(batch)
        except Exception as exc:  # a fatal client error or a bug: surface it to the poller
            log.exception("Kafka consumer of group %r stopped", self.group)
            self._failure = exc
            self._call_loop(self._ready.set)
        finally:
            self._finish(client)

    def _serve_commands(self, client: ck.Consumer) -> bool:
        """Run the queued commands; False once asked to close."""
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                return False
            command, done = item
            self._last_activity = time.monotonic()
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(command(client))
            except Exception as exc:
                done.set_exception(exc)

    def _finish(self, client: ck.Consumer) -> None:
        try:
            client.close()  # leaves the group; commits nothing (auto-commit is off)
        except Exception:
            log.exception("closing the Kafka consumer of group %r", self.group)
        with self._lock:
            self._buffer.clear()
        self._assignment = frozenset()
        # Commands that raced with close get an answer rather than hanging.
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(BusClosedError(f"{self!r} is closed"))

        def closed() -> None:
            self._closing = True
            self._on_closed(self)
            self._ready.set()
            if not self.joined.done():
                self.joined.set_result(None)
            if not self._closed.done():
                self._closed.set_result(None)

        self._call_loop(closed)

    def _take(self, batch: list[ck.Message]) -> None:
        messages = []
        for raw in batch:
            error = raw.error()
            if error is None:
                messages.append(_to_message(raw))
            elif error.fatal():
                raise _kafka_error(error)
            elif error.code() != ck.KafkaError._PARTITION_EOF:
                log.warning("Kafka consumer of group %r: %s", self.group, error.str())
        if not messages:
            return
        self._last_activity = time.monotonic()
        with self._lock:
            was_empty = not self._buffer
            self._buffer.extend(messages)
        if was_empty:
            self._call_loop(self._ready.set)

    def _apply_backpressure(self, client: ck.Consumer) -> None:
        size = len(self._buffer)
        if not self._paused and size >= _BUFFER_HIGH and self._assignment:
            client.pause([ck.TopicPartition(tp.topic, tp.partition) for tp in self._assignment])
            self._paused = True
        elif self._paused and size <= _BUFFER_LOW:
            client.resume([ck.TopicPartition(tp.topic, tp.partition) for tp in self._assignment])
            self._paused = False

    def _start_offset(self, tp: TopicPartition, committed: int) -> int:
        if committed >= 0 or committed == ck.OFFSET_STORED:
            return committed
        if self._from_beginning:
            return ck.OFFSET_BEGINNING
        # A partition that did not exist at the join point holds only newer messages.
        return self._join_points.get(tp, ck.OFFSET_BEGINNING)

    def _assigned(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        try:
            committed = client.committed(partitions, timeout=_ADMIN_TIMEOUT)
        except ck.KafkaException as exc:
            # Let librdkafka resume from the committed offsets itself (auto.offset.reset
            # applies to partitions without one).
            log.warning("reading committed offsets of group %r: %s", self.group, exc)
            committed = [
                ck.TopicPartition(p.topic, p.partition, ck.OFFSET_STORED) for p in partitions
            ]
        starts, recorded = [], []
        for part in committed:
            tp = TopicPartition(part.topic, part.partition)
            at = self._start_offset(tp, part.offset)
            starts.append(ck.TopicPartition(part.topic, part.partition, at))
            if at >= 0 and part.offset < 0 and part.offset != ck.OFFSET_STORED:
                recorded.append(ck.TopicPartition(part.topic, part.partition, at))
        given = frozenset(TopicPartition(p.topic, p.partition) for p in partitions)
        if self._cooperative:
            client.incremental_assign(starts)
            self._assignment = self._assignment | given
            if self._paused:  # the buffer is still full: the new partitions wait too
                client.pause(partitions)
        else:
            client.assign(starts)
            self._assignment = given
            self._paused = False
        if recorded:
            try:
                client.commit(offsets=recorded, asynchronous=False)
            except ck.KafkaException as exc:
                log.warning("recording where group %r starts: %s", self.group, exc)
        self._last_activity = time.monotonic()
        self._call_loop(self._mark_joined)

    def _mark_joined(self) -> None:
        if not self.joined.done():
            self.joined.set_result(None)

    def _revoked(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        gone = frozenset(TopicPartition(p.topic, p.partition) for p in partitions)
        # Messages still buffered for these partitions belong to their next owner, who reads
        # them again from the group's committed offsets.
        with self._lock:
            kept = [m for m in self._buffer if m.topic_partition not in gone]
            self._buffer.clear()
            self._buffer.extend(kept)
        self._assignment = self._assignment - gone
        if self._paused:  # librdkafka keeps a partition's pause; its next assignment must not
            client.resume(partitions)
        if self._cooperative:
            client.incremental_unassign(partitions)
        else:
            client.unassign()
