"""`inferline up --workers 2`: each model server runs two worker processes, and a model loaded
through the scheduler answers through the router from both."""

import os
from pathlib import Path

import pytest

from ._platform import Up, model_yaml, wait_until, write_file

pytestmark = pytest.mark.slow


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


@pytest.fixture(scope="module")
def up(up_factory) -> Up:
    return up_factory(1, workers=2)


def test_a_model_loaded_by_the_scheduler_is_served_by_both_workers(up, iris_artifact):
    (replica,) = up.server()["replicas"]
    server = replica["pid"]
    workers = wait_until(
        lambda: len(_children(server)) == 2 and _children(server),
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
    assert sorted(_children(server)) == sorted(workers)
