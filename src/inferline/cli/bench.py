"""`inferline bench model|pipeline NAME`: load-test over REST, gRPC or Kafka.

Only translates options into a `LoadPlan` and a `TargetSpec`; `inferline.bench` does the rest.
"""

import os
from pathlib import Path
from typing import Annotated

import orjson
import typer

from inferline.cli import output
from inferline.cli.client import infer_grpc_host, infer_host

bench_app = typer.Typer(
    help="Load-test a model or a pipeline (closed or open loop; REST, gRPC or Kafka), like k6.",
    no_args_is_help=True,
)

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="REST base URL of any V2 server (default: the router, http://127.0.0.1:9000; "
        "env INFERLINE_INFER_HOST).",
    ),
]
Grpc = Annotated[
    str | None,
    typer.Option(
        "--grpc",
        help="Call over gRPC at host:port instead of REST; 'router' for the router's "
        "(127.0.0.1:9001; env INFERLINE_INFER_GRPC_HOST).",
    ),
]
Kafka = Annotated[
    str | None,
    typer.Option(
        "--kafka",
        help="Kafka bootstrap servers: send to the input topic and wait for the output topic "
        "(asynchronous use, as a Kafka client of the platform would).",
    ),
]
Embedded = Annotated[
    Path | None,
    typer.Option(
        "--embedded",
        help="The data folder of a stopped `inferline up`: run the platform in this process "
        "and send to the topics of its embedded bus (which only its owner can use).",
        file_okay=False,
    ),
]
KafkaProperty = Annotated[
    list[str] | None,
    typer.Option("--kafka-property", help="A Kafka client property key=value (repeatable)."),
]
Concurrency = Annotated[
    int, typer.Option("-c", "--concurrency", help="Closed loop: concurrent users.", min=1)
]
Rate = Annotated[
    float | None,
    typer.Option("--rate", help="Open loop: requests per second, constant arrival rate."),
]
Stages = Annotated[
    str | None,
    typer.Option(
        "--stages",
        help="Open loop, k6 ramping-arrival-rate: 'DURATION:RATE,...', e.g. '10s:100,30s:500'.",
    ),
]
StartRate = Annotated[
    float, typer.Option("--start-rate", help="With --stages: the rate the first stage ramps from.")
]
Duration = Annotated[
    str | None,
    typer.Option(
        "-d", "--duration", help="Measured time: 30, 30s, 2m (default 10s; --stages: theirs)."
    ),
]
Iterations = Annotated[
    int | None, typer.Option("-n", "--iterations", help="Measured requests in all.", min=1)
]
Warmup = Annotated[
    str, typer.Option("--warmup", help="Time to run first, not measured: 2, 2s, 500ms.")
]
Data = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A V2 JSON inference request to send (default: made up from the model's metadata).",
        exists=True,
        dir_okay=False,
    ),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", help="Without --data: the value of -1 dimensions.", min=1)
]
Processes = Annotated[
    int, typer.Option("-p", "--processes", help="Load processes (one core each).", min=1)
]
MaxInFlight = Annotated[
    int,
    typer.Option(
        "--max-in-flight",
        help="Open loop: unanswered requests allowed in all; arrivals beyond are dropped.",
        min=1,
    ),
]
Channels = Annotated[
    int,
    typer.Option(
        "--channels",
        help="gRPC channels (connections) per load process, used in turn; a server with "
        "several workers gives each connection to one of them.",
        min=1,
    ),
]
GrpcContents = Annotated[
    str,
    typer.Option(
        "--grpc-contents",
        help="How gRPC requests carry tensors: 'raw' (raw_input_contents, as tritonclient) or "
        "'typed' (each tensor's contents, as MLServer's clients).",
    ),
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds per request.")]
Header = Annotated[
    list[str] | None,
    typer.Option("-H", "--header", help="A header (gRPC: metadata) name=value (repeatable)."),
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")]
Prefix = Annotated[str, typer.Option("--topic-prefix", help="Bus topics' prefix.")]
Namespace = Annotated[str, typer.Option("--namespace", help="Bus topics' namespace.")]


@bench_app.command("model")
def model(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    url: Url = None,
    grpc: Grpc = None,
    kafka: Kafka = None,
    embedded: Embedded = None,
    kafka_property: KafkaProperty = None,
    concurrency: Concurrency = 1,
    rate: Rate = None,
    stages: Stages = None,
    start_rate: StartRate = 0.0,
    duration: Duration = None,
    iterations: Iterations = None,
    warmup: Warmup = "0",
    data: Data = None,
    batch_size: BatchSize = 1,
    processes: Processes = 1,
    max_in_flight: MaxInFlight = 1000,
    channels: Channels = 1,
    grpc_contents: GrpcContents = "raw",
    timeout: Timeout = 60.0,
    header: Header = None,
    json_path: JsonOut = None,
    topic_prefix: Prefix = "seldon",
    namespace: Namespace = "default",
) -> None:
    """Load-test model NAME on any V2 server (the router, inferline serve, MLServer, Triton)."""
    _bench(locals(), pipeline=False)


@bench_app.command("pipeline")
def pipeline(
    name: Annotated[str, typer.Argument(help="The pipeline's name.")],
    url: Url = None,
    grpc: Grpc = None,
    kafka: Kafka = None,
    embedded: Embedded = None,
    kafka_property: KafkaProperty = None,
    concurrency: Concurrency = 1,
    rate: Rate = None,
    stages: Stages = None,
    start_rate: StartRate = 0.0,
    duration: Duration = None,
    iterations: Iterations = None,
    warmup: Warmup = "0",
    data: Data = None,
    batch_size: BatchSize = 1,
    processes: Processes = 1,
    max_in_flight: MaxInFlight = 1000,
    channels: Channels = 1,
    grpc_contents: GrpcContents = "raw",
    timeout: Timeout = 60.0,
    header: Header = None,
    json_path: JsonOut = None,
    topic_prefix: Prefix = "seldon",
    namespace: Namespace = "default",
) -> None:
    """Load-test pipeline NAME through the router (synchronous), or through its topics
    (--kafka, --embedded)."""
    _bench(locals(), pipeline=True)


def _fail(message: str, code: int = 2) -> None:
    output.errors.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _run_embedded(spec, plan, pipeline: bool, processes: int, on_progress):
    from inferline.bench.embedded import EmbeddedError, run_embedded
    from inferline.bench.loadgen import BenchError
    from inferline.server.serve import run

    if processes != 1:
        raise BenchError("--embedded runs the load in the platform's process: --processes 1")
    results = []

    async def main() -> None:
        results.append(await run_embedded(Path(spec.address), spec, plan, pipeline, on_progress))

    try:
        run(main())
    except EmbeddedError as exc:
        raise BenchError(str(exc)) from None
    return results[0]


def _bench(options: dict, pipeline: bool) -> None:
    from inferline.bench.loadgen import BenchError, run
    from inferline.bench.payload import PayloadError
    from inferline.bench.report import LiveProgress, print_result
    from inferline.bench.setup import SetupError, make_plan, make_target

    # The load processes are started by spawn; gRPC's fork handlers only warn here.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    try:
        plan = make_plan(options)
        spec = make_target(
            options, pipeline, f"http://{infer_host(None)}", default_grpc=infer_grpc_host(None)
        )
    except (SetupError, PayloadError) as exc:
        _fail(str(exc))
    what = f"{'pipeline' if pipeline else 'model'} {options['name']}"
    if not plan.open_loop and plan.concurrency < options["processes"]:
        # A load process with no user would only add a process start: one user each is enough.
        options = {**options, "processes": plan.concurrency}
    if plan.open_loop:
        shape = f"open loop, {len(plan.stages)} stage(s) from {plan.start_rate:g} req/s"
        if options["rate"] is not None:
            shape = f"open loop, {options['rate']:g} req/s"
    else:
        shape = f"closed loop, {plan.concurrency} users"
    output.console.print(
        f"bench {what}: {spec.describe()}; {shape}; {options['processes']} process(es)",
        highlight=False,
    )
    seconds = plan.duration
    if seconds is None and plan.iterations is None:
        from inferline.bench.schedule import stages_duration

        seconds = stages_duration(list(plan.stages))
    try:
        with LiveProgress(output.console, seconds, plan.iterations, plan.warmup) as live:
            if spec.kind == "embedded":
                result = _run_embedded(spec, plan, pipeline, options["processes"], live.update)
            else:
                result = run(spec, plan, options["processes"], on_progress=live.update)
    except BenchError as exc:
        _fail(str(exc))
    print_result(
        output.console, f"{what} ({spec.kind})", result, with_platform=spec.kind == "embedded"
    )
    if options["json_path"] is not None:
        doc = {
            "target": {"kind": spec.kind, "name": spec.name, "address": spec.address},
            "mode": "open" if plan.open_loop else "closed",
            "concurrency": None if plan.open_loop else plan.concurrency,
            "processes": options["processes"],
            **result.to_dict(),
        }
        options["json_path"].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if result.requests == 0:
        _fail("no request was answered", code=1)
    if result.errors:
        counts = result.errors_by_status.items()
        statuses = ", ".join(f"{status} x{count}" for status, count in counts)
        first = next(iter(result.error_examples.items()))
        _fail(
            f"{result.errors} of {result.requests} requests failed ({statuses}); "
            f"first {first[0]}: {first[1]}",
            code=1,
        )
