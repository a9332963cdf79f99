"""From the command line's options to a `LoadPlan` and a `TargetSpec`: checks the options
against each other, reads or makes up the request, and encodes it for the transport."""

from pathlib import Path

import httpx
import orjson

from inferline.bench.loadgen import LoadPlan
from inferline.bench.payload import (
    PayloadError,
    grpc_body,
    metadata_from_proto,
    request_from_file,
    request_from_metadata,
    rest_body,
)
from inferline.bench.schedule import Stage, parse_duration, parse_stages
from inferline.bench.targets import TargetSpec
from inferline.dataflow.topics import INPUTS, OUTPUTS, TopicNames

DEFAULT_DURATION = 10.0
PIPELINE_SUFFIX = ".pipeline"


class SetupError(ValueError):
    pass


def _seconds(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise SetupError(f"{flag}: {exc}") from None


def make_plan(options: dict) -> LoadPlan:
    rate, stages_text = options.get("rate"), options.get("stages")
    if rate is not None and stages_text is not None:
        raise SetupError("--rate and --stages are two open-loop schedules: give one")
    duration = options.get("duration")
    seconds = _seconds(duration, "--duration") if duration is not None else None
    iterations = options.get("iterations")
    if seconds is not None and iterations is not None:
        raise SetupError("give --duration or --iterations, not both")
    if seconds is not None and seconds <= 0:
        raise SetupError("--duration must be more than 0")
    warmup = _seconds(options.get("warmup") or "0", "--warmup")
    stages: tuple[Stage, ...] = ()
    start_rate = options.get("start_rate") or 0.0
    if rate is not None:
        if rate <= 0:
            raise SetupError("--rate must be more than 0 requests per second")
        if seconds is None and iterations is None:
            seconds = DEFAULT_DURATION
        # A constant rate is one stage that starts and ends at it, long enough for the run.
        length = seconds if seconds is not None else iterations / rate + 1.0
        stages, start_rate = (Stage(max(length, warmup), rate),), rate
    elif stages_text is not None:
        try:
            stages = tuple(parse_stages(stages_text))
        except ValueError as exc:
            raise SetupError(f"--stages: {exc}") from None
    elif seconds is None and iterations is None:
        seconds = DEFAULT_DURATION
    return LoadPlan(
        concurrency=options.get("concurrency") or 1,
        stages=stages,
        start_rate=start_rate,
        duration=seconds,
        iterations=iterations,
        warmup=warmup,
        max_in_flight=options.get("max_in_flight") or 1000,
    )


def _address(url: str) -> str:
    if url.startswith("https://"):
        raise SetupError("https is not supported; use http://")
    address = url.removeprefix("http://").rstrip("/")
    if "/" in address or ":" not in address:
        raise SetupError(f"--url must be http://host:port, got '{url}'")
    return address


def _pairs(items: list[str] | None, flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SetupError(f"{flag} needs name=value, got '{item}'")
        pairs.append((key.strip(), value.strip()))
    return pairs


def rest_metadata(address: str, name: str, timeout: float) -> dict:
    url = f"http://{address}/v2/models/{name}"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.TransportError as exc:
        raise SetupError(f"cannot reach {url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        try:
            reason = orjson.loads(response.content)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            reason = response.text.strip()[:200]
        raise SetupError(
            f"cannot read the metadata of '{name}' at {url}: {response.status_code} {reason}"
        )
    return orjson.loads(response.content)


def grpc_metadata(address: str, name: str, timeout: float) -> dict:
    import grpc

    from inferline.protocol.proto import inference_pb2 as pb
    from inferline.protocol.proto import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            answer = stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=timeout)
        except grpc.RpcError as exc:
            raise SetupError(
                f"cannot read the metadata of '{name}' over gRPC at {address}: "
                f"{exc.code().name} {exc.details()}"
            ) from None
    return metadata_from_proto(answer)


def make_target(
    options: dict, pipeline: bool, default_url: str, default_grpc: str = "127.0.0.1:9001"
) -> TargetSpec:
    name = options["name"]
    if options.get("grpc") == "router":
        options = {**options, "grpc": default_grpc}
    called = name + PIPELINE_SUFFIX if pipeline else name
    timeout = options.get("timeout") or 60.0
    headers = tuple(_pairs(options.get("header"), "--header"))
    url_address = _address(options.get("url") or default_url)
    if options.get("grpc_contents", "raw") not in ("raw", "typed"):
        raise SetupError(f"--grpc-contents is raw or typed, not '{options['grpc_contents']}'")
    transports = [flag for flag in ("grpc", "kafka", "embedded") if options.get(flag)]
    if len(transports) > 1:
        raise SetupError(f"--{' and --'.join(transports)} are different transports: give one")
    if options.get("embedded") and options.get("data") is None:
        # The platform is not running before the bench starts it: no metadata to read.
        raise SetupError("--embedded needs the request in a file: --data FILE")

    data: Path | None = options.get("data")
    file_bytes = None
    if data is not None:
        file_bytes = data.read_bytes()
        request = request_from_file(file_bytes, str(data))
    else:
        batch = options.get("batch_size") or 1
        try:
            if options.get("grpc"):
                metadata = grpc_metadata(options["grpc"], called, timeout)
            else:
                metadata = rest_metadata(url_address, called, timeout)
        except SetupError as exc:
            raise SetupError(f"{exc}; pass a request with --data FILE to skip it") from None
        request = request_from_metadata(metadata, batch)

    if options.get("kafka") or options.get("embedded"):
        topics = TopicNames(
            options.get("topic_prefix") or "seldon", options.get("namespace") or "default"
        )
        where = topics.pipeline if pipeline else topics.model
        config = dict(_pairs(options.get("kafka_property"), "--kafka-property"))
        return TargetSpec(
            kind="kafka" if options.get("kafka") else "embedded",
            address=options.get("kafka") or str(options["embedded"]),
            name=name,
            body=grpc_body(request, name),
            headers=headers,
            timeout=timeout,
            input_topic=where(name, INPUTS),
            output_topic=where(name, OUTPUTS),
            kafka_config=config,
        )
    if options.get("grpc"):
        return TargetSpec(
            kind="grpc",
            address=options["grpc"],
            name=called,
            body=grpc_body(request, called, typed=options.get("grpc_contents") == "typed"),
            headers=headers,
            timeout=timeout,
            channels=options.get("channels") or 1,
        )
    # The file goes as written (what the user wants sent); a made-up request as JSON.
    body = file_bytes if file_bytes is not None else rest_body(request)
    return TargetSpec(
        kind="rest",
        address=url_address,
        name=called,
        body=body,
        path=f"/v2/models/{called}/infer",
        headers=headers,
        timeout=timeout,
    )


__all__ = ["PayloadError", "SetupError", "make_plan", "make_target"]
