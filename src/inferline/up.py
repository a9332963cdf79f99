"""`inferline up`: the whole platform on one machine.

One core process (this one) holds the scheduler, the router, the embedded bus, the dataflow
engine and the gateways; model servers run as child processes, so one can die and come back
while the rest keeps serving. A server that exits is started again after a short pause; its
models have by then been placed on the others.
"""

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from inferline.agent.serve import physical_memory
from inferline.bus.embedded import EmbeddedBus
from inferline.dataflow.controller import PipelineController
from inferline.dataflow.engine import DataflowEngine
from inferline.dataflow.inspect import inspect
from inferline.dataflow.topics import TopicNames
from inferline.gateways.model_gateway import LocalRouterCaller, ModelGatewayConfig
from inferline.gateways.pipeline_api import PipelineApi
from inferline.gateways.pipeline_gateway import PipelineGateway
from inferline.router.app import Router, RouterConfig
from inferline.router.core import PIPELINE_SUFFIX
from inferline.scheduler.serve import SchedulerService
from inferline.server.serve import stop_on_signal
from inferline.tracing import TracingConfig

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0


@dataclass
class UpConfig:
    data_dir: Path = Path(".inferline")
    servers: int = 1
    # Worker processes per server (`inferline server --workers`).
    workers: int = 1
    # Model servers answer from a front process (`inferline server --front`).
    front: bool = False
    host: str = "127.0.0.1"
    http_port: int = 9000
    grpc_port: int = 9001
    scheduler_port: int = 9004
    server_name: str = "mlserver"
    # Kafka client properties (bootstrap.servers and any other); None: the embedded bus.
    kafka: dict[str, str] | None = None
    # Properties of every topic created on Kafka (max.message.bytes, retention.ms, ...).
    kafka_topics: dict[str, str] = field(default_factory=dict)
    # Model gateway: concurrent calls per model, and seconds one model call may take.
    model_gateway_workers: int = 8
    model_gateway_timeout: float = 120.0
    # Seconds a synchronous pipeline call waits for its answer.
    pipeline_timeout: float = 60.0
    # Where this process and the servers it starts send traces; None: no tracing.
    tracing: TracingConfig | None = None


def open_bus(config: UpConfig):
    if config.kafka is None:
        return EmbeddedBus(config.data_dir / "bus")
    from inferline.bus.kafka import KafkaBus

    return KafkaBus(config.kafka, topic_config=config.kafka_topics)


class ServerSupervisor:
    """Keeps `count` server processes running, each a replica of one Server."""

    def __init__(self, config: UpConfig, scheduler_address: str):
        self.config = config
        self.scheduler_address = scheduler_address
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task] = []
        self._stopping = False
        self.log_dir = config.data_dir / "logs"

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for replica in range(self.config.servers):
            self._watchers.append(asyncio.create_task(self._keep_running(replica)))

    async def _spawn(self, replica: int) -> asyncio.subprocess.Process:
        memory = physical_memory() // max(self.config.servers, 1)
        command = [
            sys.executable, "-m", "inferline", "server",
            "--scheduler", self.scheduler_address,
            "--name", self.config.server_name,
            "--replica", str(replica),
            "--host", self.config.host,
            "--memory", str(memory),
            "--workers", str(self.config.workers),
            "--front" if self.config.front else "--no-front",
            *(["--router", f"{self.config.host}:{self.config.http_port}"]
              if self.config.http_port else []),
            *(self.config.tracing.cli_args() if self.config.tracing else []),
        ]  # fmt: skip
        log_file = (self.log_dir / f"{self.config.server_name}-{replica}.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
        log_file.close()
        self.processes[replica] = process
        return process

    async def _keep_running(self, replica: int) -> None:
        while not self._stopping:
            process = await self._spawn(replica)
            code = await process.wait()
            if self._stopping:
                return
            log.warning(
                "server %s-%d exited with code %s; starting it again",
                self.config.server_name, replica, code,
            )  # fmt: skip
            await asyncio.sleep(RESTART_DELAY)

    async def stop(self) -> None:
        self._stopping = True
        for process in self.processes.values():
            if process.returncode is None:
                process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


class Platform:
    """Everything `inferline up` runs, as a Python object: start it, use its bus, stop it.

    This is also the Python API for asynchronous use on the embedded bus:

        async with Platform(UpConfig(data_dir=Path("state"))) as platform:
            await platform.bus.produce(platform.topics.pipeline("p", "inputs"), request,
                                       headers=[("pipeline", b"p")])
    """

    def __init__(self, config: UpConfig):
        self.config = config
        self.topics = TopicNames()
        self.bus = None
        self.scheduler: SchedulerService | None = None
        self.router: Router | None = None
        self._stack: list = []

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.bus = bus = open_bus(config)
        self._stack.append(bus.close)
        topics = self.topics

        async def inspector(expression: str, request_id: str | None, offset: int) -> list[dict]:
            pipeline = expression.split(".")[0]
            steps = scheduler.scheduler.get("Pipeline", pipeline).spec.step_names()
            return await inspect(bus, topics, pipeline, steps, expression, request_id, offset)

        self.scheduler = scheduler = SchedulerService(
            config.data_dir, config.host, config.scheduler_port, inspector=inspector
        )
        await scheduler.start()
        self._stack.append(scheduler.stop)
        # Servers start before the router, whose gRPC threads would otherwise be forked too.
        supervisor = ServerSupervisor(config, f"{config.host}:{scheduler.port}")
        await supervisor.start()
        self._stack.append(supervisor.stop)

        gateway = PipelineGateway(bus, topics, instance="core", timeout=config.pipeline_timeout)
        pipelines = PipelineApi(gateway, scheduler.scheduler)
        self.router = router = Router(
            RouterConfig(host=config.host, http_port=config.http_port, grpc_port=config.grpc_port),
            scheduler.scheduler,
            rest_handlers={PIPELINE_SUFFIX: pipelines.rest},
            grpc_handlers={PIPELINE_SUFFIX: pipelines.grpc},
        )
        await router.start()
        self._stack.append(router.stop)
        # Steps call their models through the router, as any client does (in-process here).
        caller = LocalRouterCaller(router.core, timeout=config.model_gateway_timeout)
        self._stack.append(caller.close)
        engine = DataflowEngine(
            bus,
            topics,
            caller,
            on_status=scheduler.scheduler.set_pipeline_status,
            gateway_config=ModelGatewayConfig(workers=config.model_gateway_workers),
        )
        gateway.describe_missing = engine.describe_missing
        self._stack += [gateway.close, engine.close]
        controller = asyncio.create_task(
            PipelineController(scheduler.scheduler, engine, gateway).run()
        )

        async def stop_controller() -> None:
            controller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await controller

        self._stack.append(stop_controller)

    async def stop(self) -> None:
        """Stops what started, newest first."""
        while self._stack:
            await self._stack.pop()()

    async def __aenter__(self) -> "Platform":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def up(config: UpConfig) -> None:
    stop = stop_on_signal()
    async with Platform(config) as platform:
        print(
            f"inferline is up: REST {config.host}:{platform.router.http_port}, gRPC "
            f"{config.host}:{platform.router.grpc_port}, scheduler {config.host}:"
            f"{platform.scheduler.port}; {config.servers} server(s); data in "
            f"{config.data_dir.resolve()}",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            print("stopping inferline...", flush=True)
