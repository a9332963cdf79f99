"""The embedded bus: in-process, asyncio, durable on local disk in one SQLite database.

The default back end of `inferline up`. Semantics follow `inferline.bus.base` (Kafka's), with
the choices below written down where Kafka leaves room.

Storage. `<path>/bus.sqlite3` holds topics, messages (primary key topic, partition, offset) and
committed offsets, in WAL mode. A message is acknowledged (`produce` returns) once its
transaction has committed. With `fsync=False` (the default, `synchronous=NORMAL`) an
acknowledged message survives the process dying in any way, but not an OS crash or power loss:
the WAL is in the OS page cache until the next checkpoint. `fsync=True` (`synchronous=FULL`)
syncs the WAL on every commit and survives those too, at about a millisecond or more per
transaction on ordinary disks. One bus at a time owns a folder (an advisory lock on
`<path>/bus.lock`, released by the OS if the process dies); a second opener gets an error.

Group commit. `produce` and `commit` queue their writes and wait; one callback, scheduled
for the end of the current loop iteration, writes everything queued as one transaction (at
most `max_batch` messages; the rest go in the next). So 100 concurrent produces cost one
commit, and a lone produce still returns after a single loop iteration (a few when it wakes a
member reading unacknowledged messages: see Reading). A write that fails (disk full, I/O
error) is tried again, first in the queue, from 50 ms doubling to every 2 s, until it goes
in; its producers wait meanwhile (and on `close`, get the error).

Reading. A message is given its offset when it is queued. Members read it once it is
acknowledged, or, made with `read_unacknowledged` (pipeline steps and model gateways), as soon
as it is queued: everything they write in answer is queued after it, so is never on disk
without it. When a produce wakes such a member the write waits three more loop iterations, so
that its answer joins the same transaction (a 1-step pipeline call commits twice instead of four
times) and a model call the answer leads to is sent before the commit, which then overlaps the
model's work. The newest messages of each partition (every queued one, and at most 64 and
256 KB of written ones) stay in memory, so a member that keeps up reads them without a query
and without decoding rows; anything older comes from the database. Measured on a 1-step
pipeline call against the commit before each (`inferline up`, alternating calls): reading from
memory cut 0.3-0.4 ms of CPU and latency, the shared transactions 0.15-0.3 ms more, and the
commit overlapping the model call 0.2-0.4 ms more (`benchmarks/pipeline_versions.py`).

Threads. Every SQLite call except WAL checkpoints runs on the event loop thread: each is
short (a batch insert, a bounded read). WAL checkpoints copy the log into the database file
and fsync it, which costs tens of milliseconds on a slow disk, so they run in a worker thread
on their own connection, every 4 MB written (instead of SQLite's automatic checkpoint inside
a commit on the loop: measured p99 produce latency 27 ms -> 10 ms and +25% throughput under
100 concurrent producers). A sustained write load never lets a checkpoint catch up, so SQLite
could never restart the WAL: past 128 MB of WAL the writer holds new batches until one
checkpoint has finished (producers wait ~0.1 s, the loop does not), then the WAL restarts.

Partitions. A message goes to the partition asked for (ValueError if out of range), else
`crc32(key) % partitions` (the same as librdkafka's default `consistent_random` partitioner),
else (no key or an empty key) round robin. Producing to a missing topic creates it with
`default_partitions`. Offsets are contiguous per partition and never reused: retention never
removes a partition's newest message, so the next offset survives restarts.

Consumer groups. Members of a group split the partitions of the topics they subscribe to with
Kafka's range assignor, in join order. Joining, leaving (`Consumer.close`), creating or
deleting a subscribed topic rebalances the group at once (no join delay). A partition that
moves to a member starts at the group's committed offset; with none, at the first kept message
with `from_beginning`, else where the log ended when that member joined (its "join point", as
the Kafka back end does: nothing written after `consumer()` returns is skipped, even in a
partition the member takes over later; a partition created after the join starts at its
beginning). The join point of a partition the group has no committed offset for is committed
for the group at once, as Kafka's auto-commit records a new member's position: a member that
restarts before it has read anything resumes there, not at the new end, so what was written
while it was down is read. A partition a member keeps through a rebalance keeps that member's
position (like Kafka's cooperative protocol; eager Kafka rewinds it to the committed offset, so
callers must tolerate both). Each member reads every message of its partitions once, in offset
order, between rebalances; `commit` only records offsets for the group. A consumer subscribed to
a topic that does not exist yet gets its partitions when the topic is created, before any
message is written there, so it sees the first messages even without `from_beginning`.

Retention. With `retention_messages` (default 100,000 per partition: ~100 MB of 1 KB messages,
enough to inspect, small enough for a laptop with dozens of topics) a partition is trimmed
back to that many messages when it exceeds it by 1% (at most 1,000): trimming happens in the
same transaction as the writes that overflow it. With `retention_ms`, messages older than that
are dropped, checked on produce at most every `retention_ms / 10` (between 10 ms and 60 s) and
on open, so an idle bus keeps its last messages until something is produced. Both keep the
newest message of every partition. A consumer whose position or committed offset has been
trimmed resumes at the first kept message (Kafka would apply its reset policy). The database
file reuses freed pages but does not shrink.
"""

