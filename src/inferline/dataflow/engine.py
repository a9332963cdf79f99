"""The dataflow engine: runs every pipeline's current version as stage runners, and a model
gateway for every model a running pipeline uses.

Consumer groups are named per pipeline version and stage; a new version's stages take over the
committed offsets of the same stages of the version it replaces, so nothing written while
versions change is lost or skipped.
"""

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from inferline.bus.base import Bus
from inferline.dataflow.plan import PipelinePlan, Source, plan_pipeline
from inferline.dataflow.stage import StageRunner
from inferline.dataflow.topics import TopicNames
from inferline.gateways.model_gateway import ModelCaller, ModelGateway, ModelGatewayConfig
from inferline.resources import PipelineSpec

log = logging.getLogger(__name__)

# How many recent request keys the engine remembers, to say which steps answered a timed-out call.
SEEN_KEYS = 10_000
READY_TIMEOUT = 60.0


@dataclass
class PipelineRun:
    plan: PipelinePlan
    runners: list[StageRunner]
    tasks: list[asyncio.Task]
    # request key -> steps (or pipelines) whose messages for it were seen
    seen: OrderedDict = field(default_factory=OrderedDict)

    def note(self, key: bytes, source: Source) -> None:
        if source.reference.endswith(".outputs"):
            self.seen.setdefault(key, set()).add(source.waits_on)
            self.seen.move_to_end(key)
            while len(self.seen) > SEEN_KEYS:
                self.seen.popitem(last=False)


class DataflowEngine:
    def __init__(
        self,
        bus: Bus,
        topics: TopicNames,
        caller: ModelCaller,
        on_status: Callable[[str, int, str, str], Awaitable[None] | None] | None = None,
        gateway_config: ModelGatewayConfig | None = None,
    ):
        self.bus = bus
        self.topics = topics
        self.caller = caller
        self.on_status = on_status
        self.gateway_config = gateway_config
        self.pipelines: dict[str, PipelineRun] = {}
        self.gateways: dict[str, tuple[ModelGateway, asyncio.Task]] = {}
        self._watchers: set[asyncio.Task] = set()

    async def start_pipeline(
        self, name: str, version: int, spec: PipelineSpec, ready_also: list[asyncio.Event] = ()
    ) -> PipelinePlan:
        """Run `version` of pipeline `name`, replacing any running version. It is reported
        ready once every stage and model gateway reads its topics (and `ready_also` are set)."""
        plan = plan_pipeline(name, version, spec, self.topics)
        previous = self.pipelines.get(name)
        await self.stop_pipeline(name)
        for stage in plan.stages:
            for topic in (*stage.topics, stage.sink_topic):
                await self.bus.create_topic(topic)
        if previous is not None:
            await self._hand_over(previous.plan, plan)
        run = PipelineRun(plan, [], [])
        for stage in plan.stages:
            runner = StageRunner(
                stage,
                version,
                self.bus,
                self.topics,
                group=stage_group(plan, stage),
                on_seen=run.note,
            )
            run.runners.append(runner)
            run.tasks.append(asyncio.create_task(runner.run(), name=f"{name} {stage.name}"))
        self.pipelines[name] = run
        for model in plan.models:
            await self._ensure_gateway(model)
        await self._report(name, version, "PipelineCreating", "")
        self._watchers.add(asyncio.create_task(self._watch_ready(name, run, list(ready_also))))
        return plan

    async def _hand_over(self, old: PipelinePlan, new: PipelinePlan) -> None:
        """A stage the replaced version also had starts where that one stopped, so nothing
        written while versions change is skipped; stages new to this version start at the end
        of their topics, as Seldon's do."""
        old_stages = {stage.name: stage for stage in old.stages}
        for stage in new.stages:
            before = old_stages.get(stage.name)
            if before is None:
                continue
            topics = sorted(stage.topics & before.topics)
            group = stage_group(new, stage)
            if not topics or await self.bus.committed(group, topics):
                continue  # nothing shared, or this version already ran (a restart)
            offsets = await self.bus.committed(stage_group(old, before), topics)
            if offsets:
                await self.bus.commit_group(group, offsets)

    async def _watch_ready(self, name: str, run: PipelineRun, also: list[asyncio.Event]) -> None:
        waits = [r.ready.wait() for r in run.runners] + [event.wait() for event in also]
        waits += [self.gateways[m][0].ready.wait() for m in run.plan.models]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), READY_TIMEOUT)
        except TimeoutError:
            if self.pipelines.get(name) is run:
                await self._report(
                    name, run.plan.version, "PipelineFailed", "stage consumers did not join in time"
                )
            return
        if self.pipelines.get(name) is run:
            await self._report(name, run.plan.version, "PipelineReady", "created pipeline")

    async def stop_pipeline(self, name: str) -> None:
        run = self.pipelines.pop(name, None)
        if run is None:
            return
        for task in run.tasks:
            task.cancel()
        await asyncio.gather(*run.tasks, return_exceptions=True)
        await self._stop_unused_gateways()

    async def close(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        for name in list(self.pipelines):
            await self.stop_pipeline(name)
        for model in list(self.gateways):
            await self._stop_gateway(model)

    def describe_missing(self, pipeline: str, key: bytes) -> str:
        """For a request that timed out: which steps answered and which did not."""
        run = self.pipelines.get(pipeline)
        if run is None:
            return ""
        answered = run.seen.get(key, set())
        missing = [step for step in run.plan.steps if step not in answered]
        if not missing:
            return "every step answered, but the output stage had nothing to emit"
        return "no answer yet from step(s) " + ", ".join(missing)

    async def _ensure_gateway(self, model: str) -> None:
        if model in self.gateways:
            return
        gateway = ModelGateway(model, self.bus, self.topics, self.caller, self.gateway_config)
        self.gateways[model] = (gateway, asyncio.create_task(gateway.run(), name=f"gw {model}"))

    async def _stop_unused_gateways(self) -> None:
        used = {m for run in self.pipelines.values() for m in run.plan.models}
        for model in [m for m in self.gateways if m not in used]:
            await self._stop_gateway(model)

    async def _stop_gateway(self, model: str) -> None:
        _, task = self.gateways.pop(model)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _report(self, name: str, version: int, state: str, reason: str) -> None:
        log.info("pipeline %s version %d: %s %s", name, version, state, reason)
        if self.on_status is not None:
            result = self.on_status(name, version, state, reason)
            if asyncio.iscoroutine(result):
                await result


def stage_group(plan: PipelinePlan, stage) -> str:
    """Each version has its own consumer groups, so an older version loaded again does not
    resume from the point it reached long ago."""
    return f"dataflow.{plan.name}.v{plan.version}.{stage.name.replace(' ', '.')}"
