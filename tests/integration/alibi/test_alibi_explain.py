"""Alibi Explain on the platform, as Seldon Core 2 runs an explainer: `inferline up` (main
virtualenv) plus a server from the Alibi virtualenv joining it. A Model with an `explainer`
block of an anchor type is placed on the server that has Alibi, and explains the iris model
by calling it through the router, by modelRef and by pipelineRef."""

import json
import os
import subprocess

import numpy as np
import pytest
from control_plane._platform import Proc, new_up, wait_until, write_file

pytestmark = pytest.mark.slow

IRIS = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: iris
spec:
  storageUri: "{uri}"
  requirements: [sklearn]
  # The main virtualenv's server: the model was pickled with its numpy 2.
  server: mlserver
"""
PIPELINE = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: iris-pipe
spec:
  steps:
  - name: iris
  output:
    steps:
    - iris
"""
EXPLAINER = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: {name}
spec:
  storageUri: "{uri}"
  explainer:
    type: anchor_tabular
    {ref}
"""
# A virginica flower: long, wide petals.
ROW = [[6.7, 3.0, 5.2, 2.3]]
REQUEST = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, request, alibi_python, alibi_artifacts, iris_model):
    up = new_up(tmp_path_factory, request.module.__name__, servers=1).start()
    log_path = up.workdir / "logs" / "alibi-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "server", "--scheduler", f"127.0.0.1:{up.scheduler_port}", "--name", "alibi",
        "--host", "127.0.0.1", "--router", f"127.0.0.1:{up.http_port}",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(alibi_python), "-m", "inferline", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    alibi_server = Proc("alibi server", process, log_path)
    try:
        up.wait_replicas(1, timeout=180, server="alibi")
        folder = up.workdir / "manifests"
        folder.mkdir()
        up.cli("load", "-f", str(write_file(folder, "iris.yaml", IRIS.format(uri=iris_model))))
        up.cli("load", "-f", str(write_file(folder, "pipe.yaml", PIPELINE)))
        anchors = alibi_artifacts / "explain" / "iris-anchors"
        for name, ref in (
            ("iris-anchors", "modelRef: iris"),
            ("pipe-anchors", "pipelineRef: iris-pipe"),
        ):
            manifest = EXPLAINER.format(name=name, uri=anchors, ref=ref)
            up.cli("load", "-f", str(write_file(folder, f"{name}.yaml", manifest)))
        up.wait_model("iris")
        wait_until(
            lambda: (
                up.http.post(
                    f"{up.router_url}/v2/pipelines/iris-pipe/infer", json=REQUEST
                ).status_code
                == 200
            ),
            60,
            "the pipeline iris-pipe to answer",
        )
        yield up
    finally:
        alibi_server.stop()
        up.proc.stop()
        up.http.close()


def explanation(answer) -> dict:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (output,) = body["outputs"]
    assert output["name"] == "explanation" and output["datatype"] == "BYTES"
    assert body["parameters"]["headers"] == {
        "x-seldon-alibi-type": "explanation",
        "x-seldon-alibi-method": "anchor_tabular",
    }
    return json.loads(output["data"][0])


def check_anchor(doc: dict) -> None:
    assert doc["meta"]["name"] == "AnchorTabular"
    data = doc["data"]
    # The anchor is read off the real iris model's answers: petals decide virginica.
    assert any("petal" in condition for condition in data["anchor"]), data["anchor"]
    assert data["precision"] >= 0.9, data["precision"]
    assert np.ravel(data["raw"]["prediction"]).tolist() == [2]


@pytest.mark.parametrize("name", ["iris-anchors", "pipe-anchors"])
def test_an_anchor_explainer_explains_through_the_router(platform, name):
    platform.wait_model(name, timeout=180)
    # Placed where Alibi is installed: the main virtualenv's server does not offer alibi-explain.
    assert platform.holders(f"{name}_1", server="alibi") == [0]
    assert "alibi-explain" not in platform.server("mlserver")["replicas"][0]["capabilities"]
    check_anchor(explanation(platform.infer(name, REQUEST)))


def test_explain_parameters_reach_alibi(platform):
    platform.wait_model("iris-anchors", timeout=180)
    request = {**REQUEST, "parameters": {"explain_parameters": {"threshold": 0.99}}}
    doc = explanation(platform.infer("iris-anchors", request))
    assert doc["meta"]["params"]["threshold"] == 0.99
    assert doc["data"]["precision"] >= 0.95
