"""`inferline`: the command line entry point."""

import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from inferline.cli import bench, resources

app = typer.Typer(
    help="inferline: serve ML models over the Open Inference Protocol (V2), one machine or many.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LogLevel = Annotated[str, typer.Option("--log-level", help="Logging level.")]
MiB = 1024 * 1024
Front = Annotated[
    bool,
    typer.Option(
        "--front/--no-front",
        help="Serve REST and gRPC from a front process that passes each request to the worker "
        "processes holding the models (MLServer's shape): HTTP and the model use two cores, "
        "and requests, not connections, are spread over several workers.",
    ),
]
# Tracing (OpenTelemetry, the `tracing` extra); the OTEL_EXPORTER_OTLP_* variables work too.
TracingEndpoint = Annotated[
    str | None,
    typer.Option(
        help="OTLP collector to send traces to, e.g. http://127.0.0.1:4318 (default: "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; unset: no tracing)."
    ),
]
TracingProtocol = Annotated[str | None, typer.Option(help="OTLP protocol: http (default) or grpc.")]
TracingRatio = Annotated[
    float | None,
    typer.Option(help="Share of new traces recorded, 0-1 (default 1); callers' choice is kept."),
]


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _tracing(service: str, endpoint: str | None, protocol: str | None, ratio: float | None):
    """Start tracing if asked for (flags or environment); its setting, or None."""
    from inferline import tracing

    try:
        config = tracing.config_from(endpoint, protocol, ratio)
        if config is not None:
            tracing.setup(service, config)
    except tracing.TracingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    return config


def _run_traced(main) -> None:
    """Run `main` (a coroutine), then send the spans still buffered."""
    from inferline import tracing
    from inferline.server.serve import run

    try:
        run(main)
    finally:
        tracing.shutdown()


def _no_grpc_fork_handlers() -> None:
    """Processes are started by fork+exec (servers, workers, the template) or forked from a
    template that never used gRPC: gRPC's fork handlers are not needed, and would warn about
    gRPC threads on every start. Set before grpc is imported."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


@app.command()
def serve(
    model_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Model folders, or folders holding model folders.",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ],
    http_port: Annotated[int, typer.Option(help="REST port.")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8081,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    max_request_size: Annotated[
        int, typer.Option(help="Largest REST request body in bytes; larger ones get 413.")
    ] = 100 * MiB,
    max_grpc_message_size: Annotated[
        int, typer.Option(help="Largest gRPC message in bytes, each way.")
    ] = 100 * MiB,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Worker processes sharing the ports (one per core scales CPU-bound models)."
        ),
    ] = 1,
    front: Front = False,
    tracing_endpoint: TracingEndpoint = None,
    tracing_protocol: TracingProtocol = None,
    tracing_ratio: TracingRatio = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Serve every model found in MODEL_DIRS over V2 REST and gRPC (like `mlserver start`)."""
    _no_grpc_fork_handlers()
    from inferline.server.serve import ServerConfig, serve

    _logging(log_level)
    tracing_config = _tracing("inferline-server", tracing_endpoint, tracing_protocol, tracing_ratio)
    config = ServerConfig(
        model_dirs=model_dirs,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_request_size=max_request_size,
        max_grpc_message_size=max_grpc_message_size,
        workers=workers,
        front=front,
        tracing=tracing_config,
    )
    _run_traced(serve(config))


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where to write the demo model (default: a temp folder).")
    ] = None,
) -> None:
    """Run the platform end to end: `inferline up`, load a model, call it, stop."""
    from inferline.demo import run_demo

    if workdir is not None:
        run_demo(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="inferline-demo-") as tmp:
        run_demo(Path(tmp))


@app.command()
def up(
    servers: Annotated[int, typer.Option("--servers", help="Model server processes.")] = 1,
    workers: Annotated[
        int, typer.Option(help="Worker processes per model server, sharing its load.")
    ] = 1,
    front: Front = False,
    data_dir: Annotated[Path, typer.Option(help="Where state and logs are kept.")] = Path(
        ".inferline"
    ),
    http_port: Annotated[int, typer.Option(help="The router's REST port.")] = 9000,
    grpc_port: Annotated[int, typer.Option(help="The router's gRPC port.")] = 9001,
    scheduler_port: Annotated[int, typer.Option(help="The scheduler's API port.")] = 9004,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers: pipelines' topics go there, not embedded."),
    ] = None,
    kafka_property: Annotated[
        list[str] | None,
        typer.Option(help="A Kafka client property key=value (repeatable): SASL, TLS, ..."),
    ] = None,
    kafka_topic_property: Annotated[
        list[str] | None,
        typer.Option(
            help="A property of every topic created on Kafka, key=value (repeatable): "
            "max.message.bytes, retention.ms, ..."
        ),
    ] = None,
    model_gateway_workers: Annotated[
        int, typer.Option(help="Concurrent calls per model from pipelines.")
    ] = 8,
    model_gateway_timeout: Annotated[
        float, typer.Option(help="Seconds a pipeline step's model call may take.")
    ] = 120.0,
    pipeline_timeout: Annotated[
        float, typer.Option(help="Seconds a synchronous pipeline call waits for its answer.")
    ] = 60.0,
    tracing_endpoint: TracingEndpoint = None,
    tracing_protocol: TracingProtocol = None,
    tracing_ratio: TracingRatio = None,
    log_level: LogLevel = "WARNING",
) -> None:
    """Run everything on this machine: scheduler, router, pipelines and model servers.
    Ctrl-C stops it."""
    _no_grpc_fork_handlers()
    from inferline.up import UpConfig
    from inferline.up import up as run_up

    _logging(log_level)
    tracing_config = _tracing("inferline-core", tracing_endpoint, tracing_protocol, tracing_ratio)
    kafka_config = None
    if kafka:
        kafka_config = {"bootstrap.servers": kafka, **_pairs(kafka_property, "--kafka-property")}
    elif kafka_property or kafka_topic_property:
        raise typer.BadParameter("--kafka-property and --kafka-topic-property need --kafka")
    config = UpConfig(
        data_dir=data_dir,
        servers=servers,
        workers=workers,
        front=front,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        scheduler_port=scheduler_port,
        kafka=kafka_config,
        kafka_topics=_pairs(kafka_topic_property, "--kafka-topic-property"),
        model_gateway_workers=model_gateway_workers,
        model_gateway_timeout=model_gateway_timeout,
        pipeline_timeout=pipeline_timeout,
        tracing=tracing_config,
    )
    _run_traced(run_up(config))


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{option} needs key=value, got '{item}'")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command()
def scheduler(
    port: Annotated[int, typer.Option(help="API port.")] = 9004,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    data_dir: Annotated[Path, typer.Option(help="Where state is kept.")] = Path(".inferline"),
    log_level: LogLevel = "INFO",
) -> None:
    """Run the scheduler alone (for many machines)."""
    from inferline.scheduler.serve import SchedulerService
    from inferline.server.serve import run, stop_on_signal

    _logging(log_level)

    async def main() -> None:
        stop = stop_on_signal()
        service = SchedulerService(data_dir, host, port)
        await service.start()
        logging.getLogger("inferline").warning("scheduler on %s:%d", host, service.port)
        await stop.wait()
        await service.stop()

    run(main())


