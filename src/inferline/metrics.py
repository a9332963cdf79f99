"""Prometheus metrics, served at `/metrics` on the REST port of the server and the router.

Names follow MLServer's where MLServer has one (`model_infer_request_success`, ...,
`seldon_model_drift`), so dashboards built for it keep working; the router's follow Seldon Core
2's (`seldon_model_infer_total`, `seldon_pipeline_infer_total`, ...). A process started with
`PROMETHEUS_MULTIPROC_DIR` set (the server's worker processes) reports the sum over every
process writing to that folder.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import REGISTRY as _DEFAULT_REGISTRY

MODEL_LABELS = ("model", "version")

INFER_SUCCESS = Counter(
    "model_infer_request_success", "Inference requests a model answered", MODEL_LABELS
)
INFER_FAILURE = Counter(
    "model_infer_request_failure", "Inference requests that failed in the model", MODEL_LABELS
)
INFER_DURATION = Histogram(
    "model_infer_request_duration_seconds",
    "Time a model took to answer, queueing for a batch included",
    MODEL_LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "model_infer_batch_size",
    "Requests merged into one call of the model by adaptive batching",
    MODEL_LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
# Only servers with several workers count this, one series per worker slot (a replaced worker
# continues its slot's count): it shows whether the load really spreads over the processes.
WORKER_REQUESTS = Counter(
    "inferline_worker_requests",
    "Inference requests each worker process of a server received",
    ("worker",),
)
DRIFT = Histogram(
    "seldon_model_drift",
    "Each is_drift value a drift detector reported (0 or 1)",
    ("model_name", "model_version"),
    buckets=(0.5, 1),
)

# The router's, named and labelled as Seldon Core 2's agent counts the calls that reach a server
# replica (scheduler/pkg/metrics/agent.go) and its pipeline gateway the pipeline calls
# (scheduler/pkg/metrics/gateway.go), with their buckets. inferline has no agent: the router
# counts each call it makes to a replica. prometheus_client adds `_total` to a counter's name.
SELDON_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_MODEL_LABELS = ("server", "server_replica", "model", "model_internal", "method_type", "code")
_MODEL_AGGREGATE_LABELS = ("server", "server_replica", "method_type")
MODEL_INFER = Counter("seldon_model_infer", "A count of server inference calls", _MODEL_LABELS)
MODEL_INFER_SECONDS = Counter(
    "seldon_model_infer_seconds", "A sum of server inference call latencies", _MODEL_LABELS
)
MODEL_AGGREGATE_INFER = Counter(
    "seldon_model_aggregate_infer",
    "A count of server inference calls (aggregate)",
    _MODEL_AGGREGATE_LABELS,
)
MODEL_AGGREGATE_INFER_SECONDS = Counter(
    "seldon_model_aggregate_infer_seconds",
    "A sum of server inference call latencies (aggregate)",
    _MODEL_AGGREGATE_LABELS,
)
MODEL_INFER_API = Histogram(
    "seldon_model_infer_api_seconds",
    "A histogram of latencies for inference server",
    ("server", "server_replica", "method", "code"),
    buckets=SELDON_BUCKETS,
)
PIPELINE_SERVER = "pipeline-gateway"
_PIPELINE_LABELS = ("server", "pipeline", "method_type", "code")
PIPELINE_INFER = Counter(
    "seldon_pipeline_infer", "A count of pipeline gateway calls", _PIPELINE_LABELS
)
PIPELINE_INFER_SECONDS = Counter(
    "seldon_pipeline_infer_seconds", "A sum of pipeline gateway call latencies", _PIPELINE_LABELS
)
PIPELINE_AGGREGATE_INFER = Counter(
    "seldon_pipeline_aggregate_infer",
    "A count of pipeline gateway calls (aggregate)",
    ("server", "method_type"),
)
PIPELINE_AGGREGATE_INFER_SECONDS = Counter(
    "seldon_pipeline_aggregate_infer_seconds",
    "A sum of pipeline gateway call latencies (aggregate)",
    ("server", "method_type"),
)
PIPELINE_INFER_API = Histogram(
    "seldon_pipeline_infer_api_seconds",
    "A histogram of latencies for pipeline gateway",
    ("server", "pipeline", "method", "code"),
    buckets=SELDON_BUCKETS,
)


class InferSeries:
    """The five series one kind of call adds to (count and seconds, their aggregates, the
    histogram), bound once: label lookups cost more than the increments."""

    __slots__ = ("aggregate_count", "aggregate_seconds", "count", "latency", "seconds")

    def __init__(self, count, seconds, aggregate_count, aggregate_seconds, latency):
        self.count = count
        self.seconds = seconds
        self.aggregate_count = aggregate_count
        self.aggregate_seconds = aggregate_seconds
        self.latency = latency

    def observe(self, seconds: float) -> None:
        self.count.inc()
        self.seconds.inc(seconds)
        self.aggregate_count.inc()
        self.aggregate_seconds.inc(seconds)
        self.latency.observe(seconds)


def model_infer_series(
    server: str, replica: str, model: str, internal: str, method_type: str, method: str, code: str
) -> InferSeries:
    """`method` is the histogram's: Seldon's agent puts the HTTP method there for REST ("post")
    and "grpc" for gRPC."""
    labels = (server, replica, model, internal, method_type, code)
    return InferSeries(
        MODEL_INFER.labels(*labels),
        MODEL_INFER_SECONDS.labels(*labels),
        MODEL_AGGREGATE_INFER.labels(server, replica, method_type),
        MODEL_AGGREGATE_INFER_SECONDS.labels(server, replica, method_type),
        MODEL_INFER_API.labels(server, replica, method, code),
    )


def pipeline_infer_series(pipeline: str, method_type: str, code: str) -> InferSeries:
    labels = (PIPELINE_SERVER, pipeline, method_type, code)
    return InferSeries(
        PIPELINE_INFER.labels(*labels),
        PIPELINE_INFER_SECONDS.labels(*labels),
        PIPELINE_AGGREGATE_INFER.labels(PIPELINE_SERVER, method_type),
        PIPELINE_AGGREGATE_INFER_SECONDS.labels(PIPELINE_SERVER, method_type),
        # Seldon's gateway puts the method type ("rest", "grpc") in the histogram's `method`.
        PIPELINE_INFER_API.labels(*labels),
    )


def labels(model: str, version: str | None) -> dict[str, str]:
    return {"model": model, "version": version or ""}


def exposition(multiprocess_dir: str | None = None) -> tuple[bytes, str]:
    """The body and content type of a `/metrics` answer: this process's metrics, or the sum of
    what the processes writing to `multiprocess_dir` (default: `PROMETHEUS_MULTIPROC_DIR`)
    counted."""
    return generate_latest(_registry(multiprocess_dir)), CONTENT_TYPE_LATEST


def _registry(multiprocess_dir: str | None):
    multiprocess_dir = multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not multiprocess_dir:
        return _DEFAULT_REGISTRY
    # Several processes write their own files; a fresh registry sums them on every scrape.
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    return registry
