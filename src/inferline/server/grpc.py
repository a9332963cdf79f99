"""The gRPC adapter: `inference.GRPCInferenceService` on grpc.aio, translating to the data plane.

Errors keep the message of the REST answer and map its status to a gRPC code, as MLServer does.
"""

import logging
from collections.abc import Callable

import grpc

from inferline import tracing
from inferline.protocol import protobuf
from inferline.protocol.errors import InferlineError, grpc_code_name
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.proto import inference_pb2_grpc as pb_grpc
from inferline.server.dataplane import DataPlane

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 100 * 1024 * 1024


def _translating_errors(method):
    """Turn InferlineErrors into gRPC statuses, and anything else into INTERNAL."""

    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except InferlineError as exc:
            await context.abort(grpc.StatusCode[grpc_code_name(exc)], exc.message)
        except Exception:
            log.exception("internal error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")

    wrapper.__name__ = method.__name__
    return wrapper


def _version(value: str) -> str | None:
    return value or None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane):
        self.dataplane = dataplane

    @_translating_errors
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @_translating_errors
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_translating_errors
    async def ModelReady(self, request, context):
        ready = self.dataplane.model_ready(request.name, _version(request.version))
        return pb.ModelReadyResponse(ready=ready)

    @_translating_errors
    async def ServerMetadata(self, request, context):
        meta = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=meta.extensions
        )

    @_translating_errors
    async def ModelMetadata(self, request, context):
        meta = self.dataplane.model_metadata(request.name, _version(request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    @_translating_errors
    async def ModelInfer(self, request, context):
        if tracing.ENABLED:
            metadata = context.invocation_metadata() or ()
            attributes = {
                "inference.model.name": request.model_name,
                "inference.model.version": request.model_version,
                **{k: v for k, v in metadata if k == "x-request-id"},
            }
            with tracing.span("server.infer", "server", metadata, attributes):
                return await self._infer(request)
        return await self._infer(request)

    async def _infer(self, request):
        infer_request = protobuf.request_from_proto(request)
        response = await self.dataplane.infer(
            request.model_name, _version(request.model_version), infer_request
        )
        # Answer in the form the caller used: tritonclient reads only raw contents, MLServer's
        # clients send and read typed ones.
        use_raw = bool(request.raw_input_contents) or not any(
            i.HasField("contents") for i in request.inputs
        )
        return protobuf.response_to_proto(response, use_raw)

    @_translating_errors
    async def RepositoryIndex(self, request, context):
        index = pb.RepositoryIndexResponse.ModelIndex
        rows = self.dataplane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                index(name=r.name, version=r.version or "", state=r.state, reason=r.reason)
                for r in rows
            ]
        )

    @_translating_errors
    async def RepositoryModelLoad(self, request, context):
        await self.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_translating_errors
    async def RepositoryModelUnload(self, request, context):
        await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def create_grpc_server(
    dataplane: DataPlane, address: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> grpc.aio.Server:
    return bind_grpc_server(dataplane, address, max_message_size)[0]


def bind_grpc_server(
    dataplane: DataPlane, address: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[grpc.aio.Server, int]:
    """A gRPC server for `dataplane` bound to `address` (port 0: any free port) and its port."""
    servicer = InferenceServicer(dataplane)
    return bind_server(
        address,
        max_message_size,
        lambda server: pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server),
    )


def bind_server(
    address: str, max_message_size: int, add_handlers: Callable[[grpc.aio.Server], None]
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with the message size limits, its handlers added by `add_handlers`,
    bound to `address` (port 0: any free port), and its port."""
    options = [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
    ]
    server = grpc.aio.server(options=options)
    add_handlers(server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return server, port