import asyncio
import contextlib
import logging
import os
import re
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from inferline.bus._assignment import range_assignment
from inferline.bus._sqlite_log import MessageRow, SqliteLog, encode_headers
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

try:
    import fcntl
except ImportError:  # Windows: no folder lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["BusClosedError", "BusWriteError", "EmbeddedBus", "EmbeddedConsumer"]

logger = logging.getLogger(__name__)

# Kafka's rule, so that a name that works here works on Kafka too.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# A background WAL checkpoint after this many bytes written (SQLite's own default is ~4 MB).
_CHECKPOINT_BYTES = 4 << 20
# Past this WAL size the background checkpoints are not keeping up (see `_checkpoint_soon`).
_WAL_LIMIT_BYTES = 128 << 20
# Loop iterations a write waits after its produce woke a member reading unacknowledged messages:
# a pipeline step reads in the first, queues its answer from a task in the second; the model
# gateway reads that in the third and sends the model call from a task in the fourth.
_READER_TURNS = 3
# A failed write is tried again after this, doubling up to the maximum.
_RETRY_FIRST_SECONDS = 0.05
_RETRY_MAX_SECONDS = 2.0
# The newest messages of each partition stay in memory after their write, up to these bounds
# (values' bytes), so that a consumer keeping up reads them without a query.
_RECENT_MESSAGES = 64
_RECENT_BYTES = 256 << 10


@dataclass(slots=True)
class _PendingMessage:
    message: Message  # its offset is given when it is queued
    future: "asyncio.Future[Message]"


@dataclass(slots=True)
class _PartitionState:
    start: int  # first kept offset
    end: int  # next offset to give a message (queued ones included)
    written: int  # next offset not yet in the database (end, unless messages are queued)
    # The last messages since open, offsets end - len(recent) .. end - 1: every queued one,
    # and some written ones.
    recent: list[Message] = field(default_factory=list)
    recent_bytes: int = 0

    def queue(self, message: Message) -> None:
        self.end += 1
        self.recent.append(message)
        self.recent_bytes += len(message.value)

    def mark_written(self, end: int) -> None:
        """Offsets below `end` are in the database: keep only the newest of them in memory."""
        self.written = end
        recent = self.recent
        drop, first = 0, self.end - len(recent)
        while first + drop < end and (
            len(recent) - drop > _RECENT_MESSAGES or self.recent_bytes > _RECENT_BYTES
        ):
            self.recent_bytes -= len(recent[drop].value)
            drop += 1
        del recent[:drop]

    def read(self, log: SqliteLog, tp: TopicPartition, start: int, limit: int) -> list[Message]:
        """Up to `limit` messages from offset `start`: from memory when they are among the
        recent ones (a consumer keeping up), else from the database."""
        first_recent = self.end - len(self.recent)
        if start >= first_recent:
            return self.recent[start - first_recent : start - first_recent + limit]
        return log.read(tp.topic, tp.partition, start, limit)


class _Group:
    __slots__ = ("committed", "members", "name")

    def __init__(self, name: str, committed: dict[TopicPartition, int]):
        self.name = name
        self.members: dict[int, EmbeddedConsumer] = {}
        self.committed = committed


