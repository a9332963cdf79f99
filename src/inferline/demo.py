"""`inferline demo`: the platform end to end on this machine, with nothing to prepare.

It trains the iris example into a temporary folder, runs `inferline up` as a separate process,
loads a Seldon Core 2 Model resource, waits for it, sends a V2 request through the router and
prints the answer, then stops everything. Each step prints the CLI command that does the same.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from inferline.examples import train_iris

__all__ = ["free_port", "run_demo", "train_iris", "wait_for_http", "wait_until_ready"]

IRIS_REQUEST = {
    "inputs": [
        {
            "name": "predict",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
        }
    ]
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[3]} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def wait_until_ready(http_port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    wait_for_http(f"http://127.0.0.1:{http_port}/v2/health/ready", process, timeout)


def _call(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, body, headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read()), dict(answer.headers)


def run_demo(workdir: Path) -> dict:
    artifact = train_iris(workdir / "artifacts" / "iris")
    ports = {"http": free_port(), "grpc": free_port(), "scheduler": free_port()}
    command = [
        sys.executable, "-m", "inferline", "up", "--data-dir", str(workdir / "data"),
        "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
        "--scheduler-port", str(ports["scheduler"]),
    ]  # fmt: skip
    print("$ inferline up", " ".join(command[4:]), flush=True)
    up = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    scheduler = f"http://127.0.0.1:{ports['scheduler']}"
    router = f"http://127.0.0.1:{ports['http']}"
    try:
        wait_for_http(f"{scheduler}/v1/health", up)
        model = (
            "apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\nmetadata:\n  name: iris\n"
            f"spec:\n  storageUri: {artifact}\n  requirements:\n  - sklearn\n"
        )
        print("$ inferline load -f iris.yaml", flush=True)
        print(model, flush=True)
        results, _ = _call("POST", f"{scheduler}/v1/resources", model.encode())
        for r in results:
            print(f"{r['kind'].lower()}/{r['name']} {r['result']}", flush=True)

        print("$ inferline model status iris -w ModelAvailable -t 60", flush=True)
        deadline = time.monotonic() + 60
        while True:
            status, _ = _call("GET", f"{scheduler}/v1/models/iris")
            if status["state"] == "ModelAvailable" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"iris version {status['version']}: {status['state']}", flush=True)
        if status["state"] != "ModelAvailable":
            raise RuntimeError(f"iris did not become available: {status['reason']}")

        print(f"$ inferline model infer iris '{json.dumps(IRIS_REQUEST)}' --show-headers")
        response, headers = _call(
            "POST",
            f"{router}/v2/models/iris/infer",
            json.dumps(IRIS_REQUEST).encode(),
            {"Content-Type": "application/json"},
        )
        for key in ("x-request-id", "x-seldon-route"):
            print(f"{key}: {headers.get(key, headers.get(key.title(), ''))}")
        print(json.dumps(response, indent=2), flush=True)
        return response
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=20)
        except subprocess.TimeoutExpired:
            up.kill()
