"""`pip install inferline` without extras: the core installs on numpy 2, serves a custom Python
model, and a model that needs an extra fails to load with the line that installs it.

The install goes into a fresh virtualenv made by uv (a dev dependency; seconds, where pip takes
about a minute), from this checkout, with no extra named.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from inferline.demo import free_port, wait_until_ready
from inferline.examples import train_iris

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

SCALER = """
    import numpy as np

    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class Scaler(Runtime):
        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            scaled = np.asarray(request.inputs[0].data, dtype=np.float64) * 3
            return InferenceResponse(self.name, outputs=[Tensor.from_numpy("scaled", scaled)])
"""


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("core") / "venv"
    uv = [sys.executable, "-m", "uv"]
    for command in (
        [*uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-e", "."],
    ):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return venv / "bin" / "python"


def _installed(python: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is None)"
    return subprocess.run([str(python), "-c", code]).returncode == 0


def test_the_core_installs_on_numpy_2_without_any_extra(core_python):
    version = subprocess.run(
        [str(core_python), "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(version.split(".")[0]) >= 2
    for optional in ("sklearn", "xgboost", "lightgbm", "onnxruntime", "confluent_kafka", "shap"):
        assert not _installed(core_python, optional), f"{optional} came with the core"


def test_the_core_serves_a_custom_model_and_names_the_missing_extra(core_python, tmp_path):
    models = tmp_path / "models"
    scaler = models / "scaler"
    scaler.mkdir(parents=True)
    (scaler / "model.py").write_text(textwrap.dedent(SCALER))
    (scaler / "model-settings.json").write_text(
        json.dumps({"name": "scaler", "implementation": "model.Scaler"})
    )
    train_iris(models / "iris")  # an sklearn model: the core has no scikit-learn to load it

    port, grpc_port = free_port(), free_port()
    command = [str(core_python), "-m", "inferline", "serve", str(models)]
    server = subprocess.Popen(
        [*command, "--http-port", str(port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_ready(port, server, timeout=60)
        base = f"http://127.0.0.1:{port}/v2/models"
        request = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
        answer = httpx.post(f"{base}/scaler/infer", json=request, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 6.0]

        iris = httpx.post(f"{base}/iris/infer", json=request, timeout=10)
        assert iris.status_code == 503
        assert 'pip install "inferline[sklearn]"' in iris.json()["error"]
    finally:
        server.terminate()
        server.wait(timeout=30)
