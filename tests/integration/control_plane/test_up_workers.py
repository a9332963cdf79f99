"""`inferline up --workers 2`: each model server runs two worker processes, and a model loaded
through the scheduler answers through the router from both; with `--front` too, where the
server's parent takes the requests and passes them to the workers."""

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from ._platform import Up, model_yaml, wait_until, write_file

pytestmark = pytest.mark.slow

WHOAMI = """
    import os

    import numpy as np

    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class WhoAmI(Runtime):
        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            pid = Tensor.from_numpy("pid", np.array([[os.getpid()]], dtype=np.int64))
            return InferenceResponse(model_name=self.name, outputs=[pid])
"""


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The parent pid is the second field after the command name, which may hold spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry))
    return children


def _workers(server: int) -> list[int]:
    """The server's workers: its template process's children (they are forked from it), or its
    own children when they were started fresh."""
    workers = []
    for child in _children(server):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        workers += _children(child) if b"--template" in cmdline else [child]
    return workers


@pytest.fixture(scope="module", params=[False, True], ids=["ports-shared", "front"])
def up(request, up_factory) -> Up:
    return up_factory(1, workers=2, front=request.param)


def test_a_model_loaded_by_the_scheduler_is_served_by_both_workers(up, iris_artifact):
    (replica,) = up.server()["replicas"]
    server = replica["pid"]
    workers = wait_until(
        lambda: len(_workers(server)) == 2 and _workers(server),
        30,
        "the model server to run two workers",
    )
    up.cli(
        "load", "-f", str(write_file(up.workdir, "iris.yaml", model_yaml("iris", iris_artifact)))
    )
    up.cli("model", "status", "iris", "-w", "ModelAvailable", "-t", "60")
    up.wait_iris_answers("iris", "iris_1")

    # /metrics on the server's port sums what every worker answered.
    for _ in range(50):
        assert up.infer("iris").status_code == 200
    metrics = up.http.get(f"http://{replica['http']}/metrics").text
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('model_infer_request_success_total{model="iris_1"')
    ]
    assert served and served[0] >= 50
    # Each worker loaded the model: both still run, and none was replaced.
    assert sorted(_workers(server)) == sorted(workers)


def test_the_routers_grpc_calls_reach_every_worker(up, tmp_path):
    """One client channel to the router; the router's own channels to the server spread over the
    server's workers (one HTTP/2 connection would land on one worker)."""
    (replica,) = up.server()["replicas"]
    folder = tmp_path / "whoami"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(WHOAMI))
    (folder / "model-settings.json").write_text(
        json.dumps({"name": "whoami", "implementation": "model.WhoAmI"})
    )
    up.cli("load", "-f", str(write_file(up.workdir, "whoami.yaml", model_yaml("whoami", folder))))
    up.cli("model", "status", "whoami", "-w", "ModelAvailable", "-t", "60")

    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{up.grpc_port}")
    tensor = grpcclient.InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    try:
        pids = {int(client.infer("whoami", [tensor]).as_numpy("pid").ravel()[0]) for _ in range(40)}
    finally:
        client.close()
    assert pids == set(_workers(replica["pid"]))
