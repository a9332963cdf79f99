"""Percentiles, error counts and the merge of several load processes' measurements."""

from collections import Counter

import numpy as np
import pytest

from inferline.bench.stats import ProcessStats, latency_summary, merge


def test_summary_matches_numpy_on_known_samples():
    rng = np.random.default_rng(7)
    seconds = rng.lognormal(mean=-6, sigma=0.8, size=10_001)
    summary = latency_summary(seconds)
    ms = seconds * 1000
    for p in (50, 90, 99):
        assert summary[f"p{p}"] == pytest.approx(np.percentile(ms, p))
    assert summary["max"] == pytest.approx(ms.max())
    assert summary["min"] == pytest.approx(ms.min())
    assert summary["mean"] == pytest.approx(ms.mean())


def test_summary_of_1_to_100_ms():
    summary = latency_summary(np.arange(1, 101) / 1000)
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p90"] == pytest.approx(90.1)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == pytest.approx(100.0)


def test_no_samples_gives_nan_not_a_crash():
    assert all(np.isnan(v) for v in latency_summary(np.empty(0)).values())


def test_merge_pools_samples_counts_and_errors():
    fast = ProcessStats(
        np.full(300, 0.001), Counter({"404": 2}), {"404": "model 'x' not found"}, 2.0, 0.5
    )
    slow = ProcessStats(
        np.full(100, 0.009),
        Counter({"404": 1, "UNAVAILABLE": 3}),
        {"404": "other text", "UNAVAILABLE": "down"},
        2.5,
        2.4,
        dropped=4,
    )
    result = merge([fast, slow])
    assert result.requests == 400
    assert result.errors == 6
    assert result.errors_by_status == {"404": 3, "UNAVAILABLE": 3}
    assert result.error_examples == {"404": "model 'x' not found", "UNAVAILABLE": "down"}
    assert result.elapsed == 2.5  # side by side: as long as the longest
    assert result.throughput == pytest.approx(400 / 2.5)
    pooled = np.concatenate([np.full(300, 1.0), np.full(100, 9.0)])
    assert result.latency_ms["p90"] == pytest.approx(np.percentile(pooled, 90))
    assert result.dropped == 4
    assert result.process_cpu == pytest.approx([0.25, 0.96])
    assert result.client_cpu_saturated  # the second process used 96% of a core


def test_result_json_has_the_documented_keys():
    doc = merge([ProcessStats(np.full(10, 0.002), elapsed=1.0, cpu_seconds=0.1)]).to_dict()
    assert doc["requests"] == 10
    assert doc["errors"] == 0
    assert doc["throughput"] == pytest.approx(10.0)
    assert set(doc["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert doc["client_cpu_saturated"] is False
