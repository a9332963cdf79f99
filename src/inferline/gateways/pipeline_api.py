"""The router's handlers for `<name>.pipeline`: V2 calls to a pipeline, over REST and gRPC.

REST bodies are decoded and encoded here (JSON or binary tensors, as for models); gRPC requests
are already the protobuf the bus carries and go through untouched. Inference calls are counted
in Seldon's pipeline gateway metrics (`seldon_pipeline_infer_total`, ...), with the code the
caller gets; calls naming no pipeline are not (Seldon's Envoy has no route for them).
"""

import time

import orjson

from inferline import metrics, tracing
from inferline.gateways.pipeline_gateway import PipelineGateway
from inferline.protocol import json_encoding, protobuf
from inferline.protocol.errors import InferlineError, ModelNotFound, grpc_code_name
from inferline.protocol.proto import inference_pb2 as pb
from inferline.scheduler.core import Scheduler

PIPELINE_SUFFIX = ".pipeline"
_JSON = b"application/json"


def _pipeline_name(name: str) -> str:
    return name[: -len(PIPELINE_SUFFIX)] if name.endswith(PIPELINE_SUFFIX) else name


class PipelineApi:
    def __init__(self, gateway: PipelineGateway, scheduler: Scheduler):
        self.gateway = gateway
        self.scheduler = scheduler
        # (pipeline, method type, code) -> its metric series, bound on first use.
        self._series: dict[tuple[str, str, str], metrics.InferSeries] = {}

    def _count(self, pipeline: str, method_type: str, code: str, started: float) -> None:
        key = (pipeline, method_type, code)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metrics.pipeline_infer_series(*key)
        series.observe(time.perf_counter() - started)

    def _status(self, pipeline: str) -> dict:
        try:
            return self.scheduler.pipeline_status(pipeline)
        except InferlineError:
            raise ModelNotFound(f"{pipeline}{PIPELINE_SUFFIX}") from None

    def _check_exists(self, pipeline: str) -> None:
        """What an inference call needs to know before it is sent: without building the whole
        status document (`_status`) on every call."""
        try:
            self.scheduler.get("Pipeline", pipeline)
        except InferlineError:
            raise ModelNotFound(f"{pipeline}{PIPELINE_SUFFIX}") from None

    def ready(self, pipeline: str) -> bool:
        status = self._status(pipeline)
        return status["state"] == "PipelineReady" and status["modelsReady"]

    def metadata(self, pipeline: str) -> dict:
        status = self._status(pipeline)
        return {
            "name": pipeline,
            "versions": [str(status["version"])],
            "platform": "inferline-pipeline",
            "inputs": [],
            "outputs": [],
        }

    # --- REST ---------------------------------------------------------------------------------

    async def rest(self, call, body: bytes):
        pipeline = _pipeline_name(call.name)
        if call.operation == "ready":
            ready = self.ready(pipeline)
            doc = {"name": pipeline, "ready": ready}
            return 200 if ready else 503, [(b"content-type", _JSON)], orjson.dumps(doc)
        if call.operation == "metadata":
            return 200, [(b"content-type", _JSON)], orjson.dumps(self.metadata(pipeline))
        self._check_exists(pipeline)
        if tracing.ENABLED:
            with tracing.span(
                "pipeline-gateway.infer", "producer", None, _attributes(pipeline, call.request_id)
            ):
                return await self._rest_counted(pipeline, call, body)
        return await self._rest_counted(pipeline, call, body)

    async def _rest_counted(self, pipeline: str, call, body: bytes):
        started = time.perf_counter()
        try:
            answer = await self._rest_infer(pipeline, call, body)
        except Exception as exc:
            status = exc.status if isinstance(exc, InferlineError) else 500
            self._count(pipeline, "rest", str(status), started)
            raise
        self._count(pipeline, "rest", "200", started)
        return answer

    async def _rest_infer(self, pipeline: str, call, body: bytes):
        length = _header(call.scope, b"inference-header-content-length")
        request = json_encoding.decode_request(body, int(length) if length else None)
        message = protobuf.request_to_proto(request, pipeline).SerializeToString()
        headers = _x_headers(call.scope)
        answer = await self.gateway.infer(pipeline, message, call.request_id, headers)
        response = protobuf.response_from_proto(pb.ModelInferResponse.FromString(answer.value))
        payload, json_length = json_encoding.encode_response(
            response, json_encoding.binary_output_names(request)
        )
        out = _encode(answer.headers)
        if json_length is None:
            out.append((b"content-type", _JSON))
        else:
            out += [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ]
        return 200, out, payload

    # --- gRPC ---------------------------------------------------------------------------------

    async def grpc(self, method: str, raw: bytes, name: str, context):
        pipeline = _pipeline_name(name)
        if method == "ModelReady":
            self._status(pipeline)
            return pb.ModelReadyResponse(ready=self.ready(pipeline)).SerializeToString(), []
        if method == "ModelMetadata":
            meta = self.metadata(pipeline)
            response = pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"]
            )
            return response.SerializeToString(), []
        self._check_exists(pipeline)
        metadata = context.invocation_metadata() or ()
        request_id = next((v for k, v in metadata if k == "x-request-id"), None) or _new_id()
        headers = [(k, v) for k, v in metadata if k.startswith("x-") and isinstance(v, str)]
        if tracing.ENABLED:
            with tracing.span(
                "pipeline-gateway.infer", "producer", None, _attributes(pipeline, request_id)
            ):
                return await self._grpc_counted(pipeline, raw, request_id, headers)
        return await self._grpc_counted(pipeline, raw, request_id, headers)

    async def _grpc_counted(self, pipeline: str, raw: bytes, request_id: str, headers):
        started = time.perf_counter()
        try:
            answer = await self.gateway.infer(pipeline, raw, request_id, headers)
        except Exception as exc:
            code = grpc_code_name(exc) if isinstance(exc, InferlineError) else "INTERNAL"
            self._count(pipeline, "grpc", code, started)
            raise
        self._count(pipeline, "grpc", "OK", started)
        return answer.value, answer.headers


def _attributes(pipeline: str, request_id: str) -> dict[str, str]:
    return {"inference.pipeline.name": pipeline, "x-request-id": request_id}


def _new_id() -> str:
    from inferline.router.core import new_request_id

    return new_request_id()


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _x_headers(scope) -> list[tuple[str, str]]:
    return [
        (key.decode("latin-1"), value.decode("latin-1"))
        for key, value in scope["headers"]
        if key.startswith(b"x-")
    ]


def _encode(headers) -> list[tuple[bytes, bytes]]:
    return [
        (
            k.encode("latin-1") if isinstance(k, str) else k,
            v.encode("latin-1") if isinstance(v, str) else v,
        )
        for k, v in headers
    ]
