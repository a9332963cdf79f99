"""OpenTelemetry tracing, as Seldon Core 2 has it: OTLP export, parent-based ratio sampling, and
W3C trace context (`traceparent`, `tracestate`) carried in HTTP headers, gRPC metadata and bus
message headers.

An optional extra (`pip install "inferline[tracing]"`). Off unless asked for, and free when off:
every hook at a component's edge first checks the module-level `ENABLED`, and OpenTelemetry is
imported only by `setup`, never on a hot path. One process has one service name (`inferline-router`,
`inferline-server`, `inferline-core` for `inferline up`'s core process).

    if tracing.ENABLED:
        with tracing.span("server.infer", "server", headers, {"inference.model.name": name}):
            ...
"""

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# Checked by every hook before any work; set by `setup` / `start`.
ENABLED = False

MISSING_EXTRA = 'tracing needs OpenTelemetry: pip install "inferline[tracing]"'
PROTOCOLS = ("http", "grpc")
# The W3C trace-context headers: what a span's context travels in.
CONTEXT_HEADERS = ("traceparent", "tracestate")

_tracer = None
_provider = None
_propagator = None
_kinds: dict = {}


class TracingError(Exception):
    """Tracing asked for but not possible (bad setting, extra not installed); one line."""


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str  # OTLP/HTTP: the traces URL (…/v1/traces); OTLP/gRPC: the collector's address
    protocol: str = "http"
    ratio: float = 1.0

    def cli_args(self) -> list[str]:
        """The same setting as command-line flags, for the processes `inferline up` starts."""
        return [
            "--tracing-endpoint", self.endpoint,
            "--tracing-protocol", self.protocol,
            "--tracing-ratio", repr(self.ratio),
        ]  # fmt: skip


def config_from(
    endpoint: str | None = None,
    protocol: str | None = None,
    ratio: float | None = None,
    environ: Mapping[str, str] = os.environ,
) -> TracingConfig | None:
    """The tracing setting from flags, else from OpenTelemetry's standard environment variables;
    None when no endpoint is given anywhere (tracing off) or OTEL_SDK_DISABLED is true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if endpoint:
        endpoint = _with_traces_path(endpoint)
    elif environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        # The traces endpoint is used as given, as OpenTelemetry's SDKs do.
        endpoint = environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    else:
        return None
    if protocol is None:
        wire = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        protocol = "grpc" if wire.strip() == "grpc" else "http"
    if protocol not in PROTOCOLS:
        raise TracingError(f"tracing protocol must be http or grpc, not '{protocol}'")
    if protocol == "grpc":
        # A gRPC collector is an address: the path the HTTP default added means nothing there.
        endpoint = endpoint.removesuffix("/v1/traces")
    if ratio is None:
        ratio = _env_ratio(environ)
    if not 0.0 <= ratio <= 1.0:
        raise TracingError(f"tracing ratio must be between 0 and 1, not {ratio}")
    return TracingConfig(endpoint, protocol, ratio)


def _with_traces_path(endpoint: str) -> str:
    """A bare collector address (`http://host:4318`) gets OTLP/HTTP's traces path; a URL with a
    path is taken as the traces URL itself."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def _env_ratio(environ: Mapping[str, str]) -> float:
    # Only the ratio samplers take a ratio; any other OTEL_TRACES_SAMPLER keeps Seldon's default.
    if "traceidratio" not in environ.get("OTEL_TRACES_SAMPLER", ""):
        return 1.0
    try:
        return float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1"))
    except ValueError:
        raise TracingError(
            f"OTEL_TRACES_SAMPLER_ARG must be a number, not '{environ['OTEL_TRACES_SAMPLER_ARG']}'"
        ) from None


def setup(service: str, config: TracingConfig) -> None:
    """Export this process's spans to `config`'s collector, batched; TracingError without the
    extra."""
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if config.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TracingError(MISSING_EXTRA) from None
    if config.protocol == "grpc":
        exporter = OTLPSpanExporter(endpoint=config.endpoint, insecure=True)
    else:
        exporter = OTLPSpanExporter(endpoint=config.endpoint)
    start(service, BatchSpanProcessor(exporter), config.ratio)


def start(service: str, processor, ratio: float = 1.0) -> None:
    """Trace with `processor` (an OpenTelemetry SpanProcessor); tests pass an in-memory one."""
    global ENABLED, _tracer, _provider, _propagator, _kinds
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    shutdown()
    # Not installed as the global provider: that can be set once per process, and nothing but
    # this module makes inferline's spans.
    _provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(ratio)),
        shutdown_on_exit=False,
    )
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("inferline")
    _propagator = TraceContextTextMapPropagator()
    _kinds = {
        "server": SpanKind.SERVER,
        "consumer": SpanKind.CONSUMER,
        "producer": SpanKind.PRODUCER,
    }
    ENABLED = True


def shutdown() -> None:
    """Export what is still buffered and stop tracing."""
    global ENABLED, _provider
    ENABLED = False
    if _provider is not None:
        provider, _provider = _provider, None
        provider.shutdown()


# --- hooks: call only when ENABLED --------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str, kind: str, headers: Iterable | None = None, attributes: Mapping | None = None
) -> Iterator:
    """A span, current inside the block. Its parent is the trace context in `headers` (HTTP
    header, gRPC metadata or bus header pairs, names lower-case, values str or bytes) when they
    carry one, else the current span. An exception leaving the block marks the span failed."""
    parent = None
    if headers is not None:
        carrier = _carrier(headers)
        if carrier:
            parent = _propagator.extract(carrier)
    with _tracer.start_as_current_span(
        name, context=parent, kind=_kinds[kind], attributes=attributes
    ) as current:
        yield current


def context_headers() -> list[tuple[str, str]]:
    """The current span's W3C trace-context headers (empty outside a span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return list(carrier.items())


# What a call or message made inside a span carries: its headers with any trace context that
# came in replaced by the current span's. One form per transport.


def http_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return _replaced(headers, [(k.encode(), v.encode()) for k, v in context_headers()])


def grpc_metadata(metadata: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return _replaced(metadata, context_headers())


def bus_headers(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return _replaced(headers, [(k, v.encode()) for k, v in context_headers()])


def _replaced(headers: list, own: list) -> list:
    if not own:
        return headers
    return [(k, v) for k, v in headers if _name(k) not in CONTEXT_HEADERS] + own


def _carrier(headers: Iterable) -> dict[str, str]:
    carrier = {}
    for key, value in headers:
        name = _name(key)
        if name in CONTEXT_HEADERS:
            carrier[name] = value.decode("latin-1") if isinstance(value, bytes) else value
    return carrier


def _name(key) -> str:
    return key.decode("latin-1") if isinstance(key, bytes) else key