@app.command()
def router(
    scheduler_address: Annotated[
        str, typer.Option("--scheduler", help="Scheduler host:port.")
    ] = "127.0.0.1:9004",
    http_port: Annotated[int, typer.Option(help="REST port.")] = 9000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 9001,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    timeout: Annotated[float, typer.Option(help="Default seconds per inference call.")] = 60.0,
    tracing_endpoint: TracingEndpoint = None,
    tracing_protocol: TracingProtocol = None,
    tracing_ratio: TracingRatio = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Run a router alone, following a scheduler's routes (for many machines)."""
    from inferline.router.app import Router, RouterConfig
    from inferline.router.table import HttpRouteSource
    from inferline.server.serve import stop_on_signal

    _logging(log_level)
    _tracing("inferline-router", tracing_endpoint, tracing_protocol, tracing_ratio)

    async def main() -> None:
        stop = stop_on_signal()
        config = RouterConfig(host=host, http_port=http_port, grpc_port=grpc_port, timeout=timeout)
        instance = Router(config, HttpRouteSource(scheduler_address))
        await instance.start()
        logging.getLogger("inferline").warning(
            "router: REST %s:%d, gRPC %s:%d", host, instance.http_port, host, instance.grpc_port
        )
        await stop.wait()
        await instance.stop()

    _run_traced(main())


server_app = typer.Typer(
    help="Run a model server under a scheduler, or list and inspect servers.",
    invoke_without_command=True,
)


@server_app.callback()
def server(
    ctx: typer.Context,
    scheduler_address: Annotated[
        str, typer.Option("--scheduler", help="Scheduler host:port to register with.")
    ] = "127.0.0.1:9004",
    name: Annotated[str, typer.Option(help="Server name (replicas share it).")] = "mlserver",
    replica: Annotated[int, typer.Option(help="This process's replica index.")] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    advertise_host: Annotated[
        str | None, typer.Option(help="Address others reach this server on.")
    ] = None,
    http_port: Annotated[int, typer.Option(help="REST port (0: any free port).")] = 0,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: any free port).")] = 0,
    capabilities: Annotated[
        str | None, typer.Option(help="Comma-separated capabilities (default: what is installed).")
    ] = None,
    memory: Annotated[int, typer.Option(help="Bytes of model memory offered (0: all RAM).")] = 0,
    overcommit: Annotated[int, typer.Option(help="Memory overcommit percentage.")] = 10,
    router_address: Annotated[
        str | None,
        typer.Option("--router", help="Router REST host:port, which explainers call through."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Worker processes sharing the ports (one per core scales CPU-bound models)."
        ),
    ] = 1,
    front: Front = False,
    tracing_endpoint: TracingEndpoint = None,
    tracing_protocol: TracingProtocol = None,
    tracing_ratio: TracingRatio = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Without a sub-command: run a model server that takes its models from a scheduler."""
    if ctx.invoked_subcommand is not None:
        return
    _no_grpc_fork_handlers()
    from inferline.agent.serve import DEFAULT_CAPABILITIES, NodeConfig, serve_node
    from inferline.server.serve import ServerConfig

    _logging(log_level)
    tracing_config = _tracing("inferline-server", tracing_endpoint, tracing_protocol, tracing_ratio)
    config = NodeConfig(
        scheduler=scheduler_address,
        server_name=name,
        replica=replica,
        capabilities=capabilities.split(",") if capabilities else list(DEFAULT_CAPABILITIES),
        memory=memory,
        overcommit_percentage=overcommit,
        advertise_host=advertise_host,
        router=router_address,
        server=ServerConfig(
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            workers=workers,
            front=front,
            tracing=tracing_config,
        ),
    )
    _run_traced(serve_node(config))


server_app.command("list")(resources.server_list)
server_app.command("status")(resources.server_status)

app.command("load")(resources.load)
app.command("unload")(resources.unload)
app.command("status")(resources.status)
app.add_typer(resources.model_app, name="model")
app.add_typer(server_app, name="server")
app.add_typer(resources.pipeline_app, name="pipeline")
app.add_typer(resources.stored_group("experiment"), name="experiment")
app.add_typer(bench.bench_app, name="bench")
