"""One load process's phases against a scripted target: how many requests, which are measured,
how failures are counted, and how a plan is split between processes. No sockets, no sleeping."""

import asyncio

import pytest

from inferline.bench.loadgen import LoadPlan, Recorder, closed_loop, run_phases
from inferline.bench.schedule import Stage


class StepClock:
    """A clock that advances `step` seconds each time a request is answered."""

    def __init__(self, step: float = 0.001):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # Requests already sent run (and, taking no time, finish) before time moves on.
        for _ in range(3):
            await asyncio.sleep(0)
        self.now += seconds


class ScriptedTarget:
    """Answers every `fail_every`-th call with 404; counts calls and the most at once."""

    def __init__(self, clock: StepClock, fail_every: int = 0):
        self.clock, self.fail_every = clock, fail_every
        self.calls = self.active = self.most_active = 0

    async def call(self):
        self.calls += 1
        number = self.calls
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        await asyncio.sleep(0)  # let the other users run
        self.clock.now += self.clock.step
        self.active -= 1
        if self.fail_every and number % self.fail_every == 0:
            return "404", f"call {number} not found"
        return None


async def test_closed_loop_sends_exactly_the_iterations_with_n_users():
    clock = StepClock()
    target = ScriptedTarget(clock, fail_every=10)
    recorder = Recorder()
    await closed_loop(target.call, 8, clock, recorder, seconds=None, iterations=1000)
    assert target.calls == 1000 and len(recorder.latencies) == 1000
    assert target.most_active == 8
    assert recorder.errors == {"404": 100}
    assert recorder.examples == {"404": "call 10 not found"}  # the first one


async def test_closed_loop_starts_nothing_after_the_duration():
    clock = StepClock(step=0.001)
    target = ScriptedTarget(clock)
    recorder = Recorder()
    await closed_loop(target.call, 4, clock, recorder, seconds=0.5, iterations=None)
    # 1 ms of clock per answer: about 500 answers, plus at most the 4 already started
    assert 500 <= target.calls <= 504


async def test_warmup_is_run_but_not_measured():
    clock = StepClock(step=0.001)
    target = ScriptedTarget(clock)
    seen = []
    plan = LoadPlan(concurrency=2, iterations=300, warmup=0.2)
    stats = await run_phases(target, plan, clock=clock, sleep=clock.sleep, watch=seen.append)
    assert stats.latencies.size == 300
    assert 500 <= target.calls <= 502  # ~200 in the warm-up, then exactly 300
    assert seen[0] is None and seen[1] is not None  # warm-up, then the measured phase
    assert stats.elapsed == pytest.approx(0.3, abs=0.005)


async def test_open_loop_phase_sends_the_schedule_and_measures_from_due_time():
    clock = StepClock(step=0.0)  # answers take no time
    target = ScriptedTarget(clock)
    plan = LoadPlan(stages=(Stage(2.0, 100),), start_rate=100)
    stats = await run_phases(target, plan, clock=clock, sleep=clock.sleep)
    assert target.calls == 200 and stats.latencies.size == 200
    assert stats.latencies.max() == pytest.approx(0.0)  # each sent when due
    assert stats.elapsed == pytest.approx(1.99)
    assert stats.dropped == 0


async def test_open_loop_iterations_cap_the_arrivals():
    clock = StepClock(step=0.0)
    target = ScriptedTarget(clock)
    plan = LoadPlan(stages=(Stage(60.0, 50),), start_rate=50, iterations=120)
    stats = await run_phases(target, plan, clock=clock, sleep=clock.sleep)
    assert target.calls == 120
    assert stats.elapsed == pytest.approx(119 / 50)


def test_a_plan_is_split_between_processes():
    plan = LoadPlan(concurrency=10, iterations=1001, max_in_flight=100)
    shares = [plan.share(k, 3) for k in range(3)]
    assert [s.concurrency for s in shares] == [4, 3, 3]
    assert [s.iterations for s in shares] == [334, 334, 333]
    assert sum(s.max_in_flight for s in shares) == 100

    open_plan = LoadPlan(stages=(Stage(10, 100),), iterations=1001)
    shares = [open_plan.share(k, 3) for k in range(3)]
    assert [(s.first, s.step) for s in shares] == [(0, 3), (1, 3), (2, 3)]
    # arrivals k, k+3, ... below 1001
    assert [s.iterations for s in shares] == [334, 334, 333]
