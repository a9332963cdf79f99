"""`inferline`: the command line entry point."""

import logging
import tempfile
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="inferline: serve ML models over the Open Inference Protocol (V2).",
    no_args_is_help=True,
    add_completion=False,
)


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
    ] = 100 * 1024 * 1024,
    max_grpc_message_size: Annotated[
        int, typer.Option(help="Largest gRPC message in bytes, each way.")
    ] = 100 * 1024 * 1024,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Serve every model found in MODEL_DIRS over V2 REST and gRPC (like `mlserver start`)."""
    from inferline.server.serve import ServerConfig, run, serve

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(
        model_dirs=model_dirs,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_request_size=max_request_size,
        max_grpc_message_size=max_grpc_message_size,
    )
    run(serve(config))


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where to write the demo model (default: a temp folder).")
    ] = None,
) -> None:
    """Train an iris model, serve it with `inferline serve`, and print a prediction."""
    from inferline.demo import run_demo

    if workdir is not None:
        run_demo(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="inferline-demo-") as tmp:
        run_demo(Path(tmp))
