"""inferline.tracing: the setting from flags and environment, the missing-extra error, W3C trace
context through bus headers, and a model gateway's span between the message it reads and the
model call and message it makes (spans kept in memory by the SDK's InMemorySpanExporter)."""

import asyncio
import contextlib
import sys

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inferline import tracing
from inferline.bus.embedded import EmbeddedBus
from inferline.dataflow.topics import TopicNames
from inferline.gateways.model_gateway import ModelGateway, ModelGatewayConfig

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.start("inferline-test", SimpleSpanProcessor(exporter))
    yield exporter
    tracing.shutdown()


# --- the setting ----------------------------------------------------------------------------------


def test_no_endpoint_anywhere_means_no_tracing():
    assert tracing.config_from(environ={}) is None


def test_flag_endpoint_gets_the_otlp_http_traces_path_unless_it_has_a_path():
    assert tracing.config_from("http://collector:4318", environ={}) == tracing.TracingConfig(
        "http://collector:4318/v1/traces", "http", 1.0
    )
    assert (
        tracing.config_from("http://c:4318/custom", environ={}).endpoint == "http://c:4318/custom"
    )


def test_flags_win_over_the_environment():
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}
    config = tracing.config_from("http://flag:4318", "grpc", 0.25, environ)
    assert config == tracing.TracingConfig("http://flag:4318", "grpc", 0.25)


def test_standard_environment_variables():
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318/"}
    assert tracing.config_from(environ=base).endpoint == "http://env:4318/v1/traces"
    # The traces endpoint is taken as it is, and beats the base one.
    traces = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9/x"}
    assert tracing.config_from(environ=traces).endpoint == "http://t:9/x"
    grpc = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert tracing.config_from(environ=grpc) == tracing.TracingConfig("http://env:4317", "grpc")
    ratio = {
        **base,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    assert tracing.config_from(environ=ratio).ratio == 0.1
    assert tracing.config_from(environ={**base, "OTEL_SDK_DISABLED": "true"}) is None


@pytest.mark.parametrize(
    ("protocol", "ratio", "message"),
    [("zipkin", None, "http or grpc"), (None, 1.5, "between 0 and 1")],
)
def test_bad_settings_are_one_line_errors(protocol, ratio, message):
    with pytest.raises(tracing.TracingError, match=message):
        tracing.config_from("http://c:4318", protocol, ratio, environ={})


def test_without_the_extra_setup_names_the_install_command(monkeypatch):
    # A None entry in sys.modules makes the import fail, as if the package were not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(tracing.TracingError) as failure:
        tracing.setup("x", tracing.TracingConfig("http://c:4318/v1/traces"))
    assert str(failure.value) == 'tracing needs OpenTelemetry: pip install "inferline[tracing]"'
    assert not tracing.ENABLED


def test_cli_args_give_back_the_same_setting():
    config = tracing.TracingConfig("http://c:4318/v1/traces", "http", 0.5)
    args = config.cli_args()
    assert tracing.config_from(args[1], args[3], float(args[5]), environ={}) == config


# --- propagation ----------------------------------------------------------------------------------


def test_a_span_continues_the_trace_in_bus_headers_and_writes_its_own(spans):
    incoming = [("pipeline", b"p"), ("x-request-id", b"r1"), ("traceparent", CALLER.encode())]
    with tracing.span("step", "consumer", incoming, {"x-request-id": "r1"}) as current:
        outgoing = tracing.bus_headers(incoming)
        http = tracing.http_headers([(b"traceparent", CALLER.encode()), (b"x-a", b"1")])
        grpc = tracing.grpc_metadata([("x-a", "1")])
    (span,) = spans.get_finished_spans()
    context = current.get_span_context()
    own = f"00-{CALLER_TRACE}-{context.span_id:016x}-01"
    assert format(span.context.trace_id, "032x") == CALLER_TRACE
    assert format(span.parent.span_id, "016x") == CALLER_SPAN
    assert span.kind is SpanKind.CONSUMER and span.attributes["x-request-id"] == "r1"
    # The caller's context is replaced, the other headers kept.
    assert outgoing == [("pipeline", b"p"), ("x-request-id", b"r1"), ("traceparent", own.encode())]
    assert http == [(b"x-a", b"1"), (b"traceparent", own.encode())]
    assert grpc == [("x-a", "1"), ("traceparent", own)]
    # And the next hop reads it back as its parent.
    with tracing.span("next", "consumer", outgoing):
        pass
    assert spans.get_finished_spans()[1].parent.span_id == context.span_id


def test_without_trace_context_a_span_starts_a_new_trace(spans):
    with tracing.span("root", "server", [("x-request-id", b"r")]):
        pass
    (span,) = spans.get_finished_spans()
    assert span.parent is None


def test_an_unsampled_caller_is_not_recorded_and_its_choice_goes_on(spans):
    unsampled = CALLER[:-2] + "00"
    with tracing.span("s", "server", [("traceparent", unsampled)]):
        ((name, value),) = tracing.context_headers()
    assert name == "traceparent"
    assert value.startswith(f"00-{CALLER_TRACE}-") and value.endswith("-00")
    assert spans.get_finished_spans() == ()


def test_a_failure_marks_the_span(spans):
    with contextlib.suppress(ValueError), tracing.span("s", "server"):
        raise ValueError("boom")
    (span,) = spans.get_finished_spans()
    assert not span.status.is_ok


# --- a hook at work: the model gateway --------------------------------------------------------


async def test_model_gateway_span_links_the_message_the_model_call_and_the_answer(tmp_path, spans):
    topics = TopicNames()
    bus = EmbeddedBus(tmp_path / "bus")
    seen: list[list[tuple[str, str]]] = []

    async def caller(model, request, metadata):
        seen.append(metadata)
        return b"answer", []

    gateway = ModelGateway("m", bus, topics, caller, ModelGatewayConfig(workers=1))
    task = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(gateway.ready.wait(), 5)
        headers = [("pipeline", b"p"), ("x-request-id", b"r1"), ("traceparent", CALLER.encode())]
        await bus.produce(topics.model("m", "inputs"), b"request", key=b"0.p.r1", headers=headers)
        for _ in range(500):
            answers = await bus.read_last(topics.model("m", "outputs"), 10)
            if answers:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()
    (span,) = spans.get_finished_spans()
    own = f"00-{CALLER_TRACE}-{span.context.span_id:016x}-01"
    assert span.name == "model-gateway.infer"
    assert format(span.parent.span_id, "016x") == CALLER_SPAN
    assert span.attributes["inference.model.name"] == "m"
    assert span.attributes["x-request-id"] == "r1"
    # The model call carries the span's context, and so does the answer on the bus.
    assert ("traceparent", own) in seen[0]
    assert answers[0].header("traceparent") == own.encode()
