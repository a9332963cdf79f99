"""Latency of a pipeline against calling its model directly, through the same router.

Starts `inferline up` (embedded bus by default, or `--kafka BOOTSTRAP`), loads the tfsimple
model and two pipelines over it (one step; the two-step tfsimples chain), then calls each
sequentially and prints one table: p50 / p90 / p99 per target, and the pipeline's extra p50
over the direct call.

    python benchmarks/pipeline_latency.py [--requests 500] [--kafka 127.0.0.1:9092]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from inferline.demo import free_port, wait_for_http
from inferline.examples import write_runtime_model

RESOURCES = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata: {{name: tfsimple1}}
spec: {{storageUri: {uri}}}
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata: {{name: tfsimple2}}
spec: {{storageUri: {uri}}}
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata: {{name: one-step}}
spec:
  steps: [{{name: tfsimple1}}]
  output: {{steps: [tfsimple1]}}
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata: {{name: tfsimples}}
spec:
  steps:
  - name: tfsimple1
  - name: tfsimple2
    inputs: [tfsimple1]
    tensorMap:
      tfsimple1.outputs.OUTPUT0: INPUT0
      tfsimple1.outputs.OUTPUT1: INPUT1
  output: {{steps: [tfsimple2]}}
"""

REQUEST = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(1, 17))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(1, 17))},
    ]
}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def measure(client: httpx.Client, url: str, requests: int) -> list[float]:
    for _ in range(20):  # warm up connections and code paths
        client.post(url, json=REQUEST).raise_for_status()
    took = []
    for _ in range(requests):
        start = time.perf_counter()
        client.post(url, json=REQUEST).raise_for_status()
        took.append((time.perf_counter() - start) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--kafka", help="Kafka bootstrap servers (default: embedded bus)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uri = write_runtime_model(Path(tmp) / "tfsimple", "TfSimple")
        http, grpc, sched = free_port(), free_port(), free_port()
        command = [
            sys.executable, "-m", "inferline", "up", "--data-dir", f"{tmp}/data",
            "--http-port", str(http), "--grpc-port", str(grpc), "--scheduler-port", str(sched),
            *(["--kafka", args.kafka] if args.kafka else []),
        ]  # fmt: skip
        up = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_http(f"http://127.0.0.1:{sched}/v1/health", up)
            with httpx.Client(timeout=60) as client:
                scheduler = f"http://127.0.0.1:{sched}"
                client.post(f"{scheduler}/v1/resources", content=RESOURCES.format(uri=uri))
                deadline = time.monotonic() + 120
                for name in ("one-step", "tfsimples"):
                    while True:
                        status = client.get(f"{scheduler}/v1/pipelines/{name}").json()
                        if status["state"] == "PipelineReady" and status["modelsReady"]:
                            break
                        if time.monotonic() > deadline:
                            raise SystemExit(f"{name} not ready: {status}")
                        time.sleep(0.2)
                router = f"http://127.0.0.1:{http}"
                targets = {
                    "model tfsimple1 (direct)": f"{router}/v2/models/tfsimple1/infer",
                    "pipeline one-step": f"{router}/v2/pipelines/one-step/infer",
                    "pipeline tfsimples (2 steps)": f"{router}/v2/pipelines/tfsimples/infer",
                }
                results = {
                    name: measure(client, url, args.requests) for name, url in targets.items()
                }
        finally:
            up.terminate()
            up.wait(30)
    bus = f"kafka {args.kafka}" if args.kafka else "embedded bus"
    direct = statistics.median(results["model tfsimple1 (direct)"])
    print(f"{args.requests} sequential REST calls each, {bus}")
    print(f"{'target':32} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'+p50 ms':>8}")
    for name, took in results.items():
        p50 = statistics.median(took)
        print(
            f"{name:32} {p50:8.2f} {percentile(took, 90):8.2f} {percentile(took, 99):8.2f} "
            f"{p50 - direct:8.2f}"
        )


if __name__ == "__main__":
    main()
