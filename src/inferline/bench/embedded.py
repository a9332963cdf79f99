"""Load on the embedded bus's topics: the platform runs in this process, from its data folder.

The embedded bus belongs to one process (a lock on its folder), so nothing outside a running
`inferline up` can write to its topics. The closest real thing to a Kafka client of the platform
is this: start the platform here from the same folder (`inferline up` must be stopped; its
models and pipelines come back from the folder's state), wait until the target is ready, and
produce to and read from the topics on the platform's own loop (`BusTarget`). The load shares
that one process with the platform (the dataflow engine, gateways and router; the model servers
are separate processes), so the client's CPU share is reported but cannot be split off.
"""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from inferline.bench.bus_targets import BusTarget
from inferline.bench.loadgen import LoadPlan, Progress, Recorder, run_phases
from inferline.bench.stats import BenchResult, merge
from inferline.bench.targets import TargetSpec


class EmbeddedError(Exception):
    pass


def _ready(scheduler, name: str, pipeline: bool) -> tuple[bool, str]:
    try:
        status = scheduler.pipeline_status(name) if pipeline else scheduler.model_status(name)
    except Exception as exc:  # unknown name: the scheduler's own message names it
        raise EmbeddedError(str(getattr(exc, "message", exc))) from None
    if pipeline:
        ok = status["state"] == "PipelineReady" and status["modelsReady"]
    else:
        ok = status["state"] == "ModelAvailable"
    return ok, f"{status['state']} {status.get('reason') or ''}".strip()


async def run_embedded(
    data_dir: Path,
    spec: TargetSpec,
    plan: LoadPlan,
    pipeline: bool,
    on_progress: Callable[[Progress], None] | None = None,
    ready_timeout: float = 120.0,
) -> BenchResult:
    from inferline.demo import free_port
    from inferline.up import Platform, UpConfig

    config = UpConfig(
        data_dir=data_dir,
        host="127.0.0.1",
        http_port=free_port(),
        grpc_port=free_port(),
        scheduler_port=free_port(),
    )
    platform = Platform(config)
    try:
        await platform.start()
    except RuntimeError as exc:
        await platform.stop()
        raise EmbeddedError(
            f"{exc}: stop `inferline up` on {data_dir} first, or bench through the router "
            "(without --embedded)"
        ) from None
    try:
        scheduler = platform.scheduler.scheduler
        deadline = time.monotonic() + ready_timeout
        while not (state := _ready(scheduler, spec.name, pipeline))[0]:
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"'{spec.name}' is not ready after {ready_timeout:g} s: {state[1]}"
                )
            await asyncio.sleep(0.2)
        target = BusTarget(platform.bus, spec)
        try:
            await target.open()
        except RuntimeError as exc:
            raise EmbeddedError(str(exc)) from None
        current: list[Recorder | None] = [None]
        began = time.monotonic()

        async def report() -> None:
            while on_progress is not None:
                recorder = current[0]
                done = len(recorder.latencies) if recorder else 0
                errors = sum(recorder.errors.values()) if recorder else 0
                elapsed = time.monotonic() - began
                on_progress(Progress(elapsed, elapsed < plan.warmup, done, errors))
                await asyncio.sleep(0.1)

        reporter = asyncio.create_task(report())
        try:
            stats = await run_phases(target, plan, watch=lambda r: current.__setitem__(0, r))
        finally:
            reporter.cancel()
            await target.close()
        return merge([stats])
    finally:
        await platform.stop()
