"""The router's gRPC edge: `inference.GRPCInferenceService` proxied to a chosen replica.

ModelInfer, ModelReady and ModelMetadata are routed by the `seldon-model` metadata key, else by
the message's model name (field 1 of each request). Requests and answers stay serialized bytes:
the name is read and rewritten on the wire (`protowire`), so tensors are never decoded here. Each
replica gets a few cached channels, taken in turn (see CHANNELS_PER_REPLICA). The router answers
the server-level calls itself.
"""

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

import grpc

from inferline import tracing
from inferline.protocol.errors import InferlineError, grpc_code_name
from inferline.protocol.proto import inference_pb2 as pb
from inferline.router.balancer import ConnectFailure
from inferline.router.core import (
    SPECIAL_SUFFIXES,
    InferMetrics,
    ModelRouter,
    new_request_id,
    not_served_yet,
    route_header,
    special_suffix,
)
from inferline.router.protowire import WireError, read_string_field, with_string_field
from inferline.router.routes import Endpoint, ModelRoute, RouteTable

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
DEFAULT_MAX_MESSAGE_SIZE = 100 * 1024 * 1024
# Connections per replica. A server with `--workers N` spreads connections over its workers (the
# kernel picks a worker per connection), so one HTTP/2 connection would reach one worker only;
# with 16, two workers both get traffic unless all 16 land on one (1 in 32,768).
CHANNELS_PER_REPLICA = 16
# Field 1 is the model's name in ModelInferRequest, ModelReadyRequest and ModelMetadataRequest.
_NAME_FIELD = 1
PROXIED_METHODS = ("ModelInfer", "ModelReady", "ModelMetadata")

# Caller metadata not passed upstream: transport keys and the ones the router sets itself.
_NOT_FORWARDED = frozenset(
    {"user-agent", "content-type", "te", "x-request-id", "seldon-internal-model"}
)

# Handler for names with a special suffix: (method, serialized request, name, context) ->
# (answer, metadata to send back; an `x-request-id` there replaces the router's).
GrpcSpecialHandler = Callable[
    [str, bytes, str, grpc.aio.ServicerContext], Awaitable[tuple[bytes, list[tuple[str, str]]]]
]


def _merge_metadata(reply: list[tuple[str, str]], extra) -> list[tuple[str, str]]:
    """`extra` wins for the keys it has."""
    keys = {key for key, _ in extra}
    return [(k, v) for k, v in reply if k not in keys] + list(extra)


class UpstreamStatus(Exception):
    """The replica answered with a non-OK status: passed on to the caller as it is."""

    def __init__(self, error: grpc.aio.AioRpcError):
        super().__init__(error.details())
        self.code = error.code()
        self.details = error.details() or ""


def _error_code(exc: Exception) -> str:
    if isinstance(exc, UpstreamStatus):
        return exc.code.name
    return grpc_code_name(exc) if isinstance(exc, InferlineError) else "INTERNAL"


# ModelInfer calls, `code` the gRPC status code's name (Seldon's agent's histogram has "grpc" as
# its `method`).
GRPC_INFER = InferMetrics("grpc", "grpc", lambda answer: "OK", _error_code)


async def _not_served_yet(method: str, raw: bytes, name: str, context):
    raise not_served_yet(name)


