"""The iris demo: trains a small scikit-learn model into an MLServer-style folder, serves it with
`inferline serve` as a separate process, and prints a prediction made over V2 REST."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

IRIS_SETTINGS = {
    "name": "iris",
    "implementation": "mlserver_sklearn.SKLearnModel",
    "parameters": {"uri": "./model.joblib", "version": "v0.1.0"},
}


def train_iris(folder: Path) -> Path:
    """Write an iris LogisticRegression and its MLServer model-settings.json into `folder`."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    folder.mkdir(parents=True, exist_ok=True)
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    joblib.dump(model, folder / "model.joblib")
    (folder / "model-settings.json").write_text(json.dumps(IRIS_SETTINGS, indent=2) + "\n")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(http_port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    url = f"http://127.0.0.1:{http_port}/v2/health/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"inferline serve exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"inferline serve was not ready after {timeout:.0f} s")


def run_demo(workdir: Path) -> dict:
    folder = train_iris(workdir / "iris")
    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "inferline", "serve", str(folder),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--host", "127.0.0.1",
    ]  # fmt: skip
    print("$", " ".join(["inferline", *command[3:]]))
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until_ready(http_port, process)
        request = {
            "id": "demo-1",
            "inputs": [
                {
                    "name": "predict",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
                }
            ],
        }
        url = f"http://127.0.0.1:{http_port}/v2/models/iris/infer"
        print("$ POST", url)
        print(json.dumps(request))
        post = urllib.request.Request(
            url, json.dumps(request).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=10) as answer:
            response = json.loads(answer.read())
        print(json.dumps(response, indent=2))
        return response
    finally:
        process.terminate()
        process.wait(timeout=10)
