"""PipelineController with a fake scheduler, engine and gateway: what it starts and stops for the
pipelines the scheduler holds."""

import asyncio

import pytest

from inferline.dataflow.controller import PipelineController


class FakeScheduler:
    def __init__(self, desired: dict):
        self.desired = desired

    def desired_pipelines(self) -> dict:
        return dict(self.desired)


class FakeGateway:
    """`serve` waits until `together` pipelines are being served at once (a Kafka group join
    takes seconds, so starts must overlap), if asked to."""

    def __init__(self, together: int = 0):
        self.together = together
        self.serving: list[str] = []
        self.stopped: list[str] = []
        self._all_in = asyncio.Event()

    async def serve(self, name: str, version: int) -> None:
        self.serving.append(name)
        if len(self.serving) >= self.together:
            self._all_in.set()
        await self._all_in.wait()

    def listener_ready(self, name: str) -> asyncio.Event:
        return asyncio.Event()

    async def stop_serving(self, name: str) -> None:
        self.stopped.append(name)


class FakeEngine:
    def __init__(self, failing: str = ""):
        self.failing = failing
        self.started: list[tuple[str, int]] = []
        self.stopped: list[str] = []

    async def start_pipeline(self, name, version, spec, ready_also=()) -> None:
        if name == self.failing:
            raise RuntimeError(f"cannot create the topics of {name}")
        self.started.append((name, version))

    async def stop_pipeline(self, name: str) -> None:
        self.stopped.append(name)


async def test_pipelines_start_side_by_side_not_one_after_another():
    desired = {f"p{n}": (1, None) for n in range(5)}
    engine, gateway = FakeEngine(), FakeGateway(together=5)
    controller = PipelineController(FakeScheduler(desired), engine, gateway)
    # One at a time, the first start would wait for the other four for ever.
    await asyncio.wait_for(controller.sync(), 2)
    assert sorted(engine.started) == [(name, 1) for name in sorted(desired)]
    assert controller.running == {name: 1 for name in desired}


async def test_a_pipeline_that_fails_to_start_does_not_hold_back_the_others():
    desired = {"good": (1, None), "bad": (1, None), "also-good": (2, None)}
    engine = FakeEngine(failing="bad")
    controller = PipelineController(FakeScheduler(desired), engine, FakeGateway())
    with pytest.raises(RuntimeError, match="cannot create the topics of bad"):
        await controller.sync()
    assert controller.running == {"good": 1, "also-good": 2}
    # The next sync (the controller retries) tries only what is not running yet.
    engine.failing = ""
    await controller.sync()
    assert engine.started[-1] == ("bad", 1)
    assert controller.running == {"good": 1, "also-good": 2, "bad": 1}


async def test_a_new_version_replaces_the_running_one_and_a_removed_pipeline_stops():
    scheduler = FakeScheduler({"a": (1, None), "b": (1, None)})
    engine, gateway = FakeEngine(), FakeGateway()
    controller = PipelineController(scheduler, engine, gateway)
    await controller.sync()
    scheduler.desired = {"a": (2, None)}
    await controller.sync()
    assert engine.started[-1] == ("a", 2)
    assert (engine.stopped, gateway.stopped) == (["b"], ["b"])
    assert controller.running == {"a": 2}
