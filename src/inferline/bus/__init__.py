"""The bus: topics with partitions, keyed messages with headers, consumer groups with offsets.

Two back ends behind one interface (`Bus`): `embedded` (in-process, durable on local disk) and
`kafka` (any Kafka-compatible cluster). Everything above this layer uses only the interface.
"""

from inferline.bus.base import Bus, BusClosedError, Consumer, Message, TopicPartition

__all__ = ["Bus", "BusClosedError", "Consumer", "Message", "TopicPartition"]
