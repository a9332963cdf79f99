"""The load: phases of calls on a schedule, in one or several processes, and their merge.

`run_phases` is the whole load of one process against any target (anything with an async
`call()`), on an injectable clock; `run` starts `processes` copies of it side by side and pools
what they measured. Processes are started with `spawn` (a clean interpreter each: no inherited
gRPC or event loop state), connect, report ready, and all start on one signal.

Latency is from the moment a request was due to its answer: in a closed loop that is when the
user sent it; in an open loop it is the scheduled arrival time, so a request the client sent
late (it was busy) counts its wait too instead of hiding it (coordinated omission). A saturated
client therefore shows up in the latencies, and in its CPU share, which every process reports.
"""

import array
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from inferline.bench.schedule import Stage, arrival_times, run_open_loop, stages_duration
from inferline.bench.stats import BenchResult, ProcessStats, merge
from inferline.bench.targets import TargetSpec, build_target

PUBLISH_INTERVAL = 0.1


class BenchError(Exception):
    pass


def _split(total: int, index: int, parts: int) -> int:
    """Process `index`'s share of `total` when split as evenly as possible."""
    return total // parts + (1 if index < total % parts else 0)


@dataclass(frozen=True)
class LoadPlan:
    """What to run. Closed loop when `stages` is empty (`concurrency` users), else open loop.
    The measured phase ends after `duration` seconds or `iterations` requests (open loop: at
    the end of the stages if neither is given)."""

    concurrency: int = 1
    stages: tuple[Stage, ...] = ()
    start_rate: float = 0.0
    duration: float | None = None
    iterations: int | None = None
    warmup: float = 0.0
    max_in_flight: int = 1000
    # Which arrivals of the schedule this process sends: index, index + step, ...
    first: int = 0
    step: int = 1

    @property
    def open_loop(self) -> bool:
        return bool(self.stages)

    @property
    def connections(self) -> int:
        return self.max_in_flight if self.open_loop else self.concurrency

    def share(self, index: int, processes: int) -> "LoadPlan":
        """This plan for process `index` of `processes`: users, iterations and in-flight limit
        split between them; open-loop arrivals interleaved."""
        iterations = self.iterations
        if iterations is not None:
            if self.open_loop:  # arrivals index, index + P, ... below iterations
                iterations = max(0, -(-(iterations - index) // processes))
            else:
                iterations = _split(iterations, index, processes)
        return replace(
            self,
            concurrency=_split(self.concurrency, index, processes),
            iterations=iterations,
            max_in_flight=max(1, _split(self.max_in_flight, index, processes)),
            first=index,
            step=processes,
        )


class Recorder:
    """Latencies and failures of one phase in one process."""

    __slots__ = ("errors", "examples", "latencies")

    def __init__(self):
        # 8 bytes a sample (a list of floats takes 32): a long run keeps millions of them.
        self.latencies = array.array("d")
        self.errors: Counter = Counter()
        self.examples: dict[str, str] = {}

    def record(self, seconds: float, outcome: tuple[str, str] | None) -> None:
        self.latencies.append(seconds)
        if outcome is not None:
            status, message = outcome
            self.errors[status] += 1
            if status not in self.examples:
                self.examples[status] = message


async def closed_loop(
    call: Callable,
    users: int,
    clock: Callable[[], float],
    recorder: Recorder,
    seconds: float | None,
    iterations: int | None,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """`users` callers, each sending its next request when its answer is in, until `seconds`
    have passed (no new request starts after), `iterations` requests were started or `stop()`
    says so."""
    deadline = clock() + seconds if seconds is not None else None
    tickets = itertools.count() if iterations is None else iter(range(iterations))
    record = recorder.record

    async def user() -> None:
        for _ in tickets:
            start = clock()
            if (deadline is not None and start >= deadline) or stop():
                return
            outcome = await call()
            record(clock() - start, outcome)

    await asyncio.gather(*(user() for _ in range(users)))


async def open_loop(
    call: Callable,
    plan: LoadPlan,
    clock: Callable[[], float],
    sleep: Callable,
    recorder: Recorder,
    seconds: float | None,
    iterations: int | None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Arrivals on the plan's schedule for `seconds` (or its stages' length) or `iterations`
    arrivals or until `stop()`, then wait for the answers. Returns the arrivals dropped."""
    times = arrival_times(list(plan.stages), plan.start_rate, plan.first, plan.step)
    if seconds is not None:
        times = itertools.takewhile(lambda t: t < seconds, times)
    times = itertools.takewhile(lambda t: not stop(), times)
    in_flight: set[asyncio.Task] = set()
    record = recorder.record

    async def one(due: float) -> None:
        outcome = await call()
        record(clock() - due, outcome)

    def send(due: float) -> None:
        task = asyncio.ensure_future(one(due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    _, dropped = await run_open_loop(
        times, send, clock, sleep, in_flight.__len__, plan.max_in_flight, iterations
    )
    if in_flight:
        await asyncio.gather(*in_flight)
    return dropped


async def run_phases(
    target,
    plan: LoadPlan,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable = asyncio.sleep,
    watch: Callable[[Recorder | None], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> ProcessStats:
    """Warm up (its samples discarded), then measure. `watch` is told each measured phase's
    recorder (None during warm-up), for live progress. Once `stop()` is true, no new request
    starts (Ctrl-C): what was measured until then is returned."""
    watch = watch or (lambda recorder: None)

    async def phase(recorder: Recorder, seconds: float | None, iterations: int | None) -> int:
        if plan.open_loop:
            return await open_loop(
                target.call, plan, clock, sleep, recorder, seconds, iterations, stop
            )
        await closed_loop(target.call, plan.concurrency, clock, recorder, seconds, iterations, stop)
        return 0

    if plan.warmup > 0:
        watch(None)
        await phase(Recorder(), plan.warmup, None)
    recorder = Recorder()
    watch(recorder)
    seconds = plan.duration
    if seconds is None and plan.iterations is None and plan.open_loop:
        seconds = stages_duration(list(plan.stages))
    cpu, began = time.process_time(), clock()
    dropped = await phase(recorder, seconds, plan.iterations)
    elapsed, cpu = clock() - began, time.process_time() - cpu
    return ProcessStats(
        latencies=np.frombuffer(recorder.latencies, dtype=np.float64).copy(),
        errors=recorder.errors,
        error_examples=recorder.examples,
        elapsed=elapsed,
        cpu_seconds=cpu,
        dropped=dropped,
    )


# --- processes -----------------------------------------------------------------------------


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _load_process(spec, plan, index, progress, go, halt, results) -> None:
    target = build_target(spec, plan.connections)
    await target.open()
    results.put(("ready", index, os.getpid()))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    current: list[Recorder | None] = [None]
    halted = False

    async def publish() -> None:
        nonlocal halted
        while True:
            halted = halted or halt.is_set()
            recorder = current[0]
            if recorder is not None:
                progress[2 * index] = len(recorder.latencies)
                progress[2 * index + 1] = sum(recorder.errors.values())
            await asyncio.sleep(PUBLISH_INTERVAL)

    publisher = asyncio.create_task(publish())
    try:
        stats = await run_phases(
            target, plan, watch=lambda r: current.__setitem__(0, r), stop=lambda: halted
        )
    finally:
        publisher.cancel()
        await target.close()
    progress[2 * index] = stats.latencies.size
    progress[2 * index + 1] = sum(stats.errors.values())
    results.put(("done", index, stats))


def _process_main(spec, plan, index, progress, go, halt, results) -> None:
    """Entry point of one load process."""
    # Ctrl-C reaches the whole process group: the parent alone handles it, and tells the load
    # processes to stop through `halt`, so they still report what they measured.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _use_uvloop()
    try:
        asyncio.run(_load_process(spec, plan, index, progress, go, halt, results))
    except BaseException as exc:  # told to the parent, which names it; a traceback helps nobody
        results.put(("failed", index, f"{type(exc).__name__}: {exc}"))


@dataclass
class Progress:
    """What the parent knows while the load runs."""

    elapsed: float  # seconds since the start signal
    warming_up: bool
    requests: int  # answered in the measured phase so far
    errors: int


def run(
    spec: TargetSpec,
    plan: LoadPlan,
    processes: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    start_timeout: float = 60.0,
) -> BenchResult:
    """Run `plan` against `spec` from `processes` load processes; pool their measurements."""
    if processes < 1:
        raise BenchError("--processes must be 1 or more")
    if not plan.open_loop and plan.concurrency < processes:
        raise BenchError(
            f"{processes} processes need at least {processes} concurrent users "
            f"(--concurrency is {plan.concurrency})"
        )
    context = multiprocessing.get_context("spawn")
    progress = context.Array("q", 2 * processes, lock=False)
    go, halt = context.Event(), context.Event()
    results = context.Queue()
    workers = [
        context.Process(
            target=_process_main,
            args=(spec, plan.share(index, processes), index, progress, go, halt, results),
            name=f"inferline-bench-{index}",
            daemon=True,
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()

    def interrupted(signum, frame) -> None:
        if halt.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: give up on the results
        halt.set()  # the first: stop sending, and report what was measured

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        _wait_ready(workers, results, start_timeout)
        go.set()
        began = time.monotonic()
        parts: dict[int, ProcessStats] = {}
        while len(parts) < processes:
            try:
                kind, index, payload = results.get(timeout=PUBLISH_INTERVAL)
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and results.empty():
                    raise BenchError("a load process died without a result") from None
            else:
                if kind == "failed":
                    raise BenchError(f"load process {index} failed: {payload}")
                parts[index] = payload
            if on_progress is not None:
                elapsed = time.monotonic() - began
                on_progress(
                    Progress(
                        elapsed,
                        elapsed < plan.warmup,
                        sum(progress[0::2]),
                        sum(progress[1::2]),
                    )
                )
        for worker in workers:
            worker.join(timeout=10)
        result = merge([parts[index] for index in range(processes)])
        result.interrupted = halt.is_set()
        return result
    finally:
        signal.signal(signal.SIGINT, previous)
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)


def _wait_ready(workers, results, timeout: float) -> None:
    ready = 0
    deadline = time.monotonic() + timeout
    while ready < len(workers):
        try:
            kind, index, payload = results.get(timeout=0.2)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise BenchError(f"load processes not ready within {timeout:g} s") from None
            if any(not w.is_alive() for w in workers) and results.empty():
                raise BenchError("a load process exited before it was ready") from None
            continue
        if kind == "failed":
            raise BenchError(f"load process {index} could not start: {payload}")
        ready += 1