class EmbeddedBus(Bus):
    """See the module docstring. Use from one event loop; the constructor opens the database
    (and may run outside a loop)."""

    def __init__(
        self,
        path: Path | str,
        default_partitions: int = 1,
        *,
        fsync: bool = False,
        retention_messages: int | None = 100_000,
        retention_ms: int | None = None,
        max_batch: int = 1000,
    ):
        if default_partitions < 1:
            raise ValueError(f"default_partitions must be at least 1, got {default_partitions}")
        if retention_messages is not None and retention_messages < 1:
            raise ValueError(f"retention_messages must be at least 1, got {retention_messages}")
        if retention_ms is not None and retention_ms < 1:
            raise ValueError(f"retention_ms must be at least 1, got {retention_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.path = Path(path)
        self.default_partitions = default_partitions
        self.retention_messages = retention_messages
        self.retention_ms = retention_ms
        self._max_batch = max_batch
        self._trim_slack = max(1, min((retention_messages or 0) // 100, 1000))
        self._retention_interval_ms = (
            min(max(retention_ms // 10, 10), 60_000) if retention_ms is not None else 0
        )
        self._closed = False

        self._topics: dict[str, int] = {}
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._round_robin: dict[str, int] = {}

        self._pending: list[_PendingMessage] = []
        self._pending_commits: dict[tuple[str, TopicPartition], int] = {}
        self._commit_futures: list[asyncio.Future[None]] = []
        self._flush_scheduled = False
        self._turns_to_wait = 0

        self._groups: dict[str, _Group] = {}
        self._subscribers: dict[str, set[EmbeddedConsumer]] = {}
        self._next_member_id = 0

        self._next_time_trim_ms = 0
        self._unchecked_bytes = 0
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._hold_writes = False
        self._closing = False
        self._write_failures = 0  # in a row
        self._last_error: Exception | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._stats = {"transactions": 0, "messages": 0, "checkpoints": 0, "held_writes": 0}

        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_folder(self.path)
        try:
            self._log = SqliteLog(self.path / "bus.sqlite3", fsync=fsync)
        except BaseException:
            self._lock_file.close()
            raise
        try:
            for topic, count in self._log.topics().items():
                self._add_topic(topic, count)
            self._trim_by_time()
        except BaseException:
            self._log.close()
            self._lock_file.close()
            raise

    def __repr__(self) -> str:
        return f"EmbeddedBus({str(self.path)!r})"

    def stats(self) -> dict[str, int]:
        """Counters since open: write transactions, messages written, WAL checkpoints, and
        times writes were held for a checkpoint to catch up (see `_checkpoint_soon`)."""
        return dict(self._stats)

    # --- topics ---------------------------------------------------------------------------------

    async def create_topic(self, topic: str, partitions: int | None = None) -> None:
        self._check_open()
        self._ensure_topic(topic, partitions)

    async def delete_topic(self, topic: str) -> None:
        """Drop the topic, its messages and every group's offsets for it. A no-op if missing."""
        self._check_open()
        if topic not in self._topics:
            return
        self._flush_now()  # queued messages for it were acknowledged as written: write them first
        self._log.delete_topic(topic)
        count = self._topics.pop(topic)
        for partition in range(count):
            del self._partitions[TopicPartition(topic, partition)]
        self._round_robin.pop(topic, None)
        for group in self._groups.values():
            for tp in [tp for tp in group.committed if tp.topic == topic]:
                del group.committed[tp]
            for member in group.members.values():
                for tp in [tp for tp in member.join_points if tp.topic == topic]:
                    del member.join_points[tp]
        self._rebalance_subscribers(topic)

    async def topics(self) -> dict[str, int]:
        self._check_open()
        return dict(sorted(self._topics.items()))

    # --- producing ------------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Message:
        self._check_open()
        value = as_bytes(value, "value")
        if key is not None:
            key = as_bytes(key, "key")
        headers = as_headers(headers)
        size = message_size(key, value, headers)
        if size > self._log.max_row_bytes:
            # Refused now: once queued it has an offset, and a write SQLite can never take
            # would hold every write behind it (failed writes are tried again).
            raise MessageTooLarge(
                f"a message of {size} bytes is more than the embedded bus stores in one "
                f"message ({self._log.max_row_bytes} bytes)"
            )
        count = self._ensure_topic(topic, None)
        if partition is None:
            if key:
                partition = zlib.crc32(key) % count
            else:
                partition = self._round_robin.get(topic, 0) % count
                self._round_robin[topic] = partition + 1
        elif not isinstance(partition, int) or not 0 <= partition < count:
            raise ValueError(
                f"partition {partition!r} out of range for topic {topic!r} "
                f"with {count} partition(s) (0..{count - 1})"
            )
        state = self._partitions[TopicPartition(topic, partition)]
        message = Message(
            topic, partition, state.end, key, value, headers, time.time_ns() // 1_000_000
        )
        state.queue(message)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingMessage(message, future))
        woken = False
        for member in self._subscribers.get(topic, ()):
            if member.read_unacknowledged:
                member._wake()
                woken = True
        self._schedule_flush(after_readers=woken)
        return await future

    # --- consuming ------------------------------------------------------------------------------

    async def consumer(
        self,
        group: str,
        topics: list[str],
        from_beginning: bool = False,
        read_unacknowledged: bool = False,
    ) -> "EmbeddedConsumer":
        self._check_open()
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        if isinstance(topics, str) or not topics:
            raise ValueError(f"topics must be a non-empty list of topic names, got {topics!r}")
        for topic in topics:
            _check_topic_name(topic)
        state = self._groups.get(group)
        if state is None:
            committed = {
                TopicPartition(topic, partition): offset
                for (topic, partition), offset in self._log.committed(group).items()
            }
            state = self._groups[group] = _Group(group, committed)
        self._next_member_id += 1
        member = EmbeddedConsumer(
            self,
            state,
            self._next_member_id,
            tuple(dict.fromkeys(topics)),
            from_beginning,
            read_unacknowledged,
        )
        if not from_beginning:
            member.join_points = {
                tp: self._partitions[tp].written
                for topic in member.topics
                for tp in (TopicPartition(topic, p) for p in range(self._topics.get(topic, 0)))
            }
            start = {tp: at for tp, at in member.join_points.items() if tp not in state.committed}
            if start:
                state.committed.update(start)
                await self._enqueue_commit(group, start)
        state.members[member.member_id] = member
        for topic in member.topics:
            self._subscribers.setdefault(topic, set()).add(member)
        self._rebalance(state)
        return member

    async def committed(self, group: str, topics: list[str]) -> dict[TopicPartition, int]:
        self._check_open()
        state = self._groups.get(group)
        if state is not None:
            offsets = dict(state.committed)
        else:
            offsets = {TopicPartition(t, p): o for (t, p), o in self._log.committed(group).items()}
        wanted = set(topics)
        return {tp: offset for tp, offset in offsets.items() if tp.topic in wanted}

    async def commit_group(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        self._check_open()
        if not offsets:
            return
        state = self._groups.get(group)
        if state is not None:
            state.committed.update(offsets)
        await self._enqueue_commit(group, offsets)

    async def read_last(self, topic: str, count: int) -> list[Message]:
        """The last `count` messages of each partition, oldest first, partition by partition;
        [] for a missing topic. Messages still queued for writing are not included."""
        self._check_open()
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        partitions = self._topics.get(topic, 0)
        if count == 0:
            return []
        messages: list[Message] = []
        for partition in range(partitions):
            messages += self._log.read_last(topic, partition, count)
        return messages

    # --- closing --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Write what is queued, close every consumer (a waiting `poll` raises BusClosedError),
        close the database. Idempotent."""
        if self._closed:
            return
        self._closing = True  # a write that fails now fails its producers: no retry
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        try:
            self._flush_now()
        finally:
            self._closed = True
            for group in self._groups.values():
                for member in list(group.members.values()):
                    member._shut()
            self._groups.clear()
            self._subscribers.clear()
            if self._checkpoint_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._checkpoint_task)
            self._log.close()
            self._lock_file.close()

    # --- internals: topics ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError(f"the embedded bus at {self.path} is closed")

    def _ensure_topic(self, topic: str, partitions: int | None) -> int:
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise ValueError(
                f"partitions must be at least 1 for topic {topic!r}, got {partitions!r}"
            )
        existing = self._topics.get(topic)
        if existing is not None:
            return existing
        _check_topic_name(topic)
        if partitions is None:
            partitions = self.default_partitions
        self._log.create_topic(topic, partitions)
        self._add_topic(topic, partitions)
        self._rebalance_subscribers(topic)
        return partitions

    def _add_topic(self, topic: str, partitions: int) -> None:
        self._topics[topic] = partitions
        for partition in range(partitions):
            start, end = self._log.bounds(topic, partition)
            self._partitions[TopicPartition(topic, partition)] = _PartitionState(start, end, end)

    # --- internals: writing ---------------------------------------------------------------------

    def _schedule_flush(self, after_readers: bool = False) -> None:
        """Write what is queued at the end of this loop iteration, or, `after_readers`, a few
        iterations later (`_READER_TURNS`): the members just woken to read queued messages run
        first, so what they write in answer joins the same transaction, and a model call they
        lead to is on its way before the commit, which then overlaps the model's work."""
        if self._flush_scheduled:
            return
        self._flush_scheduled = True
        self._turns_to_wait = _READER_TURNS if after_readers else 0
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """The scheduled writer: one transaction, then again next iteration if more is queued."""
        if self._turns_to_wait:
            self._turns_to_wait -= 1
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._flush_scheduled = False
        if self._closed or self._hold_writes or self._retry_handle is not None:
            return  # the checkpoint that holds writes, or the retry, schedules a flush later
        if self._write_batch() and (self._pending or self._pending_commits):
            self._schedule_flush()

    def _flush_now(self) -> None:
        while self._pending or self._pending_commits:
            if not self._write_batch():
                raise BusWriteError(
                    f"the embedded bus at {self.path} cannot write ({self._last_error!r}); "
                    "it tries again in the background"
                )

    def _write_batch(self) -> bool:
        """Write the next batch as one transaction; False if that failed (it is tried again
        later, unless the bus is closing)."""
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        commits, self._pending_commits = self._pending_commits, {}
        commit_futures, self._commit_futures = self._commit_futures, []
        if not batch and not commits:
            return True

        ends: dict[TopicPartition, int] = {}
        rows: list[MessageRow] = []
        written = 0
        for item in batch:
            m = item.message
            ends[TopicPartition(m.topic, m.partition)] = m.offset + 1
            rows.append(
                (
                    m.topic,
                    m.partition,
                    m.offset,
                    m.timestamp_ms,
                    m.key,
                    encode_headers(m.headers),
                    m.value,
                )
            )
            written += len(m.value)
        trims: list[tuple[str, int, int]] = []
        starts: dict[TopicPartition, int] = {}
        if self.retention_messages is not None:
            for tp, end in ends.items():
                if end - self._partitions[tp].start > self.retention_messages + self._trim_slack:
                    starts[tp] = end - self.retention_messages
                    trims.append((tp.topic, tp.partition, starts[tp]))
        try:
            self._log.write(
                rows,
                [
                    (group, tp.topic, tp.partition, offset)
                    for (group, tp), offset in commits.items()
                ],
                trims,
            )
        except Exception as error:
            if self._closing:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                for future in commit_futures:
                    if not future.done():
                        future.set_exception(error)
                return True
            # Members reading unacknowledged messages may have read these, and their offsets
            # are given: the batch goes back first in the queue and is written again until it
            # goes in (as a Kafka producer retries); its producers wait.
            self._pending[:0] = batch
            for key, offset in commits.items():
                self._pending_commits.setdefault(key, offset)
            self._commit_futures[:0] = commit_futures
            self._retry_write(error)
            return False
        self._write_failures = 0

        self._stats["transactions"] += 1
        self._stats["messages"] += len(rows)
        for item in batch:
            if not item.future.done():
                item.future.set_result(item.message)
        for tp, end in ends.items():
            self._partitions[tp].mark_written(end)
        for tp, start in starts.items():
            self._partitions[tp].start = start
        for future in commit_futures:
            if not future.done():
                future.set_result(None)
        for topic in {tp.topic for tp in ends}:
            for member in self._subscribers.get(topic, ()):
                if not member.read_unacknowledged:
                    member._wake()
        if self.retention_ms is not None:
            self._trim_by_time()
        # What the WAL grew by, roughly: the rows, plus the pages every commit rewrites whole.
        self._unchecked_bytes += written + 64 * len(rows) + 8192
        if self._unchecked_bytes >= _CHECKPOINT_BYTES:
            self._checkpoint_soon()
        return True

    def _retry_write(self, error: Exception) -> None:
        self._write_failures += 1
        self._last_error = error
        if self._retry_handle is not None:
            return
        delay = min(_RETRY_FIRST_SECONDS * 2 ** (self._write_failures - 1), _RETRY_MAX_SECONDS)
        if self._write_failures == 1:
            logger.error("writing to %s failed (%r); trying again", self._log.file, error)
        self._retry_handle = asyncio.get_running_loop().call_later(delay, self._retry)

    def _retry(self) -> None:
        self._retry_handle = None
        if not self._closed and self._write_batch():
            logger.info("writing to %s works again", self._log.file)
            if self._pending or self._pending_commits:
                self._schedule_flush()

    def _enqueue_commit(
        self, group: str, offsets: dict[TopicPartition, int]
    ) -> "asyncio.Future[None]":
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for tp, offset in offsets.items():
            self._pending_commits[(group, tp)] = offset
        self._commit_futures.append(future)
        self._schedule_flush()
        return future

    def _trim_by_time(self) -> None:
        if self.retention_ms is None:
            return
        now_ms = time.time_ns() // 1_000_000
        if now_ms < self._next_time_trim_ms:
            return
        self._next_time_trim_ms = now_ms + self._retention_interval_ms
        since_ms = now_ms - self.retention_ms
        trims: list[tuple[str, int, int]] = []
        starts: dict[TopicPartition, int] = {}
        for tp, state in self._partitions.items():
            if state.written - state.start <= 1:
                continue
            first = self._log.first_offset_since(tp.topic, tp.partition, state.start, since_ms)
            keep = state.written - 1 if first is None else min(first, state.written - 1)
            if keep > state.start:
                starts[tp] = keep
                trims.append((tp.topic, tp.partition, keep))
        if trims:
            self._log.trim(trims)
            for tp, start in starts.items():
                self._partitions[tp].start = start

    def _checkpoint_soon(self) -> None:
        if self._checkpoint_task is not None and not self._checkpoint_task.done():
            return  # the next write batch asks again
        self._unchecked_bytes = 0
        try:
            wal_bytes = os.stat(f"{self._log.file}-wal").st_size
        except OSError:
            wal_bytes = 0
        # Under a sustained load every checkpoint runs while new frames are appended, so the
        # WAL is never fully copied and SQLite never restarts it: past the limit, hold writes
        # until one checkpoint has caught up (producers wait, the loop does not).
        self._hold_writes = wal_bytes > _WAL_LIMIT_BYTES
        self._checkpoint_task = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._log.checkpoint)
        except Exception:  # the next one retries; the WAL stays valid meanwhile
            logger.exception("WAL checkpoint of %s failed", self._log.file)
        else:
            self._stats["checkpoints"] += 1
            if self._hold_writes:
                self._stats["held_writes"] += 1
        finally:
            if self._hold_writes:
                self._hold_writes = False
                if not self._closed and (self._pending or self._pending_commits):
                    self._schedule_flush()

    # --- internals: groups ----------------------------------------------------------------------

    def _rebalance_subscribers(self, topic: str) -> None:
        groups = {member.group.name: member.group for member in self._subscribers.get(topic, ())}
        for group in groups.values():
            self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        assignment = range_assignment(
            {member_id: member.topics for member_id, member in group.members.items()}, self._topics
        )
        for member_id, partitions in assignment.items():
            group.members[member_id]._assign(partitions)

    def _leave(self, member: "EmbeddedConsumer") -> None:
        group = member.group
        group.members.pop(member.member_id, None)
        for topic in member.topics:
            subscribers = self._subscribers.get(topic)
            if subscribers is not None:
                subscribers.discard(member)
                if not subscribers:
                    del self._subscribers[topic]
        self._rebalance(group)

    def _start_position(self, member: "EmbeddedConsumer", tp: TopicPartition) -> int:
        state = self._partitions[tp]
        committed = member.group.committed.get(tp)
        if committed is None:
            if member.from_beginning:
                return state.start
            # The end as it was when the member joined; a partition created since holds only
            # newer messages, so it starts at its beginning.
            committed = member.join_points.get(tp, state.start)
        return min(max(committed, state.start), state.end)


class EmbeddedConsumer(Consumer):
    """A member of a consumer group on an `EmbeddedBus`; made by `EmbeddedBus.consumer`."""

    def __init__(
        self,
        bus: EmbeddedBus,
        group: _Group,
        member_id: int,
        topics: tuple[str, ...],
        from_beginning: bool,
        read_unacknowledged: bool = False,
    ):
        self._bus = bus
        self.group = group
        self.member_id = member_id
        self.topics = topics
        self.from_beginning = from_beginning
        # Where each partition's log ended when this member joined (without from_beginning).
        self.join_points: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._order: list[TopicPartition] = []
        self._next_first = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False
        self.read_unacknowledged = read_unacknowledged

    def __repr__(self) -> str:
        return f"EmbeddedConsumer(group={self.group.name!r}, member={self.member_id})"

    async def poll(self, timeout: float, max_messages: int = 500) -> list[Message]:
        self._check_open()
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        messages = self._fetch(max_messages)
        if messages or timeout <= 0:
            return messages
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            waiter: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(remaining, _resolve, waiter)
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiters.discard(waiter)
            self._check_open()
            messages = self._fetch(max_messages)
            if messages:
                return messages

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Record the group's next offsets; returns once they are on disk. Offsets of any
        partition are accepted (also ones this member does not hold), as Kafka does."""
        self._check_open()
        for tp, offset in offsets.items():
            if not isinstance(tp, TopicPartition):
                raise TypeError(f"commit keys must be TopicPartition, got {tp!r}")
            if not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset for {tp} must be a non-negative int, got {offset!r}")
        if offsets:
            self.group.committed.update(offsets)
            await self._bus._enqueue_commit(self.group.name, offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def position(self, tp: TopicPartition) -> int | None:
        """The offset of the next message this member will read from `tp` (None if not held)."""
        return self._positions.get(tp)

    async def close(self) -> None:
        if self._closed:
            return
        if not self._bus._closed:
            self._bus._leave(self)
        self._shut()

    # --- internals ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            self._bus._check_open()
            raise BusClosedError(f"{self!r} is closed")

    def _shut(self) -> None:
        self._closed = True
        self._positions = {}
        self._order = []
        self._wake()

    def _assign(self, partitions: Iterable[TopicPartition]) -> None:
        old = self._positions
        self._positions = {
            tp: old[tp] if tp in old else self._bus._start_position(self, tp)
            for tp in sorted(partitions)
        }
        self._order = list(self._positions)
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _fetch(self, limit: int) -> list[Message]:
        """Up to `limit` messages, partitions taken in turn from a rotating first one so that a
        busy partition cannot starve the others."""
        order = self._order
        if not order:
            return []
        partitions = self._bus._partitions
        log = self._bus._log
        first = self._next_first % len(order)
        self._next_first = first + 1
        messages: list[Message] = []
        for index in range(len(order)):
            tp = order[(first + index) % len(order)]
            position = self._positions[tp]
            state = partitions[tp]
            stop = state.end if self.read_unacknowledged else state.written
            if position >= stop:
                continue
            start = max(position, state.start)
            read = state.read(log, tp, start, min(limit - len(messages), stop - start))
            if read:
                self._positions[tp] = read[-1].offset + 1
                messages += read
                if len(messages) >= limit:
                    break
        return messages


class BusWriteError(RuntimeError):
    """The database refuses writes (disk full, I/O error); queued messages wait for it."""


def _resolve(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


def _check_topic_name(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"invalid topic name {topic!r}: use 1 to 249 of A-Z a-z 0-9 . _ - (Kafka's rule)"
        )


def _lock_folder(path: Path):
    """Hold an exclusive advisory lock on `<path>/bus.lock` for the life of the bus."""
    lock_file = (path / "bus.lock").open("a+b")
    if fcntl is not None:
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise RuntimeError(
                f"the embedded bus at {path} is already open (in this or another process)"
            ) from None
    return lock_file
