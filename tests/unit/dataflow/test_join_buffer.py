"""JoinBuffer: Seldon Core 2's inner / outer / any joins and triggers on a fake clock
(reference b.6, b.7)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.bus.base import TopicPartition
from inferline.dataflow.joins import JoinBuffer, Part

A = TopicPartition("a", 0)
B = TopicPartition("b", 0)
C = TopicPartition("c", 0)
T = TopicPartition("t", 0)
TOPICS = [A, B, C]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def data(source: int, offset: int = 0, payload: str | None = None) -> Part:
    return Part(source, False, payload or f"d{source}@{offset}", (TOPICS[source], offset))


def trigger(source: int, offset: int = 0) -> Part:
    return Part(source, True, f"t{source}@{offset}", (T, offset + 100 * source))


def payloads(emissions) -> list[list[str]]:
    return [[p.payload for p in e.parts] for e in emissions]


# --- one source -----------------------------------------------------------------------------


def test_one_source_without_triggers_passes_every_message_straight_on(clock):
    buffer = JoinBuffer(1, window_ms=1000, clock=clock)
    assert buffer.passthrough
    first = buffer.add(b"k", data(0, 0))
    again = buffer.add(b"k", data(0, 1))
    assert payloads(first) == [["d0@0"]]
    assert payloads(again) == [["d0@1"]], "a second message of the same key is not swallowed"
    assert len(buffer) == 0
    assert buffer.held_positions() == []
    assert buffer.next_deadline() is None
    clock.advance(10)
    assert buffer.expire() == ([], [])


def test_one_source_with_a_trigger_is_not_passthrough(clock):
    assert not JoinBuffer(1, triggers=1, clock=clock).passthrough
    assert not JoinBuffer(2, clock=clock).passthrough


# --- inner ----------------------------------------------------------------------------------


def test_inner_emits_only_once_every_source_arrived(clock):
    buffer = JoinBuffer(3, "inner", window_ms=1000, clock=clock)
    assert buffer.add(b"k", data(0)) == []
    clock.advance(0.5)
    assert buffer.add(b"k", data(2)) == []
    assert buffer.missing(b"k") == ([1], [])
    emitted = buffer.add(b"k", data(1))
    assert len(emitted) == 1
    assert emitted[0].key == b"k"
    assert payloads(emitted) == [["d0@0", "d1@0", "d2@0"]]
    assert len(buffer) == 0
    assert buffer.missing(b"k") is None
    assert buffer.held_positions() == []


def test_inner_keeps_keys_apart(clock):
    buffer = JoinBuffer(2, "inner", window_ms=1000, clock=clock)
    assert buffer.add(b"k1", data(0, 0)) == []
    assert buffer.add(b"k2", data(1, 1)) == [], "another request's message does not complete k1"
    emitted = buffer.add(b"k2", data(0, 2))
    assert [e.key for e in emitted] == [b"k2"]
    assert payloads(emitted) == [["d0@2", "d1@1"]]
    assert len(buffer) == 1
    assert buffer.missing(b"k1") == ([1], [])


def test_inner_drops_at_the_deadline_and_returns_what_it_held(clock):
    buffer = JoinBuffer(3, "inner", window_ms=2000, clock=clock)
    buffer.add(b"k", data(0, 5))
    clock.advance(0.5)
    buffer.add(b"k", data(1, 6))
    assert buffer.next_deadline() == pytest.approx(1002.0), "the window opens at the first arrival"
    clock.advance(1.49)
    assert buffer.expire() == ([], []), "not yet: the window has 10 ms left"
    assert len(buffer) == 1
    clock.advance(0.01)
    emitted, dropped = buffer.expire()
    assert emitted == []
    assert len(dropped) == 1
    key, parts = dropped[0]
    assert key == b"k"
    assert sorted(p.payload for p in parts) == ["d0@5", "d1@6"]
    assert sorted(p.position for p in parts) == [(A, 5), (B, 6)]
    assert len(buffer) == 0
    assert buffer.held_positions() == []
    assert buffer.next_deadline() is None
    # A late partner starts a new window on its own: it does not join the dropped parts.
    assert buffer.add(b"k", data(2, 7)) == []
    assert buffer.missing(b"k") == ([0, 1], [])


def test_inner_expire_only_closes_windows_that_passed(clock):
    buffer = JoinBuffer(2, "inner", window_ms=1000, clock=clock)
    buffer.add(b"old", data(0, 1))
    clock.advance(0.6)
    buffer.add(b"new", data(0, 2))
    clock.advance(0.5)
    _, dropped = buffer.expire()
    assert [key for key, _ in dropped] == [b"old"]
    assert buffer.held_positions() == [(A, 2)]
    assert buffer.next_deadline() == pytest.approx(1001.6)


def test_a_repeated_message_from_one_source_does_not_replace_the_first(clock):
    buffer = JoinBuffer(2, "inner", window_ms=1000, clock=clock)
    buffer.add(b"k", data(0, 1))
    buffer.add(b"k", data(0, 2))
    emitted = buffer.add(b"k", data(1, 3))
    assert payloads(emitted) == [["d0@1", "d1@3"]]


# --- data order ---------------------------------------------------------------------------


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), (2, 0, 1)])
@pytest.mark.parametrize("join", ["inner", "outer"])
def test_data_follows_source_order_whatever_the_arrival_order(clock, order, join):
    buffer = JoinBuffer(3, join, window_ms=1000, clock=clock)
    emitted = []
    for source in order:
        emitted += buffer.add(b"k", data(source))
    assert [[p.source for p in e.parts] for e in emitted] == [[0, 1, 2]]


def test_outer_at_the_deadline_keeps_source_order(clock):
    buffer = JoinBuffer(3, "outer", window_ms=1000, clock=clock)
    buffer.add(b"k", data(2))
    buffer.add(b"k", data(0))
    clock.advance(1)
    emitted, _ = buffer.expire()
    assert [[p.source for p in e.parts] for e in emitted] == [[0, 2]]


# --- outer ----------------------------------------------------------------------------------


def test_outer_emits_at_once_when_every_source_arrived(clock):
    buffer = JoinBuffer(2, "outer", window_ms=1000, clock=clock)
    assert buffer.add(b"k", data(1)) == []
    emitted = buffer.add(b"k", data(0))
    assert payloads(emitted) == [["d0@0", "d1@0"]]
    assert len(buffer) == 0


def test_outer_emits_what_came_at_the_deadline_and_drops_nothing(clock):
    buffer = JoinBuffer(3, "outer", window_ms=1000, clock=clock)
    buffer.add(b"k", data(1, 4))
    clock.advance(0.999)
    assert buffer.expire() == ([], []), "outer waits for the window, it does not emit early"
    clock.advance(0.001)
    emitted, dropped = buffer.expire()
    assert payloads(emitted) == [["d1@4"]]
    assert emitted[0].key == b"k"
    assert dropped == []
    assert len(buffer) == 0
    assert buffer.held_positions() == []


# --- any ------------------------------------------------------------------------------------


def test_any_emits_every_arrival_at_once_on_its_own(clock):
    buffer = JoinBuffer(2, "any", window_ms=1000, clock=clock)
    first = buffer.add(b"k", data(1, 1))
    second = buffer.add(b"k", data(0, 2))
    third = buffer.add(b"k", data(1, 3))
    assert payloads(first) == [["d1@1"]]
    assert payloads(second) == [["d0@2"]]
    assert payloads(third) == [["d1@3"]]
    assert buffer.held_positions() == [], "what went on is not held back from commit"


def test_any_without_triggers_keeps_nothing_between_arrivals(clock):
    buffer = JoinBuffer(2, "any", window_ms=60_000, clock=clock)
    for n in range(100):
        assert len(buffer.add(b"k%d" % n, data(n % 2, n))) == 1
    assert len(buffer) == 0
    assert buffer.next_deadline() is None, "no window to wake up for"
    assert buffer.held_positions() == []


def test_any_never_drops(clock):
    buffer = JoinBuffer(3, "any", window_ms=1000, clock=clock)
    buffer.add(b"k", data(0))
    clock.advance(5)
    assert buffer.expire() == ([], [])
    assert len(buffer) == 0


# --- triggers -------------------------------------------------------------------------------


def test_data_waits_for_an_inner_trigger_whose_payload_is_never_emitted(clock):
    buffer = JoinBuffer(1, "inner", triggers=1, window_ms=1000, clock=clock)
    assert buffer.add(b"k", data(0, 1)) == []
    assert buffer.missing(b"k") == ([], [0])
    emitted = buffer.add(b"k", trigger(0, 2))
    assert payloads(emitted) == [["d0@1"]]
    assert all(not p.trigger for e in emitted for p in e.parts)
    assert len(buffer) == 0


def test_a_trigger_arriving_first_waits_for_the_data(clock):
    buffer = JoinBuffer(1, "inner", triggers=1, window_ms=1000, clock=clock)
    assert buffer.add(b"k", trigger(0)) == []
    assert buffer.missing(b"k") == ([0], [])
    assert payloads(buffer.add(b"k", data(0))) == [["d0@0"]]


def test_inner_triggers_need_every_trigger(clock):
    buffer = JoinBuffer(1, "inner", triggers=2, triggers_join="inner", window_ms=1000, clock=clock)
    buffer.add(b"k", data(0))
    assert buffer.add(b"k", trigger(1)) == []
    assert buffer.missing(b"k") == ([], [0])
    assert payloads(buffer.add(b"k", trigger(0))) == [["d0@0"]]


def test_any_triggers_need_one_trigger(clock):
    buffer = JoinBuffer(1, "inner", triggers=2, triggers_join="any", window_ms=1000, clock=clock)
    buffer.add(b"k", data(0))
    assert payloads(buffer.add(b"k", trigger(1))) == [["d0@0"]]


def test_outer_triggers_wait_for_all_or_release_at_the_deadline(clock):
    buffer = JoinBuffer(1, "inner", triggers=2, triggers_join="outer", window_ms=1000, clock=clock)
    buffer.add(b"k", data(0))
    assert buffer.add(b"k", trigger(0)) == [], "outer triggers are not satisfied by one early"
    clock.advance(1)
    emitted, dropped = buffer.expire()
    assert payloads(emitted) == [["d0@0"]]
    assert dropped == []

    buffer.add(b"j", data(0))
    buffer.add(b"j", trigger(1))
    assert payloads(buffer.add(b"j", trigger(0))) == [["d0@0"]], "and emit at once once complete"


def test_data_without_its_trigger_is_dropped_with_the_data_at_the_deadline(clock):
    buffer = JoinBuffer(2, "inner", triggers=1, window_ms=1000, clock=clock)
    buffer.add(b"k", data(0, 1))
    buffer.add(b"k", data(1, 2))
    assert len(buffer) == 1, "complete data still waits for its trigger"
    clock.advance(1)
    emitted, dropped = buffer.expire()
    assert emitted == []
    assert [(key, sorted(p.payload for p in parts)) for key, parts in dropped] == [
        (b"k", ["d0@1", "d1@2"])
    ]


def test_a_trigger_without_data_is_dropped_at_the_deadline(clock):
    buffer = JoinBuffer(1, "inner", triggers=1, window_ms=1000, clock=clock)
    buffer.add(b"k", trigger(0, 3))
    clock.advance(1)
    emitted, dropped = buffer.expire()
    assert emitted == []
    assert len(dropped) == 1
    assert [p.trigger for p in dropped[0][1]] == [True]


def test_any_data_waits_for_its_triggers_then_each_arrival_goes_on(clock):
    buffer = JoinBuffer(2, "any", triggers=1, window_ms=1000, clock=clock)
    assert buffer.add(b"k", data(1, 1)) == []
    assert buffer.add(b"k", data(0, 2)) == []
    emitted = buffer.add(b"k", trigger(0, 3))
    assert payloads(emitted) == [["d1@1"], ["d0@2"]], "one emission per data message"
    assert payloads(buffer.add(b"k", data(1, 4))) == [["d1@4"]], "later ones go at once"


def test_any_data_whose_trigger_never_came_is_dropped(clock):
    buffer = JoinBuffer(2, "any", triggers=1, window_ms=1000, clock=clock)
    buffer.add(b"k", data(0, 1))
    clock.advance(1)
    emitted, dropped = buffer.expire()
    assert emitted == []
    assert [(key, [p.payload for p in parts]) for key, parts in dropped] == [(b"k", ["d0@1"])]


def test_any_with_triggers_does_not_drop_once_everything_went_on(clock):
    buffer = JoinBuffer(2, "any", triggers=1, window_ms=1000, clock=clock)
    buffer.add(b"k", trigger(0))
    buffer.add(b"k", data(0))
    clock.advance(1)
    assert buffer.expire() == ([], [])
    assert len(buffer) == 0


# --- held positions -------------------------------------------------------------------------


def test_held_positions_list_exactly_the_messages_still_held(clock):
    buffer = JoinBuffer(2, "inner", triggers=1, window_ms=1000, clock=clock)
    buffer.add(b"k1", data(0, 10))
    buffer.add(b"k1", trigger(0, 11))
    buffer.add(b"k2", data(1, 12))
    assert sorted(buffer.held_positions()) == sorted([(A, 10), (T, 11), (B, 12)])
    buffer.add(b"k1", data(1, 13))  # completes k1
    assert buffer.held_positions() == [(B, 12)]
    clock.advance(1)
    buffer.expire()
    assert buffer.held_positions() == []


def test_held_positions_of_any_data_waiting_for_a_trigger(clock):
    buffer = JoinBuffer(2, "any", triggers=1, window_ms=1000, clock=clock)
    buffer.add(b"k", data(0, 1))
    buffer.add(b"k", data(0, 2))
    assert sorted(buffer.held_positions()) == [(A, 1), (A, 2)]


def test_missing_names_inputs_and_triggers_not_yet_seen(clock):
    buffer = JoinBuffer(3, "inner", triggers=2, window_ms=1000, clock=clock)
    assert buffer.missing(b"k") is None, "a key that is not held waits for nothing"
    buffer.add(b"k", data(1))
    assert buffer.missing(b"k") == ([0, 2], [0, 1])
    buffer.add(b"k", trigger(1))
    buffer.add(b"k", data(0))
    assert buffer.missing(b"k") == ([2], [0])


def test_default_window_is_sixty_seconds(clock):
    buffer = JoinBuffer(2, clock=clock)
    buffer.add(b"k", data(0))
    assert buffer.next_deadline() == pytest.approx(clock.now + 60)
    clock.advance(59.9)
    assert buffer.expire() == ([], [])
    clock.advance(0.1)
    assert len(buffer.expire()[1]) == 1


# --- properties -----------------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from([b"k1", b"k2", b"k3"]),
            st.integers(0, 2),
            st.booleans(),
        ),
        st.tuples(st.just("wait"), st.floats(0.0, 0.8)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    ops=_OPS,
    join=st.sampled_from(["inner", "outer", "any"]),
    triggers=st.integers(0, 2),
    triggers_join=st.sampled_from(["inner", "outer", "any"]),
)
def test_every_part_is_emitted_or_dropped_at_most_once_and_nothing_stays_held(
    ops, join, triggers, triggers_join
):
    clock = Clock()
    inputs = 3
    buffer = JoinBuffer(inputs, join, triggers, triggers_join, window_ms=1000, clock=clock)
    added: dict[tuple, Part] = {}
    emitted: list = []
    dropped: list = []
    offset = 0

    def out(parts_lists):
        for e in parts_lists:
            assert e.parts, "an emission carries data"
            assert all(not p.trigger for p in e.parts), "trigger payloads are never emitted"
            sources = [p.source for p in e.parts]
            assert sources == sorted(set(sources)), "one part per source, in source order"
            if join == "any":
                assert len(e.parts) == 1
            if join == "inner":
                assert sources == list(range(inputs))
            emitted.extend(e.parts)

    for op in ops:
        if op[0] == "add":
            _, key, source, is_trigger = op
            if is_trigger and triggers == 0:
                continue
            source %= triggers if is_trigger else inputs
            offset += 1
            part = Part(source, is_trigger, key, (T if is_trigger else A, offset))
            added[part.position] = part
            out(buffer.add(key, part))
        else:
            clock.advance(op[1])
            e, d = buffer.expire()
            out(e)
            for key, parts in d:
                assert all(p.payload == key for p in parts), "dropped parts are the key's own"
                dropped.extend(parts)
        held = buffer.held_positions()
        assert len(held) == len(set(held))
        gone = {p.position for p in emitted + dropped}
        assert not set(held) & gone, "what was emitted or dropped is not held any more"
        assert set(held) <= set(added)

    clock.advance(10)
    e, d = buffer.expire()
    out(e)
    dropped.extend(p for _, parts in d for p in parts)
    assert buffer.held_positions() == []
    assert len(buffer) == 0
    positions = [p.position for p in emitted + dropped]
    assert len(positions) == len(set(positions)), "no part goes out twice"
    if join == "any" and triggers == 0:
        assert dropped == []
        assert {p.position for p in emitted} == set(added), "any forwards every arrival"
