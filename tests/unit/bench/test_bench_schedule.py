"""Open-loop arrival times follow the rate and the stages, on a fake clock (nothing sleeps)."""

import asyncio

import numpy as np
import pytest

from inferline.bench.schedule import (
    Stage,
    arrival_times,
    parse_duration,
    parse_stages,
    run_open_loop,
)


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_parse_stages_like_k6():
    assert parse_stages("10s:100, 30s:500,1m:0") == [
        Stage(10, 100),
        Stage(30, 500),
        Stage(60, 0),
    ]
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2") == 2.0
    assert parse_duration("1.5h") == 5400.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("10s", "needs DURATION:RATE"),
        ("10x:5", "is not a duration"),
        ("10s:fast", "is not a rate"),
        ("10s:-1", "0 or more"),
        ("0s:10", "more than 0"),
    ],
)
def test_bad_stages_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_stages(text)


def test_constant_rate_is_evenly_spaced():
    times = list(arrival_times([Stage(2.0, 50)], start_rate=50))
    assert len(times) == 100
    assert times == pytest.approx([i / 50 for i in range(100)])


def test_ramp_follows_the_integral_of_the_rate():
    # 0 -> 100 req/s over 10 s: n(t) = 5 t^2, so 500 arrivals, arrival n at sqrt(n / 5).
    times = np.array(list(arrival_times([Stage(10.0, 100)])))
    assert len(times) == 500
    assert times == pytest.approx(np.sqrt(np.arange(500) / 5))
    # the rate grows: as many arrivals in the last second as in the first 4.5 s
    assert np.sum(times >= 9) == 95
    assert np.sum(times < 4.5) == 102


def test_stages_chain_ramp_hold_and_ramp_down():
    stages = [Stage(2, 100), Stage(3, 100), Stage(2, 0)]
    times = np.array(list(arrival_times(stages)))
    # 0->100 over 2 s: 100; hold 100 for 3 s: 300; 100->0 over 2 s: 100
    assert len(times) == 500
    assert np.sum(times < 2) == 100
    assert np.sum((times >= 2) & (times < 5)) == 300
    held = times[(times >= 2) & (times < 5)]
    assert np.diff(held) == pytest.approx(0.01)
    assert times[-1] < 7


def test_processes_split_one_schedule_without_overlap():
    stages = [Stage(3, 40), Stage(2, 90)]
    whole = list(arrival_times(stages, start_rate=10))
    parts = [list(arrival_times(stages, 10, first=k, step=3)) for k in range(3)]
    assert sorted(t for part in parts for t in part) == pytest.approx(whole)
    assert [len(p) for p in parts] == [len(whole[k::3]) for k in range(3)]


async def _drive(times, limit=None, max_in_flight=10**9, in_flight=lambda: 0):
    clock = FakeClock()
    sent: list[tuple[float, float]] = []  # (clock when sent, due)
    result = await run_open_loop(
        iter(times),
        lambda due: sent.append((clock(), due)),
        clock,
        clock.sleep,
        in_flight,
        max_in_flight,
        limit,
    )
    return clock, sent, result


async def test_open_loop_sends_each_arrival_at_its_time():
    times = list(arrival_times([Stage(1, 20), Stage(1, 60)], start_rate=20))
    clock, sent, (count, dropped) = await _drive(times)
    assert count == len(times) == 20 + 40 and dropped == 0
    assert [when - 100.0 for when, _ in sent] == pytest.approx(times)
    assert all(when == due for when, due in sent)  # sent on time, due passed on
    assert clock() == pytest.approx(100.0 + times[-1])


async def test_open_loop_stops_at_the_limit():
    times = arrival_times([Stage(100, 10)], start_rate=10)
    clock, sent, (count, _) = await _drive(times, limit=25)
    assert count == 25 and len(sent) == 25
    assert clock() == pytest.approx(100.0 + 2.4)


async def test_arrivals_beyond_the_in_flight_limit_are_dropped_not_bunched():
    outstanding = [0]

    def in_flight() -> int:
        outstanding[0] += 1  # each sent request stays unanswered
        return outstanding[0] - 1

    times = list(arrival_times([Stage(1, 10)], start_rate=10))
    _, sent, (count, dropped) = await _drive(times, max_in_flight=4, in_flight=in_flight)
    assert count == 4 and dropped == 6
    assert [due for _, due in sent] == pytest.approx([100.0, 100.1, 100.2, 100.3])


def test_a_late_sender_sends_what_is_due_at_once():
    # The sender fell behind (the clock jumped): the overdue arrivals go out immediately, each
    # with its original due time, so their wait counts in their latency.
    clock = FakeClock()
    sent = []

    def send(due):
        sent.append((clock(), due))
        if len(sent) == 1:
            clock.now += 0.35  # the first send took 350 ms of CPU

    times = arrival_times([Stage(1, 10)], start_rate=10)
    asyncio.run(run_open_loop(times, send, clock, clock.sleep, lambda: 0, 100))
    assert [round(when - 100, 2) for when, _ in sent[:5]] == [0.0, 0.35, 0.35, 0.35, 0.4]
    assert [round(due - 100, 2) for _, due in sent[:5]] == [0.0, 0.1, 0.2, 0.3, 0.4]