class RouterGrpcService:
    def __init__(
        self,
        router: ModelRouter,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        special_handlers: dict[str, GrpcSpecialHandler] | None = None,
    ):
        self.router = router
        self.max_message_size = max_message_size
        self.special_handlers: dict[str, GrpcSpecialHandler] = {
            suffix: _not_served_yet for suffix in SPECIAL_SUFFIXES
        }
        self.special_handlers.update(special_handlers or {})
        self._channels: dict[str, list[grpc.aio.Channel]] = {}
        self._calls: dict[tuple[str, str], list[grpc.aio.UnaryUnaryMultiCallable]] = {}
        self._turns = itertools.count()
        self._channels_generation: int | None = None
        self._closing: set[asyncio.Task] = set()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        def own(method, request, response):
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        def proxied(name):
            async def handler(raw: bytes, context) -> bytes:
                return await self._proxy(name, raw, context)

            # No (de)serializers: requests and answers pass as bytes.
            return grpc.unary_unary_rpc_method_handler(handler)

        handlers = {
            "ServerLive": own(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": own(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ServerMetadata": own(
                self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
            ),
        }
        handlers.update({name: proxied(name) for name in PROXIED_METHODS})
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # --- answered by the router -------------------------------------------------------------

    async def server_live(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request, context):
        return pb.ServerReadyResponse(ready=self.router.ready())

    async def server_metadata(self, request, context):
        return pb.ServerMetadataResponse(**self.router.server_metadata())

    # --- proxied ------------------------------------------------------------------------------

    async def _proxy(self, method: str, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = context.invocation_metadata() or ()
        request_id = _metadata_value(metadata, "x-request-id") or new_request_id()
        if tracing.ENABLED and method == "ModelInfer":
            attributes = {"x-request-id": request_id, "rpc.system": "grpc"}
            with tracing.span("router.infer", "server", metadata, attributes) as span:
                name = _metadata_value(metadata, "seldon-model")
                with contextlib.suppress(InferlineError):
                    name = name or _read_name(raw)
                span.set_attribute("inference.model.name", name or "")
                try:
                    return await self._answer(method, raw, context, metadata, request_id)
                finally:
                    # What the caller gets: OK unless the answer aborted with a code.
                    code = context.code() or grpc.StatusCode.OK
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
        return await self._answer(method, raw, context, metadata, request_id)

    async def _answer(self, method: str, raw: bytes, context, metadata, request_id: str) -> bytes:
        reply = [("x-request-id", request_id)]
        try:
            name = _metadata_value(metadata, "seldon-model") or _read_name(raw)
            sticky = [v for k, v in metadata if k == "x-seldon-route" and isinstance(v, str)]
            plan = self.router.plan(name, sticky, mirror=method == "ModelInfer")
            if plan.mirror is not None:
                # The caller's context ends with its answer; the copy keeps what it needs.
                copy = _MirrorContext(metadata)
                self.router.mirrors.submit(
                    lambda: self._dispatch(method, raw, plan.mirror, copy, request_id, []),
                    plan.mirror,
                )
            answer = await self._dispatch(method, raw, plan.target, context, request_id, reply)
        except InferlineError as exc:
            await context.send_initial_metadata(_merge_metadata(reply, exc.headers))
            await context.abort(grpc.StatusCode[grpc_code_name(exc)], exc.message)
        except UpstreamStatus as exc:
            await context.send_initial_metadata(reply)
            await context.abort(exc.code, exc.details)
        except Exception:
            log.exception("internal error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal router error")
        await context.send_initial_metadata(reply)
        return answer

    async def _dispatch(
        self, method: str, raw: bytes, target: str, context, request_id: str, reply: list
    ) -> bytes:
        """Call `target` (a model or a `.pipeline`); what to send back is added to `reply`."""
        suffix = special_suffix(target)
        if suffix is not None:
            answer, extra = await self.special_handlers[suffix](method, raw, target, context)
            reply[:] = _merge_metadata(reply, extra)
            return answer
        route = self.router.route_of(target)
        reply.append(("x-seldon-route", route_header(route)))
        metadata = context.invocation_metadata() or ()
        return await self._forward(method, raw, metadata, request_id, route)

    async def _forward(
        self, method: str, raw: bytes, metadata, request_id: str, route: ModelRoute
    ) -> bytes:
        request = with_string_field(raw, _NAME_FIELD, route.internal_name)
        upstream_metadata = [
            (key, value)
            for key, value in metadata
            if key not in _NOT_FORWARDED and not key.startswith(("grpc-", ":"))
        ]
        upstream_metadata += [
            ("x-request-id", request_id),
            ("seldon-internal-model", route.internal_name),
        ]
        if _metadata_value(metadata, "seldon-model") is None:
            upstream_metadata.append(("seldon-model", route.name))
        if tracing.ENABLED:
            upstream_metadata = tracing.grpc_metadata(upstream_metadata)
        timeout = self.router.timeout_for(route)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._prune_channels(self.router.routes.table)

        async def attempt(endpoint: Endpoint) -> bytes:
            channel, call = self._call(endpoint.grpc, method)
            try:
                # The replica gets the same deadline, so it can drop work nobody waits for.
                return await call(
                    request, metadata=upstream_metadata, timeout=max(deadline - loop.time(), 0.01)
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                # UNAVAILABLE is both gRPC's "could not connect" and a replica's own answer;
                # the channel's state tells them apart.
                if code is grpc.StatusCode.UNAVAILABLE and (
                    channel.get_state() is not grpc.ChannelConnectivity.READY
                ):
                    raise ConnectFailure(
                        endpoint, f"cannot reach {endpoint.grpc}: {exc.details()}"
                    ) from None
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise TimeoutError from None
                raise UpstreamStatus(exc) from None

        counted = GRPC_INFER if method == "ModelInfer" else None
        return await self.router.call(route, attempt, timeout, counted)

    # --- channels -----------------------------------------------------------------------------

    def _call(self, address: str, method: str):
        channels = self._channels.get(address)
        if channels is None:
            channels = self._channels[address] = [
                grpc.aio.insecure_channel(address, options=self._channel_options())
                for _ in range(CHANNELS_PER_REPLICA)
            ]
        calls = self._calls.get((address, method))
        if calls is None:
            calls = self._calls[(address, method)] = [
                channel.unary_unary(f"/{SERVICE}/{method}") for channel in channels
            ]
        turn = next(self._turns) % CHANNELS_PER_REPLICA
        return channels[turn], calls[turn]

    def _channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_size),
            ("grpc.max_send_message_length", self.max_message_size),
            # gRPC's default reconnect back-off grows to 2 minutes, during which a restarted
            # replica would stay unreachable through this channel; keep it short.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # Without it, channels to one address share one connection (gRPC's global subchannel
            # pool), and the pool would reach one worker only.
            ("grpc.use_local_subchannel_pool", 1),
        ]

    def _prune_channels(self, table: RouteTable) -> None:
        """Close the channels of replicas the table no longer lists (once per generation)."""
        if table.generation == self._channels_generation:
            return
        self._channels_generation = table.generation
        live = {e.grpc for route in table.models.values() for e in route.endpoints}
        for address in [a for a in self._channels if a not in live]:
            for key in [k for k in self._calls if k[0] == address]:
                del self._calls[key]
            for channel in self._channels.pop(address):
                # Calls still running on it get the default timeout to finish.
                task = asyncio.create_task(channel.close(grace=self.router.default_timeout))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        channels = [c for pool in self._channels.values() for c in pool]
        self._channels = {}
        self._calls.clear()
        for channel in channels:
            await channel.close(grace=None)
        for task in list(self._closing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _MirrorContext:
    """What a mirrored call reads of the caller's gRPC context, kept past the caller's answer."""

    def __init__(self, metadata):
        self._metadata = tuple(metadata)

    def invocation_metadata(self):
        return self._metadata


def _metadata_value(metadata, key: str) -> str | None:
    for item_key, value in metadata:
        if item_key == key:
            return value
    return None


def _read_name(raw: bytes) -> str:
    try:
        name = read_string_field(raw, _NAME_FIELD)
    except WireError as exc:
        raise InferlineError(f"request is not a valid protobuf message: {exc}") from None
    if not name:
        raise InferlineError("request names no model (set the model name or 'seldon-model')")
    return name


def create_grpc_server(
    service: RouterGrpcService, address: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server for `service` listening on `address`; returns it and the bound port
    (the real one when `address` asks for port 0)."""
    options = [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((service.generic_handler(),))
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return server, port
