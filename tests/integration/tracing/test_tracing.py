"""Tracing end to end: a real `inferline up --tracing-endpoint` exports its spans, and its model
servers' (child processes), to an OTLP/HTTP receiver run by this module, and a caller's W3C
`traceparent` is continued through the router, the pipeline gateway, the dataflow stages, the
model gateways and the model servers: one trace id, each span the child of the hop before it.

The platform is the pipeline tests' `Up` (tests/integration/pipelines/_platform.py), with the
tracing flag as an extra argument; the models are the local stand-ins of Seldon's tfsimple samples.
"""

import gzip
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pipelines._platform import (
    SAMPLES,
    SKIP_REASON,
    Up,
    sample_documents,
    tail,
    tfsimple_request,
    wait_until,
)

from inferline.examples import PIPELINE_MODELS, write_runtime_model

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SAMPLES.is_dir(), reason=SKIP_REASON)]

SAMPLE_FILES = ("models/tfsimple1.yaml", "models/tfsimple2.yaml", "pipelines/tfsimples.yaml")


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self):
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    with self.lock:
                        self.spans.append(
                            ReceivedSpan(
                                service,
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                attributes,
                            )
                        )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value):
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def up(receiver, tmp_path_factory) -> Iterator[Up]:
    models = tmp_path_factory.mktemp("models")
    for name, class_name in PIPELINE_MODELS.items():
        write_runtime_model(models / name, class_name)
    platform = Up(
        workdir=tmp_path_factory.mktemp("up"),
        module=__name__,
        extra_args=["--tracing-endpoint", f"http://127.0.0.1:{receiver.port}"],
    )
    # Spans are sent every 100 ms rather than every 5 s; the servers inherit it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        platform.start()
    try:
        platform.apply(doc for path in SAMPLE_FILES for doc in sample_documents(path, models))
        platform.wait_pipeline("tfsimples")
        yield platform
    finally:
        platform.stop()
        platform.http.close()


def caller_context() -> tuple[str, str, dict[str, str]]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def wait_spans(up: Up, receiver: Receiver, trace_id: str, names: dict[str, int]):
    """The spans of `trace_id`, once at least `names[name]` of each name have come."""

    def check():
        spans = receiver.trace(trace_id)
        counts = {name: sum(s.name == name for s in spans) for name in names}
        return spans if all(counts[n] >= c for n, c in names.items()) else None

    try:
        return wait_until(check, 15, f"spans {names} of trace {trace_id}")
    except AssertionError as exc:
        logs = "\n".join(tail(p) for p in [up.log_path, *up.server_logs()])
        seen = [(s.service, s.name) for s in receiver.trace(trace_id)]
        raise AssertionError(f"{exc}\nspans seen: {seen}\nlogs:\n{logs}") from None


def children(spans: list[ReceivedSpan], parent: ReceivedSpan, name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id and s.name == name]


def test_model_call_is_one_trace_router_then_model_server(up, receiver):
    trace_id, caller_span, headers = caller_context()
    answer = up.infer(
        "tfsimple1",
        tfsimple_request(),
        path="/v2/models/tfsimple1/infer",
        headers={**headers, "x-request-id": "traced-model-call"},
    )
    assert answer.status_code == 200, answer.text
    spans = wait_spans(up, receiver, trace_id, {"router.infer": 1, "server.infer": 1})
    (router,) = [s for s in spans if s.name == "router.infer"]
    assert router.service == "inferline-core"
    assert router.parent_id == caller_span
    assert router.attributes["x-request-id"] == "traced-model-call"
    assert router.attributes["inference.model.name"] == "tfsimple1"
    assert router.attributes["http.response.status_code"] == 200
    (server,) = children(spans, router, "server.infer")
    assert server.service == "inferline-server"
    assert server.attributes["inference.model.name"] == "tfsimple1_1"
    assert server.attributes["x-request-id"] == "traced-model-call"


def test_grpc_model_call_is_one_trace_too(up, receiver):
    trace_id, caller_span, headers = caller_context()
    client = triton_grpc.InferenceServerClient(up.grpc_address)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton_grpc.InferInput(name, [1, 16], "INT32")
        tensor.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
        inputs.append(tensor)
    missing_trace, _, missing_headers = caller_context()
    try:
        client.infer("tfsimple1", inputs, headers={**headers, "x-request-id": "traced-grpc"})
        with pytest.raises(triton_grpc.InferenceServerException):
            client.infer("no-such-model", inputs, headers=missing_headers)
    finally:
        client.close()
    (failed,) = wait_spans(up, receiver, missing_trace, {"router.infer": 1})
    assert failed.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    spans = wait_spans(up, receiver, trace_id, {"router.infer": 1, "server.infer": 1})
    (router,) = [s for s in spans if s.name == "router.infer"]
    assert router.parent_id == caller_span
    assert router.attributes["rpc.grpc.status_code"] == 0
    assert router.attributes["x-request-id"] == "traced-grpc"
    (server,) = children(spans, router, "server.infer")
    assert server.attributes["inference.model.name"] == "tfsimple1_1"
    assert server.attributes["x-request-id"] == "traced-grpc"


def test_pipeline_call_is_one_trace_through_every_hop(up, receiver):
    trace_id, caller_span, headers = caller_context()
    answer = up.infer("tfsimples", tfsimple_request(), headers=headers)
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    spans = wait_spans(
        up,
        receiver,
        trace_id,
        # Stages: the pipeline's inputs to tfsimple1, tfsimple1 to tfsimple2, tfsimple2 to
        # the pipeline's outputs.
        {"router.infer": 1, "pipeline-gateway.infer": 1, "dataflow.stage": 3,
         "model-gateway.infer": 2, "server.infer": 2},
    )  # fmt: skip
    (router,) = [s for s in spans if s.name == "router.infer"]
    assert router.parent_id == caller_span
    (gateway,) = children(spans, router, "pipeline-gateway.infer")
    assert gateway.attributes["inference.pipeline.name"] == "tfsimples"
    # The chain: gateway -> stage -> tfsimple1's call -> stage -> tfsimple2's call -> stage.
    parent = gateway
    for model in ("tfsimple1", "tfsimple2"):
        (stage,) = children(spans, parent, "dataflow.stage")
        (step,) = children(spans, stage, "model-gateway.infer")
        assert step.attributes["inference.model.name"] == model
        (server,) = children(spans, step, "server.infer")
        assert server.service == "inferline-server"
        assert server.attributes["inference.model.name"] == f"{model}_1"
        parent = step
    (last,) = children(spans, parent, "dataflow.stage")
    for span in spans:
        if span.name in ("dataflow.stage", "model-gateway.infer"):
            assert span.service == "inferline-core"
            assert span.attributes["x-request-id"] == request_id
    assert {s.span_id for s in spans} >= {s.parent_id for s in spans if s is not router}
    assert last.attributes["messaging.destination.name"].endswith("tfsimple2.outputs")
