"""How a consumer group's partitions are split among its members: Kafka's range assignor."""

from collections.abc import Collection, Mapping

from inferline.bus.base import TopicPartition


def range_assignment(
    subscriptions: Mapping[int, Collection[str]], partitions: Mapping[str, int]
) -> dict[int, set[TopicPartition]]:
    """Per topic, the members subscribed to it, in member-id order, each take a contiguous run
    of partitions; the first `partitions % members` take one more. Topics missing from
    `partitions` (not created yet) are assigned to nobody. Deterministic."""
    assignment: dict[int, set[TopicPartition]] = {member: set() for member in subscriptions}
    topics = {topic for subscribed in subscriptions.values() for topic in subscribed}
    for topic in sorted(topics):
        count = partitions.get(topic)
        if not count:
            continue
        members = sorted(
            member for member, subscribed in subscriptions.items() if topic in subscribed
        )
        share, extra = divmod(count, len(members))
        first = 0
        for index, member in enumerate(members):
            take = share + (index < extra)
            assignment[member].update(TopicPartition(topic, p) for p in range(first, first + take))
            first += take
    return assignment
