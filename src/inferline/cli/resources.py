"""Resource commands: `load` / `unload` / `status -f FILE`, and the `model`, `server`,
`pipeline` and `experiment` groups, as Seldon's CLI has them."""

import sys
from typing import Annotated

import orjson
import typer

from inferline.cli import output
from inferline.cli.client import (
    CLIError,
    SchedulerClient,
    infer_grpc_host,
    infer_host,
    read_file,
    scheduler_host,
)
from inferline.cli.infer import InferOptions, Inferrer, run_loop
from inferline.resources import ResourceError, load_resources

SchedulerHost = Annotated[
    str | None,
    typer.Option("--scheduler-host", help="Scheduler host:port [env INFERLINE_SCHEDULER_HOST]."),
]
FileOption = Annotated[str, typer.Option("-f", "--file", help="A (multi-document) YAML file.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WaitFor = Annotated[
    str | None,
    typer.Option("-w", "--wait", help="Wait until the state is this, e.g. ModelAvailable."),
]
Timeout = Annotated[float, typer.Option("-t", "--timeout", help="Seconds to wait with -w.")]


def fail(message: str) -> None:
    output.errors.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def client(host: str | None) -> SchedulerClient:
    return SchedulerClient(scheduler_host(host))


def _print_results(results: list[dict[str, str]]) -> None:
    for r in results:
        output.console.print(f"{r['kind'].lower()}/{r['name']} {r['result']}", highlight=False)


# --- top level: load / unload / status ---------------------------------------------------------


def _parsed(file: str) -> tuple[str, list]:
    """The file's text and resources, validated here first so that errors name the file."""
    text = read_file(file)
    try:
        return text, load_resources(text, source=file)
    except ResourceError as exc:
        raise CLIError(exc.message) from None


def _checked(file: str) -> str:
    return _parsed(file)[0]


def load(file: FileOption, scheduler_host: SchedulerHost = None) -> None:
    """Apply every resource in FILE (create or update)."""
    try:
        _print_results(client(scheduler_host).apply(_checked(file)))
    except CLIError as exc:
        fail(str(exc))


def unload(file: FileOption, scheduler_host: SchedulerHost = None) -> None:
    """Delete every resource named in FILE."""
    try:
        _print_results(client(scheduler_host).delete_all(_checked(file)))
    except CLIError as exc:
        fail(str(exc))


_READY = {"Model": "ModelAvailable"}


def status(
    file: FileOption,
    wait: Annotated[bool, typer.Option("-w", "--wait", help="Wait until all are ready.")] = False,
    timeout: Timeout = 60.0,
    scheduler_host: SchedulerHost = None,
    as_json: AsJson = False,
) -> None:
    """Status of every resource in FILE; with -w, wait until every model is available."""
    try:
        api = client(scheduler_host)
        statuses = []
        for kind, name in [(r.kind, r.name) for r in _parsed(file)[1]]:
            plural = f"{kind.lower()}s"
            if wait and kind in _READY:
                statuses.append((kind, api.wait_for(plural, name, _READY[kind], timeout)))
            else:
                statuses.append((kind, api.status(plural, name)))
    except CLIError as exc:
        fail(str(exc))
    if as_json:
        output.print_json([s for _, s in statuses])
        return
    rows = []
    for kind, s in statuses:
        name = s.get("modelName") or s.get("serverName") or s.get("name")
        state = s.get("state", f"{s.get('availableReplicas', 0)} replicas")
        rows.append([kind, name, state, s.get("reason", "")])
    output.print_table(None, ["kind", "name", "state", "reason"], rows)


# --- model -------------------------------------------------------------------------------------

model_app = typer.Typer(help="Load, inspect and call models.", no_args_is_help=True)


@model_app.command("load")
def model_load(file: FileOption, scheduler_host: SchedulerHost = None) -> None:
    """Load (create or update) the Model(s) in FILE."""
    load(file, scheduler_host)


@model_app.command("unload")
def model_unload(
    name: Annotated[str | None, typer.Argument(help="Model name.")] = None,
    file: Annotated[str | None, typer.Option("-f", "--file")] = None,
    scheduler_host: SchedulerHost = None,
) -> None:
    """Unload a model by name, or the Model(s) in FILE."""
    try:
        if file:
            _print_results(client(scheduler_host).delete_all(read_file(file)))
        elif name:
            _print_results([client(scheduler_host).delete("models", name)])
        else:
            raise CLIError("give a model name or -f FILE")
    except CLIError as exc:
        fail(str(exc))


def _status(plural: str, name: str, wait: str | None, timeout: float, host: str | None):
    """A resource's status, after waiting for state `wait` when given; fails the command."""
    try:
        api = client(host)
        return api.wait_for(plural, name, wait, timeout) if wait else api.status(plural, name)
    except CLIError as exc:
        fail(str(exc))


def _list(plural: str, host: str | None) -> list:
    try:
        return client(host).list(plural)
    except CLIError as exc:
        fail(str(exc))


@model_app.command("status")
def model_status(
    name: str,
    wait: WaitFor = None,
    timeout: Timeout = 5.0,
    scheduler_host: SchedulerHost = None,
    as_json: AsJson = False,
) -> None:
    """A model's status; with -w STATE, wait until its latest version is in STATE."""
    result = _status("models", name, wait, timeout, scheduler_host)
    if as_json:
        output.print_json(result)
        return
    output.print_table(None, output.MODEL_COLUMNS, output.model_rows([result]))
    rows = [
        [v["version"], index, replica["state"], replica["reason"]]
        for v in result["versions"]
        for index, replica in v["modelReplicaState"].items()
    ]
    if rows:
        output.print_table("replicas", ["version", "server replica", "state", "reason"], rows)


@model_app.command("list")
def model_list(scheduler_host: SchedulerHost = None, as_json: AsJson = False) -> None:
    """Every model with its state."""
    statuses = _list("models", scheduler_host)
    if as_json:
        output.print_json(statuses)
    else:
        output.print_table(None, output.MODEL_COLUMNS, output.model_rows(statuses))


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise CLIError(f"--header needs key=value, got '{value}'")
        headers[key.strip().lower()] = val.strip()
    return headers


def infer_command(kind: str):
    """`model infer` and (later) `pipeline infer` share everything but the target name."""

    def infer(
        name: str,
        payload: Annotated[str | None, typer.Argument(help="A V2 JSON inference request.")] = None,
        file: Annotated[str | None, typer.Option("-f", "--file", help="Request file.")] = None,
        inference_mode: Annotated[str, typer.Option("--inference-mode", help="rest or grpc")] = (
            "rest"
        ),
        iterations: Annotated[int, typer.Option("-i", "--iterations")] = 1,
        seconds: Annotated[float, typer.Option("--seconds", help="Run for this long.")] = 0.0,
        show_headers: Annotated[bool, typer.Option("--show-headers")] = False,
        show_request: Annotated[bool, typer.Option("-r", "--show-request")] = False,
        header: Annotated[list[str] | None, typer.Option("--header", help="key=value")] = None,
        sticky_session: Annotated[
            bool,
            typer.Option(
                "-s",
                "--sticky-session",
                help="Send the x-seldon-route of the last answer again (experiments).",
            ),
        ] = False,
        inference_host: Annotated[
            str | None,
            typer.Option("--inference-host", help="REST host:port [INFERLINE_INFER_HOST]"),
        ] = None,
        grpc_host: Annotated[
            str | None,
            typer.Option(
                "--grpc-inference-host", help="gRPC host:port [INFERLINE_INFER_GRPC_HOST]"
            ),
        ] = None,
        timeout: Annotated[float, typer.Option("--timeout", help="Seconds per call.")] = 60.0,
    ) -> None:
        try:
            if (payload is None) == (file is None):
                raise CLIError("give the request as an argument or with -f FILE (not both)")
            text = payload if payload is not None else read_file(file)
            target = name if kind == "model" else f"{name}.{kind}"
            options = InferOptions(
                target=target,
                path_name=name,
                payload=text.encode(),
                mode=inference_mode,
                headers=_parse_headers(header or []),
                timeout=timeout,
                sticky=sticky_session,
            )
            inferrer = Inferrer(options, infer_host(inference_host), infer_grpc_host(grpc_host))
            if show_request:
                output.print_json(orjson.loads(text))
            if iterations > 1 or seconds > 0:
                successes, errors = run_loop(inferrer, iterations, seconds)
                output.console.print(f"Success: {dict(successes)}", highlight=False)
                if errors:
                    output.console.print(f"Errors: {dict(errors)}", highlight=False)
                if not successes:
                    raise typer.Exit(1)
                return
            result = inferrer.call()
        except CLIError as exc:
            fail(str(exc))
        if show_headers:
            for key, value in sorted(result.headers.items()):
                output.console.print(f"{key}: {value}", highlight=False)
        if result.error:
            fail(result.error)
        output.print_json(result.body)

    infer.__doc__ = f"Send a V2 inference request to a {kind} through the router."
    return infer


model_app.command("infer")(infer_command("model"))


@model_app.command("metadata")
def model_metadata(
    name: str,
    inference_host: Annotated[str | None, typer.Option("--inference-host")] = None,
) -> None:
    """The model's V2 metadata, answered by one of its servers."""
    import httpx

    from inferline.cli.client import error_message

    host = infer_host(inference_host)
    try:
        response = httpx.get(
            f"http://{host}/v2/models/{name}", headers={"seldon-model": name}, timeout=30
        )
    except httpx.TransportError as exc:
        fail(f"cannot reach the inference endpoint at {host} ({type(exc).__name__})")
    if response.status_code >= 400:
        fail(error_message(response))
    output.print_json(response.json())


# --- server ------------------------------------------------------------------------------------


def server_list(scheduler_host: SchedulerHost = None, as_json: AsJson = False) -> None:
    """Every server with its connected replicas and loaded models."""
    statuses = _list("servers", scheduler_host)
    if as_json:
        output.print_json(statuses)
    else:
        output.print_table(None, output.SERVER_COLUMNS, output.server_rows(statuses))


def server_status(name: str, scheduler_host: SchedulerHost = None, as_json: AsJson = False) -> None:
    """One server's replicas: addresses, memory, loaded models."""
    result = _status("servers", name, None, 0, scheduler_host)
    if as_json:
        output.print_json(result)
        return
    output.print_table(None, output.SERVER_COLUMNS, output.server_rows([result]))
    output.print_table(
        "replicas",
        ["replica", "http", "grpc", "pid", "memory", "models"],
        [
            [
                r["replica"],
                r["http"],
                r["grpc"],
                r["pid"],
                r["memory"],
                ", ".join(r["loadedModels"]),
            ]
            for r in result["replicas"]
        ],
    )


# --- pipeline ----------------------------------------------------------------------------------

pipeline_app = typer.Typer(help="Load, inspect and call pipelines.", no_args_is_help=True)


@pipeline_app.command("load")
def pipeline_load(file: FileOption, scheduler_host: SchedulerHost = None) -> None:
    """Load the Pipeline(s) in FILE (every load is a new version)."""
    load(file, scheduler_host)


@pipeline_app.command("unload")
def pipeline_unload(name: str, scheduler_host: SchedulerHost = None) -> None:
    """Unload a pipeline."""
    try:
        _print_results([client(scheduler_host).delete("pipelines", name)])
    except CLIError as exc:
        fail(str(exc))


PIPELINE_COLUMNS = ["pipeline", "version", "state", "models ready", "reason"]


def _pipeline_rows(statuses) -> list[list]:
    return [
        [s["pipelineName"], s["version"], s["state"], s["modelsReady"], s["reason"]]
        for s in statuses
    ]


@pipeline_app.command("status")
def pipeline_status(
    name: str,
    wait: WaitFor = None,
    timeout: Timeout = 5.0,
    scheduler_host: SchedulerHost = None,
    as_json: AsJson = False,
) -> None:
    """A pipeline's status; with -w STATE (e.g. PipelineReady), wait for it."""
    result = _status("pipelines", name, wait, timeout, scheduler_host)
    if as_json:
        output.print_json(result)
        return
    output.print_table(None, PIPELINE_COLUMNS, _pipeline_rows([result]))
    output.print_table("steps", ["model", "state"], [[m, s] for m, s in result["models"].items()])


@pipeline_app.command("list")
def pipeline_list(scheduler_host: SchedulerHost = None, as_json: AsJson = False) -> None:
    """Every pipeline with its state."""
    statuses = _list("pipelines", scheduler_host)
    if as_json:
        output.print_json(statuses)
    else:
        output.print_table(None, PIPELINE_COLUMNS, _pipeline_rows(statuses))


pipeline_app.command("infer")(infer_command("pipeline"))


@pipeline_app.command("inspect")
def pipeline_inspect(
    expression: Annotated[
        str, typer.Argument(help="P, P.inputs, P.outputs, P.step, P.step.outputs[.tensor] ...")
    ],
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Only this request (x-request-id).")
    ] = None,
    offset: Annotated[int, typer.Option("--offset", help="Last N messages per partition.")] = 1,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show headers.")] = False,
    output_format: Annotated[str, typer.Option("--format", help="json or raw")] = "json",
    scheduler_host: SchedulerHost = None,
) -> None:
    """Show what flowed through a pipeline's topics: keys, tensors and (with -v) headers."""
    try:
        found = client(scheduler_host)._call(
            "GET",
            "/v1/inspect",
            params={
                "expression": expression,
                "offset": offset,
                **({"requestId": request_id} if request_id else {}),
            },
        )
    except CLIError as exc:
        fail(str(exc))
    if output_format == "json":
        for target in found:
            for message in target["messages"]:
                if not verbose:
                    message.pop("headers", None)
        output.print_json(found)
        return
    # Plain tab-separated lines: for `cut` and scripts, so no rich markup or wrapping.
    for target in found:
        for message in target["messages"]:
            body = message.get("payload", message.get("error"))
            fields = [target["name"], message["key"], orjson.dumps(body).decode()]
            if verbose:
                fields.append(orjson.dumps(message["headers"]).decode())
            sys.stdout.write("\t".join(fields) + "\n")


