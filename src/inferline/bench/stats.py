"""What one load process measured, and the merge of several into the run's result.

Each process keeps every latency sample (a float per request: 8 bytes, so a million requests is
8 MB) instead of a histogram: merging is a concatenation and the percentiles are exact, the same
numbers `numpy.percentile` gives on the pooled samples.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 99)
# A load process using this share of one core or more was busy all the time: the requests it
# sent were late, and the numbers measure the client, not the server.
SATURATED_CPU = 0.9


@dataclass
class ProcessStats:
    """One load process's measured phase."""

    latencies: np.ndarray  # seconds, one per answered request (errors included)
    errors: Counter = field(default_factory=Counter)  # status -> count
    error_examples: dict[str, str] = field(default_factory=dict)  # status -> first message
    elapsed: float = 0.0  # wall seconds of the measured phase
    cpu_seconds: float = 0.0  # this process's CPU time over the measured phase
    dropped: int = 0  # open loop: arrivals not sent because too many were in flight

    @property
    def cpu_share(self) -> float:
        """Cores used on average (1.0: one core fully busy)."""
        return self.cpu_seconds / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class BenchResult:
    requests: int
    errors: int
    errors_by_status: dict[str, int]
    error_examples: dict[str, str]
    elapsed: float
    throughput: float  # answered requests per second over the measured phase
    latency_ms: dict[str, float]
    process_cpu: list[float]  # cores used per load process
    dropped: int = 0
    interrupted: bool = False  # stopped early (Ctrl-C): the numbers cover a shorter run

    @property
    def client_cpu_saturated(self) -> bool:
        return any(share >= SATURATED_CPU for share in self.process_cpu)

    def to_dict(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "errors_by_status": self.errors_by_status,
            "error_examples": self.error_examples,
            "duration_s": round(self.elapsed, 3),
            "throughput": self.throughput,
            "latency_ms": self.latency_ms,
            "dropped": self.dropped,
            "client_cpu": [round(share, 3) for share in self.process_cpu],
            "client_cpu_saturated": self.client_cpu_saturated,
            "interrupted": self.interrupted,
        }


def latency_summary(seconds: np.ndarray) -> dict[str, float]:
    """min, mean, p50, p90, p99 and max in milliseconds (NaN for no samples)."""
    if seconds.size == 0:
        return {key: float("nan") for key in ("min", "mean", "p50", "p90", "p99", "max")}
    ms = seconds * 1000.0
    points = np.percentile(ms, PERCENTILES)
    summary = {"min": float(ms.min()), "mean": float(ms.mean())}
    summary.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, points, strict=True)})
    summary["max"] = float(ms.max())
    return summary


def merge(parts: list[ProcessStats]) -> BenchResult:
    """Pool the processes' samples. They ran side by side, so the run lasted as long as the
    longest of them, and throughput is all answers over that time."""
    latencies = (
        np.concatenate([p.latencies for p in parts]) if parts else np.empty(0, dtype=np.float64)
    )
    errors: Counter = Counter()
    examples: dict[str, str] = {}
    for part in parts:
        errors.update(part.errors)
        for status, message in part.error_examples.items():
            examples.setdefault(status, message)
    elapsed = max((p.elapsed for p in parts), default=0.0)
    return BenchResult(
        requests=int(latencies.size),
        errors=sum(errors.values()),
        errors_by_status=dict(errors.most_common()),
        error_examples=examples,
        elapsed=elapsed,
        throughput=latencies.size / elapsed if elapsed > 0 else 0.0,
        latency_ms=latency_summary(latencies),
        process_cpu=[p.cpu_share for p in parts],
        dropped=sum(p.dropped for p in parts),
    )
