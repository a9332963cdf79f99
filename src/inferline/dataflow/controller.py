"""Keeps the dataflow engine and the pipeline gateway running what the scheduler holds: each
pipeline's current version, started when it appears or changes, stopped when it goes."""

import asyncio
import logging

from inferline.dataflow.engine import DataflowEngine
from inferline.gateways.pipeline_gateway import PipelineGateway
from inferline.scheduler.core import Scheduler

log = logging.getLogger(__name__)


class PipelineController:
    def __init__(self, scheduler: Scheduler, engine: DataflowEngine, gateway: PipelineGateway):
        self.scheduler = scheduler
        self.engine = engine
        self.gateway = gateway
        self.running: dict[str, int] = {}

    async def run(self) -> None:
        generation = -1
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("could not bring pipelines up to date; trying again")
                await asyncio.sleep(1.0)
            generation = await self.scheduler.wait_for_generation(generation, 30.0)

    async def sync(self) -> None:
        desired = self.scheduler.desired_pipelines()
        # Side by side: on Kafka each start waits for consumer group joins (3 s on Tansu), so
        # one after another, a restart with ten pipelines took half a minute.
        starts = [
            self._start(name, version, spec)
            for name, (version, spec) in desired.items()
            if self.running.get(name) != version
        ]
        failures = [
            result
            for result in await asyncio.gather(*starts, return_exceptions=True)
            if isinstance(result, BaseException)
        ]
        if failures:
            raise failures[0]
        for name in [n for n in self.running if n not in desired]:
            await self.engine.stop_pipeline(name)
            await self.gateway.stop_serving(name)
            del self.running[name]

    async def _start(self, name: str, version: int, spec) -> None:
        await self.gateway.serve(name, version)
        await self.engine.start_pipeline(
            name, version, spec, ready_also=[self.gateway.listener_ready(name)]
        )
        self.running[name] = version
