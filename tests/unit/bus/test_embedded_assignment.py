"""Kafka's range assignor, as the embedded bus splits a group's partitions."""

from hypothesis import given
from hypothesis import strategies as st

from inferline.bus._assignment import range_assignment
from inferline.bus.base import TopicPartition

topic_names = st.sampled_from(["a", "b", "c", "d"])
subscriptions = st.dictionaries(
    st.integers(0, 50), st.frozensets(topic_names, min_size=1), min_size=1, max_size=8
)
partition_counts = st.dictionaries(topic_names, st.integers(1, 12), max_size=4)


def test_range_split_example():
    assignment = range_assignment({7: ["t"], 3: ["t"], 5: ["t", "u"]}, {"t": 5, "u": 2})
    assert assignment == {
        3: {TopicPartition("t", 0), TopicPartition("t", 1)},
        5: {TopicPartition("t", 2), TopicPartition("t", 3)}
        | {TopicPartition("u", 0), TopicPartition("u", 1)},
        7: {TopicPartition("t", 4)},
    }


def test_missing_topics_are_assigned_to_nobody():
    assert range_assignment({1: ["later"]}, {}) == {1: set()}


@given(subscriptions, partition_counts)
def test_every_partition_goes_to_exactly_one_subscribed_member(subscribed, partitions):
    assignment = range_assignment(subscribed, partitions)
    assert set(assignment) == set(subscribed)
    for topic, count in partitions.items():
        members = sorted(m for m, topics in subscribed.items() if topic in topics)
        owners = {
            p: [m for m, held in assignment.items() if TopicPartition(topic, p) in held]
            for p in range(count)
        }
        if not members:
            assert all(owner == [] for owner in owners.values())
            continue
        assert all(len(owner) == 1 and owner[0] in members for owner in owners.values())
        shares = [sum(1 for tp in assignment[m] if tp.topic == topic) for m in members]
        assert shares == sorted(shares, reverse=True), "earlier members take the extra ones"
        assert max(shares) - min(shares) <= 1
    for held in assignment.values():
        assert all(tp.topic in partitions and tp.partition < partitions[tp.topic] for tp in held)


@given(subscriptions, partition_counts)
def test_deterministic(subscribed, partitions):
    reordered = dict(reversed(list(subscribed.items())))
    assert range_assignment(subscribed, partitions) == range_assignment(reordered, partitions)
