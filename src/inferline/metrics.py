"""Prometheus metrics, served at `/metrics` on the REST port of the server and the router.

Names follow MLServer's where MLServer has one (`model_infer_request_success`, ...,
`seldon_model_drift`), so dashboards built for it keep working. A process started with
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


def labels(model: str, version: str | None) -> dict[str, str]:
    return {"model": model, "version": version or ""}


def exposition() -> tuple[bytes, str]:
    """The body and content type of a `/metrics` answer."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def _registry():
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return _DEFAULT_REGISTRY
    # Several processes write their own files; a fresh registry sums them on every scrape.
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
