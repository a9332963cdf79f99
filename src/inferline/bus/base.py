"""The bus interface every back end implements, and the message type they share.

Semantics follow Kafka's, since one back end is Kafka: a topic has a fixed number of partitions;
a message lands in one partition (the one asked for, else by key hash, else any) and gets the
next offset there; consumers in one group share a topic's partitions and resume from the
group's committed offsets; a committed offset is the offset of the next message to read.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass


class BusClosedError(RuntimeError):
    """The bus, or the consumer, has been closed."""


class MessageTooLarge(ValueError):
    """The message is larger than the bus (or its broker) accepts: writing it again will fail
    again, so whoever holds it must give up on it rather than retry."""


@dataclass(slots=True, frozen=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(slots=True, frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    # In the order they were written; a name may repeat (Kafka allows it).
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        """The last value of header `name`, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class Consumer(ABC):
    """A member of a consumer group, reading the partitions the group assigns it."""

    @abstractmethod
    async def poll(self, timeout: float, max_messages: int = 500) -> list[Message]:
        """Messages in offset order per partition; waits up to `timeout` seconds for the first.
        A partition newly assigned to a member resumes from the group's committed offset (else
        its start rule); a partition kept through a rebalance may continue or rewind to the
        committed offset, so callers must tolerate redelivery after a rebalance."""

    @abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Record, for the group, the next offset to read in each partition."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member reads now."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group (its partitions go to the other members). Does not commit."""


class Bus(ABC):
    @abstractmethod
    async def create_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create the topic if it does not exist (default partitions: the bus's default); an
        existing topic keeps its partition count."""

    @abstractmethod
    async def delete_topic(self, topic: str) -> None:
        """Delete the topic, its messages and committed offsets; a missing topic is no error."""

    @abstractmethod
    async def topics(self) -> dict[str, int]:
        """Every topic with its partition count."""

    @abstractmethod
    async def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Message:
        """Write one message; returns it with its partition and offset once it is durable
        (embedded: on disk; Kafka: acknowledged by the broker). Creates the topic if needed;
        a partition out of range is a ValueError, a message larger than the bus accepts a
        MessageTooLarge."""

    @abstractmethod
    async def consumer(
        self,
        group: str,
        topics: list[str],
        from_beginning: bool = False,
        read_unacknowledged: bool = False,
    ) -> Consumer:
        """Join `group` reading `topics`. Partitions with no committed offset start at the end
        as it was when this returned (only newer messages), or at the beginning with
        `from_beginning`; that end is committed for the group, so a member that restarts
        before reading anything still reads what was written meanwhile.

        A member reads a message once its producer has it acknowledged, or, with
        `read_unacknowledged` where the back end allows it (the embedded bus), as soon as it
        is queued for writing. That is for members whose effects are writes to the same bus,
        which are then written after what they read (pipeline steps, and model gateways,
        whose model calls repeat harmlessly); not for one that answers a caller outside it
        (the pipeline gateway answers only with what is on disk)."""

    @abstractmethod
    async def read_last(self, topic: str, count: int) -> list[Message]:
        """The last `count` messages of every partition of `topic`, oldest first per partition,
        without joining any group (for inspection); [] for a missing topic."""

    async def committed(self, group: str, topics: list[str]) -> dict[TopicPartition, int]:
        """The group's committed offsets in those topics' partitions (only those it has)."""
        raise NotImplementedError

    async def commit_group(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        """Record offsets for a group without joining it (e.g. to hand a successor's group
        the point its predecessor reached). The group should have no live members."""
        raise NotImplementedError

    @abstractmethod
    async def close(self) -> None: ...


def as_bytes(data: object, what: str) -> bytes:
    """A key, value or header value as bytes; anything else is a TypeError naming `what`."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"message {what} must be bytes, got {type(data).__name__}")


def as_headers(headers: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Headers as a tuple of (str, bytes) pairs, checked."""
    result = []
    for header in headers:
        try:
            name, value = header
        except (TypeError, ValueError):
            raise TypeError(f"a header must be a (name, value) pair, got {header!r}") from None
        if not isinstance(name, str):
            raise TypeError(f"header name must be str, got {type(name).__name__}")
        result.append((name, as_bytes(value, f"header {name!r} value")))
    return tuple(result)


def message_size(key: bytes | None, value: bytes, headers: tuple[tuple[str, bytes], ...]) -> int:
    """A message's bytes as a size limit counts them: key, value, header names and values."""
    return len(value) + len(key or b"") + sum(len(name) + len(data) for name, data in headers)
