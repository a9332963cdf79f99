"""Restarts: the scheduler keeps its state on disk, and the data plane does not need it to serve.

(a) The whole `inferline up` is stopped with Ctrl-C and started again on the same data folder:
    every model comes back at the version it had. (b) With the components started one by one,
    the scheduler is killed: the router keeps routing on its last table meanwhile, and the
    restarted scheduler takes the running servers back as they are (same pids, same placement).
    (c) A server holding a model is restarted under a running scheduler.
"""

import json
import time

import pytest

from ._platform import (
    Components,
    TcpRelay,
    Up,
    model_yaml,
    new_components,
    one_error_line,
    pid_exists,
    wait_until,
    write_file,
)

pytestmark = pytest.mark.slow


def test_up_restart_brings_every_model_back_at_its_version(
    up_factory, iris_artifact, iris_artifact_copy
):
    up: Up = up_factory(2)
    manifests = (
        model_yaml("iris", iris_artifact)
        + "---\n"
        + model_yaml("iris-two", iris_artifact, replicas=2)
    )
    path = write_file(up.workdir, "models.yaml", manifests)
    loaded = up.cli("load", "-f", str(path)).stdout.split()
    assert loaded == ["model/iris", "created", "model/iris-two", "created"]
    # A second iris version, so the restart has a version other than 1 to keep.
    moved = write_file(up.workdir, "iris-moved.yaml", model_yaml("iris", iris_artifact_copy))
    assert up.cli("load", "-f", str(moved)).stdout.strip() == "model/iris version 2"
    status = up.cli("status", "-f", str(path), "-w", "-t", "60", "--json")
    assert [(s["modelName"], s["state"]) for s in json.loads(status.stdout)] == [
        ("iris", "ModelAvailable"),
        ("iris-two", "ModelAvailable"),
    ]
    up.wait_model("iris", version=2)
    up.wait_model("iris-two", version=1, replicas=2)
    server_pids = list(up.replica_pids().values())
    assert len(server_pids) == 2

    code = up.proc.interrupt(timeout=30)
    assert code == 0, f"`inferline up` exited with {code} on SIGINT"
    assert "stopping inferline..." in up.proc.log()
    left = [pid for pid in server_pids if pid_exists(pid)]
    assert not left, f"server processes still running after `inferline up` stopped: {left}"

    up.start()
    assert up.wait_model("iris", version=2)["versions"][0]["modelDefn"]["storageUri"] == str(
        iris_artifact_copy
    )
    up.wait_model("iris-two", version=1, replicas=2)
    up.wait_iris_answers("iris", "iris_2")
    up.wait_iris_answers("iris-two", "iris-two_1")
    assert not set(up.replica_pids().values()) & set(server_pids)


# --- components started one by one -------------------------------------------------------------


@pytest.fixture(scope="module")
def components(tmp_path_factory, request):
    platform: Components = new_components(tmp_path_factory, request.module.__name__)
    # The servers reach the scheduler through a relay the tests can cut; the router does not.
    platform.relay = TcpRelay(platform.scheduler_port)
    try:
        platform.start_scheduler()
        platform.start_server(0)
        platform.start_server(1)
        platform.start_router()
        platform.wait_replicas(2)
        yield platform
    finally:
        platform.stop_all()


@pytest.fixture(scope="module")
def components_iris(components, iris_artifact) -> Components:
    path = write_file(components.workdir, "iris.yaml", model_yaml("iris", iris_artifact))
    components.cli("load", "-f", str(path))
    components.wait_model("iris", version=1)
    components.wait_iris_answers("iris", "iris_1")
    return components


def settled(platform: Components) -> int:
    """Both servers connected and iris available: the version it is at."""
    platform.wait_replicas(2)
    return platform.wait_model("iris", replicas=1)["version"]


def test_scheduler_restart_keeps_servers_placement_and_routes(components_iris, iris_artifact):
    platform = components_iris
    version = settled(platform)
    (holder,) = platform.holders(f"iris_{version}")
    pids = platform.replica_pids()
    assert pids == {i: platform.procs[f"server-{i}"].pid for i in (0, 1)}

    platform.procs["scheduler"].kill()
    # The data plane does not need the control plane: the router keeps its last routes.
    for _ in range(5):
        platform.assert_iris_answers("iris", f"iris_{version}")
    down = platform.cli("model", "status", "iris", expect=1)
    assert "cannot reach the scheduler" in one_error_line(down)

    platform.start_scheduler()
    platform.wait_replicas(2)
    status = platform.wait_model("iris", version=version, replicas=1)
    assert list(status["versions"][0]["modelReplicaState"]) == [str(holder)]
    assert platform.holders(f"iris_{version}") == [holder]
    assert platform.replica_pids() == pids, "the servers should not have been restarted"
    for replica in (0, 1):
        platform.procs[f"server-{replica}"].assert_alive()
    platform.wait_iris_answers("iris", f"iris_{version}")

    # The router follows the new scheduler: a model loaded now is routed.
    path = write_file(platform.workdir, "after.yaml", model_yaml("iris-after", iris_artifact))
    platform.cli("load", "-f", str(path))
    platform.wait_model("iris-after")
    platform.wait_iris_answers("iris-after", "iris-after_1", timeout=20)


def test_restarted_server_that_held_a_model_takes_models_again(components_iris, iris_artifact):
    platform = components_iris
    version = settled(platform)
    (holder,) = platform.holders(f"iris_{version}")
    other = 1 - holder
    old = platform.procs[f"server-{holder}"]

    assert old.interrupt() == 0, f"server exited with {old.process.returncode}"
    # Its model goes to the other replica and answers from there.
    wait_until(
        lambda: platform.holders(f"iris_{version}") == [other], 30, f"iris on replica {other}"
    )
    platform.wait_model("iris", version=version)
    platform.wait_iris_answers("iris", f"iris_{version}")

    new = platform.start_server(holder)
    platform.wait_replicas(2)
    assert platform.replica_pids()[holder] == new.pid != old.pid
    # A model placed now may go to the restarted replica: it loads there and answers.
    manifest = model_yaml("iris-pair", iris_artifact, replicas=2)
    path = write_file(platform.workdir, "pair.yaml", manifest)
    platform.cli("load", "-f", str(path))
    platform.wait_model("iris-pair", replicas=2)
    assert platform.holders("iris-pair_1") == [0, 1]
    platform.assert_iris_answers("iris", f"iris_{version}")
    platform.wait_iris_answers("iris-pair", "iris-pair_1")


def test_router_keeps_serving_while_servers_reconnect_to_a_restarted_scheduler(components_iris):
    platform = components_iris
    version = settled(platform)
    platform.procs["scheduler"].kill()
    platform.relay.block()  # the servers cannot reach the new scheduler yet
    try:
        platform.start_scheduler()
        # The router retries the scheduler within its 5 s back-off and follows the new one;
        # every answer meanwhile must still come from the servers, which kept the model.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            answer = platform.infer("iris")
            assert answer.status_code == 200, (
                f"{time.monotonic() - deadline + 8:.1f} s after the scheduler restarted: "
                f"{answer.status_code} {answer.text}"
            )
            time.sleep(0.1)
    finally:
        platform.relay.unblock()
    platform.wait_replicas(2)
    platform.wait_model("iris", version=version, replicas=1)
