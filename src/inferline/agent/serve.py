"""A server process under a scheduler: the model server plus its agent, on one event loop."""

import asyncio
import logging
import os
from dataclasses import dataclass, field

from inferline.agent.agent import Agent, AgentIdentity
from inferline.runtimes.registry import installed_runtime_tags
from inferline.server.serve import ModelServer, ServerConfig, stop_on_signal
from inferline.server.workers import WorkerPool, start_or_exit

log = logging.getLogger(__name__)

# What this server can run; models whose requirements are not all here go elsewhere. A runtime's
# tag is offered only when its library (an optional extra) is installed: `alibi-explain` (the tag
# Seldon places every explainer by) and `alibi-detect` only where Alibi is. `explainer` is our
# permissive explainer runtime, which always runs (its `feature_importance` needs only numpy):
# explainers of the types it implements place on it too (scheduler.placement).
DEFAULT_CAPABILITIES = [
    "inferline",
    "mlserver",
    "python",
    "explainer",
    *installed_runtime_tags(),
]


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class NodeConfig:
    scheduler: str
    server_name: str = "mlserver"
    replica: int = 0
    capabilities: list[str] = field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    memory: int = 0  # bytes; 0 means the machine's physical memory
    overcommit_percentage: int = 10
    # The host other components use to reach this server (defaults to the listen host).
    advertise_host: str | None = None
    # The router's REST "host:port", which explainers call their target through.
    router: str | None = None
    server: ServerConfig = field(
        default_factory=lambda: ServerConfig(host="127.0.0.1", http_port=0, grpc_port=0)
    )


async def serve_node(config: NodeConfig) -> None:
    stop = stop_on_signal()
    if config.server.workers > 1 or config.server.front:
        # The agent stays in this process; the pool applies what it loads to every worker.
        server = held = WorkerPool(config.server)
        await start_or_exit(server)
    else:
        server = ModelServer(config.server)
        held = server.dataplane
        await server.start()
    host = config.advertise_host or config.server.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    identity = AgentIdentity(
        server=config.server_name,
        replica=config.replica,
        http=f"{host}:{server.http_port}",
        grpc=f"{host}:{server.grpc_port}",
        capabilities=config.capabilities,
        # Every worker holds its own copy of each model, so the scheduler, which counts each
        # model once per server, is offered a worker's share.
        memory=(config.memory or physical_memory()) // config.server.workers,
        overcommit_percentage=config.overcommit_percentage,
    )
    # No model folders of its own: what this server holds is the scheduler's business.
    await held.load_repository()
    agent = Agent(held, config.scheduler, identity, config.router)
    agent_task = asyncio.create_task(agent.run())
    log.warning(
        "server %s replica %d (%d worker(s)): HTTP %s, gRPC %s, scheduler %s",
        config.server_name,
        config.replica,
        config.server.workers,
        identity.http,
        identity.grpc,
        config.scheduler,
    )
    await stop.wait()
    agent_task.cancel()
    await server.stop()
