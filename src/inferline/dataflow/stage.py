"""Runs one stage: reads its sources, joins per request key, writes what is ready to its sink.

Offsets are committed only below the oldest message still held in a join (or batch), and only
once everything written from the messages before it is acknowledged by the bus, so a restart
replays unfinished work; everything before it was either written on or dropped.

Writes are not awaited one by one: the messages of one poll are all handled, their writes handed
to the bus in order, and then acknowledged together. On Kafka each acknowledgement is a broker
round trip (0.5-3 ms), so awaiting each write capped a stage at a few hundred messages a second.
A write that fails makes the stage read again from its last commit (after a pause), so the
messages whose output was not written are delivered again; only a message larger than the bus
takes, which would fail for ever, ends its request with an error instead.
"""

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from inferline import tracing
from inferline.bus.base import Bus, Message, MessageTooLarge, TopicPartition
from inferline.dataflow import messages
from inferline.dataflow.batching import (
    BATCH_HEADER,
    Batcher,
    BatchItem,
    batch_members,
    split_rows,
)
from inferline.dataflow.joins import Emission, JoinBuffer, Part
from inferline.dataflow.plan import Source, Stage
from inferline.dataflow.topics import (
    ERROR_HEADER,
    PIPELINE_HEADER,
    PIPELINE_VERSION_HEADER,
    TopicNames,
    key_partition,
    propagated_headers,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
# Offsets are committed when the stage is idle, else at most this often: a commit per message
# was a third of the bus writes of a one-step pipeline. A crash replays at most this much
# (at-least-once either way; Kafka Streams, which Seldon's dataflow runs on, commits every
# 100 ms under exactly-once and every 30 s otherwise).
COMMIT_SECONDS = 0.1
# How many recent requests the cycle guard counts visits for.
REVISIT_KEYS = 10_000
# After a failed write, the pause before reading again from the last commit (doubling up to max).
RETRY_MIN_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0


class WriteFailed(Exception):
    """A write of this stage was not acknowledged by the bus."""


@dataclass(slots=True)
class _Data:
    """A source's message after decoding and tensor filtering; on a relaying stage, instead,
    the value it writes on (`relayed`, with `message` None)."""

    message: messages.TensorMessage | None
    headers: tuple[tuple[str, bytes], ...]
    relayed: bytes | None = None


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        version: int,
        bus: Bus,
        topics: TopicNames,
        group: str,
        on_seen=None,
    ):
        self.stage = stage
        self.version = version
        self.bus = bus
        self.topics = topics
        self.group = group
        # Told of every source message by key, so a timed-out caller can hear what answered.
        self.on_seen = on_seen
        # One input, nothing to join or batch: each message is written on as built from its
        # protobuf, tensors never converted (see `messages.relay`).
        self._relays = len(stage.inputs) == 1 and not stage.triggers and not stage.batch_size
        self.ready = asyncio.Event()
        self._partitions: dict[str, int] = {}
        self._start_over()

    def _start_over(self) -> None:
        """The state of a stage that reads from its group's committed offsets."""
        stage = self.stage
        self.buffer = JoinBuffer(
            len(stage.inputs),
            stage.inputs_join,
            len(stage.triggers),
            stage.triggers_join,
            stage.window_ms,
        )
        self.batcher = (
            Batcher(stage.batch_size, stage.batch_window_ms) if stage.batch_size else None
        )
        self._visits: OrderedDict[bytes, int] = OrderedDict()
        self._pending_errors: list[tuple[bytes, str, list]] = []
        self._writes: list[asyncio.Future] = []  # handed to the bus, not yet acknowledged
        self._handled: list[Message] = []  # read, their writes not yet acknowledged
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            try:
                await self._read()
                return
            except WriteFailed as exc:
                log.warning(
                    "%s: %s; reading again from the last commit in %.1f s",
                    self.stage.name, exc, delay,
                )  # fmt: skip
            self._start_over()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _read(self) -> None:
        consumer = await self.bus.consumer(
            self.group, sorted(self.stage.topics), read_unacknowledged=True
        )
        next_commit = 0.0
        failed = False
        try:
            while True:
                messages_ = await consumer.poll(self._poll_timeout())
                if consumer.assignment():
                    self.ready.set()
                for message in messages_:
                    await self._handle(message)
                    self._handled.append(message)
                emitted, dropped = self.buffer.expire()
                for emission in emitted:
                    await self._emit(emission)
                for key, parts in dropped:
                    await self._timed_out(key, parts)
                if self.batcher is not None:
                    for batch in self.batcher.expire():
                        await self._write(batch.key, batch.message, batch.headers)
                await self._write_errors()
                await self._acknowledged()
                now = time.monotonic()
                if not messages_ or now >= next_commit:
                    await self._commit(consumer)
                    next_commit = now + COMMIT_SECONDS
        except WriteFailed:
            # Commit nothing more: the next reader starts at the last commit (the bus records
            # where the group started as soon as it joins, so there always is one).
            failed = True
            raise
        finally:
            # Stopping: record what was written on, so a restart does not write it again.
            if not failed:
                with contextlib.suppress(Exception):
                    await self._commit(consumer)
            await consumer.close()

    def _poll_timeout(self) -> float:
        deadlines = [self.buffer.next_deadline()]
        if self.batcher is not None:
            deadlines.append(self.batcher.deadline())
        deadline = min((d for d in deadlines if d is not None), default=None)
        if deadline is None:
            return POLL_SECONDS
        return max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))

    # --- reading ------------------------------------------------------------------------------

    async def _handle(self, message: Message) -> None:
        if tracing.ENABLED:
            attributes = {
                "inferline.stage": self.stage.name,
                "messaging.destination.name": message.topic,
                "x-request-id": (message.header("x-request-id") or b"").decode(),
            }
            with tracing.span("dataflow.stage", "consumer", message.headers, attributes):
                await self._handle_message(message)
        else:
            await self._handle_message(message)

    async def _handle_message(self, message: Message) -> None:
        pipeline = message.header(PIPELINE_HEADER)
        if self.stage.forward_errors:
            if pipeline == self.stage.pipeline.encode():
                for key, headers in self._members(message):
                    await self._forward_error(key, headers, message.value)
            return
        position = (message.topic_partition, message.offset)
        for trigger, sources in ((False, self.stage.inputs), (True, self.stage.triggers)):
            for index, source in enumerate(sources):
                if source.topic != message.topic or pipeline != source.pipeline.encode():
                    continue
                data = self._decode(message, source)
                if data is None:
                    continue
                for key, piece in self._pieces(message, data):
                    if self.on_seen is not None:
                        self.on_seen(key, source)
                    for emission in self.buffer.add(key, Part(index, trigger, piece, position)):
                        await self._emit(emission)

    def _members(self, message: Message) -> list[tuple[bytes, tuple[tuple[str, bytes], ...]]]:
        """The requests a message stands for: itself, or each member of a batch."""
        header = message.header(BATCH_HEADER)
        if header is None:
            return [(message.key or b"", message.headers)]
        return [
            (key, _member_headers(message.headers, request_id))
            for key, _, request_id in batch_members(header)
        ]

    def _pieces(self, message: Message, data: _Data) -> list[tuple[bytes, _Data]]:
        header = message.header(BATCH_HEADER)
        if header is None:
            return [(message.key or b"", data)]
        members = batch_members(header)
        split = split_rows(data.message, [rows for _, rows, _ in members])
        if split is None:
            # Not answered row by row: it goes on whole, under the batch's (last) key.
            return [(message.key or b"", data)]
        return [
            (key, _Data(piece, _member_headers(message.headers, request_id)))
            for (key, _, request_id), piece in zip(members, split, strict=True)
        ]

    def _decode(self, message: Message, source: Source) -> _Data | None:
        try:
            if self._relays and message.header(BATCH_HEADER) is None:
                stage = self.stage
                value = messages.relay(
                    messages.parse(message.value, source.payload),
                    source,
                    stage.tensor_map,
                    stage.sink_payload,
                    stage.sink_model,
                )
                return None if value is None else _Data(None, message.headers, value)
            decoded = messages.decode(message.value, source.payload)
        except Exception as exc:  # a bad message must not stop the stage
            log.warning(
                "%s: skipping undecodable message %s@%d on %s: %s",
                self.stage.name, message.key, message.offset, message.topic, exc,
            )  # fmt: skip
            return None
        if source.tensors is not None:
            decoded.tensors = [t for t in decoded.tensors if t.name in source.tensors]
            if not decoded.tensors:
                return None  # conditional routing: none of the wanted tensors, no message
        return _Data(decoded, message.headers)

    # --- writing ------------------------------------------------------------------------------

    async def _emit(self, emission: Emission) -> None:
        stage = self.stage
        first: _Data = emission.parts[0].payload
        if first.relayed is not None:
            headers = self._headers([first.headers])
            if stage.max_revisits is None or not self._revisited(emission.key, headers):
                await self._produce(stage.sink_topic, emission.key, first.relayed, headers)
            return
        tensors = []
        for part in emission.parts:
            source = stage.inputs[part.source]
            for tensor in part.payload.message.tensors:
                renamed = stage.tensor_map.get(f"{source.reference}.{tensor.name}")
                if renamed is not None:
                    tensor = type(tensor)(
                        renamed, tensor.datatype, tensor.shape, tensor.data, tensor.parameters
                    )
                tensors.append(tensor)
        out = messages.TensorMessage(tensors, first.message.id, first.message.parameters)
        headers = self._headers([part.payload.headers for part in emission.parts])
        if stage.max_revisits is not None and self._revisited(emission.key, headers):
            return
        if self.batcher is not None:
            positions = [part.position for part in emission.parts]
            for batch in self.batcher.add(BatchItem(emission.key, out, headers, positions)):
                await self._write(batch.key, batch.message, batch.headers)
            return
        await self._write(emission.key, out, headers)

    async def _write(self, key: bytes, message: messages.TensorMessage, headers) -> None:
        value = messages.encode(message, self.stage.sink_payload, self.stage.sink_model)
        await self._produce(self.stage.sink_topic, key, value, headers)

    def _revisited(self, key: bytes, headers) -> bool:
        """Cycle guard: count entries per request; past maxStepRevisits the request ends in an
        error instead of going round again."""
        visits = self._visits.get(key, 0) + 1
        self._visits[key] = visits
        self._visits.move_to_end(key)
        while len(self._visits) > REVISIT_KEYS:
            self._visits.popitem(last=False)
        if visits <= self.stage.max_revisits + 1:
            return False
        text = (
            f"ERROR: request entered {self.stage.name} more than "
            f"{self.stage.max_revisits + 1} times (maxStepRevisits {self.stage.max_revisits})"
        )
        self._pending_errors.append((key, text, headers))
        return True

    def _headers(self, header_sets) -> list[tuple[str, bytes]]:
        merged: dict[str, bytes] = {}
        for headers in header_sets:
            for name, value in propagated_headers(headers):
                merged.setdefault(name, value)
        headers = [
            (PIPELINE_HEADER, self.stage.pipeline.encode()),
            (PIPELINE_VERSION_HEADER, str(self.version).encode()),
            *merged.items(),
        ]
        if tracing.ENABLED:
            # Outside a span (a join emitted at its window's close) the first part's trace
            # context goes on; inside one, the span's replaces it.
            first = next(iter(header_sets), ())
            headers += [(k, v) for k, v in first if k in tracing.CONTEXT_HEADERS]
            headers = tracing.bus_headers(headers)
        return headers

    async def _forward_error(self, key: bytes, headers, value: bytes) -> None:
        headers = [
            (name, value)
            for name, value in headers
            if name not in (PIPELINE_HEADER, PIPELINE_VERSION_HEADER, BATCH_HEADER)
        ]
        headers = [
            (PIPELINE_HEADER, self.stage.pipeline.encode()),
            (PIPELINE_VERSION_HEADER, str(self.version).encode()),
            *headers,
        ]
        await self._produce(self.stage.sink_topic, key, value, headers)

    async def _timed_out(self, key: bytes, parts: list[Part]) -> None:
        """A join whose window closed without a data partner: the request ends with an error
        naming what never came, so a waiting caller hears at once. Data held only for want of
        a trigger is dropped quietly (an unfired trigger is how a pipeline chooses a path),
        unless the pipeline's answer cannot be made without this step."""
        inputs, triggers = self.buffer_missing_from(parts)
        if not inputs and not self.stage.required:
            log.debug("%s: request %s dropped, trigger(s) did not fire", self.stage.name, key)
            return
        missing = [s.waits_on for s in inputs] + [f"trigger {s.waits_on}" for s in triggers]
        text = (
            f"{self.stage.name}: join window of {self.stage.window_ms} ms closed without "
            f"{', '.join(missing)}"
        )
        log.info("%s for request %s", text, key)
        self._pending_errors.append((key, text, self._headers([p.payload.headers for p in parts])))

    async def _write_errors(self) -> None:
        """Requests that end here in an error: the pipeline's errors stage tells the caller."""
        errors, self._pending_errors = self._pending_errors, []
        for key, text, headers in errors:
            headers = [*headers, (ERROR_HEADER, self.stage.pipeline.encode())]
            await self._produce(self.topics.errors, key, text.encode(), headers)

    def buffer_missing_from(self, parts: list[Part]) -> tuple[list[Source], list[Source]]:
        data = {p.source for p in parts if not p.trigger}
        triggers = {p.source for p in parts if p.trigger}
        return (
            [s for i, s in enumerate(self.stage.inputs) if i not in data],
            [s for i, s in enumerate(self.stage.triggers) if i not in triggers],
        )

    async def _produce(self, topic: str, key: bytes | None, value: bytes, headers) -> None:
        """Hand a message to the bus; `_acknowledged` waits for it. The tasks start in the order
        they are made and a bus takes a message in the first step of `produce`, so a stage's
        writes keep the order of its reads."""
        partition = await self._partition(topic, key)
        self._writes.append(
            asyncio.ensure_future(self._deliver(topic, key, value, headers, partition))
        )

    async def _deliver(self, topic: str, key: bytes | None, value: bytes, headers, partition):
        try:
            return await self.bus.produce(
                topic, value, key=key, headers=headers, partition=partition
            )
        except MessageTooLarge as exc:
            if topic == self.topics.errors:
                raise
            # Written again it would fail again, and the stage would read the same message
            # for ever while everything behind it waits: the request ends here instead.
            text = f"{self.stage.name}: cannot pass the request on: {exc}"
            log.warning("%s (request %s)", text, key)
            headers = [*headers, (ERROR_HEADER, self.stage.pipeline.encode())]
            errors = self.topics.errors
            return await self.bus.produce(
                errors, text.encode(), key=key, headers=headers,
                partition=await self._partition(errors, key),
            )  # fmt: skip

    async def _partition(self, topic: str, key: bytes | None) -> int | None:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = (await self.bus.topics()).get(topic, 1)
        return key_partition(key, partitions)

    async def _acknowledged(self) -> None:
        """Wait until the bus has acknowledged every write handed to it, then count the messages
        read before them done; WriteFailed if a write was not acknowledged."""
        writes = self._writes
        if writes:
            # Unlike gather, wait leaves the writes running if this task is cancelled (stopping),
            # so the last commit can still wait for them.
            await asyncio.wait(writes)
            self._writes = []
            failures = [
                "cancelled" if w.cancelled() else w.exception()
                for w in writes
                if w.cancelled() or w.exception()
            ]
            if failures:
                raise WriteFailed(
                    f"{len(failures)} of {len(writes)} writes not acknowledged: {failures[0]!r}"
                )
        for message in self._handled:
            self._done[message.topic_partition] = message.offset + 1
        self._handled = []

    async def _commit(self, consumer) -> None:
        # First the writes still out: a join emitted at its window's close no longer holds its
        # parts' offsets back, so committing before its write is acknowledged could lose it.
        await self._acknowledged()
        held: dict[TopicPartition, int] = {}
        batched = self.batcher.held_positions() if self.batcher is not None else []
        for tp, offset in [*self.buffer.held_positions(), *batched]:
            held[tp] = min(offset, held.get(tp, offset))
        offsets = {}
        for tp, done in self._done.items():
            offset = min(done, held.get(tp, done))
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        if offsets:
            await consumer.commit(offsets)
            self._committed.update(offsets)


def _member_headers(headers, request_id: str) -> tuple[tuple[str, bytes], ...]:
    """A batch member's headers: the batch's, less the batch list, with its own request id."""
    kept = [(k, v) for k, v in headers if k not in (BATCH_HEADER, "x-request-id")]
    if request_id:
        kept.append(("x-request-id", request_id.encode()))
    return tuple(kept)
