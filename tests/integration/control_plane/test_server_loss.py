"""A model server process dies under `inferline up --servers 2` (SC2 c.4, replica loss).

Its models are placed on the other replica and inference answers again within seconds; a model
with a replica on each server keeps answering without a single failed request; a server that
freezes instead of dying is dropped on the heartbeat; the supervisor starts a dead server again
and its replica reconnects under a new pid.
"""

import contextlib
import os
import signal
import time

import httpx
import pytest

from ._platform import (
    IRIS_CLASS,
    IRIS_REQUEST,
    Traffic,
    Up,
    model_yaml,
    pid_exists,
    wait_until,
    write_file,
)

pytestmark = pytest.mark.slow

RECOVERY_LIMIT = 20.0


@pytest.fixture(scope="module")
def up(up_factory) -> Up:
    return up_factory(2)


def load(up: Up, name: str, artifact, replicas: int) -> None:
    path = write_file(up.workdir, f"{name}.yaml", model_yaml(name, artifact, replicas=replicas))
    up.cli("load", "-f", str(path))
    up.wait_model(name, replicas=replicas, alive=up.assert_alive)


def kill_replica(up: Up, replica: int) -> int:
    pid = up.replica_pids()[replica]
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_restarted(up: Up, replica: int, old_pid: int, timeout: float = 30) -> int:
    """The supervisor's new process for `replica` has connected: its new pid."""

    def check():
        pid = up.replica_pids().get(replica)
        return pid if pid not in (None, old_pid) else None

    return wait_until(check, timeout, f"replica {replica} to reconnect with a new pid")


def test_model_moves_to_the_other_replica_when_its_server_is_killed(up, iris_artifact):
    load(up, "solo", iris_artifact, replicas=1)
    (holder,) = up.holders("solo_1")
    up.wait_iris_answers("solo", "solo_1")

    killed_at = time.monotonic()
    kill_replica(up, holder)

    def answers():
        response = up.infer("solo")
        return response.status_code == 200 and response.json()["outputs"][0]["data"] == [IRIS_CLASS]

    wait_until(answers, RECOVERY_LIMIT, "'solo' to answer again after its server was killed")
    outage = time.monotonic() - killed_at
    assert outage < RECOVERY_LIMIT
    up.assert_iris_answers("solo", "solo_1")

    other = 1 - holder
    assert up.holders("solo_1") == [other]
    status = up.wait_model("solo", replicas=1)
    assert list(status["versions"][0]["modelReplicaState"]) == [str(other)]


def test_model_with_two_replicas_loses_no_request_when_one_server_is_killed(up, iris_artifact):
    load(up, "duo", iris_artifact, replicas=2)
    assert up.holders("duo_1") == [0, 1]

    with Traffic(up, "duo") as traffic:
        traffic.wait_for(20)
        old_pid = kill_replica(up, 0)
        wait_restarted(up, 0, old_pid)
        # Back to a replica on each server; keep sending a little while after that.
        up.wait_model("duo", replicas=2, timeout=30)
        wait_until(lambda: up.holders("duo_1") == [0, 1], 20, "duo_1 on both replicas again")
        traffic.wait_for(max(len(traffic.answers) + 30, 100))

    failed = traffic.failures()
    assert not failed, f"{len(failed)} of {len(traffic.answers)} requests failed: {failed[:3]}"
    assert traffic.served_by() == ["duo_1"]


def test_model_moves_away_from_a_server_that_stops_answering(up, iris_artifact):
    """A frozen server (SIGSTOP: its sockets stay open) is noticed by the scheduler's heartbeat
    on the agent connection, not by a closed connection."""
    load(up, "frozen", iris_artifact, replicas=1)
    (holder,) = up.holders("frozen_1")
    pid = up.replica_pids()[holder]
    os.kill(pid, signal.SIGSTOP)
    try:

        def answers():
            with contextlib.suppress(httpx.TimeoutException):
                return (
                    up.http.post(
                        f"{up.router_url}/v2/models/frozen/infer", json=IRIS_REQUEST, timeout=2
                    ).status_code
                    == 200
                )

        wait_until(answers, RECOVERY_LIMIT, "'frozen' to answer again from the other replica")
        assert up.holders("frozen_1") == [1 - holder]
    finally:
        os.kill(pid, signal.SIGCONT)
    # Back, the same process reconnects and holds nothing: its model stays where it went.
    wait_until(lambda: up.replica_pids().get(holder) == pid, 20, "the thawed replica to return")
    wait_until(lambda: up.holders("frozen_1") == [1 - holder], 20, "frozen_1 on one replica")
    up.assert_iris_answers("frozen", "frozen_1")


def test_supervisor_starts_a_killed_server_again(up):
    before = up.replica_pids()
    old_pid = kill_replica(up, 1)
    new_pid = wait_restarted(up, 1, old_pid)
    assert pid_exists(new_pid)
    assert not pid_exists(old_pid)
    # The other replica was left alone.
    assert up.replica_pids()[0] == before[0]
    wait_until(
        lambda: "server mlserver-1 exited with code -9; starting it again" in up.proc.log(),
        5,
        "the supervisor to log the restart",
    )
    up.assert_alive()
