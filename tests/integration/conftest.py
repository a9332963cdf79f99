"""Fixtures for the integration tests: real `inferline serve` processes and the iris model.

Every server runs as a separate process started with `sys.executable -m inferline serve`, on free
ports, and is stopped at teardown. Modules share one server each through module-scoped fixtures, so
the whole folder starts only a handful of processes. The iris model is trained once per session and
the expected answers are computed locally from the same `model.joblib`.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from inferline.demo import free_port, train_iris, wait_until_ready

# One row of each class and one from the edge between two, so every label appears.
IRIS_ROWS = [0, 50, 100, 77]


@dataclass
class Server:
    """A running `inferline serve` process and where to reach it."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"inferline serve exited:\n{self.log()}"


def launch_server(
    model_dirs: list[Path], log_path: Path, extra_args: tuple[str, ...] = ()
) -> Server:
    """Start the process; call `wait_ready` before using it (launch several, then wait)."""
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    command = [
        sys.executable, "-m", "inferline", "serve", *map(str, model_dirs),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--host", "127.0.0.1",
        *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as log_file:  # the child keeps its own handle
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return Server(process, http_port, grpc_port, log_path)


def wait_ready(server: Server) -> Server:
    try:
        wait_until_ready(server.http_port, server.process, timeout=30)
    except Exception as exc:
        stop_server(server)
        raise RuntimeError(f"inferline serve did not become ready: {exc}\n{server.log()}") from exc
    return server


def stop_servers(servers: list[Server]) -> None:
    """SIGTERM every server first, then wait for each (so they shut down in parallel)."""
    for server in servers:
        if server.process.poll() is None:
            server.process.terminate()
    for server in servers:
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


def stop_server(server: Server) -> None:
    stop_servers([server])


@pytest.fixture(scope="module")
def serve(tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """Start `inferline serve` processes for one module; all are stopped when the module ends.

    `serve(*model_dirs, extra_args=(...))` returns a ready server; with `wait=False` it returns
    at once, and the caller passes the server to `wait_ready` (to start several in parallel).
    """
    servers: list[Server] = []

    def _serve(*model_dirs: Path, extra_args: tuple[str, ...] = (), wait: bool = True) -> Server:
        log_path = tmp_path_factory.mktemp("serve-log") / "serve.log"
        server = launch_server(list(model_dirs), log_path, extra_args)
        servers.append(server)
        return wait_ready(server) if wait else server

    _serve.wait_ready = wait_ready
    yield _serve
    stop_servers(servers)


# --- model folders -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory) -> Path:
    """The demo's iris folder, trained once per session: model.joblib + MLServer settings."""
    return train_iris(tmp_path_factory.mktemp("models") / "iris")


def _copy_model_folder(source: Path, target: Path, name: str | None = None) -> Path:
    """Copy a model folder, renaming the model in its settings when `name` is given."""
    shutil.copytree(source, target)
    settings = target / "model-settings.json"
    if name is not None and settings.exists():
        doc = json.loads(settings.read_text())
        doc["name"] = name
        settings.write_text(json.dumps(doc))
    return target


def _write_custom_model(folder: Path, settings: dict, code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(code))
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


DOUBLER_CODE = """
    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class Doubler(Runtime):
        async def load(self):
            self.factor = 2

        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            outputs = [
                Tensor.from_numpy(f"{tensor.name}-doubled", tensor.data * self.factor)
                for tensor in request.inputs
            ]
            return InferenceResponse(
                model_name=self.name, outputs=outputs, parameters=dict(request.parameters)
            )
"""


@pytest.fixture(scope="session")
def doubler_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("custom") / "doubler"
    return _write_custom_model(
        folder, {"name": "doubler", "implementation": "model.Doubler"}, DOUBLER_CODE
    )


# --- expected answers --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def iris_features() -> np.ndarray:
    features, _ = load_iris(return_X_y=True)
    return features[IRIS_ROWS].astype(np.float32)


@pytest.fixture(scope="session")
def iris_expected(iris_dir, iris_features) -> dict[str, np.ndarray]:
    """What the served model must answer for `iris_features`, computed locally."""
    model = joblib.load(iris_dir / "model.joblib")
    return {
        "predict": np.asarray(model.predict(iris_features)).reshape(-1, 1),
        "predict_proba": np.asarray(model.predict_proba(iris_features)),
    }


def _iris_json_request(features: np.ndarray, request_id: str = "good-1", flat: bool = False):
    data = features.ravel().tolist() if flat else features.tolist()
    return {
        "id": request_id,
        "inputs": [
            {"name": "input-0", "shape": list(features.shape), "datatype": "FP32", "data": data}
        ],
    }


def _assert_iris_answers(
    rest: httpx.Client, server: Server, features: np.ndarray, expected: dict, model="iris"
):
    """A plain good REST request to the server succeeds with the expected prediction."""
    server.assert_running()
    answer = rest.post(
        f"{server.url}/v2/models/{model}/infer",
        json=_iris_json_request(features, "still-alive"),
    )
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["id"] == "still-alive"
    (output,) = doc["outputs"]
    assert output["name"] == "predict"
    assert output["shape"] == list(expected["predict"].shape)
    assert output["data"] == expected["predict"].ravel().tolist()


# Helpers handed to tests as fixtures, so test modules need not import this conftest.


@pytest.fixture(scope="session")
def iris_request(iris_features) -> Callable[..., dict]:
    """Build a V2 JSON request for the iris rows: `iris_request(request_id, flat=False)`."""
    return lambda request_id="good-1", flat=False: _iris_json_request(
        iris_features, request_id, flat
    )


@pytest.fixture(scope="session")
def rest() -> Iterator[httpx.Client]:
    """One HTTP client for the session (a client per call costs an SSL context each time)."""
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def assert_iris_ok(rest, iris_features, iris_expected) -> Callable[..., None]:
    """`assert_iris_ok(server, model="iris")`: a good request still gets the right answer."""
    return lambda server, model="iris": _assert_iris_answers(
        rest, server, iris_features, iris_expected, model
    )


@pytest.fixture(scope="session")
def copy_model_folder() -> Callable[..., Path]:
    return _copy_model_folder


@pytest.fixture(scope="session")
def write_custom_model() -> Callable[..., Path]:
    return _write_custom_model