# --- experiment: load, unload, status, list (the router runs active ones) -----------------------


def stored_group(kind: str) -> typer.Typer:
    plural = f"{kind}s"
    group = typer.Typer(help=f"Load, unload and list {plural}.", no_args_is_help=True)

    @group.command("load", help=f"Load the {kind}(s) in FILE.")
    def load_kind(file: FileOption, scheduler_host: SchedulerHost = None) -> None:
        load(file, scheduler_host)

    @group.command("unload", help=f"Unload a {kind} by name.")
    def unload_kind(name: str, scheduler_host: SchedulerHost = None) -> None:
        try:
            _print_results([client(scheduler_host).delete(plural, name)])
        except CLIError as exc:
            fail(str(exc))

    @group.command("status", help=f"A {kind}'s status.")
    def status_kind(name: str, scheduler_host: SchedulerHost = None) -> None:
        try:
            output.print_json(client(scheduler_host).status(plural, name))
        except CLIError as exc:
            fail(str(exc))

    @group.command("list", help=f"Every {kind}.")
    def list_kind(scheduler_host: SchedulerHost = None) -> None:
        try:
            statuses = client(scheduler_host).list(plural)
        except CLIError as exc:
            fail(str(exc))
        output.print_table(
            None,
            [kind, "active", "status"],
            [
                [s["experimentName"], str(s["active"]).lower(), s["statusDescription"]]
                for s in statuses
            ],
        )

    return group
