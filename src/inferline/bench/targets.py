"""What a load process calls: thin senders of one pre-encoded request.

Each target's `call()` sends the request once and returns None for a success or
`(status, message)` for a failure, the status being what a user would look up: the HTTP status
("404"), the gRPC code name ("NOT_FOUND"), or what went wrong on the way ("connect error",
"timeout"). Everything else (when to call, what to count) is the load generator's.

A `TargetSpec` is plain data, so it crosses into the load processes; each builds its own target
there, on its own event loop.
"""

import asyncio
import itertools
from dataclasses import dataclass, field

import orjson

from inferline.router.upstream import (
    HttpUpstream,
    UpstreamBroken,
    UpstreamClosed,
    UpstreamConnectError,
)

Outcome = tuple[str, str] | None

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
MAX_GRPC_MESSAGE = 100 * 1024 * 1024


@dataclass(frozen=True)
class TargetSpec:
    kind: str  # "rest", "grpc", "kafka" or "embedded"
    address: str  # host:port (Kafka: bootstrap servers; embedded: the data folder)
    name: str  # what is called: "iris", "p.pipeline"
    body: bytes  # the encoded request
    path: str = ""  # REST request target
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0
    channels: int = 1  # gRPC: channels (HTTP/2 connections) per load process
    # Kafka only: topics, the resource named in message keys, and client properties.
    input_topic: str = ""
    output_topic: str = ""
    kafka_config: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "rest":
            return f"REST http://{self.address}{self.path}"
        if self.kind == "grpc":
            return f"gRPC {self.address} ModelInfer {self.name}"
        bus = "Kafka" if self.kind == "kafka" else "embedded bus"
        return f"{bus} {self.address}: {self.input_topic} -> {self.output_topic}"


def _error_text(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace").strip()


class RestTarget:
    """POSTs the body over kept-alive HTTP/1.1 connections (the router's lean client: one
    connection per concurrent request, reused)."""

    def __init__(self, spec: TargetSpec, connections: int):
        self.spec = spec
        self.upstream = HttpUpstream(max_idle_per_host=max(connections, 1))
        self.headers = [(b"content-type", b"application/json")] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in spec.headers
        ]

    async def open(self) -> None:
        pass

    async def call(self) -> Outcome:
        spec = self.spec
        try:
            async with asyncio.timeout(spec.timeout):
                response = await self.upstream.request(
                    spec.address, "POST", spec.path, self.headers, spec.body
                )
        except TimeoutError:
            return "timeout", f"no answer within {spec.timeout:g} s"
        except UpstreamConnectError as exc:
            return "connect error", str(exc)
        except (UpstreamClosed, UpstreamBroken) as exc:
            return "connection closed", str(exc)
        if response.status >= 300:
            return str(response.status), _error_text(response.body)
        return None

    async def close(self) -> None:
        await self.upstream.aclose()


class GrpcTarget:
    """Calls ModelInfer with the serialized request: no protobuf work per call, as the answer
    is not parsed either (only its status matters). Calls take the channels in turn: a server
    with several worker processes gives each connection to one worker, so one channel would
    load only one of them."""

    def __init__(self, spec: TargetSpec):
        self.spec = spec
        self.metadata = tuple((k.lower(), v) for k, v in spec.headers)
        self.channels = []

    async def open(self) -> None:
        import grpc

        options = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
        ]
        # Channels share connections through gRPC's global subchannel pool unless told not to.
        options.append(("grpc.use_local_subchannel_pool", 1))
        self.channels = [
            grpc.aio.insecure_channel(self.spec.address, options=options)
            for _ in range(max(self.spec.channels, 1))
        ]
        self.calls = itertools.cycle([c.unary_unary(GRPC_INFER) for c in self.channels])
        self._error = grpc.aio.AioRpcError

    async def call(self) -> Outcome:
        try:
            await next(self.calls)(
                self.spec.body, metadata=self.metadata, timeout=self.spec.timeout
            )
        except self._error as exc:
            return exc.code().name, exc.details() or ""
        return None

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def build_target(spec: TargetSpec, connections: int):
    if spec.kind == "rest":
        return RestTarget(spec, connections)
    if spec.kind == "grpc":
        return GrpcTarget(spec)
    if spec.kind == "kafka":
        from inferline.bench.bus_targets import KafkaTarget

        return KafkaTarget(spec)
    raise ValueError(f"unknown target kind '{spec.kind}'")
