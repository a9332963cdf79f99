"""One real `inferline serve` process holding the iris model and its monitoring models: an
explainer of iris that calls it back over REST, an outlier detector and a drift detector.

The explainer's `infer_uri` must name the server's own port, so the ports are chosen before the
model folders are written and the process is started with them.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import IsolationForest

from inferline.demo import free_port, train_iris, wait_until_ready

# The iris flowers a detector is fitted on, and a reference for drift.
REFERENCE_ROWS = slice(0, None, 2)


@dataclass
class MonitoringServer:
    url: str
    models: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _write(folder: Path, settings: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


def write_models(root: Path, http_port: int) -> None:
    features, _ = load_iris(return_X_y=True)
    train_iris(root / "iris")

    explainer = _write(
        root / "iris-explainer",
        {
            "name": "iris-explainer",
            "implementation": "explainer",
            "parameters": {
                "extra": {
                    "explainer_type": "kernel_shap",
                    "infer_uri": f"http://127.0.0.1:{http_port}/v2/models/iris/infer",
                    "infer_output": "predict_proba",
                    "init_parameters": {"seed": 0},
                }
            },
        },
    )
    np.save(explainer / "background.npy", features[::15])

    outlier = _write(root / "iris-outlier", {"name": "iris-outlier", "implementation": "outlier"})
    joblib.dump(IsolationForest(random_state=0).fit(features), outlier / "model.joblib")

    drift = _write(
        root / "iris-drift",
        {
            "name": "iris-drift",
            "implementation": "drift",
            "parameters": {"extra": {"batch_size": 2}},
        },
    )
    np.save(drift / "x_ref.npy", features[REFERENCE_ROWS])


@pytest.fixture(scope="module")
def monitoring_server(tmp_path_factory) -> Iterator[MonitoringServer]:
    root = tmp_path_factory.mktemp("monitoring")
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    write_models(root / "models", http_port)
    log_path = root / "serve.log"
    command = [
        sys.executable, "-m", "inferline", "serve", str(root / "models"),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--host", "127.0.0.1",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until_ready(http_port, process, timeout=60)
        yield MonitoringServer(f"http://127.0.0.1:{http_port}", root / "models", log_path)
    except Exception as exc:
        raise RuntimeError(f"inferline serve failed: {exc}\n{log_path.read_text()}") from exc
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
