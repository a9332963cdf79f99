"""The table and its warnings, as a user reads them."""

from collections import Counter

import numpy as np
from rich.console import Console

from inferline.bench.report import print_result
from inferline.bench.stats import ProcessStats, merge


def _printed(result) -> str:
    console = Console(record=True, width=200)
    print_result(console, "model iris (rest)", result)
    return console.export_text()


def test_table_shows_throughput_percentiles_and_errors_by_status():
    part = ProcessStats(
        np.full(1000, 0.004),
        Counter({"503": 7, "UNAVAILABLE": 2}),
        {"503": "no ready replica of 'iris'", "UNAVAILABLE": "down"},
        elapsed=2.0,
        cpu_seconds=0.6,
    )
    text = _printed(merge([part]))
    assert "500.0 req/s" in text
    for key in ("p50", "p90", "p99", "max"):
        assert f"latency {key}" in text
    assert "4.00 ms" in text
    assert "503" in text and "no ready replica of 'iris'" in text
    assert "UNAVAILABLE" in text
    assert "30%" in text  # client CPU
    assert "warning" not in text


def test_a_saturated_load_process_is_called_out():
    cool = ProcessStats(np.full(10, 0.001), elapsed=1.0, cpu_seconds=0.3)
    busy = ProcessStats(np.full(10, 0.001), elapsed=1.0, cpu_seconds=0.97)
    text = _printed(merge([cool, busy]))
    assert "warning" in text
    assert "load process(es) 1 used 90% or more of a core" in text
    assert "the client was the bottleneck" in text


def test_dropped_arrivals_are_called_out():
    part = ProcessStats(np.full(10, 0.001), elapsed=1.0, cpu_seconds=0.1, dropped=12)
    text = _printed(merge([part]))
    assert "12 arrivals were dropped" in text
